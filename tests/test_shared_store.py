"""Sessions on any replica: two ingress hosts on two ports share one PostgreSQL store (a real
Debian `postgresql` server started for the test); a session started on one resumes on the other."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from websockets.sync.client import connect

from serve_app.host import SessionHost
from serve_app.settings import ServerOptions
from tests.live_server import LiveServer
from tests.postgres_server import PostgresServer
from tests.session_harness import build_app


def host_on(models, store_url: str) -> SessionHost:
    options = ServerOptions.model_validate({"store_url": store_url, "session": {
        "db_path": "/nonexistent/never-opened.sqlite3", "max_response_tokens": 24, "playback_lead_ms": 60_000}})
    return SessionHost(models, options)


def recv_until(ws, kind: str, timeout: float = 120.0) -> list[dict]:
    frames = []
    while True:
        frame = ws.recv(timeout=timeout)
        if isinstance(frame, str):
            frames.append(json.loads(frame))
            if frames[-1]["type"] == kind:
                return frames


def stored(url: str, session_id: str) -> list[tuple[str, str]]:
    async def rows():
        db = await asyncpg.connect(url)
        try:
            return await db.fetch("SELECT role, content FROM messages WHERE session_id = $1 ORDER BY id", session_id)
        finally:
            await db.close()

    return [(r["role"], r["content"]) for r in asyncio.run(rows())]


def test_a_session_started_on_one_replica_resumes_on_another(models):
    with (PostgresServer() as postgres, LiveServer(build_app(host_on(models, postgres.url))) as first,
          LiveServer(build_app(host_on(models, postgres.url))) as second):
        with connect(f"{first.ws_url}/ws") as ws:
            ws.send(json.dumps({"type": "start_conversation"}))
            started = recv_until(ws, "session_started")[-1]
            ws.send(json.dumps({"type": "user_message", "text": "My name is Ada. Say hello to me."}))
            answer = recv_until(ws, "llm_complete")[-1]["fullText"]
            recv_until(ws, "audio_complete")
        session_id = started["sessionId"]
        resume = {"type": "resume_session", "sessionId": session_id}
        if started.get("resumeToken"):
            resume["resumeToken"] = started["resumeToken"]

        with connect(f"{second.ws_url}/ws") as ws:  # the reconnect landed on the other replica
            ws.send(json.dumps(resume))
            resumed = recv_until(ws, "session_resumed")[-1]
            ws.send(json.dumps({"type": "user_message", "text": "Thank you."}))
            recv_until(ws, "llm_complete")
            recv_until(ws, "audio_complete")
        rows = stored(postgres.url, session_id)

    assert resumed["sessionId"] == session_id
    assert [(m["role"], m["content"]) for m in resumed["messages"]] == [
        ("user", "My name is Ada. Say hello to me."), ("assistant", answer)]
    assert rows[:2] == [("user", "My name is Ada. Say hello to me."), ("assistant", answer)]
    assert rows[2][0] == "user" and rows[2][1] == "Thank you." and rows[3][0] == "assistant" and len(rows) == 4
