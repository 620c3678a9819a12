"""/health answers from a cache refreshed in the background and names no backend; /metrics is behind
the API keys when keys are configured. Real HTTP against the in-process app (uvicorn), the services'
own ``info`` calls counted as they are made."""

from __future__ import annotations

import asyncio
import collections
import time

import httpx

from deployments.llm import LlmOptions
from serve_app.host import SessionHost
from serve_app.service_health import ServiceHealth
from tests.live_server import LiveServer, free_port
from tests.session_harness import build_app, server_options


def counted(calls: collections.Counter, name: str, call):
    async def probe():
        calls[name] += 1
        return await call()

    return probe


async def unreachable(port: int) -> None:
    """A service whose host is down: the connection error's text names the host and port."""
    await asyncio.open_connection("127.0.0.1", port)


def test_health_is_cached_and_shows_no_backend_hosts(models, fake_ollama, tmp_path):
    ollama = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    assert fake_ollama.url in str(asyncio.run(ollama.llm.info()))  # the backend's info names its host
    down_port = free_port()
    calls: collections.Counter = collections.Counter()
    probes = {"llm": counted(calls, "llm", ollama.llm.info), "tts": counted(calls, "tts", models.tts.info),
              "vision": counted(calls, "vision", lambda: unreachable(down_port))}
    health = ServiceHealth(probes, interval_s=300, timeout_s=5, fixed={"smart_turn": {"status": "disabled"}})
    host = SessionHost(ollama, server_options(tmp_path / "db.sqlite3"))
    with LiveServer(build_app(host, health)) as server, httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as http:
        bodies = [http.get("/health", timeout=30) for _ in range(40)]

    assert all(b.status_code == 200 for b in bodies)
    assert calls == {"llm": 1, "tts": 1, "vision": 1}  # 40 requests, one round of calls
    report = bodies[-1].json()
    assert report["status"] == "degraded"
    assert report["services"] == {"llm": {"status": "ok"}, "tts": {"status": "ok"},
                                  "vision": {"status": "error", "error": "ConnectionRefusedError"},
                                  "smart_turn": {"status": "disabled"}}
    text = bodies[-1].text
    for secret in (fake_ollama.url, "127.0.0.1", str(down_port), "http"):
        assert secret not in text


def test_health_refreshes_in_the_background_at_its_interval(models, tmp_path):
    calls: collections.Counter = collections.Counter()
    health = ServiceHealth({"tts": counted(calls, "tts", models.tts.info)}, interval_s=1, timeout_s=5)
    with (LiveServer(build_app(SessionHost(models, server_options(tmp_path / "db.sqlite3")), health)) as server,
          httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as http):
        began, checks, requests = time.monotonic(), set(), 0
        while len(checks) < 3:  # requests as fast as they come, until the report has changed twice
            checks.add(http.get("/health", timeout=30).json()["checked_at"])
            requests += 1
            assert time.monotonic() - began < 30, "the report was not refreshed"
        elapsed = time.monotonic() - began
    assert requests > 10 * calls["tts"]  # each refresh served many requests
    assert calls["tts"] <= elapsed / 1 + 2  # at most one call per interval, plus the first


def test_metrics_need_a_key_when_keys_are_configured(models, tmp_path):
    options = server_options(tmp_path / "db.sqlite3").model_copy(update={"api_keys": ["scrape-key", "other"]})
    with (LiveServer(build_app(SessionHost(models, options))) as server,
          httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as http):
        missing = http.get("/metrics")
        wrong = http.get("/metrics", headers={"Authorization": "Bearer nope"})
        scrape = http.get("/metrics", headers={"Authorization": "Bearer scrape-key"})  # Prometheus' authorization:
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.headers["www-authenticate"] == "Bearer" and "openrealtime" not in missing.text
    assert scrape.status_code == 200 and "openrealtime_sessions_active" in scrape.text


def test_metrics_are_open_without_keys(models, tmp_path):
    with (LiveServer(build_app(SessionHost(models, server_options(tmp_path / "db.sqlite3")))) as server,
          httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as http):
        page = http.get("/metrics")
    assert page.status_code == 200 and "openrealtime_turns_total" in page.text
