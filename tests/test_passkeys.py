"""Passkeys over plain HTTP, with a Python authenticator: the setup link, signing in, pairing
a second device, the settings page, and every way a ceremony can be wrong or hostile."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import cbor2
import pytest
from authenticator import (
    ED25519,
    ES256,
    ORIGIN,
    RS256,
    Authenticator,
    b64url,
    owner_headers,
    unb64url,
)
from conftest import Running, running_twin
from test_shell import assert_secure_page

from twin.passkeys import RelyingParty
from twin.sessions import SESSION_ABSOLUTE
from twin.settings import Settings
from twin.shell import COOKIE

pytestmark = pytest.mark.anyio


def page(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={cookie}"}


async def settings_page(tw: Running, cookie: str) -> str:
    response = await tw.client.get("/settings", headers=page(cookie))
    assert response.status_code == 200, response.text
    assert_secure_page(response)
    return response.text


async def test_setup_link_registers_the_first_passkey_once(tw: Running) -> None:
    link = await tw.twin.sessions.create_link()
    welcome = await tw.client.get(f"/setup/{link}")
    assert welcome.status_code == 200
    assert "Welcome to your twin" in welcome.text and "Create a passkey" in welcome.text
    assert welcome.headers["cache-control"] == "no-store"
    assert_secure_page(welcome)
    assert '<script src="/static/passkey.js"' in welcome.text

    device = Authenticator()
    done = await tw.register(device, link, name="Ada's laptop")
    assert done.status_code == 200, done.text
    assert done.json()["next"] == "/"
    cookie_header = done.headers["set-cookie"]
    attributes = {a.strip().lower() for a in cookie_header.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # plain http on localhost: a Secure cookie would be lost
    cookie = done.cookies[COOKIE]
    assert "Your experiences" in (await tw.client.get("/", headers=page(cookie))).text
    assert "Ada&#39;s laptop" in await settings_page(tw, cookie)

    # the link is dead now: its page, and a ceremony started with it
    again = await tw.client.get(f"/setup/{link}")
    assert again.status_code == 410 and "twin access link" in again.text
    assert_secure_page(again)
    refused = await tw.register(Authenticator(), link)
    assert refused.status_code == 410 and refused.json()["error"]["code"] == "gone"
    assert await tw.twin.passkeys.count() == 1

    # a stranger at the door now gets the login page, with one button
    assert (await tw.client.get("/")).headers["location"] == "/login"
    login = await tw.client.get("/login")
    assert login.status_code == 200 and "Sign in with a passkey" in login.text
    assert_secure_page(login)


async def test_a_link_spent_while_a_ceremony_was_open_is_refused(tw: Running) -> None:
    link = await tw.twin.sessions.create_link()
    first, second = Authenticator(), Authenticator()
    headers = owner_headers()
    starts = [
        (
            await tw.client.post("/auth/register/options", json={"link": link}, headers=headers)
        ).json()
        for _ in (first, second)
    ]
    for device, start, status in ((first, starts[0], 200), (second, starts[1], 410)):
        body = {"ceremony": start["ceremony"], "credential": device.create(start["publicKey"])}
        response = await tw.client.post("/auth/register", json=body, headers=headers)
        assert response.status_code == status, response.text
    assert await tw.twin.passkeys.count() == 1


@pytest.mark.parametrize("alg", [ED25519, ES256, RS256], ids=["Ed25519", "ES256", "RS256"])
async def test_each_key_type_registers_and_signs_in(tw: Running, alg: int) -> None:
    device = Authenticator(alg=alg)
    await tw.sign_in(device)
    for _ in range(2):  # the counter moves on each time
        login = await tw.login(device)
        assert login.status_code == 200, login.text
        cookie = login.cookies[COOKIE]
        assert "Your experiences" in (await tw.client.get("/", headers=page(cookie))).text


async def test_user_verification_is_required(tw: Running) -> None:
    link = await tw.twin.sessions.create_link()
    lazy = Authenticator(verifies_user=False)
    refused = await tw.register(lazy, link)
    assert refused.status_code == 401
    assert "did not verify you" in refused.json()["error"]["message"]
    assert "set-cookie" not in refused.headers
    assert await tw.twin.passkeys.count() == 0
    assert await tw.twin.sessions.link_purpose(link) == "setup"  # still there for a real try

    device = Authenticator()
    await tw.sign_in(device)
    device.verifies_user = False
    login = await tw.login(device)
    assert login.status_code == 401 and "did not verify you" in login.json()["error"]["message"]
    assert "set-cookie" not in login.headers


async def test_a_counter_that_goes_back_is_refused_and_flagged(tw: Running) -> None:
    device, laptop = Authenticator(), Authenticator()
    cookie = await tw.sign_in(device)
    assert (await tw.register(laptop, cookie=cookie)).status_code == 200
    assert (await tw.login(device, counter=5)).status_code == 200
    cloned = await tw.login(device, counter=3)
    assert cloned.status_code == 403
    assert "went back (from 5 to 3)" in cloned.json()["error"]["message"]
    assert "set-cookie" not in cloned.headers
    # the browsers that passkey signed in (perhaps the copy's) are signed out
    assert (await tw.client.get("/", headers=page(cookie))).headers["location"] == "/login"
    other = (await tw.login(laptop)).cookies[COOKIE]
    assert "it may\n          have been copied" in await settings_page(tw, other)
    # the laptop's passkey is the only one left that can sign in: it cannot be removed
    keep = next(k for k in await tw.twin.passkeys.all() if k.flagged is None)
    refused = await tw.client.post(
        f"/settings/passkeys/{keep.id}/remove", headers=owner_headers(other)
    )
    assert refused.status_code == 409
    # a copy can jump its counter ahead, so a flagged passkey stays refused until removed
    again = await tw.login(device, counter=60)
    assert again.status_code == 403 and "flagged" in again.json()["error"]["message"]
    assert [k.flagged is not None for k in await tw.twin.passkeys.all()] == [True, False]


async def test_a_ceremony_from_another_origin_is_refused_with_what_to_do(tw: Running) -> None:
    link = await tw.twin.sessions.create_link()
    # a page on another port of localhost may ask for the same RP id, and relay the answer
    relay = Authenticator(origin="http://localhost:3000")
    start = (
        await tw.client.post("/auth/register/options", json={"link": link}, headers=owner_headers())
    ).json()
    body = {"ceremony": start["ceremony"], "credential": relay.create(start["publicKey"])}
    refused = await tw.client.post("/auth/register", json=body, headers=owner_headers())
    assert refused.status_code == 403
    message = refused.json()["error"]["message"]
    assert "came from http://localhost:3000" in message and ORIGIN in message
    assert "--public-url" in message
    assert await tw.twin.passkeys.count() == 0

    device = Authenticator()
    await tw.sign_in(device)
    device.origin = "http://localhost:3000"
    assert (await tw.login(device)).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost:8471"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "https://localhost:8470"},
    ],
)
async def test_ceremonies_from_another_site_are_refused(
    tw: Running, headers: dict[str, str]
) -> None:
    link = await tw.twin.sessions.create_link()
    for path, body in (
        ("/auth/register/options", {"link": link}),
        ("/auth/register", {}),
        ("/auth/login/options", {}),
        ("/auth/login", {}),
    ):
        response = await tw.client.post(path, json=body, headers=headers)
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "forbidden"
    assert await tw.twin.sessions.link_purpose(link) == "setup"


def _mangle(credential: dict[str, Any], how: str) -> Any:
    response = credential["response"]
    if how == "not an object":
        return ["a", "list"]
    if how == "no response":
        return {"id": credential["id"], "rawId": credential["rawId"], "type": "public-key"}
    if how == "client data not base64":
        response["clientDataJSON"] = "%%%not base64%%%"
    if how == "client data not JSON":
        response["clientDataJSON"] = b64url(b"\xff\xfe{")
    if how == "client data nested deep":
        response["clientDataJSON"] = b64url(b"[" * 30_000)
    if how == "truncated attestation":
        response["attestationObject"] = response["attestationObject"][:40]
    if how in ("public key not a map", "public key too short"):
        attestation = cbor2.loads(unb64url(response["attestationObject"]))
        auth_data = attestation["authData"]
        length = int.from_bytes(auth_data[53:55], "big")
        if how == "public key not a map":
            key = cbor2.dumps([1, 2, 3])
        else:
            key = cbor2.dumps({1: 1, 3: ED25519, -1: 6, -2: b"short"})
        attestation["authData"] = auth_data[: 55 + length] + key
        response["attestationObject"] = b64url(cbor2.dumps(attestation))
    if how == "id differs from rawId":
        credential["id"] = b64url(b"another id")
    if how == "wrong challenge":
        data = json.loads(base64.urlsafe_b64decode(response["clientDataJSON"] + "=="))
        data["challenge"] = b64url(b"a challenge the twin never gave")
        response["clientDataJSON"] = b64url(json.dumps(data).encode())
    if how == "login type":
        data = json.loads(base64.urlsafe_b64decode(response["clientDataJSON"] + "=="))
        data["type"] = "webauthn.get"
        response["clientDataJSON"] = b64url(json.dumps(data).encode())
    return credential


@pytest.mark.parametrize(
    "how",
    [
        "not an object",
        "no response",
        "client data not base64",
        "client data not JSON",
        "client data nested deep",
        "truncated attestation",
        "public key not a map",
        "public key too short",
        "id differs from rawId",
        "wrong challenge",
        "login type",
    ],
)
async def test_a_malformed_registration_is_a_clear_4xx_and_keeps_the_link(
    tw: Running, how: str
) -> None:
    link = await tw.twin.sessions.create_link()
    start = (
        await tw.client.post("/auth/register/options", json={"link": link}, headers=owner_headers())
    ).json()
    credential = _mangle(Authenticator().create(start["publicKey"]), how)
    body = {"ceremony": start["ceremony"], "credential": credential}
    response = await tw.client.post("/auth/register", json=body, headers=owner_headers())
    assert 400 <= response.status_code < 500, (how, response.text)
    message = response.json()["error"]["message"]
    assert message and "Traceback" not in message and "__cause__" not in message
    assert await tw.twin.passkeys.count() == 0
    assert await tw.twin.sessions.link_purpose(link) == "setup"


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        (b'{"ceremony": "x", "credential": {', 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"ceremony": 5, "credential": {}}', 400, "expired or was already used"),
        (b'{"ceremony": "never-started", "credential": {}}', 400, "expired or was already used"),
        (b'{"x": "' + b"a" * 70_000 + b'"}', 413, "limit"),
        (b"[" * 60_000, 400, "nested too deeply"),
    ],
    ids=[
        "truncated",
        "not an object",
        "ceremony not text",
        "unknown ceremony",
        "oversized",
        "deeply nested",
    ],
)
async def test_hostile_bodies_are_refused(
    tw: Running, content: bytes, status: int, says: str
) -> None:
    for path in ("/auth/register", "/auth/login"):
        response = await tw.client.post(
            path,
            content=content,
            headers={**owner_headers(), "Content-Type": "application/json"},
        )
        assert response.status_code == status, (path, response.text)
        assert says in response.json()["error"]["message"]


async def test_a_ceremony_answers_once(tw: Running) -> None:
    device = Authenticator()
    await tw.sign_in(device)
    start = (await tw.client.post("/auth/login/options", json={}, headers=owner_headers())).json()
    body = {"ceremony": start["ceremony"], "credential": device.get(start["publicKey"])}
    assert (await tw.client.post("/auth/login", json=body, headers=owner_headers())).is_success
    replay = await tw.client.post("/auth/login", json=body, headers=owner_headers())
    assert replay.status_code == 400 and "already used" in replay.json()["error"]["message"]


async def test_a_passkey_the_twin_does_not_know_is_refused(tw: Running) -> None:
    await tw.sign_in(Authenticator())
    stranger = Authenticator()
    other = Authenticator()
    other.create(
        {
            "challenge": "x",
            "pubKeyCredParams": [{"alg": ES256}],
            "authenticatorSelection": {"residentKey": "required", "userVerification": "required"},
            "user": {"id": b64url(b"someone else")},
        }
    )
    stranger.keys = other.keys
    response = await tw.login(stranger)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unknown_passkey"
    assert "not one of this twin's" in response.json()["error"]["message"]


async def test_registering_without_a_link_needs_a_session(tw: Running) -> None:
    refused = await tw.register(Authenticator())
    assert refused.status_code == 401
    assert "setup or pairing link" in refused.json()["error"]["message"]
    cookie = await tw.sign_in()
    key = Authenticator(alg=ED25519)
    added = await tw.register(key, cookie=cookie, name="Security key")
    assert added.status_code == 200 and "set-cookie" not in added.headers
    assert (await tw.login(key)).status_code == 200
    assert "Security key" in await settings_page(tw, cookie)


async def test_pairing_a_second_device_then_removing_it(tw: Running) -> None:
    laptop, phone = Authenticator(), Authenticator()
    cookie = await tw.sign_in(laptop)
    pairing = await tw.client.post("/settings/pair", headers=owner_headers(cookie))
    assert pairing.status_code == 200
    assert_secure_page(pairing)
    assert 'src="data:image/svg+xml' in pairing.text  # the QR code
    assert "only another browser on\n     this computer can open the link" in pairing.text
    link = re.search(rf"{ORIGIN}/pair/([A-Za-z0-9_-]+)", pairing.text)
    assert link, pairing.text
    assert await tw.twin.sessions.link_purpose(link.group(1)) == "pair"

    page_on_phone = await tw.client.get(f"/pair/{link.group(1)}")
    assert "Add this device to your twin" in page_on_phone.text
    assert (await tw.client.get(f"/setup/{link.group(1)}")).status_code == 410  # not a setup link
    paired = await tw.register(phone, link.group(1), name="Phone")
    assert paired.status_code == 200, paired.text
    phone_cookie = paired.cookies[COOKIE]
    assert (await tw.client.get(f"/pair/{link.group(1)}")).status_code == 410

    for device in (laptop, phone):
        assert (await tw.login(device)).status_code == 200
    listed = await settings_page(tw, cookie)
    assert "Phone" in listed and "Remove" in listed

    phone_key = next(k for k in await tw.twin.passkeys.all() if k.name == "Phone")
    removed = await tw.client.post(
        f"/settings/passkeys/{phone_key.id}/remove", headers=owner_headers(cookie)
    )
    assert removed.status_code == 303
    assert removed.headers["location"] == "/settings?done=removed#passkeys"
    # the phone's browser was signed out with it, and the phone's passkey no longer works
    assert (await tw.client.get("/", headers=page(phone_cookie))).status_code == 303
    assert (await tw.login(phone)).status_code == 401
    assert "Your experiences" in (await tw.client.get("/", headers=page(cookie))).text


async def test_the_last_passkey_cannot_be_removed(tw: Running) -> None:
    cookie = await tw.sign_in()
    listed = await settings_page(tw, cookie)
    assert "Your only passkey" in listed and ">Remove<" not in listed
    (key,) = await tw.twin.passkeys.all()
    refused = await tw.client.post(
        f"/settings/passkeys/{key.id}/remove", headers=owner_headers(cookie)
    )
    assert refused.status_code == 409 and "your only passkey" in refused.text
    assert await tw.twin.passkeys.count() == 1


async def test_renaming_a_passkey(tw: Running) -> None:
    cookie = await tw.sign_in()
    (key,) = await tw.twin.passkeys.all()
    path = f"/settings/passkeys/{key.id}/rename"
    renamed = await tw.client.post(
        path, headers=owner_headers(cookie), data={"name": "  Work  PC "}
    )
    assert renamed.status_code == 303
    assert [k.name for k in await tw.twin.passkeys.all()] == ["Work PC"]
    for bad in ("", "x" * 61, "bell\x07"):
        refused = await tw.client.post(path, headers=owner_headers(cookie), data={"name": bad})
        assert refused.status_code == 400 and "1 to 60 printable characters" in refused.text
    missing = await tw.client.post(
        "/settings/passkeys/nope/rename", headers=owner_headers(cookie), data={"name": "x"}
    )
    assert missing.status_code == 404
    assert [k.name for k in await tw.twin.passkeys.all()] == ["Work PC"]
    elsewhere = await tw.client.post(
        path, headers={**page(cookie), "Origin": "http://evil.example"}, data={"name": "pwned"}
    )
    assert elsewhere.status_code == 403


async def test_signing_out_another_browser(tw: Running) -> None:
    device = Authenticator()
    mine = await tw.sign_in(device)
    other = (await tw.login(device)).cookies[COOKIE]
    sessions = await tw.twin.sessions.all()
    assert len(sessions) == 2
    listed = await settings_page(tw, mine)
    assert listed.count("this browser") == 2  # its passkey and its session are marked
    mine_id = (await tw.twin.sessions.check(mine)).id  # type: ignore[union-attr]
    other_id = next(s.id for s in sessions if s.id != mine_id)
    ended = await tw.client.post(f"/settings/sessions/{other_id}/end", headers=owner_headers(mine))
    assert ended.status_code == 303
    assert (await tw.client.get("/", headers=page(other))).headers["location"] == "/login"
    assert "Your experiences" in (await tw.client.get("/", headers=page(mine))).text

    own = await tw.client.post(f"/settings/sessions/{mine_id}/end", headers=owner_headers(mine))
    assert own.status_code == 303 and own.headers["set-cookie"].startswith(f'{COOKIE}=""')
    assert (await tw.client.get("/", headers=page(mine))).status_code == 303


async def test_settings_need_a_session_and_list_grants_and_tokens(tw: Running) -> None:
    assert (await tw.client.get("/settings")).headers["location"] == "/"
    for path in ("/settings/pair", "/settings/sessions/x/end", "/settings/tokens/x/revoke"):
        response = await tw.client.post(path, headers=owner_headers())
        assert response.status_code == 303 and response.headers["location"] == "/", path
    cookie = await tw.sign_in()
    grant = await tw.client.post("/x/profile/grant", headers=owner_headers(cookie))
    assert grant.status_code == 303
    info, secret = await tw.twin.tokens.create(frozenset({"profile:read"}), "backup script")
    listed = await settings_page(tw, cookie)
    assert "Profile" in listed and "<code>profile:write</code>" in listed
    assert "backup script" in listed and secret not in listed

    token = tw.twin.grants.token(await tw.twin.grants.get("profile"))  # type: ignore[arg-type]
    withdraw = await tw.client.post(
        "/x/profile/revoke?back=settings", headers=owner_headers(cookie)
    )
    assert withdraw.headers["location"] == "/settings?done=withdrawn#experiences"
    shown = await tw.client.get(withdraw.headers["location"], headers=page(cookie))
    assert "Access withdrawn." in shown.text and "<code>profile:write</code>" not in shown.text
    dead = await tw.client.get("/api/profile/", headers={"Authorization": f"Bearer {token}"})
    assert dead.status_code == 401

    revoke = await tw.client.post(
        f"/settings/tokens/{info.id}/revoke", headers=owner_headers(cookie)
    )
    assert revoke.status_code == 303
    gone = await tw.client.get("/api/profile/", headers={"Authorization": f"Bearer {secret}"})
    assert gone.status_code == 401


async def test_sign_in_attempts_are_rate_limited_per_address(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "twin") as tw:
        statuses = [
            (await tw.client.post("/auth/login/options", json={}, headers=owner_headers()))
            for _ in range(22)
        ]
        assert [r.status_code for r in statuses[:20]] == [200] * 20
        limited = statuses[-1]
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "try again in" in limited.json()["error"]["message"]


async def test_sign_ins_and_refusals_are_in_the_activity_log(tw: Running) -> None:
    device = Authenticator()
    cookie = await tw.sign_in(device)
    await tw.login(device)
    device.verifies_user = False
    await tw.login(device)
    activity = await tw.client.get("/activity", headers=page(cookie))
    assert "twin:login" in activity.text
    assert "allowed (200)" in activity.text and "(401)" in activity.text


async def test_loopback_addresses_are_sent_to_localhost(tw: Running) -> None:
    link = await tw.twin.sessions.create_link()
    for path in ("/", "/login", f"/setup/{link}", "/settings"):
        moved = await tw.client.get(f"http://127.0.0.1:8470{path}?a=1")
        assert moved.status_code == 307, path
        assert moved.headers["location"] == f"http://localhost:8470{path}?a=1"
    assert (await tw.client.get("http://127.0.0.1:8470/api/health")).status_code == 200


def test_public_url_sets_the_relying_party() -> None:
    def rp(**settings: Any) -> RelyingParty:
        return RelyingParty.of(Settings(**settings))

    assert rp() == RelyingParty("localhost", "http://localhost:8470")
    assert rp(host="0.0.0.0", port=9000) == RelyingParty("localhost", "http://localhost:9000")
    assert rp(public_url="https://twin.example.org") == RelyingParty(
        "twin.example.org", "https://twin.example.org"
    )
    assert rp(public_url="https://twin.example.org:8443") == RelyingParty(
        "twin.example.org", "https://twin.example.org:8443"
    )
    assert rp(public_url="http://localhost:80") == RelyingParty("localhost", "http://localhost")


async def test_behind_a_public_https_url(tmp_path: Path) -> None:
    public = "https://twin.example.org"
    async with running_twin(tmp_path / "twin", public_url=public) as tw:
        device = Authenticator(origin=public, rp_id="twin.example.org")
        link = await tw.twin.sessions.create_link()
        headers = {"Origin": public}
        start = await tw.client.post("/auth/register/options", json={"link": link}, headers=headers)
        options = start.json()["publicKey"]
        assert options["rp"]["id"] == "twin.example.org"
        body = {"ceremony": start.json()["ceremony"], "credential": device.create(options)}
        done = await tw.client.post("/auth/register", json=body, headers=headers)
        assert done.status_code == 200, done.text
        attributes = {a.strip().lower() for a in done.headers["set-cookie"].split(";")[1:]}
        assert "secure" in attributes  # TLS at the proxy: the cookie never travels in clear
        cookie = done.cookies[COOKIE]
        tw.client.cookies.clear()
        pairing = await tw.client.post("/settings/pair", headers={**headers, **page(cookie)})
        assert f"{public}/pair/" in pairing.text and "this computer" not in pairing.text
        # the same passkey, answering for the local address, is refused
        device.origin = ORIGIN
        local = await tw.client.post("/auth/login/options", json={}, headers=headers)
        body = {
            "ceremony": local.json()["ceremony"],
            "credential": device.get(local.json()["publicKey"]),
        }
        refused = await tw.client.post("/auth/login", json=body, headers=headers)
        assert refused.status_code == 403 and public in refused.json()["error"]["message"]


async def test_sessions_expire(tw: Running) -> None:
    cookie = await tw.sign_in()
    await tw.twin.db.execute("UPDATE twin_sessions SET expires = expires - ?", (SESSION_ABSOLUTE,))
    assert (await tw.client.get("/", headers=page(cookie))).headers["location"] == "/login"
    cookie = await tw.sign_in()
    await tw.twin.db.execute("UPDATE twin_sessions SET last_seen = last_seen - 8 * 86400")
    assert (await tw.client.get("/", headers=page(cookie))).headers["location"] == "/login"


@pytest.mark.parametrize(
    ("how", "status"),
    [
        ("signature garbage", 401),
        ("raw id not base64", 400),
        ("authenticator data truncated", 401),
        ("another twin's user", 401),
        ("no client data", 400),
    ],
)
async def test_a_malformed_sign_in_is_refused(tw: Running, how: str, status: int) -> None:
    device = Authenticator()
    await tw.sign_in(device)
    start = (await tw.client.post("/auth/login/options", json={}, headers=owner_headers())).json()
    credential = device.get(start["publicKey"])
    response = credential["response"]
    if how == "signature garbage":
        response["signature"] = b64url(b"\x30\x06\x02\x01\x01\x02\x01\x01")
    elif how == "raw id not base64":
        credential["rawId"] = "***"
    elif how == "authenticator data truncated":
        response["authenticatorData"] = response["authenticatorData"][:20]
    elif how == "another twin's user":
        response["userHandle"] = b64url(b"someone else's twin")
    else:
        del response["clientDataJSON"]
    body = {"ceremony": start["ceremony"], "credential": credential}
    refused = await tw.client.post("/auth/login", json=body, headers=owner_headers())
    assert refused.status_code == status, refused.text
    assert "set-cookie" not in refused.headers
    assert "__cause__" not in refused.json()["error"]["message"]


def test_starting_a_twin_does_not_load_the_passkey_libraries(tmp_path: Path) -> None:
    """webauthn (with cryptography and cbor2, about 24 MB) and segno load on the first
    ceremony or QR code, not at start-up: an idle twin does not carry them."""
    import subprocess
    import sys

    script = f"""
import asyncio, sys
from pathlib import Path
from twin.app import create_app
from twin.core import Twin, initialize
from twin.settings import Settings

async def main():
    settings = Settings(data_dir=Path({str(tmp_path / "twin")!r}))
    initialize(settings)
    twin = await Twin.open(settings)
    await twin.start()
    create_app(twin)
    await twin.passkeys.count()
    await twin.stop()

asyncio.run(main())
print(sorted(m for m in ("webauthn", "cryptography", "cbor2", "segno") if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_a_refused_registration_keeps_the_link(tw: Running) -> None:
    """Hostile fields or a passkey the twin already holds: the link survives for a real try."""
    device = Authenticator()
    cookie = await tw.sign_in(device)
    link = await tw.twin.sessions.create_link()
    start = (
        await tw.client.post("/auth/register/options", json={"link": link}, headers=owner_headers())
    ).json()
    credential = Authenticator().create(start["publicKey"])
    credential["response"]["transports"] = 5
    body = {"ceremony": start["ceremony"], "credential": credential}
    odd = await tw.client.post("/auth/register", json=body, headers=owner_headers())
    assert odd.status_code == 200, odd.text  # odd transports are dropped, not fatal
    assert await tw.twin.passkeys.count() == 2

    # the same authenticator again, answering with the passkey the twin already holds
    link = await tw.twin.sessions.create_link()
    start = (
        await tw.client.post("/auth/register/options", json={"link": link}, headers=owner_headers())
    ).json()
    again = device.create(start["publicKey"], reuse=next(iter(device.keys)))
    twice = await tw.client.post(
        "/auth/register",
        json={"ceremony": start["ceremony"], "credential": again},
        headers=owner_headers(),
    )
    assert twice.status_code == 409, twice.text
    assert "already registered" in twice.json()["error"]["message"]
    assert await tw.twin.sessions.link_purpose(link) == "setup"
    assert await tw.twin.passkeys.count() == 2
    assert "Your experiences" in (await tw.client.get("/", headers=page(cookie))).text


async def test_changing_passkeys_needs_a_recent_sign_in(tw: Running) -> None:
    """A stolen cookie alone cannot pair a device of its own or remove the owner's passkeys."""
    device, spare = Authenticator(), Authenticator()
    cookie = await tw.sign_in(device)
    assert (await tw.register(spare, cookie=cookie)).status_code == 200
    await tw.twin.db.execute("UPDATE twin_sessions SET created = created - 3600")
    listed = await settings_page(tw, cookie)
    assert "Confirm it's you" in listed
    pair = await tw.client.post("/settings/pair", headers=owner_headers(cookie))
    assert pair.status_code == 403 and "needs a recent sign-in" in pair.text
    assert "/pair/" not in pair.text
    key = (await tw.twin.passkeys.all())[1]
    remove = await tw.client.post(
        f"/settings/passkeys/{key.id}/remove", headers=owner_headers(cookie)
    )
    assert remove.status_code == 403 and await tw.twin.passkeys.count() == 2
    add = await tw.register(Authenticator(), cookie=cookie)
    assert add.status_code == 403 and "recent sign-in" in add.json()["error"]["message"]

    # confirming with the passkey: a fresh session replaces this browser's old one
    start = (await tw.client.post("/auth/login/options", json={}, headers=owner_headers())).json()
    body = {"ceremony": start["ceremony"], "credential": device.get(start["publicKey"])}
    fresh = await tw.client.post("/auth/login", json=body, headers=owner_headers(cookie))
    assert fresh.status_code == 200
    renewed = fresh.cookies[COOKIE]
    tw.client.cookies.clear()
    assert (await tw.client.get("/", headers=page(cookie))).headers["location"] == "/login"
    assert "Confirm it's you" not in await settings_page(tw, renewed)
    pair = await tw.client.post("/settings/pair", headers=owner_headers(renewed))
    assert pair.status_code == 200 and "/pair/" in pair.text
