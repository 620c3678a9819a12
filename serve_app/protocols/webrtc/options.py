"""WebRTC options (``server.webrtc`` in the app config). No aiortc import here: settings load without it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class IceServer(BaseModel):
    """One STUN/TURN server, as in the browser's RTCIceServer."""

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


class WebRtcOptions(BaseModel):
    ice_servers: list[IceServer] = Field(
        default_factory=list, description="STUN/TURN servers for the server's side of each call; none by default "
        "(host candidates only: an offline box has no STUN to ask)")
    loopback_candidates: bool = Field(
        True, description="also offer 127.0.0.1 as a host candidate (aioice leaves it out), so a client on the same "
        "machine connects even where loopback is the only interface")
    max_calls: int = Field(50, ge=1, description="concurrent calls per ingress replica; more are refused with 429")
    connect_timeout_s: float = Field(
        30.0, gt=0, description="a call whose client never opens the oai-events data channel is dropped after this")
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"], description="web origins whose pages may call these endpoints (as they call "
        "api.openai.com): ['*'] any, [] none. Keys travel as bearer tokens, never cookies")
    client_secret_ttl_s: int = Field(600, ge=10, le=7200, description="default lifetime of an ephemeral key (ek_...)")
