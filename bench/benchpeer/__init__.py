"""A capability for bench/peers.py only: it sends ``benchpeer.ping`` envelopes to a contact from
inside the twin (as fast as ``context.peers.send`` returns, at a pace, or one at a time) and
times each one from just before ``send`` to its handler on the other twin.

It is never installed: bench/peers.py copies this folder next to a ``benchpeer-0.dist-info``
whose entry point names it, and puts that directory on the twins' PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from twin import BadInput, Call, Capability, Conflict, api
from twin.api import Endpoint
from twin.peers import Message, MessageType, PeerChannel, State

PING = "benchpeer.ping"
MAX_COUNT = 50_000
MAX_SECONDS = 120.0  # a run stops sending after this long, whatever its count
SERIAL_WAIT = 5.0  # seconds one envelope of a serial run may take to be delivered
MAX_ERRORS = 5  # error texts kept


class Run(msgspec.Struct, forbid_unknown_fields=True):
    did: Annotated[str, msgspec.Meta(max_length=200)]
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]
    rate: Annotated[float, msgspec.Meta(ge=0, le=100_000)] = 0.0  # a second; 0: no pacing
    serial: bool = False  # wait for each envelope to be delivered before the next
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1  # send() calls in flight
    pad: Annotated[int, msgspec.Meta(ge=0, le=32_768)] = 0  # characters of filler in a body
    seconds: Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)] = MAX_SECONDS


class _Sender:
    """What this twin sent since the last reset, and what became of it."""

    def __init__(self) -> None:
        self.run = 0
        self.running = False
        self.stored = 0  # send() returned: the envelope is in the outbox
        self.first_send: float | None = None  # time.time() before the first send()
        self.last_stored: float | None = None  # time.time() after the last send() returned
        self.send_ms = array("d")  # how long each send() took
        self.states = dict.fromkeys(("sent", "delivered", "failed"), 0)
        self.batches = 0  # delivery rounds: groups of "delivered" told without a pause
        self.first_delivered: float | None = None
        self.last_delivered: float | None = None
        self.first_id: str | None = None
        self.last_id: str | None = None
        self.errors: list[str] = []


class _Receiver:
    """What this twin's handler took since the last reset."""

    def __init__(self) -> None:
        self.count = 0
        self.latency_ms = array("d")  # handler time minus the send time in the body
        self.first: float | None = None
        self.last: float | None = None
        self.seen: set[tuple[int, int]] = set()
        self.duplicates = 0
        self.out_of_order = 0
        self.last_index: dict[int, int] = {}


class BenchPeer(Capability):
    """Timed envelopes to a contact; see the module docstring."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        if context.peers is None:
            raise BadInput("benchpeer needs the twin's peers")
        self.peers: PeerChannel = context.peers
        self._out = _Sender()
        self._in = _Receiver()
        self._task: asyncio.Task[None] | None = None
        self._waiting: tuple[str, asyncio.Event] | None = None
        self._in_batch = False

    def messages(self) -> Sequence[MessageType]:
        return [MessageType(PING, self._on_ping, on_status=self._on_status)]

    def routes(self) -> Sequence[Endpoint]:
        return [
            api.post("/runs", self.start, permission="run", body=Run, status=202,
                     summary="Start sending benchmark envelopes to a contact"),
            api.get("/stats", self.stats, permission="run",
                    summary="What was sent and taken since the last reset"),
            api.post("/reset", self.reset, permission="run", summary="Forget the figures"),
        ]  # fmt: skip

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # the receiving side

    async def _on_ping(self, message: Message) -> None:
        now = time.time()
        got = self._in
        body = message.body
        run, index = int(body["run"]), int(body["i"])
        if (run, index) in got.seen:
            got.duplicates += 1
            return
        got.seen.add((run, index))
        if index < got.last_index.get(run, -1):
            got.out_of_order += 1
        got.last_index[run] = index
        got.count += 1
        got.latency_ms.append((now - float(body["t"])) * 1000)
        got.first = got.first or now
        got.last = now

    # the sending side

    async def _on_status(self, envelope_id: str, state: State, error: str | None) -> None:
        out = self._out
        if state in out.states:
            out.states[state] += 1
        if state == "delivered":
            if not self._in_batch:
                # The outbox tells a batch's rows one after the other without yielding to the
                # loop, so this runs once the whole batch has been told.
                self._in_batch = True
                out.batches += 1
                asyncio.get_running_loop().call_soon(self._end_batch)
            out.last_delivered = time.time()
            out.first_delivered = out.first_delivered or out.last_delivered
            if self._waiting is not None and self._waiting[0] == envelope_id:
                self._waiting[1].set()
        if error and len(out.errors) < MAX_ERRORS:
            out.errors.append(f"{state}: {error}")

    def _end_batch(self) -> None:
        self._in_batch = False

    async def start(self, call: Call) -> dict[str, Any]:
        run: Run = call.body
        if self._out.running:
            raise Conflict("a run is still sending")
        if await self.peers.peer(run.did) is None:
            raise BadInput("that twin is not a contact yet")
        self._out.run += 1
        self._out.running = True
        self._task = asyncio.get_running_loop().create_task(self._send_all(run, self._out.run))
        return {"run": self._out.run}

    async def _send_all(self, run: Run, number: int) -> None:
        out = self._out
        filler = "x" * run.pad
        began = time.monotonic()
        next_index = 0

        async def send_one(index: int) -> str:
            sent_at = time.time()
            out.first_send = out.first_send or sent_at
            body = {"run": number, "i": index, "t": sent_at, "pad": filler}
            envelope_id: str = await self.peers.send(run.did, PING, body)
            done = time.time()
            out.send_ms.append((done - sent_at) * 1000)
            out.stored += 1
            out.last_stored = done
            out.first_id = out.first_id or envelope_id
            out.last_id = envelope_id
            return envelope_id

        async def worker() -> None:
            nonlocal next_index
            while next_index < run.count and time.monotonic() - began < run.seconds:
                index, next_index = next_index, next_index + 1
                if run.rate:
                    delay = began + index / run.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if run.serial:
                    event = asyncio.Event()
                    # set before anything can be delivered: the lane needs the loop for that
                    self._waiting = (await send_one(index), event)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), SERIAL_WAIT)
                else:
                    await send_one(index)

        try:
            workers = 1 if run.serial else run.concurrency
            await asyncio.gather(*(worker() for _ in range(workers)))
        except Exception as exc:
            if len(out.errors) < MAX_ERRORS:
                out.errors.append(f"send: {type(exc).__name__}: {exc}")
        finally:
            out.running = False
            self._waiting = None

    # figures

    async def stats(self, call: Call) -> dict[str, Any]:
        """Counters; ``?samples=1`` adds every latency and send time, ``?did=`` the outbox."""
        out, got = self._out, self._in
        samples = call.query.get("samples") == "1"
        answer: dict[str, Any] = {
            "sender": {
                "run": out.run,
                "running": out.running,
                "stored": out.stored,
                "first_send": out.first_send,
                "last_stored": out.last_stored,
                "states": out.states,
                "batches": out.batches,
                "first_delivered": out.first_delivered,
                "last_delivered": out.last_delivered,
                "errors": out.errors,
                "send_ms": list(out.send_ms) if samples else None,
            },
            "receiver": {
                "count": got.count,
                "first": got.first,
                "last": got.last,
                "duplicates": got.duplicates,
                "out_of_order": got.out_of_order,
                "latency_ms": list(got.latency_ms) if samples else None,
            },
        }
        did = call.query.get("did")
        if did:
            peer = await self.peers.peer(did)
            if peer is not None:
                health = await self.peers.health(peer)
                answer["outbox"] = {
                    "queued": health.queued,
                    "sent": health.sent,
                    "failed": health.failed,
                    "retry_at": health.retry_at,
                    "last_error": health.last_error,
                }
            for which in ("first_id", "last_id"):
                envelope_id = getattr(out, which)
                delivery = await self.peers.delivery(envelope_id) if envelope_id else None
                if delivery is not None:
                    answer[which] = {"state": delivery.state, "attempts": delivery.attempts}
        return answer

    async def reset(self, call: Call) -> dict[str, Any]:
        if self._out.running:
            raise Conflict("a run is still sending")
        run = self._out.run
        self._out, self._in = _Sender(), _Receiver()
        self._out.run = run  # run numbers stay unique, so a late envelope is not a duplicate
        return {"reset": True}
