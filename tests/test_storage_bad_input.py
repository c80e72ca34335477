"""Hostile and broken input to storage: each is a clear 4xx naming what was wrong, and nothing
stored changes (documents, versions, usage, the change feed)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import Running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twin_capabilities.storage import Put, Storage
from twin_capabilities.storage._names import MAX_DEPTH, MAX_DOCUMENT, MAX_KEY

pytestmark = pytest.mark.anyio
JSON = {"Content-Type": "application/json"}


async def snapshot(tw: Running) -> Any:
    capability = tw.twin.registry.loaded["storage"].capability
    assert isinstance(capability, Storage)
    result = {}
    for usage in await capability.store.usages():
        space = capability.namespace(usage.namespace)
        page = await space.list(limit=1000, bodies=True)
        changes = await space.changes(0, bodies=True)
        result[usage.namespace] = (
            await space.usage(),
            [(d.key, d.version, d.raw) for d in page.items],
            changes,
        )
    return result


@pytest.fixture
async def seeded(tw: Running) -> tuple[Running, dict[str, str], Any]:
    capability = tw.twin.registry.loaded["storage"].capability
    assert isinstance(capability, Storage)
    await capability.namespace("notes").batch(
        [Put("notes/a", {"title": "A"}), Put("notes/b", {"title": "B"}), Put("x", {"n": 1})]
    )
    auth = {"Authorization": f"Bearer {await tw.token('storage:*')}"}
    return tw, auth, await snapshot(tw)


def _refused(answer: httpx.Response, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert words in error["message"], error
    assert "Traceback" not in answer.text


async def _put(tw: Running, auth: dict[str, str], key: str, content: bytes, **headers: str) -> Any:
    return await tw.client.put(
        f"/api/storage/notes/docs/{key}", content=content, headers={**auth, **JSON, **headers}
    )


BODIES = [
    (b'{"title": "unterminated', 400, "not valid JSON"),
    (b'{"title": "A"', 400, "not valid JSON"),  # truncated
    (b"{'single': 'quotes'}", 400, "not valid JSON"),
    (b'{"n": NaN}', 400, "not valid JSON"),
    (b'{"a": 1} trailing', 400, "not valid JSON"),
    (b'{"s": "\xff\xfe"}', 400, "UTF-8"),
    (b"[1, 2, 3]", 400, "must be a JSON object"),
    (b'"a string"', 400, "must be a JSON object"),
    (b"42", 400, "must be a JSON object"),
    (b"null", 400, "must be a JSON object"),
    (b"", 400, "not valid JSON"),
    (b'{"deep": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", 400, "nests deeper"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nests deeper"),
    (b'{"a": "' + b"x" * MAX_DOCUMENT + b'"}', 413, "limit is 1048576 bytes"),
]


@pytest.mark.parametrize(("body", "status", "words"), BODIES, ids=range(len(BODIES)))
async def test_a_bad_body_is_refused_and_nothing_changes(
    seeded: Any, body: bytes, status: int, words: str
) -> None:
    tw, auth, before = seeded
    for key in ("notes/a", "notes/new"):  # replacing and creating
        _refused(await _put(tw, auth, key, body), status, words)
    batch = b'{"ops": [{"op": "put", "key": "notes/a", "body": ' + body + b"}]}"
    answer = await tw.client.post(
        "/api/storage/notes/batch", content=batch, headers={**auth, **JSON}
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert await snapshot(tw) == before


async def test_a_body_at_the_limits_is_taken(seeded: Any) -> None:
    tw, auth, _ = seeded
    deepest = b'{"d": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert (await _put(tw, auth, "deep", deepest)).status_code == 201
    brackets_in_strings = b'{"s": "' + b"[[[[" * 100 + b'\\"[[["}'
    assert (await _put(tw, auth, "strings", brackets_in_strings)).status_code == 201
    padding = MAX_DOCUMENT - len(b'{"a": ""}')
    largest = b'{"a": "' + b"x" * padding + b'"}'
    assert len(largest) == MAX_DOCUMENT
    assert (await _put(tw, auth, "largest", largest)).status_code == 201
    got = await tw.client.get("/api/storage/notes/docs/largest", headers=auth)
    assert got.content == largest


KEYS = [
    ("a/%2E%2E/b", "segment"),
    ("%2E%2E", "segment"),
    ("a/%2E/b", "segment"),
    ("a//b", "empty segment"),
    ("a/b/", "empty segment"),
    ("%2Fa", "empty segment"),
    ("a%00b", "control character"),
    ("a%0Ab", "control character"),
    ("a%7Fb", "control character"),
    ("a%5Cb", "backslash"),
    ("x" * (MAX_KEY + 1), f"the limit is {MAX_KEY} bytes"),
    ("%F0%9F%98%80" * (MAX_KEY // 4 + 1), f"the limit is {MAX_KEY} bytes"),
    ("/".join(["s"] * 33), "the limit is 32"),
    ("", "give a key"),
]


@pytest.mark.parametrize(("key", "words"), KEYS, ids=[k[:20] for k, _ in KEYS])
async def test_a_bad_key_is_refused_for_every_method(seeded: Any, key: str, words: str) -> None:
    tw, auth, before = seeded
    path = f"/api/storage/notes/docs/{key}"
    _refused(await tw.client.get(path, headers=auth), 400, words)
    _refused(await _put(tw, auth, key, b'{"a": 1}'), 400, words)
    _refused(await tw.client.delete(path, headers=auth), 400, words)
    assert await snapshot(tw) == before


async def test_keys_travel_by_raw_socket_as_a_client_sends_them(seeded: Any) -> None:
    """httpx normalises ``..`` away before sending; a hostile client does not. Through the ASGI
    scope as a server would hand it on, the twin still refuses them."""
    tw, auth, before = seeded
    from twin.app import create_app

    app = create_app(tw.twin)
    for raw_path in ("/api/storage/notes/docs/a/../x", "/api/storage/notes/docs/./x"):
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b'{"a": 1}', "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "PUT",
            "scheme": "http",
            "path": raw_path,
            "raw_path": raw_path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"localhost"),
                (b"content-type", b"application/json"),
                (b"authorization", auth["Authorization"].encode()),
            ],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 8470),
        }
        await app(scope, receive, send)
        assert sent[0]["status"] == 400, sent
        assert b"segment" in sent[1]["body"]
    assert await snapshot(tw) == before


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(min_size=1, max_size=40))
async def test_any_key_is_stored_and_read_back_or_refused_with_a_400(tw: Running, key: str) -> None:
    auth = {"Authorization": f"Bearer {await tw.token('storage:*')}"}
    # as a careful client does: every segment percent-encoded, dots too (URL libraries drop
    # "." and ".." segments before sending, and the request would name another path)
    path = "/api/storage/prop/docs/" + "/".join(
        quote(s, safe="").replace(".", "%2E") for s in key.split("/")
    )
    written = await tw.client.put(path, content=json.dumps({"k": key}), headers={**auth, **JSON})
    assert written.status_code in (200, 201, 400), written.text
    if written.status_code == 400:
        assert (await tw.client.get(path, headers=auth)).status_code == 400
        return
    assert written.json()["key"] == key
    read = await tw.client.get(path, headers=auth)
    assert read.status_code == 200 and read.json() == {"k": key}
    listed = await tw.client.get("/api/storage/prop/docs", params={"limit": 1000}, headers=auth)
    assert key in {item["key"] for item in listed.json()["items"]}


QUERIES = [
    ("docs", {"prefix": "notes"}, "must be a folder ending in /"),
    ("docs", {"prefix": "a//"}, "empty segment"),
    ("docs", {"prefix": "../"}, "segment"),
    ("docs", {"limit": "0"}, "limit must be 1 to 1000"),
    ("docs", {"limit": "5000"}, "limit must be 1 to 1000"),
    ("docs", {"limit": "-1"}, "whole number"),
    ("docs", {"limit": "ten"}, "whole number"),
    ("docs", {"bodies": "maybe"}, "true or false"),
    ("docs", {"cursor": "12.deadbeefdeadbeef"}, "cursor"),
    ("changes", {"since": "abc"}, "whole number"),
    ("changes", {"since": "9" * 30}, "whole number"),
    ("changes", {"since": "999999"}, "ahead of this namespace"),
    ("changes", {"limit": "0"}, "limit must be 1 to 1000"),
    ("changes/live", {"since": "999999"}, "ahead of this namespace"),
]


@pytest.mark.parametrize(("path", "params", "words"), QUERIES, ids=range(len(QUERIES)))
async def test_a_bad_query_is_refused(seeded: Any, path: str, params: Any, words: str) -> None:
    tw, auth, before = seeded
    answer = await tw.client.get(f"/api/storage/notes/{path}", params=params, headers=auth)
    _refused(answer, 400, words)
    assert await snapshot(tw) == before


BATCHES: list[tuple[Any, int, str]] = [
    ({"ops": []}, 422, "length"),
    ({"ops": [{"op": "put", "key": f"k{i}", "body": {}} for i in range(101)]}, 422, "length"),
    ({"ops": [{"op": "move", "key": "a"}]}, 422, "op"),
    ({"ops": [{"op": "put", "key": "a"}]}, 400, "a put needs a body"),
    ({"ops": [{"op": "put", "key": "a", "body": [1]}]}, 422, "body"),
    ({"ops": [{"op": "delete", "key": "x", "body": {}}]}, 400, "a delete takes only"),
    ({"ops": [{"op": "put", "key": "a/../b", "body": {}}]}, 400, "segment"),
    (
        {"ops": [{"op": "put", "key": "ok", "body": {}}, {"op": "put", "key": "", "body": {}}]},
        400,
        "operation 2",
    ),
    ({"ops": [{"op": "put", "key": "a", "body": {}, "extra": 1}]}, 422, "extra"),
    ({"ops": [{"op": "put", "key": "a", "body": {}, "if_none_match": "x"}]}, 422, "if_none_match"),
    ([], 422, "object"),
]


@pytest.mark.parametrize(("body", "status", "words"), BATCHES, ids=range(len(BATCHES)))
async def test_a_bad_batch_is_refused_and_nothing_changes(
    seeded: Any, body: Any, status: int, words: str
) -> None:
    tw, auth, before = seeded
    answer = await tw.client.post("/api/storage/notes/batch", json=body, headers=auth)
    _refused(answer, status, words)
    assert await snapshot(tw) == before


async def test_wrong_media_namespace_and_headers_are_refused(seeded: Any) -> None:
    tw, auth, before = seeded
    text = await tw.client.put(
        "/api/storage/notes/docs/a",
        content=b'{"a": 1}',
        headers={**auth, "Content-Type": "text/plain"},
    )
    _refused(text, 415, "application/json")
    for name in ("Notes", "1notes", "no-tes", "n" * 41):
        answer = await tw.client.get(f"/api/storage/{name}/docs/a", headers=auth)
        _refused(answer, 400, "namespace")
    for last in ("9" * 5000, "abc", "-1"):
        answer = await tw.client.get(
            "/api/storage/notes/changes/live", headers={**auth, "Last-Event-ID": last}
        )
        _refused(answer, 400, "Last-Event-ID")
    not_star = await _put(tw, auth, "notes/a", b'{"a": 2}', **{"If-None-Match": '"1"'})
    _refused(not_star, 400, "If-None-Match on a write takes only *")
    none = await tw.client.get("/api/storage/notes/docs/a")
    assert none.status_code == 401
    read_only = {"Authorization": f"Bearer {await tw.token('storage:read')}"}
    _refused(await _put(tw, read_only, "notes/a", b'{"a": 3}'), 403, "storage:write")
    other = {"Authorization": f"Bearer {await tw.token('storage:write@other')}"}
    _refused(await _put(tw, other, "notes/a", b'{"a": 3}'), 403, "storage:write@notes")
    assert await snapshot(tw) == before
