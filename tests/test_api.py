"""The local API in process: health, bearer auth and scopes, tokens, profile, the signed public
document, grants, the access log, a locked twin, OpenAPI and the rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, running_twin, tiny_png

from twin.app import create_app
from twin.core import Twin, initialize
from twin.errors import InvalidSignature
from twin.identity import Identity, verify, write_key_file
from twin.settings import Settings

pytestmark = pytest.mark.anyio

BASE = "http://localhost:8470"


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    """The JSON error of a response, checked to have ``status`` and the documented shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return dict(body["error"])


# --- health and authentication -------------------------------------------------------------


async def test_health_needs_no_auth_and_names_the_twin(tw: Running) -> None:
    response = await tw.client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["did"] == tw.twin.did and body["did"].startswith("did:key:z6Mk")
    assert body["version"] == tw.twin.version and body["version"]
    assert body["locked"] is False


async def test_missing_authorization_is_401_with_a_challenge(tw: Running) -> None:
    response = await tw.client.get("/api/profile/")
    error = error_of(response, 401)
    assert error["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Bearer" in error["message"]


@pytest.mark.parametrize(
    "header",
    [
        "twin_abc",  # no scheme
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer    ",
        "Bearer twin_thisisnotarealtokenatall",
        "Bearer not-even-our-prefix",
    ],
)
async def test_malformed_or_unknown_authorization_is_401(tw: Running, header: str) -> None:
    response = await tw.client.get("/api/profile/", headers={"Authorization": header})
    assert error_of(response, 401)["code"] == "unauthorized"
    assert "www-authenticate" in response.headers


async def test_revoked_token_is_401(tw: Running) -> None:
    info, secret = await tw.twin.tokens.create(frozenset({"profile:read"}), "soon gone")
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await tw.client.get("/api/profile/", headers=headers)).status_code == 200
    await tw.twin.tokens.revoke(info.id)
    error = error_of(await tw.client.get("/api/profile/", headers=headers), 401)
    assert "revoked" in error["message"]


async def test_missing_scope_is_403_naming_the_scope(tw: Running) -> None:
    headers = await tw.auth("profile:read")
    response = await tw.client.put("/api/profile/", json={"display_name": "Ada"}, headers=headers)
    error = error_of(response, 403)
    assert error["code"] == "forbidden"
    assert "profile:write" in error["message"]
    assert (await tw.client.get("/api/profile/", headers=headers)).status_code == 200
    other = await tw.auth("twin:read")
    assert (
        "profile:read"
        in error_of(await tw.client.get("/api/profile/", headers=other), 403)["message"]
    )


@pytest.mark.parametrize("scope", ["profile:*", "*"])
async def test_wildcard_scopes_cover_everything_of_theirs(tw: Running, scope: str) -> None:
    headers = await tw.auth(scope)
    put = await tw.client.put("/api/profile/", json={"display_name": "Ada"}, headers=headers)
    assert put.status_code == 200
    assert (await tw.client.get("/api/profile/", headers=headers)).json()["display_name"] == "Ada"
    avatar = await tw.client.put(
        "/api/profile/avatar", content=tiny_png(), headers={**headers, "Content-Type": "image/png"}
    )
    assert avatar.status_code == 200
    admin = await tw.client.get("/api/twin/tokens", headers=headers)
    assert admin.status_code == (200 if scope == "*" else 403)


# --- tokens through the API ----------------------------------------------------------------


async def test_tokens_are_created_listed_and_revoked_through_the_api(tw: Running) -> None:
    admin = await tw.auth("twin:admin", "profile:read")
    refused = await tw.client.post(
        "/api/twin/tokens", json={"name": "x", "scopes": ["*"]}, headers=await tw.auth("twin:read")
    )
    assert "twin:admin" in error_of(refused, 403)["message"]
    for more in (["*"], ["profile:*"], ["profile:write"], ["twin:*"]):
        escalate = await tw.client.post(
            "/api/twin/tokens", headers=admin, json={"name": "more", "scopes": more}
        )
        assert more[0] in error_of(escalate, 403)["message"], "a token handed on more than it holds"

    created = await tw.client.post(
        "/api/twin/tokens",
        headers=admin,
        json={"name": "backup script", "scopes": ["profile:read"]},
    )
    assert created.status_code == 201
    body = created.json()
    secret, info = body["token"], body["info"]
    assert secret.startswith("twin_")
    assert info["name"] == "backup script" and info["scopes"] == ["profile:read"]
    assert info["kind"] == "token"

    listing = await tw.client.get("/api/twin/tokens", headers=admin)
    assert listing.status_code == 200
    assert secret not in listing.text
    listed = {t["id"]: t for t in listing.json()}
    assert listed[info["id"]]["name"] == "backup script"
    assert "token" not in listed[info["id"]]

    mine = {"Authorization": f"Bearer {secret}"}
    assert (await tw.client.get("/api/profile/", headers=mine)).status_code == 200
    revoked = await tw.client.delete(f"/api/twin/tokens/{info['id']}", headers=admin)
    assert revoked.status_code == 204
    gone = await tw.client.get("/api/profile/", headers=mine)
    assert error_of(gone, 401)["code"] == "unauthorized"
    after = await tw.client.get("/api/twin/tokens", headers=admin)
    assert info["id"] not in {t["id"] for t in after.json()}
    assert (
        error_of(await tw.client.delete(f"/api/twin/tokens/{info['id']}", headers=admin), 404)[
            "code"
        ]
        == "not_found"
    )


@pytest.mark.parametrize(
    ("scope", "words"),
    [
        ("profile", "must look like"),
        ("Profile:read", "must look like"),
        ("profile:read:more", "must look like"),
        ("", "must look like"),
        ("nope:read", "no capability 'nope'"),
        ("profile:fly", "has no permission 'fly'"),
    ],
)
async def test_invalid_scopes_are_400_with_a_clear_message(
    tw: Running, scope: str, words: str
) -> None:
    admin = await tw.auth("twin:admin")
    response = await tw.client.post(
        "/api/twin/tokens", headers=admin, json={"name": "bad", "scopes": [scope]}
    )
    error = error_of(response, 400)
    assert words in error["message"]
    tokens = (await tw.client.get("/api/twin/tokens", headers=admin)).json()
    assert "bad" not in {t["name"] for t in tokens}


# --- profile, avatar and the public document ------------------------------------------------


async def test_profile_round_trip(tw: Running) -> None:
    headers = await tw.auth("profile:read", "profile:write")
    empty = (await tw.client.get("/api/profile/", headers=headers)).json()
    assert empty == {"display_name": "", "bio": "", "avatar": None, "updated": None}
    put = await tw.client.put(
        "/api/profile/",
        headers=headers,
        json={"display_name": "  Ada Lovelace ", "bio": "Notes on\nengines"},
    )
    assert put.status_code == 200
    assert put.json()["display_name"] == "Ada Lovelace"
    got = (await tw.client.get("/api/profile/", headers=headers)).json()
    assert got["display_name"] == "Ada Lovelace" and got["bio"] == "Notes on\nengines"
    assert got["updated"] is not None


async def test_avatar_upload_public_read_and_delete(tw: Running) -> None:
    headers = await tw.auth("profile:*")
    assert error_of(await tw.client.get("/api/profile/avatar"), 404)["code"] == "not_found"
    png = tiny_png()
    put = await tw.client.put(
        "/api/profile/avatar", content=png, headers={**headers, "Content-Type": "image/png"}
    )
    assert put.status_code == 200
    link = put.json()["avatar"]
    assert link.startswith("/api/profile/avatar")

    public = await tw.client.get(link)  # no Authorization: the picture is public
    assert public.status_code == 200
    assert public.content == png
    assert public.headers["content-type"] == "image/png"

    assert (await tw.client.delete("/api/profile/avatar", headers=headers)).status_code == 204
    assert error_of(await tw.client.get("/api/profile/avatar"), 404)["code"] == "not_found"
    assert (await tw.client.get("/api/profile/", headers=headers)).json()["avatar"] is None


async def test_bad_avatars_are_refused_and_keep_the_old_one(tw: Running) -> None:
    headers = await tw.auth("profile:*")
    png = tiny_png()
    first = await tw.client.put(
        "/api/profile/avatar", content=png, headers={**headers, "Content-Type": "image/png"}
    )
    assert first.status_code == 200

    wrong_magic = await tw.client.put(
        "/api/profile/avatar",
        content=b"GIF89a" + png[6:],
        headers={**headers, "Content-Type": "image/png"},
    )
    assert "image/png" in error_of(wrong_magic, 400)["message"]
    wrong_type = await tw.client.put(
        "/api/profile/avatar", content=png, headers={**headers, "Content-Type": "text/plain"}
    )
    assert "image/png" in error_of(wrong_type, 415)["message"]
    too_big = png + b"\x00" * (512 * 1024)
    assert (
        error_of(
            await tw.client.put(
                "/api/profile/avatar",
                content=too_big,
                headers={**headers, "Content-Type": "image/png"},
            ),
            413,
        )["code"]
        == "too_large"
    )
    empty = await tw.client.put(
        "/api/profile/avatar", content=b"", headers={**headers, "Content-Type": "image/png"}
    )
    error_of(empty, 400)

    assert (await tw.client.get("/api/profile/avatar")).content == png


async def test_well_known_document_is_signed_and_carries_the_profile(tw: Running) -> None:
    headers = await tw.auth("profile:write")
    await tw.client.put(
        "/api/profile/", headers=headers, json={"display_name": "Ada", "bio": "Analyst"}
    )
    response = await tw.client.get("/.well-known/twin")
    assert response.status_code == 200
    document = response.json()
    assert document["did"] == tw.twin.did
    assert document["profile"]["display_name"] == "Ada"
    assert document["profile"]["bio"] == "Analyst"
    assert document["endpoints"]["api"] == f"{BASE}/api"

    signature = document.pop("signature")
    verify(document["did"], document, signature)
    for field, value in [
        ("profile", {**document["profile"], "display_name": "Eve"}),
        ("did", Identity.generate().did),
        ("expires", document["expires"] + 1),
    ]:
        tampered = {**document, field: value}
        with pytest.raises(InvalidSignature):
            verify(document["did"], tampered, signature)


# --- experiences and grants -----------------------------------------------------------------


async def test_experiences_and_grants_through_the_api(tw: Running) -> None:
    admin = await tw.auth("twin:read", "twin:admin", "profile:*")
    listing = await tw.client.get("/api/twin/experiences", headers=admin)
    assert listing.status_code == 200
    profile = {e["id"]: e for e in listing.json()}["profile"]
    assert profile["uses"] == ["profile:read", "profile:write"]
    assert profile["granted"] == []
    assert profile["url"] == "/x/profile/"

    granted = await tw.client.put(
        "/api/twin/grants/profile", headers=admin, json={"scopes": ["profile:read"]}
    )
    assert granted.status_code == 200
    assert granted.json()["granted"] == ["profile:read"]
    grant = await tw.twin.grants.get("profile")
    assert grant is not None
    token = {"Authorization": f"Bearer {tw.twin.grants.token(grant)}"}
    assert (await tw.client.get("/api/profile/", headers=token)).status_code == 200
    write = await tw.client.put("/api/profile/", headers=token, json={"display_name": "x"})
    assert "profile:write" in error_of(write, 403)["message"]

    undeclared = await tw.client.put(
        "/api/twin/grants/profile", headers=admin, json={"scopes": ["twin:admin"]}
    )
    assert "did not declare twin:admin" in error_of(undeclared, 400)["message"]
    assert (await tw.client.get("/api/profile/", headers=token)).status_code == 200

    assert (await tw.client.delete("/api/twin/grants/profile", headers=admin)).status_code == 204
    withdrawn = await tw.client.get("/api/profile/", headers=token)
    assert error_of(withdrawn, 401)["code"] == "unauthorized"
    listed = await tw.client.get("/api/twin/experiences", headers=admin)
    after = {e["id"]: e for e in listed.json()}
    assert after["profile"]["granted"] == []


# --- the access log -------------------------------------------------------------------------


async def test_access_log_lists_calls_newest_first_without_paths_or_bodies(tw: Running) -> None:
    reader_info, reader_secret = await tw.twin.tokens.create(frozenset({"profile:read"}), "r")
    admin_info, admin_secret = await tw.twin.tokens.create(
        frozenset({"twin:read", "twin:admin"}), "a"
    )
    reader_id, admin_id = reader_info.id, admin_info.id
    reader = {"Authorization": f"Bearer {reader_secret}"}
    admin = {"Authorization": f"Bearer {admin_secret}"}
    marker = "SecretMarker1234"
    calls = [
        ("GET", "/api/profile/", reader, None),
        ("PUT", "/api/profile/", reader, {"display_name": marker}),
        ("GET", "/api/profile/", {}, None),
        ("DELETE", f"/api/twin/grants/{marker}", admin, None),
    ]
    for method, path, headers, body in calls:
        await tw.client.request(method, path, headers=headers, json=body)

    response = await tw.client.get("/api/twin/access-log", headers=admin)
    assert response.status_code == 200
    assert marker not in response.text
    entries = response.json()
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    newest = [
        (
            e["principal"],
            e["capability"],
            e["permission"],
            e["method"],
            e["route"],
            e["status"],
            e["outcome"],
        )
        for e in entries[:4]
    ]
    assert newest == [
        (
            f"token:{admin_id}",
            "twin",
            "admin",
            "DELETE",
            "/api/twin/grants/{experience}",
            404,
            "refused",
        ),
        ("anonymous", "profile", "read", "GET", "/api/profile/", 401, "denied"),
        (f"token:{reader_id}", "profile", "write", "PUT", "/api/profile/", 403, "denied"),
        (f"token:{reader_id}", "profile", "read", "GET", "/api/profile/", 200, "allowed"),
    ]

    first = (await tw.client.get("/api/twin/access-log?limit=2", headers=admin)).json()
    assert len(first) == 2
    rest = (
        await tw.client.get(f"/api/twin/access-log?limit=2&before={first[-1]['id']}", headers=admin)
    ).json()
    assert len(rest) == 2
    assert rest[0]["id"] < first[-1]["id"]
    assert not {e["id"] for e in first} & {e["id"] for e in rest}


async def test_access_log_counts_repeated_calls_in_one_row(tw: Running) -> None:
    reader = await tw.auth("profile:read")
    for _ in range(5):
        assert (await tw.client.get("/api/profile/", headers=reader)).status_code == 200
    assert (await tw.client.put("/api/profile/", headers=reader, json={})).status_code == 403
    entries = await tw.twin.access.entries()
    reads = [e for e in entries if e["permission"] == "read"]
    writes = [e for e in entries if e["permission"] == "write"]
    assert [(e["count"], e["outcome"]) for e in reads] == [(5, "allowed")]
    assert [(e["count"], e["outcome"]) for e in writes] == [(1, "denied")]
    assert reads[0]["first"] <= reads[0]["at"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "limit=",
        "limit=%C2%B2",
        "limit=%D9%A3",
        "limit=" + "9" * 5000,
        "before=abc",
        "before=-3",
        "before=",
        "before=%C2%B2",
        f"before={2**64}",
        "before=" + "9" * 5000,
    ],
)
async def test_access_log_bad_paging_is_400(tw: Running, query: str) -> None:
    admin = await tw.auth("twin:read")
    error = error_of(await tw.client.get(f"/api/twin/access-log?{query}", headers=admin), 400)
    assert query.split("=")[0] in error["message"]


async def test_access_log_paging_ends_with_an_empty_page(tw: Running) -> None:
    admin = await tw.auth("twin:read")
    await tw.client.get("/api/twin/", headers=admin)
    entries = (await tw.client.get("/api/twin/access-log", headers=admin)).json()
    assert [e["id"] for e in entries] == [1]
    for before in (1, 0):
        page = await tw.client.get(f"/api/twin/access-log?before={before}", headers=admin)
        assert page.status_code == 200 and page.json() == []


# --- a locked twin --------------------------------------------------------------------------


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[tuple[Twin, httpx.AsyncClient]]:
    """Open the data directory without a passphrase, as `twin serve` does before unlocking."""
    twin = await Twin.open(settings)
    await twin.start()
    transport = httpx.ASGITransport(app=create_app(twin))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield twin, client
    finally:
        await twin.stop()


async def test_locked_twin_answers_423_until_unlocked(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "sealed", rate_limit=0)
    identity = initialize(settings, passphrase="correct horse")
    # A token made while the twin is open; the vault is opened from the seed directly so this
    # set-up does not pay for one more argon2id derivation.
    maker = await Twin.open(settings)
    maker.vault.unlock(identity.seed)
    _, secret = await maker.tokens.create(frozenset({"*"}), "owner")
    await maker.stop()
    headers = {"Authorization": f"Bearer {secret}"}

    async with opened(settings) as (twin, client):
        health = (await client.get("/api/health")).json()
        assert health["locked"] is True and health["did"] == identity.did
        for method, path in [
            ("GET", "/api/profile/"),
            ("PUT", "/api/profile/"),
            ("GET", "/api/profile/avatar"),
            ("GET", "/api/twin/"),
            ("GET", "/api/twin/tokens"),
            ("GET", "/api/twin/access-log"),
        ]:
            response = await client.request(
                method,
                path,
                headers=headers,
                json={"display_name": "x"} if method == "PUT" else None,
            )
            error = error_of(response, 423)
            assert error["code"] == "locked"
            assert "passphrase" in error["message"] and "/api/twin/unlock" in error["message"]
        assert (await client.get("/.well-known/twin")).status_code == 423

        wrong = await client.post("/api/twin/unlock", json={"passphrase": "wrong horse"})
        assert error_of(wrong, 403)["code"] == "wrong_passphrase"
        assert "wrong horse" not in wrong.text
        assert str(tmp_path) not in wrong.text, "the key file's path leaked to an anonymous caller"
        assert (await client.get("/api/health")).json()["locked"] is True
        error_of(await client.get("/api/profile/", headers=headers), 423)

        right = await client.post("/api/twin/unlock", json={"passphrase": "correct horse"})
        assert right.status_code == 200 and right.json() == {"locked": False}
        assert (await client.get("/api/health")).json()["locked"] is False
        put = await client.put("/api/profile/", headers=headers, json={"display_name": "Ada"})
        assert put.status_code == 200
        assert (await client.get("/api/profile/", headers=headers)).json()["display_name"] == "Ada"
        assert (await client.get("/.well-known/twin")).json()["profile"]["display_name"] == "Ada"
        log = await twin.access.entries()
        unlocks = [(e["permission"], e["status"]) for e in log if e["route"] == "/api/twin/unlock"]
        assert unlocks == [("unlock", 200), ("unlock", 403)], "unlock attempts must be audited"


async def test_more_than_five_wrong_passphrases_a_minute_are_429(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "sealed", rate_limit=0)
    settings.data_dir.mkdir(mode=0o700)
    # The cheapest argon2id cost: this test is about the limit, not the key derivation.
    write_key_file(settings.key_path, Identity.generate(), "correct horse", _cost=(1, 8192))
    async with opened(settings) as (twin, client):
        # Sent at once, so a limit checked before waiting for the previous attempt would let
        # every one of them through.
        attempts = await asyncio.gather(
            *(client.post("/api/twin/unlock", json={"passphrase": f"guess {i}"}) for i in range(7))
        )
        statuses = sorted(r.status_code for r in attempts)
        assert statuses == [403] * 5 + [429] * 2
        limited = await client.post("/api/twin/unlock", json={"passphrase": "correct horse"})
        assert "wait a minute" in error_of(limited, 429)["message"]
        assert limited.headers["retry-after"] == "60"
        assert (await client.get("/api/health")).json()["locked"] is True

        # A stranger's guesses from one address do not lock out the owner at another.
        owner = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(twin), client=("192.0.2.7", 4000)),
            base_url=BASE,
        )
        async with owner:
            right = await owner.post("/api/twin/unlock", json={"passphrase": "correct horse"})
            assert right.status_code == 200 and right.json() == {"locked": False}

    async with opened(settings) as (twin, client):  # a restart forgets the failures
        right = await client.post("/api/twin/unlock", json={"passphrase": "correct horse"})
        assert right.status_code == 200


async def test_no_other_site_may_call_unlock(tw: Running) -> None:
    preflight = await tw.client.options(
        "/api/twin/unlock",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = await tw.client.post(
        "/api/twin/unlock",
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
        content='{"passphrase": "guess"}',
    )
    assert simple.status_code == 415 and "access-control-allow-origin" not in simple.headers
    # other API routes stay open to the sandboxed experience pages
    other = await tw.client.options(
        "/api/profile/",
        headers={
            "Origin": "null",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert other.headers["access-control-allow-origin"] == "*"


# --- OpenAPI --------------------------------------------------------------------------------


def resolve(spec: dict[str, Any], node: Any) -> None:
    """Every $ref in ``node`` points at a component that exists."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            name = ref.removeprefix("#/components/schemas/")
            assert name in spec["components"]["schemas"], ref
        for value in node.values():
            resolve(spec, value)
    elif isinstance(node, list):
        for value in node:
            resolve(spec, value)


async def test_openapi_describes_every_route(tw: Running) -> None:
    response = await tw.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["version"] == tw.twin.version
    assert spec["security"] == [{"bearer": []}]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    resolve(spec, spec)
    paths = spec["paths"]
    assert paths["/api/health"]["get"]["security"] == []

    for cap_id in ("profile", "twin"):
        for endpoint in tw.twin.registry.loaded[cap_id].endpoints:
            op = paths[f"/api/{cap_id}{endpoint.path}"][endpoint.method.lower()]
            if endpoint.permission is None:
                assert op["security"] == []
            else:
                assert "security" not in op  # the document-wide bearer requirement applies
                assert f"{cap_id}:{endpoint.permission}" in op["description"]
                assert "401" in op["responses"] and "403" in op["responses"]
            if endpoint.body is not None:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert ref == f"#/components/schemas/{endpoint.body.__name__}"
            ok = op["responses"][
                str(endpoint.status) if endpoint.response or endpoint.raw_response else "204"
            ]
            if endpoint.response is not None:
                assert "schema" in ok["content"]["application/json"]

    update = spec["components"]["schemas"]["ProfileUpdate"]
    assert update["properties"]["display_name"]["maxLength"] == 64
    assert update["required"] == ["display_name"]
    assert "Profile" in spec["components"]["schemas"]
    assert "ErrorBody" in spec["components"]["schemas"]
    avatar_put = paths["/api/profile/avatar"]["put"]["requestBody"]["content"]
    assert set(avatar_put) == {"image/png", "image/jpeg", "image/gif", "image/webp"}
    grant = paths["/api/twin/grants/{experience}"]["put"]
    assert grant["parameters"][0]["name"] == "experience"


# --- rate limit -----------------------------------------------------------------------------


async def test_rate_limit_refuses_a_burst_from_one_token_only(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "x", rate_limit=2) as tw:
        busy = await tw.auth("profile:read")
        statuses = [
            (await tw.client.get("/api/profile/", headers=busy)).status_code for _ in range(16)
        ]
        assert statuses[:8] == [200] * 8  # the burst is four times the rate
        assert 429 in statuses
        limited = await tw.client.get("/api/profile/", headers=busy)
        error = error_of(limited, 429)
        assert error["code"] == "rate_limited"
        calm = await tw.auth("profile:read")
        assert (await tw.client.get("/api/profile/", headers=calm)).status_code == 200
        assert (await tw.client.get("/api/health")).status_code == 200


async def test_guessing_tokens_is_rate_limited_per_address(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "x", rate_limit=2) as tw:
        guesses = [
            (
                await tw.client.get(
                    "/api/profile/", headers={"Authorization": f"Bearer twin_guess{i}"}
                )
            ).status_code
            for i in range(12)
        ]
        assert guesses[:8] == [401] * 8 and guesses[-1] == 429
        # guesses are limited, not the owner's valid token from the same address
        owner = await tw.auth("profile:read")
        assert (await tw.client.get("/api/profile/", headers=owner)).status_code == 200


async def test_a_capability_root_answers_with_or_without_its_slash(tw: Running) -> None:
    reader = await tw.auth("profile:read")
    with_slash = await tw.client.get("/api/profile/", headers=reader)
    without = await tw.client.get("/api/profile", headers=reader)
    assert without.status_code == with_slash.status_code == 200
    assert without.json() == with_slash.json()


async def test_rate_limited_answers_say_when_to_retry(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "x", rate_limit=1) as tw:
        busy = await tw.auth("profile:read")
        for _ in range(8):
            response = await tw.client.get("/api/profile/", headers=busy)
            if response.status_code == 429:
                break
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1


async def test_the_public_document_gives_the_avatar_as_a_full_url(tw: Running) -> None:
    writer = await tw.auth("profile:write")
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    put = await tw.client.put(
        "/api/profile/avatar", headers={**writer, "content-type": "image/png"}, content=png
    )
    assert put.status_code == 200
    avatar = (await tw.client.get("/.well-known/twin")).json()["profile"]["avatar"]
    assert avatar.startswith(tw.settings.url + "/api/profile/avatar")
    assert (await tw.client.get(avatar)).content == png


async def test_a_token_cannot_grant_an_experience_what_it_does_not_hold(tw: Running) -> None:
    admin_only = await tw.auth("twin:admin")
    refused = await tw.client.put(
        "/api/twin/grants/profile", headers=admin_only, json={"scopes": ["profile:write"]}
    )
    assert "profile:write" in error_of(refused, 403)["message"]
    assert await tw.twin.grants.get("profile") is None
    holder = await tw.auth("twin:admin", "profile:*")
    allowed = await tw.client.put(
        "/api/twin/grants/profile", headers=holder, json={"scopes": ["profile:write"]}
    )
    assert allowed.status_code == 200 and allowed.json()["granted"] == ["profile:write"]


def test_the_rate_limiter_forgets_strangers_instead_of_growing() -> None:
    from twin.guards import RateLimiter

    limiter = RateLimiter(rate=1000)
    for i in range(3 * RateLimiter.MAX_BUCKETS):
        limiter.check(f"address 10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= RateLimiter.MAX_BUCKETS


async def test_public_routes_are_rate_limited_per_address(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "x", rate_limit=2) as tw:
        statuses = [(await tw.client.get("/api/profile/avatar")).status_code for _ in range(12)]
        assert statuses[:8] == [404] * 8 and statuses[-1] == 429
