"""The database: batched writes through one writer, readers over committed data, migrations."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import anyio
import pytest

import twin.db
from twin.db import Database, Migration, WriteResult
from twin.errors import BadInput, Conflict

pytestmark = pytest.mark.anyio

NOTES = [
    Migration("create notes", "CREATE TABLE notes_items (id INTEGER PRIMARY KEY, body TEXT)"),
    Migration(
        "add tags",
        """
        -- a comment; with a semicolon
        CREATE TABLE notes_tags (note INTEGER REFERENCES notes_items(id), tag TEXT);
        CREATE INDEX notes_tags_tag ON notes_tags(tag);
        CREATE TRIGGER notes_untag AFTER DELETE ON notes_items BEGIN
            DELETE FROM notes_tags WHERE note = old.id;
        END;
        """,
    ),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "twin.db")
    await database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
    yield database
    await database.close()


def test_public_surface() -> None:
    assert twin.db.__all__ == sorted(twin.db.__all__)
    assert {name for name in dir(twin.db) if not name.startswith("_")} >= set(twin.db.__all__)


async def test_wal_mode_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    async with await Database.open(path) as db:
        assert await db.fetchval("PRAGMA journal_mode") == "wal"
        assert path.stat().st_mode & 0o077 == 0


async def test_concurrent_writes_commit_in_batches(db: Database) -> None:
    before = db.batches_committed
    results = await asyncio.gather(
        *(db.execute("INSERT INTO t (v) VALUES (?)", (f"v{i}",)) for i in range(200))
    )
    assert await db.fetchval("SELECT count(*) FROM t") == 200
    assert db.batches_committed - before < 200
    assert sorted(r.lastrowid for r in results if r.lastrowid is not None) == list(range(1, 201))
    assert all(r.rowcount == 1 for r in results)


async def test_write_results(db: Database) -> None:
    inserted = await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "a"})
    assert inserted == WriteResult(rowcount=1, lastrowid=1)
    updated = await db.execute("UPDATE t SET v = 'b' WHERE id = ?", (1,))
    assert updated == WriteResult(rowcount=1, lastrowid=None)
    many = await db.executemany("INSERT INTO t (v) VALUES (?)", ([str(i)] for i in range(5)))
    assert many.rowcount == 5
    assert await db.fetchval("SELECT count(*) FROM t") == 6


async def test_a_failing_job_fails_only_its_caller(db: Database) -> None:
    await db.execute("INSERT INTO t (v) VALUES ('taken')")
    before = db.batches_committed
    outcomes = await asyncio.gather(
        db.execute("INSERT INTO t (v) VALUES ('one')"),
        db.execute("INSERT INTO t (v) VALUES ('taken')"),
        db.executemany("INSERT INTO t (v) VALUES (?)", [("x",), ("y",), ("one",)]),
        db.execute("INSERT INTO t (v) VALUES ('two')"),
        return_exceptions=True,
    )
    assert db.batches_committed == before + 1
    assert isinstance(outcomes[0], WriteResult)
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert isinstance(outcomes[2], sqlite3.IntegrityError)
    assert isinstance(outcomes[3], WriteResult)
    rows = await db.fetchall("SELECT v FROM t ORDER BY id")
    # The failed executemany left none of its rows behind, not even "x" and "y".
    assert [row["v"] for row in rows] == ["taken", "one", "two"]


async def test_a_job_that_loses_the_whole_transaction_fails_alone(db: Database) -> None:
    await db.execute("INSERT INTO t (v) VALUES ('taken')")
    calls = 0

    async def counted(conn: aiosqlite.Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("INSERT INTO t (v) VALUES ('from fn')")

    # OR ROLLBACK ends the shared transaction, so the batch is retried without that job.
    outcomes = await asyncio.gather(
        db.execute("INSERT INTO t (v) VALUES ('before')"),
        db.transaction(counted),
        db.execute("INSERT OR ROLLBACK INTO t (v) VALUES ('taken')"),
        db.execute("INSERT INTO t (v) VALUES ('after')"),
        return_exceptions=True,
    )
    kinds = [type(outcome) for outcome in outcomes]
    assert kinds == [WriteResult, type(None), sqlite3.IntegrityError, WriteResult]
    rows = await db.fetchall("SELECT v FROM t ORDER BY id")
    assert [row["v"] for row in rows] == ["taken", "before", "from fn", "after"]
    assert calls == 2


async def test_jobs_cannot_end_the_shared_transaction(db: Database) -> None:
    async def commits_early(conn: aiosqlite.Connection) -> None:
        await conn.execute("INSERT INTO t (v) VALUES ('early')")
        await conn.commit()

    outcomes = await asyncio.gather(
        db.execute("INSERT INTO t (v) VALUES ('kept')"),
        db.execute("COMMIT"),
        db.execute("RELEASE _twin_job"),
        db.transaction(commits_early),
        db.execute("INSERT INTO t (v) VALUES ('also kept')"),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [WriteResult, BadInput, BadInput, BadInput, WriteResult]
    rows = await db.fetchall("SELECT v FROM t ORDER BY id")
    assert [row["v"] for row in rows] == ["kept", "also kept"]


async def test_enqueue_then_flush_persists(db: Database) -> None:
    for i in range(50):
        db.enqueue("INSERT INTO t (v) VALUES (?)", (f"log{i}",))
    await db.flush()
    assert await db.fetchval("SELECT count(*) FROM t") == 50


async def test_a_failing_enqueued_write_is_logged_not_raised(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    db.enqueue("INSERT INTO t (v) VALUES ('dup')")
    db.enqueue("INSERT INTO t (v) VALUES ('dup')")
    db.enqueue("INSERT INTO t (v) VALUES ('after')")
    with caplog.at_level(logging.ERROR, logger="twin.db"):
        await db.flush()
    assert await db.fetchval("SELECT count(*) FROM t") == 2
    assert "UNIQUE constraint failed" in caplog.text


async def test_transaction_is_all_or_nothing(db: Database) -> None:
    async def two_rows(conn: aiosqlite.Connection) -> int:
        await conn.execute("INSERT INTO t (v) VALUES ('a')")
        cursor = await conn.execute("INSERT INTO t (v) VALUES ('b')")
        return cursor.lastrowid or 0

    async def half_then_fail(conn: aiosqlite.Connection) -> None:
        await conn.execute("INSERT INTO t (v) VALUES ('c')")
        raise ValueError("changed my mind")

    assert await db.transaction(two_rows) == 2
    with pytest.raises(ValueError, match="changed my mind"):
        await db.transaction(half_then_fail)
    rows = await db.fetchall("SELECT v FROM t ORDER BY id")
    assert [row["v"] for row in rows] == ["a", "b"]


async def test_readers_see_committed_writes(db: Database) -> None:
    for i in range(10):
        await db.execute("INSERT INTO t (v) VALUES (?)", (str(i),))
        # Every reader, not just one, sees each write as soon as it is committed.
        seen = await asyncio.gather(*(db.fetchval("SELECT count(*) FROM t") for _ in range(4)))
        assert seen == [i + 1] * 4
    row = await db.fetchone("SELECT id, v FROM t WHERE v = ?", ("3",))
    assert row is not None and row["v"] == "3" and tuple(row) == (4, "3")
    assert await db.fetchone("SELECT * FROM t WHERE v = 'nope'") is None
    assert await db.fetchval("SELECT v FROM t WHERE v = 'nope'") is None


async def test_readers_are_read_only(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await db.fetchall("INSERT INTO t (v) VALUES ('sneaky') RETURNING id")


async def test_reads_do_not_wait_for_a_busy_writer(db: Database) -> None:
    await db.execute("INSERT INTO t (v) VALUES ('committed')")
    inside = asyncio.Event()
    release = asyncio.Event()

    async def slow(conn: aiosqlite.Connection) -> None:
        await conn.execute("INSERT INTO t (v) VALUES ('pending')")
        inside.set()
        await release.wait()

    slow_write = asyncio.ensure_future(db.transaction(slow))
    queued_write = asyncio.ensure_future(db.execute("INSERT INTO t (v) VALUES ('queued')"))
    try:
        with anyio.fail_after(5):
            await inside.wait()
            rows = await db.fetchall("SELECT v FROM t")
        assert [row["v"] for row in rows] == ["committed"]
        assert not queued_write.done()
    finally:
        release.set()
        await slow_write
        await queued_write
    assert await db.fetchval("SELECT count(*) FROM t") == 3


async def test_close_commits_pending_writes(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    db = await Database.open(path)
    await db.execute("CREATE TABLE t (v TEXT)")
    for i in range(100):
        db.enqueue("INSERT INTO t (v) VALUES (?)", (str(i),))
    # gather starts its tasks in order: the write is queued before close() begins.
    last, _ = await asyncio.gather(db.execute("INSERT INTO t (v) VALUES ('last')"), db.close())
    assert last.rowcount == 1
    await db.close()
    with pytest.raises(RuntimeError, match="closed"):
        await db.execute("INSERT INTO t (v) VALUES ('late')")
    async with await Database.open(path) as reopened:
        assert await reopened.fetchval("SELECT count(*) FROM t") == 101


async def test_writes_inside_a_transaction_fn_are_refused(db: Database) -> None:
    async def deadlocks(conn: aiosqlite.Connection) -> None:
        await db.execute("INSERT INTO t (v) VALUES ('x')")

    with pytest.raises(RuntimeError, match="connection fn got"):
        await db.transaction(deadlocks)


# Migrations


async def test_migrations_apply_once_in_order(db: Database) -> None:
    assert await db.migrate("notes", NOTES) == ["create notes", "add tags"]
    assert await db.applied_migrations("notes") == ["create notes", "add tags"]
    assert await db.migrate("notes", NOTES) == []
    await db.execute("INSERT INTO notes_items (id, body) VALUES (1, 'hi')")
    await db.execute("INSERT INTO notes_tags VALUES (1, 'greeting')")
    await db.execute("DELETE FROM notes_items WHERE id = 1")
    assert await db.fetchval("SELECT count(*) FROM notes_tags") == 0  # the trigger was created

    more = [*NOTES, Migration("add title", "ALTER TABLE notes_items ADD COLUMN title TEXT")]
    assert await db.migrate("notes", more) == ["add title"]
    rows = await db.fetchall("SELECT owner, position, name FROM twin_migrations ORDER BY position")
    assert [tuple(row) for row in rows] == [
        ("notes", 1, "create notes"),
        ("notes", 2, "add tags"),
        ("notes", 3, "add title"),
    ]
    # Owners are independent: the same names elsewhere are another set.
    assert await db.applied_migrations("chat") == []


async def test_migrations_persist_across_opens(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "twin.db") as db:
        await db.migrate("notes", NOTES)
    async with await Database.open(tmp_path / "twin.db") as db:
        assert await db.migrate("notes", NOTES) == []


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ([NOTES[1], NOTES[0]], "recorded 'create notes' at position 1 but the code has 'add tags'"),
        ([NOTES[0]], "recorded 'add tags' at position 2 but the code has no migration there"),
        (
            [NOTES[0], Migration("tags", NOTES[1].sql)],
            "recorded 'add tags' at position 2 but the code has 'tags'",
        ),
    ],
    ids=["reordered", "removed", "renamed"],
)
async def test_a_changed_migration_set_is_a_conflict(
    db: Database, changed: list[Migration], message: str
) -> None:
    await db.migrate("notes", NOTES)
    with pytest.raises(Conflict) as raised:
        await db.migrate("notes", changed)
    assert str(raised.value) == (
        f"migration set for 'notes' changed: {message}; add new migrations at the end instead"
    )
    assert await db.applied_migrations("notes") == ["create notes", "add tags"]


async def test_duplicate_migration_names_are_refused(db: Database) -> None:
    with pytest.raises(BadInput, match="'create notes' twice"):
        await db.migrate("notes", [NOTES[0], NOTES[0]])
    assert await db.applied_migrations("notes") == []


async def test_a_failing_migration_keeps_the_earlier_ones(db: Database) -> None:
    broken = [
        NOTES[0],
        Migration("half done", "CREATE TABLE notes_half (x); CREATE TABLE notes_items (y)"),
        Migration("never", "CREATE TABLE notes_never (z)"),
    ]
    with pytest.raises(sqlite3.OperationalError, match="already exists") as raised:
        await db.migrate("notes", broken)
    assert "in migration 'half done' of 'notes'" in (raised.value.__notes__ or [])
    assert await db.applied_migrations("notes") == ["create notes"]
    rows = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    tables = {row["name"] for row in rows}
    assert "notes_items" in tables
    assert "notes_half" not in tables and "notes_never" not in tables

    fixed = [NOTES[0], Migration("half done", "CREATE TABLE notes_half (x)"), broken[2]]
    assert await db.migrate("notes", fixed) == ["half done", "never"]


async def test_a_migration_may_not_commit_on_its_own(db: Database) -> None:
    sneaky = Migration("sneaky", "CREATE TABLE notes_a (x); COMMIT; CREATE TABLE notes_b (y)")
    with pytest.raises(BadInput, match="commits each batch itself"):
        await db.migrate("notes", [sneaky])
    assert await db.fetchval("SELECT count(*) FROM sqlite_master WHERE name = 'notes_a'") == 0


async def test_write_runs_a_function_all_or_nothing_and_raises_its_error(db: Database) -> None:
    def two(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES ('a')")
        return conn.execute("INSERT INTO t (v) VALUES ('b')").lastrowid or 0

    assert await db.write(two) == 2

    def half(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('c')")
        raise Conflict("changed my mind")

    with pytest.raises(Conflict):
        await db.write(half)
    with pytest.raises(BadInput, match="may not begin, commit"):
        await db.write(lambda conn: conn.execute("COMMIT"))
    rows = await db.fetchall("SELECT v FROM t ORDER BY id")
    assert [row["v"] for row in rows] == ["a", "b"]


async def test_read_sees_one_snapshot_and_lookup_sees_every_commit(db: Database) -> None:
    await db.execute("INSERT INTO t (v) VALUES ('x')")

    def both(conn: sqlite3.Connection) -> tuple[int, int]:
        first = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        return first, conn.execute("SELECT count(*) FROM t").fetchone()[0]

    assert await db.read(both) == (1, 1)
    for value in ("y", "z"):
        await db.execute("INSERT INTO t (v) VALUES (?)", (value,))
        row = await db.lookup("SELECT id FROM t WHERE v = ?", (value,))
        assert row is not None and row["id"] == await db.fetchval(
            "SELECT id FROM t WHERE v = ?", (value,)
        )
    assert await db.lookup("SELECT id FROM t WHERE v = 'none'") is None
    with pytest.raises(sqlite3.OperationalError):  # read-only, like every reader
        await db.lookup("INSERT INTO t (v) VALUES ('w') RETURNING id")
