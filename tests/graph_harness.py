"""configs/local.yaml deployed on a 2-CPU Ray instance in this process, for tests of the real graph.

By default the graph is served through Ray Serve's HAProxy ingress with the knobs of
configs/haproxy.env, as `make run` serves it; ``haproxy=False`` serves it through the Python proxy.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray import serve

from serve_app.serve_config import deploy, load_serve_config, with_app_args
from tests.conftest import REPO_ROOT

HAPROXY_ENV_FILE = REPO_ROOT / "configs" / "haproxy.env"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def haproxy_settings() -> dict[str, str]:
    """The KEY=VALUE lines of configs/haproxy.env."""
    settings = {}
    for line in HAPROXY_ENV_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[key] = value
    return settings


@contextlib.contextmanager
def serve_environment(haproxy: bool = True, drain_s: float = 1, **overrides: str) -> Iterator[Path]:
    """os.environ for a Ray instance started inside this block (Ray's processes inherit it); yields
    the directory HAProxy's files go to (one folder per node in it).

    With HAProxy, each run gets its own config/socket files and metrics ports, so test runs of
    several worktrees on one machine do not share an HAProxy; a stopping ingress replica drains
    for ``drain_s`` instead of configs/haproxy.env's 60 s, so test teardowns stay short.
    """
    run_dir = Path(tempfile.mkdtemp(prefix="haproxy-"))
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    if haproxy:
        env = {
            **haproxy_settings(),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(run_dir / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(run_dir / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(run_dir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(run_dir / "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_NBTHREAD": "1",  # two cores: one thread carries hundreds of sockets
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(drain_s),
        }
    env.update(overrides)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield run_dir
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def haproxy_servers(run_dir: Path) -> dict[str, str]:
    """Status (UP, DOWN, ...) of every replica server in HAProxy's backends, from its admin socket."""
    servers = {}
    for admin in run_dir.glob("*/admin.sock"):
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(admin))
            conn.sendall(b"show stat\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("svname", "").startswith("SERVE_REPLICA"):
                servers[row["svname"]] = row["status"]
    return servers


def wait_for_haproxy_replicas(run_dir: Path, count: int = 1, timeout_s: float = 120) -> None:
    """Until HAProxy's health checks pass, it sends traffic to its backup, the Python proxy: wait them out."""
    deadline = time.monotonic() + timeout_s
    while sum(status == "UP" for status in haproxy_servers(run_dir).values()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"HAProxy has no {count} replica(s) UP: {haproxy_servers(run_dir)}")
        time.sleep(0.2)  # polling HAProxy's own state


@contextlib.contextmanager
def local_graph(db_dir: Path, *, haproxy: bool = True, drain_s: float = 1, server: dict | None = None,
                **session: Any) -> Iterator[int]:
    """Deploy the graph with a fresh SQLite file in ``db_dir`` (and any session options); yield its port."""
    port = free_port()
    session = {"db_path": str(db_dir / "sessions.sqlite3"), **session}
    config = with_app_args(load_serve_config(REPO_ROOT / "configs" / "local.yaml"),
                           server={**(server or {}), "session": session})
    config["http_options"]["port"] = port
    with serve_environment(haproxy, drain_s) as haproxy_dir:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
        try:
            deploy(config)
            if haproxy:
                wait_for_haproxy_replicas(haproxy_dir)
            yield port
        finally:
            serve.shutdown()
            ray.shutdown()
