"""What every socket on one ingress replica shares: models, store, VAD ticker, end-of-turn model.

``smart_turn`` is anything with ``await completion_probability(audio) -> float`` (the TurnEnd
deployment's client in the ingress, the in-process model in tests), or None for fixed silence.

The ingress deployment and the engine tests both serve sockets through this, so the tests run the
same session path as production, with in-process models instead of Serve handles.
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from serve_app.clients.models import ModelServices
from serve_app.clients.vad_ticker import VadTicker
from serve_app.metrics import TURN_METRICS
from serve_app.protocols.native import NativeAdapter
from serve_app.protocols.openai_realtime import RealtimeAdapter, read_handshake
from serve_app.protocols.openai_realtime import server_events as realtime_events
from serve_app.protocols.openai_realtime.session_config import updated
from serve_app.protocols.openai_realtime.transport import WebSocketTransport
from serve_app.protocols.twilio import webhook as twilio_webhook
from serve_app.protocols.twilio.adapter import TwilioAdapter
from serve_app.protocols.webrtc.calls import RealtimeCalls
from serve_app.protocols.webrtc.client_secrets import Credentials, Refused
from serve_app.session.engine import Session
from serve_app.session.smart_turn_runner import SmartTurnRunner
from serve_app.session.transcription_load import TranscriptionLoad
from serve_app.settings import ServerOptions
from serve_app.store import SessionStore

POLICY_VIOLATION = 1008
# Browsers cannot set headers on a WebSocket handshake. They offer these subprotocols instead (the
# server selects the first), which keeps the key out of URLs, hence out of access logs and history.
NATIVE_SUBPROTOCOL = "openrealtime"
KEY_SUBPROTOCOL_PREFIX = "openrealtime.api-key."


def presented_key(connection: HTTPConnection) -> str | None:
    """``Authorization: Bearer``, the key subprotocol, or (older clients) the ``api_key`` query parameter."""
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    for offered in connection.scope.get("subprotocols", []):
        if offered.startswith(KEY_SUBPROTOCOL_PREFIX):
            return offered[len(KEY_SUBPROTOCOL_PREFIX):]
    return connection.query_params.get("api_key")


def key_accepted(keys: list[str], presented: str | None) -> bool:
    if not keys:
        return True
    return presented is not None and any(hmac.compare_digest(presented, key) for key in keys)


class SessionHost:
    def __init__(self, models: ModelServices, options: ServerOptions,
                 smart_turn: SmartTurnRunner | None = None) -> None:
        self.models, self.options = models, options
        self.smart_turn = smart_turn
        self.store: SessionStore | None = None
        self.ticker: VadTicker | None = None
        self.sessions: dict[str, Session] = {}  # live sessions by id, so a resume can take over
        self.stt_load = TranscriptionLoad()  # partial transcripts yield to final ones, across sessions
        self._lock = asyncio.Lock()
        self.credentials = Credentials(options.api_keys, options.webrtc.client_secret_ttl_s)
        self.calls = RealtimeCalls(self, self.credentials, options.webrtc)  # WebRTC: POST /v1/realtime/calls

    async def _ready(self) -> None:
        """Store and ticker belong to the serving event loop, so they are made on first use."""
        async with self._lock:
            if self.store is None:
                self.store = await SessionStore.open(self.options.store_url or self.options.session.database_path())
                self.ticker = VadTicker(self.models.detect_speech, self.options.session.vad_tick_ms / 1000)
                TURN_METRICS.count_tasks_of(asyncio.get_running_loop())

    async def open_session(self) -> Session:
        """A session for a transport that is not a socket served here (a WebRTC call)."""
        await self._ready()
        return self.new_session()

    def new_session(self, api_key: str | None = None) -> Session:
        """``api_key``: the key the client presented; with keys configured, its sessions are that key's."""
        return Session(self.models, self.store, self.options.session, vad_ticker=self.ticker,
                       smart_turn=self.smart_turn, registry=self.sessions, stt_load=self.stt_load,
                       api_key=api_key if self.options.api_keys else None)

    async def serve_native(self, websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol=NATIVE_SUBPROTOCOL if NATIVE_SUBPROTOCOL in offered else None)
        key = presented_key(websocket)
        if not key_accepted(self.options.api_keys, key):
            await websocket.close(code=POLICY_VIOLATION, reason="invalid or missing API key")
            return
        await self._ready()
        await NativeAdapter(websocket, self.new_session(key)).run()

    async def serve_openai(self, websocket: WebSocket) -> None:
        """``GET /v1/realtime``: the OpenAI Realtime protocol over the same sessions."""
        handshake = read_handshake(websocket)
        await websocket.accept(subprotocol=handshake.subprotocol)
        refusal, grant = None, None
        try:
            grant = self.credentials.check(handshake.api_key)  # an API key, or an unexpired ek_ client secret
        except Refused as refused:
            refusal = (refused.code, refused.message)
        if refusal is None and handshake.call_id is not None:
            refusal = ("unsupported", "joining SIP/WebRTC calls (call_id) is not supported; open a session instead")
        if refusal is not None:
            code, message = refusal
            error = realtime_events.ErrorDetail(type="invalid_request_error", code=code, message=message)
            await websocket.send_text(realtime_events.Error(error=error).model_dump_json())
            await websocket.close(code=POLICY_VIOLATION, reason=message[:120])
            return
        await self._ready()
        adapter = RealtimeAdapter(WebSocketTransport(websocket), self.new_session(handshake.api_key), handshake)
        if grant.session:  # what the client secret was minted with
            adapter.realtime = updated(adapter.realtime, grant.session)
        await adapter.run()

    async def twilio_voice(self, request: Request) -> Response:
        """``POST /twilio/voice``: Twilio's call webhook, answered with TwiML that opens ``/twilio/media``."""
        return await twilio_webhook.voice_webhook(request, self.options.twilio, self.options.api_keys)

    async def serve_twilio(self, websocket: WebSocket) -> None:
        """``/twilio/media``: one phone call; refused before the upgrade (HTTP 403) unless Twilio signed it."""
        refusal = twilio_webhook.upgrade_refusal(websocket, self.options.twilio, self.options.api_keys)
        if refusal is not None:
            await websocket.close(code=POLICY_VIOLATION, reason=refusal)
            return
        await websocket.accept()
        await self._ready()
        await TwilioAdapter(websocket, self.new_session(), self.options.twilio).run()

    async def close(self) -> None:
        await self.calls.close()
        async with self._lock:
            if self.store is not None:
                await self.store.close()
                self.store = None  # a later socket opens it again
