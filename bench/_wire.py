"""HTTP/1.1 on raw loopback sockets for the storage benchmark: one keep-alive connection at a
time, responses parsed by hand (Content-Length or chunked), and streams read as they come.

Latency at concurrency 1 is measured with it, so it does as little as a client can: no
pooling, no redirects, no decoding beyond framing.
"""

from __future__ import annotations

import select
import socket
import statistics
import time
from dataclasses import dataclass

from _procs import HOST

_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes


def parse(buffer: bytes | bytearray) -> tuple[Response, int] | None:
    """A complete response at the start of ``buffer`` and how many bytes it took, or None."""
    end = buffer.find(_HEAD_END)
    if end < 0:
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b""), start
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, used = dechunk(buffer, start)
        if used < 0:
            return None
        return Response(status, headers, body), used
    length = int(headers.get("content-length", "0"))
    if len(buffer) < start + length:
        return None
    return Response(status, headers, bytes(buffer[start : start + length])), start + length


def dechunk(buffer: bytes | bytearray, start: int, final: bool = True) -> tuple[bytes, int]:
    """The chunked payload in ``buffer`` from ``start``, and where the framing read so far ends.

    With ``final`` the whole body must be there (the last, empty chunk included), else the
    position is -1; without it, every complete chunk is returned, for a stream still open."""
    payload = bytearray()
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            break
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        if size == 0:
            if len(buffer) < line_end + 4:
                break
            return bytes(payload), line_end + 4
        if len(buffer) < line_end + 2 + size + 2:
            break
        payload += buffer[line_end + 2 : line_end + 2 + size]
        at = line_end + 2 + size + 2
    return bytes(payload), -1 if final else at


def request_bytes(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; ``request`` sends and waits for the whole response."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = bytearray()

    def open(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer.clear()
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, data: bytes) -> None:
        """Send a request, reconnecting once if the server closed the idle connection."""
        try:
            self.open().sendall(data)
        except OSError:
            self.close()
            self.open().sendall(data)

    def feed(self) -> Response | None:
        """Read what arrived (the socket is readable) and return the response once complete."""
        chunk = self.open().recv(1 << 16)
        if not chunk:
            self.close()
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk
        return self.take()

    def take(self) -> Response | None:
        parsed = parse(self.buffer)
        if parsed is None:
            return None
        response, used = parsed
        del self.buffer[:used]
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        for attempt in (1, 2):
            self.send(request_bytes(self.port, method, path, headers, body))
            try:
                while True:
                    response = self.feed()
                    if response is not None:
                        return response
            except ConnectionError:
                if attempt == 2 or self.buffer:
                    raise
        raise AssertionError("unreachable")

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stream:
    """A long response read as it comes (server-sent events, Solid's streaming channel)."""

    def __init__(self, port: int, path: str, headers: dict[str, str], timeout: float) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(request_bytes(port, "GET", path, headers))
        self.raw = bytearray()
        self.status = 0
        self.body_at = -1
        self.chunked = False
        self.read_to = 0  # the framing read so far (chunked) or the payload offset
        self.payload = bytearray()  # what arrived, unframed, not yet taken by the caller

    def readable(self, timeout: float) -> bool:
        return bool(select.select([self.sock], [], [], timeout)[0])

    def feed(self) -> bytes:
        """Read what arrived; returns the new payload (empty until the head is in)."""
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the stream ended")
        self.raw += chunk
        if self.body_at < 0:
            end = self.raw.find(_HEAD_END)
            if end < 0:
                return b""
            head = bytes(self.raw[:end]).decode("latin-1").lower()
            self.status = int(head.split(" ", 2)[1])
            self.chunked = "transfer-encoding: chunked" in head
            self.body_at = self.read_to = end + 4
        if self.chunked:
            new, at = dechunk(self.raw, self.read_to, final=False)
            self.read_to = at
        else:
            new = bytes(self.raw[self.read_to :])
            self.read_to = len(self.raw)
        return new

    def close(self) -> None:
        self.sock.close()


def wait_readable(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    return select.select(socks, [], [], max(0.0, timeout))[0]


@dataclass(frozen=True)
class Latency:
    """Percentiles of a sample of seconds, shown in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        if len(seconds) < 2:
            only = seconds[0] * 1e3 if seconds else float("nan")
            return cls(len(seconds), only, only)
        cuts = statistics.quantiles(seconds, n=100, method="inclusive")
        return cls(len(seconds), cuts[49] * 1e3, cuts[98] * 1e3)

    def __str__(self) -> str:
        return f"{_ms(self.p50_ms)} / {_ms(self.p99_ms)}"


def _ms(value: float) -> str:
    if value != value:  # NaN: nothing measured
        return "-"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def timed(conn: Connection, method: str, path: str, headers: dict[str, str]) -> tuple[float, int]:
    """One request on ``conn``: seconds from send to the whole response, and its status."""
    started = time.perf_counter()
    response = conn.request(method, path, headers)
    return time.perf_counter() - started, response.status
