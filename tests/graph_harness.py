"""configs/local.yaml deployed on a 2-CPU Ray instance in this process, for tests of the real graph."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray import serve

from serve_app.serve_config import deploy, load_serve_config, with_app_args
from tests.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_graph(db_dir: Path, **session: Any) -> Iterator[int]:
    """Deploy the graph with a fresh SQLite file in ``db_dir`` (and any session options); yield its port."""
    port = free_port()
    session = {"db_path": str(db_dir / "sessions.sqlite3"), **session}
    config = with_app_args(load_serve_config(REPO_ROOT / "configs" / "local.yaml"), server={"session": session})
    config["http_options"]["port"] = port
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    try:
        deploy(config)
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()
