"""The files capability's WebDAV door next to nginx, wsgidav and `rclone serve webdav` serving a
plain folder: big downloads and uploads with curl, 4 KB files at concurrency 16 with wrk, and
the twin's resident set while it moves a gibibyte.

    python bench/files.py [--quick] [--no-wrk] [--no-nginx] [--no-wsgidav] [--no-rclone]
                          [--no-twin] [--no-twin-oc] [--api]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import dav_peers
import keywalk
import loadgen
from _procs import HOST, Server, bench_token, clean_env, free_port, send, twin_serve

SERVERS = ("nginx", "wsgidav", "rclone", "twin", "twin-oc", "twin-api")
BIG = {"50 MB": 50_000_000, "1 GiB": 1 << 30}
REPEATS = 3  # each big transfer, servers in turn; the median is shown
CURL_LIMIT = 300  # seconds at most for one big transfer
SMALL_SIZE = 4096
SMALL_FILES = 2_000  # files a round writes (PUT) then reads (GET)
SMALL_ROUNDS = 3
CONNECTIONS = 16
WALK_LIMIT = 60.0  # seconds at most for one walk
SAMPLE_EVERY = 0.01  # seconds between two looks at the server's resident set
TARGET_DOWNLOAD = 0.5  # of nginx's MB/s
TARGET_PUT, TARGET_GET = 1_500, 3_000  # 4 KB files a second
TARGET_RSS_MIB = 120
OC_MTIME = "1700000000"  # a file's own time, as an ownCloud-style client sends it


@dataclass
class Target:
    """A server under test: where its files live and what a request must carry."""

    name: str
    server: Server
    base: str  # path prefix of the served folder: "/" or "/dav/"
    headers: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.server.port}{self.base}{path}"


@dataclass(frozen=True)
class Transfer:
    mb_per_s: float  # 10^6 bytes a second, as curl measured it
    rss_kib: int  # the largest VmRSS seen while it ran
    hwm_kib: int  # VmHWM after it (reset just before it, where the kernel allows)


@dataclass
class Result:
    generator: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    transfers: dict[tuple[str, str, str], list[Transfer]] = field(default_factory=dict)
    small: dict[tuple[str, str], list[loadgen.Load]] = field(default_factory=dict)
    idle_rss_mib: dict[str, float] = field(default_factory=dict)
    hwm_reset: bool = True
    notes: list[str] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""
    seconds: float = 0.0


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _random_file(path: Path, size: int) -> Path:
    """``size`` random bytes (nothing a server could compress or deduplicate)."""
    block = 1 << 20
    with path.open("wb") as out:
        for at in range(0, size, block):
            out.write(os.urandom(min(block, size - at)))
    return path


def _reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM (Linux 4.0+, "5" to clear_refs); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _curl(target: Target, path: str, upload: Path | None, size: int, into: Result) -> Transfer:
    """One download (``upload`` None) or upload through curl, watching the server's memory."""
    command = ["curl", "-s", "-S", "--max-time", str(CURL_LIMIT), "-o", "/dev/null"]
    command += ["-w", "%{http_code} %{speed_download} %{speed_upload} %{size_download}"]
    command += ["-H", "Expect:"]  # no 100-continue round trip: same for every server
    for name, value in target.headers.items():
        command += ["-H", f"{name}: {value}"]
    if upload is not None:
        command += ["-T", str(upload)]
    # Each transfer starts with nothing left to write back from the ones before it: dirty pages
    # of an earlier gibibyte would otherwise slow whichever upload comes next.
    os.sync()
    pid = target.server.proc.pid
    into.hwm_reset = _reset_peak(pid) and into.hwm_reset
    peak = 0
    proc = subprocess.Popen(
        [*command, target.url(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + CURL_LIMIT + 30
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            peak = max(peak, target.server.memory_kib().get("VmRSS", 0))
            time.sleep(SAMPLE_EVERY)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    memory = target.server.memory_kib()
    status, down, up, got = out.split()
    if upload is None and (status != "200" or int(got) != size):
        raise RuntimeError(f"GET {path} answered {status} with {got} of {size} bytes {err}")
    if upload is not None and status not in ("200", "201", "204"):
        raise RuntimeError(f"PUT {path} answered {status} {err}".strip())
    speed = float(up if upload is not None else down) / 1e6
    return Transfer(speed, max(peak, memory.get("VmRSS", 0)), memory.get("VmHWM", 0))


def _big(targets: list[Target], sources: dict[str, Path], repeats: int, into: Result) -> None:
    """Each big upload and download, ``repeats`` times, the servers in turn (in the opposite
    order on odd repeats, so that drifting background load hits each alike)."""
    for repeat in range(repeats):
        order = targets if repeat % 2 == 0 else targets[::-1]
        for label, size in BIG.items():
            name = sources[label].name
            for direction in ("upload", "download"):
                for target in order:
                    key = (target.name, direction, label)
                    if key in into.transfers and not into.transfers[key]:
                        continue  # it failed before: one note is enough
                    into.transfers.setdefault(key, [])
                    upload = sources[label] if direction == "upload" else None
                    where = f"up/{name}" if upload else f"down/{name}"
                    try:
                        into.transfers[key].append(_curl(target, where, upload, size, into))
                    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                        into.notes.append(f"{target.name} {direction} {label} failed: {exc}")
                        into.transfers[key] = []


def _mkcol(target: Target, path: str) -> None:
    """A new folder (MKCOL, or the twin's folders API for "twin-api"); one already there is fine."""
    if target.name == "twin-api":
        body = json.dumps({"path": path.rstrip("/"), "parents": True}).encode()
        headers = {**target.headers, "Content-Type": "application/json"}
        status, answer = send(target.server.port, "POST", "/api/files/folders", body, headers)
    else:
        url = f"{target.base}{path}"
        status, answer = send(target.server.port, "MKCOL", url, b"", target.headers)
    there = 409 if target.name == "twin-api" else 405  # what each answers for an existing folder
    if status not in (201, there):
        raise RuntimeError(f"{target.name}: new folder {path} answered {status} {answer[:200]!r}")


def _small(wrk: str | None, targets: list[Target], files: int, rounds: int, into: Result) -> None:
    """PUT ``files`` new 4 KB files at concurrency 16, then GET each, per round and server."""

    def walk(target: Target, method: str, folder: str, keys: int) -> loadgen.Load:
        return keywalk.walk(
            wrk,
            target.server.port,
            method,
            f"{target.base}small/{target.name}-{folder}/k",
            keys,
            headers=target.headers,
            connections=CONNECTIONS,
            limit=WALK_LIMIT,
            body_size=SMALL_SIZE,
        )

    live = list(targets)
    for round_ in range(-1, rounds):  # round -1: a warm-up of 200, not counted
        order = live if round_ % 2 == 0 else live[::-1]
        for target in order:
            folder, keys = ("warm", 200) if round_ < 0 else (f"r{round_}", files)
            try:
                _mkcol(target, f"small/{target.name}-{folder}/")
                os.sync()  # as before a big transfer: no writeback of earlier rounds meanwhile
                put, get = walk(target, "PUT", folder, keys), walk(target, "GET", folder, keys)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                into.notes.append(f"{target.name}: 4 KB files not measured: {exc}")
                live.remove(target)
                continue
            if round_ >= 0:
                into.small.setdefault((target.name, "PUT"), []).append(put)
                into.small.setdefault((target.name, "GET"), []).append(get)


def _basic(token: str) -> dict[str, str]:
    """HTTP Basic with any user name and the token as the password, as a DAV client sends it."""
    return {"Authorization": "Basic " + base64.b64encode(f"bench:{token}".encode()).decode()}


def _twin(stack: ExitStack, scratch: Path, names: list[str], into: Result) -> list[Target]:
    """One twin; its /dav/ door (Basic) as "twin" and, if wanted, /api/files/content/ (Bearer)
    as "twin-api": the same store without WebDAV."""
    data_dir, port = scratch / "files-twin", free_port()
    token = bench_token(data_dir, "files:*")
    server = Server.spawn(
        "twin",
        twin_serve(data_dir, port),
        port,
        scratch / "files-twin.log",
        env=clean_env(TWIN_RATE_LIMIT="0"),
    )
    stack.enter_context(server)
    into.versions["twin"] = "this tree, TWIN_RATE_LIMIT=0, a files:* token"
    doors = {
        "twin": Target("twin", server, "/dav/", _basic(token)),
        # rclone's owncloud mode sends each file's time: the twin then keeps MD5 and SHA-1
        "twin-oc": Target("twin-oc", server, "/dav/", {**_basic(token), "X-OC-Mtime": OC_MTIME}),
        "twin-api": Target(
            "twin-api", server, "/api/files/content/", {"Authorization": f"Bearer {token}"}
        ),
    }
    return [door for name, door in doors.items() if name in names]


def _peer(
    stack: ExitStack, scratch: Path, name: str, sources: dict[str, Path], into: Result
) -> Target | None:
    """A peer serving its own folder, the download files hard-linked into it before it starts
    (so no cache of its own can miss them)."""
    program, how = dav_peers.find(name)
    if program is None:
        into.notes.append(f"{name} left out: {how}")
        return None
    into.versions[name] = dav_peers.version(name, program)
    root = scratch / f"{name}-root"
    for folder in ("down", "up", "small"):
        (root / folder).mkdir(parents=True)
    (root / "ready.txt").write_text("ready\n")
    for source in sources.values():
        os.link(source, root / "down" / source.name)
    home = scratch / name
    home.mkdir()
    server = dav_peers.spawn(name, program, root, free_port(), home)
    return Target(name, stack.enter_context(server), "/")


def _start(
    stack: ExitStack, scratch: Path, names: list[str], sources: dict[str, Path], into: Result
) -> list[Target]:
    """Every wanted server up with the download files in place (PUT, untimed, for the twin)."""
    targets = [
        peer
        for name in names
        if name in dav_peers.PEERS and (peer := _peer(stack, scratch, name, sources, into))
    ]
    if any(name.startswith("twin") for name in names):
        targets += _twin(stack, scratch, names, into)
    ready: list[Target] = []
    for target in targets:
        try:
            is_twin = target.name.startswith("twin")
            target.server.wait_healthy(path="/api/health" if is_twin else "/ready.txt")
            if is_twin:
                for folder in ("down/", "up/", "small/"):
                    _mkcol(target, folder)
                for label, source in sources.items():
                    _curl(target, f"down/{source.name}", source, BIG[label], into)
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            into.notes.append(f"{target.name} left out: {str(exc).splitlines()[0]}")
            if not any(t.server is target.server for t in targets if t is not target):
                target.server.stop()
            continue
        into.idle_rss_mib[target.server.name] = target.server.memory_kib()["VmRSS"] / 1024
        ready.append(target)
    return ready


def measure(
    scratch: Path,
    quick: bool = False,
    use_wrk: bool = True,
    skip: tuple[str, ...] = (),
    api: bool = False,
) -> Result:
    """Every figure for the servers not in ``skip``; ``api`` adds the twin's /api/files/."""
    began = time.monotonic()
    result = Result(load_before=_loadavg())
    wrk, result.generator = loadgen.find_wrk() if use_wrk else (None, "wrk not wanted")
    if wrk is None:
        result.generator += "; used the asyncio raw-socket keep-alive client instead"
    files = scratch / "files-sources"
    files.mkdir()
    sources = {
        label: _random_file(files / f"{label.replace(' ', '').lower()}.bin", size)
        for label, size in BIG.items()
    }
    names = [n for n in SERVERS if n not in skip and (api or n != "twin-api")]
    with ExitStack() as stack:
        targets = _start(stack, scratch, names, sources, result)
        _big(targets, sources, 1 if quick else REPEATS, result)
        files_per_round = SMALL_FILES // 4 if quick else SMALL_FILES
        _small(wrk, targets, files_per_round, 1 if quick else SMALL_ROUNDS, result)
    result.load_after = _loadavg()
    result.seconds = time.monotonic() - began
    return result


# the report


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def _median_speed(result: Result, name: str, direction: str, label: str) -> float:
    found = result.transfers.get((name, direction, label), [])
    return statistics.median(x.mb_per_s for x in found) if found else math.nan


def _peak_mib(result: Result, name: str, direction: str) -> float:
    found = result.transfers.get((name, direction, "1 GiB"), [])
    return max(max(x.rss_kib, x.hwm_kib) for x in found) / 1024 if found else math.nan


def _small_rps(result: Result, name: str, method: str) -> float:
    found = result.small.get((name, method), [])
    return statistics.median(x.rps for x in found) if found else math.nan


def _verdict(twin: float, target: float, below: bool = False) -> str:
    if math.isnan(twin) or math.isnan(target):
        return "not measured"
    meets = twin < target if below else twin >= target
    ratio = twin / target if target else math.nan
    return f"{ratio:.2f} of it: {'meets' if meets else 'MISSES'} it"


def report(result: Result) -> list[str]:
    names = [n for n in SERVERS if any(k[0] == n for k in (*result.transfers, *result.small))]
    speed = {
        (n, d, s): _median_speed(result, n, d, s)
        for n in names
        for d in ("download", "upload")
        for s in BIG
    }
    rows: list[tuple[str, dict[str, float], int, str, str]] = []
    for direction in ("download", "upload"):
        for label in BIG:
            values = {n: speed[n, direction, label] for n in names}
            nginx = values.get("nginx", math.nan)
            if direction == "download":
                line = TARGET_DOWNLOAD * nginx
                goal = f">= {TARGET_DOWNLOAD:.0%} of nginx ({_fmt(line)})"
            elif label == "50 MB":
                peers = [values.get(p, math.nan) for p in ("wsgidav", "rclone")]
                line = max((p for p in peers if not math.isnan(p)), default=math.nan)
                goal = f">= max(wsgidav, rclone) ({_fmt(line)})"
            else:
                line, goal = math.nan, "none"
            verdict = _verdict(values.get("twin", math.nan), line) if goal != "none" else ""
            rows.append((f"{direction} {label}, MB/s", values, 0, goal, verdict))
    for method, target in (("PUT", TARGET_PUT), ("GET", TARGET_GET)):
        values = {n: _small_rps(result, n, method) for n in names}
        twin = values.get("twin", math.nan)
        rows.append((f"{method} 4 KB files/s", values, 0, f">= {target:,}", _verdict(twin, target)))
    for direction in ("upload", "download"):
        values = {n: _peak_mib(result, n, direction) for n in names}
        twin = values.get("twin", math.nan)
        rows.append(
            (
                f"peak RSS, 1 GiB {direction}, MiB",
                values,
                1,
                f"< {TARGET_RSS_MIB} (twin)",
                _verdict(twin, TARGET_RSS_MIB, below=True),
            )
        )
    head = f"{'figure':<30}" + "".join(f"{n:>9}" for n in names)
    lines = [head + f"  {'target':<32} twin against it"]
    for title, values, digits, goal, verdict in rows:
        cells = "".join(f"{_fmt(values.get(n, math.nan), digits):>9}" for n in names)
        lines.append(f"{title:<30}{cells}  {goal:<32} {verdict}")
    lines += ["", "spread of the big transfers (min-max MB/s over the repeats):"]
    for name in names:
        parts = []
        for direction in ("download", "upload"):
            for label in BIG:
                found = result.transfers.get((name, direction, label), [])
                if found:
                    lo, hi = min(x.mb_per_s for x in found), max(x.mb_per_s for x in found)
                    parts.append(f"{direction[:-4]} {label} {lo:,.0f}-{hi:,.0f}")
        lines.append(f"  {name:<8} " + "; ".join(parts))
    lines += ["", "4 KB files, p50 / p99 latency in ms (median over rounds), errors:"]
    for name in names:
        parts = []
        for method in ("PUT", "GET"):
            walks = result.small.get((name, method), [])
            if walks:
                p50 = statistics.median(x.p50_ms for x in walks)
                p99 = statistics.median(x.p99_ms for x in walks)
                errors = sum(x.errors for x in walks)
                parts.append(
                    f"{method} {p50:.2f} / {p99:.2f}, {errors} errors, {len(walks)} rounds"
                )
        lines.append(f"  {name:<8} " + "; ".join(parts))
    repeats = max((len(v) for v in result.transfers.values()), default=0)
    lines += [
        "",
        f"big transfers: curl, one at a time, {repeats} repeat(s), servers in turn, median "
        "shown; files of random bytes, hot in the page cache; MB = 10^6 bytes",
        f"4 KB files: {result.generator}; {CONNECTIONS} keep-alive connections, each round "
        "PUTs new files into a new folder, then GETs each once; req/s over first request to "
        "last response",
        "peak RSS: the largest of VmRSS sampled every 10 ms and VmHWM after the transfer"
        + (" (VmHWM reset just before it)" if result.hwm_reset else " (VmHWM since start)"),
        "idle RSS before the transfers, MiB: "
        + ", ".join(f"{n} {mib:.1f}" for n, mib in result.idle_rss_mib.items()),
        "servers: " + "; ".join(f"{n}: {v}" for n, v in result.versions.items()),
        "peers serve a plain folder, unencrypted, no auth; nginx: one process, sendfile, dav "
        "module; wsgidav: cheroot's defaults, warnings-only log",
        "twin-oc: the twin's /dav/ with X-OC-Mtime on every request, as rclone's owncloud mode "
        "sends it, so that it also keeps each file's MD5 and SHA-1",
        *result.notes,
        f"load average {result.load_before} before, {result.load_after} after; "
        f"this part took {result.seconds:.0f} s",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one repeat of each big transfer, 500 small files"
    )
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio load client")
    for name in SERVERS[:-1]:
        parser.add_argument(f"--no-{name}", action="store_true", help=f"leave {name} out")
    parser.add_argument(
        "--api",
        action="store_true",
        help="also measure the twin's /api/files/content/ (Bearer): the same store without DAV",
    )
    args = parser.parse_args()
    skip = tuple(name for name in SERVERS[:-1] if getattr(args, "no_" + name.replace("-", "_")))
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        result = measure(Path(tmp), args.quick, not args.no_wrk, skip, args.api)
        print("\n".join(report(result)))


if __name__ == "__main__":
    main()
