"""What every stage of a session reports through: the actor's inbox, its outbox, generation and state.

Stages never call methods on the session. They put results in the inbox (``submit``), send events
out (``emit``, dropped when they belong to a cancelled generation), start helper tasks that the
session cancels when it ends (``spawn``), and move the turn state, which others may watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from serve_app.metrics import TURN_METRICS
from serve_app.session.events import ErrorEvent, Event, Outgoing, State, StateChanged
from serve_app.session.outbox import Outbox

StateWatcher = Callable[[State], Awaitable[None] | None]


class SessionChannel:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox = Outbox()
        self.generation = 0  # the response whose output may still reach the client
        self.state = State.IDLE
        self._watchers: list[StateWatcher] = []
        self._helpers: set[asyncio.Task] = set()

    def submit(self, message: Any) -> None:
        self.inbox.put_nowait(message)

    def emit(self, event: Event, generation: int | None = None) -> None:
        if generation is not None and generation != self.generation:
            return  # output of a cancelled response
        self.outbox.put(Outgoing(event, generation))

    def error(self, message: str, phase: str, code: str, ref: str | None = None, *,
              retryable: bool = False) -> None:
        TURN_METRICS.errors.labels(phase=phase, code=code).inc()
        self.emit(ErrorEvent(message, phase, code, ref=ref, retryable=retryable))

    def spawn(self, coroutine: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)
        return task

    def next_generation(self) -> int:
        self.generation += 1
        return self.generation

    def watch_state(self, watcher: StateWatcher) -> None:
        """``watcher`` runs on every change, before the change is announced."""
        self._watchers.append(watcher)

    async def set_state(self, state: State) -> None:
        if state is self.state:
            return
        self.state = state
        for watcher in self._watchers:
            result = watcher(state)
            if result is not None:
                await result
        self.emit(StateChanged(state))

    def close(self) -> None:
        for task in list(self._helpers):
            task.cancel()
        self._watchers.clear()  # they are the stages' methods: a cycle through the channel otherwise
        self.outbox.close()
