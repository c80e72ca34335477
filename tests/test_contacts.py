"""The contacts capability between real twin processes: requests declined, blocked or crossing,
one-time invites, the owner's marks on a contact, vouches and the reputation they add up to;
and, in process, every kind of bad invite and edit."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Running, start_twin, stop_twin, wait_for
from twins import Peer, arrives, befriend

from twin import Unavailable
from twin.identity import Identity, verify
from twin.peers import Message, address_hint

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Peer]]:
    """Ann, Ben and Cat know one another; Dan and Eve know nobody yet."""
    root = tmp_path_factory.mktemp("group")
    peers: dict[str, Peer] = {}
    try:
        for name in ("Ann", "Ben", "Cat", "Dan", "Eve"):
            peers[name] = Peer(start_twin(root, "--peer-backoff", "2"), name)
        befriend(peers["Ann"], peers["Ben"])
        befriend(peers["Ben"], peers["Cat"])
        befriend(peers["Cat"], peers["Ann"])
        yield peers
    finally:
        for peer in peers.values():
            peer.client.close()
            stop_twin(peer.process)


def person(one: Peer, other: Peer) -> dict[str, Any]:
    found = one.contact(other)
    assert found is not None, f"{other.name} is not in {one.name}'s contacts"
    return found


def invite(peer: Peer, label: str = "") -> str:
    made = peer.call("POST", "/api/contacts/invites", json={"label": label})
    assert made.status_code == 201, made.text
    return str(made.json()["link"])


def reputation(peer: Peer, about: Peer) -> dict[str, Any]:
    return dict(peer.get(f"/api/contacts/reputation/{about.did}"))


def topic(rep: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((t for t in rep["topics"] if t["topic"] == name), None)


def test_reputation_weighs_each_vouch_by_the_trust_in_its_voucher(group: dict[str, Peer]) -> None:
    ann, ben, cat = group["Ann"], group["Ben"], group["Cat"]
    made = ben.call(
        "POST",
        f"/api/contacts/{person(ben, cat)['id']}/vouches",
        json={"topic": "  Knows  PYTHON ", "level": 2, "comment": "Reviewed her code for years."},
    )
    assert made.status_code == 201, made.text
    statement = made.json()
    assert statement["topic"] == "knows python" and statement["by"] == ben.did
    verify(ben.did, {k: v for k, v in statement.items() if k != "sig"}, statement["sig"])
    # Ann holds Ben's vouch once it arrives; trusting Ben "none" gives it no weight yet
    said = wait_for(lambda: topic(reputation(ann, cat), "knows python"), 15, "Ben's vouch")
    assert said["score"] is None and said["weight"] == 0
    assert [(v["voucher"], v["level"], v["comment"]) for v in said["vouches"]] == [
        ("Ben", 2, "Reviewed her code for years.")
    ]
    trusted = ann.call("PATCH", f"/api/contacts/{person(ann, ben)['id']}", json={"trust": 4})
    assert trusted.json()["trust_label"] == "fully"
    assert topic(reputation(ann, cat), "knows python")["score"] == 2.0  # type: ignore[index]
    ann.call(
        "POST",
        f"/api/contacts/{person(ann, cat)['id']}/vouches",
        json={"topic": "knows python", "level": -1, "comment": "Not that I saw."},
    )
    assert topic(reputation(ann, cat), "knows python")["score"] == 0.5  # type: ignore[index]
    ann.call("PATCH", f"/api/contacts/{person(ann, ben)['id']}", json={"trust": 2})  # "some"
    mixed = topic(reputation(ann, cat), "knows python")
    assert mixed is not None and mixed["score"] == 0.0 and mixed["weight"] == 1.5
    assert {v["voucher"] for v in mixed["vouches"]} == {"you", "Ben"}

    # Cat's own view: what her contacts say about her
    def said_about_cat() -> list[Any]:
        return (topic(reputation(cat, cat), "knows python") or {"vouches": []})["vouches"]

    wait_for(lambda: len(said_about_cat()) == 2, 15, "both vouches to reach Cat herself")
    revoked = ben.call("DELETE", f"/api/contacts/vouches/{statement['id']}")
    assert revoked.status_code == 200 and revoked.json()["type"] == "contacts.revoke"
    wait_for(
        lambda: (
            {v["voucher"] for v in topic(reputation(ann, cat), "knows python")["vouches"]}  # type: ignore[index]
            == {"you"}
        ),
        15,
        "Ben's revocation to reach Ann",
    )
    assert ben.get("/api/contacts/vouches")["vouches"] == []
    again = ben.call("DELETE", f"/api/contacts/vouches/{statement['id']}")
    assert again.status_code == 404


def test_the_owner_marks_a_contact(group: dict[str, Peer]) -> None:
    ann, ben = group["Ann"], group["Ben"]
    path = f"/api/contacts/{person(ann, ben)['id']}"
    changed = ann.call(
        "PATCH",
        path,
        json={"name": "Ben from the choir", "note": "Tenor.\nLikes trains.", "verified": True},
    )
    assert changed.status_code == 200, changed.text
    shown = ann.get(path)
    assert (shown["name"], shown["their_name"], shown["note"], shown["verified"]) == (
        "Ben from the choir",
        "Ben",
        "Tenor.\nLikes trains.",
        True,
    )
    assert shown["safety_number"] == person(ben, ann)["safety_number"]
    for body, status in (
        ({"trust": 5}, 422),
        ({"trust": "high"}, 422),
        ({"verified": "yes"}, 422),
        ({"name": "x" * 65}, 422),
        ({"name": "bell\x07"}, 400),
        ({"colour": "red"}, 422),
    ):
        refused = ann.call("PATCH", path, json=body)
        assert refused.status_code == status, (body, refused.text)
        assert refused.json()["error"]["message"]
    assert ann.get(path)["name"] == "Ben from the choir"  # nothing changed by the refusals
    assert ann.call("GET", "/api/contacts/nobody").status_code == 404


def test_requests_declined_blocked_or_crossing(group: dict[str, Peer]) -> None:
    ann, dan, eve = group["Ann"], group["Dan"], group["Eve"]
    link = invite(ann, "for Dan")
    asked = dan.call("POST", "/api/contacts/connect", json={"invite": link, "note": "Dan here!"})
    assert asked.status_code == 201, asked.text
    request = wait_for(lambda: ann.contact(dan), 15, "Dan's request")
    assert (request["status"], request["request_note"], request["invite"]) == (
        "incoming",
        "Dan here!",
        "for Dan",
    )
    assert ann.call("POST", f"/api/contacts/{request['id']}/decline").status_code == 204
    assert ann.contact(dan) is None
    # The invite worked once: Eve's request with it arrives as a stranger's, not "for Dan"
    eve.call("POST", "/api/contacts/connect", json={"invite": link})
    from_eve = wait_for(lambda: ann.contact(eve), 15, "Eve's request")
    assert from_eve["invite"] is None
    assert ann.get("/api/contacts/invites")["invites"][0]["used"] is not None
    blocked = ann.call("POST", f"/api/contacts/{from_eve['id']}/block")
    assert blocked.json()["status"] == "blocked"
    sent = eve.note(ann, "let me in")  # dropped, and Eve is not told
    wait_for(lambda: eve.state(sent) == "delivered", 15, "Eve's note to look delivered")
    assert "let me in" not in ann.entries()
    # Crossing requests: each opens the other's invite; neither has to accept
    dan.call("POST", "/api/contacts/connect", json={"invite": invite(eve)})
    eve.call("POST", "/api/contacts/connect", json={"invite": invite(dan)})
    wait_for(lambda: (dan.contact(eve) or {}).get("status") == "connected", 15, "Dan and Eve")
    wait_for(lambda: (eve.contact(dan) or {}).get("status") == "connected", 15, "Eve and Dan")
    dan.note(eve, "we met halfway")
    arrives(eve, "we met halfway")


def test_a_removed_contact_can_no_longer_write(group: dict[str, Peer]) -> None:
    ben, cat = group["Ben"], group["Cat"]
    assert ben.call("DELETE", f"/api/contacts/{person(ben, cat)['id']}").status_code == 204
    assert ben.contact(cat) is None
    sent = cat.note(ben, "are we still friends?")
    wait_for(
        lambda: "does not know yours" in (person(cat, ben)["delivery"]["last_error"] or ""),
        15,
        "Ben's twin to refuse Cat",
    )
    assert cat.state(sent) in {"queued", "sent"}  # kept: Ben may add Cat again
    assert "are we still friends?" not in ben.entries()


async def test_bad_invites_are_refused_with_what_to_do(tw: Running) -> None:
    auth = await tw.auth("contacts:*")
    own = await tw.client.post("/api/contacts/invites", json={"label": "mine"}, headers=auth)
    assert own.status_code == 201
    assert own.json()["qr"].startswith("data:image/svg+xml")
    assert own.json()["link"] == f"{tw.settings.url}/connect#{own.json()['code']}"
    stranger = Identity.generate()

    def made(**changes: Any) -> str:
        body = {
            "v": 1,
            "type": "contacts.invite",
            "did": stranger.did,
            "name": "Stranger",
            "token": "abc",
            "address": address_hint(stranger, ["http://127.0.0.1:9"]),
            "expires": int(time.time()) + 3600,
        }
        body.update(changes)
        signed = {**body, "sig": stranger.sign(body)}
        raw = json.dumps(signed).encode()
        return "twin-invite:" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    good = made()
    tampered = json.loads(base64.urlsafe_b64decode(good[12:] + "=" * (-len(good[12:]) % 4)))
    tampered["name"] = "Someone else"
    tampered_code = (
        "twin-invite:"
        + base64.urlsafe_b64encode(json.dumps(tampered).encode()).rstrip(b"=").decode()
    )
    cases = [
        (own.json()["link"], 409, "your own invite"),
        ("hello", 400, "not a twin invite"),
        (good[:40], 400, "damaged"),
        (good[:-3] + "%%%", 400, "stray characters"),
        (tampered_code, 400, "altered"),
        (made(expires=int(time.time()) - 10), 410, "expired"),
        (made(v=2), 400, "version 1"),
        ("x" * 9000, 422, ""),
    ]
    for text, status, says in cases:
        response = await tw.client.post(
            "/api/contacts/connect", json={"invite": text}, headers=auth
        )
        assert response.status_code == status, (text[:50], response.text)
        assert says in response.json()["error"]["message"], response.text
    listed = await tw.client.get("/api/contacts/", headers=auth)
    assert listed.json()["contacts"] == []  # nothing half-made by the refusals
    unreadable = await tw.client.get("/api/contacts/", headers=await tw.auth("files:read"))
    assert unreadable.status_code == 403


async def test_invites_are_limited_and_revocable(tw: Running, tmp_path: Path) -> None:
    auth = await tw.auth("contacts:*")
    bad_days = await tw.client.post("/api/contacts/invites", json={"days": 90}, headers=auth)
    assert bad_days.status_code == 400 and "30 days" in bad_days.json()["error"]["message"]
    made = await tw.client.post("/api/contacts/invites", json={"label": "x"}, headers=auth)
    gone = await tw.client.delete(f"/api/contacts/invites/{made.json()['id']}", headers=auth)
    assert gone.status_code == 204
    again = await tw.client.delete(f"/api/contacts/invites/{made.json()['id']}", headers=auth)
    assert again.status_code == 404
    me = await tw.client.get("/api/contacts/me", headers=auth)
    assert me.json()["did"] == tw.twin.did and me.json()["address"] == [tw.settings.url]


async def test_a_flood_of_requests_waits_and_an_invite_still_gets_in(tw: Running) -> None:
    contacts = tw.twin.registry.loaded["contacts"].capability
    auth = await tw.auth("contacts:*")
    made = await tw.client.post("/api/contacts/invites", json={"label": "for Dana"}, headers=auth)
    code = made.json()["code"]
    token = json.loads(base64.urlsafe_b64decode(code[12:] + "=" * (-len(code[12:]) % 4)))["token"]

    def request(who: Identity, token: str = "") -> Message:
        body = {
            "name": "x",
            "note": "",
            "token": token,
            "address": address_hint(who, ["http://127.0.0.1:9"]),
        }
        now = int(time.time())
        return Message(
            f"id-{who.did[-8:]}", "contacts.request", who.did, now, now + 60, body, False
        )

    for _ in range(200):
        await contacts._on_request(request(Identity.generate()))
    with pytest.raises(Unavailable, match="try later"):  # the sender's twin tries again
        await contacts._on_request(request(Identity.generate(), token="not-an-invite"))
    invites = (await tw.client.get("/api/contacts/invites", headers=auth)).json()["invites"]
    assert invites[0]["used"] is None  # nothing used up by the refusal
    dana = Identity.generate()
    await contacts._on_request(request(dana, token))  # an invite holder is expected: let in
    listed = (await tw.client.get("/api/contacts/", headers=auth)).json()["contacts"]
    assert len(listed) == 201
    assert [p["invite"] for p in listed if p["did"] == dana.did] == ["for Dana"]


async def test_vouches_a_contact_shares_are_checked(tw: Running) -> None:
    contacts = tw.twin.registry.loaded["contacts"].capability
    ben, cat = Identity.generate(), Identity.generate()

    def vouch(**changes: Any) -> dict[str, Any]:
        statement = {
            "v": 1,
            "type": "contacts.vouch",
            "id": "v1",
            "by": ben.did,
            "about": cat.did,
            "topic": "knows python",
            "level": 2,
            "comment": "",
            "issued": int(time.time()),
        }
        statement.update(changes)
        return {**statement, "sig": ben.sign(statement)}

    kept = await contacts.vouches.take(
        [
            vouch(),
            vouch(id="v2", about=ben.did),  # about himself
            vouch(id="v3", topic="Knows  Python"),  # not written as twins write topics
            {**vouch(id="v4"), "level": -2},  # changed after signing
            vouch(id="v5", by=cat.did),  # in someone else's name
            "not a statement",
        ],
        ben.did,
    )
    assert kept == 1
    assert [v["id"] for v in await contacts.vouches.about(cat.did)] == ["v1"]


def test_a_contact_can_be_asked_for_its_vouches_again(group: dict[str, Peer]) -> None:
    """A vouch is a signed statement contacts can fetch: Ann lost what Cat said (here: her
    copy is deleted), asks Cat's twin, and has it again."""
    ann, cat = group["Ann"], group["Cat"]
    made = cat.call(
        "POST",
        f"/api/contacts/{person(cat, ann)['id']}/vouches",
        json={"topic": "bakes bread", "level": 1, "comment": "Sourdough."},
    )
    assert made.status_code == 201, made.text
    wait_for(lambda: topic(reputation(ann, ann), "bakes bread"), 15, "Cat's vouch at Ann's")
    db = sqlite3.connect(ann.process.data_dir / "twin.db")
    with db:
        db.execute("DELETE FROM contacts_vouches")  # as if Ann's copy were lost
    db.close()
    asked = ann.call("POST", f"/api/contacts/{person(ann, cat)['id']}/ask")
    assert asked.status_code == 200, asked.text
    said = wait_for(lambda: topic(reputation(ann, ann), "bakes bread"), 15, "the vouch again")
    assert [(v["voucher"], v["comment"]) for v in said["vouches"]] == [("Cat", "Sourdough.")]
