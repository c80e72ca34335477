"""The outbox: sealed envelopes queued in the vault, one lane per peer that delivers them in
order, in batches, retrying with exponential backoff and jitter until each is acknowledged,
refused or expired."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from twin.db import Database
from twin.errors import BadInput, TwinError
from twin.identity import Identity
from twin.peers._directory import Directory
from twin.peers._envelope import check_receipt
from twin.peers._types import Delivery, Health, Peer, State
from twin.vault import Vault

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("twin.peers")

BATCH = 64  # envelopes in one request
BATCH_BYTES = 512 * 1024
MAX_ANSWER = 1024 * 1024
# Under load a lane waits this long for more before a small batch: many envelopes a request
# cost both twins far less each than a few. One envelope after a quiet spell goes at once.
LINGER = 0.004  # seconds
BUSY = 4  # envelopes in the last request that make a lane busy
FIRST_RETRY = 1.0  # seconds; doubled on each failure in a row, up to the twin's peer_backoff
KEEP_DONE = 7 * 24 * 3600  # delivered and failed rows are kept this long for their state


class _Unreachable(Exception):
    """Nothing reached the peer (no address, connection refused): nothing was sent."""


class _Retry(Exception):
    """The peer got the request but did not take the envelopes; try again later."""

    def __init__(self, reason: str, after: float = 0, status: int = 0) -> None:
        super().__init__(reason)
        self.after = after
        self.status = status


class _Lane:
    __slots__ = ("wake", "task", "failures", "retry_at", "queued", "batch", "busy")

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.failures = 0
        self.retry_at: float | None = None
        self.queued = False  # something was put since the lane's last look
        self.batch = BATCH  # smaller after the peer found a request too large
        self.busy = False  # the last request carried BUSY or more: more are on their way


StatusCallback = Callable[[str, str, State, str | None], Awaitable[None]]


class Outbox:
    """Queues envelopes per peer and delivers them; ``put`` returns once the envelope is stored."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        directory: Directory,
        identity: Callable[[], Identity],
        on_status: StatusCallback,
        max_backoff: float,
    ) -> None:
        self._db = db
        self._box = vault.box("twin", "outbox")
        self._directory = directory
        self._identity = identity
        self._on_status = on_status
        self._max_backoff = max_backoff
        self._lanes: dict[str, _Lane] = {}
        self._client: httpx.AsyncClient | None = None
        self._closing = False

    async def put(self, peer: Peer, envelope: dict[str, Any]) -> None:
        """Store one sealed envelope for ``peer`` and wake its lane."""
        await self._store(peer, envelope, time.time())
        self.wake(peer.id, early=False)

    async def _store(self, peer: Peer, envelope: dict[str, Any], created: float) -> None:
        envelope_id = envelope["id"]
        wire = msgspec.json.encode(envelope)
        await self._db.execute(
            "INSERT INTO twin_outbox (id, peer, type, envelope, state, created, expires) "
            "VALUES (?,?,?,?,'queued',?,?)",
            (
                envelope_id,
                peer.id,
                self._box.seal(envelope["type"], context=envelope_id),
                self._box.seal(wire, context=envelope_id),
                created,
                envelope["expires"],
            ),
        )

    async def waiting(self) -> list[dict[str, Any]]:
        """Every envelope not yet delivered, in order, as an export keeps it: the peer's did
        and the envelope as it goes on the wire (sealed for that peer, signed by this twin)."""
        rows = await self._db.fetchall(
            "SELECT id, peer, envelope, created, expires FROM twin_outbox "
            "WHERE state IN ('queued', 'sent') ORDER BY seq"
        )
        waiting = []
        for row in rows:
            peer = await self._directory.by_id(row["peer"])
            if peer is None or row["envelope"] is None:
                continue
            wire = self._box.open(row["envelope"], context=row["id"])
            waiting.append(
                {
                    "to": peer.did,
                    "created": row["created"],
                    "envelope": msgspec.json.decode(wire),
                }
            )
        return waiting

    async def restore(self, waiting: list[Any]) -> None:
        """The envelopes of :meth:`waiting`, queued again (their peers restored first); they
        go once the twin serves."""
        now = time.time()
        seen: set[str] = set()
        for number, held in enumerate(waiting, 1):
            envelope = held.get("envelope") if isinstance(held, dict) else None
            if (
                not isinstance(envelope, dict)
                or not isinstance(envelope.get("id"), str)
                or not isinstance(envelope.get("type"), str)
                or not isinstance(envelope.get("expires"), int | float)
                or not isinstance(held.get("created"), int | float)
            ):
                raise BadInput(f"line {number} of twin/outbox.jsonl is not a waiting envelope")
            peer = await self._directory.get(str(held.get("to")))
            if peer is None:
                raise BadInput(f"line {number} of twin/outbox.jsonl is for a twin it does not know")
            if envelope["id"] in seen:
                raise BadInput(f"line {number} of twin/outbox.jsonl holds an envelope twice")
            seen.add(envelope["id"])
            if envelope["expires"] > now:  # else it would be dropped unsent anyway
                await self._store(peer, envelope, held["created"])

    def wake(self, peer_id: str, *, early: bool = True) -> None:
        """Try ``peer_id``'s queue now (something arrived from it, it moved, the owner asked);
        with ``early`` False (one more envelope queued) a lane waiting out a failure waits on."""
        if self._closing:
            return
        lane = self._lanes.get(peer_id)
        if lane is None:
            lane = self._lanes[peer_id] = _Lane()
        lane.queued = True
        if lane.task is None or lane.task.done():
            lane.wake.set()
            lane.task = asyncio.get_running_loop().create_task(self._drain(peer_id, lane))
        elif early or not lane.failures:
            lane.wake.set()

    async def resume(self) -> None:
        """Start a lane for every peer with envelopes waiting (after a start or an unlock)."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT peer FROM twin_outbox WHERE state IN ('queued', 'sent')"
        )
        for row in rows:
            self.wake(row["peer"])

    async def close(self) -> None:
        self._closing = True
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _type(self, row: Any) -> str:
        return self._box.open_text(row["type"], context=row["id"])

    def _delivery(self, row: Any) -> Delivery:
        error = row["error"]
        return Delivery(
            id=row["id"],
            type=self._type(row),
            state=row["state"],
            attempts=row["attempts"],
            created=row["created"],
            expires=row["expires"],
            done=row["done"],
            error=self._box.open_text(error, context=row["id"]) if error else None,
        )

    async def peer_of(self, envelope_id: str) -> str | None:
        row = await self._db.fetchone("SELECT peer FROM twin_outbox WHERE id = ?", (envelope_id,))
        return None if row is None else str(row["peer"])

    async def delivery(self, envelope_id: str) -> Delivery | None:
        row = await self._db.fetchone("SELECT * FROM twin_outbox WHERE id = ?", (envelope_id,))
        return None if row is None else self._delivery(row)

    async def health(self, peer: Peer) -> Health:
        # failures before the last delivery are history, not the health of the lane now
        rows = await self._db.fetchall(
            "SELECT state, count(*) AS n FROM twin_outbox WHERE peer = ? "
            "AND (state != 'failed' OR done >= ?) GROUP BY state",
            (peer.id, peer.last_delivered or 0),
        )
        counts = {row["state"]: row["n"] for row in rows}
        lane = self._lanes.get(peer.id)
        return Health(
            queued=counts.get("queued", 0),
            sent=counts.get("sent", 0),
            failed=counts.get("failed", 0),
            last_delivered=peer.last_delivered,
            last_error=peer.last_error,
            retry_at=lane.retry_at if lane is not None and lane.failures else None,
        )

    async def purge(self, now: float) -> int:
        """Forget delivered and failed envelopes a week after they settled."""
        result = await self._db.execute(
            "DELETE FROM twin_outbox WHERE state IN ('delivered', 'failed') AND done < ?",
            (now - KEEP_DONE,),
        )
        return result.rowcount

    async def _settle(self, rows: list[Any], state: State, reason: str | None = None) -> None:
        now = time.time()
        await self._db.executemany(
            "UPDATE twin_outbox SET state = ?, done = ?, envelope = NULL, error = ?, "
            "attempts = attempts + 1 WHERE id = ?",
            [
                (
                    state,
                    now,
                    None if reason is None else self._box.seal(reason, context=r["id"]),
                    r["id"],
                )
                for r in rows
            ],
        )
        for row in rows:
            await self._on_status(self._type(row), row["id"], state, reason)

    async def _drain(self, peer_id: str, lane: _Lane) -> None:
        try:
            while not self._closing:
                lane.wake.clear()
                lane.queued = False
                if await self._round(peer_id, lane):
                    continue
                if not lane.queued:  # nothing was put since the round looked
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a lane must never stop for good with envelopes in it
            log.error(
                "delivery to peer %s failed unexpectedly (%s); it tries again in %.0f s",
                peer_id,
                type(exc).__name__,
                self._max_backoff,
            )
            log.debug("the failure of delivery to peer %s", peer_id, exc_info=True)
            asyncio.get_running_loop().call_later(self._max_backoff, self.wake, peer_id)
        finally:
            if self._lanes.get(peer_id) is lane:
                del self._lanes[peer_id]

    async def _next(self, peer_id: str, lane: _Lane) -> list[Any]:
        return await self._db.fetchall(
            "SELECT id, type, envelope, state, expires FROM twin_outbox "
            "WHERE peer = ? AND state IN ('queued', 'sent') ORDER BY seq LIMIT ?",
            (peer_id, lane.batch),
        )

    async def _round(self, peer_id: str, lane: _Lane) -> bool:
        """Send the next batch; False when nothing is left to send."""
        rows = await self._next(peer_id, lane)
        if lane.busy and 0 < len(rows) < lane.batch and not lane.failures:
            await asyncio.sleep(LINGER)
            rows = await self._next(peer_id, lane)
        lane.busy = len(rows) >= BUSY
        if not rows:
            return False
        now = time.time()
        expired = [r for r in rows if r["expires"] <= now]
        if expired:
            await self._settle(expired, "failed", "it expired before the peer took it")
            return True
        peer = await self._directory.by_id(peer_id)
        if peer is None:
            return False
        if peer.state == "blocked":
            await self._settle(rows, "failed", "you blocked this twin")
            return True
        batch: list[tuple[Any, bytes]] = []
        size = 0
        for row in rows:
            wire = self._box.open(row["envelope"], context=row["id"])
            if batch and size + len(wire) > BATCH_BYTES:
                break
            batch.append((row, wire))
            size += len(wire)
        try:
            taken, refused, waiting = await self._post(peer, batch)
        except _Retry as exc:
            if exc.status == 413:  # the peer takes smaller requests: halve, down to one
                if len(batch) > 1:
                    lane.batch = max(1, len(batch) // 2)
                    return True
                await self._settle([batch[0][0]], "failed", "it is larger than the peer takes")
                return True
            await self._backoff(peer, lane, [r for r, _ in batch], exc)
            return True
        except _Unreachable as exc:
            await self._backoff(peer, lane, [r for r, _ in batch], exc)
            return True
        if taken:
            await self._settle(taken, "delivered")
            await self._directory.delivered(peer, time.time())
        for row, reason in refused:
            await self._settle([row], "failed", reason)
        progressed = len(taken) + len(refused)
        if progressed < len(batch):  # the peer stopped at one it could not take yet
            await self._backoff(peer, lane, [r for r, _ in batch[progressed:]], _Retry(waiting))
            return True
        lane.failures, lane.retry_at = 0, None
        return True

    async def _backoff(self, peer: Peer, lane: _Lane, rows: list[Any], exc: Exception) -> None:
        lane.failures += 1
        reason = str(exc)
        await self._directory.failed(peer, reason)
        sent = [(r["id"],) for r in rows if r["state"] == "queued" and isinstance(exc, _Retry)]
        await self._db.executemany(
            "UPDATE twin_outbox SET attempts = attempts + 1 WHERE id = ?",
            [(r["id"],) for r in rows],
        )
        if sent:
            await self._db.executemany(
                "UPDATE twin_outbox SET state = 'sent' WHERE id = ? AND state = 'queued'", sent
            )
            for row in rows:
                if row["state"] == "queued":
                    await self._on_status(self._type(row), row["id"], "sent", None)
        delay = min(self._max_backoff, FIRST_RETRY * 2 ** min(lane.failures - 1, 30))
        delay = delay / 2 + random.uniform(0, delay / 2)  # jitter, so peers do not retry in step
        if isinstance(exc, _Retry):
            delay = max(delay, min(exc.after, self._max_backoff))
        lane.retry_at = time.time() + delay
        # the reason names the peer's address: it goes to the sealed last_error, not the log
        why = "it cannot be reached" if isinstance(exc, _Unreachable) else "it did not take them"
        log.info("delivery to peer %s waits %.1f s: %s", peer.id, delay, why)
        try:
            await asyncio.wait_for(lane.wake.wait(), delay)
        except TimeoutError:
            pass

    async def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx  # loaded with the first delivery, not at start-up

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(15.0, connect=5.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": "twin"},
            )
        return self._client

    async def _post(
        self, peer: Peer, batch: list[tuple[Any, bytes]]
    ) -> tuple[list[Any], list[tuple[Any, str]], str]:
        """POST a batch; the rows the peer took, those it refused for good (with why), and why
        it stopped before the rest."""
        import httpx

        if not peer.urls:
            raise _Unreachable("no address is known for this twin")
        client = await self._http()
        body = b"[" + b",".join(wire for _, wire in batch) + b"]"
        status, answer, retry_after, last = 0, b"", "", ""
        for url in peer.urls:
            try:
                async with client.stream(
                    "POST",
                    url.rstrip("/") + "/p2p/v1/inbox",
                    content=body,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    status = response.status_code
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_ANSWER:
                            raise _Retry(f"the answer from {url} is over {MAX_ANSWER} bytes")
                        chunks.append(chunk)
                    answer = b"".join(chunks)
                    retry_after = response.headers.get("retry-after", "")
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = f"cannot connect to {url}: {exc or type(exc).__name__}"
                continue
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError):
                last = f"the address {url} cannot be used"
                continue
            except httpx.HTTPError as exc:
                raise _Retry(f"{url} did not answer: {exc or type(exc).__name__}") from None
        else:
            raise _Unreachable(last)
        try:
            decoded = msgspec.json.decode(answer) if answer else {}
        except msgspec.DecodeError:
            decoded = {}
        if status != 200:
            message = ""
            if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
                message = str(decoded["error"].get("message", ""))[:200]
            after = float(retry_after) if retry_after.isdigit() else 0
            raise _Retry(f"the peer answered {status} {message}".strip(), after, status)
        return self._read_answer(peer, batch, decoded)

    def _read_answer(
        self, peer: Peer, batch: list[tuple[Any, bytes]], answer: Any
    ) -> tuple[list[Any], list[tuple[Any, str]], str]:
        try:
            results = answer["results"]
            acked, refusals = check_receipt(answer.get("receipt"), peer.did, self._identity().did)
            if not isinstance(results, list):
                raise TypeError
        except (KeyError, TypeError, AttributeError):
            raise _Retry("the peer's answer is not a twin inbox answer") from None
        except TwinError as exc:
            raise _Retry(f"the peer's receipt does not hold: {exc.message}") from None
        taken: list[Any] = []
        refused: list[tuple[Any, str]] = []
        waiting = "the peer's answer does not cover every envelope"
        for (row, _), result in zip(batch, results, strict=False):
            if not isinstance(result, dict) or result.get("id") != row["id"]:
                break
            if row["id"] in acked:
                taken.append(row)
                continue
            error = result.get("error")
            message = str(error.get("message", ""))[:300] if isinstance(error, dict) else ""
            if row["id"] not in refusals:  # only a signed refusal is for good
                waiting = f"the peer asks to wait: {message}" if message else waiting
                break
            refused.append((row, f"refused: {message}"))
        return taken, refused, waiting
