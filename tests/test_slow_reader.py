"""A client that stops reading is closed with 1008, and what the server holds for it stays bounded.

Real sockets on loopback (uvicorn and the `websockets` client); the client's receive buffer is made
small, so the server's writes back up after a few megabytes in the kernel. Before the bound, 20,000
unread 2 KB pings grew the ingress by 131 MB.
"""

from __future__ import annotations

import json
import socket

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from serve_app.host import SessionHost
from tests.live_server import LiveServer
from tests.session_harness import build_app, server_options

OUTBOX_EVENTS = 200
PING = "x" * 2000


class SilentClient:
    """A WebSocket client that reads nothing until told to: the `websockets` protocol without its I/O
    threads (the threaded client reads into memory in the background), over a socket whose receive
    buffer is small, so the server's writes back up after a few megabytes."""

    def __init__(self, url: str, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(30)
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.messages: list[dict] = []
        while self.protocol.handshake_exc is None and not any(isinstance(e, Response) for e in self._read()):
            pass

    def send(self, message: dict) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def recv(self) -> dict:
        while not self.messages:
            self._read()
        return self.messages.pop(0)

    def read_to_the_close(self) -> tuple[list[dict], int, str]:
        """Everything the server sent, then its close frame's code and reason."""
        while self.protocol.close_rcvd is None:
            self._read()
        return self.messages, self.protocol.close_rcvd.code, self.protocol.close_rcvd.reason

    def _read(self) -> list:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection without a close frame")
        self.protocol.receive_data(data)
        events = self.protocol.events_received()
        self.messages += [json.loads(e.data) for e in events if isinstance(e, Frame) and e.opcode is Opcode.TEXT]
        self._flush()
        return events

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def test_a_native_client_that_does_not_read_is_closed_with_1008_and_its_outbox_stays_bounded(models, tmp_path):
    host = SessionHost(models, server_options(tmp_path / "db.sqlite3",
                                              limits={"outbox_events": OUTBOX_EVENTS, "outbox_bytes": 1_000_000,
                                                      # every ping answered: with the default rate limit most
                                                      # were dropped, and ~1,000 pongs could fit the kernel's
                                                      # send buffer without the outbox ever filling
                                                      "messages_per_s": 100_000, "message_burst": 100_000}))
    with LiveServer(build_app(host)) as server:
        client = SilentClient(f"{server.ws_url}/ws", server.port)
        client.send({"type": "start_conversation"})
        session = host.sessions[client.recv()["sessionId"]]
        sent = 0
        while not session.outbox.overflowed.is_set() and sent < 20_000:  # and never read a pong
            client.send({"type": "ping", "t": PING})
            sent += 1
        server.on_loop(session.closed.wait(), timeout=30)
        frames, code, reason = client.read_to_the_close()
        client.close()
    pongs = sum(1 for f in frames if f["type"] == "pong")
    assert session.outbox.overflowed.is_set(), f"{sent} pings sent"
    assert (code, reason) == (1008, "the client is not reading what the server sends")
    assert session.outbox.peak_events <= OUTBOX_EVENTS and session.outbox.peak_bytes <= 1_000_000
    assert session.channel.inbox.peak_commands <= session.options.limits.inbox_commands
    assert pongs < sent  # the ones it never read were dropped, not kept
    assert session.outbox.dropped > 0 and session.outbox.bytes == 0


def test_an_openai_client_that_does_not_read_is_closed_with_1008_after_the_stalled_send_limit(models, tmp_path):
    """Replies are written from the reading side here: a write that cannot complete stops the reading, and
    after ``stalled_send_s`` the socket is closed."""
    host = SessionHost(models, server_options(tmp_path / "db.sqlite3", limits={"stalled_send_s": 1.0}))
    big = {"type": "conversation.item.create", "item": {
        "id": "item_big", "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "y" * 19_000}]}}
    with LiveServer(build_app(host)) as server:
        client = SilentClient(f"{server.ws_url}/v1/realtime?model=x", server.port)
        client.send(big)
        # a response is the engine's own answer, so the session it belongs to is registered by then
        client.send({"type": "response.create", "response": {"max_output_tokens": 1, "output_modalities": ["text"]}})
        while client.recv()["type"] != "response.done":
            pass
        (session,) = host.sessions.values()
        for _ in range(600):  # 90 bytes each in, 19 KB each back out: 11 MB the client does not read
            client.send({"type": "conversation.item.retrieve", "item_id": "item_big"})
        server.on_loop(session.closed.wait(), timeout=60)
        frames, code, reason = client.read_to_the_close()
        client.close()
    retrieved = sum(1 for f in frames if f["type"] == "conversation.item.retrieved")
    assert (code, reason) == (1008, "the client is not reading what the server sends")
    assert 0 < retrieved < 600
