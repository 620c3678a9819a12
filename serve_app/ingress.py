"""The FastAPI ingress deployment: the WebSocket sessions, health, metrics and the web client."""

# No `from __future__ import annotations` here: FastAPI must see the real WebSocket class on the
# route's signature, or it treats `websocket` as a missing query parameter and closes with 1008.
import asyncio
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, WebSocket
from fastapi.responses import FileResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.vad import SileroVad, VadOptions
from serve_app.clients.serve_handles import ServeModels
from serve_app.clients.turn_end import TurnEndClient
from serve_app.host import SessionHost
from serve_app.settings import ServerOptions

api = FastAPI(title="OpenRealtime")
WEB_DIR = Path(__file__).resolve().parent / "web"
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate (ETag), so a redeploy's page is picked up at once

@serve.deployment(name="Ingress", max_ongoing_requests=200, graceful_shutdown_timeout_s=60)
@serve.ingress(api)
class Ingress:
    def __init__(self, options: dict | None = None, *, vad: DeploymentHandle, stt: DeploymentHandle,
                 llm: DeploymentHandle, tts: DeploymentHandle, vision: DeploymentHandle,
                 turn_end: DeploymentHandle) -> None:
        self.options = ServerOptions.model_validate(options or {})
        self.handles: dict[str, DeploymentHandle] = {"vad": vad, "stt": stt, "llm": llm, "tts": tts,
                                                     "vision": vision, "turn_end": turn_end}
        session = self.options.session
        local_vad = SileroVad(VadOptions()) if self.options.vad_placement == "ingress" else None
        self.models = ServeModels(vad=vad, stt=stt, llm=llm, tts=tts, vision=vision,
                                  timeout_s=session.model_timeout_s, local_vad=local_vad)
        smart_turn = TurnEndClient(turn_end, session.model_timeout_s) if session.turn_detection.smart_turn else None
        self.host = SessionHost(self.models, self.options, smart_turn)

    @api.websocket("/ws")
    async def native_session(self, websocket: WebSocket) -> None:
        await self.host.serve_native(websocket)

    @api.websocket("/v1/realtime")
    async def openai_realtime_session(self, websocket: WebSocket) -> None:
        await self.host.serve_openai(websocket)

    async def _service_health(self, name: str, handle: DeploymentHandle) -> dict[str, Any]:
        response = handle.info.remote()
        try:
            info = await asyncio.wait_for(response, self.options.health_timeout_s)
            return {"status": "ok", **info}
        except TimeoutError:
            response.cancel()  # a local timeout does not reach the replica by itself
            return {"status": "timeout"}
        except Exception as error:  # noqa: BLE001 - health reports any failure as data
            return {"status": "error", "error": f"{type(error).__name__}: {error}"[:300]}

    @api.get("/health")
    async def health(self) -> dict[str, Any]:
        names = list(self.handles)
        results = await asyncio.gather(*(self._service_health(n, self.handles[n]) for n in names))
        services = dict(zip(names, results))
        services["smart_turn"] = {"status": "ok" if self.host.smart_turn else "disabled"}
        status = "ok" if all(r["status"] == "ok" for r in results) else "degraded"
        return {"status": status, "services": services}

    @api.get("/", include_in_schema=False)
    async def web_client(self) -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers=NO_CACHE)

    @api.get("/web/{path:path}", include_in_schema=False)
    async def web_asset(self, path: str) -> FileResponse:
        file = (WEB_DIR / path).resolve()
        if not file.is_file() or WEB_DIR not in file.parents:  # also refuses ../ escapes
            raise HTTPException(status_code=404)
        return FileResponse(file, headers=NO_CACHE)

    @api.get("/metrics")
    async def metrics(self) -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    async def __del__(self) -> None:
        """Serve drains sessions before this runs; everything was persisted as it happened."""
        await self.host.close()
