"""The change feed's delay: PUT new documents one at a time and time each one's event on a
live stream (the twin's server-sent events, or Solid's StreamingHTTPChannel2023).

One thread waits on both sockets with ``select``, so the reply and the event are each stamped
when they arrive, with nothing else in between.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from _wire import Connection, Latency, Stream, request_bytes, wait_readable
from keywalk import document

WAIT = 5.0  # seconds to wait for one event before counting it missed
LIMIT = 60.0  # seconds at most for the whole series

# new payload of the stream in; (keys whose change it announced, whether the stream is ready) out
Parser = Callable[[bytes], tuple[list[str], bool]]


@dataclass(frozen=True)
class Feed:
    """What the series gave; ``early`` counts events that came before their PUT's reply."""

    events: int
    missed: int
    errors: int
    after_reply: Latency  # from the PUT's 2xx to the event
    after_send: Latency  # from sending the PUT to the event
    early: int  # events that arrived before the PUT's reply


def sse_keys() -> Parser:
    """A parser of a server-sent event stream: new payload in, (keys of changes, ready) out."""
    pending = [""]

    def parse(payload: bytes) -> tuple[list[str], bool]:
        pending[0] += payload.decode()
        *events, pending[0] = pending[0].split("\n\n")
        keys, ready = [], False
        for event in events:
            lines = event.split("\n")
            ready = ready or "event: ready" in lines
            for line in lines:
                if line.startswith("data: "):
                    keys += [k for k in [json.loads(line[6:]).get("key")] if k is not None]
        return keys, ready

    return parse


_OBJECT = re.compile(r"activitystreams#object> <([^>]+)>")


def solid_keys(base: str) -> Parser:
    """A parser of Solid's streaming channel (Turtle notifications, one per chunk): the objects'
    paths under ``base``; the first notification (the container's state) means ready."""

    def parse(payload: bytes) -> tuple[list[str], bool]:
        found = _OBJECT.findall(payload.decode())
        return [url[len(base) :] for url in found if url.startswith(base)], bool(payload)

    return parse


def measure(
    port: int,
    docs: str,
    headers: dict[str, str],
    stream_path: str,
    parse: Parser,
    count: int,
) -> Feed:
    """PUT ``count`` new documents (``docs`` + ``feed/e00000`` …) one at a time; for each, wait
    for its reply and its event on the stream at ``stream_path``."""
    after_reply, after_send = [], []
    missed = errors = early = 0
    stream = Stream(port, stream_path, headers, timeout=WAIT)
    try:
        ready, deadline = False, time.monotonic() + WAIT * 2
        while not ready and time.monotonic() < deadline:
            if stream.readable(0.5):
                ready = parse(stream.feed())[1]
        if not ready or stream.status != 200:
            raise RuntimeError(f"the live stream did not open (status {stream.status})")
        arrived: dict[str, float] = {}
        put_headers = {**headers, "Content-Type": "application/json"}
        with Connection(port) as conn:
            conn.open()
            limit = time.monotonic() + LIMIT
            for i in range(count):
                if time.monotonic() > limit:
                    break
                key = f"feed/e{i:05d}"
                sent = time.perf_counter()
                put = request_bytes(port, "PUT", docs + key, put_headers, document(i))
                conn.send(put)
                replied, wait_until = 0.0, time.monotonic() + WAIT
                while not replied or key not in arrived:
                    if time.monotonic() > wait_until:
                        break
                    ready_socks = wait_readable(
                        [conn.open(), stream.sock], wait_until - time.monotonic()
                    )
                    now = time.perf_counter()
                    for sock in ready_socks:
                        if sock is stream.sock:
                            for seen in parse(stream.feed())[0]:
                                arrived.setdefault(seen, now)
                        elif (response := conn.feed()) is not None:
                            replied = now
                            if not 200 <= response.status < 300:
                                errors += 1
                if not replied or key not in arrived:
                    missed += 1
                    if not replied:  # a late reply must not pass for the next one's
                        conn.close()
                    continue
                after_reply.append(arrived[key] - replied)
                after_send.append(arrived[key] - sent)
                early += arrived[key] < replied
    finally:
        stream.close()
    return Feed(
        len(after_reply),
        missed,
        errors,
        Latency.of(after_reply),
        Latency.of(after_send),
        early,
    )
