"""Named, ordered migration sets per owner, recorded in ``twin_migrations``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from twin.errors import BadInput, Conflict

RECORDS_TABLE = """
CREATE TABLE IF NOT EXISTS twin_migrations (
    owner TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (owner, name)
)
"""

RECORDED_SQL = "SELECT position, name FROM twin_migrations WHERE owner = ? ORDER BY position"


@dataclass(frozen=True)
class Migration:
    """One step of an owner's ordered migration set; never rename, remove or reorder a step."""

    name: str
    sql: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise BadInput("a migration needs a non-empty name")
        if not isinstance(self.sql, str):
            raise BadInput(f"migration {self.name!r}: sql must be a string")


def check_set(owner: str, migrations: Sequence[Migration]) -> None:
    """Refuse a set that cannot be recorded unambiguously."""
    if not isinstance(owner, str) or not owner.strip():
        raise BadInput("a migration set needs a non-empty owner")
    seen: set[str] = set()
    for migration in migrations:
        if not isinstance(migration, Migration):
            raise BadInput(f"migration set for {owner!r} holds {migration!r}, not a Migration")
        if migration.name in seen:
            raise BadInput(f"migration set for {owner!r} names {migration.name!r} twice")
        seen.add(migration.name)


def check_unchanged(
    owner: str, recorded: Sequence[tuple[int, str]], migrations: Sequence[Migration]
) -> None:
    """Raise Conflict unless every recorded step is still at its recorded position."""
    for position, name in recorded:
        in_code = migrations[position - 1].name if position <= len(migrations) else None
        if in_code != name:
            found = repr(in_code) if in_code is not None else "no migration there"
            raise Conflict(
                f"migration set for {owner!r} changed: recorded {name!r} at position {position} "
                f"but the code has {found}; add new migrations at the end instead"
            )


def split_script(script: str) -> list[str]:
    """Cut a script into whole statements, as ``executescript`` would run them."""
    statements: list[str] = []
    pending = ""
    pieces = script.split(";")
    for index, piece in enumerate(pieces):
        pending += piece
        if index < len(pieces) - 1:
            pending += ";"
            if sqlite3.complete_statement(pending):
                statements.append(pending)
                pending = ""
    if pending.strip():
        # A tail without ";" is still run: SQLite accepts it, or says what is wrong with it.
        statements.append(pending)
    return statements


def apply(conn: sqlite3.Connection, owner: str, position: int, migration: Migration) -> bool:
    """Run one step and record it, on the writer's thread; False if it was recorded meanwhile."""
    already = conn.execute(
        "SELECT 1 FROM twin_migrations WHERE owner = ? AND name = ?", (owner, migration.name)
    ).fetchone()
    if already is not None:
        return False
    try:
        for statement in split_script(migration.sql):
            conn.execute(statement).close()
    except sqlite3.Error as exc:
        exc.add_note(f"in migration {migration.name!r} of {owner!r}")
        raise
    conn.execute(
        "INSERT INTO twin_migrations (owner, position, name, applied_at) VALUES (?, ?, ?, ?)",
        (owner, position, migration.name, time.time()),
    ).close()
    return True
