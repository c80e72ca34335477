"""Load generators: `wrk` when it can be had, else a keep-alive asyncio client on raw sockets.

Both keep ``connections`` HTTP/1.1 keep-alive connections busy with one GET each at a time,
stop at ``duration`` seconds or ``max_requests`` requests, whichever comes first, and give
requests/s with the 50th and 99th percentile latency.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from _procs import BENCH, HOST

MAX_REQUESTS = 2_000_000
_WRK_SCRIPT = BENCH / "wrk_report.lua"


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # connection errors, timeouts and statuses >= 400

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def find_wrk(install: bool = True) -> tuple[str | None, str]:
    """wrk's path (installing the Debian package as root if it is missing) and what happened."""
    found = shutil.which("wrk")
    if found:
        return found, "wrk (found on PATH)"
    if not install or not shutil.which("apt-get") or os.geteuid() != 0:
        return None, "wrk is missing and apt-get is not usable here"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (
        ["apt-get", "install", "-y", "-q", "wrk"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "wrk"],
    ):
        try:
            subprocess.run(step, env=env, capture_output=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            break
        found = shutil.which("wrk")
        if found:
            return found, "wrk (just installed with apt-get)"
    return None, "wrk could not be installed with apt-get"


def wrk_command(
    wrk: str,
    script: Path,
    connections: int,
    duration: float,
    timeout: str,
    headers: dict[str, str],
    url: str,
) -> list[str]:
    """wrk with one thread (the other core is the server's), a Lua script and headers."""
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    command += ["--timeout", timeout, "-s", str(script)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return [*command, url]


def run_wrk(
    wrk: str, port: int, path: str, headers: dict[str, str], *, connections: int, duration: float
) -> Load:
    """One wrk run: one thread (the other core is the server's), ``connections`` connections."""
    command = wrk_command(
        wrk, _WRK_SCRIPT, connections, duration, "5s", headers, f"http://{HOST}:{port}{path}"
    )
    env = {**os.environ, "BENCH_MAX_REQUESTS": str(MAX_REQUESTS)}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=duration + 30, check=True
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            requests, micros, p50, p99, errors = (float(x) for x in line.split()[1:])
            return Load(int(requests), micros / 1e6, p50 / 1e3, p99 / 1e3, int(errors))
    raise RuntimeError(f"wrk printed no result line:\n{done.stdout}\n{done.stderr}")


async def _connection(
    port: int,
    request: bytes,
    deadline: float,
    budget: list[int],
    latencies: list[float],
    errors: list[int],
) -> None:
    """One keep-alive connection: a GET, its whole response, the next GET, until time or budget."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while budget[0] > 0 and time.monotonic() < deadline:
            budget[0] -= 1
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - sent)
            if int(head[9:12]) >= 400:
                errors[0] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors[0] += 1
    finally:
        writer.close()


async def _python_load(
    port: int, path: str, headers: dict[str, str], connections: int, duration: float
) -> Load:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    errors, budget = [0], [MAX_REQUESTS]
    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(
            *(
                _connection(port, request, started + duration, budget, latencies, errors)
                for _ in range(connections)
            )
        ),
        duration + 30,
    )
    elapsed = time.monotonic() - started
    if not latencies:
        return Load(0, elapsed, 0.0, 0.0, errors[0])
    cuts = statistics.quantiles(latencies, n=100)
    return Load(len(latencies), elapsed, cuts[49] * 1e3, cuts[98] * 1e3, errors[0])


def run_python(
    port: int, path: str, headers: dict[str, str], *, connections: int, duration: float
) -> Load:
    """The fallback: asyncio (on uvloop when installed) over raw keep-alive sockets."""
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_python_load(port, path, headers, connections, duration))
    except ImportError:
        return asyncio.run(_python_load(port, path, headers, connections, duration))
