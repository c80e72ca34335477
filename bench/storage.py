"""The storage capability under load, next to a Community Solid Server doing the same work:
PUT and GET of 1,000 documents, latency as a namespace grows, and the change feed's delay.

    python bench/storage.py [--quick] [--no-wrk] [--no-solid]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import feed
import keywalk
import loadgen
import solid
from _procs import BENCH, HOST, Server, bench_token, clean_env, free_port, twin_serve
from _wire import Connection, Latency, timed
from loadgen import Load

DOCUMENTS = 1_000
CONNECTIONS = 16
ROUNDS = 5  # twin and bare in turn, as in the throughput part
SOLID_ROUNDS = 1  # about 40 s a round; the gap is wide enough that one tells
WALK_LIMIT = 120.0  # seconds at most for one walk of 1,000 requests
TARGET_PUT, TARGET_GET = 2_000, 5_000  # req/s

SIZES = (1_000, 10_000, 100_000)
FOLDERS = 5  # documents go to f0/ … f4/ in turn; a folder holds a fifth of the namespace
PAGE = 100
BATCH = 100
FILL_LIMIT = 300.0  # seconds at most to fill the twin to the largest size
SOLID_FILL_BUDGET = 120.0  # seconds of PUTs Solid may spend beyond 1,000 documents
SAMPLES = {"get": 2_000, "list": 500, "deep": 500}
SAMPLE_LIMIT = 20.0  # seconds at most per series of samples
SETTLE = 1.0  # seconds of quiet after filling, so that the server's own after-work is done
TARGET_SCALE = 2.0  # p99 at the largest size over p99 at the smallest

FEED_EVENTS = 500
SOLID_FEED_EVENTS = 200


@dataclass
class Target:
    """A server under test: where its documents live and what a request must carry."""

    name: str
    server: Server
    docs: str  # path prefix a key is appended to
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.server.port


@dataclass
class Walks:
    put: list[Load] = field(default_factory=list)
    get: list[Load] = field(default_factory=list)


@dataclass
class Scale:
    """Latency at one namespace size; ``deep`` is None where there are no pages."""

    size: int
    get: Latency
    list: Latency
    deep: Latency | None
    fill_rate: float  # documents a second while filling up to this size


@dataclass
class Result:
    generator: str
    solid: str
    walks: dict[str, Walks] = field(default_factory=dict)
    scale: dict[str, list[Scale]] = field(default_factory=dict)
    walk_notes: list[str] = field(default_factory=list)
    scale_notes: list[str] = field(default_factory=list)
    feeds: dict[str, feed.Feed | str] = field(default_factory=dict)
    twin_rss_mib: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _check(response_status: int, what: str) -> None:
    if not 200 <= response_status < 300:
        raise RuntimeError(f"{what} answered {response_status}")


# PUT then GET of 1,000 documents at concurrency 16


def _walks(wrk: str | None, targets: list[Target], rounds: dict[str, int], into: Result) -> None:
    def walk(target: Target, method: str, prefix: str, keys: int) -> Load:
        return keywalk.walk(
            wrk,
            target.port,
            method,
            prefix,
            keys,
            headers=target.headers,
            connections=CONNECTIONS,
            limit=WALK_LIMIT,
        )

    def pair(target: Target, prefix: str, keys: int) -> tuple[Load, Load] | None:
        """PUT then GET of ``keys`` keys; a failure of Solid's drops it, with a note."""
        try:
            return walk(target, "PUT", prefix, keys), walk(target, "GET", prefix, keys)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            if target.name != "solid":
                raise
            into.walk_notes.append(f"solid: a walk failed: {str(exc).splitlines()[0]}")
            rounds["solid"] = 0
            return None

    for target in targets:  # warm-up: 200 writes and reads each, not counted
        into.walks[target.name] = Walks()
        pair(target, f"{target.docs}warm/k", 200)
    for round_ in range(max(rounds.values())):
        order = targets if round_ % 2 == 0 else targets[::-1]
        for target in order:
            if round_ < rounds[target.name]:
                done = pair(target, f"{target.docs}r{round_}/k", DOCUMENTS)
                if done is not None:
                    into.walks[target.name].put.append(done[0])
                    into.walks[target.name].get.append(done[1])


# latency as the namespace grows


@dataclass
class Lane:
    """One server's requests in an interleaved sample, and what came of them."""

    conn: Connection
    headers: dict[str, str]
    seconds: list[float] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)


def _sample(lanes: list[Lane], paths: list[list[str]]) -> list[Latency]:
    """GETs of each lane's paths, one at a time, taking the lanes in turn request by request (so
    that whatever else the machine does hits each alike), for SAMPLE_LIMIT seconds at most."""
    deadline = time.monotonic() + SAMPLE_LIMIT
    for i in range(max(len(p) for p in paths)):
        if time.monotonic() > deadline:
            break
        for lane, lane_paths in zip(lanes, paths, strict=True):
            if i < len(lane_paths):
                took, status = timed(lane.conn, "GET", lane_paths[i], lane.headers)
                lane.seconds.append(took)
                if status >= 400:
                    shape = re.sub("[0-9]+", "N", lane_paths[i].split("?")[0])
                    lane.failed[f"{status} for {shape}"] += 1
    found = [Latency.of(lane.seconds) for lane in lanes]
    for lane in lanes:
        lane.seconds.clear()
    return found


def _note_failures(failed: Counter[str], server: str, size: int, into: Result) -> None:
    """A note of the requests that failed at one size, if any."""
    if failed:
        spread = ", ".join(f"{n} x {what}" for what, n in failed.most_common(3))
        into.scale_notes.append(f"{server} at {size:,}: {failed.total()} requests failed: {spread}")


def _twin_fill(conn: Connection, target: Target, start: int, end: int, deadline: float) -> int:
    """Batches of 100 puts until ``end`` documents (or the deadline); returns how many there are."""
    headers = {**target.headers, "Content-Type": "application/json"}
    at = start
    while at < end and time.monotonic() < deadline:
        upto = min(at + BATCH, end)
        ops = [
            {"op": "put", "key": _scale_key(n), "body": json.loads(keywalk.document(n))}
            for n in range(at, upto)
        ]
        body = json.dumps({"ops": ops}).encode()
        response = conn.request("POST", "/api/storage/scale/batch", headers, body)
        _check(response.status, "a batch of puts")
        at = upto
    return at


def _scale_key(n: int) -> str:
    return f"f{n % FOLDERS}/d{n:06d}"


def _twin_deep_cursor(conn: Connection, target: Target, folder: int, size: int) -> str | None:
    """The cursor of the folder's last full page: walked to with pages of up to 1,000."""
    base = f"/api/storage/scale/docs?prefix=f{folder}/"
    skip, seen, cursor = size // FOLDERS - PAGE, 0, None
    while seen < skip:
        limit = min(1_000, skip - seen)
        path = f"{base}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = conn.request("GET", path, target.headers)
        _check(response.status, "a listing")
        page = json.loads(response.body)
        seen += len(page["items"])
        cursor = page["cursor"]
        if cursor is None:
            break
    return cursor


def _twin_scale(scratch: Path, sizes: tuple[int, ...], into: Result) -> None:
    """One twin per size, each filled with batches, then sampled in turn request by request."""
    rng = random.Random(1)
    with ExitStack() as stack:
        twins: list[tuple[int, Target]] = []
        for size in sizes:
            data_dir, port = scratch / f"scale-{size}", free_port()
            auth = {"Authorization": f"Bearer {bench_token(data_dir, 'storage:*')}"}
            server = Server.spawn(
                f"twin-{size}",
                twin_serve(data_dir, port),
                port,
                scratch / f"scale-{size}.log",
                env=clean_env(TWIN_RATE_LIMIT="0"),
            )
            twins.append((size, Target("twin", stack.enter_context(server), "", auth)))
        lanes, rates, deadline = [], [], time.monotonic() + FILL_LIMIT
        for size, target in twins:
            target.server.wait_healthy()
            conn = stack.enter_context(Connection(target.port))
            began = time.monotonic()
            reached = _twin_fill(conn, target, 0, size, deadline)
            if reached < size:
                into.scale_notes.append(
                    f"twin: filling stopped at {reached:,} of {size:,} documents: "
                    f"{FILL_LIMIT:g} s were up; sizes from there on are left out"
                )
                twins = twins[: len(lanes)]
                break
            rates.append(size / (time.monotonic() - began))
            lanes.append(Lane(conn, target.headers))
        docs = "/api/storage/scale/docs"
        gets, firsts, deeps = [], [], []
        for (size, target), lane in zip(twins, lanes, strict=True):
            cursors = [_twin_deep_cursor(lane.conn, target, f, size) for f in range(FOLDERS)]
            gets.append(
                [f"{docs}/{_scale_key(rng.randrange(size))}" for _ in range(SAMPLES["get"])]
            )
            folders = [rng.randrange(FOLDERS) for _ in range(SAMPLES["list"])]
            firsts.append([f"{docs}?prefix=f{f}/&limit={PAGE}" for f in folders])
            deeps.append([f"{docs}?prefix=f{f}/&limit={PAGE}&cursor={cursors[f]}" for f in folders])
        if not lanes:
            return
        time.sleep(SETTLE)
        _sample(lanes, [paths[:200] for paths in gets])  # warm-up
        for lane in lanes:
            lane.failed.clear()
        get, first, deep = _sample(lanes, gets), _sample(lanes, firsts), _sample(lanes, deeps)
        spreads = zip(get, first, deep, strict=True)
        into.scale["twin"] = [
            Scale(size, get, first, deep, rate)
            for (size, _), (get, first, deep), rate in zip(twins, spreads, rates, strict=True)
        ]
        for (size, _), lane in zip(twins, lanes, strict=True):
            _note_failures(lane.failed, "twin", size, into)
        largest, target = twins[-1]
        into.twin_rss_mib[f"holding {largest:,} documents"] = (
            target.server.memory_kib()["VmRSS"] / 1024
        )


def _solid_scale(wrk: str | None, target: Target, sizes: tuple[int, ...], into: Result) -> None:
    """Solid has no batch: its folders are filled with PUTs at concurrency 16, while the budget
    allows; a listing is a GET of the folder (a container), which has no pages."""
    results: list[Scale] = []
    rng = random.Random(1)
    have, spent = 0, 0.0
    with Connection(target.port) as conn:
        for size in sizes:
            rate = results[-1].fill_rate if results else 0.0
            if have and rate and (size - have) / rate > SOLID_FILL_BUDGET - spent:
                into.scale_notes.append(
                    f"solid at {size:,} skipped: {size - have:,} more PUTs at {rate:.0f}/s "
                    f"would take about {(size - have) / rate:.0f} s, over its budget of "
                    f"{SOLID_FILL_BUDGET:g} s beyond the first {sizes[0]:,}"
                )
                continue
            began, unwritten = time.monotonic(), 0
            per_folder = (size - have) // FOLDERS
            for folder in range(FOLDERS):
                load = keywalk.walk(
                    wrk,
                    target.port,
                    "PUT",
                    f"/scale/f{folder}/d",
                    per_folder,
                    headers={},
                    connections=CONNECTIONS,
                    limit=WALK_LIMIT,
                    start=have // FOLDERS,
                )
                unwritten += load.errors + per_folder - load.requests
            took = time.monotonic() - began
            if have:
                spent += took
            if unwritten:
                into.scale_notes.append(f"solid at {size:,}: {unwritten} PUTs failed or not done")
            rate, have, per = (size - have) / took, size, size // FOLDERS
            gets = [
                f"/scale/f{rng.randrange(FOLDERS)}/d{rng.randrange(per):05d}"
                for _ in range(SAMPLES["get"])
            ]
            firsts = [f"/scale/f{rng.randrange(FOLDERS)}/" for _ in range(SAMPLES["list"])]
            time.sleep(SETTLE)
            lane = Lane(conn, {})
            _sample([lane], [gets[:20]])  # warm-up
            lane.failed.clear()
            get = _sample([lane], [gets])[0]
            lane.headers = {"Accept": "text/turtle"}
            first = _sample([lane], [firsts])[0]
            _note_failures(lane.failed, "solid", size, into)
            results.append(Scale(size, get, first, None, rate))
    into.scale["solid"] = results


# the change feed


def _twin_feed(target: Target, count: int) -> feed.Feed:
    with Connection(target.port) as conn:
        response = conn.request("GET", "/api/storage/bench", target.headers)
        _check(response.status, "GET /api/storage/bench")
        since = json.loads(response.body)["last_seq"]
    path = f"/api/storage/bench/changes/live?since={since}"
    return feed.measure(target.port, target.docs, target.headers, path, feed.sse_keys(), count)


def _solid_feed(target: Target, count: int) -> feed.Feed:
    base = f"http://{HOST}:{target.port}/"
    with Connection(target.port) as conn:  # the container must exist to be a topic
        response = conn.request(
            "PUT", "/feed/warm", {"Content-Type": "application/json"}, keywalk.document(0)
        )
        _check(response.status, "PUT /feed/warm")
    topic = urllib.parse.quote(f"{base}feed/", safe="")
    path = f"/.notifications/StreamingHTTPChannel2023/{topic}"
    return feed.measure(target.port, "/", {}, path, feed.solid_keys(base), count)


# putting it together


@contextmanager
def _servers(
    scratch: Path, solid_command: Path | None, notes: list[str]
) -> Iterator[tuple[Target, Target, Target | None]]:
    with ExitStack() as stack:
        data_dir = scratch / "storage-twin"
        token = bench_token(data_dir, "storage:*")
        port = free_port()
        twin = stack.enter_context(
            Server.spawn(
                "twin",
                twin_serve(data_dir, port),
                port,
                scratch / "storage-twin.log",
                env=clean_env(TWIN_RATE_LIMIT="0"),
            )
        )
        port = free_port()
        bare = stack.enter_context(
            Server.spawn(
                "bare",
                [sys.executable, str(BENCH / "bare_store.py"), "--port", str(port)],
                port,
                scratch / "storage-bare.log",
            )
        )
        css = None
        if solid_command is not None:
            port = free_port()
            css = stack.enter_context(
                solid.spawn(solid_command, scratch / "solid-root", port, scratch / "solid.log")
            )
        twin.wait_healthy()
        bare.wait_healthy()
        solid_target = None
        if css is not None:
            try:
                took = solid.wait_ready(css)
                notes.append(f"it answered {took:.1f} s after it was started")
                solid_target = Target("solid", css, "/")
            except RuntimeError as exc:
                notes.append(f"it did not start: {str(exc).splitlines()[0]}")
                css.stop()
        auth = {"Authorization": f"Bearer {token}"}
        yield (
            Target("twin", twin, "/api/storage/bench/docs/", auth),
            Target("bare", bare, "/api/storage/bench/docs/"),
            solid_target,
        )


def measure(
    scratch: Path, quick: bool = False, use_wrk: bool = True, use_solid: bool = True
) -> Result:
    began = time.monotonic()
    wrk, generator = loadgen.find_wrk() if use_wrk else (None, "wrk not wanted")
    if wrk is None:
        generator += "; used the asyncio raw-socket keep-alive client instead (slower than wrk)"
    command, how = solid.find() if use_solid else (None, "left out (--no-solid)")
    notes = [how]
    result = Result(generator, "")
    with _servers(scratch, command, notes) as (twin, bare, css):
        targets = [twin, bare] + ([css] if css else [])
        rounds = {"twin": 3 if quick else ROUNDS, "bare": 3 if quick else ROUNDS}
        rounds["solid"] = SOLID_ROUNDS
        _walks(wrk, targets, rounds, result)
        sizes = SIZES[:2] if quick else SIZES
        _twin_scale(scratch, sizes, result)
        if css is not None:
            _safely(lambda: _solid_scale(wrk, css, sizes, result), "solid scale", result)
        result.feeds["twin"] = _twin_feed(twin, FEED_EVENTS // (2 if quick else 1))
        if css is not None:
            try:
                result.feeds["solid"] = _solid_feed(css, SOLID_FEED_EVENTS)
            except (OSError, RuntimeError) as exc:
                result.feeds["solid"] = f"not measured: {exc}"
        result.twin_rss_mib["after the PUT/GET and feed parts"] = (
            twin.server.memory_kib()["VmRSS"] / 1024
        )
    result.solid = "; ".join(notes)
    result.seconds = time.monotonic() - began
    return result


def _safely(step: Callable[[], None], what: str, result: Result) -> None:
    """Solid's parts never fail the run: a failure becomes a note."""
    try:
        step()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        result.scale_notes.append(f"{what} not measured: {str(exc).splitlines()[0]}")


# the report


def _median(loads: list[Load], what: str) -> float:
    return statistics.median(getattr(x, what) for x in loads)


def report(result: Result) -> list[str]:
    lines = [
        f"PUT then GET of {DOCUMENTS:,} JSON documents of {keywalk.BODY_SIZE} bytes, "
        f"{CONNECTIONS} connections",
        f"{'':<5} {'server':<6} {'req/s':>9} {'p50':>9} {'p99':>9} {'errors':>7} {'rounds':>7}",
    ]
    rps: dict[tuple[str, str], float] = {}
    for method in ("put", "get"):
        for name, walks in result.walks.items():
            loads: list[Load] = getattr(walks, method)
            if not loads:
                continue
            rps[name, method] = _median(loads, "rps")
            lines.append(
                f"{method.upper() if name == 'twin' else '':<5} {name:<6} "
                f"{rps[name, method]:>9,.0f} {_median(loads, 'p50_ms'):>7.2f}ms "
                f"{_median(loads, 'p99_ms'):>7.2f}ms {sum(x.errors for x in loads):>7} "
                f"{len(loads):>7}"
            )
    for method, target in (("put", TARGET_PUT), ("get", TARGET_GET)):
        twin = rps.get(("twin", method), 0.0)
        verdict = "meets" if twin >= target else "MISSES"
        line = f"twin {method.upper()} {twin:,.0f}/s, target >= {target:,}/s: {verdict} it"
        for other in ("bare", "solid"):
            if rps.get((other, method)):
                line += f"; twin/{other} = {twin / rps[other, method]:.2f}"
        lines.append(line)
    lines += [
        f"load generator: {result.generator}; each round walks {DOCUMENTS:,} new keys (PUT), then "
        "reads them (GET); medians of the rounds, twin and bare in turn",
        "bare = bench/bare_store.py, a dict behind the twin's uvicorn settings (no auth, no "
        "database): the ceiling of this client and HTTP stack on this machine",
        *result.walk_notes,
    ]

    lines += ["", "latency as the namespace grows, one request at a time, p50 / p99 in ms"]
    lines.append(
        f"{'documents':>10} {'server':<6} {'GET a document':>17} {'list first page':>17} "
        f"{'list deep page':>17} {'fill docs/s':>12}"
    )
    for name, rows in result.scale.items():
        for row in rows:
            lines.append(
                f"{row.size:>10,} {name:<6} {row.get!s:>17} {row.list!s:>17} "
                f"{(str(row.deep) if row.deep else 'no pages'):>17} {row.fill_rate:>12,.0f}"
            )
    twin_rows = result.scale.get("twin", [])
    if len(twin_rows) >= 2:
        first, last = twin_rows[0], twin_rows[-1]
        parts = []
        for label, a, b in (
            ("GET", first.get, last.get),
            ("list", first.list, last.list),
            ("deep page", first.deep, last.deep),
        ):
            if a and b:
                ratio = b.p99_ms / a.p99_ms
                verdict = "meets" if ratio <= TARGET_SCALE else "MISSES"
                parts.append(f"{label} {ratio:.2f} ({verdict} it)")
        lines.append(
            f"twin p99 at {last.size:,} / p99 at {first.size:,} (target <= {TARGET_SCALE:g}): "
            + ", ".join(parts)
        )
    lines.append(
        f"samples: {SAMPLES['get']:,} GETs of random documents, {SAMPLES['list']} first pages "
        f"and {SAMPLES['deep']} deep pages (the last full page of a folder, through its cursor) "
        f"of {PAGE} keys, each in one of {FOLDERS} folders holding a fifth of the namespace; "
        "twin filled with batches of 100, solid with PUTs at concurrency 16"
    )
    lines += result.scale_notes

    lines += ["", "change feed: a PUT at a time, then its event on a live stream; ms"]
    lines.append(
        f"{'server':<6} {'events':>7} {'after the 2xx p50 / p99':>24} "
        f"{'after sending p50 / p99':>24} {'missed':>7} {'early':>6}"
    )
    for name, found in result.feeds.items():
        if isinstance(found, str):
            lines.append(f"{name:<6} {found}")
            continue
        lines.append(
            f"{name:<6} {found.events:>7} {found.after_reply!s:>24} {found.after_send!s:>24} "
            f"{found.missed:>7} {found.early:>6}"
        )
    lines += [
        "twin: GET /api/storage/bench/changes/live (server-sent events); solid: "
        "StreamingHTTPChannel2023 on the folder (Turtle notifications, Add per new document)",
        "early = events that came before the PUT's reply (a negative 'after the 2xx')",
        f"solid: {result.solid}",
        "twin VmRSS: "
        + "; ".join(f"{mib:.1f} MiB {what}" for what, mib in result.twin_rss_mib.items()),
        f"this part took {result.seconds:.0f} s",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, sizes to 10,000")
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio load client")
    parser.add_argument("--no-solid", action="store_true", help="leave the Solid server out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        result = measure(Path(tmp), args.quick, not args.no_wrk, not args.no_solid)
        print("\n".join(report(result)))


if __name__ == "__main__":
    main()
