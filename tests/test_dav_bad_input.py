"""Bad input at the WebDAV door: each one a clear 4xx with a message, and what was stored before
is still there, byte for byte, afterwards."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, running_twin
from twin_capabilities.files import _davprops

from twin.app import create_app
from twin.core import Twin, initialize
from twin.settings import Settings

pytestmark = pytest.mark.anyio

KEEP = b"what was stored before\n"
INNER = b"inside the folder\n"
STORED = {"/dav/", "/dav/keep.txt", "/dav/folder/", "/dav/folder/inner.txt"}
XML = {"Content-Type": "application/xml"}


@dataclass
class Dav:
    tw: Running
    token: str

    @property
    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth("me", self.token)

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.tw.client.request(method, path, auth=self.auth, **kw)

    async def raw(self, method: str, raw_path: bytes) -> tuple[int, bytes]:
        """A request with its path exactly as given (an HTTP client would tidy `..` away)."""
        answer: dict[str, Any] = {"body": b""}
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": raw_path.decode("latin-1"),
            "raw_path": raw_path,
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"localhost:8470"),
                (b"authorization", b"Basic " + base64.b64encode(f"me:{self.token}".encode())),
                (b"content-length", b"4"),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8470),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"evil", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            else:
                answer["body"] += message.get("body", b"")

        await create_app(self.tw.twin)(scope, receive, send)  # the twin is started already
        return answer["status"], answer["body"]

    async def intact(self) -> None:
        """What the fixture stored reads back unchanged, and nothing else appeared."""
        keep = await self.request("GET", "/dav/keep.txt")
        assert keep.status_code == 200 and keep.content == KEEP
        inner = await self.request("GET", "/dav/folder/inner.txt")
        assert inner.status_code == 200 and inner.content == INNER
        listed = await self.request("PROPFIND", "/dav/", headers={"Depth": "infinity"})
        assert listed.status_code == 207
        hrefs = set(re.findall(r"<D:response><D:href>([^<]*)</D:href>", listed.text))
        assert hrefs == STORED


async def stored(tw: Running, *scopes: str) -> Dav:
    dav = Dav(tw, await tw.token(*(scopes or ("files:*",))))
    owner = Dav(tw, await tw.token("files:*"))
    assert (await owner.request("PUT", "/dav/keep.txt", content=KEEP)).status_code == 201
    assert (await owner.request("MKCOL", "/dav/folder")).status_code == 201
    assert (await owner.request("PUT", "/dav/folder/inner.txt", content=INNER)).status_code == 201
    return dav


@pytest.fixture
async def dav(tw: Running) -> Dav:
    return await stored(tw)


# -- paths ------------------------------------------------------------------------------------


async def test_dot_dot_in_a_path_is_refused(dav: Dav) -> None:
    response = await dav.request("PUT", "/dav/folder/%2E%2E/keep.txt", content=b"evil")
    assert response.status_code == 400
    assert "'..' is not a file name" in response.text
    status, body = await dav.raw("PUT", b"/dav/folder/../keep.txt")
    assert status == 400 and b"'..' is not a file name" in body
    await dav.intact()


@pytest.mark.parametrize("name", ["a%00b", "line%0Abreak", "tab%09", "del%7F"])
async def test_control_characters_in_a_name_are_refused(dav: Dav, name: str) -> None:
    response = await dav.request("PUT", f"/dav/{name}", content=b"evil")
    assert response.status_code == 400
    assert "control characters" in response.text
    await dav.intact()


async def test_a_name_over_255_bytes_is_refused(dav: Dav) -> None:
    response = await dav.request("PUT", "/dav/" + "é" * 128, content=b"evil")
    assert response.status_code == 400
    assert "at most 255 bytes" in response.text and "256" in response.text
    await dav.intact()


async def test_invalid_utf8_in_a_percent_encoded_path_is_refused(dav: Dav) -> None:
    response = await dav.request("PUT", "/dav/folder/%FF%FE.txt", content=b"evil")
    assert response.status_code == 400
    assert "not valid UTF-8" in response.text
    await dav.intact()


async def test_an_encoded_slash_in_a_name_is_refused(dav: Dav) -> None:
    response = await dav.request("PUT", "/dav/folder%2Finner.txt", content=b"evil")
    assert response.status_code == 400
    assert "cannot hold '/'" in response.text
    await dav.intact()


# -- COPY and MOVE ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "destination",
    [
        "http://elsewhere.example/dav/stolen.txt",
        "https://localhost:8471/dav/stolen.txt",
        "/api/files/content/stolen.txt",
        "/davx/stolen.txt",
        "ftp://localhost:8470/dav/stolen.txt",
    ],
)
async def test_a_destination_outside_this_door_is_refused(dav: Dav, destination: str) -> None:
    for method in ("COPY", "MOVE"):
        response = await dav.request(method, "/dav/keep.txt", headers={"Destination": destination})
        assert response.status_code == 403
        assert "must be on this twin, under /dav/" in response.text
    await dav.intact()


async def test_a_destination_that_is_not_utf8_is_refused(dav: Dav) -> None:
    response = await dav.request(
        "COPY", "/dav/keep.txt", headers={"Destination": "/dav/%C3%28.txt"}
    )
    assert response.status_code == 400 and "not valid UTF-8" in response.text
    await dav.intact()


async def test_a_percent_encoded_absolute_destination_is_decoded(dav: Dav) -> None:
    response = await dav.request(
        "COPY",
        "/dav/keep.txt",
        headers={"Destination": "http://localhost:8470/dav/folder/caf%C3%A9%20copy.txt"},
    )
    assert response.status_code == 201
    copied = await dav.request("GET", "/dav/folder/café copy.txt")
    assert copied.content == KEEP


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
async def test_moving_or_copying_onto_itself_is_refused(dav: Dav, method: str) -> None:
    for source in ("/dav/keep.txt", "/dav/folder/"):
        response = await dav.request(method, source, headers={"Destination": source})
        assert response.status_code == 403
        assert "source and destination are the same" in response.text
    await dav.intact()


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
async def test_a_folder_into_its_own_child_is_refused(dav: Dav, method: str) -> None:
    response = await dav.request(
        method, "/dav/folder/", headers={"Destination": "/dav/folder/again/"}
    )
    assert response.status_code == 409
    assert "cannot be" in response.text and "into itself" in response.text
    await dav.intact()


async def test_overwrite_false_onto_an_existing_file_is_412(dav: Dav) -> None:
    response = await dav.request(
        "COPY",
        "/dav/folder/inner.txt",
        headers={"Destination": "/dav/keep.txt", "Overwrite": "F"},
    )
    assert response.status_code == 412 and "Overwrite is F" in response.text
    await dav.intact()


# -- XML bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PROPFIND", "PROPPATCH", "LOCK"])
async def test_a_huge_xml_body_is_refused(dav: Dav, method: str) -> None:
    body = b"<?xml version='1.0'?><D:propfind xmlns:D='DAV:'>" + b" " * (1 << 20) + b"</D:propfind>"
    response = await dav.request(method, "/dav/keep.txt", content=body, headers=XML)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(17):
            yield b" " * 65536

    streamed = await dav.request(method, "/dav/keep.txt", content=chunks(), headers=XML)
    for answer in (response, streamed):
        assert answer.status_code == 413
        assert f"at most {1 << 20} bytes" in answer.text
    await dav.intact()


LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:x>&lol2;</Z:x></D:prop></D:set>
</D:propertyupdate>"""


@pytest.mark.parametrize("method", ["PROPPATCH", "PROPFIND", "LOCK"])
async def test_xml_with_a_doctype_or_entities_is_refused(dav: Dav, method: str) -> None:
    response = await dav.request(method, "/dav/keep.txt", content=LAUGHS, headers=XML)
    assert response.status_code == 400
    assert "DOCTYPE or entity declarations" in response.text
    asked = b'<D:propfind xmlns:D="DAV:" xmlns:Z="urn:z"><D:prop><Z:x/></D:prop></D:propfind>'
    found = await dav.request("PROPFIND", "/dav/keep.txt", content=asked, headers={"Depth": "0"})
    assert "404 Not Found" in found.text  # the property was not set
    await dav.intact()


@pytest.mark.parametrize("method", ["PROPPATCH", "PROPFIND", "LOCK"])
async def test_malformed_xml_is_refused(dav: Dav, method: str) -> None:
    body = b'<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
    response = await dav.request(method, "/dav/keep.txt", content=body, headers=XML)
    assert response.status_code == 400
    assert "not well-formed XML" in response.text
    await dav.intact()


async def test_a_protected_property_fails_the_whole_proppatch(dav: Dav) -> None:
    body = b"""<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>
      <Z:colour>blue</Z:colour><D:getetag>"forged"</D:getetag></D:prop></D:set></D:propertyupdate>"""
    response = await dav.request("PROPPATCH", "/dav/keep.txt", content=body, headers=XML)
    assert response.status_code == 207
    assert "403 Forbidden" in response.text and "424 Failed Dependency" in response.text
    asked = b'<D:propfind xmlns:D="DAV:" xmlns:Z="urn:z"><D:prop><Z:colour/></D:prop></D:propfind>'
    found = await dav.request("PROPFIND", "/dav/keep.txt", content=asked, headers={"Depth": "0"})
    assert "blue" not in found.text and "404 Not Found" in found.text
    await dav.intact()


async def test_depth_infinity_on_a_large_tree_is_bounded(dav: Dav) -> None:
    """Over 10,000 entries (a folder of 100 files, copied 101 times: copies share content and
    are made in one statement each): listed at once it is refused, level by level it works."""
    owner = Dav(dav.tw, await dav.tw.token("files:*"))
    assert (await owner.request("MKCOL", "/dav/big")).status_code == 201
    assert (await owner.request("MKCOL", "/dav/big/a")).status_code == 201
    for n in range(100):
        put = await owner.request("PUT", f"/dav/big/a/{n:03}.txt", content=b"x")
        assert put.status_code == 201
    for n in range(101):
        copy = await owner.request(
            "COPY", "/dav/big/a", headers={"Destination": f"/dav/big/b{n:03}"}
        )
        assert copy.status_code == 201
    assert _davprops.WALK_LIMIT < 102 * 101
    response = await dav.request("PROPFIND", "/dav/", headers={"Depth": "infinity"})
    assert response.status_code == 403
    assert "<D:propfind-finite-depth/>" in response.text
    one = await dav.request("PROPFIND", "/dav/big/", headers={"Depth": "1"})
    assert one.status_code == 207 and one.text.count("<D:response>") == 103
    smaller = await dav.request("PROPFIND", "/dav/big/a/", headers={"Depth": "infinity"})
    assert smaller.status_code == 207 and smaller.text.count("<D:response>") == 101
    assert (await owner.request("DELETE", "/dav/big")).status_code == 204
    await dav.intact()


@pytest.mark.parametrize("depth", ["2", "one", "infinity;drop"])
async def test_an_unknown_depth_is_refused(dav: Dav, depth: str) -> None:
    response = await dav.request("PROPFIND", "/dav/", headers={"Depth": depth})
    assert response.status_code == 400 and "Depth" in response.text


async def test_mkcol_with_a_body_is_refused(dav: Dav) -> None:
    response = await dav.request("MKCOL", "/dav/new", content=b"<x/>", headers=XML)
    assert response.status_code == 415 and "MKCOL takes no body" in response.text
    await dav.intact()


@pytest.mark.parametrize("header", ["(<urn:x>", "<urn:x> (<urn:y>) (", "([no-quotes])", "junk"])
async def test_a_malformed_if_header_is_refused(dav: Dav, header: str) -> None:
    response = await dav.request("PUT", "/dav/keep.txt", content=b"evil", headers={"If": header})
    assert response.status_code == 400 and "If header is malformed" in response.text
    await dav.intact()


# -- writers that clash -----------------------------------------------------------------------


async def test_a_second_writer_to_the_same_path_gets_423(dav: Dav) -> None:
    first_started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first "
        first_started.set()
        await release.wait()
        yield b"writer\n"

    first = asyncio.create_task(dav.request("PUT", "/dav/shared.txt", content=slow()))
    await asyncio.wait_for(first_started.wait(), 10)
    second = await dav.request("PUT", "/dav/shared.txt", content=b"second writer\n")
    release.set()
    assert second.status_code == 423
    assert "being written by another request" in second.text
    assert (await first).status_code == 201
    read = await dav.request("GET", "/dav/shared.txt")
    assert read.content == b"first writer\n"
    assert (await dav.request("DELETE", "/dav/shared.txt")).status_code == 204
    await dav.intact()


async def test_a_stale_if_match_is_412(dav: Dav) -> None:
    response = await dav.request(
        "PUT", "/dav/keep.txt", content=b"evil", headers={"If-Match": '"not-the-etag"'}
    )
    assert response.status_code == 412
    await dav.intact()


async def test_a_locked_file_refuses_another_token(dav: Dav) -> None:
    lock = b"""<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>
      <D:locktype><D:write/></D:locktype><D:owner>laptop</D:owner></D:lockinfo>"""
    taken = await dav.request("LOCK", "/dav/keep.txt", content=lock, headers=XML)
    assert taken.status_code == 200
    token = taken.headers["lock-token"]
    other = Dav(dav.tw, await dav.tw.token("files:*"))
    for method, path, headers in [
        ("PUT", "/dav/keep.txt", {}),
        ("DELETE", "/dav/keep.txt", {}),
        ("MOVE", "/dav/keep.txt", {"Destination": "/dav/moved.txt"}),
        # another principal may not use the lock's token either
        ("PUT", "/dav/keep.txt", {"If": f"({token})"}),
    ]:
        response = await other.request(method, path, content=b"evil", headers=headers)
        assert response.status_code == 423, (method, response.text)
        assert "<D:lock-token-submitted><D:href>/dav/keep.txt</D:href>" in response.text
    await dav.intact()
    unlocked = await dav.request("UNLOCK", "/dav/keep.txt", headers={"Lock-Token": token})
    assert unlocked.status_code == 204


# -- credentials, limits, the vault -----------------------------------------------------------


async def test_no_credentials_get_401_with_a_basic_challenge(dav: Dav) -> None:
    for auth in (None, httpx.BasicAuth("me", "twin_not-a-token")):
        response = await dav.tw.client.request("PROPFIND", "/dav/", auth=auth)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Basic realm="twin"'
        assert "twin token create --scope files:*" in response.text
    await dav.intact()


async def test_a_read_only_token_cannot_write(tw: Running) -> None:
    dav = await stored(tw, "files:read")
    assert (await dav.request("GET", "/dav/keep.txt")).content == KEEP
    for method, headers in [
        ("PUT", {}),
        ("DELETE", {}),
        ("MOVE", {"Destination": "/dav/x.txt"}),
        ("PROPPATCH", {}),
        ("LOCK", {}),
    ]:
        response = await dav.request(method, "/dav/keep.txt", content=b"evil", headers=headers)
        assert response.status_code == 403
        assert "needs a token with the scope files:write" in response.text
    await dav.intact()


async def test_a_token_without_files_cannot_read(tw: Running) -> None:
    dav = await stored(tw, "storage:*")
    response = await dav.request("PROPFIND", "/dav/")
    assert response.status_code == 403 and "files:read" in response.text


async def test_too_many_requests_get_429_with_retry_after(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "limited", rate_limit=0.05) as tw:  # the door: 1 a second
        dav = Dav(tw, await tw.token("files:*"))
        statuses = [(await dav.request("PROPFIND", "/dav/")).status_code for _ in range(8)]
        assert statuses[0] == 207 and statuses[-1] == 429
        refused = await dav.request("GET", "/dav/")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "too many requests" in refused.text


async def test_guessing_passwords_is_limited_per_address(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "limited", rate_limit=0.05) as tw:
        wrong = httpx.BasicAuth("me", "twin_guess")
        statuses = [
            (await tw.client.request("PROPFIND", "/dav/", auth=wrong)).status_code for _ in range(8)
        ]
        assert statuses[0] == 401 and statuses[-1] == 429


async def test_a_locked_vault_answers_423(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "sealed", rate_limit=0)
    initialize(settings, passphrase="correct horse battery")
    twin = await Twin.open(settings)
    await twin.start()
    try:
        transport = httpx.ASGITransport(app=create_app(twin))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            response = await client.request("PROPFIND", "/dav/", auth=("me", "twin_x"))
            assert response.status_code == 423
            assert "the twin is locked: unlock it with its passphrase" in response.text
    finally:
        await twin.stop()


async def test_uploads_past_the_quota_get_507(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "small", files_quota=64 * 1024) as tw:
        dav = await stored(tw)
        declared = await dav.request("PUT", "/dav/big.bin", content=b"x" * 100_000)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"y" * 10_000

        streamed = await dav.request("PUT", "/dav/big.bin", content=chunks())
        for response in (declared, streamed):
            assert response.status_code == 507, response.text
            assert "left in the twin's files" in response.text, response.text
            assert "--files-quota" in response.text and "KiB" in response.text
        assert (await dav.request("GET", "/dav/big.bin")).status_code == 404
        await dav.intact()


async def test_a_property_value_over_64_kib_is_refused(dav: Dav) -> None:
    value = b"v" * (65 * 1024)
    body = (
        b'<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:small>ok</Z:small>'
        b"<Z:big>" + value + b"</Z:big></D:prop></D:set></D:propertyupdate>"
    )
    response = await dav.request("PROPPATCH", "/dav/keep.txt", content=body, headers=XML)
    assert response.status_code == 413, response.text
    assert "at most 65536 bytes" in response.text
    asked = b'<D:propfind xmlns:D="DAV:" xmlns:Z="urn:z"><D:prop><Z:small/></D:prop></D:propfind>'
    found = await dav.request("PROPFIND", "/dav/keep.txt", content=asked, headers={"Depth": "0"})
    assert "404 Not Found" in found.text  # all or nothing: the small one was not set either
    await dav.intact()


async def test_a_destination_by_the_proxys_public_name_is_accepted(dav: Dav) -> None:
    response = await dav.request(
        "COPY",
        "/dav/keep.txt",
        headers={
            "Destination": "https://twin.example.org:443/dav/folder/via%20proxy.txt",
            "X-Forwarded-Host": "twin.example.org",
        },
    )
    assert response.status_code == 201, response.text
    assert (await dav.request("GET", "/dav/folder/via proxy.txt")).content == KEEP


async def test_raw_bytes_that_are_not_utf8_are_refused(dav: Dav) -> None:
    """A server or proxy in front may pass a path's raw bytes on (uvicorn's parser refuses
    them first; see test_serve): the door refuses them itself too."""
    for method in ("PUT", "GET", "PROPFIND", "DELETE"):
        status, body = await dav.raw(method, b"/dav/folder/\xff\xfe.txt")
        assert status == 400 and b"not valid UTF-8" in body, (method, body)
    await dav.intact()


@pytest.mark.parametrize("method", ["PROPFIND", "PROPPATCH", "LOCK"])
async def test_an_xml_body_that_is_not_utf8_is_refused(dav: Dav, method: str) -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
        b"<D:displayname>\xff\xfe</D:displayname></D:prop></D:propfind>"
    )
    response = await dav.request(method, "/dav/keep.txt", content=body, headers=XML)
    assert response.status_code == 400, response.text
    assert "not well-formed" in response.text
    await dav.intact()
