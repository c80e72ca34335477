"""The WebDAV door with real clients against a real `twin serve`: Debian's litmus suites and an
rclone copy / check / sync round trip."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
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


def rclone_runner(process: Process, token: str, home: Path, vendor: str) -> Callable[..., str]:
    """Runs rclone against the twin as the remote ``twin:``, configured by environment only."""
    rclone = need("rclone")
    obscured = subprocess.run(
        [rclone, "obscure", token], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    env = {
        **os.environ,
        "HOME": str(home),  # no config file of the machine's user, none written either
        "RCLONE_CONFIG": str(home / "absent.conf"),
        "RCLONE_CONFIG_TWIN_TYPE": "webdav",
        "RCLONE_CONFIG_TWIN_URL": f"{process.url}/dav/",
        "RCLONE_CONFIG_TWIN_VENDOR": vendor,
        "RCLONE_CONFIG_TWIN_USER": "me",
        "RCLONE_CONFIG_TWIN_PASS": obscured,
        "TZ": "UTC",  # listings show times in UTC
    }

    def run(*args: str) -> str:
        """rclone's output (standard output, then its log)."""
        done = subprocess.run([rclone, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + "\n" + done.stderr

    return run


def test_rclone_copy_check_and_sync_round_trip(dav: tuple[Process, str], tmp_path: Path) -> None:
    process, token = dav
    run = rclone_runner(process, token, tmp_path, "other")
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


def test_rclone_owncloud_mode_keeps_times_and_compares_digests(
    dav: tuple[Process, str], tmp_path: Path
) -> None:
    """With vendor=owncloud rclone sends each file's time (X-OC-Mtime) and reads the content's
    digests (oc:checksums): check compares hashes without downloading, and sync sends a file
    edited without changing its size."""
    process, token = dav
    run = rclone_runner(process, token, tmp_path, "owncloud")
    local = tmp_path / "tree"
    files = {"a.txt": b"same size 1\n", "sub/ü 🐙.bin": os.urandom(3 * 1024 * 1024 + 7)}
    for name, content in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(content)
        os.utime(local / name, (1_700_000_000, 1_700_000_000))
    run("copy", str(local), "twin:oc")
    checked = run("check", str(local), "twin:oc")
    assert "0 differences found" in checked and "could not be checked" not in checked, checked
    listing = run("lsl", "twin:oc")
    assert listing.count("2023-11-14 22:13:20") == 2, listing  # the files' own time, kept

    (local / "a.txt").write_bytes(b"same size 2\n")  # same length, new time
    run("sync", str(local), "twin:oc")
    got = httpx.get(f"{process.url}/dav/oc/a.txt", auth=("me", token))
    assert got.content == b"same size 2\n"
    assert "0 differences found" in run("check", str(local), "twin:oc")


def test_digests_are_kept_for_the_clients_that_compare_them(dav: tuple[Process, str]) -> None:
    """ownCloud-style clients (X-OC-Mtime or OC-Checksum on the PUT) get oc:checksums with
    the content's real SHA-1 and MD5; other uploads are spared the hashing and have none."""
    process, token = dav
    content = os.urandom(2 * 1024 * 1024 + 5)  # chunk files, not a sealed row
    asked = (
        b'<D:propfind xmlns:D="DAV:" xmlns:oc="http://owncloud.org/ns"><D:prop>'
        b"<oc:checksums/></D:prop></D:propfind>"
    )

    def put_and_look(name: str, headers: dict[str, str]) -> str:
        url = f"{process.url}/dav/{name}"
        sent = httpx.put(url, content=content, auth=("me", token), headers=headers)
        assert sent.status_code == 201, sent.text
        found = httpx.request(
            "PROPFIND",
            url,
            content=asked,
            auth=("me", token),
            headers={"Depth": "0", "Content-Type": "application/xml"},
        )
        assert found.status_code == 207
        return found.text

    expected = f"SHA1:{hashlib.sha1(content).hexdigest()} MD5:{hashlib.md5(content).hexdigest()}"
    assert expected in put_and_look("digests-oc.bin", {"X-OC-Mtime": "1700000000"})
    assert expected in put_and_look("digests-sum.bin", {"OC-Checksum": "SHA1:whatever"})
    plain = put_and_look("digests-plain.bin", {})
    assert "404 Not Found" in plain and "SHA1:" not in plain
