"""Chat on loopback: messages a second from one `twin serve` through its API to another's live
stream, the latency of one message, one message to a group of 1,000 (999 members simulated by
one process, bench/chat_members.py), and search over 100,000 messages.

    python bench/chat.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from _procs import BENCH, HOST, Server, bench_token, clean_env, free_port, get, twin_serve
from _wire import Connection, Stream, request_bytes, wait_readable
from chat_members import member
from peers import Failed, Twin, _connect, _fmt, _loadavg, _until, _verdict, percentile

BURST = 3_000  # messages posted as fast as the sender's API takes them
CLIENTS = 4  # API clients posting at once in the burst
BURSTS = 3  # bursts one after the other: the figures are the median one's (the machine is shared)
SERIAL = 300  # messages posted one at a time, each once the one before is on the stream
PACED = ((200.0, 1_000), (100.0, 500))  # (messages a second, how many) for the paced figures
PACED_CLIENTS = 8  # connections the paced run may use when a reply is slow
WARM_UP = 30
SERIES_LIMIT = 90.0  # seconds at most for one series
LATE_MS = 5.0  # a paced message sent this much after its time counts as late
MEMBERS = 999  # the other members of the group: with the sender, 1,000
FAN_OUT_ROUNDS = 3
GROUP_LIMIT = 300.0  # seconds at most for the group's creation to reach every member
FAN_OUT_LIMIT = 120.0
SENDER_GRACE = 5.0  # seconds the sender's delivered count may stand still before we stop looking
HISTORY = 100_000  # messages in the search part
CONVERSATIONS = 20  # they are spread over
FILL_BATCH = 500  # messages added at once through the chat Store
PLANTED = 20  # messages holding each rare word
SEARCH_RUNS = 5
SEARCH_LIMIT = 15.0  # seconds at most for the runs of one query (and for one run)
TARGET_RATE = 500.0  # messages a second
TARGET_P50_MS = 20.0
SYNAPSE_RATE = 90.0  # what a Synapse homeserver manages in one room, from the issue
SYNAPSE_P50_MS = 170.0
_MARK = re.compile(r"#(\d+)-(\d+)$")


# text ---------------------------------------------------------------------------------------

# The words of everyday chat, most frequent first; the long tail is the BIP-39 English list.
COMMON = (
    "the i you to a and it is that of in for we on this be so just have my can but with "
    "not are it's was do what at me if all get will your like know about up out there they "
    "ok then one now think good time how see going go when would yes no really here some "
    "back can't today need make let tomorrow sure thanks work call right meeting later "
    "still well also been did from them new people day week morning tonight send home "
    "photo looks great love maybe soon sorry yeah nice home lunch dinner train running"
).split()
RARE_UNIQUE = "xylophone"  # a rare word whose first three letters no other word shares
RARE_SHARED = "thermocline"  # a rare word that starts like "the", "then", "there", "they"


class Words:
    """Chat-like sentences: Zipf-distributed words, 3 to 24 of them, from one seed."""

    def __init__(self, seed: int) -> None:
        from mnemonic import Mnemonic

        self.rng = random.Random(seed)
        tail = [w for w in Mnemonic("english").wordlist if w not in COMMON]
        self.vocabulary = list(dict.fromkeys(COMMON)) + tail
        weights = [1 / (rank + 1) ** 1.07 for rank in range(len(self.vocabulary))]
        total = 0.0
        self.cumulative = []
        for weight in weights:
            total += weight
            self.cumulative.append(total)

    def sentence(self) -> str:
        count = self.rng.randint(3, 24)
        chosen = self.rng.choices(self.vocabulary, cum_weights=self.cumulative, k=count)
        text = " ".join(chosen)
        return text[0].upper() + text[1:] + self.rng.choice(".!?" + "." * 5)


# a. and b.: two twins, a direct conversation ------------------------------------------------


@dataclass
class Sample:
    """One message: bench clock (perf_counter) when its POST went out, its reply came, and its
    event came on the receiver's stream."""

    sent: float = math.nan
    replied: float = math.nan
    seen: float = math.nan
    status: int = 0


@dataclass
class Series:
    label: str
    samples: list[Sample]
    cpu: dict[str, float] = field(default_factory=dict)  # seconds each twin used in the run
    late: int = 0
    settled: bool = True
    rate_asked: float = 0.0  # paced: messages a second

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def seen(self) -> int:
        return sum(1 for s in self.samples if not math.isnan(s.seen))

    @property
    def errors(self) -> int:
        return sum(1 for s in self.samples if s.status and s.status != 201)

    def _rate(self, ends: list[float]) -> float:
        began = min((s.sent for s in self.samples if not math.isnan(s.sent)), default=math.nan)
        done = [e for e in ends if not math.isnan(e)]
        if not done or len(done) < len(ends) or max(done) <= began:
            return math.nan
        return len(done) / (max(done) - began)

    @property
    def rate(self) -> float:
        """Messages a second from the first POST to the last event on the stream."""
        return self._rate([s.seen for s in self.samples])

    @property
    def api_rate(self) -> float:
        return self._rate([s.replied for s in self.samples])

    def latency(self, q: float) -> float:
        """From sending the POST to the event on the receiver's stream, in ms."""
        return percentile([(s.seen - s.sent) * 1e3 for s in self.samples if s.seen == s.seen], q)

    def api(self, q: float) -> float:
        """From sending the POST to its reply, in ms."""
        values = [(s.replied - s.sent) * 1e3 for s in self.samples if s.replied == s.replied]
        return percentile(values, q)


class Events:
    """The receiver's live stream (`GET /api/chat/stream`), opened where it stands now; each
    read gives the (run, index) of the messages whose first event arrived."""

    def __init__(self, twin: Twin) -> None:
        seq = twin.call("GET", "/api/chat/conversations")["seq"]
        headers = {"Authorization": f"Bearer {twin.token}", "Accept": "text/event-stream"}
        self.stream = Stream(twin.port, f"/api/chat/stream?since={seq}", headers, timeout=30)
        self.buffer = b""
        self.kinds: dict[str, int] = {}
        self.bytes = 0
        self.ready = False
        self.known: set[tuple[int, int]] = set()
        deadline = time.monotonic() + 15
        while not self.ready and time.monotonic() < deadline:
            if self.stream.readable(0.5):
                self.read()
        if not self.ready:
            raise Failed("the receiver's live stream never said it was ready")

    @property
    def sock(self) -> Any:
        return self.stream.sock

    def read(self) -> list[tuple[int, int]]:
        payload = self.stream.feed()
        self.bytes += len(payload)
        self.buffer += payload
        *events, self.buffer = self.buffer.split(b"\n\n")
        found = []
        for event in events:
            kind, data = "", b""
            for line in event.split(b"\n"):
                if line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: "):
                    data = line[6:]
            if not kind:
                continue
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if kind == "ready":
                self.ready = True
            elif kind == "message":
                view = json.loads(data)
                mark = _MARK.search(view.get("text", ""))
                if mark is not None and not view.get("mine"):
                    key = (int(mark[1]), int(mark[2]))
                    if key not in self.known:
                        self.known.add(key)
                        found.append(key)
        return found

    def close(self) -> None:
        self.stream.close()


def _series(
    label: str,
    sender: Twin,
    receiver: Twin,
    events: Events,
    conv: str,
    run: int,
    count: int,
    words: Words,
    *,
    clients: int = 1,
    rate: float = 0.0,
    serial: bool = False,
) -> Series:
    """Post ``count`` messages into ``conv`` through the sender's API and stamp each one's
    reply and its arrival on the receiver's stream, all on this thread with ``select``."""
    texts = [f"{words.sentence()} #{run}-{i}" for i in range(count)]
    samples = [Sample() for _ in range(count)]
    conns = [Connection(sender.port, timeout=SERIES_LIMIT) for _ in range(clients)]
    for conn in conns:
        conn.open()
    busy: dict[int, int] = {}  # connection's place in conns: index of the message it carries
    by_sock = {conn.sock: place for place, conn in enumerate(conns)}
    path = f"/api/chat/conversations/{conv}/messages"
    headers = {"Authorization": f"Bearer {sender.token}", "Content-Type": "application/json"}
    cpu = {sender.name: sender.cpu_seconds(), receiver.name: receiver.cpu_seconds()}
    next_i = seen = replied = late = 0
    began = time.perf_counter()
    deadline = began + SERIES_LIMIT
    try:
        while (seen < count or replied < count) and time.perf_counter() < deadline:
            now = time.perf_counter()
            while next_i < count and len(busy) < clients:
                if serial and next_i and (seen < next_i or replied < next_i):
                    break
                due = began + next_i / rate if rate else now
                if due > now:
                    break
                place = next(p for p in range(clients) if p not in busy)
                body = json.dumps({"text": texts[next_i]}).encode()
                samples[next_i].sent = time.perf_counter()
                if rate and (samples[next_i].sent - due) * 1e3 > LATE_MS:
                    late += 1
                conns[place].send(request_bytes(sender.port, "POST", path, headers, body))
                busy[place] = next_i
                next_i += 1
            wait = 0.5
            if rate and next_i < count:
                wait = max(0.0, min(wait, began + next_i / rate - time.perf_counter()))
            socks = [conns[p].sock for p in busy] + [events.sock]
            for sock in wait_readable(socks, wait):
                stamp = time.perf_counter()
                if sock is events.sock:
                    for got_run, index in events.read():
                        if got_run == run and 0 <= index < count:
                            samples[index].seen = stamp
                            seen += 1
                    continue
                place = by_sock[sock]
                response = conns[place].feed()
                if response is not None:
                    index = busy.pop(place)
                    samples[index].replied = stamp
                    samples[index].status = response.status
                    replied += 1
    finally:
        for conn in conns:
            conn.close()
    used = {
        sender.name: sender.cpu_seconds() - cpu[sender.name],
        receiver.name: receiver.cpu_seconds() - cpu[receiver.name],
    }
    settled = seen == count and replied == count
    return Series(label, samples, used, late, settled, rate)


@dataclass
class Direct:
    connect_seconds: float = math.nan
    series: dict[str, Series] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)  # MiB, after the runs
    rss_idle: dict[str, float] = field(default_factory=dict)
    stream_kinds: dict[str, int] = field(default_factory=dict)
    stream_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _chat_twin(scratch: Path, name: str) -> Twin:
    data_dir, port = scratch / name, free_port()
    token = bench_token(data_dir, "*")
    return Twin(
        name,
        data_dir,
        port,
        token,
        [*twin_serve(data_dir, port), "--public-url", f"http://{HOST}:{port}"],
        clean_env(TWIN_RATE_LIMIT="0"),
        scratch,
    )


def measure_direct(scratch: Path, quick: bool, into: Direct) -> None:
    scale = 2 if quick else 1
    words = Words(1)
    a, b = _chat_twin(scratch, "sender"), _chat_twin(scratch, "receiver")
    try:
        a.start()
        b.start()
        for twin, display in ((a, "Ada Lovelace"), (b, "Charles Babbage")):
            twin.call("PUT", "/api/profile", {"display_name": display})
            into.rss_idle[twin.name] = twin.rss_mib()
        into.connect_seconds = _connect(a, b)
        conv = a.call("POST", "/api/chat/conversations", {"with": b.did})["id"]
        events = Events(b)
        try:
            runs: list[tuple[str, int, dict[str, Any]]] = [
                ("warm-up", WARM_UP, {"clients": 1}),
                *[(f"burst {k}", BURST // scale, {"clients": CLIENTS}) for k in range(BURSTS)],
                ("serial", SERIAL // scale, {"serial": True}),
            ]
            runs += [
                (f"paced {rate:g}", count // scale, {"rate": rate, "clients": PACED_CLIENTS})
                for rate, count in PACED
            ]
            for run, (label, count, options) in enumerate(runs, start=1):
                found = _series(label, a, b, events, conv, run, count, words, **options)
                into.series[label] = found
                if not found.settled:
                    into.notes.append(
                        f"{label}: {found.seen:,} of {found.count:,} on the stream and "
                        f"{sum(1 for s in found.samples if s.replied == s.replied):,} replies "
                        f"within {SERIES_LIMIT:g} s"
                    )
                if found.errors:
                    into.notes.append(f"{label}: {found.errors} replies were not 201")
            into.stream_kinds = dict(events.kinds)
            into.stream_bytes = events.bytes
        finally:
            events.close()
        into.rss = {a.name: a.rss_mib(), b.name: b.rss_mib()}
    finally:
        a.stop()
        b.stop()
    into.notes += _log_notes(a) + _log_notes(b)


def _log_notes(twin: Twin) -> list[str]:
    text = "".join(log.read_text(errors="replace") for log in twin.logs if log.exists())
    kinds = {
        "tracebacks": "Traceback (most recent call last)",
        "waits after a 429": "answered 429",
        "errors": " ERROR ",
    }
    found = [f"{text.count(needle):,} {what}" for what, needle in kinds.items() if needle in text]
    return [f"{twin.name} log: " + "; ".join(found)] if found else []


# c.: a group of 1,000 ------------------------------------------------------------------------


@dataclass
class Round:
    queue_seconds: float = math.nan  # the POST of the message, until its reply
    members_seconds: float = math.nan  # from the POST to the last envelope at the members
    sender_seconds: float = math.nan  # from the POST until the sender shows every tick
    delivered: int = 0
    recipients: int = 0
    envelopes: int = 0
    cpu_seconds: float = math.nan  # the sender's, from the POST until the last member got it


@dataclass
class Group:
    members: int = 0
    setup_seconds: float = math.nan  # pinning and adding the members in process
    announce_seconds: float = math.nan  # the sender's start until every member had its address
    create_seconds: float = math.nan  # POST /api/chat/groups until its reply
    created_seconds: float = math.nan  # ... until every chat.group envelope reached the members
    group_envelopes: int = 0
    group_bytes: int = 0
    rounds: list[Round] = field(default_factory=list)
    cpu_ms: float = math.nan  # the sender's CPU per envelope in the fan-out rounds
    rss_sender: float = math.nan
    rss_sender_hwm: float = math.nan
    rss_members: float = math.nan
    db_mib: float = math.nan
    notes: list[str] = field(default_factory=list)


async def _pin_members(data_dir: Path, url: str, count: int) -> None:
    """In the sender's own process, before it serves: pin ``count`` simulated members (each
    with an address hint it signed, naming the members' process) and make each a connected
    contact, as the contacts invite flow would have left them."""
    from twin.core import Twin as Core
    from twin.peers import address_hint
    from twin.registry import find_sources
    from twin.settings import Settings

    core = await Core.open(Settings(data_dir=data_dir, rate_limit=0))
    try:
        await core.start(find_sources())
        contacts: Any = core.registry.loaded["contacts"].capability
        await core.peers.directory.all()
        await contacts.book.all()  # both loaded once, before the adds below run side by side
        for start in range(0, count, 100):
            people = [(i, member(i)) for i in range(start, min(count, start + 100))]
            hints = [(p.did, address_hint(p, [url])) for _, p in people]
            await asyncio.gather(*(core.peers.pin(did, hint) for did, hint in hints))
            await asyncio.gather(
                *(contacts.book.add(p.did, "connected", f"Member {i}") for i, p in people)
            )
    finally:
        await core.stop()


def _json_call(
    twin: Twin, method: str, path: str, body: object = None, timeout: float = 60.0
) -> Any:
    headers = {"Authorization": f"Bearer {twin.token}"}
    raw = b""
    if body is not None:
        raw = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    with Connection(twin.port, timeout=timeout) as conn:
        response = conn.request(method, path, headers, raw)
    if response.status >= 400:
        raise Failed(f"{method} {path} answered {response.status}: {response.body[:300]!r}")
    return json.loads(response.body) if response.body else None


def measure_group(scratch: Path, quick: bool, into: Group) -> None:
    count = MEMBERS
    into.members = count
    members_port = free_port()
    members = Server.spawn(
        "members",
        [sys.executable, str(BENCH / "chat_members.py"), "--port", str(members_port),
         "--count", str(count)],
        members_port,
        scratch / "members.log",
    )  # fmt: skip
    a = _chat_twin(scratch, "group-sender")
    try:
        members.wait_healthy(path="/health")

        def stats() -> dict[str, Any]:
            found: dict[str, Any] = json.loads(get(members_port, "/stats")[1])["types"]
            return found

        def of(kind: str) -> dict[str, Any]:
            return stats().get(kind) or {"count": 0, "recipients": 0, "last": 0.0, "bytes": 0}

        began = time.monotonic()
        asyncio.run(_pin_members(a.data_dir, f"http://{HOST}:{members_port}", count))
        into.setup_seconds = time.monotonic() - began
        began = time.monotonic()
        a.start()
        if not _until(lambda: of("twin.address")["recipients"] >= count, 60, 0.05):
            into.notes.append("the sender's address did not reach every member within 60 s")
        into.announce_seconds = time.monotonic() - began
        dids = [member(i).did for i in range(count)]
        began = time.monotonic()
        group = _json_call(
            a, "POST", "/api/chat/groups", {"name": "Everyone", "members": dids}, GROUP_LIMIT
        )
        into.create_seconds = time.monotonic() - began
        created_at = time.time() - into.create_seconds
        # every member gets the log and every member's address, in pieces of 200 addresses
        pieces = math.ceil((count + 1) / 200)
        expected = count * pieces
        if not _until(lambda: of("chat.group")["count"] >= expected, GROUP_LIMIT, 0.1):
            into.notes.append(
                f"the group reached {of('chat.group')['count']:,} of {expected:,} "
                f"chat.group envelopes within {GROUP_LIMIT:g} s"
            )
        made = of("chat.group")
        into.group_envelopes, into.group_bytes = made["count"], made["bytes"]
        into.created_seconds = made["last"] - created_at if made["last"] else math.nan
        words = Words(2)
        path = f"/api/chat/conversations/{group['id']}/messages"
        for _ in range(FAN_OUT_ROUNDS - (1 if quick else 0)):
            into.rounds.append(_fan_out(a, path, words, count, of))
        envelopes = sum(r.envelopes for r in into.rounds)
        if envelopes:
            into.cpu_ms = sum(r.cpu_seconds for r in into.rounds) * 1e3 / envelopes
        if any(r.delivered < r.recipients for r in into.rounds):
            into.notes.append(_states(a.data_dir))
        into.rss_sender = a.rss_mib()
        assert a.server is not None
        into.rss_sender_hwm = a.server.memory_kib()["VmHWM"] / 1024
        into.rss_members = members.memory_kib()["VmRSS"] / 1024
        into.db_mib = _db_size(a.data_dir) / 2**20
    finally:
        a.stop()
        members.stop()
    into.notes += _log_notes(a)


def _fan_out(
    a: Twin, path: str, words: Words, count: int, of: Callable[[str], dict[str, Any]]
) -> Round:
    """Post one message into the group and time it to every member; then watch the sender's
    own view of the message until it shows every delivery or stops moving."""
    found = Round()
    before = of("chat.message")["count"]
    cpu = a.cpu_seconds()
    sent_at = time.time()
    began = time.monotonic()
    message = _json_call(a, "POST", path, {"text": words.sentence()}, FAN_OUT_LIMIT)
    found.queue_seconds = time.monotonic() - began
    deadline = began + FAN_OUT_LIMIT

    def arrived() -> bool:
        got = of("chat.message")
        found.envelopes = got["count"] - before
        if found.envelopes >= count:
            found.members_seconds = got["last"] - sent_at
        return found.envelopes >= count

    _until(arrived, max(0.0, deadline - time.monotonic()), 0.02)
    found.cpu_seconds = a.cpu_seconds() - cpu
    moved = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - moved < SENDER_GRACE:
        latest = _json_call(a, "GET", path + "?limit=1")["messages"][-1]
        if latest["id"] == message["id"]:
            if latest["delivered"] != found.delivered:
                moved = time.monotonic()
            found.delivered, found.recipients = latest["delivered"], latest["recipients"]
            if found.recipients and found.delivered >= found.recipients:
                found.sender_seconds = time.monotonic() - began
                break
        time.sleep(0.05)
    return found


def _states(data_dir: Path) -> str:
    """The sender's own record of deliveries, read from its database (read-only) while it
    runs: the outbox's states next to chat's per-message ones."""
    try:
        with sqlite3.connect(f"file:{data_dir / 'twin.db'}?mode=ro", uri=True) as conn:
            outbox = conn.execute("SELECT state, count(*) FROM twin_outbox GROUP BY state")
            out = ", ".join(f"{n:,} {state}" for state, n in outbox.fetchall())
            sent = conn.execute("SELECT state, count(*) FROM chat_sent GROUP BY state")
            chat = ", ".join(f"{n:,} {state}" for state, n in sent.fetchall())
    except sqlite3.Error as exc:
        return f"the sender's database could not be read: {exc}"
    return f"the sender's outbox holds {out}; its chat_sent rows: {chat}"


def _db_size(data_dir: Path) -> int:
    return sum(
        p.stat().st_size for p in data_dir.iterdir() if p.name.startswith("twin.db") and p.is_file()
    )


# d.: search over 100,000 messages -----------------------------------------------------------


@dataclass
class Query:
    label: str
    text: str
    inside: list[float] = field(default_factory=list)  # Store.search, in process, seconds
    http: list[float] = field(default_factory=list)  # GET /api/chat/search, seconds
    found: int = 0
    gave_up: list[str] = field(default_factory=list)  # "store", "http": a run over SEARCH_LIMIT


@dataclass
class History:
    count: int = 0
    fill_seconds: float = math.nan
    queries: list[Query] = field(default_factory=list)
    db_bytes: int = 0
    tables: dict[str, int] = field(default_factory=dict)  # bytes per table and index (dbstat)
    unread: int = 0  # in the busiest conversation
    listing: list[float] = field(default_factory=list)  # GET /api/chat/conversations, seconds
    page: list[float] = field(default_factory=list)  # GET …/messages (50), seconds
    rss: float = math.nan
    notes: list[str] = field(default_factory=list)


def _queries(words: Words) -> list[Query]:
    """What is searched for, the slowest last (a run of it may be given up)."""
    tail = words.vocabulary[len(COMMON) :]
    return [
        Query("a rare word (a 3-letter prefix of its own)", RARE_UNIQUE),
        Query("a common word", "the"),
        Query("two words", f"{tail[3]} {tail[9]}"),
        Query("a rare word whose prefix 'the' is common", RARE_SHARED),
    ]


async def _fill(data_dir: Path, count: int, queries: list[Query], words: Words) -> float:
    """Fill the chat tables through the chat Store in process; time Store.search for each
    query; the seconds the fill took."""
    from twin_capabilities.chat import Conversation, Message, direct_id

    from twin.core import Twin as Core
    from twin.identity import b64url
    from twin.registry import find_sources
    from twin.settings import Settings

    core = await Core.open(Settings(data_dir=data_dir, rate_limit=0))
    try:
        await core.start(find_sources())
        chat: Any = core.registry.loaded["chat"].capability
        store = chat.store
        me = core.did
        others = [member(10_000 + i).did for i in range(CONVERSATIONS)]
        start = time.time() - count * 60.0  # one message a minute, up to now
        convs = [
            Conversation(direct_id(me, o), "direct", "", [me, o], [], start, start) for o in others
        ]
        for conv in convs:
            await store.save(conv)
        # uneven, as conversations are: the first holds about a third of the messages
        weights = [1 / (rank + 1) for rank in range(CONVERSATIONS)]
        rng = random.Random(3)
        planted = {
            q.text: set(rng.sample(range(count), PLANTED))
            for q in queries
            if q.text in (RARE_UNIQUE, RARE_SHARED)
        }
        counters = [0] * CONVERSATIONS
        began = time.monotonic()
        for first in range(0, count, FILL_BATCH):
            batch = []
            for i in range(first, min(count, first + FILL_BATCH)):
                place = rng.choices(range(CONVERSATIONS), weights=weights)[0]
                counters[place] += 1
                text = words.sentence()
                for word, where in planted.items():
                    if i in where:
                        text = f"{text[:-1]} {word}{text[-1]}"
                mine = rng.random() < 0.45
                at = start + i * 60.0
                batch.append(
                    Message(
                        convs[place].id,
                        b64url(rng.randbytes(12)),
                        counters[place],
                        me if mine else others[place],
                        mine,
                        at,
                        at,
                        text,
                    )
                )
            await asyncio.gather(*(store.add(m) for m in batch))
        for place, (conv, n) in enumerate(zip(convs, counters, strict=True)):
            # the owner read everything but the second half of the busiest conversation
            read = n // 2 if place == 0 else n
            await store.save(
                replace(conv, n=n, read_n=read, updated=start + count * 60), sealed=False
            )
        await store.index_pending()  # the search index, written in bulk as a twin does
        await core.db.flush()
        took = time.monotonic() - began
        for query in queries:
            spent = time.monotonic()
            while len(query.inside) < SEARCH_RUNS and time.monotonic() - spent < SEARCH_LIMIT:
                began = time.perf_counter()
                try:
                    found, _ = await asyncio.wait_for(store.search(query.text, None), SEARCH_LIMIT)
                except TimeoutError:
                    query.gave_up.append("store")
                    break
                query.inside.append(time.perf_counter() - began)
                query.found = len(found)
        return took
    finally:
        await core.stop()


def _dbstat(path: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.Error:
        return {}
    return {name: int(size) for name, size in rows if name.startswith("chat_")}


def measure_history(scratch: Path, quick: bool, into: History) -> None:
    into.count = HISTORY // 5 if quick else HISTORY
    words = Words(4)
    into.queries = _queries(words)
    a = _chat_twin(scratch, "history")
    into.fill_seconds = asyncio.run(_fill(a.data_dir, into.count, into.queries, words))
    into.db_bytes = _db_size(a.data_dir)
    into.tables = _dbstat(a.data_dir / "twin.db")
    headers = {"Authorization": f"Bearer {a.token}"}

    def timed(conn: Connection, path: str) -> tuple[float, Any]:
        began = time.perf_counter()
        response = conn.request("GET", path, headers)
        took = time.perf_counter() - began
        if response.status != 200:
            raise Failed(f"GET {path} answered {response.status}: {response.body[:200]!r}")
        return took, json.loads(response.body)

    try:
        a.start()
        with Connection(a.port, timeout=SEARCH_LIMIT) as conn:
            timed(conn, "/api/chat/search?q=warm")  # the conversations loaded
            for _ in range(SEARCH_RUNS):
                took, listing = timed(conn, "/api/chat/conversations")
                into.listing.append(took)
            busiest = max(listing["conversations"], key=lambda c: c["unread"])
            into.unread = busiest["unread"]
            for _ in range(SEARCH_RUNS):
                took, _ = timed(conn, f"/api/chat/conversations/{busiest['id']}/messages")
                into.page.append(took)
            for query in into.queries:
                path = "/api/chat/search?" + urllib.parse.urlencode({"q": query.text})
                spent = time.monotonic()
                while len(query.http) < SEARCH_RUNS and time.monotonic() - spent < SEARCH_LIMIT:
                    try:
                        took, found = timed(conn, path)
                    except TimeoutError:
                        query.gave_up.append("http")
                        break
                    query.http.append(took)
                    query.found = len(found["messages"])
                if query.gave_up:
                    break  # the twin is still at it: nothing after would be measured fairly
        into.rss = a.rss_mib()
    finally:
        a.stop()
    into.notes += _log_notes(a)


# all of it ----------------------------------------------------------------------------------


@dataclass
class Result:
    direct: Direct = field(default_factory=Direct)
    group: Group = field(default_factory=Group)
    history: History = field(default_factory=History)
    seconds: dict[str, float] = field(default_factory=dict)
    load_before: str = ""
    load_after: str = ""
    notes: list[str] = field(default_factory=list)


PARTS = ("direct", "group", "history")


def measure(scratch: Path, quick: bool = False, only: tuple[str, ...] = PARTS) -> Result:
    result = Result(load_before=_loadavg())
    began = time.monotonic()
    parts: list[tuple[str, Callable[[], None]]] = [
        ("direct", lambda: measure_direct(scratch, quick, result.direct)),
        ("group", lambda: measure_group(scratch, quick, result.group)),
        ("history", lambda: measure_history(scratch, quick, result.history)),
    ]
    for name, run in parts:
        if name not in only:
            continue
        started = time.monotonic()
        try:
            run()
        except (Failed, OSError, RuntimeError) as exc:
            result.notes.append(f"{name}: stopped: {type(exc).__name__}: {exc}")
        result.seconds[name] = time.monotonic() - started
    result.seconds["all"] = time.monotonic() - began
    result.load_after = _loadavg()
    return result


# the report ---------------------------------------------------------------------------------


def _median(values: list[float], scale: float = 1.0) -> float:
    return statistics.median(values) * scale if values else math.nan


Row = tuple[str, str, str, str]


def _direct_rows(d: Direct) -> list[Row]:
    rows: list[Row] = []
    bursts = sorted(
        (found for label, found in d.series.items() if label.startswith("burst")),
        key=lambda found: found.rate if found.rate == found.rate else -1.0,
    )
    if bursts:
        burst = bursts[(len(bursts) - 1) // 2]  # the median (the lower one of an even count)
        cpu = {name: 1e3 * used / burst.count for name, used in burst.cpu.items()}
        each = " / ".join(_fmt(found.rate) for found in bursts)
        rows += [
            (f"a. {burst.count:,} posted by {CLIENTS} clients: on the stream/s",
             _fmt(burst.rate), f">= {TARGET_RATE:,.0f}; Synapse {SYNAPSE_RATE:g}",
             _verdict(burst.rate, TARGET_RATE)),
            (f"   the median of {len(bursts)} bursts, each", each, "", ""),
            ("   answered by the sender's API/s", _fmt(burst.api_rate), "", ""),
            ("   API reply p50 / p99, ms", _fmt(burst.api(50), 1), f"p99 {_fmt(burst.api(99), 1)}",
             ""),
            ("   POST to stream p50 / p99, ms (queueing)", _fmt(burst.latency(50), 1),
             f"p99 {_fmt(burst.latency(99), 1)}", ""),
            ("   CPU ms a message: sender", _fmt(cpu.get("sender"), 2),
             f"receiver {_fmt(cpu.get('receiver'), 2)}", ""),
        ]  # fmt: skip
    paced = [(k, f"at {found.rate_asked:g}/s") for k, found in d.series.items() if found.rate_asked]
    for label, title in [("serial", "one at a time"), *paced]:
        found = d.series.get(label)
        if found is None:
            continue
        p50 = found.latency(50)
        rows += [
            (f"b. {title} ({found.count:,}): POST to stream p50, ms", _fmt(p50, 1),
             f"< {TARGET_P50_MS:g}; Synapse {SYNAPSE_P50_MS:g}",
             _verdict(p50, TARGET_P50_MS, below=True)),
            ("   p99 / max, ms", _fmt(found.latency(99), 1), f"max {_fmt(found.latency(100), 1)}",
             ""),
            ("   API reply p50 / p99, ms", _fmt(found.api(50), 1), f"p99 {_fmt(found.api(99), 1)}",
             ""),
        ]  # fmt: skip
        if found.rate_asked:
            rows.append(("   sent late (> 5 ms after its time)", _fmt(found.late), "", ""))
    return rows


def _group_rows(g: Group) -> list[Row]:
    if not g.members:
        return []
    rows: list[Row] = [
        (f"c. group of {g.members + 1:,}: pin and add {g.members} members in process, s",
         _fmt(g.setup_seconds, 1), "", ""),
        ("   the sender's address to every member, s", _fmt(g.announce_seconds, 1), "", ""),
        ("   POST /api/chat/groups (999 members), s", _fmt(g.create_seconds, 2), "", ""),
        ("   ... until its log reached every member, s", _fmt(g.created_seconds, 1),
         f"{g.group_envelopes:,} envelopes", f"{g.group_bytes / 2**20:,.0f} MiB of bodies"),
    ]  # fmt: skip
    for i, r in enumerate(g.rounds, start=1):
        rate = r.envelopes / r.members_seconds if r.members_seconds else math.nan
        rows += [
            (f"   message {i}: POST (queue the fan-out), s", _fmt(r.queue_seconds, 2), "", ""),
            ("      until the last member got it, s", _fmt(r.members_seconds, 2),
             f"{r.envelopes:,} envelopes", f"{_fmt(rate)}/s"),
            ("      until the sender shows all delivered, s", _fmt(r.sender_seconds, 2),
             f"{r.delivered}/{r.recipients}", ""),
        ]  # fmt: skip
    rows += [
        ("   sender CPU ms an envelope (fan-out rounds)", _fmt(g.cpu_ms, 2), "", ""),
        ("   RSS, MiB: sender (peak)", _fmt(g.rss_sender, 1),
         f"peak {_fmt(g.rss_sender_hwm, 1)}", f"members' process {_fmt(g.rss_members, 1)}"),
        ("   sender's database, MiB", _fmt(g.db_mib, 1), "", ""),
    ]  # fmt: skip
    return rows


def _history_rows(h: History) -> list[Row]:
    if not h.count:
        return []
    rows: list[Row] = [
        (f"d. {h.count:,} messages over {CONVERSATIONS} conversations: fill, s",
         _fmt(h.fill_seconds, 1), f"{h.count / h.fill_seconds:,.0f} msgs/s", ""),
        ("   database (twin.db and its WAL), MiB", _fmt(h.db_bytes / 2**20, 1), "", ""),
    ]  # fmt: skip
    if h.tables:
        words = sum(v for k, v in h.tables.items() if k.startswith("chat_words"))
        msgs = sum(v for k, v in h.tables.items() if k.startswith("chat_messages"))
        rows.append(("   of which the word index / messages, MiB", _fmt(words / 2**20, 1),
                     f"msgs {msgs / 2**20:,.1f}", ""))  # fmt: skip
    rows += [
        (f"   GET /api/chat/conversations p50, ms ({h.unread:,} unread)",
         _fmt(_median(h.listing, 1e3), 1), "", ""),
        ("   GET 50 messages of the busiest p50, ms", _fmt(_median(h.page, 1e3), 1), "", ""),
    ]  # fmt: skip
    for q in h.queries:
        http, inside = _fmt(_median(q.http, 1e3), 1), _fmt(_median(q.inside, 1e3), 1)
        over = f"> {SEARCH_LIMIT * 1e3:,.0f}"
        rows.append(
            (f"   search {q.label}: p50, ms", over if "http" in q.gave_up else http,
             f"Store {over if 'store' in q.gave_up else inside}",
             f"{q.found} found, {len(q.http)} runs")
        )  # fmt: skip
    rows.append(("   RSS after the searches, MiB", _fmt(h.rss, 1), "", ""))
    return rows


def report(result: Result) -> list[str]:
    rows = _direct_rows(result.direct) + _group_rows(result.group) + _history_rows(result.history)
    width = max(len(r[0]) for r in rows) + 2 if rows else 40
    lines = [f"{'figure':<{width}}{'value':>10}  {'more':<20} verdict"]
    lines += [f"{t:<{width}}{v:>10}  {m:<20} {d}".rstrip() for t, v, m, d in rows]
    d = result.direct
    lines.append("")
    if d.series:
        kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(d.stream_kinds.items()))
        lines += [
            f"the receiver's stream carried {kinds} ({d.stream_bytes / 2**20:,.1f} MiB)",
            "a./b.: two `twin serve`, contacts through the invite flow in "
            f"{_fmt(d.connect_seconds, 2)} s; RSS idle, MiB: "
            + ", ".join(f"{n} {v:.1f}" for n, v in d.rss_idle.items())
            + "; after the runs: "
            + ", ".join(f"{n} {v:.1f}" for n, v in d.rss.items()),
            "latency is from sending the POST to the message's first event on the receiver's "
            "live stream, both stamped by this script; TWIN_RATE_LIMIT=0 on the API",
        ]
    if result.group.members:
        lines.append(
            "c.: one `twin serve` sends; its 999 members are one process (bench/chat_members.py) "
            "that signs each member's receipt without opening the envelopes; 'until the last "
            "member got it' is from the POST to the last chat.message envelope there"
        )
    if result.history.count:
        lines.append(
            "d.: filled through chat's Store in process (sealed messages, blinded word index), "
            "then searched through GET /api/chat/search on `twin serve` and through "
            f"Store.search in process; a run over {SEARCH_LIMIT:g} s is given up"
        )
    lines += [
        *result.direct.notes,
        *result.group.notes,
        *result.history.notes,
        *result.notes,
        f"load average {result.load_before} before, {result.load_after} after; "
        + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="half the messages, 20,000 in the history"
    )
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts, of: {', '.join(PARTS)}"
    )
    args = parser.parse_args()
    only = tuple(p.strip() for p in args.only.split(",") if p.strip())
    if set(only) - set(PARTS):
        parser.error(f"unknown part(s): {', '.join(sorted(set(only) - set(PARTS)))}")
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        print("\n".join(report(measure(Path(tmp), args.quick, only))))


if __name__ == "__main__":
    main()
