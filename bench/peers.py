"""Twin to twin on loopback: envelopes a second from one `twin serve` to another, the latency
from `send` to the other twin's handler, and an outbox of 10,000 envelopes for a peer that is
down (the sender's resident set while it waits, then the drain once the peer is back).

    python bench/peers.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _procs import BENCH, HOST, Server, bench_token, clean_env, free_port, get, send, twin_serve

PLUGIN = BENCH / "benchpeer"  # the bench capability, copied next to a dist-info at run time
BURST = 10_000  # envelopes sent back to back for the throughput figure
PACED_RATE = 200.0  # envelopes a second for the paced latency figure
PACED_SECONDS = 5.0
SERIAL = 200  # envelopes sent one at a time, each after the one before was delivered
OFFLINE = 10_000  # envelopes queued for a peer that is down
WATCH = 8.0  # seconds the sender retries the peer that is down while its RSS is watched
BACKOFF = "2"  # the sender's --peer-backoff, so that it retries every 1-2 s
WARM_UP = 200
WAIT_LIMIT = 90.0  # seconds at most for any one phase to settle
POLL = 0.05
SAMPLE_EVERY = 0.1  # seconds between two looks at the sender's resident set
TARGET_RATE = 500.0  # envelopes a second
TARGET_P50_MS = 10.0


class Failed(RuntimeError):
    """A twin answered an API call with an error, or a phase did not settle in time."""


@dataclass
class Twin:
    """One `twin serve` with the bench capability, on its own data directory and port."""

    name: str
    data_dir: Path
    port: int
    token: str
    command: list[str]
    env: dict[str, str]
    scratch: Path
    logs: list[Path] = field(default_factory=list)  # one a start
    server: Server | None = None
    did: str = ""

    def start(self) -> float:
        """Spawn it and wait for its health answer; seconds that took."""
        log = self.scratch / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        self.server = Server.spawn(self.name, self.command, self.port, log, env=self.env)
        took = self.server.wait_healthy()
        self.did = json.loads(get(self.port, "/api/health")[1])["did"]
        return took

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def call(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        raw = b""
        if body is not None:
            raw = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        status, answer = send(self.port, method, path, raw, headers)
        if status >= 400:
            raise Failed(f"{self.name}: {method} {path} answered {status}: {answer[:300]!r}")
        return json.loads(answer) if answer else None

    def stats(self, peer: Twin | None = None, samples: bool = False) -> dict[str, Any]:
        query = []
        if samples:
            query.append("samples=1")
        if peer is not None:
            query.append(f"did={peer.did}")
        found: dict[str, Any] = self.call("GET", "/api/benchpeer/stats?" + "&".join(query))
        return found

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used so far."""
        assert self.server is not None
        fields = Path(f"/proc/{self.server.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        assert self.server is not None
        return self.server.memory_kib()["VmRSS"] / 1024


@dataclass
class Flow:
    """One run's figures, from both twins' stats (times are the wall clock, in seconds)."""

    label: str
    count: int
    sender: dict[str, Any]
    receiver: dict[str, Any]
    outbox: dict[str, Any]
    settled: bool
    cpu: dict[str, float] = field(default_factory=dict)  # seconds each twin used in the run
    wall: float = math.nan  # seconds the run took, as the bench saw it

    @property
    def began(self) -> float:
        return float(self.sender["first_send"] or math.nan)

    def rate(self, until: float | None) -> float:
        """Envelopes a second from the first send until ``until``."""
        if until is None or until <= self.began:
            return math.nan
        return self.count / (until - self.began)

    @property
    def end_to_end(self) -> float:
        """Every envelope handled by the receiver and acknowledged to the sender."""
        ends = [self.receiver["last"], self.sender["last_delivered"]]
        return self.rate(max(ends) if all(ends) else None)

    def latency(self, q: float) -> float:
        return percentile(self.receiver["latency_ms"] or [], q)

    def send_ms(self, q: float) -> float:
        return percentile(self.sender["send_ms"] or [], q)


@dataclass
class Offline:
    """The outbox of a peer that is down, then its drain."""

    count: int = 0
    queue_seconds: float = math.nan
    rss_before: float = math.nan
    rss_queueing_max: float = math.nan
    rss_queued: float = math.nan
    rss_retrying: list[float] = field(default_factory=list)
    attempts_queued: int = 0  # tries of the oldest envelope once all were stored
    attempts_watched: int = 0  # and after the watch
    watched: float = 0.0
    restart_seconds: float = math.nan
    drain: Flow | None = None
    back_at: float = math.nan  # wall clock when the receiver answered its health check again
    rss_drained: float = math.nan


@dataclass
class Result:
    connect_seconds: float = math.nan
    flows: dict[str, Flow] = field(default_factory=dict)
    offline: Offline = field(default_factory=Offline)
    rss_idle: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""
    seconds: float = 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _until(check: Callable[[], bool], limit: float, every: float = POLL) -> bool:
    """Poll ``check`` until it holds or ``limit`` seconds pass; whether it held."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


def _plugin(scratch: Path) -> Path:
    """A directory for PYTHONPATH holding the bench capability and a dist-info naming it in the
    ``twin.capabilities`` entry-point group, as an installed package would (not installed)."""
    root = scratch / "plugin"
    shutil.copytree(PLUGIN, root / "benchpeer", ignore=shutil.ignore_patterns("__pycache__"))
    info = root / "benchpeer-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: benchpeer\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[twin.capabilities]\nbenchpeer = benchpeer:BenchPeer\n")
    return root


def _twin(scratch: Path, name: str, plugin: Path, *extra: str) -> Twin:
    data_dir, port = scratch / name, free_port()
    token = bench_token(data_dir, "*")
    python_path = os.pathsep.join(p for p in (str(plugin), os.environ.get("PYTHONPATH")) if p)
    return Twin(
        name,
        data_dir,
        port,
        token,
        [*twin_serve(data_dir, port), "--public-url", f"http://{HOST}:{port}", *extra],
        clean_env(TWIN_RATE_LIMIT="0", PYTHONPATH=python_path),
        scratch,
    )


def _connect(a: Twin, b: Twin) -> float:
    """The contacts invite flow: a invites, b connects, a accepts; seconds until b sees it."""
    began = time.monotonic()
    link = a.call("POST", "/api/contacts/invites", {"label": "bench"})["link"]
    b.call("POST", "/api/contacts/connect", {"invite": link})
    incoming: list[dict[str, Any]] = []

    def asked() -> bool:
        people = a.call("GET", "/api/contacts/")["contacts"]
        incoming[:] = [p for p in people if p["status"] == "incoming" and p["did"] == b.did]
        return bool(incoming)

    if not _until(asked, 20):
        raise Failed(f"{a.name} never saw {b.name}'s contact request")
    a.call("POST", f"/api/contacts/{incoming[0]['id']}/accept")

    def accepted() -> bool:
        people = b.call("GET", "/api/contacts/")["contacts"]
        return any(p["did"] == a.did and p["status"] == "connected" for p in people)

    if not _until(accepted, 20):
        raise Failed(f"{b.name} never saw {a.name} accept")
    return time.monotonic() - began


def _flow(label: str, a: Twin, b: Twin, count: int, **options: Any) -> Flow:
    """Reset both twins' figures, have ``a`` send ``count`` envelopes to ``b``, and wait until
    ``b`` handled them all and ``a`` saw them all delivered."""
    a.call("POST", "/api/benchpeer/reset")
    b.call("POST", "/api/benchpeer/reset")
    cpu = {a.name: a.cpu_seconds(), b.name: b.cpu_seconds()}
    began = time.monotonic()
    a.call("POST", "/api/benchpeer/runs", {"did": b.did, "count": count, **options})

    def done() -> bool:
        sender, receiver = a.stats()["sender"], b.stats()["receiver"]
        return (
            not sender["running"]
            and receiver["count"] >= sender["stored"]
            and sender["states"]["delivered"] + sender["states"]["failed"] >= sender["stored"]
        )

    settled = _until(done, WAIT_LIMIT)
    wall = time.monotonic() - began
    used = {a.name: a.cpu_seconds() - cpu[a.name], b.name: b.cpu_seconds() - cpu[b.name]}
    sender = a.stats(b, samples=True)
    receiver = b.stats(samples=True)["receiver"]
    outbox = {k: sender.get(k) for k in ("outbox", "first_id", "last_id")}
    stored = sender["sender"]["stored"]
    return Flow(label, stored, sender["sender"], receiver, outbox, settled, used, wall)


def _sampled(twin: Twin, into: list[float], check: Callable[[], bool]) -> Callable[[], bool]:
    """``check``, noting ``twin``'s resident set each time it is asked."""

    def both() -> bool:
        into.append(twin.rss_mib())
        return check()

    return both


def _offline(a: Twin, b: Twin, count: int, into: Offline) -> None:
    """Stop ``b``, queue ``count`` envelopes for it on ``a``, watch ``a`` retry, restart ``b``
    and time the drain."""
    b.stop()
    a.call("POST", "/api/benchpeer/reset")
    time.sleep(0.5)  # a measurement of the sender at rest, not a synchronisation
    into.rss_before = a.rss_mib()
    began = time.monotonic()
    a.call("POST", "/api/benchpeer/runs", {"did": b.did, "count": count})
    queueing: list[float] = []

    def stored() -> bool:
        sender = a.stats()["sender"]
        return not sender["running"] and sender["stored"] >= count

    _until(_sampled(a, queueing, stored), WAIT_LIMIT, SAMPLE_EVERY)
    into.queue_seconds = time.monotonic() - began
    into.count = a.stats()["sender"]["stored"]
    into.rss_queueing_max = max(queueing)
    into.rss_queued = a.rss_mib()
    into.attempts_queued = (a.stats(b).get("first_id") or {}).get("attempts", 0)
    watch_began = time.monotonic()
    _until(_sampled(a, into.rss_retrying, lambda: False), WATCH, SAMPLE_EVERY)
    into.watched = time.monotonic() - watch_began
    into.attempts_watched = (a.stats(b).get("first_id") or {}).get("attempts", 0)
    into.restart_seconds = b.start()
    into.back_at = time.time()

    def drained() -> bool:
        sender = a.stats()["sender"]
        return bool(sender["states"]["delivered"] + sender["states"]["failed"] >= into.count)

    settled = _until(drained, WAIT_LIMIT)
    _until(lambda: b.stats()["receiver"]["count"] >= into.count, 5)
    sender = a.stats(b, samples=True)
    receiver = b.stats(samples=True)["receiver"]
    outbox = {k: sender.get(k) for k in ("outbox", "first_id", "last_id")}
    into.drain = Flow("drain", into.count, sender["sender"], receiver, outbox, settled)
    into.rss_drained = a.rss_mib()


def _log_notes(twin: Twin) -> list[str]:
    """What the twin's log says went wrong, or held delivery back, counted by kind."""
    text = "".join(log.read_text(errors="replace") for log in twin.logs if log.exists())
    kinds = {
        "waits after a 429 (the receiver's --peer-rate)": "answered 429",
        "tries that could not connect (the peer was down)": "cannot connect",
        "lanes that failed unexpectedly": "failed unexpectedly",
        "tracebacks": "Traceback (most recent call last)",
    }
    counts = {what: text.count(needle) for what, needle in kinds.items()}
    found = [f"{n:,} {what}" for what, n in counts.items() if n]
    return [f"{twin.name} log: " + "; ".join(found)] if found else []


def measure(scratch: Path, quick: bool = False) -> Result:
    began = time.monotonic()
    result = Result(load_before=_loadavg())
    plugin = _plugin(scratch)
    a = _twin(scratch, "sender", plugin, "--peer-backoff", BACKOFF)
    b = _twin(scratch, "receiver", plugin)
    scale = 2 if quick else 1
    try:
        a.start()
        b.start()
        for twin in (a, b):
            twin.stats()  # the bench capability loaded
            result.rss_idle[twin.name] = twin.rss_mib()
        result.connect_seconds = _connect(a, b)
        _flow("warm-up", a, b, WARM_UP)
        flows: list[tuple[str, int, dict[str, Any]]] = [
            ("burst", BURST // scale, {}),
            ("paced", int(PACED_RATE * PACED_SECONDS / scale), {"rate": PACED_RATE}),
            ("serial", SERIAL // scale, {"serial": True}),
        ]
        for label, count, options in flows:
            result.flows[label] = _flow(label, a, b, count, **options)
        _offline(a, b, OFFLINE // scale, result.offline)
        # The same burst with the receiver's per-peer limit off: what the core itself does.
        b.stop()
        b.command += ["--peer-rate", "0"]
        b.start()
        result.flows["unlimited"] = _flow("unlimited", a, b, BURST // scale)
        result.flows["unlimited x4"] = _flow("unlimited x4", a, b, BURST // scale, concurrency=4)
    finally:
        a.stop()
        b.stop()
    for flow in [*result.flows.values(), result.offline.drain]:
        if flow is None:
            continue
        if not flow.settled:
            result.notes.append(f"{flow.label}: did not settle within {WAIT_LIMIT:g} s")
        for side in (flow.sender, flow.receiver):
            for key in ("duplicates", "out_of_order"):
                if side.get(key):
                    result.notes.append(f"{flow.label}: {side[key]} {key.replace('_', ' ')}")
            result.notes += [f"{flow.label}: {error}" for error in side.get("errors", [])]
    result.notes += _log_notes(a) + _log_notes(b)
    result.load_after = _loadavg()
    result.seconds = time.monotonic() - began
    return result


# the report


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _verdict(value: float, target: float, below: bool = False) -> str:
    if math.isnan(value):
        return "not measured"
    meets = value < target if below else value >= target
    return "meets" if meets else "MISSES"


Row = tuple[str, str, str, str]


def _row(
    title: str, value: float | None, digits: int = 0, more: str = "", verdict: str = ""
) -> Row:
    return (title, _fmt(value, digits), more, verdict)


def _burst_rows(letter: str, title: str, flow: Flow, target: bool) -> list[Row]:
    rate = flow.end_to_end
    cpu_ms = {name: 1000 * used / flow.count for name, used in flow.cpu.items()}
    batches = flow.sender["batches"]
    return [
        _row(f"{letter} {flow.count:,} {title}: handled+acked/s", rate, 0,
             f">= {TARGET_RATE:,.0f}" if target else "",
             _verdict(rate, TARGET_RATE) if target else ""),
        _row("   send() returned (stored)/s", flow.rate(flow.sender["last_stored"])),
        _row("   handled by the receiver/s", flow.rate(flow.receiver["last"])),
        _row("   delivered in the sender's outbox/s", flow.rate(flow.sender["last_delivered"])),
        _row("   send() p50, ms", flow.send_ms(50), 2, f"p99 {_fmt(flow.send_ms(99), 2)}"),
        _row("   send to handler p50, ms (queueing)", flow.latency(50), 1,
             f"p99 {_fmt(flow.latency(99), 1)}"),
        _row("   envelopes a delivered batch, mean", flow.count / max(1, batches), 1),
        _row("   CPU ms an envelope: sender", cpu_ms.get("sender"), 2,
             f"receiver {_fmt(cpu_ms.get('receiver'), 2)}"),
    ]  # fmt: skip


def _latency_rows(title: str, flow: Flow) -> list[Row]:
    p50 = flow.latency(50)
    return [
        _row(f"b. {title} ({flow.count:,}): p50, ms", p50, 2, f"< {TARGET_P50_MS:g}",
             _verdict(p50, TARGET_P50_MS, below=True)),
        _row("   p99, ms", flow.latency(99), 2, f"max {_fmt(flow.latency(100), 2)}"),
        _row("   send() p50, ms", flow.send_ms(50), 2),
    ]  # fmt: skip


def _offline_rows(off: Offline) -> list[Row]:
    rows = [
        _row(f"c. queue {off.count:,} for a peer that is down, s", off.queue_seconds, 1),
        _row("   stored/s while it is down", off.count / off.queue_seconds),
        _row("   sender RSS before queueing, MiB", off.rss_before, 1),
        _row("   sender RSS peak while queueing, MiB", off.rss_queueing_max, 1),
        _row("   sender RSS once queued, MiB", off.rss_queued, 1),
    ]
    if off.rss_retrying:
        lo, hi = min(off.rss_retrying), max(off.rss_retrying)
        rows.append(_row(f"   sender RSS retrying {off.watched:.0f} s, MiB: min", lo, 1,
                         f"max {hi:.1f}", f"{hi - lo:+.1f} MiB"))  # fmt: skip
    tries = off.attempts_watched - off.attempts_queued
    rows += [
        _row("   tries of the oldest envelope, queued", off.attempts_queued),
        _row(f"   tries in the {off.watched:.0f} s after", tries),
    ]
    drain = off.drain
    if drain is None:
        return rows
    delivered, first = drain.sender["last_delivered"], drain.sender["first_delivered"]
    span = delivered - off.back_at if delivered else math.nan
    rows += [
        _row("   receiver restart to health, s", off.restart_seconds, 2),
        _row("   drain, envelopes/s from its return", drain.count / span if span else math.nan),
    ]
    if first and delivered and delivered > first:
        rows += [
            _row("   first delivery after its return, s", first - off.back_at, 2),
            _row("   drain, envelopes/s from then", drain.count / (delivered - first)),
        ]
    rows += [
        _row("   handled by the receiver", drain.receiver["count"]),
        _row("   sender RSS after the drain, MiB", off.rss_drained, 1),
    ]
    return rows


def report(result: Result) -> list[str]:
    rows: list[Row] = []
    flows = result.flows
    if "burst" in flows:
        rows += _burst_rows("a.", "back to back", flows["burst"], True)
    for label, title in (("paced", f"paced {PACED_RATE:g}/s"), ("serial", "one at a time")):
        if label in flows:
            rows += _latency_rows(title, flows[label])
    if result.offline.count:
        rows += _offline_rows(result.offline)
    if "unlimited" in flows:
        rows += _burst_rows("d.", "back to back, --peer-rate 0", flows["unlimited"], False)
    if "unlimited x4" in flows:
        rows += _burst_rows("d.", "by 4 send() loops, --peer-rate 0", flows["unlimited x4"], False)
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'figure':<{width}}{'value':>10}  {'more':<16} verdict"]
    lines += [f"{t:<{width}}{v:>10}  {m:<16} {d}".rstrip() for t, v, m, d in rows]
    outboxes = {
        label: flow.outbox.get("outbox")
        for label, flow in [*flows.items(), ("drain", result.offline.drain)]
        if flow is not None
    }
    lines += [
        "",
        "the sender's outbox after each run (queued/sent/failed): "
        + "; ".join(
            f"{label} {o['queued']}/{o['sent']}/{o['failed']}" if o else f"{label} -"
            for label, o in outboxes.items()
        ),
        "contacts invite flow (invite, connect, accept, both connected): "
        f"{result.connect_seconds:.2f} s",
        "idle RSS after start, MiB: "
        + ", ".join(f"{n} {mib:.1f}" for n, mib in result.rss_idle.items()),
        "two `twin serve` on 127.0.0.1, TWIN_RATE_LIMIT=0 (for the bench's API polling); the "
        f"sender with --peer-backoff {BACKOFF}; the receiver on the default --peer-rate (1000 a "
        "second, bursts of 4000) except in d.; benchpeer.ping envelopes (about 500 bytes on the "
        "wire) sent by `context.peers.send` in a loop inside the sending twin; latency is the "
        "handler's time.time() minus the one taken just before send()",
        *result.notes,
        f"load average {result.load_before} before, {result.load_after} after; "
        f"this part took {result.seconds:.0f} s",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half the envelopes in each part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        print("\n".join(report(measure(Path(tmp), args.quick))))


if __name__ == "__main__":
    main()
