"""How a protocol adapter ends a socket's session, whichever side hung up."""

from __future__ import annotations

import asyncio

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from serve_app.session import events as ev
from serve_app.session.engine import Session

WRITER_DRAIN_S = 5.0
# the session was resumed by another connection (with its resume token); HTTP's 409 Conflict, in the
# 4000-4999 range RFC 6455 leaves to applications. Clients must not reconnect and resume on it, or
# two tabs of one conversation would take it from each other for ever.
TAKEN_OVER_CODE = 4409
TAKEN_OVER_REASON = "session resumed elsewhere"


async def end_session(session: Session, websocket: WebSocket, engine: asyncio.Task, writer: asyncio.Task) -> None:
    """Let the session store what was said and cut (a reply cut mid-way included), give the writer a
    moment to deliver what is left, then close the socket if the client has not."""
    session.submit(ev.Disconnected())
    await asyncio.gather(engine, return_exceptions=True)
    try:
        await asyncio.wait_for(writer, timeout=WRITER_DRAIN_S)
    except Exception:  # noqa: BLE001 - the socket is gone; nothing left to deliver to
        writer.cancel()
    if websocket.application_state is WebSocketState.CONNECTED:
        try:
            await websocket.close()
        except (RuntimeError, WebSocketDisconnect):
            pass


async def close_taken_over(websocket: WebSocket) -> None:
    """Close a socket whose session another connection took up; its reader then sees the disconnect."""
    if websocket.application_state is WebSocketState.CONNECTED:
        try:
            await websocket.close(code=TAKEN_OVER_CODE, reason=TAKEN_OVER_REASON)
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass  # it went away by itself meanwhile
