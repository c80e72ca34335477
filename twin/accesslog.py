"""The access log: who used which capability permission, when, and with what outcome."""

from __future__ import annotations

import time
from typing import Any

from twin.db import Database

KEEP = 100_000
_PRUNE_EVERY = 1_000


class AccessLog:
    """Records API use without awaiting the disk; keeps the newest ``KEEP`` entries."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._since_prune = 0

    def record(self, principal: str, capability: str, permission: str, method: str,
               route: str, status: int) -> None:
        outcome = ("allowed" if status < 400 else "denied" if status in (401, 403)
                   else "refused" if status < 500 else "failed")
        self._db.enqueue(
            "INSERT INTO twin_access (at, principal, capability, permission, method, route, "
            "status, outcome) VALUES (?,?,?,?,?,?,?,?)",
            (time.time(), principal, capability, permission, method, route, status, outcome))
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self._since_prune = 0
            self._db.enqueue("DELETE FROM twin_access WHERE id <= "
                             "(SELECT MAX(id) FROM twin_access) - ?", (KEEP,))

    async def entries(self, *, limit: int = 100, before: int | None = None,
                      principal: str | None = None) -> list[dict[str, Any]]:
        """Newest first; ``before`` is the id to page back from."""
        await self._db.flush()
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
            f"SELECT id, at, principal, capability, permission, method, route, status, outcome "
            f"FROM twin_access {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [dict(row) for row in rows]
