"""Chat's tables: conversations (held in memory once read), messages in conversation order,
reactions, read marks, delivery of what this twin sent, the search index and the messages
waiting for a group they belong to. Text, names and members are sealed; counters, times and
opaque ids stay in clear."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from twin import Migration, NotFound
from twin.db import Database
from twin.vault import Box

from ._text import PREFIX, matches, prefixes, words

log = logging.getLogger("twin.cap.chat")

MIGRATIONS = (
    Migration(
        "create conversations, messages, reactions, reads, deliveries, words and waiting",
        """
        CREATE TABLE chat_conversations (
            id TEXT PRIMARY KEY,
            data BLOB NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            n INTEGER NOT NULL,
            read_n INTEGER NOT NULL,
            seq INTEGER NOT NULL
        );
        CREATE INDEX chat_conversations_seq ON chat_conversations (seq);
        CREATE TABLE chat_groups (id TEXT PRIMARY KEY, log BLOB NOT NULL);
        CREATE TABLE chat_messages (
            conv TEXT NOT NULL,
            id TEXT NOT NULL,
            n INTEGER NOT NULL,
            mine INTEGER NOT NULL,
            counts INTEGER NOT NULL,
            data BLOB NOT NULL,
            received REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (conv, id)
        );
        CREATE INDEX chat_messages_order ON chat_messages (conv, n, id);
        CREATE INDEX chat_messages_seq ON chat_messages (seq);
        CREATE TABLE chat_reactions (
            conv TEXT NOT NULL, msg TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (conv, msg)
        );
        CREATE TABLE chat_reads (
            conv TEXT NOT NULL, who TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (conv, who)
        );
        CREATE TABLE chat_sent (
            envelope TEXT PRIMARY KEY,
            conv TEXT NOT NULL,
            msg TEXT NOT NULL,
            state TEXT NOT NULL
        );
        CREATE INDEX chat_sent_message ON chat_sent (conv, msg);
        CREATE TABLE chat_words (
            token TEXT NOT NULL,
            conv TEXT NOT NULL,
            msg TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (token, conv, msg)
        ) WITHOUT ROWID;
        CREATE TABLE chat_waiting (
            id INTEGER PRIMARY KEY,
            conv TEXT NOT NULL,
            data BLOB NOT NULL,
            received REAL NOT NULL
        );
        CREATE INDEX chat_waiting_conv ON chat_waiting (conv);
        CREATE TABLE chat_attachments (
            id TEXT PRIMARY KEY,
            conv TEXT NOT NULL,
            msg TEXT,
            data BLOB NOT NULL,
            created REAL NOT NULL
        );
        """,
    ),
    Migration(
        "search index written in bulk",
        # messages whose words are not in chat_words yet; a row per message (or per edit)
        "CREATE TABLE chat_unindexed (conv TEXT NOT NULL, msg TEXT NOT NULL)",
    ),
)
INDEX_BATCH = 500  # messages indexed in one write
INDEX_DELAY = 0.5  # seconds new messages wait for others to be indexed with
MAX_WAITING = 2000  # messages held for groups not known yet
SEARCH_LIMIT = 50
MAX_UNREAD = 1000
SEARCH_CANDIDATES = 20_000
SEARCH_SECONDS = 2.0


@dataclass
class Conversation:
    """One conversation, as this twin holds it."""

    id: str
    kind: str  # "direct" or "group"
    name: str
    members: list[str]
    admins: list[str]
    created: float
    updated: float
    n: int = 0  # the highest conversation counter seen
    read_n: int = 0  # the owner has read up to here
    seq: int = 0
    names: dict[str, str] = field(default_factory=dict)  # what members call themselves
    muted: bool = False
    active: bool = True

    def sealed(self) -> dict[str, Any]:
        data = asdict(self)
        for clear in ("id", "created", "updated", "n", "read_n", "seq"):
            del data[clear]
        return data


@dataclass
class Message:
    """One message (or a group change shown among them)."""

    conv: str
    id: str
    n: int
    sender: str
    mine: bool
    sent: float
    received: float
    text: str = ""
    kind: str = "text"  # or "event"
    reply_to: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    edited: float | None = None
    deleted: bool = False
    seq: int = 0

    @property
    def counts(self) -> bool:
        """Whether it makes the conversation unread."""
        return not self.mine and self.kind == "text" and not self.deleted

    def sealed(self) -> dict[str, Any]:
        """What is kept sealed: all but what the rows hold in clear to be found and ordered
        by (conv, id, n, mine, received, seq)."""
        return {
            "sender": self.sender,
            "sent": self.sent,
            "text": self.text,
            "kind": self.kind,
            "reply_to": self.reply_to,
            "attachments": self.attachments,
            "edited": self.edited,
            "deleted": self.deleted,
        }


OPENED_KEPT = 512  # the latest messages opened, kept opened
TOKENS_KEPT = 4096  # search tokens kept in memory (about 0.5 MiB)
_UNINDEXED = "INSERT INTO chat_unindexed (conv, msg) VALUES (?, ?)"
_INDEX = "INSERT OR IGNORE INTO chat_words (token, conv, msg, at) VALUES (?,?,?,?)"
Query = Callable[[sqlite3.Connection], list[sqlite3.Row]]


def _fetchall(sql: str, params: tuple[Any, ...], conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(sql, params).fetchall()


def _reactions(conv_id: str, ids: list[str]) -> Query:
    marks = ",".join("?" * len(ids))
    sql = f"SELECT msg, data FROM chat_reactions WHERE conv = ? AND msg IN ({marks})"
    return partial(_fetchall, sql, (conv_id, *ids))


def _deliveries(conv_id: str, ids: list[str]) -> Query:
    marks = ",".join("?" * len(ids))
    sql = (
        f"SELECT msg, state, count(*) AS k FROM chat_sent WHERE conv = ? AND msg IN ({marks})"
        " GROUP BY msg, state"
    )
    return partial(_fetchall, sql, (conv_id, *ids))


def _write_index(words: list[tuple[Any, ...]], last: int, conn: sqlite3.Connection) -> None:
    """The words of the pending messages up to rowid ``last``, which are then no longer so."""
    conn.executemany(_INDEX, words).close()
    conn.execute("DELETE FROM chat_unindexed WHERE rowid <= ?", (last,)).close()


@dataclass
class Marks:
    """What is shown on messages besides themselves."""

    reactions: dict[str, dict[str, list[str]]]  # message: emoji: dids
    deliveries: dict[str, dict[str, int]]  # this twin's message: delivery state: envelopes
    reads: list[int]  # how far each member who told us has read


class Store:
    """Chat's rows. Changes bump a twin-wide sequence number, which the live stream follows."""

    def __init__(self, db: Database, box: Box, index: Box) -> None:
        self.db = db
        self.box = box
        self.index = index
        self.seq = 0
        self.changed = asyncio.Event()
        self._conversations: dict[str, Conversation] | None = None
        self._read_marks: dict[tuple[str, str], int] = {}
        self._my_last: dict[str, int] = {}
        self._tokens: dict[str, str] = {}
        self._opened: dict[tuple[str, str], tuple[bytes, dict[str, Any]]] = {}
        self._indexing = asyncio.Lock()
        self._indexer: asyncio.Future[None] | None = None

    async def load(self) -> dict[str, Conversation]:
        if self._conversations is None:
            rows = await self.db.fetchall("SELECT * FROM chat_conversations")
            found = {}
            for row in rows:
                data = self.box.open_json(row["data"], context=row["id"])
                found[row["id"]] = Conversation(
                    id=row["id"],
                    created=row["created"],
                    updated=row["updated"],
                    n=row["n"],
                    read_n=row["read_n"],
                    seq=row["seq"],
                    **data,
                )
            self._conversations = found
            top = await self.db.fetchval(
                "SELECT max(s) FROM (SELECT max(seq) AS s FROM chat_conversations"
                " UNION ALL SELECT max(seq) FROM chat_messages)"
            )
            self.seq = max(self.seq, top or 0)
        return self._conversations

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def woke(self) -> asyncio.Event:
        """An event set at the next change; take it before reading."""
        return self.changed

    def wake(self) -> None:
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    # conversations ------------------------------------------------------------------------

    async def conversations(self) -> list[Conversation]:
        return sorted((await self.load()).values(), key=lambda c: -c.updated)

    async def conversation(self, conv_id: str) -> Conversation:
        found = (await self.load()).get(conv_id)
        if found is None:
            raise NotFound("there is no such conversation")
        return found

    async def find(self, conv_id: str) -> Conversation | None:
        return (await self.load()).get(conv_id)

    async def save(self, conv: Conversation, *, sealed: bool = True) -> Conversation:
        """Write ``conv`` (its sealed part too unless only counters changed)."""
        held = await self.load()
        await self.db.execute(*self._conversation_write(conv, sealed or conv.id not in held))
        held[conv.id] = conv
        self.wake()
        return conv

    def _conversation_write(self, conv: Conversation, sealed: bool) -> tuple[str, tuple[Any, ...]]:
        """The statement that writes ``conv``, which takes the next seq."""
        conv.seq = self.next_seq()
        if sealed:
            data = self.box.seal_json(conv.sealed(), context=conv.id)
            return (
                "INSERT INTO chat_conversations (id, data, created, updated, n, read_n, seq)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET data = excluded.data,"
                " updated = excluded.updated, n = excluded.n, read_n = excluded.read_n,"
                " seq = excluded.seq",
                (conv.id, data, conv.created, conv.updated, conv.n, conv.read_n, conv.seq),
            )
        return (
            "UPDATE chat_conversations SET updated = ?, n = ?, read_n = ?, seq = ? WHERE id = ?",
            (conv.updated, conv.n, conv.read_n, conv.seq, conv.id),
        )

    async def group_log(self, conv_id: str) -> list[dict[str, Any]]:
        row = await self.db.fetchone("SELECT log FROM chat_groups WHERE id = ?", (conv_id,))
        return [] if row is None else list(self.box.open_json(row[0], context="log " + conv_id))

    async def keep_log(self, conv_id: str, log: list[dict[str, Any]]) -> None:
        sealed = self.box.seal_json(log, context="log " + conv_id)
        await self.db.execute(
            "INSERT INTO chat_groups (id, log) VALUES (?, ?)"
            " ON CONFLICT (id) DO UPDATE SET log = excluded.log",
            (conv_id, sealed),
        )

    async def summary(self, conv: Conversation) -> tuple[Message | None, int]:
        """A conversation's last message and how many are unread, in one look. Unread are
        counted up to MAX_UNREAD: past that the number says no more than "many"."""

        def look(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            return (
                _fetchall(
                    "SELECT * FROM chat_messages WHERE conv = ? ORDER BY n DESC, id DESC LIMIT 1",
                    (conv.id,),
                    conn,
                ),
                _fetchall(
                    "SELECT count(*) FROM (SELECT 1 FROM chat_messages"
                    " WHERE conv = ? AND counts = 1 AND n > ? LIMIT ?)",
                    (conv.id, conv.read_n, MAX_UNREAD),
                    conn,
                ),
            )

        last, unread = await self.db.read(look)
        return (self._message(last[0]) if last else None), int(unread[0][0])

    # messages -----------------------------------------------------------------------------

    def _message(self, row: sqlite3.Row) -> Message:
        key, sealed = (row["conv"], row["id"]), row["data"]
        kept = self._opened.pop(key, None)
        if kept is not None and kept[0] == sealed:
            data = kept[1]
        else:
            data = self.box.open_json(sealed, context=f"{row['conv']} {row['id']}")
        self._keep_opened(key, sealed, data)
        return Message(
            conv=row["conv"],
            id=row["id"],
            n=row["n"],
            mine=bool(row["mine"]),
            received=row["received"],
            seq=row["seq"],
            **data,
        )

    def _keep_opened(self, key: tuple[str, str], sealed: bytes, data: dict[str, Any]) -> None:
        """Keep what a sealed message holds: the stream and the lists read the latest ones
        again and again (the sealed bytes change with every write, so a kept one is current
        exactly when they match)."""
        self._opened[key] = (sealed, data)
        if len(self._opened) > OPENED_KEPT:
            del self._opened[next(iter(self._opened))]

    async def add(
        self, message: Message, moved: Conversation | None = None, *, sealed: bool = False
    ) -> Message:
        """Store a new message and, only if it is new, ``moved`` (its conversation as the
        message changes it), in one write; the same id again is not stored twice (the held
        one comes back)."""
        held = await self.load()
        message.seq = self.next_seq()
        data = message.sealed()
        sealed_data = self.box.seal_json(data, context=f"{message.conv} {message.id}")
        insert = (
            "INSERT OR IGNORE INTO chat_messages (conv, id, n, mine, counts, data, received, seq)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                message.conv,
                message.id,
                message.n,
                int(message.mine),
                int(message.counts),
                sealed_data,
                message.received,
                message.seq,
            ),
        )
        then = None
        if moved is not None:
            then = self._conversation_write(moved, sealed or moved.id not in held)
        later = self._indexed(message)

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(*insert)
            new = cursor.rowcount > 0
            cursor.close()
            if new and then is not None:
                conn.execute(*then).close()
            if new and later:
                conn.execute(_UNINDEXED, (message.conv, message.id)).close()
            return new

        if not await self.db.write(write):
            return await self.message(message.conv, message.id)
        if moved is not None:
            held[moved.id] = moved
        self._keep_opened((message.conv, message.id), sealed_data, data)
        if message.mine and message.conv in self._my_last:
            self._my_last[message.conv] = max(self._my_last[message.conv], message.n)
        if later:
            self.index_soon()
        self.wake()
        return message

    async def update(self, message: Message, *, text_changed: bool = False) -> Message:
        message = replace(message, seq=self.next_seq())
        await self.db.execute(
            "UPDATE chat_messages SET data = ?, counts = ?, seq = ? WHERE conv = ? AND id = ?",
            (
                self.box.seal_json(message.sealed(), context=f"{message.conv} {message.id}"),
                int(message.counts),
                message.seq,
                message.conv,
                message.id,
            ),
        )
        if text_changed:
            async with self._indexing:  # not while the old text's words are being written
                await self.db.execute(
                    "DELETE FROM chat_words WHERE conv = ? AND msg = ?", (message.conv, message.id)
                )
                if self._indexed(message):
                    await self.db.execute(_UNINDEXED, (message.conv, message.id))
                    self.index_soon()
        self.wake()
        return message

    async def touch(self, conv_id: str, message_ids: Iterable[str]) -> None:
        """Send these messages down the live stream again (their ticks or reactions changed)."""
        rows = [(self.next_seq(), conv_id, mid) for mid in message_ids]
        if rows:
            await self.db.executemany(
                "UPDATE chat_messages SET seq = ? WHERE conv = ? AND id = ?", rows
            )
            self.wake()

    # the search index ----------------------------------------------------------------------

    @staticmethod
    def _indexed(message: Message) -> bool:
        return not message.deleted and message.kind == "text" and bool(message.text)

    def _words(self, message: Message) -> list[tuple[str, str, str, float]]:
        """The search index's rows for a message: a keyed hash of each word's beginning."""
        if not self._indexed(message):
            return []
        tokens = {self.token(p) for p in prefixes(message.text)}
        return [(token, message.conv, message.id, message.received) for token in tokens]

    def index_soon(self) -> None:
        """Index what was added, once a little more has come: the words of a few hundred
        messages written together cost a fraction of theirs written one message at a time."""
        if self._indexer is None or self._indexer.done():
            self._indexer = asyncio.ensure_future(self._index_later())

    async def _index_later(self) -> None:
        await asyncio.sleep(INDEX_DELAY)
        try:
            await self.index_pending()
        except Exception as exc:  # a locked vault, a full disk: the next message tries again
            log.warning("chat's search index waits: %s", exc)

    async def index_pending(self) -> int:
        """Write the search index of every message still waiting for it; how many there were."""
        done = 0
        async with self._indexing:
            while True:
                rows = await self.db.fetchall(
                    "SELECT u.rowid AS pending, m.* FROM chat_unindexed u LEFT JOIN"
                    " chat_messages m ON m.conv = u.conv AND m.id = u.msg ORDER BY u.rowid"
                    " LIMIT ?",
                    (INDEX_BATCH,),
                )
                if not rows:
                    return done
                words = sorted(
                    word
                    for row in rows
                    if row["id"] is not None
                    for word in self._words(self._message(row))
                )
                last = rows[-1]["pending"]

                await self.db.write(partial(_write_index, words, last))
                done += len(rows)

    async def close(self) -> None:
        """Index what waits (it would be indexed at the next start otherwise)."""
        if self._indexer is not None:
            self._indexer.cancel()
        await self.index_pending()

    def token(self, prefix: str) -> str:
        """The index's keyed hash of a word's beginning; the common ones are kept (chat
        repeats its words: most of a message's tokens were made before)."""
        token = self._tokens.get(prefix)
        if token is None:
            if len(self._tokens) >= TOKENS_KEPT:
                self._tokens.clear()
            token = self._tokens[prefix] = self.index.blind(prefix)[:16]
        return token

    async def message(self, conv_id: str, message_id: str) -> Message:
        row = await self.db.fetchone(
            "SELECT * FROM chat_messages WHERE conv = ? AND id = ?", (conv_id, message_id)
        )
        if row is None:
            raise NotFound("there is no such message in this conversation")
        return self._message(row)

    async def find_message(self, conv_id: str, message_id: str) -> Message | None:
        try:
            return await self.message(conv_id, message_id)
        except NotFound:
            return None

    async def page(
        self, conv_id: str, before: Message | None, limit: int
    ) -> tuple[list[Message], bool]:
        """The latest ``limit`` messages (before ``before``), oldest first; and whether there
        are more."""
        if before is None:
            rows = await self.db.fetchall(
                "SELECT * FROM chat_messages WHERE conv = ? ORDER BY n DESC, id DESC LIMIT ?",
                (conv_id, limit + 1),
            )
        else:
            rows = await self.db.fetchall(
                "SELECT * FROM chat_messages WHERE conv = ? AND (n < ? OR (n = ? AND id < ?))"
                " ORDER BY n DESC, id DESC LIMIT ?",
                (conv_id, before.n, before.n, before.id, limit + 1),
            )
        more = len(rows) > limit
        return [self._message(r) for r in reversed(rows[:limit])], more

    async def mine_between(self, conv_id: str, low: int, high: int) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT id FROM chat_messages WHERE conv = ? AND mine = 1 AND n > ? AND n <= ?"
            " ORDER BY n DESC LIMIT 200",
            (conv_id, low, high),
        )
        return [r["id"] for r in rows]

    async def changes(self, since: int, limit: int = 200) -> tuple[list[Any], int, bool]:
        """Conversations and messages changed after ``since``, in order; the last seq covered
        and whether more follow."""

        def look(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            return (
                _fetchall(
                    "SELECT id, seq FROM chat_conversations WHERE seq > ? ORDER BY seq LIMIT ?",
                    (since, limit),
                    conn,
                ),
                _fetchall(
                    "SELECT * FROM chat_messages WHERE seq > ? ORDER BY seq LIMIT ?",
                    (since, limit),
                    conn,
                ),
            )

        convs, msgs = await self.db.read(look)
        cutoff = None
        for rows in (convs, msgs):
            if len(rows) == limit:
                cutoff = min(cutoff or rows[-1]["seq"], rows[-1]["seq"])
        held = await self.load()
        found: list[tuple[int, Any]] = []
        for row in convs:
            if (cutoff is None or row["seq"] <= cutoff) and row["id"] in held:
                found.append((row["seq"], held[row["id"]]))
        for row in msgs:
            if cutoff is None or row["seq"] <= cutoff:
                found.append((row["seq"], self._message(row)))
        found.sort(key=lambda pair: pair[0])
        last = cutoff if cutoff is not None else max([since] + [s for s, _ in found])
        return [item for _, item in found], last, cutoff is not None

    # reactions, reads, deliveries ----------------------------------------------------------

    async def reactions(self, conv_id: str, ids: list[str]) -> dict[str, dict[str, list[str]]]:
        if not ids:
            return {}
        return self._opened_reactions(conv_id, await self.db.read(_reactions(conv_id, ids)))

    async def marks(self, conv_id: str, ids: list[str], mine: list[str]) -> Marks:
        """The reactions on messages ``ids``, and for this twin's ``mine`` among them their
        delivery states and the members' read marks: in one look."""
        reactions = _reactions(conv_id, ids) if ids else None
        deliveries = reads = None
        if mine:
            deliveries = _deliveries(conv_id, mine)
            reads = partial(_fetchall, "SELECT n FROM chat_reads WHERE conv = ?", (conv_id,))

        def look(conn: sqlite3.Connection) -> tuple[Any, ...]:
            return tuple(None if q is None else q(conn) for q in (reactions, deliveries, reads))

        found = await self.db.read(look)
        counts: dict[str, dict[str, int]] = {}
        for r in found[1] or ():
            counts.setdefault(r["msg"], {})[r["state"]] = r["k"]
        return Marks(
            self._opened_reactions(conv_id, found[0] or []),
            counts,
            [r["n"] for r in found[2] or ()],
        )

    def _opened_reactions(
        self, conv_id: str, rows: list[sqlite3.Row]
    ) -> dict[str, dict[str, list[str]]]:
        return {
            r["msg"]: self.box.open_json(r["data"], context=f"react {conv_id} {r['msg']}")
            for r in rows
        }

    async def keep_reactions(self, conv_id: str, msg: str, found: dict[str, list[str]]) -> None:
        data = self.box.seal_json(found, context=f"react {conv_id} {msg}")
        await self.db.execute(
            "INSERT INTO chat_reactions (conv, msg, data) VALUES (?,?,?)"
            " ON CONFLICT (conv, msg) DO UPDATE SET data = excluded.data",
            (conv_id, msg, data),
        )

    def _reader(self, conv_id: str, who: str) -> str:
        # a member's did is not kept in clear: a keyed hash, a different one in each conversation
        return self.box.blind(f"reader {conv_id} {who}")

    async def read_by(self, conv_id: str, who: str) -> int:
        key = (conv_id, who)
        if key not in self._read_marks:
            n = await self.db.fetchval(
                "SELECT n FROM chat_reads WHERE conv = ? AND who = ?",
                (conv_id, self._reader(conv_id, who)),
            )
            self._read_marks[key] = int(n or 0)
        return self._read_marks[key]

    def keep_read(self, conv_id: str, who: str, n: int) -> None:
        """Note a read mark (written with the next batch: it moves no live stream)."""
        key = (conv_id, who)
        self._read_marks[key] = max(n, self._read_marks.get(key, 0))
        self.db.enqueue(
            "INSERT INTO chat_reads (conv, who, n) VALUES (?,?,?)"
            " ON CONFLICT (conv, who) DO UPDATE SET n = max(n, excluded.n)",
            (conv_id, self._reader(conv_id, who), n),
        )

    async def my_last(self, conv_id: str) -> int:
        """The counter of this twin's latest message in a conversation (0: none)."""
        if conv_id not in self._my_last:
            n = await self.db.fetchval(
                "SELECT max(n) FROM chat_messages WHERE conv = ? AND mine = 1", (conv_id,)
            )
            self._my_last[conv_id] = int(n or 0)
        return self._my_last[conv_id]

    async def sent(self, rows: list[tuple[str, str, str]]) -> None:
        """Note the envelopes that carry one of this twin's messages: (envelope, conv, msg)."""
        await self.db.executemany(
            "INSERT OR IGNORE INTO chat_sent (envelope, conv, msg, state) VALUES (?,?,?,'queued')",
            rows,
        )

    async def deliveries_changed(
        self, states: Mapping[str, str]
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """Write new delivery states (by envelope); the (conversation, message) pairs whose
        ticks change, and the envelopes not written down yet."""
        rows = []
        ids = list(states)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            rows += await self.db.fetchall(
                "SELECT envelope, conv, msg, state FROM chat_sent WHERE envelope IN"
                f" ({','.join('?' * len(part))})",
                part,
            )
        found = {row["envelope"] for row in rows}
        changes = [
            row for row in rows if row["state"] not in (states[row["envelope"]], "delivered")
        ]
        if changes:
            await self.db.executemany(
                "UPDATE chat_sent SET state = ? WHERE envelope = ?",
                [(states[row["envelope"]], row["envelope"]) for row in changes],
            )
        missing = [e for e in ids if e not in found]
        return [(row["conv"], row["msg"]) for row in changes], missing

    # waiting for a group ------------------------------------------------------------------

    async def wait(self, conv_id: str, item: dict[str, Any]) -> None:
        count = await self.db.fetchval("SELECT count(*) FROM chat_waiting")
        if count >= MAX_WAITING:
            await self.db.execute(
                "DELETE FROM chat_waiting WHERE id = (SELECT min(id) FROM chat_waiting)"
            )
        await self.db.execute(
            "INSERT INTO chat_waiting (conv, data, received) VALUES (?,?,?)",
            (conv_id, self.box.seal_json(item, context="waiting " + conv_id), time.time()),
        )

    async def waiting(self, conv_id: str) -> list[tuple[int, dict[str, Any]]]:
        rows = await self.db.fetchall(
            "SELECT id, data FROM chat_waiting WHERE conv = ? ORDER BY id", (conv_id,)
        )
        return [
            (r["id"], self.box.open_json(r["data"], context="waiting " + conv_id)) for r in rows
        ]

    async def done_waiting(self, row_id: int) -> None:
        await self.db.execute("DELETE FROM chat_waiting WHERE id = ?", (row_id,))

    async def purge_waiting(self, before: float) -> None:
        await self.db.execute("DELETE FROM chat_waiting WHERE received < ?", (before,))

    # search -------------------------------------------------------------------------------

    async def search(self, query: str, conv_id: str | None) -> tuple[list[Message], bool]:
        """The latest messages holding every word of ``query`` (as a word or its start), and
        whether the search looked at every candidate: it opens at most SEARCH_CANDIDATES of
        the latest ones, for at most SEARCH_SECONDS (a rare word that begins like a common
        one: "thermocline" among thousands of "the")."""
        wanted = words(query)[:8]
        if not wanted:
            return [], True
        await self.index_pending()  # what was just written is found too
        # the index holds each word's first three letters: a shorter word of the search is
        # only checked in what the longer ones find (alone, it finds itself as a whole word)
        long = [w for w in wanted if len(w) >= PREFIX]
        tokens = sorted({self.token(w[:PREFIX]) for w in long or wanted})
        marks = ",".join("?" * len(tokens))
        where = f"token IN ({marks})" + (" AND conv = ?" if conv_id else "")
        params: list[Any] = [*tokens] + ([conv_id] if conv_id else [])
        deadline = time.monotonic() + SEARCH_SECONDS
        found: list[Message] = []
        seen = 0
        for limit in (500, SEARCH_CANDIDATES):  # most searches end in the first few hundred
            rows = await self.db.fetchall(
                f"SELECT conv, msg FROM chat_words WHERE {where} GROUP BY conv, msg"
                " HAVING count(*) = ? ORDER BY max(at) DESC LIMIT ?",
                (*params, len(tokens), limit + 1),
            )
            for start in range(seen, min(len(rows), limit), 100):
                if time.monotonic() > deadline:
                    return found, False
                opened = await self._open_many(rows[start : start + 100])
                found += [m for m in opened if not m.deleted and matches(m.text, wanted, long)]
                if len(found) >= SEARCH_LIMIT:
                    return found[:SEARCH_LIMIT], True
            if len(rows) <= limit:
                return found, True
            seen = limit
        return found, False

    async def _open_many(self, keys: list[Any]) -> list[Message]:
        """The messages named by (conv, msg) rows, in their order, in one query."""
        marks = ",".join("(?,?)" for _ in keys)
        flat = [v for row in keys for v in (row["conv"], row["msg"])]
        rows = await self.db.fetchall(
            f"SELECT * FROM chat_messages WHERE (conv, id) IN (VALUES {marks})", flat
        )
        by_key = {(r["conv"], r["id"]): r for r in rows}
        return [
            self._message(by_key[(k["conv"], k["msg"])])
            for k in keys
            if (k["conv"], k["msg"]) in by_key
        ]
