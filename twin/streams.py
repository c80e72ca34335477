"""Live answers: a server-sent event stream that ends when its client goes away, and the wait
between its events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


async def first_of(*events: asyncio.Event, timeout: float) -> bool:
    """Wait until one of ``events`` is set (True) or ``timeout`` passes (False)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when="FIRST_COMPLETED")
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


class EventStream(Response):
    """A ``text/event-stream`` answer that ends as soon as the client goes away (not at the next
    write, as a plain streaming answer would) and then calls ``closed``."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], closed: Callable[[], None]) -> None:
        super().__init__(
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            media_type=self.media_type,
        )
        self.events = events
        self.closed = closed
        del self.headers["content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                try:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": self.raw_headers,
                        }
                    )
                    async for chunk in self.events:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:  # the client went away mid-write
                    pass
                group.cancel_scope.cancel()
        finally:
            self.closed()
