"""Server-side options (ingress and sessions), part of the app config's ``args``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ServerOptions(BaseModel):
    health_timeout_s: float = Field(2.0, gt=0, description="how long /health waits for each model service")
