"""What the WebSocket handshake says: GA or beta, the API key, the subprotocol to select.

Servers and SDKs send ``Authorization: Bearer <key>`` (and ``OpenAI-Beta: realtime=v1`` for
beta). Browsers cannot set headers, so they offer subprotocols instead: ``realtime``,
``openai-insecure-api-key.<key>`` and optionally ``openai-beta.realtime-v1``; the server must
select ``realtime`` or the browser drops the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.websockets import WebSocket

REALTIME_SUBPROTOCOL = "realtime"
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


@dataclass(frozen=True)
class Handshake:
    beta: bool
    api_key: str | None
    subprotocol: str | None  # the one to select when accepting
    model: str
    call_id: str | None  # SIP/WebRTC calls; not served here


def read_handshake(websocket: WebSocket) -> Handshake:
    offered = [p.strip() for p in websocket.scope.get("subprotocols", [])]
    beta_header = websocket.headers.get("openai-beta", "").replace(" ", "").lower()
    beta = "realtime=v1" in beta_header.split(",") or BETA_SUBPROTOCOL in offered
    key = None
    authorization = websocket.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    else:
        key = next((p[len(KEY_SUBPROTOCOL_PREFIX):] for p in offered if p.startswith(KEY_SUBPROTOCOL_PREFIX)),
                   websocket.query_params.get("api_key"))
    return Handshake(beta=beta, api_key=key, subprotocol=REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None,
                     model=websocket.query_params.get("model", ""), call_id=websocket.query_params.get("call_id"))
