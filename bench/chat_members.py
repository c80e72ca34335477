"""Many twins in one process, for bench/chat.py's group part: it answers `POST /p2p/v1/inbox`
for any of ``--count`` member identities with the receipt that member would sign, and counts
what came for each, by envelope type.

    python bench/chat_members.py --port PORT --count 999

It takes every envelope addressed to one of its members without opening it (no signature
check, no decryption: those are the receiving twin's cost, measured in bench/peers.py), so
what is timed is the sending twin. `GET /stats` gives the counts and the wall-clock times of
the first and last arrival of each type, `POST /reset` forgets them, `GET /health` answers
once it listens.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from twin.identity import Identity
from twin.peers._envelope import receipt

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
MAX_REQUEST = 4 * 1024 * 1024  # the sender's batches stop at 512 KiB of envelopes


def member(index: int) -> Identity:
    """The ``index``-th simulated member: the same key in this process and in bench/chat.py."""
    return Identity.from_seed(hashlib.sha256(b"twin bench chat member %d" % index).digest())


class Counts:
    """What arrived since the last reset, by envelope type."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        self.requests = 0

    def note(self, envelopes: list[dict[str, Any]], now: float) -> None:
        self.requests += 1
        for envelope in envelopes:
            kind = self.types.setdefault(
                str(envelope.get("type")),
                {"count": 0, "first": now, "last": now, "recipients": set(), "bytes": 0},
            )
            kind["count"] += 1
            kind["last"] = now
            kind["recipients"].add(envelope.get("to"))
            kind["bytes"] += len(envelope.get("body") or "")

    def view(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "types": {
                name: {**kind, "recipients": len(kind["recipients"])}
                for name, kind in self.types.items()
            },
        }


def members_app(count: int) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    identities = {who.did: who for who in (member(i) for i in range(count))}
    counts = [Counts()]

    async def answer(send: Send, status: int, body: object) -> None:
        raw = msgspec.json.encode(body)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    async def inbox(raw: bytes, send: Send) -> None:
        now = time.time()
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            await answer(send, 400, {"error": {"code": "bad_input", "message": "not JSON"}})
            return
        single = isinstance(decoded, dict)
        items = [decoded] if single else decoded
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            await answer(send, 400, {"error": {"code": "bad_input", "message": "no envelopes"}})
            return
        who = identities.get(items[0].get("to"))
        if who is None or any(i.get("to") != who.did for i in items):
            message = "this is not one of the simulated members"
            await answer(send, 421, {"error": {"code": "misdirected", "message": message}})
            return
        counts[0].note(items, now)
        ids = [str(i.get("id")) for i in items]
        body: dict[str, Any] = {
            "results": [{"id": i, "ok": True} for i in ids],
            "receipt": receipt(who, str(items[0].get("from")), ids),
        }
        await answer(send, 202 if single else 200, body)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks, size = [], 0
        while True:
            event = await receive()
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > MAX_REQUEST:
                await answer(send, 413, {"error": {"code": "too_large", "message": "too large"}})
                return
            chunks.append(chunk)
            if not event.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/p2p/v1/inbox":
            await inbox(b"".join(chunks), send)
        elif method == "GET" and path == "/stats":
            await answer(send, 200, counts[0].view())
        elif method == "POST" and path == "/reset":
            counts[0] = Counts()
            await answer(send, 200, {"reset": True})
        elif method == "GET" and path == "/health":
            await answer(send, 200, {"status": "ok", "members": len(identities)})
        else:
            await answer(send, 404, {"error": {"code": "not_found", "message": path[:100]}})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=999)
    args = parser.parse_args()
    uvicorn.run(
        members_app(args.count),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
