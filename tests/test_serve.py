"""`twin serve` as a real process on loopback: first run, restarts, tokens from the CLI, the lock,
a clean SIGTERM, and IPv6 loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Process, free_port, process_session, twin_command, wait_for

pytestmark = pytest.mark.slow

NUMBERED_WORD = re.compile(r"\b(\d+)\.\s+([a-z]+)\b")
PASSPHRASE = "a long enough passphrase"


def cli(*args: str | Path) -> str:
    """Run a `twin` verb that must succeed; its standard output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    done = subprocess.run(
        twin_command(*map(str, args)),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def stop(process: Process) -> int:
    """SIGTERM, then the exit code once it has shut down."""
    process.proc.send_signal(signal.SIGTERM)
    return process.proc.wait(15)


def health(process: Process) -> dict[str, Any]:
    response = httpx.get(process.url + "/api/health", timeout=5)
    assert response.status_code == 200
    return dict(response.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def setup_secret(output: str, port: int) -> str:
    found = re.findall(rf"http://localhost:{port}/setup/([A-Za-z0-9_-]+)", output)
    assert found, output
    return str(found[-1])


def report_rss(process: Process, capsys: pytest.CaptureFixture[str]) -> None:
    """Print the server's resident memory; information only, never asserted (bench/ measures)."""
    status = Path(f"/proc/{process.proc.pid}/status").read_text()
    rss = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert rss, status
    with capsys.disabled():
        print(f"\n[info] twin serve RSS after start-up: {int(rss.group(1)) / 1024:.1f} MiB")


def test_first_run_prints_the_phrase_once_and_a_restart_keeps_the_did(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    first = serve()
    report_rss(first, capsys)
    port = first.proc.args[first.proc.args.index("--port") + 1]
    output = first.output()
    did = health(first)["did"]
    assert did in output
    assert "Recovery phrase" in output
    assert [int(n) for n, _ in NUMBERED_WORD.findall(output)] == list(range(1, 25))
    assert f"Listening on http://127.0.0.1:{port}" in output
    secret = setup_secret(output, int(port))

    # The setup link registers the owner's passkey once, and only once.
    page = f"http://localhost:{port}/setup/{secret}"
    assert httpx.get(page, timeout=5).status_code == 200
    cookie = process_session(first, secret)
    home = httpx.get(f"http://localhost:{port}/", cookies={"twin_session": cookie}, timeout=5)
    assert "Your experiences" in home.text
    assert httpx.get(page, timeout=5).status_code == 410

    assert stop(first) in (0, -signal.SIGTERM)
    second = serve(data_dir=first.data_dir)
    again = second.output()
    assert health(second)["did"] == did
    assert "Recovery phrase" not in again
    assert not NUMBERED_WORD.findall(again)
    # Not a terminal, so maybe a log the host's owner reads: no sign-in link, only the way to one
    assert "/setup/" not in again
    assert "run `twin access link` on this machine" in again


def test_a_cli_token_works_on_the_running_twin_until_revoked(serve: Any) -> None:
    process = serve()
    token = cli(
        "token",
        "create",
        "--scope",
        "profile:read",
        "--name",
        "live",
        "--data-dir",
        process.data_dir,
    )
    profile = process.url + "/api/profile/"
    assert httpx.get(profile, timeout=5).status_code == 401
    assert httpx.get(profile, headers=bearer(token), timeout=5).status_code == 200
    cli("token", "revoke", "live", "--data-dir", process.data_dir)

    def refused() -> bool:
        return httpx.get(profile, headers=bearer(token), timeout=5).status_code == 401

    wait_for(refused, timeout=10, what="the running twin to refuse the revoked token")


@pytest.fixture(scope="module")
def sealed_twin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A data dir whose key is sealed, its passphrase file and a profile:* token (the tests
    using it only start servers on it, so it is made once)."""
    tmp_path = tmp_path_factory.mktemp("sealed")
    data_dir = tmp_path / "twin"
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    cli("init", "--data-dir", data_dir, "--passphrase-file", passphrase_file)
    token = cli(
        "token",
        "create",
        "--scope",
        "profile:*",
        "--name",
        "t",
        "--data-dir",
        data_dir,
        "--passphrase-file",
        passphrase_file,
    )
    return data_dir, passphrase_file, token


def test_a_sealed_twin_started_with_its_passphrase_file_is_unlocked(
    serve: Any, sealed_twin: tuple[Path, Path, str]
) -> None:
    data_dir, passphrase_file, token = sealed_twin
    process = serve("--passphrase-file", str(passphrase_file), data_dir=data_dir)
    assert health(process)["locked"] is False
    assert "LOCKED" not in process.output()
    response = httpx.get(process.url + "/api/profile/", headers=bearer(token), timeout=5)
    assert response.status_code == 200


def test_a_sealed_twin_without_its_passphrase_runs_locked_until_unlocked(
    serve: Any, sealed_twin: tuple[Path, Path, str]
) -> None:
    data_dir, _, token = sealed_twin
    process = serve(data_dir=data_dir)  # stdin is not a terminal: nobody to ask
    assert health(process)["locked"] is True
    assert "LOCKED" in process.output()
    with httpx.Client(base_url=process.url, timeout=30) as client:
        locked = client.get("/api/profile/", headers=bearer(token))
        assert locked.status_code == 423
        assert locked.json()["error"]["code"] == "locked"
        wrong = client.post("/api/twin/unlock", json={"passphrase": "not it at all"})
        assert wrong.status_code == 403
        assert PASSPHRASE not in wrong.text
        assert health(process)["locked"] is True
        unlocked = client.post("/api/twin/unlock", json={"passphrase": PASSPHRASE})
        assert unlocked.status_code == 200, unlocked.text
        assert unlocked.json() == {"locked": False}
        assert health(process)["locked"] is False
        assert client.get("/api/profile/", headers=bearer(token)).status_code == 200
    assert PASSPHRASE not in process.output()


def test_sigterm_stops_cleanly_and_data_survives_a_restart(serve: Any) -> None:
    process = serve()
    token = cli("token", "create", "--scope", "profile:*", "--data-dir", process.data_dir)
    written = httpx.put(
        process.url + "/api/profile/",
        headers=bearer(token),
        timeout=5,
        json={"display_name": "Ada Lovelace", "bio": "Notes on the engine"},
    )
    assert written.status_code == 200, written.text

    code = stop(process)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so that the parent sees
    # how it ended: -15 (143 from a shell) is a clean stop here, as 0 would be.
    assert code in (0, -signal.SIGTERM), code
    log = process.output()
    assert "Traceback" not in log
    assert "Application shutdown complete" in log

    again = serve(data_dir=process.data_dir)
    read = httpx.get(again.url + "/api/profile/", headers=bearer(token), timeout=5)
    assert read.status_code == 200
    assert read.json()["display_name"] == "Ada Lovelace"
    assert read.json()["bio"] == "Notes on the engine"


def _ipv6_loopback_port() -> int | None:
    if not socket.has_ipv6:
        return None
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            return int(s.getsockname()[1])
    except OSError:
        return None


def test_serve_listens_on_ipv6_loopback(tmp_path: Path) -> None:
    port = _ipv6_loopback_port()
    if port is None:
        pytest.skip("this machine has no IPv6 loopback (::1)")
    url = f"http://[::1]:{port}"
    log = tmp_path / "serve.log"
    env = {**os.environ, "TWIN_RATE_LIMIT": "0"}
    with log.open("w") as handle:
        proc = subprocess.Popen(
            twin_command(
                "serve", "--host", "::1", "--port", str(port), "--data-dir", str(tmp_path / "twin")
            ),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"twin serve exited early:\n{log.read_text()}")
            try:
                return httpx.get(url + "/api/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, what="twin serve to answer on [::1]")
        assert httpx.get(url + "/api/health", timeout=5).json()["status"] == "ok"
        assert f"Listening on http://[::1]:{port}" in log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()


def test_a_second_server_on_the_same_data_dir_is_refused(serve: Any) -> None:
    twin = serve()
    second = subprocess.run(
        twin_command("serve", "--data-dir", str(twin.data_dir), "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert second.returncode == 1
    assert "already served by twin serve (pid" in second.stderr
    assert "Traceback" not in second.stderr
    assert health(twin)["status"] == "ok"


def test_a_busy_port_is_said_plainly_before_anything_is_created(serve: Any, tmp_path: Path) -> None:
    twin = serve()
    port = twin.url.rsplit(":", 1)[1]
    fresh = tmp_path / "never-created"
    busy = subprocess.run(
        twin_command("serve", "--data-dir", str(fresh), "--port", port),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert busy.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr and "--port" in busy.stderr
    assert "Traceback" not in busy.stderr
    assert not fresh.exists(), "a twin was created although it could not be served"


def test_an_endless_request_head_is_refused_without_filling_memory(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    twin = serve()
    host, port = "127.0.0.1", int(twin.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        try:
            for _ in range(64):  # up to 64 MiB, bounded
                conn.sendall(b"a" * 1024 * 1024)
        except OSError:
            pass  # the twin closed the connection: what we want
        answer = b""
        try:
            while chunk := conn.recv(4096):
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{twin.proc.pid}/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    with capsys.disabled():
        print(f"\n[info] twin serve peak RSS after a 64 MiB header attempt: {rss / 1024:.1f} MiB")
    assert health(twin)["status"] == "ok"
    # an ordinary large body is not a large head: a 400 KiB picture still goes through
    token = cli("token", "create", "--scope", "profile:write", "--data-dir", twin.data_dir).strip()
    picture = b"\x89PNG\r\n\x1a\n" + b"\x00" * 400_000
    put = httpx.put(
        twin.url + "/api/profile/avatar",
        content=picture,
        headers={**bearer(token), "Content-Type": "image/png"},
    )
    assert put.status_code == 200


def test_a_request_the_parser_cannot_read_gets_a_json_400(serve: Any) -> None:
    """Raw (not percent-encoded) UTF-8 or invalid bytes in a path never reach the app: the
    HTTP parser refuses them, and the answer still says what is wrong, as JSON."""
    twin = serve()
    host, port = "127.0.0.1", int(twin.url.rsplit(":", 1)[1])
    for path in (b"/dav/\xff\xfe.txt", "/dav/café.txt".encode()):
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.sendall(b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nevil")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"application/json" in head
        error = json.loads(body)["error"]
        assert error["code"] == "bad_request" and "percent-encoded as UTF-8" in error["message"]
    assert health(twin)["status"] == "ok"
