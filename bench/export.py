"""`twin export`, `twin import` and `twin backup` of a twin holding 1 GiB of files and 100,000
storage documents: MB/s and the peak memory of each process, for the archive and for the plain
copy (--open); the archive imported into a new data directory (and counted there); then a first
backup, one with nothing changed and one after one file is rewritten (what each wrote), and
`twin backup verify`.

    python bench/export.py [--quick]      # --quick: 128 MiB and 10,000 documents
    python bench/export.py --files-mib 32 --documents 2000   # any sizes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
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


def _fresh(rng: random.Random, size: int) -> Any:
    async def body() -> Any:
        left = size  # fresh bytes everywhere: nothing for the store to share
        while left:
            piece = rng.randbytes(min(left, 1024 * 1024))
            left -= len(piece)
            yield piece

    return body()


class _Opened:
    """A twin opened in process, started, with its Files and Storage capabilities to hand."""

    def __init__(self, data_dir: Path, *, new: bool = False) -> None:
        from twin.core import initialize
        from twin.settings import Settings

        self.settings = Settings(data_dir=data_dir, rate_limit=0)
        self.identity = initialize(self.settings) if new else None

    async def __aenter__(self) -> _Opened:
        from twin_capabilities.files import Files
        from twin_capabilities.storage import Storage

        from twin.core import Twin
        from twin.registry import find_sources

        self.core = await Twin.open(self.settings)
        try:
            await self.core.start(find_sources(), connect=False)
        except BaseException:
            await self.core.stop()
            raise
        loaded = [c.capability for c in self.core.registry.loaded.values()]
        self.files: Any = next(c for c in loaded if isinstance(c, Files))
        self.storage: Any = next(c for c in loaded if isinstance(c, Storage))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.core.stop()

    async def counts(self) -> tuple[int, int, int]:
        """Files, their bytes, and documents."""
        usage = await self.files.store.usage()
        documents = sum(u.documents for u in await self.storage.store.usages())
        return usage.files, usage.used, documents


async def _fill(data_dir: Path, files_bytes: int, documents: int) -> dict[str, Any]:
    """Fill a twin in process through the capabilities' own Python APIs; the seconds each took,
    the recovery phrase, the files written (path, size) and what the twin counts."""
    from twin_capabilities.storage import Put

    opened = _Opened(data_dir, new=True)
    assert opened.identity is not None
    took: dict[str, Any] = {"phrase": opened.identity.phrase(), "written": []}
    async with opened as twin:
        files, storage = twin.files, twin.storage
        rng = random.Random(8)
        began, written, n = time.monotonic(), 0, 0
        while written < files_bytes:
            size = min(rng.choice(FILE_SIZES), files_bytes - written)
            path = f"Bench/{n % 7}/file-{n:05d}.bin"
            await files.store.write(path, _fresh(rng, size), length=size, parents=True)
            took["written"].append((path, size))
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
        took["counts"] = await twin.counts()
    return took


async def _count(data_dir: Path) -> tuple[int, int, int]:
    async with _Opened(data_dir) as twin:
        return await twin.counts()


async def _rewrite(data_dir: Path, path: str, size: int) -> float:
    """Give one file of the twin new content, as fresh as the fill's; the seconds it took."""
    async with _Opened(data_dir) as twin:
        began = time.monotonic()
        await twin.files.store.write(path, _fresh(random.Random(9), size), length=size)
        return time.monotonic() - began


def _twin(*args: str, stdin: str | None = None) -> tuple[float, float, str]:
    """Run a `twin` command; seconds, peak RSS in MiB (the kernel's high-water mark), output."""
    command = ["/usr/bin/time", "-f", "%M", *twin_command(*args)]
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=clean_env(), input=stdin,
                          timeout=LIMIT_SECONDS)  # fmt: skip
    took = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"twin {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    peak_kib = float(done.stderr.strip().splitlines()[-1])
    return took, peak_kib / 1024, done.stdout


def _export(data_dir: Path, out: Path, *extra: str) -> tuple[float, float, str]:
    """Run `twin export`; seconds, peak RSS in MiB, output."""
    return _twin("export", "--data-dir", str(data_dir), "--out", str(out), *extra)


def _chunks(root: Path) -> set[str]:
    return {p.name for p in (root / "chunks").glob("*/*.chunk")}


def _snapshots(root: Path) -> list[Path]:
    return sorted((root / "snapshots").glob("*.snap"))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _backup(data_dir: Path, root: Path) -> dict[str, Any]:
    """Run `twin backup --to`; seconds, peak RSS, and what it wrote, counted in the folder."""
    chunks, size = _chunks(root), _size(root) if root.exists() else 0
    took, peak, out = _twin("backup", "--to", str(root), "--data-dir", str(data_dir))
    said = re.search(r"([\d,]+) of ([\d,]+) chunks were new", out)
    if said is None:
        raise SystemExit(f"twin backup said nothing of chunks:\n{out}")
    new = _chunks(root) - chunks
    return {
        "took": took,
        "peak": peak,
        "written": _size(root) - size,  # everything: chunks, the snapshot, the folder's files
        "new_chunks": len(new),
        "chunk_bytes": sum(_size(next((root / "chunks").glob(f"*/{name}"))) for name in new),
        "snapshot": _size(_snapshots(root)[-1]),
        "said": f"{said[1]} of {said[2]} chunks new",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB and 10,000 documents")
    parser.add_argument("--files-mib", type=int, help="MiB of files (default 1024)")
    parser.add_argument("--documents", type=int, help="storage documents (default 100,000)")
    args = parser.parse_args()
    files_bytes = 128 * 1024**2 if args.quick else FILES_BYTES
    documents = 10_000 if args.quick else DOCUMENTS
    if args.files_mib is not None:
        files_bytes = args.files_mib * 1024**2
    if args.documents is not None:
        documents = args.documents
    if not Path("/usr/bin/time").exists():
        raise SystemExit("bench/export.py needs /usr/bin/time (apt-get install time)")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        data_dir = scratch / "twin"
        filled = asyncio.run(_fill(data_dir, files_bytes, documents))
        counts = filled["counts"]
        rows = [
            ("fill: files through the Files store, s", f"{filled['files']:.1f}",
             f"{files_bytes / 2**20:,.0f} MiB"),
            ("fill: documents through Storage, s", f"{filled['documents']:.1f}",
             f"{documents:,} documents"),
            ("   the twin counts: files", f"{counts[0]:,}",
             f"{counts[1] / 2**20:,.0f} MiB, {counts[2]:,} documents"),
        ]  # fmt: skip

        def verdict(peak: float) -> str:
            return f"< {TARGET_RSS_MIB:g}  {'meets' if peak < TARGET_RSS_MIB else 'MISSES'}"

        archive = scratch / "twin.archive"
        for label, out, extra in (
            ("archive", archive, ()),
            ("plain (--open)", scratch / "open", ("--open",)),
        ):
            took, peak, _ = _export(data_dir, out, *extra)
            size = _size(out)
            rows += [
                (f"export, {label}: s", f"{took:.1f}", f"{size / 2**20:,.0f} MiB written"),
                ("   MB/s (of the twin's data)", f"{files_bytes / 1e6 / took:,.0f}", ""),
                ("   peak RSS, MiB", f"{peak:.1f}", verdict(peak)),
            ]
            if out.is_dir():
                shutil.rmtree(out)  # room on the disk for what follows

        # the archive into a new data directory, opened with the recovery phrase
        imported = scratch / "imported"
        took, peak, _ = _twin("import", str(archive), "--data-dir", str(imported),
                              stdin=filled["phrase"])  # fmt: skip
        size = _size(archive)
        archive.unlink()
        found = asyncio.run(_count(imported))
        same = "same as the twin" if found == counts else f"DIFFERS from the twin's {counts}"
        rows += [
            ("import of the archive: s", f"{took:.1f}", f"{size / 2**20:,.0f} MiB read"),
            ("   MB/s (of the twin's data)", f"{files_bytes / 1e6 / took:,.0f}", ""),
            ("   peak RSS, MiB", f"{peak:.1f}", verdict(peak)),
            ("   the import counts: files", f"{found[0]:,}",
             f"{found[1] / 2**20:,.0f} MiB, {found[2]:,} documents: {same}"),
        ]  # fmt: skip
        shutil.rmtree(imported)

        # backups: the first, one with nothing changed, one after one file is rewritten
        root = scratch / "backups"
        first = _backup(data_dir, root)
        rows += [
            ("backup, first: s", f"{first['took']:.1f}",
             f"{first['written'] / 2**20:,.1f} MiB written, {first['said']}"),
            ("   MB/s (of the twin's data)", f"{files_bytes / 1e6 / first['took']:,.0f}", ""),
            ("   peak RSS, MiB", f"{first['peak']:.1f}", verdict(first["peak"])),
        ]  # fmt: skip
        again = _backup(data_dir, root)
        rows += [
            ("backup, nothing changed: s", f"{again['took']:.1f}", again["said"]),
            ("   bytes written", f"{again['written']:,}",
             f"{again['chunk_bytes']:,} in chunks, {again['snapshot']:,} the snapshot"),
            ("   peak RSS, MiB", f"{again['peak']:.1f}", verdict(again["peak"])),
        ]  # fmt: skip
        written = filled["written"]
        path, size = next(((p, n) for p, n in written if n == FILE_SIZES[1]), written[0])
        asyncio.run(_rewrite(data_dir, path, size))
        changed = _backup(data_dir, root)
        rows += [
            ("backup, one file rewritten: s", f"{changed['took']:.1f}",
             f"{path}, {size:,} bytes"),
            ("   bytes written", f"{changed['written']:,}",
             f"{changed['written'] / size:.2f}x the file: {changed['chunk_bytes']:,} in "
             f"chunks, {changed['snapshot']:,} the snapshot"),
            ("   new chunks", f"{changed['new_chunks']:,}",
             f"{changed['said']} (the file is {-(-size // 2**20)} chunks of 1 MiB)"),
            ("   peak RSS, MiB", f"{changed['peak']:.1f}", verdict(changed["peak"])),
        ]  # fmt: skip
        took, peak, out = _twin("backup", "verify", str(root), "--data-dir", str(data_dir))
        rows += [
            ("backup verify (the newest): s", f"{took:.1f}", out.strip().splitlines()[-1]),
            ("   MB/s (of the twin's data)", f"{files_bytes / 1e6 / took:,.0f}", ""),
            ("   peak RSS, MiB", f"{peak:.1f}", verdict(peak)),
        ]
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'figure':<{width}}{'value':>10}  more")
    for label, value, more in rows:
        print(f"{label:<{width}}{value:>10}  {more}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {sys.executable}")


if __name__ == "__main__":
    main()
