"""The WebDAV door with real clients against a real `twin serve`: Debian's litmus suites and an
rclone copy / check / sync round trip."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Process, start_twin, stop_twin, twin_command

pytestmark = pytest.mark.slow

# The twin's default rate limit (the door gets twenty times it): litmus and rclone stay under it.
RATE_LIMIT = "50"


@pytest.fixture(scope="module")
def dav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    """One `twin serve` for the module and a files:* token for it."""
    root = tmp_path_factory.mktemp("dav")
    process = start_twin(root, data_dir=root / "twin", env={"TWIN_RATE_LIMIT": RATE_LIMIT})
    try:
        made = subprocess.run(
            twin_command(
                "token",
                "create",
                "--scope",
                "files:*",
                "--name",
                "dav",
                "--data-dir",
                str(process.data_dir),
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        yield process, made.stdout.strip().splitlines()[-1]
    finally:
        stop_twin(process)


def need(tool: str) -> str:
    found = shutil.which(tool)
    assert found, f"{tool} is not installed: scripts/test installs it with apt-get"
    return found


@pytest.mark.parametrize("suite", ["basic", "copymove", "props", "locks", "http"])
def test_litmus_suite_passes(
    suite: str, dav: tuple[Process, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process, token = dav
    done = subprocess.run(
        [need("litmus"), f"{process.url}/dav/", "me", token],
        env={**os.environ, "TESTS": suite},
        cwd=tmp_path,  # litmus writes its debug.log here
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = re.search(
        r"<- summary for `\w+': of (\d+) tests run: (\d+) passed, (\d+) failed", done.stdout
    )
    with capsys.disabled():
        warned = re.findall(r"WARNING: .*", done.stdout)
        print(f"\n[litmus {suite}] {summary.group(0) if summary else done.stdout[-500:]}")
        for warning in warned:
            print(f"[litmus {suite}] {warning}")
    assert summary, done.stdout + done.stderr
    assert summary.group(3) == "0", done.stdout
    assert summary.group(1) == summary.group(2), done.stdout  # nothing skipped
    assert done.returncode == 0, done.stdout


def make_tree(root: Path) -> dict[str, bytes]:
    """Nested folders, an empty folder, empty and 100 MB files, spaces, unicode and emoji."""
    files = {
        "notes/hello world.txt": b"hello\n",
        "notes/empty": b"",
        "notes/ünïcødé/déjà vu.md": "# déjà vu\n".encode(),
        "notes/ünïcødé/deep 🐙/🎉 party.txt": b"emoji\n",
        "photos/2024/a b c.bin": os.urandom(4096),
        "big.bin": os.urandom(100 * 1024 * 1024),
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    (root / "photos/empty folder").mkdir()
    return files


def test_rclone_copy_check_and_sync_round_trip(dav: tuple[Process, str], tmp_path: Path) -> None:
    process, token = dav
    rclone = need("rclone")
    obscured = subprocess.run(
        [rclone, "obscure", token], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # no config file of the machine's user, none written either
        "RCLONE_CONFIG": str(tmp_path / "absent.conf"),
        "RCLONE_CONFIG_TWIN_TYPE": "webdav",
        "RCLONE_CONFIG_TWIN_URL": f"{process.url}/dav/",
        "RCLONE_CONFIG_TWIN_VENDOR": "other",
        "RCLONE_CONFIG_TWIN_USER": "me",
        "RCLONE_CONFIG_TWIN_PASS": obscured,
    }

    def run(*args: str) -> str:
        """rclone's output (standard output, then its log)."""
        done = subprocess.run([rclone, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + "\n" + done.stderr

    local = tmp_path / "tree"
    files = make_tree(local)
    run("copy", "--create-empty-src-dirs", str(local), "twin:backup")
    # plain WebDAV offers rclone no hash, so check compares every byte
    assert "0 differences found" in run("check", "--download", str(local), "twin:backup")
    listed = set(run("lsf", "-R", "twin:backup").split("\n"))
    assert {*files, "photos/empty folder/", "notes/ünïcødé/deep 🐙/"} <= listed
    big = httpx.get(f"{process.url}/dav/backup/big.bin", auth=("me", token), timeout=60)
    assert big.status_code == 200 and big.content == files["big.bin"]

    (local / "notes/hello world.txt").write_bytes(b"hello again, changed\n")
    (local / "notes/ünïcødé/déjà vu.md").unlink()
    run("sync", "--create-empty-src-dirs", str(local), "twin:backup")
    assert "0 differences found" in run("check", "--download", str(local), "twin:backup")
    listed = set(run("lsf", "-R", "twin:backup").split("\n"))
    assert "notes/ünïcødé/déjà vu.md" not in listed
    changed = httpx.get(f"{process.url}/dav/backup/notes/hello%20world.txt", auth=("me", token))
    assert changed.content == b"hello again, changed\n"
