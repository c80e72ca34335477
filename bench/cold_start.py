"""Cold start: seconds from spawning `twin serve` to its first 200 from /api/health."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _procs import Server, bare_serve, free_port, twin_serve

TARGET_SECONDS = 0.8


@dataclass(frozen=True)
class Starts:
    name: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _once(
    name: str, command_for_port: Callable[[int], list[str]], scratch: Path, tag: str
) -> float:
    port = free_port()
    with Server.spawn(name, command_for_port(port), port, scratch / f"cold-{tag}.log") as server:
        return server.wait_healthy()


def measure(scratch: Path, runs: int) -> list[Starts]:
    """First runs on empty dirs, then ``runs`` starts on one already-initialised dir, then bare."""
    first = [
        _once(
            "twin serve", lambda p, i=i: twin_serve(scratch / f"cold-{i}", p), scratch, f"first-{i}"
        )
        for i in range(runs)
    ]
    ready = scratch / "cold-0"  # initialised (key, database, migrations) by the first run above
    again = [
        _once("twin serve", lambda p: twin_serve(ready, p), scratch, f"again-{i}")
        for i in range(runs)
    ]
    bare = [_once("bare", bare_serve, scratch, f"bare-{i}") for i in range(runs)]
    return [
        Starts("twin serve, initialised data dir", again),
        Starts("twin serve, first run (empty dir)", first),
        Starts("bare Starlette+uvicorn", bare),
    ]


def report(results: list[Starts]) -> list[str]:
    lines = [f"{'start':<36} {'median':>8} {'min':>7} {'max':>7}  runs"]
    for s in results:
        lines.append(
            f"{s.name:<36} {s.median:>7.3f}s {min(s.seconds):>6.3f}s "
            f"{max(s.seconds):>6.3f}s  {len(s.seconds)}"
        )
    verdict = "meets" if results[0].median <= TARGET_SECONDS else "MISSES"
    lines.append(
        f"target: median start on an initialised dir <= {TARGET_SECONDS:g} s: "
        f"{verdict} it (spawn to first 200, polled every 5 ms)"
    )
    return lines


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        print("\n".join(report(measure(Path(tmp), 5))))
