"""The FastAPI ingress deployment: the WebSocket sessions, health, metrics and the web client."""

# No `from __future__ import annotations` here: FastAPI must see the real WebSocket class on the
# route's signature, or it treats `websocket` as a missing query parameter and closes with 1008.
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.vad import SileroVad, VadOptions
from serve_app.clients.serve_handles import ServeModels
from serve_app.clients.turn_end import TurnEndClient
from serve_app.host import SessionHost
from serve_app.service_health import ServiceHealth, deployment_info_call, metrics_page
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
        # a plain loop, not a comprehension: Serve pickles this class by value, and the names a
        # comprehension in __init__ uses did not travel with it (NameError on the replica)
        info_calls = {}
        for name, handle in self.handles.items():
            info_calls[name] = deployment_info_call(handle)
        self.health_report = ServiceHealth(
            info_calls,
            interval_s=self.options.health_interval_s, timeout_s=self.options.health_timeout_s,
            fixed={"smart_turn": {"status": "ok" if smart_turn else "disabled"}})

    @api.websocket("/ws")
    async def native_session(self, websocket: WebSocket) -> None:
        await self.host.serve_native(websocket)

    @api.websocket("/v1/realtime")
    async def openai_realtime_session(self, websocket: WebSocket) -> None:
        await self.host.serve_openai(websocket)

    @api.post("/v1/realtime/calls", status_code=201)
    async def realtime_call(self, request: Request) -> Response:
        return await self.host.calls.create_call(request)

    @api.post("/v1/realtime/calls/{call_id}/hangup")
    async def realtime_hang_up(self, call_id: str, request: Request) -> Response:
        return await self.host.calls.hang_up(call_id, request)

    @api.post("/v1/realtime/client_secrets")
    async def realtime_client_secret(self, request: Request) -> Response:
        return await self.host.calls.create_client_secret(request)

    @api.options("/v1/realtime/{path:path}", include_in_schema=False)
    async def realtime_preflight(self, path: str, request: Request) -> Response:
        return self.host.calls.preflight(request)  # CORS, for pages on other origins

    @api.post("/twilio/voice", include_in_schema=False)
    async def twilio_voice(self, request: Request) -> Response:
        return await self.host.twilio_voice(request)

    @api.websocket("/twilio/media")
    async def twilio_media(self, websocket: WebSocket) -> None:
        await self.host.serve_twilio(websocket)

    @api.get("/health")
    async def health(self) -> dict[str, Any]:
        return await self.health_report.report()

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
    async def metrics(self, request: Request) -> Response:
        return metrics_page(request, self.options.api_keys)

    async def __del__(self) -> None:
        """Serve drains sessions before this runs; everything was persisted as it happened."""
        if hasattr(self, "health_report"):  # a constructor that failed has none to close
            await self.health_report.close()
        if hasattr(self, "host"):
            await self.host.close()

