"""The twin's one SQLite file: a single batching writer task and a pool of read-only readers."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiosqlite

from twin.db import _migrations
from twin.db._migrations import Migration
from twin.errors import BadInput, TwinError

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]

logger = logging.getLogger("twin.db")

MAX_BATCH = 256
BUSY_TIMEOUT_MS = 5000

_SAVEPOINT = "_twin_job"
# The prefix keeps our own statements in statement-cache entries of their own: a job's bare
# "COMMIT" is then always prepared afresh, so the authorizer sees it and refuses it.
_BEGIN = "/* twin */ BEGIN IMMEDIATE"
_COMMIT = "/* twin */ COMMIT"
_ROLLBACK = "/* twin */ ROLLBACK"
_SAVE = f"/* twin */ SAVEPOINT {_SAVEPOINT}"
_RELEASE = f"/* twin */ RELEASE {_SAVEPOINT}"
_UNDO = f"/* twin */ ROLLBACK TO {_SAVEPOINT}"

_INSERTS = re.compile(r"(?:\s|--[^\n]*(?:\n|$)|/\*.*?\*/)*(?:insert|replace)\b", re.I | re.S)


@dataclass(frozen=True)
class WriteResult:
    """What a committed write changed; ``lastrowid`` is set only for a single INSERT/REPLACE."""

    rowcount: int
    lastrowid: int | None


@dataclass(eq=False)
class _Job:
    future: asyncio.Future[Any] | None
    result: Any = None
    error: BaseException | None = None


@dataclass(eq=False, kw_only=True)
class _Statement(_Job):
    sql: str
    params: Params = ()
    rows: list[Params] | None = None  # set for executemany


@dataclass(eq=False, kw_only=True)
class _Transaction(_Job):
    fn: Callable[[aiosqlite.Connection], Awaitable[Any]]


@dataclass(eq=False, kw_only=True)
class _Write(_Job):
    fn: Callable[[sqlite3.Connection], Any]


class _Flush(_Job):
    """Writes nothing; settles once every job queued before it is settled."""


class _BatchLost(Exception):
    """A job's failure took the whole batch transaction with it (disk full, OR ROLLBACK, ...)."""

    def __init__(self, job: _Job, error: BaseException) -> None:
        super().__init__(str(error))
        self.job = job
        self.error = error


class _Guard:
    """The writer's authorizer: jobs share one transaction, so they may not end or unwind it."""

    def __init__(self) -> None:
        self.ours = False
        self.denied = False

    def authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        if self.ours:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_TRANSACTION or (
            action == sqlite3.SQLITE_SAVEPOINT and (arg2 or "").lower() == _SAVEPOINT
        ):
            self.denied = True
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def run(self, conn: sqlite3.Connection, sql: str) -> None:
        self.ours = True
        try:
            conn.execute(sql).close()
        finally:
            self.ours = False

    def explain(self, error: BaseException) -> BaseException:
        if not self.denied:
            return error
        refused = BadInput(
            "a write may not begin, commit or roll back the transaction: the database commits "
            "each batch itself (use a SAVEPOINT of your own to undo part of a write)"
        )
        refused.__cause__ = error
        return refused


async def _call(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` with the connection's sqlite3 handle on the connection's own thread."""
    # aiosqlite has no public way to run a function on its thread; going through its per-call
    # API instead would cost three thread hops per job (savepoint, statement, release).
    result: T = await conn._execute(fn, conn._conn)  # type: ignore[no-untyped-call]
    return result


def _fetchone(sql: str, params: Params, conn: sqlite3.Connection) -> sqlite3.Row | None:
    cursor = conn.execute(sql, params)
    try:
        row: sqlite3.Row | None = cursor.fetchone()
        return row
    finally:
        cursor.close()


def _fetchall(sql: str, params: Params, conn: sqlite3.Connection) -> list[sqlite3.Row]:
    cursor = conn.execute(sql, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def _snapshot(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    conn.execute("BEGIN").close()
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT").close()


def _create_private(path: Path) -> None:
    """Create the file readable by its owner only; SQLite gives -wal and -shm the same mode."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _prepare_writer(guard: _Guard, conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise TwinError(f"SQLite refused WAL mode here (journal_mode is {mode!r})")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute(_migrations.RECORDS_TABLE)
    conn.set_authorizer(guard.authorize)


def _prepare_reader(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class Database:
    """One SQLite file: writes go through one writer task in batches, reads to readers.

    db = await Database.open(path)
    await db.migrate("notes", [Migration("create notes", "CREATE TABLE notes_items (...)")])
    await db.execute("INSERT INTO notes_items (body) VALUES (?)", (body,))
    rows = await db.fetchall("SELECT * FROM notes_items")
    await db.close()
    """

    batches_committed: int
    """How many batch transactions the writer has committed (several jobs each, under load)."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        readers: Sequence[aiosqlite.Connection],
        guard: _Guard,
    ) -> None:
        """Use ``await Database.open(path)``: it opens and prepares the connections."""
        self.path = path
        self.batches_committed = 0
        self._writer = writer
        self._readers = list(readers)
        self._inline: sqlite3.Connection | None = None  # see lookup()
        self._reader_load = [0] * len(self._readers)
        self._next_reader = 0
        self._guard = guard
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._closing = False
        self._closed = asyncio.Event()
        self._migrating = asyncio.Lock()
        self._writer_task = asyncio.create_task(self._serve_writes(), name=f"twin.db writer {path}")

    @classmethod
    async def open(cls, path: Path, *, readers: int = 2) -> Database:
        """Open (creating it if needed) the database at ``path`` in WAL mode."""
        if readers < 1:
            raise ValueError("a database needs at least one reader connection")
        path = Path(path)
        _create_private(path)
        guard = _Guard()
        opened: list[aiosqlite.Connection] = []
        try:
            writer = await aiosqlite.connect(path, isolation_level=None)
            opened.append(writer)
            writer.row_factory = sqlite3.Row
            await _call(writer, partial(_prepare_writer, guard))
            # Read-only, so no code path can write around the writer's queue.
            uri = path.resolve().as_uri() + "?mode=ro"
            for _ in range(readers):
                reader = await aiosqlite.connect(uri, uri=True, isolation_level=None)
                opened.append(reader)
                reader.row_factory = sqlite3.Row
                await _call(reader, _prepare_reader)
        except BaseException:
            for conn in reversed(opened):
                await conn.close()
            raise
        return cls(path, writer, opened[1:], guard)

    async def close(self) -> None:
        """Commit every write queued so far, then close every connection; idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._refuse_inside_writer("close()")
        self._closing = True
        try:
            self._queue.put_nowait(None)
            await self._writer_task
        finally:
            if self._inline is not None:
                self._inline.close()
            for reader in self._readers:
                await reader.close()
            await self._writer.close()
            self._closed.set()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Database {str(self.path)!r} readers={len(self._readers)}>"

    # Writes

    async def execute(self, sql: str, params: Params = ()) -> WriteResult:
        """Run one statement on the writer; returns once its batch is committed."""
        job = _Statement(self._new_future(), sql=sql, params=params)
        self._queue.put_nowait(job)
        result: WriteResult = await self._settled(job)
        return result

    async def executemany(self, sql: str, rows: Iterable[Params]) -> WriteResult:
        """Run one statement once per row, all or nothing; returns once committed."""
        job = _Statement(self._new_future(), sql=sql, rows=list(rows))
        self._queue.put_nowait(job)
        result: WriteResult = await self._settled(job)
        return result

    def enqueue(self, sql: str, params: Params = ()) -> None:
        """Queue a write for the next batch without waiting; a failure is logged, not raised."""
        if self._closing:
            logger.error("write queued after close() was dropped: %s", sql)
            return
        self._queue.put_nowait(_Statement(None, sql=sql, params=params))

    async def transaction(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn(conn)`` on the writer in a savepoint of its own: all of it commits or none.

        ``fn`` must use only the connection it is given (not this object's methods), must not
        commit, and holds up every other write while it runs. If another job in the same batch
        loses the whole transaction (disk full), ``fn`` runs again in the retried batch.
        """
        job = _Transaction(self._new_future(), fn=fn)
        self._queue.put_nowait(job)
        result: T = await self._settled(job)
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` with the writer's plain sqlite3 connection, on its thread, in a
        savepoint of its own: all of it commits or none, and an exception it raises reaches
        the caller. The fastest way to a write of several statements: no thread hop between
        them. ``fn`` must not commit and must be quick (it holds up every other write).
        """
        job = _Write(self._new_future(), fn=fn)
        self._queue.put_nowait(job)
        result: T = await self._settled(job)
        return result

    async def flush(self) -> None:
        """Wait until every write queued so far (``enqueue`` included) is committed."""
        job = _Flush(self._new_future())
        self._queue.put_nowait(job)
        await self._settled(job)

    # Reads

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row of a query over committed data, or None."""
        return await self._read(partial(_fetchone, sql, params))

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Every row of a query over committed data."""
        return await self._read(partial(_fetchall, sql, params))

    async def lookup(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """:meth:`fetchone` for a lookup by a unique index, run at once on the caller's thread.

        A thread hop costs far more than such a lookup, and under load the reader threads wait
        for the interpreter lock; the few microseconds of SQLite here do not hold up the event
        loop. Anything that scans belongs in :meth:`fetchone`. If SQLite is busy (a checkpoint),
        it falls back to a reader thread.
        """
        if self._closing:
            raise RuntimeError("the database is closed")
        if self._inline is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self._inline = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0)
            self._inline.row_factory = sqlite3.Row
        try:
            return _fetchone(sql, params, self._inline)
        except sqlite3.OperationalError as exc:
            primary = (exc.sqlite_errorcode or 0) & 0xFF  # without the extended part
            if primary not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            return await self.fetchone(sql, params)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a read-only connection in one read transaction: every query it
        makes sees the same committed state."""
        return await self._read(partial(_snapshot, fn))

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    # Migrations

    async def migrate(self, owner: str, migrations: Sequence[Migration]) -> list[str]:
        """Apply, in order, the steps not yet recorded for ``owner``; returns the names applied.

        Each step commits on its own together with its record, so a failing step raises and
        leaves the earlier ones applied. Steps run inside a transaction: statements SQLite
        refuses there (VACUUM, PRAGMA foreign_keys) do not belong in a migration.
        """
        migrations = list(migrations)
        _migrations.check_set(owner, migrations)
        async with self._migrating:
            rows = await self.fetchall(_migrations.RECORDED_SQL, (owner,))
            recorded = [(int(row["position"]), str(row["name"])) for row in rows]
            _migrations.check_unchanged(owner, recorded, migrations)
            done = {name for _, name in recorded}
            applied: list[str] = []
            for position, migration in enumerate(migrations, start=1):
                if migration.name in done:
                    continue
                step = partial(
                    _migrations.apply, owner=owner, position=position, migration=migration
                )
                if await self.transaction(partial(_call, fn=step)):
                    applied.append(migration.name)
            if applied:
                logger.info("applied migrations for %r: %s", owner, ", ".join(applied))
            return applied

    async def applied_migrations(self, owner: str) -> list[str]:
        """Names of the migrations recorded for ``owner``, in order."""
        rows = await self.fetchall(_migrations.RECORDED_SQL, (owner,))
        return [str(row["name"]) for row in rows]

    # The writer

    def _refuse_inside_writer(self, what: str) -> None:
        if asyncio.current_task() is self._writer_task:
            raise RuntimeError(
                f"{what} inside transaction(fn) would wait for itself: use the connection fn got"
            )

    def _new_future(self) -> asyncio.Future[Any]:
        if self._closing:
            raise RuntimeError("the database is closed")
        self._refuse_inside_writer("a write")
        return asyncio.get_running_loop().create_future()

    async def _settled(self, job: _Job) -> Any:
        assert job.future is not None
        return await job.future

    async def _serve_writes(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch: list[_Job] = []
                job = await self._queue.get()
                while True:
                    if job is None:
                        stopping = True
                        break
                    batch.append(job)
                    if len(batch) == MAX_BATCH or self._queue.empty():
                        break
                    job = self._queue.get_nowait()
                if batch:
                    await self._run_batch(batch)
        finally:
            # Only reached early if this task itself failed or was cancelled.
            while not self._queue.empty():
                left = self._queue.get_nowait()
                if left is not None:
                    left.error = RuntimeError("the database writer stopped")
                    self._settle([left])

    async def _run_batch(self, batch: list[_Job]) -> None:
        # A caller that gave up before its job started does not get its write.
        jobs = [job for job in batch if job.future is None or not job.future.done()]
        while True:
            try:
                await self._attempt(jobs)
            except _BatchLost as lost:
                lost.job.error = self._guard.explain(lost.error)
                self._settle([lost.job])
                jobs.remove(lost.job)
                for job in jobs:
                    job.result = job.error = None
                continue
            except BaseException as exc:
                await self._abandon()
                for job in jobs:
                    job.error = exc
                self._settle(jobs)
                if isinstance(exc, Exception):
                    logger.error("a write batch failed: %s", exc)
                    return
                raise
            self._settle(jobs)
            return

    async def _attempt(self, jobs: list[_Job]) -> None:
        if all(isinstance(job, _Flush) for job in jobs):
            return
        if not any(isinstance(job, _Transaction) for job in jobs):
            # nothing in it awaits: the whole batch in one trip to the writer's thread
            plain = [job for job in jobs if isinstance(job, (_Statement, _Write))]
            await _call(self._writer, partial(self._run_whole, plain))
            self.batches_committed += 1
            return
        await _call(self._writer, partial(self._guard.run, sql=_BEGIN))
        statements: list[_Statement | _Write] = []
        for job in jobs:
            if isinstance(job, (_Statement, _Write)):
                statements.append(job)
                continue
            if statements:
                await _call(self._writer, partial(self._run_statements, statements))
                statements = []
            if isinstance(job, _Transaction):
                await self._run_transaction(job)
        if statements:
            await _call(self._writer, partial(self._run_statements, statements))
        await _call(self._writer, partial(self._guard.run, sql=_COMMIT))
        self.batches_committed += 1

    def _run_whole(self, jobs: list[_Statement | _Write], conn: sqlite3.Connection) -> None:
        self._guard.run(conn, _BEGIN)
        self._run_statements(jobs, conn)
        self._guard.run(conn, _COMMIT)

    def _run_statements(self, jobs: list[_Statement | _Write], conn: sqlite3.Connection) -> None:
        """Run plain statements and functions on the writer's thread, each in its own
        savepoint."""
        for job in jobs:
            self._guard.run(conn, _SAVE)
            self._guard.denied = False
            if isinstance(job, _Write):
                try:
                    job.result = job.fn(conn)
                except Exception as exc:
                    self._undo(job, exc, conn)
                    continue
                self._guard.run(conn, _RELEASE)
                continue
            try:
                if job.rows is not None:
                    cursor = conn.executemany(job.sql, job.rows)
                else:
                    cursor = conn.execute(job.sql, job.params)
            except Exception as exc:
                self._undo(job, exc, conn)
                continue
            inserted = job.rows is None and cursor.rowcount > 0 and _INSERTS.match(job.sql)
            job.result = WriteResult(cursor.rowcount, cursor.lastrowid if inserted else None)
            cursor.close()
            self._guard.run(conn, _RELEASE)

    async def _run_transaction(self, job: _Transaction) -> None:
        await _call(self._writer, partial(self._guard.run, sql=_SAVE))
        self._guard.denied = False
        try:
            job.result = await job.fn(self._writer)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise
            await _call(self._writer, partial(self._undo, job, exc))
        else:
            await _call(self._writer, partial(self._guard.run, sql=_RELEASE))

    def _undo(self, job: _Job, error: BaseException, conn: sqlite3.Connection) -> None:
        """Roll back a failed job's savepoint, on the writer's thread."""
        if not conn.in_transaction:
            raise _BatchLost(job, error)
        self._guard.run(conn, _UNDO)
        self._guard.run(conn, _RELEASE)
        job.error = self._guard.explain(error)

    async def _abandon(self) -> None:
        def rollback(conn: sqlite3.Connection) -> None:
            if conn.in_transaction:
                self._guard.run(conn, _ROLLBACK)

        try:
            await _call(self._writer, rollback)
        except Exception:
            logger.exception("could not roll back a failed write batch")

    def _settle(self, jobs: Iterable[_Job]) -> None:
        for job in jobs:
            if job.future is None:
                if job.error is not None and isinstance(job, _Statement):
                    logger.error("queued write failed and was dropped: %s (%s)", job.error, job.sql)
            elif job.future.done():
                continue
            elif isinstance(job.error, asyncio.CancelledError):
                job.future.cancel()
            elif job.error is not None:
                job.future.set_exception(job.error)
            else:
                job.future.set_result(job.result)

    # The readers

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closing:
            raise RuntimeError("the database is closed")
        count = len(self._readers)
        start = self._next_reader
        self._next_reader = (start + 1) % count
        # Least busy first; among equals, round robin.
        index = min(((start + k) % count for k in range(count)), key=self._reader_load.__getitem__)
        self._reader_load[index] += 1
        try:
            return await _call(self._readers[index], fn)
        finally:
            self._reader_load[index] -= 1


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
