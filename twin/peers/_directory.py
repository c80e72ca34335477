"""The twins this one knows: each a pinned key (its did) or a blocked one, with the signed
address hint it last sent; sealed at rest, held in memory once read."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import Any

from twin.db import Database
from twin.errors import BadInput, NotFound
from twin.identity import public_key_from_did
from twin.peers._envelope import check_address
from twin.peers._types import Peer
from twin.vault import Vault

MAX_PEERS = 10_000


class Directory:
    """Pinned and blocked peers, by did; a did not here is a stranger."""

    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self._box = vault.box("twin", "peers")
        self._by_did: dict[str, Peer] | None = None
        self._by_id: dict[str, Peer] = {}
        self._hints: dict[str, dict[str, Any]] = {}

    async def _load(self) -> dict[str, Peer]:
        if self._by_did is None:
            rows = await self._db.fetchall("SELECT * FROM twin_peers")
            peers = [self._peer(row) for row in rows]
            self._by_id = {p.id: p for p in peers}
            self._by_did = {p.did: p for p in peers}
        return self._by_did

    def _peer(self, row: Any) -> Peer:
        did = self._box.open_text(row["did"], context=row["id"])
        hint = None
        if row["address"] is not None:
            hint = json.loads(self._box.open_text(row["address"], context=row["id"]))
            self._hints[row["id"]] = hint
        error = row["last_error"]
        return Peer(
            id=row["id"],
            did=did,
            state=row["state"],
            urls=tuple(hint["urls"]) if hint else (),
            address_expires=hint["expires"] if hint else None,
            created=row["created"],
            last_seen=row["last_seen"],
            last_delivered=row["last_delivered"],
            last_error=self._box.open_text(error, context=row["id"]) if error else None,
        )

    async def get(self, did: str) -> Peer | None:
        return (await self._load()).get(did)

    async def by_id(self, peer_id: str) -> Peer | None:
        await self._load()
        return self._by_id.get(peer_id)

    async def all(self) -> list[Peer]:
        return sorted((await self._load()).values(), key=lambda p: p.created)

    def hint(self, peer_id: str) -> dict[str, Any] | None:
        return self._hints.get(peer_id)

    def _keep(self, peer: Peer) -> Peer:
        assert self._by_did is not None
        self._by_did[peer.did] = peer
        self._by_id[peer.id] = peer
        return peer

    async def pin(self, did: str, hint: object = None, *, state: str = "pinned") -> Peer:
        """Pin ``did`` (or block it), keeping ``hint`` if it is a newer signed address."""
        public_key_from_did(did)
        known = await self._load()
        checked = check_address(hint, did) if hint is not None else None
        peer = known.get(did)
        if peer is None:
            if len(known) >= MAX_PEERS:
                raise BadInput(f"this twin already knows {MAX_PEERS} peers; forget some first")
            peer_id = os.urandom(12).hex()
            peer = Peer(peer_id, did, "pinned", (), None, time.time(), None, None, None)
            await self._db.execute(
                "INSERT INTO twin_peers (id, key, did, state, created) VALUES (?,?,?,?,?)",
                (
                    peer.id,
                    self._box.blind(did),
                    self._box.seal(did, context=peer_id),
                    state,
                    peer.created,
                ),
            )
        if peer.state != state:
            await self._db.execute("UPDATE twin_peers SET state = ? WHERE id = ?", (state, peer.id))
        peer = self._keep(replace(peer, state=state))  # type: ignore[arg-type]
        if checked is not None:
            peer = await self.take_address(peer, checked)
        return peer

    async def restore(self, peers: list[Any]) -> None:
        """The peers of an export (``twin/peers.json``), into an empty directory: each did with
        its state, times and signed address (checked again); none is told our address yet."""
        for held in peers:
            if not isinstance(held, dict) or held.get("state") not in ("pinned", "blocked"):
                raise BadInput("twin/peers.json: each peer needs a did and a state")
            did = held.get("did")
            if not isinstance(did, str):
                raise BadInput("twin/peers.json: a peer has no did")
            created, last_seen = held.get("created"), held.get("last_seen")
            if not isinstance(created, float | int) or not isinstance(
                last_seen, float | int | None
            ):
                raise BadInput(f"twin/peers.json: {did} has bad times")
            peer = await self.pin(did, held.get("hint"), state=held["state"])
            await self._db.execute(
                "UPDATE twin_peers SET created = ?, last_seen = ? WHERE id = ?",
                (created, last_seen, peer.id),
            )
            self._keep(replace(peer, created=created, last_seen=last_seen))

    async def take_address(self, peer: Peer, hint: dict[str, Any]) -> Peer:
        """Keep a checked hint if it is newer than the one held; the peer as it now stands."""
        held = self._hints.get(peer.id)
        if held is not None and held["issued"] > hint["issued"]:
            return peer
        sealed = self._box.seal(json.dumps(hint), context=peer.id)
        await self._db.execute("UPDATE twin_peers SET address = ? WHERE id = ?", (sealed, peer.id))
        self._hints[peer.id] = hint
        return self._change(peer, urls=tuple(hint["urls"]), address_expires=hint["expires"])

    async def forget(self, did: str) -> Peer:
        """Drop a peer, its address and everything still queued for it."""
        peer = (await self._load()).pop(did, None)
        if peer is None:
            raise NotFound("that twin is not a peer of this one")
        self._by_id.pop(peer.id, None)
        self._hints.pop(peer.id, None)
        await self._db.execute("DELETE FROM twin_outbox WHERE peer = ?", (peer.id,))
        await self._db.execute("DELETE FROM twin_peers WHERE id = ?", (peer.id,))
        return peer

    def _change(self, peer: Peer, **changes: Any) -> Peer:
        """The peer as held now (not as a caller read it earlier) with ``changes``."""
        current = self._by_id.get(peer.id)
        if current is None:  # forgotten meanwhile
            return replace(peer, **changes)
        return self._keep(replace(current, **changes))

    def seen(self, peer: Peer, now: float) -> None:
        """Note that an envelope came from ``peer`` (written with the next batch)."""
        if peer.last_seen is None or now - peer.last_seen > 1:
            self._db.enqueue("UPDATE twin_peers SET last_seen = ? WHERE id = ?", (now, peer.id))
            self._change(peer, last_seen=now)

    async def delivered(self, peer: Peer, now: float) -> None:
        last = peer.last_delivered
        if peer.last_error is not None or last is None or now - last > 1:
            await self._db.execute(
                "UPDATE twin_peers SET last_delivered = ?, last_error = NULL WHERE id = ?",
                (now, peer.id),
            )
            self._change(peer, last_delivered=now, last_error=None)

    async def failed(self, peer: Peer, reason: str) -> None:
        if peer.last_error != reason:
            await self._db.execute(
                "UPDATE twin_peers SET last_error = ? WHERE id = ?",
                (self._box.seal(reason, context=peer.id), peer.id),
            )
            self._change(peer, last_error=reason)
