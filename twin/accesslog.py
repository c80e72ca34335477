"""The access log: who used which capability permission, when, how often, and with what outcome."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from twin.db import Database

KEEP = 100_000
FLUSH_AFTER = 1.0
_PRUNE_EVERY = 100
_INSERT = (
    "INSERT INTO twin_access (minute, principal, capability, permission, method, route, status, "
    "outcome, count, first, at) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (minute, principal, capability, permission, method, route, status) "
    "DO UPDATE SET count = count + excluded.count, at = excluded.at"
)
Key = tuple[int, str, str, str, str, str, int]


def outcome_of(status: int) -> str:
    if status < 400:
        return "allowed"
    if status in (401, 403):
        return "denied"
    return "refused" if status < 500 else "failed"


class AccessLog:
    """Counts API use in memory and writes it at most once a second, one row per minute for
    each (who, permission, request, status): the owner reads "token X read the profile 4,000
    times", and a busy twin does not write a row for every request."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: dict[Key, list[float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._writes = 0

    def record(
        self, principal: str, capability: str, permission: str, method: str, route: str, status: int
    ) -> None:
        now = time.time()
        key = (int(now // 60), principal, capability, permission, method, route, status)
        seen = self._pending.get(key)
        if seen is None:
            self._pending[key] = [1, now, now]
        else:
            seen[0] += 1
            seen[2] = now
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_AFTER, self.write)

    def write(self) -> None:
        """Hand what was counted to the database's writer (committed with its next batch)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for key, (count, first, last) in pending.items():
            self._db.enqueue(_INSERT, (*key, outcome_of(key[6]), int(count), first, last))
        self._writes += 1
        if pending and self._writes % _PRUNE_EVERY == 0:
            self._db.enqueue(
                "DELETE FROM twin_access WHERE id <= (SELECT MAX(id) FROM twin_access) - ?", (KEEP,)
            )

    async def flush(self) -> None:
        self.write()
        await self._db.flush()

    async def entries(
        self, *, limit: int = 100, before: int | None = None, principal: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` is the id to page back from."""
        await self.flush()
        clauses: list[str] = []
        params: list[object] = []
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        if principal is not None:
            clauses.append("principal = ?")
            params.append(principal)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._db.fetchall(
            f"SELECT id, at, first, count, principal, capability, permission, method, route, "
            f"status, outcome FROM twin_access {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [dict(row) for row in rows]
