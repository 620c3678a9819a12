"""Faults on the real graph: a model replica's process SIGKILLed while a turn uses it, and the
ingress replica killed under an open session (configs/local.yaml through the HAProxy ingress, as
`make run` serves it).

A kill is the replica's own process, found through Ray's state API in the Ray instance this test
started (never a process of anyone else's). After each kill the test waits on Serve's own status
(a new replica RUNNING, the deployment HEALTHY) before it asks for the next turn.

Speculative turns and partial transcripts are off in this module, so the only STT call of a spoken
turn is its final transcription: the kill at ``transcribing`` lands while that call is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import time
from contextlib import closing

import httpx
import numpy as np
import psutil
import pytest
import ray
from ray import serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from serve_app.serve_config import APP_NAME
from tests.graph_harness import local_graph
from tests.text_normalise import normalise

REPLICA_PREFIX = "SERVE_REPLICA::"  # Ray Serve's replica actor names: SERVE_REPLICA::<app>#<deployment>#<id>
CLIP = "voice2json_turn_on_living_room_lamp.wav"
RESTART_TIMEOUT_S = 120  # a replica's process, its model, and Serve's health check, on 2 busy cores
EVENT_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    db_dir = tmp_path_factory.mktemp("db")
    with local_graph(db_dir, speculative_turns=False, partial_transcripts=False) as port:
        yield {"url": f"ws://127.0.0.1:{port}/ws", "db": db_dir / "sessions.sqlite3",
               "metrics": f"http://127.0.0.1:{port}/metrics"}


# ---- the replicas ------------------------------------------------------------------------------


class Replica:
    """A deployment's one live replica actor in this test's Ray instance, found by its actor name
    (Ray's GCS; the state API would need a dashboard, and port 8265 may be anyone's)."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["name"].startswith(f"{REPLICA_PREFIX}{APP_NAME}#{deployment}#"):
                handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
                try:
                    self.pid = ray.get(handle.__ray_call__.remote(lambda _replica: os.getpid()), timeout=10)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    continue  # the killed one, on its way out
                self.handle = handle
                break
        else:
            raise LookupError(f"no live {deployment} replica")
        # only a descendant of this process is ours to kill: never anyone else's
        assert self.pid in {p.pid for p in psutil.Process().children(recursive=True)}

    def wait_busy(self, timeout: float = EVENT_TIMEOUT_S) -> None:
        """Until the replica is running a request (Serve's own count), so a kill lands mid-call.

        Serve's ``get_num_ongoing_requests`` also counts a slot the router has only reserved
        (Ray 2.60's two-phase dispatch): a kill then lands before the request is sent, and the
        router sends it to the replacement instead, so the turn succeeds late and no error comes
        (seen in one run of 60 s). Only the requests the replica's metrics count are running."""
        deadline = time.monotonic() + timeout
        def running(replica) -> int:  # runs on the replica actor (pickled by value)
            return replica._replica_impl._metrics_manager.get_num_ongoing_requests()

        while ray.get(self.handle.__ray_call__.remote(running), timeout=10) < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.deployment} got no request in {timeout} s")
            time.sleep(0.005)  # polling the replica's own state

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait_replaced(self) -> Replica:
        """Until Serve runs a replacement (deployment HEALTHY, one replica RUNNING, not this one)."""
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while True:
            status = serve.status().applications[APP_NAME].deployments[self.deployment]
            if status.status == "HEALTHY" and status.replica_states.get("RUNNING", 0) == 1:
                with contextlib.suppress(LookupError):
                    if (new := Replica(self.deployment)).pid != self.pid:
                        return new
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.deployment}: no new replica after {RESTART_TIMEOUT_S} s: {status}")
            time.sleep(0.2)  # polling Serve's own state


# ---- the client ------------------------------------------------------------------------------


class Client:
    """One native /ws session; keeps every JSON event it read."""

    def __init__(self, url: str) -> None:
        self.ws = connect(url, open_timeout=30, max_size=None)
        self.events: list[dict] = []
        self.audio_bytes = 0

    def close(self) -> None:
        self.ws.close()

    def send(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def until(self, found, timeout: float = EVENT_TIMEOUT_S) -> dict:
        """Read until ``found(event)`` (binary audio counts as {"type": "audio"}); returns that event."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(frame, bytes):
                self.audio_bytes += len(frame)
                event = {"type": "audio", "bytes": len(frame)}
            else:
                event = json.loads(frame)
                self.events.append(event)
            if found(event):
                return event

    def until_type(self, kind: str, timeout: float = EVENT_TIMEOUT_S) -> dict:
        return self.until(lambda e: e["type"] == kind, timeout)

    def until_state(self, state: str, timeout: float = EVENT_TIMEOUT_S) -> dict:
        return self.until(lambda e: e["type"] == "state_change" and e["state"] == state, timeout)

    def start(self) -> dict:
        self.send({"type": "start_conversation", "config": {"binaryAudio": True}})
        started = self.until_type("session_started")
        self.until_state("listening")
        return started

    def say(self, pcm: np.ndarray) -> None:
        audio = np.concatenate([pcm, np.zeros(16000 * 2, np.int16)])
        for start in range(0, audio.size, 1600):  # 100 ms chunks, sent at once: the kill waits on the state
            self.ws.send(audio[start: start + 1600].tobytes())

    def errors(self) -> list[dict]:
        return [e for e in self.events if e["type"] == "error"]


@pytest.fixture
def client(graph):
    session = Client(graph["url"])
    yield session
    session.close()


def a_text_turn_works(client: Client) -> None:
    client.send({"type": "user_message", "text": "Say hello."})
    done = client.until_type("llm_complete")
    assert done["fullText"].strip()
    client.until_type("audio_complete")
    client.until_state("listening")


# ---- model replicas ------------------------------------------------------------------------------


def killed_mid_call(client: Client, deployment: str, phase: str) -> tuple[dict, Replica]:
    """SIGKILL the deployment's replica once it runs this turn's request; the error the session
    sends, the session back to listening, and the replacement Serve started."""
    replica = Replica(deployment)
    replica.wait_busy()
    replica.kill()
    error = client.until(lambda e: e["type"] == "error" and e["phase"] == phase)
    client.until_state("listening")
    return error, replica.wait_replaced()


def test_stt_replica_killed_while_transcribing(graph, client, clip_by_name):
    clip = clip_by_name(CLIP).pcm16()
    client.start()
    client.say(clip)
    client.until_state("transcribing")
    error, _ = killed_mid_call(client, "STT", "stt")
    assert error["code"] == "service_unavailable" and "restarting" in error["message"]
    assert not [e for e in client.events if e["type"] == "transcript_final"]
    client.say(clip)  # the next turn works, on the new replica
    final = client.until_type("transcript_final")
    assert normalise(final["text"]) == "turn on the living room lamp"
    client.until_type("audio_complete")


def test_llm_replica_killed_while_thinking(graph, client):
    client.start()
    client.send({"type": "user_message", "text": "Tell me a long story about a dragon and a knight."})
    client.until_type("llm_token")
    error, _ = killed_mid_call(client, "LLM", "llm")
    assert error["code"] == "service_unavailable" and "restarting" in error["message"]
    assert "retry_turn" in error["message"]  # the native hint: the failed reply can be asked for again
    assert not [e for e in client.events if e["type"] == "llm_complete"]
    client.send({"type": "retry_turn"})  # on the new replica
    assert client.until_type("llm_complete")["fullText"].strip()
    client.until_state("listening")
    a_text_turn_works(client)


def test_tts_replica_killed_while_speaking(graph, client):
    client.start()
    client.send({"type": "user_message", "text": "Tell me a long story about a dragon and a knight."})
    client.until_type("llm_token")
    error, _ = killed_mid_call(client, "TTS", "tts")
    assert error["code"] == "service_unavailable" and "without audio" in error["message"]
    client.events.clear()
    before = client.audio_bytes
    a_text_turn_works(client)
    assert client.audio_bytes - before > 24000  # > 0.5 s of speech from the new replica
    assert not client.errors()


# ---- the ingress replica ----------------------------------------------------------------------


def stored(db, session_id: str) -> list[tuple]:
    """The session's message rows in the SQLite file, read beside the server (read-only)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT id, role, content, status FROM messages WHERE session_id = ? ORDER BY id",
                            (session_id,)).fetchall()


def metric(url: str, name: str) -> float | None:
    for line in httpx.get(url, timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def resume(url: str, started: dict, timeout: float = RESTART_TIMEOUT_S) -> tuple[Client, dict]:
    """What a client does after its socket dropped: reconnect (with backoff) and resume its session."""
    message = {"type": "resume_session", "sessionId": started["sessionId"]}
    if started.get("resumeToken"):  # the session's secret, where the server issues one
        message["resumeToken"] = started["resumeToken"]
    deadline, backoff = time.monotonic() + timeout, 0.2
    while True:
        try:
            client = Client(url)
            client.send(message)
            return client, client.until(lambda e: e["type"] in ("session_resumed", "error"))
        except (OSError, ConnectionClosed, TimeoutError):  # nothing listening yet, or cut in the handshake
            if time.monotonic() > deadline:
                raise
            time.sleep(backoff)  # a reconnecting client's backoff
            backoff = min(2.0, backoff * 2)


def test_ingress_replica_killed_mid_turn_the_client_resumes_with_every_message(graph, client):
    started = client.start()
    session_id = started["sessionId"]
    a_text_turn_works(client)
    client.send({"type": "user_message", "text": "Tell me a long story about a dragon and a knight."})
    client.until_type("llm_token")  # mid-turn: the user's words are stored, the answer is being written
    ingress = Replica("Ingress")
    ingress.kill()
    with pytest.raises(ConnectionClosed):
        client.until(lambda e: False, timeout=30)
    rows = stored(graph["db"], session_id)
    assert [role for _, role, _, _ in rows] == ["user", "assistant", "user"]
    ingress.wait_replaced()

    again, resumed = resume(graph["url"], started)
    try:
        assert resumed["type"] == "session_resumed", resumed
        assert resumed["sessionId"] == session_id and resumed["state"] == "listening"
        assert [(m["role"], m["content"]) for m in resumed["messages"]] == [(r, c) for _, r, c, _ in rows]
        assert stored(graph["db"], session_id) == rows  # resuming lost and added nothing
        a_text_turn_works(again)  # and the conversation goes on, on the new ingress replica
        after = stored(graph["db"], session_id)
        assert after[: len(rows)] == rows and [role for _, role, _, _ in after[len(rows):]] == ["user", "assistant"]
        tasks = metric(graph["metrics"], "openrealtime_event_loop_tasks")
        assert tasks is not None and tasks >= 1  # the new replica's loop, counted for the soak's leak watch
    finally:
        again.close()


# ---- the soak's smoke run ---------------------------------------------------------------------


def test_soak_smoke_run_samples_every_role_and_plots(graph, tmp_path):
    """bench/soak.py for one session, a few samples: RSS per replica, loop tasks, DB size, the plot."""
    from bench import soak as bench

    run = bench.Soak(url=graph["url"], metrics_url=graph["metrics"], db=graph["db"], headers={}, sessions=1,
                     seconds=25, sample_s=5, root_pid=psutil.Process().pid)
    asyncio.run(run.run(seed=3, stagger_s=0))
    first, last = run.samples[0], run.samples[-1]
    assert {"Ingress", "STT", "LLM", "TTS", "VAD", "TurnEnd"} <= set(first.rss_mb)
    assert all(s.loop_tasks is not None for s in run.samples) and max(s.loop_tasks for s in run.samples) >= 1
    assert last.turns >= 1 and last.db_bytes > first.db_bytes and last.sessions_open == 0
    growth = bench.growth(run.samples, 1, warm_up_s=0)
    assert growth["per_session_hour"]["rss_mb.Ingress"] is not None
    bench.plot(run, tmp_path / "soak.png", "smoke")
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
