"""``GET /health`` and ``GET /metrics``: what they show, and who may read them.

Health is a cached report, refreshed in the background every ``interval_s``: pollers (load
balancers, every open web page) no longer cost a call to every deployment each, and a slow
deployment no longer slows the page that asks. It shows states only: a backend's info and error
text name its hosts and URLs (an Ollama host, an OpenAI-compatible base URL), and /health is
public. Metrics are behind the API keys when keys are configured (a Prometheus scrape sends
``Authorization: Bearer <key>``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response

from serve_app.host import key_accepted, presented_key

logger = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[Any]]  # a service's info call: answering at all is what counts


class ServiceHealth:
    def __init__(self, probes: Mapping[str, Probe], *, interval_s: float, timeout_s: float,
                 fixed: Mapping[str, dict[str, str]] | None = None) -> None:
        self.probes, self.interval_s, self.timeout_s = dict(probes), interval_s, timeout_s
        self.fixed = dict(fixed or {})  # states known without asking (a model turned off)
        self._report: dict[str, Any] | None = None
        self._first = asyncio.Event()
        self._refresher: asyncio.Task | None = None

    async def report(self) -> dict[str, Any]:
        """The latest report; the very first request waits for the first check (at most ``timeout_s``)."""
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        await self._first.wait()
        assert self._report is not None
        return self._report

    async def refresh(self) -> None:
        names = list(self.probes)
        states = await asyncio.gather(*(self._state(self.probes[name]) for name in names))
        services = dict(zip(names, states)) | self.fixed
        status = "ok" if all(s["status"] == "ok" for s in states) else "degraded"
        self._report = {"status": status, "checked_at": round(time.time(), 3), "services": services}
        self._first.set()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # health must keep refreshing whatever one round did
                logger.exception("health refresh failed")
            await asyncio.sleep(self.interval_s)  # the refresh period, not a synchronisation

    async def _state(self, probe: Probe) -> dict[str, str]:
        try:
            await asyncio.wait_for(probe(), self.timeout_s)
            return {"status": "ok"}
        except TimeoutError:
            return {"status": "timeout"}
        except Exception as error:  # noqa: BLE001 - health reports any failure as data
            return {"status": "error", "error": type(error).__name__}  # the message may name a host


def metrics_page(connection: HTTPConnection, api_keys: list[str]) -> Response:
    """Prometheus text, for a caller with one of the keys when keys are configured."""
    if not key_accepted(api_keys, presented_key(connection)):
        return PlainTextResponse("an API key is required: Authorization: Bearer <key>", status_code=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)


def deployment_info_call(handle: Any) -> Callable[[], Awaitable[Any]]:
    """A deployment's ``info``, cancelled on the replica too when health stops waiting for it."""

    async def info() -> Any:
        response = handle.info.remote()
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()  # a local timeout does not reach the replica by itself
            raise

    return info
