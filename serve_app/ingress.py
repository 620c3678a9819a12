"""The FastAPI ingress deployment: HTTP routes and (from #3) the WebSocket sessions."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.settings import ServerOptions

api = FastAPI(title="OpenRealtime")


@serve.deployment(name="Ingress", max_ongoing_requests=200)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        options: dict | None = None,
        *,
        vad: DeploymentHandle,
        stt: DeploymentHandle,
        llm: DeploymentHandle,
        tts: DeploymentHandle,
        vision: DeploymentHandle,
    ) -> None:
        self.options = ServerOptions.model_validate(options or {})
        self.services: dict[str, DeploymentHandle] = {
            "vad": vad, "stt": stt, "llm": llm, "tts": tts, "vision": vision,
        }

    async def _service_health(self, name: str, handle: DeploymentHandle) -> dict[str, Any]:
        response = handle.info.remote()
        try:
            info = await asyncio.wait_for(response, self.options.health_timeout_s)
            return {"status": "ok", **info}
        except asyncio.TimeoutError:
            response.cancel()  # a local timeout does not reach the replica by itself
            return {"status": "timeout"}
        except Exception as error:  # noqa: BLE001 - health reports any failure as data
            return {"status": "error", "error": f"{type(error).__name__}: {error}"[:300]}

    @api.get("/health")
    async def health(self) -> dict[str, Any]:
        names = list(self.services)
        results = await asyncio.gather(*(self._service_health(n, self.services[n]) for n in names))
        services = dict(zip(names, results))
        status = "ok" if all(r["status"] == "ok" for r in results) else "degraded"
        return {"status": status, "services": services}
