"""Twins talking to each other, as real `twin serve` processes on loopback: invites and
requests, notes both ways through the example plugin's message type, a peer offline for a
while, a peer that moved, and every kind of hostile envelope, each refused or limited without
disturbing delivery from the others."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import start_twin, stop_twin, wait_for
from twins import Peer, arrives, befriend

from twin.identity import Identity, b64url
from twin.peers import seal
from twin.peers._envelope import unb64url


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Peer, Peer]]:
    """Alice, Bob and Carol, all contacts of one another; Bob lets each peer send 20
    envelopes a second (bursts of 80), so a flood is quick to show."""
    root = tmp_path_factory.mktemp("trio")
    processes = [
        start_twin(root, "--peer-backoff", "2"),
        start_twin(root, "--peer-backoff", "2", "--peer-rate", "20"),
        start_twin(root, "--peer-backoff", "2"),
    ]
    peers: list[Peer] = []
    try:
        peers += [Peer(p, n) for p, n in zip(processes, ("Alice", "Bob", "Carol"), strict=True)]
        alice, bob, carol = peers
        befriend(alice, bob)
        befriend(bob, carol)
        befriend(carol, alice)
        yield alice, bob, carol
    finally:
        for peer in peers:  # a test may have restarted one
            peer.client.close()
            processes.append(peer.process)
        for process in processes:
            stop_twin(process)


def carol_still_reaches_bob(trio: tuple[Peer, Peer, Peer], tag: str) -> None:
    """What every attack test ends with: a contact's note still arrives, at once."""
    _, bob, carol = trio
    sent = carol.note(bob, f"still here after {tag}")
    arrives(bob, f"still here after {tag}")
    wait_for(lambda: carol.state(sent) == "delivered", 10, "Carol's note to be delivered")


def test_invites_make_contacts_on_both_sides(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, carol = trio
    for one, other in ((alice, bob), (bob, alice), (bob, carol), (carol, alice)):
        person = one.contact(other)
        assert person is not None and person["status"] == "connected"
        assert person["name"] == other.name  # the name they gave themselves
        assert person["address"] == [other.url.replace("127.0.0.1", "localhost")]
    assert alice.contact(bob)["safety_number"] == bob.contact(alice)["safety_number"]  # type: ignore[index]
    assert alice.contact(bob)["safety_number"] != alice.contact(carol)["safety_number"]  # type: ignore[index]


def test_notes_go_both_ways_and_report_delivery(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, carol = trio
    to_bob = alice.note(bob, "Hello Bob, from Alice ✓")
    to_alice = bob.note(alice, "Hi Alice — Bob here 👋")
    arrives(bob, "Hello Bob, from Alice ✓")
    arrives(alice, "Hi Alice — Bob here 👋")
    wait_for(lambda: alice.state(to_bob) == "delivered", 10, "delivered state")
    wait_for(lambda: bob.state(to_alice) == "delivered", 10, "delivered state")
    health = alice.contact(bob)["delivery"]  # type: ignore[index]
    assert health["queued"] == health["sent"] == health["failed"] == 0
    assert health["last_delivered"] is not None and health["last_error"] is None
    assert bob.contact(alice)["last_seen"] is not None  # type: ignore[index]
    # Carol is nobody's go-between: she never saw what Alice and Bob said
    assert "Hello Bob, from Alice ✓" not in carol.entries()


def test_a_peer_offline_for_a_while_gets_everything_once_and_in_order(
    trio: tuple[Peer, Peer, Peer],
) -> None:
    alice, bob, carol = trio
    port = int(bob.url.rsplit(":", 1)[1])
    stop_twin(bob.process)
    sent = [alice.note(bob, f"while you were away {i}") for i in range(10)]
    wait_for(lambda: alice.contact(bob)["delivery"]["last_error"], 10, "a failed try")  # type: ignore[index]
    person = alice.contact(bob)
    assert person is not None
    assert person["delivery"]["queued"] == 10  # nothing reached Bob, so nothing was "sent"
    assert "cannot connect" in person["delivery"]["last_error"]
    assert person["delivery"]["retry_at"] is not None
    assert {alice.state(s) for s in sent} == {"queued"}
    root = bob.process.log.parent
    bob.process = start_twin(
        root, "--peer-backoff", "2", "--peer-rate", "20", data_dir=bob.process.data_dir, port=port
    )
    bob.connect()
    wait_for(lambda: all(alice.state(s) == "delivered" for s in sent), 30, "all ten delivered")
    away = [text for text in bob.entries() if text.startswith("while you were away")]
    assert away == [f"while you were away {i}" for i in range(10)]
    carol_still_reaches_bob(trio, "a restart")


def test_a_peer_that_moves_is_still_reached_after_its_signed_hint(
    trio: tuple[Peer, Peer, Peer],
) -> None:
    alice, bob, carol = trio
    old = alice.url
    stop_twin(alice.process)
    alice.process = start_twin(
        alice.process.log.parent, "--peer-backoff", "2", data_dir=alice.process.data_dir
    )
    alice.connect()
    assert alice.url != old
    new = alice.url.replace("127.0.0.1", "localhost")
    wait_for(lambda: bob.contact(alice)["address"] == [new], 15, "Bob to learn Alice's address")  # type: ignore[index]
    wait_for(lambda: carol.contact(alice)["address"] == [new], 15, "Carol too")  # type: ignore[index]
    sent = bob.note(alice, "found you at your new address")
    arrives(alice, "found you at your new address")
    assert bob.state(sent) == "delivered"


def crafted(sender: Identity, to: Peer, text: str, **options: Any) -> dict[str, Any]:
    return seal(
        sender, to.did, "guestbook.note", {"author": "crafted", "text": text}, ttl=3600, **options
    )


def test_a_replayed_envelope_is_taken_once(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, _ = trio
    envelope = crafted(alice.identity(), bob, "only once, please")
    first = bob.inbox(envelope)
    assert first.status_code == 202, first.text
    again = bob.inbox(envelope)
    assert again.status_code == 202  # acknowledged again (its first answer may have been lost)
    assert again.json()["receipt"]["ids"] == [envelope["id"]]
    assert bob.entries().count("only once, please") == 1
    carol_still_reaches_bob(trio, "a replay")


def test_a_forged_signature_is_refused(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, _ = trio
    mallory = Identity.generate()
    envelope = crafted(alice.identity(), bob, "forged by mallory")
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    response = bob.inbox({**unsigned, "sig": mallory.sign(unsigned)})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert response.json()["receipt"]["ids"] == []
    assert "forged by mallory" not in bob.entries()
    carol_still_reaches_bob(trio, "a forged signature")


def test_a_tampered_body_is_refused(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, _ = trio
    envelope = crafted(alice.identity(), bob, "tampered with")
    raw = bytearray(unb64url(envelope["body"], "body"))
    raw[-20] ^= 0x40
    response = bob.inbox({**envelope, "body": b64url(bytes(raw))})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert "tampered with" not in bob.entries()
    carol_still_reaches_bob(trio, "a tampered body")


def test_an_expired_envelope_is_refused(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, _ = trio
    then = int(time.time()) - 7200
    envelope = seal(
        alice.identity(),
        bob.did,
        "guestbook.note",
        {"author": "x", "text": "stale"},
        ttl=3600,
        now=then,
    )
    response = bob.inbox(envelope)
    assert response.status_code == 400
    assert response.json()["error"] == {"code": "expired", "message": "the envelope has expired"}
    assert response.json()["retry"] is False
    assert "stale" not in bob.entries()
    carol_still_reaches_bob(trio, "an expired envelope")


def test_an_envelope_for_another_twin_is_refused(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, carol = trio
    envelope = crafted(alice.identity(), carol, "meant for carol")
    response = bob.inbox(envelope)
    assert response.status_code == 421
    assert response.json()["error"]["code"] == "not_for_me"
    assert "meant for carol" not in bob.entries() + carol.entries()
    carol_still_reaches_bob(trio, "a misdirected envelope")


def test_oversized_envelopes_and_requests_are_refused(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, _ = trio
    big = crafted(alice.identity(), bob, "x" * 300_000)
    response = bob.inbox(big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    over_its_type = crafted(alice.identity(), bob, "y" * 4000)  # guestbook notes: 2 KiB
    response = bob.inbox(over_its_type)
    assert response.status_code == 413, response.text
    assert "guestbook.note" in response.json()["error"]["message"]
    whole = bob.inbox(b"[" + b" " * (2 * 1024 * 1024) + b"]")
    assert whole.status_code == 413
    assert whole.json()["error"]["code"] == "too_large"
    carol_still_reaches_bob(trio, "oversized envelopes")


def test_malformed_requests_get_clear_errors(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, carol = trio
    one = crafted(alice.identity(), bob, "one")
    cases: list[tuple[object, str]] = [
        (b"{not json", "not JSON"),
        (b"[]", "array of 1 to 64"),
        ([one] * 65, "array of 1 to 64"),
        ([one, crafted(carol.identity(), bob, "two")], "one sender"),
        ({"v": 1}, "lacks"),
        ({**one, "body": 5}, "base64url text"),
        ({**one, "body": None, "sig": None}, "base64url text"),
        (crafted(bob.identity(), bob, "me to me"), "this very twin"),
        (b"\xff\xfe", "not JSON"),
    ]
    for body, says in cases:
        response = bob.inbox(body)  # type: ignore[arg-type]
        assert 400 <= response.status_code < 500, (body, response.text)
        assert says in response.json()["error"]["message"], response.text
    carol_still_reaches_bob(trio, "malformed requests")


def test_a_flood_from_one_peer_is_limited_and_others_still_get_through(
    trio: tuple[Peer, Peer, Peer],
) -> None:
    alice, bob, _ = trio
    me = alice.identity()
    statuses = []
    for i in range(150):  # Bob takes 20 a second, in bursts of 80
        response = bob.inbox(crafted(me, bob, f"flood {i}"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "rate_limited"
            break
    assert statuses[-1] == 429 and statuses.count(202) >= 60
    carol_still_reaches_bob(trio, "a flood")


def test_a_blocked_contact_is_dropped_without_telling_it(trio: tuple[Peer, Peer, Peer]) -> None:
    alice, bob, _ = trio
    person = bob.contact(alice)
    assert person is not None
    blocked = bob.call("POST", f"/api/contacts/{person['id']}/block")
    assert blocked.status_code == 200 and blocked.json()["status"] == "blocked"
    try:
        sent = alice.note(bob, "can you hear me?")
        # Alice's twin sees what it sees for any delivered note: nothing reveals the block
        wait_for(lambda: alice.state(sent) == "delivered", 15, "the note to look delivered")
        assert "can you hear me?" not in bob.entries()
        envelope = crafted(alice.identity(), bob, "and now?")
        response = bob.inbox(envelope)
        assert response.status_code == 202
        assert response.json()["receipt"]["ids"] == [envelope["id"]]
        assert "and now?" not in bob.entries()
        refused = bob.call(
            "POST", "/api/guestbook/send", json={"to": alice.did, "author": "Bob", "text": "hi"}
        )
        assert refused.status_code == 409  # Bob does not write to whom he blocked either
        carol_still_reaches_bob(trio, "a block")
    finally:
        unblocked = bob.call("POST", f"/api/contacts/{person['id']}/unblock")
        assert unblocked.status_code == 200, unblocked.text
    sent = alice.note(bob, "unblocked at last")
    arrives(bob, "unblocked at last")


def test_strangers_may_only_knock_and_only_a_few_times(tmp_path: Path) -> None:
    process = start_twin(tmp_path)
    dana = Peer(process, "Dana")
    try:
        stranger = Identity.generate()
        note = seal(stranger, dana.did, "guestbook.note", {"author": "s", "text": "hi"}, ttl=60)
        response = dana.inbox(note)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "unknown_sender"
        assert response.json()["retry"] is True  # it may become a contact later
        statuses = []
        for i in range(12):
            knocker = Identity.generate()
            hint = {"v": 1}  # refused by the handler, but only after the knock limit
            knock = seal(
                knocker, dana.did, "contacts.request", {"name": f"k{i}", "address": hint}, ttl=60
            )
            statuses.append(dana.inbox(knock).status_code)
        assert statuses[:10] == [400] * 10  # each refused: its address hint does not hold
        assert statuses[10:] == [429, 429]  # ten a minute from one address
        big = seal(
            Identity.generate(), dana.did, "contacts.request", {"name": "x" * 20_000}, ttl=60
        )
        assert dana.inbox(big).status_code == 413
        assert dana.get("/api/contacts/")["contacts"] == []
    finally:
        dana.client.close()
        stop_twin(process)


def test_a_peer_that_takes_smaller_requests_still_gets_everything(tmp_path: Path) -> None:
    """Bob's twin takes bodies of at most 32 KiB: Alice's full batches are refused with 413,
    and her lane halves them until they fit."""
    alice = Peer(start_twin(tmp_path, "--peer-backoff", "1"), "Alice")
    bob = Peer(start_twin(tmp_path, "--max-body", "32k"), "Bob")
    try:
        befriend(alice, bob)
        port = int(bob.url.rsplit(":", 1)[1])
        stop_twin(bob.process)
        sent = [alice.note(bob, f"{i:02d} " + "x" * 480) for i in range(64)]  # 60 KiB in all
        bob.process = start_twin(
            tmp_path, "--max-body", "32k", data_dir=bob.process.data_dir, port=port
        )
        bob.connect()
        wait_for(lambda: all(alice.state(s) == "delivered" for s in sent), 30, "all 64 delivered")
        notes = [t[:2] for t in bob.entries() if t.endswith("x" * 480)]
        assert notes == [f"{i:02d}" for i in range(64)]
        assert alice.contact(bob)["delivery"]["failed"] == 0  # type: ignore[index]
    finally:
        for peer in (alice, bob):
            peer.client.close()
            stop_twin(peer.process)
