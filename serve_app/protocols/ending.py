"""How a protocol adapter ends a socket's session, whichever side hung up."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketState

from serve_app.session import events as ev
from serve_app.session.engine import Session

WRITER_DRAIN_S = 5.0
CLOSE_S = 5.0  # a close frame waits behind unread data; a client that never reads does not get it


async def end_session(session: Session, websocket: WebSocket, engine: asyncio.Task, writer: asyncio.Task,
                      close: tuple[int, str] | None = None) -> None:
    """Let the session store what was said and cut (a reply cut mid-way included), give the writer a
    moment to deliver what is left, then close the socket if the client has not: with ``close``
    (code, reason) when the server is the one ending it (a client that does not read)."""
    session.submit(ev.Disconnected())
    await asyncio.gather(engine, return_exceptions=True)
    if close is not None:
        writer.cancel()  # nothing more goes to a client that does not read
        await asyncio.gather(writer, return_exceptions=True)
    else:
        try:
            await asyncio.wait_for(writer, timeout=WRITER_DRAIN_S)
        except Exception:  # noqa: BLE001 - the socket is gone; nothing left to deliver to
            writer.cancel()
    if websocket.application_state is WebSocketState.CONNECTED:
        code, reason = close or (1000, "")
        with contextlib.suppress(Exception):  # already closed, or gone: nothing left to tell it
            await asyncio.wait_for(websocket.close(code=code, reason=reason), CLOSE_S)
