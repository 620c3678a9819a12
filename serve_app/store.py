"""Session persistence: sessions, messages, tool calls, images and per-turn timings.

``SessionStore`` is the interface the engine calls; ``await SessionStore.open(location)`` picks
the backend from the location: a file path (or ``:memory:``) opens the embedded SQLite store
below, a ``postgresql://`` URL the shared PostgreSQL store (serve_app/store_postgres.py) that
lets a session resume on any ingress replica or node.

Writes the protocol announces (sessions, messages, tool calls, images) are committed before
they return, so the engine announces an event only after the store has it. State changes and
turn timings are announced from memory and only read back on resume, so the SQLite store
commits them in groups off the hot path (see ``SqliteStore``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiosqlite

ROLES = ("user", "assistant", "system", "tool")
MESSAGE_STATUSES = ("complete", "interrupted", "streaming")
TOOL_CALL_STATUSES = ("pending", "ok", "error", "cancelled")  # error: the call failed
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
TURN_COLUMNS = ("speech_end_at", "transcript_at", "first_token_at", "first_audio_at", "barge_in_at",
                "stopped_at", "interrupted", "turn_end_at", "prompt_tokens", "cached_tokens")
# columns added after the first release, with their types: added to older database files on open
_ADDED_TURN_COLUMNS = {"turn_end_at": "REAL", "prompt_tokens": "INTEGER", "cached_tokens": "INTEGER"}
_ADDED_SESSION_COLUMNS = {"resume_token_hash": "TEXT", "owner_key_hash": "TEXT"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    state TEXT NOT NULL,
    config_json TEXT NOT NULL,
    resume_token_hash TEXT,
    owner_key_hash TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn_index INTEGER NOT NULL,
    created_at REAL NOT NULL,
    speech_end_at REAL,
    transcript_at REAL,
    first_token_at REAL,
    first_audio_at REAL,
    barge_in_at REAL,
    stopped_at REAL,
    interrupted INTEGER NOT NULL DEFAULT 0,
    turn_end_at REAL,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,
    UNIQUE (session_id, turn_index)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('complete', 'interrupted', 'streaming')),
    full_content TEXT,
    tool_calls_json TEXT,
    tool_call_id TEXT,
    turn_id INTEGER REFERENCES turns(id),
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_id, id);
CREATE TABLE IF NOT EXISTS tool_calls (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    message_id INTEGER REFERENCES messages(id),
    call_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    arguments_json TEXT NOT NULL,
    result_json TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ok', 'error', 'cancelled')),
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS tool_calls_by_session ON tool_calls (session_id, id);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    mime TEXT NOT NULL,
    byte_size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    prompt TEXT,
    description TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_session ON images (session_id, id);
"""


@dataclass(frozen=True)
class StoredSession:
    id: str
    created_at: float
    updated_at: float
    state: str
    config: dict[str, Any]
    resume_token_hash: str | None = None
    """A digest of the secret that resumes the session (serve_app/session/ownership.py), never the secret."""
    owner_key_hash: str | None = None
    """A digest of the API key that created the session, when keys were configured."""


@dataclass(frozen=True)
class StoredMessage:
    id: int
    session_id: str
    role: str
    content: str
    status: str
    full_content: str | None
    """The whole generated text, kept when `content` was cut to what the user heard."""
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    turn_id: int | None
    created_at: float


@dataclass(frozen=True)
class StoredToolCall:
    id: int
    session_id: str
    message_id: int | None
    call_id: str
    name: str
    arguments_json: str
    result_json: str | None
    status: str
    started_at: float
    finished_at: float | None


@dataclass(frozen=True)
class StoredImage:
    id: int
    session_id: str
    created_at: float
    mime: str
    byte_size: int
    sha256: str
    prompt: str | None
    description: str
    data: bytes


@dataclass(frozen=True)
class TurnTimings:
    id: int
    session_id: str
    turn_index: int
    created_at: float
    speech_end_at: float | None
    transcript_at: float | None
    first_token_at: float | None
    first_audio_at: float | None
    barge_in_at: float | None
    stopped_at: float | None
    interrupted: bool
    turn_end_at: float | None = None  # when the turn was decided over (speech_end_at: when speech stopped)
    prompt_tokens: int | None = None  # the reply's prompt, all LLM rounds
    cached_tokens: int | None = None  # of those, served from the KV cache instead of evaluated


class SessionStore(ABC):
    """The store the engine talks to; open one with ``await SessionStore.open(location)``.

    Unknown sessions, messages, turns and tool calls raise KeyError; duplicate ids and bad
    roles or statuses raise ValueError, on every backend alike.
    """

    @classmethod
    async def open(cls, path: str | Path) -> SessionStore:
        """A SQLite file (or ``:memory:``), or a PostgreSQL URL (``postgresql://user@host/db``)."""
        if isinstance(path, str) and path.startswith(POSTGRES_SCHEMES):
            from serve_app.store_postgres import PostgresStore

            return await PostgresStore.connect(path)
        return await SqliteStore.open_file(path)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def create_session(self, session_id: str, config: dict[str, Any], state: str = "idle", *,
                             resume_token_hash: str | None = None,
                             owner_key_hash: str | None = None) -> StoredSession: ...

    @abstractmethod
    async def rotate_resume_token(self, session_id: str, current_hash: str, new_hash: str) -> bool:
        """Replace the resume token's digest if ``current_hash`` is the stored one, atomically, so of two
        clients presenting the same token only one wins; False (and nothing changed) otherwise."""

    @abstractmethod
    async def get_session(self, session_id: str) -> StoredSession | None: ...

    @abstractmethod
    async def set_state(self, session_id: str, state: str) -> None: ...

    @abstractmethod
    async def update_config(self, session_id: str, config: dict[str, Any]) -> None: ...

    @abstractmethod
    async def add_message(self, session_id: str, role: str, content: str, *, status: str = "complete",
                          tool_calls: list[dict[str, Any]] | None = None, tool_call_id: str | None = None,
                          turn_id: int | None = None) -> StoredMessage: ...

    @abstractmethod
    async def update_message(self, message_id: int, *, content: str | None = None, status: str | None = None,
                             full_content: str | None = None) -> None: ...

    @abstractmethod
    async def last_messages(self, session_id: str, limit: int = 10) -> list[StoredMessage]:
        """The newest `limit` messages, oldest first (the order a client replays them in)."""

    @abstractmethod
    async def messages(self, session_id: str) -> list[StoredMessage]: ...

    @abstractmethod
    async def add_tool_call(self, session_id: str, call_id: str, name: str, arguments_json: str,
                            message_id: int | None = None) -> None: ...

    @abstractmethod
    async def finish_tool_call(self, session_id: str, call_id: str, result_json: str, status: str) -> None:
        """End ``session_id``'s call ``call_id``; another session's call of that id is not found (KeyError)."""

    @abstractmethod
    async def cancel_pending_tool_calls(self, session_id: str, result_json: str) -> int:
        """Every call of the session still ``pending`` becomes ``cancelled``; returns how many."""

    @abstractmethod
    async def tool_calls(self, session_id: str) -> list[StoredToolCall]: ...

    @abstractmethod
    async def add_image(self, session_id: str, data: bytes, mime: str, prompt: str | None,
                        description: str) -> StoredImage: ...

    @abstractmethod
    async def images(self, session_id: str) -> list[StoredImage]: ...

    @abstractmethod
    async def start_turn(self, session_id: str) -> int:
        """A new turn row; its index is the number of turns the session had before it."""

    @abstractmethod
    async def record_turn(self, turn_id: int, **timings: float | bool | None) -> None:
        """Set any subset of the timing columns (unix seconds) and `interrupted`."""

    @abstractmethod
    async def turns(self, session_id: str) -> list[TurnTimings]: ...


class SqliteStore(SessionStore):
    """The embedded store: one SQLite file in WAL mode with ``synchronous=NORMAL``.

    One connection, one lock: each write runs inside a savepoint, so a failed write undoes only
    itself. Announced writes commit before they return (which also commits anything pending);
    ``set_state`` and ``record_turn`` leave their transaction open and a flusher commits it
    within ``GROUP_COMMIT_S``. A process crash can lose those last few milliseconds of state and
    timings; with ``synchronous=NORMAL`` a power loss can also lose the last committed
    transactions (the file itself stays consistent).
    """

    GROUP_COMMIT_S = 0.05

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task | None = None

    @classmethod
    async def open_file(cls, path: str | Path) -> SqliteStore:
        in_memory = str(path) == ":memory:"
        if not in_memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: this class says BEGIN/COMMIT itself (savepoints, group commits)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        db.row_factory = aiosqlite.Row
        try:
            if not in_memory:
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync per commit, only at checkpoints
            await db.execute("PRAGMA foreign_keys=ON")
            await db.executescript(SCHEMA)
            await _add_missing_columns(db, "turns", _ADDED_TURN_COLUMNS)
            await _add_missing_columns(db, "sessions", _ADDED_SESSION_COLUMNS)
            await _allow_cancelled_tool_calls(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        async with self._lock:
            if self._flusher is not None:
                self._flusher.cancel()
            if self._db.in_transaction:
                await self._db.commit()
            await self._db.close()

    # sessions

    async def create_session(self, session_id: str, config: dict[str, Any], state: str = "idle", *,
                             resume_token_hash: str | None = None,
                             owner_key_hash: str | None = None) -> StoredSession:
        now = time.time()
        async with self._write() as db:
            try:
                await db.execute(
                    "INSERT INTO sessions (id, created_at, updated_at, state, config_json, resume_token_hash,"
                    " owner_key_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (session_id, now, now, state, json.dumps(config), resume_token_hash, owner_key_hash),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"session {session_id!r} already exists") from exc
        return StoredSession(session_id, now, now, state, config, resume_token_hash, owner_key_hash)

    async def get_session(self, session_id: str) -> StoredSession | None:
        row = await self._fetch_one("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return None if row is None else _session(row)

    async def rotate_resume_token(self, session_id: str, current_hash: str, new_hash: str) -> bool:
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE sessions SET resume_token_hash = ?, updated_at = ? WHERE id = ? AND resume_token_hash = ?",
                (new_hash, time.time(), session_id, current_hash))
            return cursor.rowcount == 1

    async def set_state(self, session_id: str, state: str) -> None:
        async with self._write(durable=False) as db:
            cursor = await db.execute("UPDATE sessions SET state = ?, updated_at = ? WHERE id = ?",
                                      (state, time.time(), session_id))
            _require_row(cursor.rowcount, f"unknown session {session_id!r}")

    async def update_config(self, session_id: str, config: dict[str, Any]) -> None:
        async with self._write() as db:
            cursor = await db.execute("UPDATE sessions SET config_json = ?, updated_at = ? WHERE id = ?",
                                      (json.dumps(config), time.time(), session_id))
            _require_row(cursor.rowcount, f"unknown session {session_id!r}")

    # messages

    async def add_message(
        self,
        session_id: str,
        role: str,
        content: str,
        *,
        status: str = "complete",
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        turn_id: int | None = None,
    ) -> StoredMessage:
        _check_choice("role", role, ROLES)
        _check_choice("message status", status, MESSAGE_STATUSES)
        now = time.time()
        tool_calls_json = json.dumps(tool_calls) if tool_calls is not None else None
        async with self._write() as db:
            await self._require_session(db, session_id)
            if turn_id is not None:
                await self._require(db, "SELECT 1 FROM turns WHERE id = ?", (turn_id,), f"unknown turn {turn_id}")
            cursor = await db.execute(
                "INSERT INTO messages (session_id, role, content, status, tool_calls_json, tool_call_id, turn_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, role, content, status, tool_calls_json, tool_call_id, turn_id, now),
            )
            message_id = cursor.lastrowid
        assert message_id is not None
        return StoredMessage(message_id, session_id, role, content, status, None, tool_calls, tool_call_id,
                             turn_id, now)

    async def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        status: str | None = None,
        full_content: str | None = None,
    ) -> None:
        changes = _message_changes(content, status, full_content)
        async with self._write() as db:
            if not changes:
                await self._require(db, "SELECT 1 FROM messages WHERE id = ?", (message_id,),
                                    f"unknown message {message_id}")
                return
            assignments = ", ".join(f"{column} = ?" for column in changes)
            cursor = await db.execute(f"UPDATE messages SET {assignments} WHERE id = ?",
                                      (*changes.values(), message_id))
            _require_row(cursor.rowcount, f"unknown message {message_id}")

    async def last_messages(self, session_id: str, limit: int = 10) -> list[StoredMessage]:
        """The newest `limit` messages, oldest first (the order a client replays them in)."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        rows = await self._fetch_all(
            "SELECT * FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT ?", (session_id, limit))
        return [_message(row) for row in reversed(rows)]

    async def messages(self, session_id: str) -> list[StoredMessage]:
        rows = await self._fetch_all("SELECT * FROM messages WHERE session_id = ? ORDER BY id", (session_id,))
        return [_message(row) for row in rows]

    # tool calls

    async def add_tool_call(self, session_id: str, call_id: str, name: str, arguments_json: str,
                            message_id: int | None = None) -> None:
        async with self._write() as db:
            await self._require_session(db, session_id)
            if message_id is not None:
                await self._require(db, "SELECT 1 FROM messages WHERE id = ?", (message_id,),
                                    f"unknown message {message_id}")
            try:
                await db.execute(
                    "INSERT INTO tool_calls (session_id, message_id, call_id, name, arguments_json, status,"
                    " started_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                    (session_id, message_id, call_id, name, arguments_json, time.time()),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"tool call {call_id!r} already exists") from exc

    async def finish_tool_call(self, session_id: str, call_id: str, result_json: str, status: str) -> None:
        _check_choice("tool call status", status, TOOL_CALL_STATUSES)
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE tool_calls SET result_json = ?, status = ?, finished_at = ? WHERE session_id = ? AND call_id = ?",
                (result_json, status, time.time(), session_id, call_id))
            _require_row(cursor.rowcount, f"unknown tool call {call_id!r} in session {session_id!r}")

    async def cancel_pending_tool_calls(self, session_id: str, result_json: str) -> int:
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE tool_calls SET result_json = ?, status = 'cancelled', finished_at = ?"
                " WHERE session_id = ? AND status = 'pending'", (result_json, time.time(), session_id))
            return cursor.rowcount

    async def tool_calls(self, session_id: str) -> list[StoredToolCall]:
        rows = await self._fetch_all("SELECT * FROM tool_calls WHERE session_id = ? ORDER BY id", (session_id,))
        return [StoredToolCall(**dict(row)) for row in rows]

    # images

    async def add_image(self, session_id: str, data: bytes, mime: str, prompt: str | None,
                        description: str) -> StoredImage:
        now = time.time()
        digest = hashlib.sha256(data).hexdigest()
        async with self._write() as db:
            await self._require_session(db, session_id)
            cursor = await db.execute(
                "INSERT INTO images (session_id, created_at, mime, byte_size, sha256, prompt, description, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, now, mime, len(data), digest, prompt, description, data),
            )
            image_id = cursor.lastrowid
        assert image_id is not None
        return StoredImage(image_id, session_id, now, mime, len(data), digest, prompt, description, bytes(data))

    async def images(self, session_id: str) -> list[StoredImage]:
        rows = await self._fetch_all("SELECT * FROM images WHERE session_id = ? ORDER BY id", (session_id,))
        return [StoredImage(**{**dict(row), "data": bytes(row["data"])}) for row in rows]

    # turns

    async def start_turn(self, session_id: str) -> int:
        """A new turn row; its index is the number of turns the session had before it."""
        async with self._write() as db:
            await self._require_session(db, session_id)
            cursor = await db.execute(
                "INSERT INTO turns (session_id, turn_index, created_at)"
                " VALUES (?, (SELECT COUNT(*) FROM turns WHERE session_id = ?), ?)",
                (session_id, session_id, time.time()),
            )
            turn_id = cursor.lastrowid
        assert turn_id is not None
        return turn_id

    async def record_turn(self, turn_id: int, **timings: float | bool | None) -> None:
        """Set any subset of the timing columns (unix seconds) and `interrupted`."""
        values = _turn_values(timings)
        async with self._write(durable=False) as db:
            if not values:
                await self._require(db, "SELECT 1 FROM turns WHERE id = ?", (turn_id,), f"unknown turn {turn_id}")
                return
            assignments = ", ".join(f"{column} = ?" for column in values)
            cursor = await db.execute(f"UPDATE turns SET {assignments} WHERE id = ?", (*values.values(), turn_id))
            _require_row(cursor.rowcount, f"unknown turn {turn_id}")

    async def turns(self, session_id: str) -> list[TurnTimings]:
        rows = await self._fetch_all("SELECT * FROM turns WHERE session_id = ? ORDER BY turn_index",
                                     (session_id,))
        return [TurnTimings(**{**dict(row), "interrupted": bool(row["interrupted"])}) for row in rows]

    # plumbing

    @asynccontextmanager
    async def _write(self, durable: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """One write in its own savepoint; committed before returning when ``durable``, else soon after."""
        async with self._lock:
            if not self._db.in_transaction:
                await self._db.execute("BEGIN")
            await self._db.execute("SAVEPOINT write")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK TO write")
                await self._db.execute("RELEASE write")
                raise
            await self._db.execute("RELEASE write")
            if durable:
                await self._db.commit()
            elif self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._commit_soon())

    async def _commit_soon(self) -> None:
        await asyncio.sleep(self.GROUP_COMMIT_S)  # the group-commit window, not a synchronisation
        async with self._lock:
            if self._db.in_transaction:
                await self._db.commit()

    async def _fetch_one(self, sql: str, params: tuple[Any, ...]) -> aiosqlite.Row | None:
        async with self._lock, self._db.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def _fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[aiosqlite.Row]:
        async with self._lock, self._db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _require_session(self, db: aiosqlite.Connection, session_id: str) -> None:
        await self._require(db, "SELECT 1 FROM sessions WHERE id = ?", (session_id,),
                            f"unknown session {session_id!r}")

    @staticmethod
    async def _require(db: aiosqlite.Connection, sql: str, params: tuple[Any, ...], message: str) -> None:
        async with db.execute(sql, params) as cursor:
            if await cursor.fetchone() is None:
                raise KeyError(message)


def _message_changes(content: str | None, status: str | None, full_content: str | None) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if content is not None:
        changes["content"] = content
    if status is not None:
        _check_choice("message status", status, MESSAGE_STATUSES)
        changes["status"] = status
    if full_content is not None:
        changes["full_content"] = full_content
    return changes


def _turn_values(timings: dict[str, float | bool | None]) -> dict[str, Any]:
    unknown = sorted(set(timings) - set(TURN_COLUMNS))
    if unknown:
        raise TypeError(f"unknown turn field(s) {unknown}; expected some of {list(TURN_COLUMNS)}")
    return {k: int(bool(v)) if k == "interrupted" else v for k, v in timings.items()}


def _require_row(rowcount: int, message: str) -> None:
    if rowcount == 0:
        raise KeyError(message)


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def _session(row: Any) -> StoredSession:
    return StoredSession(row["id"], row["created_at"], row["updated_at"], row["state"], json.loads(row["config_json"]),
                         row["resume_token_hash"], row["owner_key_hash"])


def _message(row: aiosqlite.Row) -> StoredMessage:
    tool_calls = json.loads(row["tool_calls_json"]) if row["tool_calls_json"] is not None else None
    return StoredMessage(row["id"], row["session_id"], row["role"], row["content"], row["status"],
                         row["full_content"], tool_calls, row["tool_call_id"], row["turn_id"], row["created_at"])


async def _add_missing_columns(db: aiosqlite.Connection, table: str, columns: dict[str, str]) -> None:
    """Bring a database file written by an older release up to the current schema."""
    async with db.execute(f"PRAGMA table_info({table})") as cursor:
        present = {row[1] for row in await cursor.fetchall()}
    for name, kind in columns.items():
        if name not in present:
            await db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


async def _allow_cancelled_tool_calls(db: aiosqlite.Connection) -> None:
    """A file from before the ``cancelled`` status has the old CHECK; SQLite cannot alter one, so the
    table is rebuilt with the current definition (its rows copied as they are)."""
    async with db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tool_calls'") as cursor:
        row = await cursor.fetchone()
    if row is None or "'cancelled'" in row[0]:
        return
    definition = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS tool_calls"):]
    definition = definition[: definition.index(");") + 2].replace("IF NOT EXISTS tool_calls", "tool_calls_new")
    await db.execute("BEGIN")
    await db.execute(definition)
    await db.execute("INSERT INTO tool_calls_new SELECT * FROM tool_calls")
    await db.execute("DROP TABLE tool_calls")
    await db.execute("ALTER TABLE tool_calls_new RENAME TO tool_calls")
    await db.execute("CREATE INDEX IF NOT EXISTS tool_calls_by_session ON tool_calls (session_id, id)")
    await db.commit()
