"""Backing the twin up: ``back_up`` (what ``twin backup --to`` and the schedule both run) and
``Backups``, the schedule the owner switches on in Settings, which a serving twin keeps: the
folder, how often, how many to keep, the last backup's outcome and the running one's
progress."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twin.backup import BackupFolder, Written
from twin.errors import BadInput, Conflict, TwinError
from twin.transfer import Progress, export_twin

if TYPE_CHECKING:
    from twin.core import Twin

log = logging.getLogger("twin.backup")
EVERY = {1: "every hour", 6: "every 6 hours", 24: "every day", 168: "every week"}
MAX_KEEP = 365
_LOOK = 60.0  # how often the schedule looks whether a backup is due
RETRY = 3600.0  # a backup that failed is tried again this soon


async def back_up(
    twin: Twin,
    root: Path,
    keep: int,
    progress: Progress | None = None,
    *,
    create: bool = True,
) -> Written:
    """One snapshot of the whole twin into the backup folder ``root`` (made if new, with
    ``create``), then all but the ``keep`` newest let go."""
    identity = twin.require_identity()
    refuse_inside(twin, root)
    try:
        folder = await asyncio.to_thread(BackupFolder, root, identity.seed, create=create)
    except OSError as exc:
        raise BadInput(f"cannot back up into {root}: {exc.strerror or exc}") from None
    lock = folder.lock()
    try:
        writer = await asyncio.to_thread(folder.writer)  # (it opens the last snapshot)
        try:
            await export_twin(twin, writer, open=False, progress=progress)
            await asyncio.to_thread(writer.seal)
        finally:
            await asyncio.to_thread(writer.shut)
        written = writer.written
        written.removed = await asyncio.to_thread(folder.keep, keep)
        return written
    finally:
        lock.close()


def refuse_inside(twin: Twin, root: Path) -> None:
    """A backup in the twin's own folder is lost with it (and an import over it deletes it)."""
    data = twin.settings.data_dir.resolve()
    if root.resolve() == data or data in root.resolve().parents:
        raise BadInput(
            "a backup inside the twin's own folder is lost with it: choose a folder on "
            "another disk, or one another machine copies"
        )


@dataclass
class Running:
    """The backup under way: where it is and how far."""

    started: float
    total: int
    part: str = ""
    done: int = 0


class Backups:
    """The scheduled backup of a serving twin."""

    def __init__(self, twin: Twin) -> None:
        self._twin = twin
        self.running: Running | None = None
        self._task: asyncio.Task[None] | None = None
        self._job: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def state(self) -> dict[str, Any]:
        """The schedule, the last backup and the running one, as Settings shows them."""
        row = await self._twin.db.fetchone("SELECT * FROM twin_backup WHERE id = 1")
        schedule = last = None
        if row is not None:
            schedule = {
                "folder": row["folder"],
                "every": int(row["every"] / 3600),
                "keep": row["keep"],
                "enabled": bool(row["enabled"]),
            }
            if row["last_started"] is not None:
                last = {
                    "started": row["last_started"],
                    "finished": row["last_finished"],
                    "state": row["last_state"],
                    "snapshot": row["last_snapshot"],
                    "error": row["last_error"],
                    "bytes": row["last_bytes"],
                    "new_bytes": row["last_new_bytes"],
                    "good_finished": row["good_finished"],
                    "good_snapshot": row["good_snapshot"],
                }
        running = None
        if self.running is not None:
            r = self.running
            running = {"started": r.started, "part": r.part, "done": r.done, "total": r.total}
        return {"schedule": schedule, "last": last, "running": running}

    async def configure(self, folder: str, every: int, keep: int, enabled: bool) -> None:
        """Set the schedule, after checking the folder can hold this twin's backups."""
        if every not in EVERY:
            raise BadInput(f"back up every 1, 6, 24 or 168 hours, not {every}")
        if not 1 <= keep <= MAX_KEEP:
            raise BadInput(f"keep between 1 and {MAX_KEEP} backups, not {keep}")
        root = Path(folder.strip())
        if not root.is_absolute():
            raise BadInput("give the backup folder as a full path, such as /mnt/disk/twin-backups")
        refuse_inside(self._twin, root)
        identity = self._twin.require_identity()
        try:
            await asyncio.to_thread(BackupFolder, root, identity.seed, create=True)
        except OSError as exc:
            raise BadInput(f"cannot back up into {root}: {exc.strerror or exc}") from None
        await self._twin.db.execute(
            "INSERT INTO twin_backup (id, folder, every, keep, enabled) VALUES (1, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET folder = excluded.folder, every = excluded.every, "
            "keep = excluded.keep, enabled = excluded.enabled",
            (str(root), every * 3600.0, keep, int(enabled)),
        )
        self._wake.set()

    async def export(self) -> dict[str, Any] | None:
        """The schedule, for an export (``twin/backup.json``): None when there is none."""
        schedule: dict[str, Any] | None = (await self.state())["schedule"]
        return schedule

    async def restore(self, schedule: object) -> None:
        """A schedule from an export, kept switched off: the old twin may still back up into
        that folder, or its disk not be mounted here (the backups would land on the twin's
        own disk). The owner switches it on in Settings once this twin is the one in use."""
        if not isinstance(schedule, dict):
            raise BadInput("twin/backup.json is not a backup schedule")
        folder, every, keep = schedule.get("folder"), schedule.get("every"), schedule.get("keep")
        if (
            not isinstance(folder, str)
            or not Path(folder).is_absolute()
            or every not in EVERY
            or type(keep) is not int
            or not 1 <= keep <= MAX_KEEP
        ):
            raise BadInput("twin/backup.json: a schedule needs a full path, every and keep")
        await self._twin.db.execute(
            "INSERT INTO twin_backup (id, folder, every, keep, enabled) VALUES (1, ?, ?, ?, 0)",
            (folder, every * 3600.0, keep),
        )

    async def run_now(self) -> None:
        """Begin a backup at once, in the background (its progress is in ``running``)."""
        row = await self._twin.db.fetchone("SELECT folder FROM twin_backup WHERE id = 1")
        if row is None:
            raise BadInput("choose a backup folder first")
        if self.running is not None:
            raise Conflict("a backup is running already: wait for it to finish")
        self._twin.require_identity()
        self._begin()

    def start(self) -> None:
        self._task = asyncio.create_task(self._schedule(), name="twin backups")

    async def stop(self) -> None:
        for task in (self._task, self._job):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._job = None

    def _begin(self) -> None:
        if self.running is not None:  # the schedule and Back up now, at one moment
            return
        self.running = Running(started=time.time(), total=0)
        self._job = asyncio.create_task(self._run(self.running), name="twin backup")

    async def _schedule(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), _LOOK)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._look()
            except Exception:  # the next look tries again
                log.exception("the backup schedule could not look whether one is due")

    async def _look(self) -> None:
        if self.running is not None or self._twin.vault.locked:
            return
        row = await self._twin.db.fetchone(
            "SELECT every, enabled, last_started, last_state FROM twin_backup WHERE id = 1"
        )
        if row is None or not row["enabled"]:
            return
        # one that did not finish is tried again within the hour
        every = row["every"] if row["last_state"] == "done" else min(row["every"], RETRY)
        if row["last_started"] is None or time.time() - row["last_started"] >= every:
            self._begin()

    async def _run(self, running: Running) -> None:
        def progress(part: str, _entries: int, done: int) -> None:
            running.part, running.done = part, done

        db = self._twin.db
        try:
            row = await db.fetchone("SELECT folder, keep FROM twin_backup WHERE id = 1")
            assert row is not None
            await db.execute(
                "UPDATE twin_backup SET last_started = ?, last_finished = NULL, "
                "last_state = 'running', last_error = NULL WHERE id = 1",
                (running.started,),
            )
            running.total = sum(h.bytes for _, h in await self._twin.holdings())
            written = await back_up(
                self._twin, Path(row["folder"]), row["keep"], progress, create=False
            )
        except asyncio.CancelledError:
            await self._finish("stopped", error="the twin stopped while it ran")
            raise
        except TwinError as exc:
            await self._finish("failed", error=exc.message)
        except Exception as exc:
            log.exception("the backup failed")
            await self._finish("failed", error=f"{type(exc).__name__}: {exc}")
        else:
            log.info(
                "backed up %s into %s: %d bytes new",
                written.snapshot,
                row["folder"],
                written.new_bytes,
            )
            await self._finish("done", written=written)
        finally:
            self.running = None

    async def _finish(self, state: str, *, error: str = "", written: Written | None = None) -> None:
        try:
            await self._twin.db.execute(
                "UPDATE twin_backup SET last_finished = ?, last_state = ?, last_error = ?, "
                "last_snapshot = ?, last_bytes = ?, last_new_bytes = ? WHERE id = 1",
                (
                    time.time(),
                    state,
                    None if written is not None else error or "it stopped",
                    written.snapshot if written else None,
                    written.bytes if written else None,
                    written.new_bytes if written else None,
                ),
            )
            if written is not None:
                await self._twin.db.execute(
                    "UPDATE twin_backup SET good_finished = last_finished, "
                    "good_snapshot = last_snapshot WHERE id = 1"
                )
        except Exception:
            log.exception("the backup's outcome could not be noted")
