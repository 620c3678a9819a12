"""Load a Serve config YAML and deploy it from Python the way `serve run CONFIG` does.

Tests and benchmarks use this to run the real graph from configs/local.yaml (with a few
overrides such as the port and the database path) on a Ray instance they started themselves.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

APP_NAME = "openrealtime"


def load_serve_config(path: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def with_app_args(config: dict[str, Any], **args: Any) -> dict[str, Any]:
    """A copy of the config whose first application's args are deep-merged with these."""
    merged = copy.deepcopy(config)
    app = merged["applications"][0]
    app["args"] = _deep_merge(app.get("args") or {}, args)
    return merged


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def deploy(config: dict[str, Any], *, timeout_s: float = 600.0) -> None:
    """Start Serve with the config's HTTP options and deploy its apps; wait until they run.

    Uses Serve's own client, exactly the calls `serve run CONFIG` makes (ray/serve/scripts.py).
    """
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(),
                                   proxy_location=schema.proxy_location)
    client.deploy_apps(schema, _blocking=False)
    deadline = time.monotonic() + timeout_s
    names = {app.name for app in schema.applications}
    while True:
        status = serve.status()
        apps = {name: status.applications.get(name) for name in names}
        if all(app is not None and app.status == "RUNNING" for app in apps.values()):
            return
        failed = {n: a.message for n, a in apps.items() if a is not None and a.status == "DEPLOY_FAILED"}
        if failed:
            raise RuntimeError(f"deploy failed: {failed}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"apps not running after {timeout_s:.0f} s: {apps}")
        time.sleep(0.5)  # polling the controller's status, not synchronising on a guess
