"""The Twilio routes' options (``server.twilio`` in a config's ``args``)."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field, field_validator


class TwilioOptions(BaseModel):
    auth_token: str | None = Field(
        default_factory=lambda: os.environ.get("TWILIO_AUTH_TOKEN") or None,
        description="the Twilio account's auth token; when set, every /twilio request must carry a valid "
        "X-Twilio-Signature (default: $TWILIO_AUTH_TOKEN in the ingress replica's environment)")
    public_url: str | None = Field(
        None, description="the base URL Twilio reaches this server at (https://voice.example.com, with a path "
        "prefix if a proxy adds one): the <Stream> URL and the signed URLs are built from it. Unset: from the "
        "request's X-Forwarded-Proto / X-Forwarded-Host / Host")
    instructions: str | None = Field(
        None, max_length=8000, description="system prompt for phone calls, sent as the <Stream>'s instructions "
        "parameter; unset: the session's default")
    voice: str | None = Field(None, max_length=200, description="TTS voice for phone calls; unset: the TTS default")
    keypad_pause_ms: int = Field(
        1500, ge=0, description="keys pressed are delivered as one message after this long without another key "
        "(or at once on #)")

    @field_validator("public_url")
    @classmethod
    def _absolute(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("https://", "http://")):
            raise ValueError("public_url must start with https:// (or http:// behind nothing that adds TLS)")
        return url.rstrip("/")
