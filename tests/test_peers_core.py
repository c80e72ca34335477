"""The peer core in process: message types a capability registers (and the mistakes refused),
a handler that fails and is retried without running twice, status callbacks, expiry in the
outbox, a locked twin's inbox, and a peer that is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from twin import BadInput, Capability, Message, MessageType, PluginError, TooLarge
from twin.admin import admin_builtin
from twin.app import create_app
from twin.core import Twin, initialize
from twin.identity import Identity
from twin.manifest import parse_manifest
from twin.peers import Peers, address_hint, seal
from twin.registry import find_sources
from twin.settings import Settings

pytestmark = pytest.mark.anyio


class Relay(Capability):
    """A test capability: records what arrives and what becomes of what it sent."""

    fail_next = 0

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.arrived: list[Message] = []
        self.states: list[tuple[str, str, str | None]] = []

    def messages(self) -> Sequence[MessageType]:
        return [
            MessageType("relay.ping", self.on_ping, max_body=1024, on_status=self.on_status),
            MessageType("relay.short", self.on_ping, ttl=1, on_status=self.on_status),
            MessageType("relay.echo", self.on_ping, max_body=1024, answer=self.echo),
        ]

    async def echo(self, message: Message) -> AsyncIterator[bytes]:
        """A request: answers with the body's text, three times over, in three pieces."""
        text = str(message.body.get("text", "")).encode()

        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield text

        return pieces()

    async def on_ping(self, message: Message) -> None:
        if Relay.fail_next:
            Relay.fail_next -= 1
            raise RuntimeError("the disk hiccuped")
        self.arrived.append(message)

    async def on_status(self, envelope_id: str, state: str, error: str | None) -> None:
        self.states.append((envelope_id, state, error))


MANIFEST = parse_manifest(
    {"id": "relay", "name": "Relay", "version": "1.0.0", "permissions": {}}, "test"
)


@asynccontextmanager
async def twin_with(
    data_dir: Path, *capabilities: Any, **settings: Any
) -> AsyncIterator[tuple[Twin, httpx.AsyncClient]]:
    config = Settings(data_dir=data_dir, rate_limit=0, **settings)
    if not config.key_path.exists():
        initialize(config)
    twin = await Twin.open(config)
    builtin = [admin_builtin(twin), *capabilities]
    await twin.start(find_sources(), builtin)
    transport = httpx.ASGITransport(app=create_app(twin))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield twin, client
    finally:
        await twin.stop()


def relay_of(twin: Twin) -> Relay:
    capability = twin.registry.loaded["relay"].capability
    assert isinstance(capability, Relay)
    return capability


RELAY = (Relay, MANIFEST, Path(__file__).parent)


async def test_a_failing_handler_is_retried_and_then_runs_once(tmp_path: Path) -> None:
    sender = Identity.generate()
    async with twin_with(tmp_path / "t", RELAY) as (twin, client):
        await twin.peers.pin(sender.did, address_hint(sender, ["http://127.0.0.1:9"]))
        envelope = seal(sender, twin.did, "relay.ping", {"n": 1}, ttl=600)
        Relay.fail_next = 1
        first = await client.post("/p2p/v1/inbox", json=envelope)
        assert first.status_code == 503
        assert first.json()["error"]["code"] == "try_later" and first.json()["retry"] is True
        assert first.json()["receipt"]["ids"] == []
        assert relay_of(twin).arrived == []
        again = await client.post("/p2p/v1/inbox", json=envelope)
        assert again.status_code == 202
        third = await client.post("/p2p/v1/inbox", json=[envelope])
        assert third.json()["results"] == [{"id": envelope["id"], "ok": True}]
        arrived = relay_of(twin).arrived
        assert [(m.body, m.sender, m.known) for m in arrived] == [({"n": 1}, sender.did, True)]


async def test_a_batch_stops_where_an_envelope_must_wait(tmp_path: Path) -> None:
    sender = Identity.generate()
    async with twin_with(tmp_path / "t", RELAY) as (twin, client):
        await twin.peers.pin(sender.did)
        batch = [seal(sender, twin.did, "relay.ping", {"n": n}, ttl=600) for n in range(4)]
        batch[1] = {**batch[1], "sig": batch[0]["sig"]}  # refused for good: order goes on
        Relay.fail_next = 0
        answer = await client.post("/p2p/v1/inbox", json=batch[:3])
        results = answer.json()["results"]
        assert answer.status_code == 200
        assert [r.get("ok", r.get("error", {}).get("code")) for r in results] == [
            True,
            "invalid_signature",
            True,
        ]
        Relay.fail_next = 1
        answer = await client.post("/p2p/v1/inbox", json=batch[3:] + batch[2:3])
        codes = [r.get("ok", r.get("error", {}).get("code")) for r in answer.json()["results"]]
        assert codes == ["try_later", "not_tried"]  # what follows waits, to keep the order
        answer = await client.post("/p2p/v1/inbox", json=batch[3:] + batch[2:3])
        codes = [r.get("ok", r.get("error", {}).get("code")) for r in answer.json()["results"]]
        assert codes == [True, True]  # batch[2] again: acknowledged, not handled twice
        assert [m.body["n"] for m in relay_of(twin).arrived] == [0, 2, 3]


async def test_types_are_checked_when_a_capability_registers_them(tmp_path: Path) -> None:
    async with twin_with(tmp_path / "t") as (twin, _):
        peers: Peers = twin.peers

        async def nothing(message: Message) -> None:
            return None

        for types, says in (
            ([MessageType("chat.message", nothing)], "must start with 'relay.'"),
            ([MessageType("relay", nothing)], "must look like"),
            ([MessageType("relay.Ping", nothing)], "must look like"),
            ([MessageType("relay.a", nothing), MessageType("relay.a", nothing)], "twice"),
            ([MessageType("relay.a", nothing, ttl=40 * 86400)], "ttl"),
            (["relay.a"], "not a twin.MessageType"),
        ):
            with pytest.raises(PluginError, match=says):
                peers.register("relay", types)  # type: ignore[arg-type]
        assert not any(name.startswith("relay.") for name in peers.types)
        channel = peers.channel("relay")
        with pytest.raises(PluginError, match="only send its own"):
            await channel.send(twin.did, "contacts.accept", {})
        with pytest.raises(PluginError, match="only sign statements of its own"):
            channel.sign({"type": "twin.address"})


async def test_what_cannot_be_delivered_waits_then_fails_when_it_expires(tmp_path: Path) -> None:
    nobody = Identity.generate()  # its address answers nothing: a closed port on loopback
    async with twin_with(tmp_path / "t", RELAY, peer_backoff=0.2) as (twin, _):
        relay = relay_of(twin)
        channel = twin.peers.channel("relay")
        peer = await channel.pin(nobody.did, address_hint(nobody, ["http://127.0.0.1:9"]))
        sent = await channel.send(nobody.did, "relay.short", {"hello": "?"})
        assert (await channel.delivery(sent)).state == "queued"  # type: ignore[union-attr]
        with anyio.fail_after(10):
            while (delivery := await channel.delivery(sent)) is None or delivery.state != "failed":
                await anyio.sleep(0.05)
        assert delivery.error == "it expired before the peer took it"
        assert delivery.attempts >= 1
        assert (sent, "failed", "it expired before the peer took it") in relay.states
        health = await channel.health((await channel.peer(nobody.did)) or peer)
        assert health.failed == 1 and health.queued == 0
        assert "cannot connect to http://127.0.0.1:9" in (health.last_error or "")
        assert await twin.peers.channel("other").delivery(sent) is None  # not another's to read


async def test_a_locked_twin_asks_peers_to_come_back(tmp_path: Path) -> None:
    config = Settings(data_dir=tmp_path / "t", rate_limit=0)
    initialize(config, passphrase="correct horse battery")
    twin = await Twin.open(config)  # sealed and no passphrase: it starts locked
    await twin.start()
    try:
        transport = httpx.ASGITransport(app=create_app(twin))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            sender = Identity.generate()
            envelope = seal(sender, twin.did, "relay.ping", {}, ttl=60)
            answer = await client.post("/p2p/v1/inbox", json=envelope)
            assert answer.status_code == 423
            assert answer.json()["error"]["code"] == "locked"
    finally:
        await twin.stop()


async def test_an_unknown_type_from_a_contact_is_refused_for_good(tmp_path: Path) -> None:
    sender = Identity.generate()
    async with twin_with(tmp_path / "t") as (twin, client):
        await twin.peers.pin(sender.did)
        envelope = seal(sender, twin.did, "chess.move", {"move": "e4"}, ttl=60)
        answer = await client.post("/p2p/v1/inbox", json=envelope)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "unknown_type"
        assert answer.json()["retry"] is False
        assert "chess.move" in answer.json()["error"]["message"]


async def test_the_outbox_is_sealed_at_rest(tmp_path: Path) -> None:
    nobody = Identity.generate()
    async with twin_with(tmp_path / "t", RELAY, peer_backoff=60) as (twin, _):
        channel = twin.peers.channel("relay")
        await channel.pin(nobody.did, address_hint(nobody, ["http://127.0.0.1:9"]))
        await channel.send(nobody.did, "relay.ping", {"text": "a secret plan"})
        await twin.db.flush()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "t").glob("twin.db*"))
    assert b"twin_outbox" in raw  # the database is there to be read
    for needle in (b"a secret plan", nobody.did.encode(), b"relay.ping", b"127.0.0.1:9"):
        assert needle not in raw


class Slow(Relay):
    """A relay whose handler waits until the test lets it go: two copies can then overlap."""

    release: asyncio.Event | None = None

    async def on_ping(self, message: Message) -> None:
        if Slow.release is not None:
            await Slow.release.wait()
        self.arrived.append(message)


async def test_copies_of_one_envelope_are_handled_once_even_at_once(tmp_path: Path) -> None:
    sender = Identity.generate()
    Slow.release = asyncio.Event()
    Relay.fail_next = 0
    async with twin_with(tmp_path / "t", (Slow, MANIFEST, Path(__file__).parent)) as (twin, client):
        await twin.peers.pin(sender.did)
        envelope = seal(sender, twin.did, "relay.ping", {"n": 1}, ttl=600)
        first = asyncio.ensure_future(client.post("/p2p/v1/inbox", json=[envelope]))
        while not twin.peers.inbox._in_flight:  # the first copy is in its handler
            await asyncio.sleep(0.01)
        second = await client.post("/p2p/v1/inbox", json=envelope)
        assert second.status_code == 503 and second.json()["error"]["code"] == "in_progress"
        Slow.release.set()
        assert (await first).json()["results"] == [{"id": envelope["id"], "ok": True}]
        again = await client.post("/p2p/v1/inbox", json=[envelope, envelope, envelope])
        assert [r.get("ok") for r in again.json()["results"]] == [True, True, True]
        assert len(relay_of(twin).arrived) == 1
    Slow.release = None


async def test_only_a_signed_refusal_is_for_good(tmp_path: Path) -> None:
    """The receipt lists the refusals of envelopes whose signature held: an answer made up by
    someone else, or a receipt obtained with junk in a contact's name, fails nothing."""
    alice, mallory = Identity.generate(), Identity.generate()
    async with twin_with(tmp_path / "t", RELAY) as (twin, client):
        await twin.peers.pin(alice.did)
        genuine = seal(alice, twin.did, "chess.move", {"move": "e4"}, ttl=60)
        forged = seal(mallory, twin.did, "relay.ping", {}, ttl=60)
        forged = {**forged, "from": alice.did}
        answer = (await client.post("/p2p/v1/inbox", json=[genuine, forged])).json()
        codes = [r["error"]["code"] for r in answer["results"]]
        assert codes == ["unknown_type", "invalid_signature"]
        assert answer["receipt"]["refused"] == [genuine["id"]]
        assert answer["receipt"]["ids"] == []
        huge = await client.post("/p2p/v1/inbox", json={**forged, "from": "did:key:z" + "1" * 900})
        assert huge.status_code == 400 and "too long" in huge.json()["error"]["message"]
        assert "receipt" not in huge.json()  # nothing is signed for a did that is not one


async def test_a_blocked_twin_gets_the_same_answers_as_a_contact(tmp_path: Path) -> None:
    friend, foe = Identity.generate(), Identity.generate()
    async with twin_with(tmp_path / "t", RELAY) as (twin, client):
        await twin.peers.pin(friend.did)
        await twin.peers.channel("contacts").block(foe.did)
        for made in (
            lambda who: seal(who, twin.did, "nosuch.type", {}, ttl=60),
            lambda who: seal(who, twin.did, "relay.ping", {"pad": "x" * 3000}, ttl=60),
        ):
            answers = [await client.post("/p2p/v1/inbox", json=made(w)) for w in (friend, foe)]
            assert answers[0].status_code == answers[1].status_code >= 400
            assert answers[0].json()["error"]["code"] == answers[1].json()["error"]["code"]
        quiet = await client.post(
            "/p2p/v1/inbox", json=seal(foe, twin.did, "relay.ping", {}, ttl=60)
        )
        assert quiet.status_code == 202 and relay_of(twin).arrived == []


async def test_days_of_failures_do_not_stop_the_retries(tmp_path: Path) -> None:
    nobody = Identity.generate()
    async with twin_with(tmp_path / "t", RELAY, peer_backoff=0.05) as (twin, _):
        channel = twin.peers.channel("relay")
        peer = await channel.pin(nobody.did, address_hint(nobody, ["http://127.0.0.1:9"]))
        sent = await channel.send(nobody.did, "relay.ping", {})
        with anyio.fail_after(10):
            while (lane := twin.peers.outbox._lanes.get(peer.id)) is None or not lane.failures:
                await anyio.sleep(0.02)
            lane.failures = 5000  # about three weeks of tries at the default ten minutes
            tries = (await channel.delivery(sent)).attempts  # type: ignore[union-attr]
            while (await channel.delivery(sent)).attempts < tries + 3:  # type: ignore[union-attr]
                await anyio.sleep(0.02)
        assert (await channel.delivery(sent)).state == "queued"  # type: ignore[union-attr]


async def test_a_body_over_its_type_is_refused_when_sent(tmp_path: Path) -> None:
    nobody = Identity.generate()
    async with twin_with(tmp_path / "t", RELAY) as (twin, _):
        channel = twin.peers.channel("relay")
        await channel.pin(nobody.did)
        with pytest.raises(TooLarge, match="at most 1024 bytes"):
            await channel.send(nobody.did, "relay.ping", {"text": "x" * 2000})
        with pytest.raises(BadInput, match="JSON"):
            await channel.send(nobody.did, "relay.ping", {"when": object()})


async def test_a_request_is_answered_to_a_contact_and_checked_like_an_envelope(
    tmp_path: Path,
) -> None:
    asker, stranger = Identity.generate(), Identity.generate()
    async with twin_with(tmp_path / "t", RELAY) as (twin, client):
        await twin.peers.pin(asker.did)

        def ask(envelope: object) -> Any:
            return client.post("/p2p/v1/fetch", json=envelope)

        first = seal(asker, twin.did, "relay.echo", {"text": "ab"}, ttl=600)
        answer = await ask(first)
        assert answer.status_code == 200 and answer.content == b"ababab"
        assert answer.headers["content-type"] == "application/octet-stream"
        refusals = [
            (seal(stranger, twin.did, "relay.echo", {}, ttl=600), 403, "unknown_sender"),
            (seal(asker, twin.did, "relay.ping", {}, ttl=600), 400, "unknown_type"),
            (seal(asker, twin.did, "relay.echo", {}, ttl=3600), 400, "bad_input"),
            (seal(asker, Identity.generate().did, "relay.echo", {}, ttl=600), 421, "not_for_me"),
            (
                {
                    **seal(asker, twin.did, "relay.echo", {"text": "x"}, ttl=600),
                    "sig": first["sig"],
                },
                400,
                "invalid_signature",
            ),
        ]
        for envelope, status, code in refusals:
            refused = await ask(envelope)
            assert refused.status_code == status, (code, refused.text)
            assert refused.json()["error"]["code"] == code
        for raw in (b"", b"[]", b"{", b'{"from": 5}'):
            bad = await client.post("/p2p/v1/fetch", content=raw)
            assert bad.status_code == 400 and bad.json()["error"]["message"]
        # a request type is never taken by the inbox
        sent = await client.post(
            "/p2p/v1/inbox", json=seal(asker, twin.did, "relay.echo", {}, ttl=600)
        )
        assert sent.status_code == 400 and "/p2p/v1/fetch" in sent.json()["error"]["message"]
        # a blocked twin is told there is nothing there
        await twin.peers.directory.pin(asker.did, state="blocked")
        hidden = await ask(seal(asker, twin.did, "relay.echo", {"text": "ab"}, ttl=600))
        assert hidden.status_code == 404 and relay_of(twin).arrived == []
