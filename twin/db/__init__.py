"""The twin's SQLite database: one batching writer, read-only readers, per-owner migrations."""

from twin.db._database import Database, WriteResult
from twin.db._migrations import Migration

__all__ = ["Database", "Migration", "WriteResult"]
