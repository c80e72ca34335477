"""Idle memory: resident set of `twin serve` (fresh data dir, defaults) and of the bare app."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _procs import Server, bare_serve, free_port, twin_serve

TARGET_MIB = 45.0
IDLE_SECONDS = 2.0


@dataclass(frozen=True)
class Memory:
    name: str
    rss_mib: float
    hwm_mib: float


def _idle(server: Server) -> Memory:
    server.wait_healthy()
    time.sleep(IDLE_SECONDS)  # a measurement of the idle state, not a synchronisation
    kib = server.memory_kib()
    return Memory(server.name, kib["VmRSS"] / 1024, kib["VmHWM"] / 1024)


def measure(scratch: Path) -> list[Memory]:
    """The twin first (every built-in loaded, default settings but a free port), then bare."""
    port = free_port()
    with Server.spawn(
        "twin serve", twin_serve(scratch / "idle-twin", port), port, scratch / "idle-twin.log"
    ) as twin:
        result = [_idle(twin)]
    port = free_port()
    with Server.spawn(
        "bare Starlette+uvicorn", bare_serve(port), port, scratch / "idle-bare.log"
    ) as bare:
        result.append(_idle(bare))
    return result


def report(results: list[Memory]) -> list[str]:
    lines = [f"{'process':<28} {'VmRSS':>9} {'VmHWM':>9}"]
    for m in results:
        lines.append(f"{m.name:<28} {m.rss_mib:>5.1f} MiB {m.hwm_mib:>5.1f} MiB")
    twin = results[0]
    verdict = "meets" if twin.rss_mib <= TARGET_MIB else "MISSES"
    lines.append(
        f"target: twin VmRSS <= {TARGET_MIB:g} MiB after {IDLE_SECONDS:g} s idle: "
        f"{verdict} it; twin - bare = {twin.rss_mib - results[1].rss_mib:+.1f} MiB"
    )
    return lines


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        print("\n".join(report(measure(Path(tmp)))))
