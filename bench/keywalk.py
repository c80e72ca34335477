"""PUT or GET of N distinct documents at a given concurrency: `wrk` with ``wrk_keys.lua``, or an
asyncio client on raw keep-alive sockets when wrk cannot be had.

Key i is ``prefix`` followed by i in five digits; a PUT sends ``document(i)``, a 200-byte JSON
object. Each walk stops after N responses or ``limit`` seconds, whichever comes first, and
gives requests/s (over the time from the first request to the last response) with the 50th and
99th percentile latency.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

from _procs import BENCH, HOST
from _wire import Latency, parse, request_bytes
from loadgen import Load, wrk_command

BODY_SIZE = 200
_WRK_SCRIPT = BENCH / "wrk_keys.lua"


def document(i: int, size: int = BODY_SIZE) -> bytes:
    """The JSON object written for key i, exactly ``size`` bytes (the Lua script's twin)."""
    head = f'{{"n":{i},"title":"document {i:05d}","text":"'
    return (head + "x" * (size - len(head) - 2) + '"}').encode()


def walk(
    wrk: str | None,
    port: int,
    method: str,
    prefix: str,
    keys: int,
    *,
    headers: dict[str, str],
    connections: int,
    limit: float,
    start: int = 0,
    body_size: int = BODY_SIZE,
) -> Load:
    """One walk over ``keys`` keys from ``start``, with wrk if given, else the asyncio client;
    a PUT sends ``body_size`` bytes."""
    if wrk is not None:
        return _wrk_walk(
            wrk, port, method, prefix, keys, headers, connections, limit, start, body_size
        )
    return _python_walk(port, method, prefix, keys, headers, connections, limit, start, body_size)


def _wrk_walk(
    wrk: str,
    port: int,
    method: str,
    prefix: str,
    keys: int,
    headers: dict[str, str],
    connections: int,
    limit: float,
    start: int,
    body_size: int,
) -> Load:
    command = wrk_command(
        wrk, _WRK_SCRIPT, min(connections, keys), limit, "10s", headers, f"http://{HOST}:{port}/"
    )
    env = {
        **os.environ,
        "BENCH_METHOD": method,
        "BENCH_PREFIX": prefix,
        "BENCH_KEYS": str(keys),
        "BENCH_START": str(start),
        "BENCH_BODY_SIZE": str(body_size),
    }
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=limit + 30, check=True
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            requests, micros, p50, p99, errors = (int(x) for x in line.split()[1:])
            return Load(requests, micros / 1e6, p50 / 1e3, p99 / 1e3, errors)
    raise RuntimeError(f"wrk printed no result line:\n{done.stdout}\n{done.stderr}")


async def _walker(
    port: int,
    method: str,
    prefix: str,
    next_key: list[int],
    end: int,
    headers: dict[str, str],
    deadline: float,
    latencies: list[float],
    errors: list[int],
    body_size: int,
) -> None:
    """One keep-alive connection taking the next key until the walk is done."""
    reader, writer = await asyncio.open_connection(HOST, port)
    buffer = bytearray()
    try:
        while next_key[0] < end and time.monotonic() < deadline:
            i = next_key[0]
            next_key[0] += 1
            body = document(i, body_size) if method == "PUT" else b""
            wanted = {**headers, "Content-Type": "application/json"} if body else headers
            sent = time.perf_counter()
            writer.write(request_bytes(port, method, f"{prefix}{i:05d}", wanted, body))
            while (parsed := parse(buffer)) is None:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    raise ConnectionError("closed")
                buffer += chunk
            latencies.append(time.perf_counter() - sent)
            del buffer[: parsed[1]]
            if parsed[0].status >= 400:
                errors[0] += 1
    except (OSError, ValueError):
        errors[0] += 1
    finally:
        writer.close()


def _python_walk(
    port: int,
    method: str,
    prefix: str,
    keys: int,
    headers: dict[str, str],
    connections: int,
    limit: float,
    start: int,
    body_size: int,
) -> Load:
    latencies: list[float] = []
    errors, next_key = [0], [start]
    began = time.monotonic()

    async def run() -> None:
        end, deadline = start + keys, began + limit
        walkers = (
            _walker(
                port, method, prefix, next_key, end, headers, deadline, latencies, errors, body_size
            )
            for _ in range(min(connections, keys))
        )
        await asyncio.wait_for(asyncio.gather(*walkers), limit + 30)

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    elapsed = time.monotonic() - began
    spread = Latency.of(latencies)
    return Load(len(latencies), elapsed, spread.p50_ms, spread.p99_ms, errors[0])
