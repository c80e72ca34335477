"""The core's own tables, as its named, ordered migration set (owner ``twin``)."""

from __future__ import annotations

from twin.db import Migration

MIGRATIONS = (
    Migration(
        "create tokens",
        """
        CREATE TABLE twin_tokens (
            id TEXT PRIMARY KEY,
            hash BLOB NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            name BLOB NOT NULL,
            scopes TEXT NOT NULL,
            experience TEXT,
            created REAL NOT NULL,
            last_used REAL
        );
    """,
    ),
    Migration(
        "create grants",
        """
        CREATE TABLE twin_grants (
            experience TEXT PRIMARY KEY,
            scopes TEXT NOT NULL,
            nonce TEXT NOT NULL,
            granted REAL NOT NULL
        );
    """,
    ),
    Migration(
        "create sessions and links",
        """
        CREATE TABLE twin_sessions (
            hash BLOB PRIMARY KEY,
            created REAL NOT NULL,
            last_seen REAL NOT NULL,
            expires REAL NOT NULL
        );
        CREATE TABLE twin_links (
            hash BLOB PRIMARY KEY,
            purpose TEXT NOT NULL,
            created REAL NOT NULL,
            expires REAL NOT NULL,
            used REAL
        );
    """,
    ),
    Migration(
        "create access log",
        """
        CREATE TABLE twin_access (
            id INTEGER PRIMARY KEY,
            minute INTEGER NOT NULL,
            first REAL NOT NULL,
            at REAL NOT NULL,
            count INTEGER NOT NULL,
            principal TEXT NOT NULL,
            capability TEXT NOT NULL,
            permission TEXT NOT NULL,
            method TEXT NOT NULL,
            route TEXT NOT NULL,
            status INTEGER NOT NULL,
            outcome TEXT NOT NULL
        );
        CREATE INDEX twin_access_principal ON twin_access (principal, id);
        CREATE UNIQUE INDEX twin_access_bucket
            ON twin_access (minute, principal, capability, permission, method, route, status);
    """,
    ),
    Migration(
        "create permission record",
        """
        CREATE TABLE twin_permissions (
            capability TEXT NOT NULL,
            permission TEXT NOT NULL,
            PRIMARY KEY (capability, permission)
        );
    """,
    ),
    Migration(
        "create passkeys and session details",
        """
        CREATE TABLE twin_passkeys (
            id TEXT PRIMARY KEY,
            credential BLOB NOT NULL UNIQUE,
            public_key BLOB NOT NULL,
            sign_count INTEGER NOT NULL,
            transports TEXT NOT NULL,
            name BLOB,
            created REAL NOT NULL,
            last_used REAL,
            flagged REAL
        );
        ALTER TABLE twin_sessions ADD COLUMN id TEXT;
        ALTER TABLE twin_sessions ADD COLUMN passkey TEXT;
        ALTER TABLE twin_sessions ADD COLUMN device BLOB;
        UPDATE twin_sessions SET id = lower(hex(randomblob(12)));
        CREATE UNIQUE INDEX twin_sessions_id ON twin_sessions (id);
    """,
    ),
    Migration(
        "create peers, outbox and seen envelopes",
        """
        CREATE TABLE twin_peers (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            did BLOB NOT NULL,
            state TEXT NOT NULL,
            address BLOB,
            created REAL NOT NULL,
            last_seen REAL,
            last_delivered REAL,
            last_error BLOB,
            told TEXT
        );
        CREATE TABLE twin_outbox (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            peer TEXT NOT NULL,
            type BLOB NOT NULL,
            envelope BLOB,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            expires REAL NOT NULL,
            done REAL,
            error BLOB
        );
        CREATE INDEX twin_outbox_waiting ON twin_outbox (peer, seq)
            WHERE state IN ('queued', 'sent');
        CREATE INDEX twin_outbox_done ON twin_outbox (done) WHERE done IS NOT NULL;
        CREATE TABLE twin_seen (
            key TEXT PRIMARY KEY,
            expires REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX twin_seen_expires ON twin_seen (expires);
    """,
    ),
    Migration(
        "create backup schedule",
        """
        CREATE TABLE twin_backup (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            folder TEXT NOT NULL,
            every REAL NOT NULL,
            keep INTEGER NOT NULL,
            enabled INTEGER NOT NULL,
            last_started REAL,
            last_finished REAL,
            last_state TEXT,
            last_snapshot TEXT,
            last_error TEXT,
            last_bytes INTEGER,
            last_new_bytes INTEGER
        );
    """,
    ),
    Migration(
        "keep the last good backup beside the last one",
        """
        ALTER TABLE twin_backup ADD COLUMN good_finished REAL;
        ALTER TABLE twin_backup ADD COLUMN good_snapshot TEXT;
    """,
    ),
)
