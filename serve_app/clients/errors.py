"""Turning whatever a model call raised into a ServiceError with a phase and a code."""

from __future__ import annotations

import asyncio

from deployments.errors import ModelInputError
from serve_app.clients.models import ServiceError


def as_service_error(phase: str, error: BaseException) -> ServiceError:
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, ModelInputError):  # Ray re-raises it as a subclass, so this holds across the hop
        return ServiceError(phase, error.code, error.message)
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return ServiceError(phase, "timeout", f"the {phase} service did not answer in time")
    detail = str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__
    return ServiceError(phase, "service_unavailable", f"the {phase} service failed: {detail}")
