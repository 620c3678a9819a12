"""Server-side options (ingress and sessions), part of the app config's ``args``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from serve_app.session.options import SessionOptions


class ServerOptions(BaseModel):
    health_timeout_s: float = Field(2.0, gt=0, description="how long /health waits for each model service")
    api_keys: list[str] = Field(default_factory=list, description="when set, clients must present one of these")
    session: SessionOptions = Field(default_factory=SessionOptions)
