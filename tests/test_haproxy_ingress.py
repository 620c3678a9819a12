"""Ray Serve's HAProxy ingress holds what our sockets need, with the knobs of configs/haproxy.env.

Two settings decide whether HAProxy cuts a WebSocket (Ray gives the WebSocket tunnel no timeout of
its own): `timeout client` (RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S) for a silent connection, and
`hard-stop-after` (RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S) for a connection held by the HAProxy
process that a reload (any routing change: a replica added, removed or replaced) displaced.
Waiting out the real values (an hour) is not a test, so each is proven both ways on a small echo
app: set to 2 s, the cut comes at 2 s; with our values, the same socket survives the same wait.
The waits below are the idle time under test, not synchronisation.
"""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import psutil
import pytest
import ray
from ray import serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.echo_app import Echo
from tests.graph_harness import (
    free_port,
    haproxy_servers,
    haproxy_settings,
    serve_environment,
    wait_for_haproxy_replicas,
)

IDLE_S = 4.0  # twice the short setting


@contextlib.contextmanager
def echo_behind_haproxy(**knobs: str):
    port = free_port()
    with serve_environment(haproxy=True, **knobs) as haproxy_dir:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 1024 * 1024)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(Echo.bind("first"), name="first", route_prefix="/")
            wait_for_haproxy_replicas(haproxy_dir)
            yield port, haproxy_dir
        finally:
            serve.shutdown()
            ray.shutdown()


def echo_once(ws, text: str) -> str:
    ws.send(text)
    return ws.recv(timeout=10)


def reload_haproxy(haproxy_dir) -> None:
    """A second app is a routing change: HAProxy reloads (more than once), old processes keep the open sockets."""
    serve.run(Echo.bind("second"), name="second", route_prefix="/second")
    wait_for_haproxy_replicas(haproxy_dir, count=2)


def idle_then_echo(port: int) -> str:
    with connect(f"ws://127.0.0.1:{port}/ws", ping_interval=None) as ws:  # a silent client: no pings
        assert echo_once(ws, "hello") == "first:hello"
        time.sleep(IDLE_S)
        return echo_once(ws, "still there?")


def talk_across_a_reload(port: int, haproxy_dir) -> float | None:
    """Seconds after the reload began at which the socket was cut, or None if it outlived the reload by IDLE_S."""
    with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        assert echo_once(ws, "before") == "first:before"
        reload = threading.Thread(target=reload_haproxy, args=(haproxy_dir,))
        began = time.monotonic()
        reload.start()
        reloaded_at = None
        try:
            while reloaded_at is None or time.monotonic() - reloaded_at < IDLE_S:
                assert echo_once(ws, "during") == "first:during"
                time.sleep(0.2)  # a live conversation's pace, not synchronisation
                if reloaded_at is None and not reload.is_alive():
                    reloaded_at = time.monotonic()
        except ConnectionClosed:
            return time.monotonic() - began
        finally:
            reload.join()
        return None


def test_short_timeouts_cut_idle_and_reloaded_sockets():
    with echo_behind_haproxy(RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S="2", RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S="2") as (
            port, haproxy_dir):
        with pytest.raises(ConnectionClosed):
            idle_then_echo(port)
        cut_after = talk_across_a_reload(port, haproxy_dir)
    assert cut_after is not None and cut_after > 2.0  # not before the first reload's hard stop


def test_our_timeouts_keep_idle_and_reloaded_sockets_and_the_page_answers():
    ours = haproxy_settings()
    assert int(ours["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"]) >= 3600
    assert int(ours["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]) >= 3600
    with echo_behind_haproxy() as (port, haproxy_dir):
        assert idle_then_echo(port) == "first:still there?"
        assert talk_across_a_reload(port, haproxy_dir) is None
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text == '"first"'
        assert serving_haproxy(port, haproxy_dir)


def serving_haproxy(port: int, haproxy_dir) -> bool:
    """The port is HAProxy's (the config Ray wrote binds it, an haproxy process runs that config), and
    HAProxy sends to the replicas themselves, not to its backup (the Python proxy actor)."""
    [config] = haproxy_dir.glob("*/haproxy.cfg")
    running = any(str(config) in (p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))
    return running and f"bind 127.0.0.1:{port}" in config.read_text() and "UP" in haproxy_servers(haproxy_dir).values()
