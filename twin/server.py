"""The HTTP server `twin serve` runs: uvicorn, with a bound on request heads, a shutdown that
ends live streams first, and an allocator that keeps large buffers."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD = 64 * 1024
_REFUSAL = (
    b'{"error":{"code":"too_large","message":"the request line and headers are over '
    + str(MAX_HEAD).encode()
    + b' bytes"}}'
)
_UNREADABLE = (
    b'{"error":{"code":"bad_request","message":"this is not an HTTP/1.1 request the twin can '
    b"read: a path must be ASCII, anything else in it percent-encoded as UTF-8 (%C3%A9 for "
    b'\\u00e9), and headers must be well-formed"}}'
)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_large_buffers() -> bool:
    """Have glibc serve buffers up to 4 MiB (a file's 1 MiB chunks) from the heap and keep up to
    32 MiB of it free, instead of a fresh mapping for each: on virtual machines the page faults
    of a fresh mapping cost more than the decryption of its bytes (measured here: 1 MiB chunks
    decrypted at 0.4 GB/s with fresh mappings, 1.5 GB/s reused). False where it does not apply."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024)
            and libc.mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024)
        )
    except (OSError, AttributeError):  # not glibc (musl, say): its own allocator's ways
        return False


class BoundedHttpTools(HttpToolsProtocol):
    """httptools keeps a request's head in memory however long it grows; this answers a head
    over ``MAX_HEAD`` bytes with 431 and closes the connection, so no client can fill memory,
    and a request it cannot parse with the API's JSON 400."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            end = data.find(b"\r\n\r\n")
            self._head += len(data) if end < 0 else end
            if self._head > MAX_HEAD:
                self._refuse()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head = 0

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse (raw UTF-8 in the path, a broken header): the
        API's JSON error saying what is wrong, not uvicorn's "Invalid HTTP request"."""
        self._answer_and_close(b"400 Bad Request", _UNREADABLE)

    def _refuse(self) -> None:
        self._refused = True
        self._answer_and_close(b"431 Request Header Fields Too Large", _REFUSAL)

    def _answer_and_close(self, status: bytes, error: bytes) -> None:
        """Write a JSON error straight to the connection, then close it: for requests that
        never reach the app."""
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: "
            + str(len(error)).encode()
            + b"\r\n\r\n"
            + error
        )
        self.transport.close()


class TwinServer(uvicorn.Server):
    """uvicorn waits for every open response before it stops; a live stream never ends by
    itself, so this sets the twin's ``stopping`` event first, which ends them."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.stopping.set()
        await super().shutdown(sockets)
