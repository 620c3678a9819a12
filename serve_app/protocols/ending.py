"""How a protocol adapter ends a socket's session, whichever side hung up."""

from __future__ import annotations

import asyncio

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from serve_app.session import events as ev
from serve_app.session.engine import Session

WRITER_DRAIN_S = 5.0


async def finish_session(session: Session, engine: asyncio.Task, writer: asyncio.Task) -> None:
    """Let the session store what was said and cut (a reply cut mid-way included), then give the
    writer a moment to deliver what is left."""
    session.submit(ev.Disconnected())
    await asyncio.gather(engine, return_exceptions=True)
    try:
        await asyncio.wait_for(writer, timeout=WRITER_DRAIN_S)
    except Exception:  # noqa: BLE001 - the socket is gone; nothing left to deliver to
        writer.cancel()


async def end_session(session: Session, websocket: WebSocket, engine: asyncio.Task, writer: asyncio.Task) -> None:
    """finish_session, then close the socket if the client has not."""
    await finish_session(session, engine, writer)
    if websocket.application_state is WebSocketState.CONNECTED:
        try:
            await websocket.close()
        except (RuntimeError, WebSocketDisconnect):
            pass
