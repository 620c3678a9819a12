"""Drives the session engine over Starlette's WebSocket test client, with real in-process models."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.websockets import WebSocket

from serve_app.host import SessionHost
from serve_app.service_health import ServiceHealth, metrics_page
from serve_app.settings import ServerOptions

SILENCE_AFTER_SPEECH_S = 2.5  # more than the longest end-of-turn wait (max_silence_ms 2000)


def build_app(host: SessionHost, health: ServiceHealth | None = None) -> FastAPI:
    """The ingress's routes over ``host``: its sockets, and /health (given the services to ask) and /metrics."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if health is not None:
            await health.close()
        await host.close()  # as the ingress does on shutdown: the store commits what is pending

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await host.serve_native(websocket)

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        await host.serve_openai(websocket)

    @app.post("/v1/realtime/calls")
    async def realtime_call(request: Request):
        return await host.calls.create_call(request)

    @app.post("/v1/realtime/calls/{call_id}/hangup")
    async def realtime_hang_up(call_id: str, request: Request):
        return await host.calls.hang_up(call_id, request)

    @app.post("/v1/realtime/client_secrets")
    async def realtime_client_secret(request: Request):
        return await host.calls.create_client_secret(request)

    @app.options("/v1/realtime/{path:path}")
    async def realtime_preflight(path: str, request: Request):
        return host.calls.preflight(request)

    @app.post("/twilio/voice")
    async def twilio_voice(request: Request) -> Response:
        return await host.twilio_voice(request)

    @app.websocket("/twilio/media")
    async def twilio_media(websocket: WebSocket) -> None:
        await host.serve_twilio(websocket)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return metrics_page(request, host.options.api_keys)

    if health is not None:
        @app.get("/health")
        async def health_route() -> dict:
            return await health.report()

    return app


@dataclass
class Conversation:
    """A client's view of one socket: every frame it received, in order."""

    ws: Any
    frames: list[Any] = field(default_factory=list)

    def send(self, message: dict) -> None:
        self.ws.send_text(json.dumps(message))

    def send_audio(self, pcm16: np.ndarray, chunk_ms: int = 100, rate: int = 16000) -> None:
        step = rate * chunk_ms // 1000
        for start in range(0, pcm16.size, step):
            self.ws.send_bytes(pcm16[start : start + step].astype("<i2").tobytes())

    def speak(self, pcm16: np.ndarray, rate: int = 16000) -> None:
        """A clip followed by room silence, as a live microphone would send it."""
        silence = np.zeros(int(rate * SILENCE_AFTER_SPEECH_S), dtype=np.int16)
        self.send_audio(np.concatenate([pcm16, silence]), rate=rate)

    def receive(self, timeout: float = 60.0) -> Any:
        async def next_frame() -> Any:
            with anyio.fail_after(timeout):
                return await self.ws._send_rx.receive()

        message = self.ws.portal.call(next_frame)
        if message["type"] == "websocket.close":
            raise ConnectionError(f"socket closed: {message.get('code')} {message.get('reason')}")
        frame = json.loads(message["text"]) if message.get("text") is not None else message["bytes"]
        self.frames.append(frame)
        return frame

    def until(self, kind: str, timeout: float = 120.0, **match: Any) -> dict:
        """Receive until a JSON event of this type (and these field values) arrives."""
        while True:
            frame = self.receive(timeout)
            if isinstance(frame, dict) and frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame

    def types(self) -> list[str]:
        return [f["type"] if isinstance(f, dict) else "binary" for f in self.frames]

    def states(self) -> list[str]:
        return [f["state"] for f in self.frames if isinstance(f, dict) and f["type"] == "state_change"]


def stored_messages(db_path: Path, session_id: str) -> list[dict]:
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM messages WHERE session_id = ? ORDER BY id", (session_id,)).fetchall()
    return [dict(row) for row in rows]


def stored_rows(db_path: Path, table: str, session_id: str) -> list[dict]:
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(f"SELECT * FROM {table} WHERE session_id = ? ORDER BY id", (session_id,)).fetchall()
    return [dict(row) for row in rows]


def server_options(db_path: Path, **session: Any) -> ServerOptions:
    return ServerOptions.model_validate({"session": {"db_path": str(db_path), **session}})
