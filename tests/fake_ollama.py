"""A small real HTTP server that speaks Ollama's /api/chat, /api/tags and /api/show.

The only fake the project allows: an Ollama server cannot be installed here, so tests exercise
our Ollama backends against its HTTP boundary, on loopback, with scripted replies.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.live_server import LiveServer


@dataclass
class FakeReply:
    """One scripted assistant reply: text split into ``chunks`` stream lines, and/or tool calls."""

    content: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    chunks: int = 3
    status: int = 200
    error: str | None = None


def _split(text: str, parts: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass
class FakeOllama:
    models: list[str] = field(default_factory=lambda: ["llama3.2", "llava"])
    requests: list[dict[str, Any]] = field(default_factory=list)
    _replies: deque[FakeReply] = field(default_factory=deque)
    url: str = ""

    def script(self, *replies: FakeReply) -> None:
        self._replies.extend(replies)

    def _next_reply(self) -> FakeReply:
        return self._replies.popleft() if self._replies else FakeReply(content="Hello from the fake Ollama.")

    def _known(self, model: str) -> bool:
        return model in self.models or model.split(":")[0] in self.models

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/api/tags")
        async def tags() -> dict:
            return {"models": [{"name": f"{m}:latest", "model": f"{m}:latest"} for m in self.models]}

        @app.post("/api/show")
        async def show(request: Request):
            body = await request.json()
            name = body.get("model") or body.get("name", "")
            if not self._known(name):
                return JSONResponse({"error": f"model '{name}' not found"}, status_code=404)
            return {"modelfile": "", "parameters": "", "template": "", "details": {"family": name}}

        @app.post("/api/chat")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            model = body.get("model", "")
            if not self._known(model):
                return JSONResponse(
                    {"error": f'model "{model}" not found, try pulling it first'}, status_code=404
                )
            reply = self._next_reply()
            if reply.status != 200:
                return JSONResponse({"error": reply.error or "fake failure"}, status_code=reply.status)
            message_base = {"role": "assistant"}
            final = {
                "model": model,
                "created_at": "2026-01-01T00:00:00Z",
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 12,
                "eval_count": max(1, len(reply.content.split())),
            }
            if not body.get("stream", True):
                message = {**message_base, "content": reply.content}
                if reply.tool_calls:
                    message["tool_calls"] = reply.tool_calls
                return {**final, "message": message}

            def lines():
                for piece in _split(reply.content, reply.chunks):
                    chunk = {"model": model, "created_at": "2026-01-01T00:00:00Z",
                             "message": {**message_base, "content": piece}, "done": False}
                    yield json.dumps(chunk) + "\n"
                if reply.tool_calls:
                    chunk = {"model": model, "created_at": "2026-01-01T00:00:00Z",
                             "message": {**message_base, "content": "", "tool_calls": reply.tool_calls},
                             "done": False}
                    yield json.dumps(chunk) + "\n"
                yield json.dumps({**final, "message": {**message_base, "content": ""}}) + "\n"

            return StreamingResponse(lines(), media_type="application/x-ndjson")

        return app


class RunningFakeOllama:
    """Serves a FakeOllama on loopback until ``stop``."""

    def __init__(self, fake: FakeOllama) -> None:
        self.fake = fake
        self.live = LiveServer(fake.app())
        fake.url = f"http://127.0.0.1:{self.live.port}"

    def start(self) -> FakeOllama:
        self.live.__enter__()
        return self.fake

    def stop(self) -> None:
        self.live.__exit__(None, None, None)
