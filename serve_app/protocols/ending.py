"""How a protocol adapter ends a socket's session, whichever side hung up."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketState

from serve_app.session import events as ev
from serve_app.session.engine import Session

WRITER_DRAIN_S = 5.0
# the session was resumed by another connection (with its resume token); HTTP's 409 Conflict, in the
# 4000-4999 range RFC 6455 leaves to applications. Clients must not reconnect and resume on it, or
# two tabs of one conversation would take it from each other for ever.
TAKEN_OVER_CODE = 4409
TAKEN_OVER_REASON = "session resumed elsewhere"
CLOSE_S = 5.0  # a close frame waits behind unread data; a client that never reads does not get it


async def finish_session(session: Session, engine: asyncio.Task, writer: asyncio.Task, stalled: bool = False) -> None:
    """Let the session store what was said and cut (a reply cut mid-way included), then give the
    writer a moment to deliver what is left; ``stalled``: the client does not read, so nothing more
    goes to it."""
    session.submit(ev.Disconnected())
    await asyncio.gather(engine, return_exceptions=True)
    if stalled:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        return
    try:
        await asyncio.wait_for(writer, timeout=WRITER_DRAIN_S)
    except Exception:  # noqa: BLE001 - the socket is gone; nothing left to deliver to
        writer.cancel()


async def end_session(session: Session, websocket: WebSocket, engine: asyncio.Task, writer: asyncio.Task,
                      close: tuple[int, str] | None = None) -> None:
    """finish_session, then close the socket if the client has not: with ``close`` (code, reason)
    when the server is the one ending it (a client that does not read)."""
    await finish_session(session, engine, writer, stalled=close is not None)
    await close_socket(websocket, *(close or (1000, "")))


async def close_socket(websocket: WebSocket, code: int = 1000, reason: str = "") -> None:
    """Close the socket if it is still open; a close frame waits behind unread data, so not for ever."""
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):  # already closed, or gone: nothing left to tell it
            await asyncio.wait_for(websocket.close(code=code, reason=reason), CLOSE_S)


async def close_taken_over(websocket: WebSocket) -> None:
    """Close a socket whose session another connection took up; its reader then sees the disconnect."""
    await close_socket(websocket, TAKEN_OVER_CODE, TAKEN_OVER_REASON)
