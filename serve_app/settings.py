"""Server-side options (ingress and sessions), part of the app config's ``args``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serve_app.protocols.twilio.options import TwilioOptions
from serve_app.protocols.webrtc.options import WebRtcOptions
from serve_app.session.options import SessionOptions


class ServerOptions(BaseModel):
    health_timeout_s: float = Field(2.0, gt=0, description="how long /health waits for each model service")
    health_interval_s: float = Field(10.0, ge=1, le=300, description="how often /health's cached states are "
                                     "refreshed, in the background (requests never call the services)")
    api_keys: list[str] = Field(default_factory=list, description="when set, clients must present one of these")
    store_url: str | None = Field(
        None, description="a postgresql:// URL: one session store shared by every ingress replica and node, so a "
        "session resumes wherever its socket lands; unset: the SQLite file at session.db_path (one replica)")
    vad_placement: Literal["deployment", "ingress"] = Field(
        "deployment", description="where the per-tick VAD runs: the batched VAD deployment (one handle call per "
        "tick for all sessions; the GPU configs' choice), or in the ingress replica's own process (no hop)")
    session: SessionOptions = Field(default_factory=SessionOptions)
    twilio: TwilioOptions = Field(default_factory=TwilioOptions)
    webrtc: WebRtcOptions = Field(default_factory=WebRtcOptions)
