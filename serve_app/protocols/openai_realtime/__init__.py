"""The OpenAI Realtime protocol (GA, and beta with ``OpenAI-Beta: realtime=v1``) over the session engine.

Modules by event family: ``handshake`` (GA/beta, key, subprotocol), ``client_events`` (parsing),
``session_config`` (the session object, deep-merged updates, what it means to the engine),
``audio`` (formats), ``items`` (the conversation), ``responses`` (a response's event sequence),
``server_events`` (the wire models), ``beta`` (the older shape), ``errors``, and ``adapter``
(one socket). See README.md beside them for the event matrix.
"""

from serve_app.protocols.openai_realtime.adapter import RealtimeAdapter
from serve_app.protocols.openai_realtime.handshake import Handshake, read_handshake

__all__ = ["Handshake", "RealtimeAdapter", "read_handshake"]
