"""Throughput at concurrency 16 on loopback: the twin next to the bare app, same bodies."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import loadgen
from _procs import (
    Server,
    bare_serve,
    bench_token,
    clean_env,
    free_port,
    send,
    twin_serve,
)

CONNECTIONS = 16
WARMUP_SECONDS = 1.0
TARGET_SLOWDOWN = 1.5
ROUNDS = 5  # twin and bare in turn, so the machine's drifting load hits both alike


@dataclass(frozen=True)
class Pair:
    route: str
    twin: list[loadgen.Load]
    bare: list[loadgen.Load]

    @property
    def ratios(self) -> list[float]:
        """twin req/s over bare req/s, round by round: 1.0 is as fast as bare, 0.67 is 1.5x
        slower."""
        return [t.rps / b.rps if b.rps else 0.0 for t, b in zip(self.twin, self.bare, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


@dataclass(frozen=True)
class Result:
    generator: str
    duration: float
    pairs: list[Pair]
    twin_rss_after_mib: float


def measure(scratch: Path, duration: float, use_wrk: bool = True) -> Result:
    wrk, generator = loadgen.find_wrk() if use_wrk else (None, "wrk not wanted")
    if wrk is None:
        generator += "; used the asyncio raw-socket keep-alive client instead"

    def load(port: int, path: str, headers: dict[str, str], seconds: float) -> loadgen.Load:
        if wrk is not None:
            return loadgen.run_wrk(
                wrk, port, path, headers, connections=CONNECTIONS, duration=seconds
            )
        return loadgen.run_python(port, path, headers, connections=CONNECTIONS, duration=seconds)

    data_dir = scratch / "load-twin"
    auth = {"Authorization": f"Bearer {bench_token(data_dir, 'profile:*')}"}
    twin_port, bare_port = free_port(), free_port()
    # The per-token rate limit (50/s by default) would cap the authorised route, so it is off.
    with Server.spawn(
        "twin",
        twin_serve(data_dir, twin_port),
        twin_port,
        scratch / "load-twin.log",
        env=clean_env(TWIN_RATE_LIMIT="0"),
    ) as twin:
        twin.wait_healthy()
        profile = json.dumps(
            {
                "display_name": "Ada Lovelace",
                "bio": "Writes programs for engines that do not exist yet.",
            }
        )
        status, _ = send(
            twin_port,
            "PUT",
            "/api/profile/",
            profile.encode(),
            {**auth, "Content-Type": "application/json"},
        )
        assert status == 200, f"could not set the profile: {status}"
        bodies = {}
        for name, path, headers in (
            ("health", "/api/health", {}),
            ("profile", "/api/profile/", auth),
        ):
            status, body = send(twin_port, "GET", path, b"", headers)
            assert status == 200, f"GET {path} answered {status}"
            bodies[name] = scratch / f"{name}.json"
            bodies[name].write_bytes(body)
        with Server.spawn(
            "bare",
            bare_serve(bare_port, bodies["health"], bodies["profile"]),
            bare_port,
            scratch / "load-bare.log",
        ) as bare:
            bare.wait_healthy()
            pairs = []
            for route, path, headers in (
                ("GET /api/health", "/api/health", {}),
                ("GET /api/profile/ (bearer)", "/api/profile/", auth),
            ):
                results: dict[str, list[loadgen.Load]] = {"twin": [], "bare": []}
                for server in (twin, bare):
                    load(server.port, path, headers, WARMUP_SECONDS)
                for round_ in range(ROUNDS):
                    order = (twin, bare) if round_ % 2 == 0 else (bare, twin)
                    for server in order:
                        results[server.name].append(
                            load(server.port, path, headers, duration / ROUNDS)
                        )
                pairs.append(Pair(route, results["twin"], results["bare"]))
        time.sleep(0.5)  # let the access-log writer drain before reading the resident set
        rss_after = twin.memory_kib()["VmRSS"] / 1024
    return Result(generator, duration, pairs, rss_after)


def report(result: Result) -> list[str]:
    lines = [f"{'route':<28} {'server':<6} {'req/s':>9} {'p50':>9} {'p99':>9} {'errors':>7}"]
    for pair in result.pairs:
        for name, loads in (("twin", pair.twin), ("bare", pair.bare)):
            lines.append(
                f"{pair.route if name == 'twin' else '':<28} {name:<6} "
                f"{statistics.median(x.rps for x in loads):>9,.0f} "
                f"{statistics.median(x.p50_ms for x in loads):>7.2f}ms "
                f"{statistics.median(x.p99_ms for x in loads):>7.2f}ms "
                f"{sum(x.errors for x in loads):>7}"
            )
        verdict = "meets" if pair.ratio >= 1 / TARGET_SLOWDOWN else "MISSES"
        lines.append(
            f"{'':<28} twin/bare req/s = {pair.ratio:.2f} median of {len(pair.ratios)} rounds "
            f"({min(pair.ratios):.2f}-{max(pair.ratios):.2f}); target >= "
            f"{1 / TARGET_SLOWDOWN:.2f} (within {TARGET_SLOWDOWN:g}x): {verdict} it"
        )
    lines += [
        f"load generator: {result.generator}; {CONNECTIONS} keep-alive connections, "
        f"{WARMUP_SECONDS:g} s warm-up, then {ROUNDS} rounds of {result.duration / ROUNDS:g} s "
        "each, twin and bare in turn; medians shown",
        "the twin ran with TWIN_RATE_LIMIT=0 (no per-token limit); the bare app has no auth, "
        "no database, no middleware",
        "both under uvicorn with uvloop + httptools, access log off; nothing pinned: server and "
        "load generator share this machine's cores",
        f"twin VmRSS after the load: {result.twin_rss_after_mib:.1f} MiB",
    ]
    return lines


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        print("\n".join(report(measure(Path(tmp), 5.0))))
