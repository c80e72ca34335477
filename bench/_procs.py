"""Server processes for the benchmarks: start on a free loopback port, wait, measure, stop."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any TWIN_* setting, so every server runs on its defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    return {**env, **extra}


def twin_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "twin", *args]


def twin_cli(*args: str) -> str:
    """Run a `twin` command on the benchmark's clean environment; its standard output."""
    done = subprocess.run(
        twin_command(*args), capture_output=True, text=True, timeout=60, env=clean_env(), check=True
    )
    return done.stdout.strip()


def bench_token(data_dir: Path, scope: str) -> str:
    """Create a twin in ``data_dir`` and a token named "bench" with ``scope``; the token."""
    twin_cli("init", "--data-dir", str(data_dir))
    return twin_cli(
        "token", "create", "--scope", scope, "--name", "bench", "--data-dir", str(data_dir)
    ).splitlines()[-1]


def twin_serve(data_dir: Path, port: int) -> list[str]:
    return twin_command("serve", "--data-dir", str(data_dir), "--port", str(port))


def bare_serve(port: int, health: Path | None = None, profile: Path | None = None) -> list[str]:
    command = [sys.executable, str(BENCH / "bare_app.py"), "--port", str(port)]
    if health is not None:
        command += ["--health-body", str(health)]
    if profile is not None:
        command += ["--profile-body", str(profile)]
    return command


def get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    """One GET on loopback with the standard library (cheap enough to poll with)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def send(
    port: int, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Server:
    """One server process; ``started`` is the monotonic time just before it was spawned."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float

    @classmethod
    def spawn(
        cls, name: str, command: list[str], port: int, log: Path, env: dict[str, str] | None = None
    ) -> Server:
        handle = log.open("wb")
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env or clean_env(),
        )
        handle.close()
        return cls(name, proc, port, log, started)

    def wait_healthy(
        self, timeout: float = 30.0, every: float = 0.005, path: str = "/api/health"
    ) -> float:
        """Seconds from spawn to the first 200 from ``path`` (polled every ``every`` s)."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log.read_text()[-2000:]}")
            try:
                if get(self.port, path, timeout=2.0)[0] == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(every)
        raise RuntimeError(f"{self.name} did not answer {path} within {timeout:g} s")

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM of the process, in KiB, from /proc/PID/status."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
