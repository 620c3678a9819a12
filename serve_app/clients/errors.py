"""Turning whatever a model call raised into a ServiceError with a phase and a code."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from ray.exceptions import RayActorError

from deployments.errors import ModelInputError
from serve_app.clients.models import ServiceError


def as_service_error(phase: str, error: BaseException) -> ServiceError:
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, ModelInputError):  # Ray re-raises it as a subclass, so this holds across the hop
        return ServiceError(phase, error.code, error.message)
    if isinstance(error, RayActorError):  # the replica's process died mid-call (ActorDiedError, ...)
        return ServiceError(phase, "service_unavailable",
                            f"the {phase} service stopped during the call; Ray Serve is restarting it")
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return ServiceError(phase, "timeout", f"the {phase} service did not answer in time")
    detail = str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__
    return ServiceError(phase, "service_unavailable", f"the {phase} service failed: {detail}")


async def guarded_stream(phase: str, items: AsyncIterator, timeout_s: float,
                         stop: Callable[[], Any]) -> AsyncIterator:
    """Yield a model stream's items; a slow or failing stream becomes ServiceError.

    ``stop`` runs however the stream ends (finished, failed, or closed early by the consumer), so
    work downstream never outlives the caller's interest in it.
    """
    try:
        while True:
            try:
                # not wait_for: on 3.11 it drops a cancel that lands as the next item arrives, and a
                # barge-in's cancelled response then reads on (tests/test_cancel_races.py)
                async with asyncio.timeout(timeout_s):
                    item = await items.__anext__()
            except StopAsyncIteration:
                return
            yield item
    except (GeneratorExit, asyncio.CancelledError):
        raise
    except Exception as error:
        raise as_service_error(phase, error) from error
    finally:
        stopped = stop()
        if inspect.isawaitable(stopped):
            await stopped
