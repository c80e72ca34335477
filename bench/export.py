"""`twin export` of a twin holding 1 GiB of files and 100,000 storage documents: MB/s and the
peak memory of the export process, for the archive and for the plain copy (--open).

    python bench/export.py [--quick]      # --quick: 128 MiB and 10,000 documents
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _procs import clean_env, twin_command

FILES_BYTES = 1024**3
FILE_SIZES = (64 * 1024**2, 8 * 1024**2, 1024**2, 64 * 1024)  # a mix: videos down to notes
DOCUMENTS = 100_000
NAMESPACES = 4
TARGET_RSS_MIB = 150.0
LIMIT_SECONDS = 1800.0


async def _fill(data_dir: Path, files_bytes: int, documents: int) -> dict[str, float]:
    """Fill a twin in process through the capabilities' own Python APIs; the seconds each took."""
    from twin_capabilities.files import Files
    from twin_capabilities.storage import Put, Storage

    from twin.core import Twin, initialize
    from twin.registry import find_sources
    from twin.settings import Settings

    settings = Settings(data_dir=data_dir, rate_limit=0)
    initialize(settings)
    core = await Twin.open(settings)
    took: dict[str, float] = {}
    try:
        await core.start(find_sources(), connect=False)
        files: Any = next(c.capability for c in core.registry.loaded.values()
                          if isinstance(c.capability, Files))  # fmt: skip
        storage: Any = next(c.capability for c in core.registry.loaded.values()
                            if isinstance(c.capability, Storage))  # fmt: skip
        rng = random.Random(8)
        began, written, n = time.monotonic(), 0, 0
        while written < files_bytes:
            size = min(rng.choice(FILE_SIZES), files_bytes - written)

            async def body(size: int = size) -> Any:
                left = size  # fresh bytes everywhere: nothing for the store to share
                while left:
                    piece = rng.randbytes(min(left, 1024 * 1024))
                    left -= len(piece)
                    yield piece

            path = f"Bench/{n % 7}/file-{n:05d}.bin"
            await files.store.write(path, body(), length=size, parents=True)
            written += size
            n += 1
        took["files"] = time.monotonic() - began
        began = time.monotonic()
        for ns in range(NAMESPACES):
            space = storage.namespace(f"bench{ns}")
            count = documents // NAMESPACES
            for start in range(0, count, 100):
                await space.batch(
                    [
                        Put(
                            f"docs/{i:06d}",
                            {"title": f"Note {i}", "text": "x" * rng.randint(20, 400)},
                        )
                        for i in range(start, min(count, start + 100))
                    ]
                )
        took["documents"] = time.monotonic() - began
    finally:
        await core.stop()
    return took


def _export(data_dir: Path, out: Path, *extra: str) -> tuple[float, float, str]:
    """Run `twin export`; seconds, peak RSS in MiB (the kernel's high-water mark), output."""
    command = ["/usr/bin/time", "-f", "%M", *twin_command("export", "--data-dir", str(data_dir),
                                                          "--out", str(out), *extra)]  # fmt: skip
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=clean_env(),
                          timeout=LIMIT_SECONDS)  # fmt: skip
    took = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"twin export failed:\n{done.stdout}\n{done.stderr}")
    peak_kib = float(done.stderr.strip().splitlines()[-1])
    return took, peak_kib / 1024, done.stdout


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB and 10,000 documents")
    args = parser.parse_args()
    files_bytes = 128 * 1024**2 if args.quick else FILES_BYTES
    documents = 10_000 if args.quick else DOCUMENTS
    if not Path("/usr/bin/time").exists():
        raise SystemExit("bench/export.py needs /usr/bin/time (apt-get install time)")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        data_dir = scratch / "twin"
        filled = asyncio.run(_fill(data_dir, files_bytes, documents))
        rows = [
            ("fill: files through the Files store, s", f"{filled['files']:.1f}",
             f"{files_bytes / 2**20:,.0f} MiB"),
            ("fill: documents through Storage, s", f"{filled['documents']:.1f}",
             f"{documents:,} documents"),
        ]  # fmt: skip
        for label, out, extra in (
            ("archive", scratch / "twin.archive", ()),
            ("plain (--open)", scratch / "open", ("--open",)),
        ):
            took, peak, _ = _export(data_dir, out, *extra)
            size = _size(out)
            verdict = "meets" if peak < TARGET_RSS_MIB else "MISSES"
            rows += [
                (f"export, {label}: s", f"{took:.1f}", f"{size / 2**20:,.0f} MiB written"),
                ("   MB/s (of the twin's data)", f"{files_bytes / 1e6 / took:,.0f}", ""),
                ("   peak RSS, MiB", f"{peak:.1f}", f"< {TARGET_RSS_MIB:g}  {verdict}"),
            ]
            if out.is_file():
                out.unlink()
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'figure':<{width}}{'value':>10}  more")
    for label, value, more in rows:
        print(f"{label:<{width}}{value:>10}  {more}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {sys.executable}")


if __name__ == "__main__":
    main()
