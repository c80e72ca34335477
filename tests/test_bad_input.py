"""Bad input is a clear 4xx JSON error, never a 500, and leaves what is stored unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from conftest import Running
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from twin.app import create_app

pytestmark = pytest.mark.anyio

PROFILE = {"display_name": "Ada", "bio": "Counts things"}


@pytest.fixture
async def owner(tw: Running) -> dict[str, str]:
    """Headers of a token that may read and write the profile, which is already set."""
    headers = await tw.auth("profile:read", "profile:write")
    assert (await tw.client.put("/api/profile/", json=PROFILE, headers=headers)).status_code == 200
    return headers


async def stored(tw: Running, headers: dict[str, str]) -> dict[str, Any]:
    response = await tw.client.get("/api/profile/", headers=headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return {"display_name": body["display_name"], "bio": body["bio"]}


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"] and "Traceback" not in response.text
    return dict(body["error"])


async def put_raw(
    tw: Running, headers: dict[str, str], content: Any, content_type: str = "application/json"
) -> httpx.Response:
    return await tw.client.put(
        "/api/profile/", content=content, headers={**headers, "Content-Type": content_type}
    )


# --- bodies ---------------------------------------------------------------------------------


async def test_oversized_body_with_content_length_is_413(
    tw: Running, owner: dict[str, str]
) -> None:
    body = json.dumps({"display_name": "x", "bio": "y" * tw.settings.max_body}).encode()
    response = await put_raw(tw, owner, body)
    error = error_of(response, 413)
    assert error["code"] == "too_large" and str(tw.settings.max_body) in error["message"]
    assert await stored(tw, owner) == PROFILE


async def test_oversized_streamed_body_without_content_length_is_413(
    tw: Running, owner: dict[str, str]
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"display_name": "x", "bio": "'
        for _ in range(tw.settings.max_body // 65536 + 2):
            sent += 65536
            yield b"y" * 65536
        yield b'"}'

    request = tw.client.build_request(
        "PUT",
        "/api/profile/",
        content=chunks(),
        headers={**owner, "Content-Type": "application/json"},
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    error_of(await tw.client.send(request), 413)
    assert await stored(tw, owner) == PROFILE


@pytest.mark.parametrize(
    ("content_length", "status"),
    [
        ("abc", 400),
        ("-1", 400),
        ("1e3", 400),
        ("\u00b2", 400),
        ("\u0663", 400),
        ("9" * 5000, 413),
        (str(2**64), 413),
    ],
)
async def test_nonsense_content_length_is_refused(
    tw: Running, owner: dict[str, str], content_length: str, status: int
) -> None:
    request = tw.client.build_request(
        "PUT",
        "/api/profile/",
        content=b'{"display_name": "x"}',
        headers={**owner, "Content-Type": "application/json"},
    )
    request.headers["Content-Length"] = content_length
    error = error_of(await tw.client.send(request), status)
    assert ("Content-Length" if status == 400 else "limit") in error["message"]
    assert await stored(tw, owner) == PROFILE


@pytest.mark.parametrize(
    "body",
    [
        b'{"display_name": "x"',
        b'{"display_name": }',
        b"{display_name: 'x'}",
        b'{"display_name": "x"} trailing',
        b"\xef\xbb\xbf{}",
        b'{"display_name": "\xff\xfe"}',  # not UTF-8
        b'{"display_name": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"display_name": "\\udc00"}',  # a lone surrogate escape
        b"",
    ],
)
async def test_malformed_json_is_400(tw: Running, owner: dict[str, str], body: bytes) -> None:
    error = error_of(await put_raw(tw, owner, body), 400)
    assert "JSON" in error["message"] or "UTF-8" in error["message"]
    assert await stored(tw, owner) == PROFILE


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([PROFILE], "Expected `object`, got `array`"),
        ("Ada", "Expected `object`, got `str`"),
        (None, "Expected `object`, got `null`"),
        (42, "Expected `object`, got `int`"),
        ({}, "missing required field `display_name`"),
        ({"display_name": 7}, "Expected `str`, got `int` - at `$.display_name`"),
        ({"display_name": "x", "bio": ["a"]}, "at `$.bio`"),
        ({"display_name": None}, "at `$.display_name`"),
        ({"display_name": "x", "admin": True}, "unknown field `admin`"),
        ({"display_name": "x" * 65}, "length <= 64"),
        ({"display_name": "x", "bio": "b" * 1001}, "length <= 1000"),
    ],
)
async def test_wrong_shapes_are_422_saying_what_is_wrong(
    tw: Running, owner: dict[str, str], body: Any, words: str
) -> None:
    response = await put_raw(tw, owner, json.dumps(body))
    error = error_of(response, 422)
    assert error["code"] == "invalid"
    assert words in error["message"]
    assert await stored(tw, owner) == PROFILE


async def test_display_name_of_64_chars_is_fine(tw: Running, owner: dict[str, str]) -> None:
    name = "é" * 64  # characters, not bytes
    assert (
        await tw.client.put("/api/profile/", json={"display_name": name}, headers=owner)
    ).status_code == 200
    assert (await stored(tw, owner))["display_name"] == name


@pytest.mark.parametrize("field", ["display_name", "bio"])
@pytest.mark.parametrize("char", ["\x00", "\x1b", "\r", "\x07"])
async def test_control_characters_are_400(
    tw: Running, owner: dict[str, str], field: str, char: str
) -> None:
    body = {**PROFILE, field: f"bad{char}value"}
    error = error_of(await tw.client.put("/api/profile/", json=body, headers=owner), 400)
    assert field in error["message"] and "control" in error["message"]
    assert await stored(tw, owner) == PROFILE


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
async def test_non_json_content_type_is_415(
    tw: Running, owner: dict[str, str], content_type: str
) -> None:
    response = await put_raw(tw, owner, json.dumps({"display_name": "Eve"}), content_type)
    error = error_of(response, 415)
    assert "application/json" in error["message"]
    assert await stored(tw, owner) == PROFILE


async def test_json_with_a_charset_is_accepted(tw: Running, owner: dict[str, str]) -> None:
    response = await put_raw(
        tw, owner, json.dumps({"display_name": "Bea"}), "application/json; charset=utf-8"
    )
    assert response.status_code == 200
    assert (await stored(tw, owner))["display_name"] == "Bea"


# --- routes and paths -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/nope", "/api/profile/nope", "/nothing/here", "/api"])
async def test_unknown_route_is_404_json(tw: Running, path: str) -> None:
    error = error_of(await tw.client.get(path), 404)
    assert error["code"] == "not_found" and path in error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/health"),
        ("DELETE", "/api/profile/"),
        ("PATCH", "/api/twin/tokens"),
        ("GET", "/api/twin/unlock"),
    ],
)
async def test_wrong_method_is_405_json(tw: Running, method: str, path: str) -> None:
    response = await tw.client.request(method, path)
    error = error_of(response, 405)
    assert error["code"] == "method_not_allowed" and method in error["message"]
    assert "allow" in response.headers


SECRETS_ON_DISK = ("class Twin", "root:x:0:0", "[project]", "twin-key/1")


async def raw_get(app: Any, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written, the way a server hands it over (no dot-segment cleanup)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost:8470")],
        "client": ("127.0.0.1", 1),
        "server": ("localhost", 8470),
    }
    status, body = 0, b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    await app(scope, receive, send)
    return status, body


PATH_TRICKS = [
    "/x/profile/static/../../twin/core.py",
    "/x/profile/static/../../../../../../etc/passwd",
    "/x/profile/static/%2e%2e/%2e%2e/etc/passwd",
    "/x/profile/static/..%2f..%2f..%2fpyproject.toml",
    "/static/..%2f..%2fpyproject.toml",
    "/static/../../../pyproject.toml",
    "/static//etc/passwd",
    "/x/../api/health",
    "/x/./../pyproject.toml",
    "/x/nope/",
    "/x/..%2f..%2fidentity.json/",
    "/x/profile/static/%00",
    "/static/twin.css%00.py",
]


@pytest.mark.parametrize("path", PATH_TRICKS)
async def test_path_tricks_are_404_and_never_a_file(tw: Running, path: str) -> None:
    # an experience page sends a stranger to sign in, whether or not it exists (see below)
    expected = {404, 303} if path.startswith("/x/") and "static" not in path else {404}
    status, body = await raw_get(create_app(tw.twin), path)
    assert status in expected, body[:200]
    assert not any(s.encode() in body for s in SECRETS_ON_DISK)
    response = await tw.client.get(path, follow_redirects=False)  # dot segments normalised
    if response.url.path == "/api/health":
        assert response.json()["status"] == "ok"
    else:
        assert response.status_code in expected, response.text[:200]
    assert not any(s in response.text for s in SECRETS_ON_DISK)


@pytest.mark.parametrize(
    "experience", ["nope", "Profile", "%2e%2e", "..%2f..", "a" * 300, "prof%00ile"]
)
async def test_unknown_experience_in_grants_is_404(tw: Running, experience: str) -> None:
    admin = await tw.auth("twin:admin")
    put = await tw.client.put(
        f"/api/twin/grants/{experience}", json={"scopes": ["profile:read"]}, headers=admin
    )
    assert error_of(put, 404)["code"] == "not_found"
    delete = await tw.client.delete(f"/api/twin/grants/{experience}", headers=admin)
    assert error_of(delete, 404)["code"] == "not_found"
    assert await tw.twin.grants.all() == {}


@pytest.mark.parametrize("token", ["twin_" + "a" * 100_000, "x" * 60_000, "twin_\u00e9\u00e9"])
async def test_huge_or_odd_bearer_token_is_401(tw: Running, token: str) -> None:
    response = await tw.client.get(
        "/api/profile/", headers={"Authorization": f"Bearer {token}".encode()}
    )
    assert error_of(response, 401)["code"] == "unauthorized"
    assert token not in response.text


# --- arbitrary JSON -------------------------------------------------------------------------


def accepted(value: Any) -> dict[str, str] | None:
    """What the profile becomes when ``value`` is PUT, or None when it must be refused."""
    if not isinstance(value, dict) or set(value) - {"display_name", "bio"}:
        return None
    name, bio = value.get("display_name"), value.get("bio", "")
    if not isinstance(name, str) or not isinstance(bio, str):
        return None
    if len(name) > 64 or len(bio) > 1000:
        return None
    if any(ord(c) < 32 and c not in "\n\t" for c in name + bio):
        return None
    return {"display_name": name.strip(), "bio": bio.strip()}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
profile_like = st.fixed_dictionaries(
    {"display_name": st.text(max_size=70) | json_values},
    optional={"bio": st.text(max_size=40) | json_values, "extra": json_values},
)
plausible = st.fixed_dictionaries(
    {"display_name": st.text(max_size=70)}, optional={"bio": st.text(max_size=1010)}
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.one_of(json_values, profile_like, plausible))
async def test_arbitrary_json_never_fails_and_never_half_writes(
    tw: Running, owner: dict[str, str], value: Any
) -> None:
    # The twin persists across examples: "unchanged" means "as the previous example left it".
    before = await stored(tw, owner)
    response = await tw.client.put(
        "/api/profile/",
        content=json.dumps(value),
        headers={**owner, "Content-Type": "application/json"},
    )
    assert response.status_code < 500, response.text
    expected = accepted(value)
    event("refused" if expected is None else "stored")
    if expected is None:
        assert 400 <= response.status_code < 500
        error_of(response, response.status_code)
        assert await stored(tw, owner) == before
    else:
        assert response.status_code == 200, response.text
        assert await stored(tw, owner) == expected


async def test_strangers_cannot_tell_which_experiences_are_installed(tw: Running) -> None:
    same = {"Origin": "http://localhost:8470"}
    for method, suffix in (("GET", "/"), ("POST", "/grant"), ("POST", "/revoke")):
        installed = await tw.client.request(method, f"/x/profile{suffix}", headers=same)
        missing = await tw.client.request(method, f"/x/nope{suffix}", headers=same)
        assert installed.status_code == missing.status_code, (method, suffix)
        # the same answer, naming back only what was asked for
        named = installed.headers.get("location", "").replace("profile", "nope")
        assert named == missing.headers.get("location", "")
