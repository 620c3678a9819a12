"""SessionStore on both backends, for real: a SQLite file and a PostgreSQL server started for the run.

Round trips, ordering, durability and concurrent writes hold alike on both; the SQLite-only
tests check its file settings (WAL, synchronous=NORMAL) and its group-committed writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import uuid

import asyncpg
import pytest

from serve_app.store import SCHEMA, SessionStore, SqliteStore
from tests.postgres_server import PostgresServer


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        opened = await SessionStore.open(tmp_path / "db" / "sessions.sqlite3")
    else:
        server = request.getfixturevalue("postgres")
        database = f"t{uuid.uuid4().hex[:12]}"  # a fresh database per test on the module's server
        admin = await asyncpg.connect(server.url)
        await admin.execute(f"CREATE DATABASE {database}")
        await admin.close()
        opened = await SessionStore.open(server.url.rsplit("/", 1)[0] + "/" + database)
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path):
    opened = await SessionStore.open(tmp_path / "db" / "sessions.sqlite3")
    yield opened
    await opened.close()


@pytest.fixture
async def session_id(store):
    await store.create_session("s1", {"voice": "joe", "inputSampleRate": 16000})
    return "s1"


async def test_open_creates_parent_dir_and_uses_wal_with_normal_sync(tmp_path):
    path = tmp_path / "nested" / "deeper" / "store.sqlite3"
    store = await SessionStore.open(path)
    assert isinstance(store, SqliteStore)
    synchronous = await store._fetch_one("PRAGMA synchronous", ())
    await store.close()
    assert path.exists()
    assert synchronous[0] == 1  # NORMAL: set per connection, so read on the store's own
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_open_is_idempotent_on_an_existing_file(tmp_path):
    path = tmp_path / "store.sqlite3"
    for _ in range(2):
        store = await SessionStore.open(path)
        await store.close()


async def test_in_memory_store_works():
    store = await SessionStore.open(":memory:")
    try:
        await store.create_session("m", {})
        assert (await store.get_session("m")).state == "idle"
    finally:
        await store.close()


async def test_session_round_trip(store):
    created = await store.create_session("abc", {"voice": "joe", "tools": [{"name": "x"}]}, state="listening")
    loaded = await store.get_session("abc")
    assert loaded == created
    assert loaded.config == {"voice": "joe", "tools": [{"name": "x"}]}
    assert await store.get_session("nope") is None


async def test_set_state_bumps_updated_at(store, session_id):
    before = await store.get_session(session_id)
    await store.set_state(session_id, "speaking")
    after = await store.get_session(session_id)
    assert after.state == "speaking"
    assert after.updated_at >= before.updated_at
    assert after.created_at == before.created_at


async def test_update_config_replaces_config(store, session_id):
    await store.update_config(session_id, {"voice": "amy"})
    assert (await store.get_session(session_id)).config == {"voice": "amy"}


async def test_duplicate_session_id_is_refused(store, session_id):
    with pytest.raises(ValueError, match="already exists"):
        await store.create_session(session_id, {})


async def test_writes_to_unknown_session_raise_key_error(store):
    with pytest.raises(KeyError, match="unknown session 'ghost'"):
        await store.set_state("ghost", "idle")
    with pytest.raises(KeyError, match="unknown session"):
        await store.update_config("ghost", {})
    with pytest.raises(KeyError, match="unknown session"):
        await store.add_message("ghost", "user", "hi")
    with pytest.raises(KeyError, match="unknown session"):
        await store.add_tool_call("ghost", "c1", "calculator", "{}")
    with pytest.raises(KeyError, match="unknown session"):
        await store.add_image("ghost", b"x", "image/png", None, "d")
    with pytest.raises(KeyError, match="unknown session"):
        await store.start_turn("ghost")


async def test_writes_to_unknown_rows_raise_key_error(store, session_id):
    with pytest.raises(KeyError, match="unknown message 999"):
        await store.update_message(999, content="x")
    with pytest.raises(KeyError, match="unknown tool call"):
        await store.finish_tool_call(session_id, "nope", "{}", "ok")
    with pytest.raises(KeyError, match="unknown turn 999"):
        await store.record_turn(999, stopped_at=1.0)
    with pytest.raises(KeyError, match="unknown turn 999"):
        await store.add_message(session_id, "user", "hi", turn_id=999)


async def test_message_round_trip(store, session_id):
    turn_id = await store.start_turn(session_id)
    calls = [{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}]
    added = await store.add_message(session_id, "assistant", "", status="streaming", tool_calls=calls,
                                    turn_id=turn_id)
    tool_reply = await store.add_message(session_id, "tool", '{"result": 4}', tool_call_id="call_1")
    assert await store.messages(session_id) == [added, tool_reply]
    assert added.tool_calls == calls and added.turn_id == turn_id and added.full_content is None
    assert tool_reply.tool_call_id == "call_1" and tool_reply.status == "complete"


async def test_bad_role_or_status_is_refused(store, session_id):
    with pytest.raises(ValueError, match="role must be one of"):
        await store.add_message(session_id, "robot", "hi")
    with pytest.raises(ValueError, match="status must be one of"):
        await store.add_message(session_id, "user", "hi", status="done")
    message = await store.add_message(session_id, "user", "hi")
    with pytest.raises(ValueError, match="status must be one of"):
        await store.update_message(message.id, status="done")


async def test_barge_in_cut_message_keeps_full_content(store, session_id):
    message = await store.add_message(session_id, "assistant", "", status="streaming")
    full = "The weather in Paris is sunny and twenty degrees, with a light breeze."
    await store.update_message(message.id, content="The weather in Paris is sunny", status="interrupted",
                               full_content=full)
    [stored] = await store.messages(session_id)
    assert stored.content == "The weather in Paris is sunny"
    assert stored.status == "interrupted"
    assert stored.full_content == full


async def test_update_message_changes_only_given_fields(store, session_id):
    message = await store.add_message(session_id, "assistant", "partial", status="streaming")
    await store.update_message(message.id, status="complete")
    [stored] = await store.messages(session_id)
    assert (stored.content, stored.status, stored.full_content) == ("partial", "complete", None)


async def test_last_messages_are_the_newest_in_chronological_order(store, session_id):
    for i in range(15):
        await store.add_message(session_id, "user" if i % 2 == 0 else "assistant", f"m{i}")
    await store.create_session("other", {})
    await store.add_message("other", "user", "not mine")

    assert [m.content for m in await store.last_messages(session_id)] == [f"m{i}" for i in range(5, 15)]
    assert [m.content for m in await store.last_messages(session_id, limit=3)] == ["m12", "m13", "m14"]
    assert [m.content for m in await store.last_messages(session_id, limit=100)] == [f"m{i}" for i in range(15)]
    assert await store.last_messages(session_id, limit=0) == []
    assert len(await store.messages(session_id)) == 15


async def test_tool_call_round_trip(store, session_id):
    message = await store.add_message(session_id, "assistant", "", tool_calls=[{"id": "c1"}])
    await store.add_tool_call(session_id, "c1", "calculator", '{"expression": "2+2"}', message_id=message.id)
    await store.add_tool_call(session_id, "c2", "get_weather", '{"city": "Oslo"}')
    [pending, _] = await store.tool_calls(session_id)
    assert (pending.status, pending.result_json, pending.finished_at) == ("pending", None, None)

    await store.finish_tool_call(session_id, "c1", '{"result": 4}', "ok")
    await store.finish_tool_call(session_id, "c2", '{"error": "weather is not configured"}', "error")
    first, second = await store.tool_calls(session_id)
    assert (first.call_id, first.name, first.message_id, first.status) == ("c1", "calculator", message.id, "ok")
    assert first.arguments_json == '{"expression": "2+2"}' and first.result_json == '{"result": 4}'
    assert first.finished_at >= first.started_at
    assert (second.call_id, second.status, second.message_id) == ("c2", "error", None)


async def test_tool_call_ids_are_unique(store, session_id):
    await store.add_tool_call(session_id, "c1", "calculator", "{}")
    with pytest.raises(ValueError, match="already exists"):
        await store.add_tool_call(session_id, "c1", "calculator", "{}")
    with pytest.raises(ValueError, match="status must be one of"):
        await store.finish_tool_call(session_id, "c1", "{}", "done")


async def test_a_tool_call_is_finished_only_by_its_own_session(store, session_id):
    await store.create_session("intruder", {})
    await store.add_tool_call(session_id, "c1", "calculator", "{}")
    with pytest.raises(KeyError, match="unknown tool call 'c1' in session 'intruder'"):
        await store.finish_tool_call("intruder", "c1", '{"result": "forged"}', "ok")
    [call] = await store.tool_calls(session_id)
    assert (call.status, call.result_json) == ("pending", None)


async def test_resume_token_digest_rotates_only_from_the_current_one(store):
    created = await store.create_session("owned", {}, resume_token_hash="h1", owner_key_hash="k1")
    assert (created.resume_token_hash, created.owner_key_hash) == ("h1", "k1")
    assert await store.get_session("owned") == created
    assert not await store.rotate_resume_token("owned", "wrong", "h2")
    assert not await store.rotate_resume_token("ghost", "h1", "h2")
    assert (await store.get_session("owned")).resume_token_hash == "h1"
    assert await store.rotate_resume_token("owned", "h1", "h2")
    assert not await store.rotate_resume_token("owned", "h1", "h3")  # the old token no longer counts
    assert (await store.get_session("owned")).resume_token_hash == "h2"


async def test_of_two_rotations_from_one_token_only_one_wins(store):
    await store.create_session("raced", {}, resume_token_hash="h1")
    wins = await asyncio.gather(*(store.rotate_resume_token("raced", "h1", f"new{i}") for i in range(8)))
    assert sorted(wins) == [False] * 7 + [True]


async def test_a_session_file_from_before_resume_tokens_gains_the_columns(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the sessions table as the first release wrote it
        db.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
                   " state TEXT NOT NULL, config_json TEXT NOT NULL)")
        db.execute("INSERT INTO sessions VALUES ('old', 1.0, 1.0, 'idle', '{}')")
    store = await SessionStore.open(path)
    try:
        old = await store.get_session("old")
        assert (old.resume_token_hash, old.owner_key_hash) == (None, None)
        await store.create_session("new", {}, resume_token_hash="h")
        assert (await store.get_session("new")).resume_token_hash == "h"
    finally:
        await store.close()


async def test_a_postgres_database_from_before_resume_tokens_gains_the_columns(postgres):
    database = f"t{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.url)
    await admin.execute(f"CREATE DATABASE {database}")
    await admin.close()
    url = postgres.url.rsplit("/", 1)[0] + "/" + database
    old = await asyncpg.connect(url)
    await old.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL,"
                      " updated_at DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, config_json TEXT NOT NULL);"
                      " INSERT INTO sessions VALUES ('old', 1.0, 1.0, 'idle', '{}')")
    await old.close()
    store = await SessionStore.open(url)
    try:
        assert (await store.get_session("old")).resume_token_hash is None
        await store.create_session("new", {}, resume_token_hash="h", owner_key_hash="k")
        assert await store.rotate_resume_token("new", "h", "h2")
    finally:
        await store.close()


async def test_image_round_trip(store, session_id):
    data = bytes(range(256)) * 10
    added = await store.add_image(session_id, data, "image/png", "what is this?", "a gradient")
    second = await store.add_image(session_id, b"\x89PNG", "image/png", None, "tiny")
    assert await store.images(session_id) == [added, second]
    assert added.byte_size == len(data) and added.sha256 == hashlib.sha256(data).hexdigest()
    assert added.data == data and second.prompt is None


async def test_turn_indices_count_up_and_timings_round_trip(store, session_id):
    first = await store.start_turn(session_id)
    second = await store.start_turn(session_id)
    await store.record_turn(first, speech_end_at=10.0, transcript_at=10.2, first_token_at=10.5)
    await store.record_turn(first, first_audio_at=10.8, stopped_at=12.0)
    await store.record_turn(second, barge_in_at=20.5, interrupted=True)
    turns = await store.turns(session_id)
    assert [t.turn_index for t in turns] == [0, 1]
    assert [t.id for t in turns] == [first, second]
    assert (turns[0].speech_end_at, turns[0].transcript_at, turns[0].first_token_at,
            turns[0].first_audio_at, turns[0].stopped_at, turns[0].interrupted) == (10.0, 10.2, 10.5, 10.8, 12.0,
                                                                                    False)
    assert turns[1].barge_in_at == 20.5 and turns[1].interrupted is True and turns[1].speech_end_at is None


async def test_record_turn_refuses_unknown_fields(store, session_id):
    turn_id = await store.start_turn(session_id)
    with pytest.raises(TypeError, match="unknown turn field"):
        await store.record_turn(turn_id, speech_ended=1.0)


async def test_reopened_store_sees_everything(tmp_path):
    path = tmp_path / "durable.sqlite3"
    store = await SessionStore.open(path)
    await store.create_session("s", {"voice": "joe"})
    await store.set_state("s", "speaking")
    turn_id = await store.start_turn("s")
    await store.record_turn(turn_id, first_audio_at=5.5, interrupted=True)
    message = await store.add_message("s", "assistant", "", status="streaming", turn_id=turn_id)
    await store.update_message(message.id, content="cut", status="interrupted", full_content="cut short")
    await store.add_tool_call("s", "c1", "calculator", "{}", message_id=message.id)
    await store.finish_tool_call("s", "c1", "{}", "ok")
    await store.add_image("s", b"img", "image/jpeg", "p", "d")
    before = (await store.get_session("s"), await store.messages("s"), await store.tool_calls("s"),
              await store.images("s"), await store.turns("s"))
    await store.close()

    reopened = await SessionStore.open(path)
    try:
        after = (await reopened.get_session("s"), await reopened.messages("s"), await reopened.tool_calls("s"),
                 await reopened.images("s"), await reopened.turns("s"))
    finally:
        await reopened.close()
    assert after == before
    assert after[0].state == "speaking" and after[1][0].full_content == "cut short"


async def test_writes_are_committed_before_returning(tmp_path, sqlite_store):
    store = sqlite_store
    await store.create_session("s1", {})
    await store.add_message("s1", "user", "visible to other connections")
    # A second, independent connection sees the row while the store is still open: it was committed.
    with sqlite3.connect(tmp_path / "db" / "sessions.sqlite3") as raw:
        assert raw.execute("SELECT content FROM messages").fetchall() == [("visible to other connections",)]


async def test_concurrent_writes_all_land_with_distinct_ids(store, session_id):
    added = await asyncio.gather(*(store.add_message(session_id, "user", f"m{i}") for i in range(100)))
    ids = [m.id for m in added]
    assert len(set(ids)) == 100
    stored = await store.messages(session_id)
    assert sorted(m.content for m in stored) == sorted(f"m{i}" for i in range(100))
    assert [m.id for m in stored] == sorted(ids)


async def test_concurrent_turn_starts_get_distinct_indices(store, session_id):
    turn_ids = await asyncio.gather(*(store.start_turn(session_id) for _ in range(20)))
    assert len(set(turn_ids)) == 20
    assert [t.turn_index for t in await store.turns(session_id)] == list(range(20))


async def test_state_and_timings_are_group_committed_and_announced_writes_commit_them(tmp_path, sqlite_store):
    store = sqlite_store
    await store.create_session("s1", {})
    turn_id = await store.start_turn("s1")
    db = tmp_path / "db" / "sessions.sqlite3"

    def seen_elsewhere() -> tuple:
        with sqlite3.connect(db) as raw:
            return (raw.execute("SELECT state FROM sessions").fetchone()[0],
                    raw.execute("SELECT first_audio_at FROM turns").fetchone()[0])

    await store.set_state("s1", "speaking")
    await store.record_turn(turn_id, first_audio_at=5.0)
    assert (await store.get_session("s1")).state == "speaking"  # the store reads its own writes at once
    assert seen_elsewhere() == ("idle", None)  # not yet committed: off the hot path
    with pytest.raises(KeyError, match="unknown turn 999"):
        await store.record_turn(999, stopped_at=1.0)  # still refused at once; the others stay pending
    await store.add_message("s1", "user", "hello")  # an announced write commits everything before it
    assert seen_elsewhere() == ("speaking", 5.0)

    await store.set_state("s1", "listening")
    await store._flusher  # the group commit, without any other write
    assert seen_elsewhere() == ("listening", 5.0)


async def test_pending_group_commit_survives_close(tmp_path):
    path = tmp_path / "closing.sqlite3"
    store = await SessionStore.open(path)
    await store.create_session("s", {})
    await store.set_state("s", "thinking")
    await store.close()
    reopened = await SessionStore.open(path)
    try:
        assert (await reopened.get_session("s")).state == "thinking"
    finally:
        await reopened.close()


async def test_a_sessions_pending_tool_calls_become_cancelled_and_finished_ones_stay(store, session_id):
    await store.create_session("s2", {})
    await store.add_tool_call(session_id, "c_done", "calculator", "{}")
    await store.finish_tool_call(session_id, "c_done", '{"result": 1}', "ok")
    await store.add_tool_call(session_id, "c_waiting", "set_lamp", "{}")
    await store.add_tool_call("s2", "c_other", "set_lamp", "{}")
    assert await store.cancel_pending_tool_calls(session_id, '{"error": "cancelled"}') == 1
    calls = {c.call_id: c.status for c in await store.tool_calls(session_id)}
    assert calls == {"c_done": "ok", "c_waiting": "cancelled"}
    assert [c.status for c in await store.tool_calls("s2")] == ["pending"]  # another session's call is its own


async def test_a_sqlite_file_from_before_the_cancelled_status_accepts_it_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    old_schema = SCHEMA.replace("('pending', 'ok', 'error', 'cancelled')", "('pending', 'ok', 'error')")
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO sessions (id, created_at, updated_at, state, config_json) VALUES ('s1', 0, 0, 'idle', '{}')")
        db.execute("INSERT INTO tool_calls (session_id, call_id, name, arguments_json, status, started_at)"
                   " VALUES ('s1', 'c1', 'calculator', '{}', 'pending', 0)")
    store = await SessionStore.open(path)
    try:
        await store.finish_tool_call("s1", "c1", '{"error": "cancelled"}', "cancelled")
        calls = await store.tool_calls("s1")
    finally:
        await store.close()
    assert [(c.call_id, c.name, c.status) for c in calls] == [("c1", "calculator", "cancelled")]
