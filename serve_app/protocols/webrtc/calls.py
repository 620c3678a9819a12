"""The WebRTC HTTP endpoints, as OpenAI's GA API has them.

- ``POST /v1/realtime/calls``: an SDP offer, either the raw body (``application/sdp``) or a
  ``multipart/form-data`` form with an ``sdp`` part and an optional ``session`` part (a JSON
  session config, as in ``session.update``) -> ``201`` with the SDP answer and
  ``Location: /v1/realtime/calls/{call_id}``.
- ``POST /v1/realtime/calls/{call_id}/hangup``: end a call.
- ``POST /v1/realtime/client_secrets``: ``{"expires_after": {"anchor": "created_at", "seconds": N},
  "session": {...}}`` -> ``{"value": "ek_...", "expires_at": ..., "session": {...}}``.

Calls live in the ingress replica that answered the offer; a hang-up reaches that replica's calls.
Pages on other origins may call these endpoints, as they call api.openai.com (CORS, ``cors_origins``):
the answer's ``Location`` is exposed to them, since the Agents SDK reads the call id from it.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from serve_app.protocols.openai_realtime.errors import ProtocolError
from serve_app.protocols.openai_realtime.items import new_id
from serve_app.protocols.openai_realtime.session_config import RealtimeSession, deep_merge, updated
from serve_app.protocols.webrtc.call import RealtimeCall
from serve_app.protocols.webrtc.client_secrets import Credentials, Refused
from serve_app.protocols.webrtc.options import WebRtcOptions

if TYPE_CHECKING:
    from serve_app.host import SessionHost

logger = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024  # a browser's offer is a few kB


def error_response(status: int, code: str | None, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code, "param": param}},
                        status_code=status)


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


class RealtimeCalls:
    """The calls of one ingress replica, and the endpoints that make and end them."""

    def __init__(self, host: SessionHost, credentials: Credentials, options: WebRtcOptions) -> None:
        self.host, self.credentials, self.options = host, credentials, options
        self.calls: dict[str, RealtimeCall] = {}
        if options.loopback_candidates:
            _offer_loopback_candidates()

    def preflight(self, request: Request) -> Response:
        """``OPTIONS``: a browser asking whether its page may POST here with these headers."""
        headers = self._cors(request)
        if headers:
            headers |= {"Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Max-Age": "600",
                        "Access-Control-Allow-Headers": request.headers.get("access-control-request-headers", "")}
        return Response(status_code=204, headers=headers)

    def _cors(self, request: Request) -> dict[str, str]:
        origin, allowed = request.headers.get("origin"), self.options.cors_origins
        if origin is None or not ("*" in allowed or origin in allowed):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Location", "Vary": "Origin"}

    async def create_call(self, request: Request) -> Response:
        response = await self._create_call(request)
        response.headers.update(self._cors(request))
        return response

    async def hang_up(self, call_id: str, request: Request) -> Response:
        response = await self._hang_up(call_id, request)
        response.headers.update(self._cors(request))
        return response

    async def create_client_secret(self, request: Request) -> Response:
        response = await self._create_client_secret(request)
        response.headers.update(self._cors(request))
        return response

    async def _create_call(self, request: Request) -> Response:
        try:
            grant = self.credentials.check(bearer(request))
            offer, config = await self._read_offer(request)
            config = deep_merge(grant.session or {}, config) if grant.session else config
            model = str(config.get("model") or request.query_params.get("model") or "")
            updated(RealtimeSession(), config)  # refuse a bad config now, not after the call is up
        except Refused as refused:
            return error_response(refused.status, refused.code, refused.message)
        except ProtocolError as error:
            return error_response(400, error.code, error.message, error.param)
        if len(self.calls) >= self.options.max_calls:
            return error_response(429, "too_many_calls", f"this server is in {len(self.calls)} calls already; "
                                  "try again later")
        call = RealtimeCall(new_id("rtc"), await self.host.open_session(), self.options, model, config, self._ended)
        self.calls[call.id] = call
        try:
            answer = await call.answer(offer)
        except ValueError as error:  # aiortc's word for an offer it cannot parse or accept
            await call.hang_up()
            return error_response(400, "invalid_offer", f"the SDP offer was refused: {error}")
        return Response(answer, status_code=201, media_type="application/sdp",
                        headers={"Location": f"/v1/realtime/calls/{call.id}"})

    async def _hang_up(self, call_id: str, request: Request) -> Response:
        try:
            self.credentials.check(bearer(request))
        except Refused as refused:
            return error_response(refused.status, refused.code, refused.message)
        call = self.calls.get(call_id)
        if call is None:
            return error_response(404, "call_not_found", f"no call {call_id!r} on this server")
        await call.hang_up()
        return Response(status_code=200)

    async def _create_client_secret(self, request: Request) -> Response:
        if self.credentials.required and not self.credentials.is_api_key(bearer(request)):
            return error_response(401, "invalid_api_key", "Incorrect API key provided.")  # an ek_ cannot mint
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ProtocolError("the body must be a JSON object", "invalid_value")
            session = body.get("session") or {}
            seconds = (body.get("expires_after") or {}).get("seconds")
            if seconds is not None and not (isinstance(seconds, int) and 10 <= seconds <= 7200):
                raise ProtocolError("expires_after.seconds must be between 10 and 7200", "invalid_value",
                                    param="expires_after.seconds")
            effective = updated(RealtimeSession(model=str(session.get("model") or "openrealtime"),
                                                instructions=self.host.options.session.instructions), session)
            secret = self.credentials.mint(session, seconds)
        except json.JSONDecodeError as error:
            return error_response(400, "invalid_json", f"malformed JSON: {error.msg}")
        except ProtocolError as error:
            return error_response(400, error.code, error.message, error.param)
        except Refused as refused:
            return error_response(refused.status, refused.code, refused.message)
        wire = effective.model_dump(mode="json") | {"expires_at": secret.expires_at}
        return JSONResponse({"value": secret.value, "expires_at": secret.expires_at, "session": wire})

    async def close(self) -> None:
        for call in list(self.calls.values()):
            await call.hang_up()

    def _ended(self, call: RealtimeCall) -> None:
        self.calls.pop(call.id, None)

    async def _read_offer(self, request: Request) -> tuple[str, dict[str, Any]]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            async with request.form(max_files=2, max_fields=4, max_part_size=MAX_OFFER_BYTES) as form:
                sdp, session = await _text(form.get("sdp")), await _text(form.get("session"))
            if not sdp:
                raise ProtocolError("the form needs an `sdp` part with the offer", "invalid_value", param="sdp")
            try:
                config = json.loads(session) if session else {}
            except json.JSONDecodeError as error:
                raise ProtocolError(f"the `session` part is not JSON: {error.msg}", "invalid_value",
                                    param="session") from None
            if not isinstance(config, dict):
                raise ProtocolError("the `session` part must be a JSON object", "invalid_value", param="session")
            return sdp, config
        if content_type in ("application/sdp", "text/plain", ""):
            body = await request.body()
            if len(body) > MAX_OFFER_BYTES:
                raise ProtocolError(f"the offer is over {MAX_OFFER_BYTES} bytes", "invalid_value")
            if not body.strip():
                raise ProtocolError("the body must be the SDP offer", "invalid_value")
            return body.decode("utf-8", errors="replace"), {}
        raise ProtocolError(f"unsupported Content-Type {content_type!r}: send application/sdp or "
                            "multipart/form-data", "unsupported_content_type")


async def _text(part: str | UploadFile | None) -> str | None:
    if isinstance(part, UploadFile):
        return (await part.read()).decode("utf-8", errors="replace")
    return part


def _offer_loopback_candidates() -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; a client on this machine may need it."""
    import aioice.ice

    gather = aioice.ice.get_host_addresses
    if getattr(gather, "with_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = gather(use_ipv4, use_ipv6)
        return addresses + ["127.0.0.1"] if use_ipv4 and "127.0.0.1" not in addresses else addresses

    with_loopback.with_loopback = True
    aioice.ice.get_host_addresses = with_loopback
