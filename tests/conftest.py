"""Shared fixtures: in-process twins on fresh data directories, and real `twin serve` processes."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from authenticator import Authenticator, owner_headers, register_passkey

from twin.app import create_app
from twin.core import Twin, initialize
from twin.settings import Settings
from twin.shell import COOKIE


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Running:
    """An in-process twin with an HTTP client on its app."""

    twin: Twin
    client: httpx.AsyncClient
    settings: Settings

    async def token(self, *scopes: str, name: str = "test") -> str:
        _, secret = await self.twin.tokens.create(frozenset(scopes), name)
        return str(secret)

    async def auth(self, *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(*scopes)}"}

    async def register(
        self,
        device: Authenticator,
        link: str | None = None,
        *,
        cookie: str | None = None,
        name: str = "",
    ) -> httpx.Response:
        """Create a passkey on ``device`` as passkey.js does: by a link, or signed in."""
        return await register_passkey(self.client, device, link, cookie=cookie, name=name)

    async def login(self, device: Authenticator, **get: Any) -> httpx.Response:
        """Sign in with a passkey on ``device``, as the login page does."""
        start = await self.client.post("/auth/login/options", json={}, headers=owner_headers())
        assert start.status_code == 200, start.text
        body = {
            "ceremony": start.json()["ceremony"],
            "credential": device.get(start.json()["publicKey"], **get),
        }
        response = await self.client.post("/auth/login", json=body, headers=owner_headers())
        self.client.cookies.clear()
        return response

    async def sign_in(self, device: Authenticator | None = None) -> str:
        """Create a passkey through a fresh setup link; returns the session cookie's secret."""
        return await passkey_session(self.client, await self.twin.sessions.create_link(), device)


async def passkey_session(
    client: httpx.AsyncClient, link: str, device: Authenticator | None = None, name: str = ""
) -> str:
    """Spend a setup link on a new passkey; returns the session cookie's secret."""
    response = await register_passkey(client, device or Authenticator(), link, name=name)
    assert response.status_code == 200, response.text
    return response.cookies[COOKIE]


def process_session(process: Process, link: str, name: str = "") -> str:
    """``passkey_session`` against a `twin serve` process, whose passkeys are for localhost."""
    device = Authenticator(origin=process.url.replace("127.0.0.1", "localhost"))

    async def register() -> str:
        async with httpx.AsyncClient(base_url=process.url, timeout=10) as client:
            return await passkey_session(client, link, device, name)

    return asyncio.run(register())


@asynccontextmanager
async def running_twin(data_dir: Path, **settings: Any) -> AsyncIterator[Running]:
    config = Settings(data_dir=data_dir, rate_limit=settings.pop("rate_limit", 0), **settings)
    if not config.key_path.exists():
        initialize(config)
    twin = await Twin.open(config)
    await twin.start()
    app = create_app(twin)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost:8470"
        ) as client:
            yield Running(twin, client, config)
    finally:
        await twin.stop()


@pytest.fixture
async def tw(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_twin(tmp_path / "twin") as running:
        yield running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """A real `twin serve` process on loopback."""

    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def twin_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "twin", *args]


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_twin(
    root: Path,
    *extra: str,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    port: int | None = None,
) -> Process:
    """Start `twin serve` on a free port (or ``port``; its log in ``root``) and wait until it
    answers."""
    port = port or free_port()
    data_dir = data_dir or root / f"twin-{port}"
    log = root / f"serve-{port}.log"
    if log.exists():  # the same twin started again on its port: keep the earlier log
        log = root / f"serve-{port}-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "TWIN_RATE_LIMIT": "0", **(env or {})}
    with log.open("w") as handle:
        proc = subprocess.Popen(
            twin_command("serve", "--data-dir", str(data_dir), "--port", str(port), *extra),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=full_env,
            text=True,
        )
    if stdin:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    process = Process(proc, f"http://127.0.0.1:{port}", data_dir, log)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"twin serve exited early:\n{process.output()}")
        try:
            return httpx.get(process.url + "/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, what="twin serve to answer /api/health")
    except BaseException:
        stop_twin(process)
        raise
    return process


def stop_twin(process: Process) -> None:
    process.proc.terminate()
    try:
        process.proc.wait(10)
    except subprocess.TimeoutExpired:
        process.proc.kill()
        process.proc.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start `twin serve` processes; each is stopped at the end of the test."""
    started: list[Process] = []

    def start(*extra: str, **options: Any) -> Process:
        process = start_twin(tmp_path, *extra, **options)
        started.append(process)
        return process

    yield start
    for process in started:
        stop_twin(process)


def tiny_png() -> bytes:
    """A valid 1×1 RGB PNG, built chunk by chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x80\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
