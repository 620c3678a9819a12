"""What every stage of a session reports through: the actor's inbox, its outbox, generation and state.

Stages never call methods on the session. They put results in the inbox (``submit``), send events
out (``emit``, dropped when they belong to a cancelled generation), start helper tasks that the
session cancels when it ends (``spawn``), and move the turn state, which others may watch.

Both queues are bounded for what a client controls: client commands wait for room in the inbox
(the adapter stops reading the socket meanwhile), and the outbox overflows for a client that does
not read (serve_app/session/outbox.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from serve_app.metrics import TURN_METRICS
from serve_app.session.events import Command, ErrorEvent, Event, Outgoing, State, StateChanged
from serve_app.session.options import LimitsOptions
from serve_app.session.outbox import Outbox

StateWatcher = Callable[[State], Awaitable[None] | None]


class Inbox:
    """The actor's queue. Its own helpers' results always get in (they are few: one per task it
    started); client commands count against ``max_commands``, and ``room()`` waits while that many
    are queued, so a client that sends faster than its session works is slowed at the socket."""

    def __init__(self, max_commands: int = 256) -> None:
        self._queue: asyncio.Queue = asyncio.Queue()
        self.max_commands = max_commands
        self.commands = 0
        self.peak_commands = 0
        self._room = asyncio.Event()
        self._room.set()

    def put_nowait(self, message: Any) -> None:
        if isinstance(message, Command):
            self.commands += 1
            self.peak_commands = max(self.peak_commands, self.commands)
            if self.commands >= self.max_commands:
                self._room.clear()
        self._queue.put_nowait(message)

    async def get(self) -> Any:
        message = await self._queue.get()
        if isinstance(message, Command):
            self.commands -= 1
            if self.commands < self.max_commands:
                self._room.set()
        return message

    def empty(self) -> bool:
        return self._queue.empty()

    def qsize(self) -> int:
        return self._queue.qsize()

    async def room(self) -> None:
        await self._room.wait()


class SessionChannel:
    def __init__(self, limits: LimitsOptions | None = None) -> None:
        limits = limits or LimitsOptions()
        self.inbox = Inbox(limits.inbox_commands)
        self.outbox = Outbox(limits.outbox_events, limits.outbox_bytes)
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
