"""Run twin's benchmarks and print their figures; it never fails on timing (see bench/README.md).

python bench/run.py [--quick] [--only memory,start,load,storage,files,peers,chat] [--no-wrk]
                    [--no-solid] [--no-nginx] [--no-wsgidav] [--no-rclone]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import chat
import cold_start
import files
import idle_memory
import peers
import storage
import throughput

PARTS = ("memory", "start", "load", "storage", "files", "peers", "chat")


def _machine() -> list[str]:
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return [
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {' '.join(load) or 'unknown'}",
        "figures from one shared machine: other work on it moves them; compare twin with bare "
        "from the same run",
    ]


def _section(title: str, lines: list[str]) -> None:
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)))
    for line in lines:
        print(line)
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 cold starts instead of 5, 2 s per load figure instead of 5, storage sizes to "
        "10,000 and fewer rounds, one repeat of each big file transfer, half the envelopes and "
        "chat messages, a chat history of 20,000",
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, of: {', '.join(PARTS)}",
    )
    parser.add_argument(
        "--no-wrk",
        action="store_true",
        help="use the built-in asyncio load client even when wrk is available",
    )
    parser.add_argument(
        "--no-solid",
        action="store_true",
        help="leave the Community Solid Server out of the storage part",
    )
    for peer in ("nginx", "wsgidav", "rclone"):
        parser.add_argument(
            f"--no-{peer}", action="store_true", help=f"leave {peer} out of the files part"
        )
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    runs, duration = (3, 5.0) if args.quick else (5, 10.0)

    began = time.monotonic()
    _section("twin benchmarks" + (" (--quick)" if args.quick else ""), _machine())
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        scratch = Path(tmp)
        if "memory" in parts:
            _section("a. idle memory", idle_memory.report(idle_memory.measure(scratch)))
        if "start" in parts:
            _section("b. cold start", cold_start.report(cold_start.measure(scratch, runs)))
        if "load" in parts:
            result = throughput.measure(scratch, duration, use_wrk=not args.no_wrk)
            _section("c. throughput, concurrency 16, loopback", throughput.report(result))
        if "storage" in parts:
            found = storage.measure(
                scratch, args.quick, use_wrk=not args.no_wrk, use_solid=not args.no_solid
            )
            _section("d. storage, next to a Community Solid Server", storage.report(found))
        if "files" in parts:
            skip = tuple(p for p in ("nginx", "wsgidav", "rclone") if getattr(args, f"no_{p}"))
            measured = files.measure(scratch, args.quick, use_wrk=not args.no_wrk, skip=skip)
            _section("e. files, next to nginx, wsgidav and rclone", files.report(measured))
        if "peers" in parts:
            _section("f. between two twins", peers.report(peers.measure(scratch, args.quick)))
        if "chat" in parts:
            _section("g. chat", chat.report(chat.measure(scratch, args.quick)))
    print(
        f"\ndone in {time.monotonic() - began:.0f} s; load average now "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
