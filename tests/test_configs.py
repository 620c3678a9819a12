"""Both Serve configs are valid Serve schemas whose args the app builder accepts, and local.yaml fits 2 CPUs."""

from __future__ import annotations

import pytest
from ray.serve.schema import ServeDeploySchema

from serve_app.app import AppArgs
from serve_app.serve_config import load_serve_config
from tests.conftest import REPO_ROOT

DEPLOYMENTS = {"Ingress", "VAD", "STT", "LLM", "TTS", "Vision", "TurnEnd"}


@pytest.mark.parametrize("name", ["local.yaml", "gpu.yaml"])
def test_config_is_a_valid_serve_config_with_valid_args(name):
    config = load_serve_config(REPO_ROOT / "configs" / name)
    schema = ServeDeploySchema.model_validate(config)
    app = schema.applications[0]
    AppArgs.model_validate(app.args or {})
    assert {d.name for d in app.deployments} == DEPLOYMENTS
    for deployment in app.deployments:
        # Serve replaces ray_actor_options whole: each must say its CPUs itself
        assert deployment.ray_actor_options.num_cpus is not None, deployment.name
    assert "request_timeout_s" not in (config.get("http_options") or {})  # it would cut WebSockets


def test_local_config_schedules_on_two_cpus_without_gpus():
    app = ServeDeploySchema.model_validate(load_serve_config(REPO_ROOT / "configs" / "local.yaml")).applications[0]
    cpus = sum(d.ray_actor_options.num_cpus * (d.num_replicas or 1) for d in app.deployments)
    assert cpus <= 2.0
    assert all(not d.ray_actor_options.num_gpus for d in app.deployments)
    ingress = next(d for d in app.deployments if d.name == "Ingress")
    assert ingress.max_ongoing_requests >= 100  # one open socket holds one slot for its whole life


def test_gpu_config_gives_model_services_fractional_gpus_and_autoscaling():
    app = ServeDeploySchema.model_validate(load_serve_config(REPO_ROOT / "configs" / "gpu.yaml")).applications[0]
    by_name = {d.name: d for d in app.deployments}
    for name in ("VAD", "STT", "TTS", "Vision", "TurnEnd"):
        gpus = by_name[name].ray_actor_options.num_gpus
        assert 0 < gpus < 1, name
        assert by_name[name].autoscaling_config["max_replicas"] > by_name[name].autoscaling_config["min_replicas"]


def test_the_dockerfile_and_the_makefile_set_the_haproxy_knobs_of_configs_haproxy_env():
    from tests.graph_harness import haproxy_settings

    knobs = haproxy_settings()
    assert knobs["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    for key, value in knobs.items():
        assert f"{key}={value}" in dockerfile, key
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "include configs/haproxy.env" in makefile


def test_gpu_config_shares_one_postgresql_store_across_replicas():
    app = ServeDeploySchema.model_validate(load_serve_config(REPO_ROOT / "configs" / "gpu.yaml")).applications[0]
    args = AppArgs.model_validate(app.args)
    assert args.server.store_url.startswith("postgresql://")
    ingress = next(d for d in app.deployments if d.name == "Ingress")
    assert ingress.autoscaling_config["min_replicas"] >= 2  # sessions must survive landing on either
