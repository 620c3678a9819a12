"""The shared session store: PostgreSQL through asyncpg, for sessions that move between replicas.

Same tables and same behaviour as the SQLite store (serve_app/store.py): every ingress replica,
on any node, opens a pool on one database, so a client can resume its session on whichever
replica its reconnect lands on. Every write commits before it returns.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from serve_app.store import (
    MESSAGE_STATUSES,
    ROLES,
    TOOL_CALL_STATUSES,
    SessionStore,
    StoredImage,
    StoredMessage,
    StoredSession,
    StoredToolCall,
    TurnTimings,
    _check_choice,
    _message,
    _message_changes,
    _require_row,
    _session,
    _turn_values,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    config_json TEXT NOT NULL,
    resume_token_hash TEXT,
    owner_key_hash TEXT
);
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS resume_token_hash TEXT;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS owner_key_hash TEXT;
CREATE TABLE IF NOT EXISTS turns (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn_index INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    speech_end_at DOUBLE PRECISION,
    transcript_at DOUBLE PRECISION,
    first_token_at DOUBLE PRECISION,
    first_audio_at DOUBLE PRECISION,
    barge_in_at DOUBLE PRECISION,
    stopped_at DOUBLE PRECISION,
    interrupted BOOLEAN NOT NULL DEFAULT FALSE,
    turn_end_at DOUBLE PRECISION,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,
    UNIQUE (session_id, turn_index)
);
ALTER TABLE turns ADD COLUMN IF NOT EXISTS turn_end_at DOUBLE PRECISION;
ALTER TABLE turns ADD COLUMN IF NOT EXISTS prompt_tokens INTEGER;
ALTER TABLE turns ADD COLUMN IF NOT EXISTS cached_tokens INTEGER;
CREATE TABLE IF NOT EXISTS messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('complete', 'interrupted', 'streaming')),
    full_content TEXT,
    tool_calls_json TEXT,
    tool_call_id TEXT,
    turn_id BIGINT REFERENCES turns(id),
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_id, id);
CREATE TABLE IF NOT EXISTS tool_calls (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    message_id BIGINT REFERENCES messages(id),
    call_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    arguments_json TEXT NOT NULL,
    result_json TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ok', 'error', 'cancelled')),
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION
);
ALTER TABLE tool_calls DROP CONSTRAINT IF EXISTS tool_calls_status_check;
ALTER TABLE tool_calls ADD CONSTRAINT tool_calls_status_check
    CHECK (status IN ('pending', 'ok', 'error', 'cancelled'));
CREATE INDEX IF NOT EXISTS tool_calls_by_session ON tool_calls (session_id, id);
CREATE TABLE IF NOT EXISTS images (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL,
    mime TEXT NOT NULL,
    byte_size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    prompt TEXT,
    description TEXT NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_session ON images (session_id, id);
"""
SCHEMA_LOCK = 0x0E4E_5EA1  # advisory lock: replicas starting together create the tables once


class PostgresStore(SessionStore):
    """A pool of connections to one PostgreSQL database; open with ``SessionStore.open(url)``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresStore:
        """``url`` as libpq takes it; a password may also come from PGPASSWORD or ~/.pgpass."""
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
        try:
            async with pool.acquire() as db, db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                await db.execute(SCHEMA)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as db, db.transaction():
            yield db

    # sessions

    async def create_session(self, session_id: str, config: dict[str, Any], state: str = "idle", *,
                             resume_token_hash: str | None = None,
                             owner_key_hash: str | None = None) -> StoredSession:
        now = time.time()
        async with self._write() as db:
            try:
                await db.execute(
                    "INSERT INTO sessions (id, created_at, updated_at, state, config_json, resume_token_hash,"
                    " owner_key_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    session_id, now, now, state, json.dumps(config), resume_token_hash, owner_key_hash)
            except asyncpg.UniqueViolationError as exc:
                raise ValueError(f"session {session_id!r} already exists") from exc
        return StoredSession(session_id, now, now, state, config, resume_token_hash, owner_key_hash)

    async def get_session(self, session_id: str) -> StoredSession | None:
        row = await self._pool.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
        return None if row is None else _session(row)

    async def rotate_resume_token(self, session_id: str, current_hash: str, new_hash: str) -> bool:
        status = await self._pool.execute(
            "UPDATE sessions SET resume_token_hash = $1, updated_at = $2 WHERE id = $3 AND resume_token_hash = $4",
            new_hash, time.time(), session_id, current_hash)
        return _count(status) == 1

    async def set_state(self, session_id: str, state: str) -> None:
        status = await self._pool.execute("UPDATE sessions SET state = $1, updated_at = $2 WHERE id = $3",
                                          state, time.time(), session_id)
        _require_row(_count(status), f"unknown session {session_id!r}")

    async def update_config(self, session_id: str, config: dict[str, Any]) -> None:
        status = await self._pool.execute("UPDATE sessions SET config_json = $1, updated_at = $2 WHERE id = $3",
                                          json.dumps(config), time.time(), session_id)
        _require_row(_count(status), f"unknown session {session_id!r}")

    # messages

    async def add_message(self, session_id: str, role: str, content: str, *, status: str = "complete",
                          tool_calls: list[dict[str, Any]] | None = None, tool_call_id: str | None = None,
                          turn_id: int | None = None) -> StoredMessage:
        _check_choice("role", role, ROLES)
        _check_choice("message status", status, MESSAGE_STATUSES)
        now = time.time()
        tool_calls_json = json.dumps(tool_calls) if tool_calls is not None else None
        async with self._write() as db:
            await _require(db, "SELECT 1 FROM sessions WHERE id = $1", session_id, f"unknown session {session_id!r}")
            if turn_id is not None:
                await _require(db, "SELECT 1 FROM turns WHERE id = $1", turn_id, f"unknown turn {turn_id}")
            message_id = await db.fetchval(
                "INSERT INTO messages (session_id, role, content, status, tool_calls_json, tool_call_id, turn_id,"
                " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                session_id, role, content, status, tool_calls_json, tool_call_id, turn_id, now)
        return StoredMessage(message_id, session_id, role, content, status, None, tool_calls, tool_call_id,
                             turn_id, now)

    async def update_message(self, message_id: int, *, content: str | None = None, status: str | None = None,
                             full_content: str | None = None) -> None:
        await self._update_row("messages", message_id, _message_changes(content, status, full_content),
                               f"unknown message {message_id}")

    async def last_messages(self, session_id: str, limit: int = 10) -> list[StoredMessage]:
        """The newest `limit` messages, oldest first (the order a client replays them in)."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        rows = await self._pool.fetch("SELECT * FROM messages WHERE session_id = $1 ORDER BY id DESC LIMIT $2",
                                      session_id, limit)
        return [_message(row) for row in reversed(rows)]

    async def messages(self, session_id: str) -> list[StoredMessage]:
        rows = await self._pool.fetch("SELECT * FROM messages WHERE session_id = $1 ORDER BY id", session_id)
        return [_message(row) for row in rows]

    # tool calls

    async def add_tool_call(self, session_id: str, call_id: str, name: str, arguments_json: str,
                            message_id: int | None = None) -> None:
        async with self._write() as db:
            await _require(db, "SELECT 1 FROM sessions WHERE id = $1", session_id, f"unknown session {session_id!r}")
            if message_id is not None:
                await _require(db, "SELECT 1 FROM messages WHERE id = $1", message_id, f"unknown message {message_id}")
            try:
                await db.execute(
                    "INSERT INTO tool_calls (session_id, message_id, call_id, name, arguments_json, status,"
                    " started_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
                    session_id, message_id, call_id, name, arguments_json, time.time())
            except asyncpg.UniqueViolationError as exc:
                raise ValueError(f"tool call {call_id!r} already exists") from exc

    async def finish_tool_call(self, session_id: str, call_id: str, result_json: str, status: str) -> None:
        _check_choice("tool call status", status, TOOL_CALL_STATUSES)
        result = await self._pool.execute(
            "UPDATE tool_calls SET result_json = $1, status = $2, finished_at = $3 WHERE session_id = $4 AND call_id = $5",
            result_json, status, time.time(), session_id, call_id)
        _require_row(_count(result), f"unknown tool call {call_id!r} in session {session_id!r}")

    async def cancel_pending_tool_calls(self, session_id: str, result_json: str) -> int:
        result = await self._pool.execute(
            "UPDATE tool_calls SET result_json = $1, status = 'cancelled', finished_at = $2"
            " WHERE session_id = $3 AND status = 'pending'", result_json, time.time(), session_id)
        return _count(result)

    async def tool_calls(self, session_id: str) -> list[StoredToolCall]:
        rows = await self._pool.fetch("SELECT * FROM tool_calls WHERE session_id = $1 ORDER BY id", session_id)
        return [StoredToolCall(**dict(row)) for row in rows]

    # images

    async def add_image(self, session_id: str, data: bytes, mime: str, prompt: str | None,
                        description: str) -> StoredImage:
        now = time.time()
        digest = hashlib.sha256(data).hexdigest()
        async with self._write() as db:
            await _require(db, "SELECT 1 FROM sessions WHERE id = $1", session_id, f"unknown session {session_id!r}")
            image_id = await db.fetchval(
                "INSERT INTO images (session_id, created_at, mime, byte_size, sha256, prompt, description, data)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                session_id, now, mime, len(data), digest, prompt, description, bytes(data))
        return StoredImage(image_id, session_id, now, mime, len(data), digest, prompt, description, bytes(data))

    async def images(self, session_id: str) -> list[StoredImage]:
        rows = await self._pool.fetch("SELECT * FROM images WHERE session_id = $1 ORDER BY id", session_id)
        return [StoredImage(**{**dict(row), "data": bytes(row["data"])}) for row in rows]

    # turns

    async def start_turn(self, session_id: str) -> int:
        """A new turn row; its index is the number of turns the session had before it."""
        async with self._write() as db:
            # the row lock serialises concurrent starts of one session, so indices never collide
            await _require(db, "SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id,
                           f"unknown session {session_id!r}")
            return await db.fetchval(
                "INSERT INTO turns (session_id, turn_index, created_at)"
                " VALUES ($1, (SELECT COUNT(*) FROM turns WHERE session_id = $1), $2) RETURNING id",
                session_id, time.time())

    async def record_turn(self, turn_id: int, **timings: float | bool | None) -> None:
        """Set any subset of the timing columns (unix seconds) and `interrupted`."""
        values = {k: bool(v) if k == "interrupted" else v for k, v in _turn_values(timings).items()}
        await self._update_row("turns", turn_id, values, f"unknown turn {turn_id}")

    async def _update_row(self, table: str, row_id: int, values: dict, unknown: str) -> None:
        """Set ``values`` (column -> value; table and columns are ours, never a client's) on one row;
        with nothing to set, still check the row exists."""
        if not values:
            async with self._pool.acquire() as db:
                await _require(db, f"SELECT 1 FROM {table} WHERE id = $1", row_id, unknown)
            return
        assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(values, start=1))
        result = await self._pool.execute(f"UPDATE {table} SET {assignments} WHERE id = ${len(values) + 1}",
                                          *values.values(), row_id)
        _require_row(_count(result), unknown)

    async def turns(self, session_id: str) -> list[TurnTimings]:
        rows = await self._pool.fetch("SELECT * FROM turns WHERE session_id = $1 ORDER BY turn_index", session_id)
        return [TurnTimings(**dict(row)) for row in rows]


async def _require(db: asyncpg.Connection, sql: str, arg: Any, message: str) -> None:
    if await db.fetchval(sql, arg) is None:
        raise KeyError(message)


def _count(status: str) -> int:
    """Rows touched, from asyncpg's command tag ("UPDATE 1")."""
    return int(status.rsplit(" ", 1)[-1])

