"""Guards at the twin's door: a rate limit per principal or address, and browser-safety headers."""

from __future__ import annotations

import math
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twin.errors import RateLimited


class RateLimiter:
    """A token bucket per principal or client address: ``rate`` requests a second, bursts up
    to ``burst`` (four times the rate unless given). Buckets that have filled up again are
    forgotten, so strangers from many addresses cannot grow it without bound."""

    MAX_BUCKETS = 10_000

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = rate * 4 if burst is None else burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def _forget_full(self, now: float) -> None:
        refill = self.burst / self.rate  # seconds for an empty bucket to fill again
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
        if len(self._buckets) >= self.MAX_BUCKETS:  # all busy at once: start afresh
            self._buckets.clear()

    def check(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``key``'s bucket; RateLimited when it holds too few."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        burst = self.burst
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * self.rate)
        if tokens < cost:
            wait = math.ceil((cost - tokens) / self.rate)
            raise RateLimited(
                f"too many requests from {key}; the limit is {self.rate:g} a "
                f"second, try again in {wait} s",
                retry_after=wait,
            )
        if key not in self._buckets and len(self._buckets) >= self.MAX_BUCKETS:
            self._forget_full(now)
        self._buckets[key] = (tokens - cost, now)


def _page_policy(frame_ancestors: bytes) -> bytes:
    return (
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        b"object-src 'none'; base-uri 'none'; frame-ancestors " + frame_ancestors + b"; "
        b"form-action 'self'"
    )


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", _page_policy(b"'none'")),
]

# A response that sets ``X-Frame-Options: SAMEORIGIN`` itself (an experience's page inside the
# shell's frame, see twin.shell) may be framed by the twin's own pages, and only by them.
FRAMEABLE = (b"x-frame-options", b"SAMEORIGIN")
_FRAMEABLE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", _page_policy(b"'self'")),
]

# An experience's own files run in an opaque origin, like its page (see twin.shell): an HTML or
# SVG file it ships must not reach the owner's session.
EXPERIENCE_SANDBOX = b"sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals"
_EXPERIENCE_FILE_HEADERS = [*SECURITY_HEADERS, (b"content-security-policy", EXPERIENCE_SANDBOX)]

# The shell's page that holds a notifying experience in a frame: its own scripts and the frame.
FRAME_HOST_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Adds the browser-safety headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        path: str = scope["path"]
        extra = (
            _EXPERIENCE_FILE_HEADERS
            if path.startswith("/x/") and "/static/" in path
            else SECURITY_HEADERS
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                message["headers"] = headers + (
                    _FRAMEABLE_HEADERS if FRAMEABLE in headers else extra
                )
            await send(message)

        await self.app(scope, receive, send_with_headers)
