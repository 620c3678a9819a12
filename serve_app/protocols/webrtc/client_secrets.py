"""Ephemeral keys (``ek_...``) for browsers, and the check every call and socket passes.

``POST /v1/realtime/client_secrets`` trades a real API key for a short-lived secret a web page
may hold. The secret is self-contained: its expiry and the session config it carries are signed
with a key derived from the configured API keys, so every ingress replica (and a restarted one)
accepts it without a shared table. A secret can open several calls until it expires, as OpenAI's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import zlib
from dataclasses import dataclass
from typing import Any

PREFIX = "ek_"
MAX_PAYLOAD_CHARS = 6000  # keeps the Authorization header far below the server's header limit


class Refused(Exception):
    """A credential that may not open a session: HTTP status, OpenAI-style error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Grant:
    """What a credential allows: a session, started from the config its ephemeral key carries."""

    session: dict[str, Any] | None = None
    ephemeral: bool = False


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Credentials:
    def __init__(self, api_keys: list[str], default_ttl_s: int = 600) -> None:
        self.api_keys = list(api_keys)
        self.default_ttl_s = default_ttl_s
        self._signing_key = hashlib.sha256(b"openrealtime client secrets\0" + "\0".join(sorted(api_keys)).encode()).digest()

    @property
    def required(self) -> bool:
        return bool(self.api_keys)

    def is_api_key(self, presented: str | None) -> bool:
        return presented is not None and any(hmac.compare_digest(presented, key) for key in self.api_keys)

    def mint(self, session: dict[str, Any] | None, seconds: int | None = None, now: float | None = None) -> ClientSecret:
        expires_at = int(now if now is not None else time.time()) + (seconds or self.default_ttl_s)
        body = {"exp": expires_at, "session": session}
        payload = _b64(zlib.compress(json.dumps(body, separators=(",", ":")).encode()))
        if len(payload) > MAX_PAYLOAD_CHARS:
            raise Refused(400, "invalid_value", "the session config is too large to travel in a client secret; "
                          "send it as the call's `session` part instead")
        return ClientSecret(f"{PREFIX}{payload}.{self._sign(payload)}", expires_at)

    def check(self, presented: str | None, now: float | None = None) -> Grant:
        """A configured API key, an unexpired secret minted here; anything at all when no keys are configured."""
        if presented and presented.startswith(PREFIX) and "." in presented:
            grant = self._ephemeral(presented[len(PREFIX):], now)
            if grant is not None:
                return grant
        if not self.required or self.is_api_key(presented):
            return Grant()
        raise Refused(401, "invalid_api_key", "Incorrect API key provided.")

    def _ephemeral(self, token: str, now: float | None) -> Grant | None:
        payload, _, signature = token.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None  # not one of ours (or from before the keys changed)
        try:
            body = json.loads(zlib.decompress(_unb64(payload)))
        except (binascii.Error, ValueError, zlib.error):
            return None
        if body["exp"] <= (now if now is not None else time.time()):
            raise Refused(401, "invalid_api_key", "The client secret has expired; mint a new one.")
        return Grant(session=body.get("session"), ephemeral=True)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._signing_key, payload.encode(), hashlib.sha256).digest())
