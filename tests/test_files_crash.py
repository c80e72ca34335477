"""A twin killed in the middle of a large upload comes back with the file as it was, leaves no
partial content behind, and `twin check` says so; a damaged content file makes it say that."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import twin_command, wait_for

pytestmark = pytest.mark.slow


def content_files(data_dir: Path) -> set[Path]:
    return {p for p in (data_dir / "files").rglob("*") if p.is_file()}


def check(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        twin_command("check", "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sigkill_mid_upload_keeps_the_previous_version(serve: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "twin"
    process = serve(data_dir=data_dir)
    token = (
        subprocess.run(
            twin_command("token", "create", "--scope", "files:*", "--data-dir", str(data_dir)),
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    auth = {"Authorization": f"Bearer {token}"}
    first = os.urandom(5 * 1024 * 1024)
    url = f"{process.url}/api/files/content/Videos/holiday.mp4"
    sent = httpx.put(url + "?parents=1", content=first, headers=auth, timeout=30)
    assert sent.status_code == 201, sent.text
    kept = content_files(data_dir)
    assert len(kept) == 1

    # A second version, 200 MB announced, of which 24 MB arrive before the twin is killed.
    port = int(process.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(
            (
                "PUT /api/files/content/Videos/holiday.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {200 * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        piece = os.urandom(1024 * 1024)
        for _ in range(24):
            conn.sendall(piece)
        wait_for(
            lambda: any(p.stat().st_size > 8 * 1024 * 1024 for p in content_files(data_dir) - kept),
            what="the new version's chunks to reach the disk",
        )
        process.proc.send_signal(signal.SIGKILL)
        process.proc.wait(10)
    assert len(content_files(data_dir)) == 2  # the half-written version is still there

    again = serve(data_dir=data_dir)
    got = httpx.get(f"{again.url}/api/files/content/Videos/holiday.mp4", headers=auth, timeout=30)
    assert got.status_code == 200 and got.content == first
    wait_for(lambda: content_files(data_dir) == kept, what="the clean-up of the cut-short upload")
    listing = httpx.get(f"{again.url}/api/files/tree/Videos", headers=auth).json()
    assert [(e["name"], e["size"]) for e in listing["entries"]] == [("holiday.mp4", len(first))]

    checked = check(data_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok      vault database (integrity check)" in checked.stdout
    assert "ok      vault data" in checked.stdout

    (path,) = kept
    path.write_bytes(path.read_bytes()[:-100])
    damaged = check(data_dir)
    assert damaged.returncode == 1
    assert f"FAILED  files: content file {path.name} is" in damaged.stdout
