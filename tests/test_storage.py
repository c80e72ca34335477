"""The storage capability over HTTP and from Python: documents, versions and conditional writes,
listings, batches, the change feed and its live stream, namespaces and scopes, quotas."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from conftest import Running, free_port, running_twin, twin_command
from twin_capabilities.storage import Delete, Put, Storage
from twin_capabilities.storage import _http as storage_http
from twin_capabilities.storage._http import may

from twin.app import create_app
from twin.core import Twin, initialize
from twin.experiences import Experience
from twin.registry import find_sources
from twin.scopes import Principal
from twin.server import BoundedHttpTools, TwinServer
from twin.settings import Settings
from twin.settings import human_size as size
from twin.shell import COOKIE

pytestmark = pytest.mark.anyio
JSON = {"Content-Type": "application/json"}


def storage(tw: Running) -> Storage:
    capability = tw.twin.registry.loaded["storage"].capability
    assert isinstance(capability, Storage)
    return capability


async def put(
    tw: Running, auth: dict[str, str], path: str, body: Any, **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await tw.client.put(
        f"/api/storage/{path}", content=content, headers={**auth, **JSON, **headers}
    )


async def state(tw: Running, namespace: str = "notes") -> dict[str, Any]:
    """Everything a namespace holds, as the owner would see it: to show nothing changed."""
    space = storage(tw).namespace(namespace)
    page = await space.list(limit=1000, bodies=True)
    return {
        "usage": await space.usage(),
        "documents": {d.key: (d.version, d.raw) for d in page.items},
    }


# Documents, versions and conditions


async def test_a_document_round_trips_with_its_version_as_etag(tw: Running) -> None:
    auth = await tw.auth("storage:*")
    created = await put(tw, auth, "notes/docs/notes/2026/todo", b'{"title": "Todo",\n "n": 1}')
    assert created.status_code == 201
    assert created.headers["etag"] == f'"{created.json()["version"]}"'
    assert created.json()["key"] == "notes/2026/todo"

    got = await tw.client.get("/api/storage/notes/docs/notes/2026/todo", headers=auth)
    assert got.status_code == 200
    assert got.content == b'{"title": "Todo",\n "n": 1}'  # exactly as written
    assert got.headers["etag"] == created.headers["etag"]
    assert got.headers["last-modified"].endswith("GMT")

    unchanged = await tw.client.get(
        "/api/storage/notes/docs/notes/2026/todo",
        headers={**auth, "If-None-Match": created.headers["etag"]},
    )
    assert unchanged.status_code == 304

    replaced = await put(tw, auth, "notes/docs/notes/2026/todo", {"title": "Done"})
    assert replaced.status_code == 200
    assert replaced.json()["version"] > created.json()["version"]
    got = await tw.client.get("/api/storage/notes/docs/notes/2026/todo", headers=auth)
    assert got.json() == {"title": "Done"}
    assert got.headers["etag"] == replaced.headers["etag"]

    assert (
        await tw.client.delete("/api/storage/notes/docs/notes/2026/todo", headers=auth)
    ).status_code == 204
    missing = await tw.client.get("/api/storage/notes/docs/notes/2026/todo", headers=auth)
    assert missing.status_code == 404
    assert "notes/2026/todo" in missing.json()["error"]["message"]
    again = await tw.client.delete("/api/storage/notes/docs/notes/2026/todo", headers=auth)
    assert again.status_code == 404


async def test_conditional_writes_refuse_what_another_writer_changed(tw: Running) -> None:
    auth = await tw.auth("storage:*")
    first = await put(tw, auth, "notes/docs/k", {"v": 1}, **{"If-None-Match": "*"})
    assert first.status_code == 201
    etag = first.headers["etag"]

    clash = await put(tw, auth, "notes/docs/k", {"v": "overwrite"}, **{"If-None-Match": "*"})
    assert clash.status_code == 412
    assert clash.json()["error"]["code"] == "precondition_failed"
    assert clash.headers["etag"] == etag  # the current version, to read again

    second = await put(tw, auth, "notes/docs/k", {"v": 2}, **{"If-Match": etag})
    assert second.status_code == 200
    stale = await put(tw, auth, "notes/docs/k", {"v": "stale"}, **{"If-Match": etag})
    assert stale.status_code == 412
    assert "read it again" in stale.json()["error"]["message"]
    assert stale.headers["etag"] == second.headers["etag"]

    assert (await put(tw, auth, "notes/docs/k", {"v": 3}, **{"If-Match": "*"})).status_code == 200
    absent = await put(tw, auth, "notes/docs/none", {"v": 1}, **{"If-Match": "*"})
    assert absent.status_code == 412
    weak = await put(tw, auth, "notes/docs/k", {"v": 4}, **{"If-Match": f"W/{etag}"})
    assert weak.status_code == 412  # a weak tag never matches a write

    wrong = await tw.client.delete("/api/storage/notes/docs/k", headers={**auth, "If-Match": etag})
    assert wrong.status_code == 412
    assert (await tw.client.get("/api/storage/notes/docs/k", headers=auth)).json() == {"v": 3}


async def test_of_many_concurrent_creates_exactly_one_wins(tw: Running) -> None:
    auth = await tw.auth("storage:*")
    answers = await asyncio.gather(
        *(
            put(tw, auth, "notes/docs/race", {"writer": n}, **{"If-None-Match": "*"})
            for n in range(24)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [412] * 23
    winner = next(a for a in answers if a.status_code == 201)
    stored = await tw.client.get("/api/storage/notes/docs/race", headers=auth)
    writer = stored.json()["writer"]
    assert winner.request.content == json.dumps({"writer": writer}).encode()

    # the same for updates from one version: one wins, the others learn it changed
    etag = stored.headers["etag"]
    answers = await asyncio.gather(
        *(put(tw, auth, "notes/docs/race", {"n": n}, **{"If-Match": etag}) for n in range(12))
    )
    assert sorted(a.status_code for a in answers) == [200] + [412] * 11


# Listings


async def test_listing_by_folder_pages_stably_while_documents_are_written(tw: Running) -> None:
    auth = await tw.auth("storage:*")
    space = storage(tw).namespace("notes")
    await space.batch([Put(f"notes/2026/n{i:02}", {"i": i}) for i in range(25)])
    await space.batch([Put("notes/2025/old", {"old": True}), Put("settings", {"theme": "x"})])
    await space.put("notes/2026/deep/er", {"deep": True})

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"prefix": "notes/2026/", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = await tw.client.get("/api/storage/notes/docs", params=params, headers=auth)
        assert page.status_code == 200, page.text
        seen += [item["key"] for item in page.json()["items"]]
        assert all("body" not in item for item in page.json()["items"])
        cursor = page.json()["cursor"]
        pages += 1
        if pages == 1:  # written between pages: a new one comes at the end, an update in place
            await space.put("notes/2026/late", {"late": True})
            await space.put("notes/2026/n00", {"i": "changed"})
            await space.delete("notes/2026/n15")
        if cursor is None:
            break
    expected = [f"notes/2026/n{i:02}" for i in range(25) if i != 15]
    assert seen == expected + ["notes/2026/deep/er", "notes/2026/late"]
    assert len(seen) == len(set(seen))

    everything = await tw.client.get(
        "/api/storage/notes/docs", params={"bodies": "true", "limit": 1000}, headers=auth
    )
    items = {item["key"]: item for item in everything.json()["items"]}
    assert items["settings"]["body"] == {"theme": "x"}
    assert items["notes/2026/n00"]["body"] == {"i": "changed"}
    assert len(items) == 24 + 4 and everything.json()["cursor"] is None

    only_2025 = await tw.client.get(
        "/api/storage/notes/docs", params={"prefix": "notes/2025/"}, headers=auth
    )
    assert [i["key"] for i in only_2025.json()["items"]] == ["notes/2025/old"]


async def test_a_tampered_or_foreign_cursor_is_refused(tw: Running) -> None:
    auth = await tw.auth("storage:*")
    space = storage(tw).namespace("notes")
    await space.batch([Put(f"a/{i}", {}) for i in range(5)])
    first = await tw.client.get(
        "/api/storage/notes/docs", params={"prefix": "a/", "limit": 2}, headers=auth
    )
    cursor = first.json()["cursor"]
    number, mac = cursor.split(".")
    for bad in (f"{int(number) + 1}.{mac}", f"{number}.{'0' * len(mac)}", "x", "-1.ab", "9" * 40):
        answer = await tw.client.get(
            "/api/storage/notes/docs", params={"prefix": "a/", "cursor": bad}, headers=auth
        )
        assert answer.status_code == 400, bad
        assert "cursor" in answer.json()["error"]["message"]
    for elsewhere in ({"prefix": "b/"}, {"prefix": ""}):
        answer = await tw.client.get(
            "/api/storage/notes/docs", params={**elsewhere, "cursor": cursor}, headers=auth
        )
        assert answer.status_code == 400
    other = await tw.client.get(
        "/api/storage/other/docs", params={"prefix": "a/", "cursor": cursor}, headers=auth
    )
    assert other.status_code == 400


# Batches


async def test_a_batch_is_all_or_nothing(tw: Running) -> None:
    auth = await tw.auth("storage:*")
    kept = await put(tw, auth, "notes/docs/kept", {"v": 1})
    before = await state(tw)

    ops = [
        {"op": "put", "key": "new/a", "body": {"a": 1}},
        {"op": "delete", "key": "kept"},
        {"op": "put", "key": "kept2", "body": {"b": 2}, "if_match": 999},
    ]
    refused = await tw.client.post("/api/storage/notes/batch", json={"ops": ops}, headers=auth)
    assert refused.status_code == 412
    assert refused.json()["error"]["message"].startswith("operation 3 (kept2)")
    assert await state(tw) == before

    missing = [{"op": "put", "key": "new/a", "body": {}}, {"op": "delete", "key": "nothing"}]
    answer = await tw.client.post("/api/storage/notes/batch", json={"ops": missing}, headers=auth)
    assert answer.status_code == 404
    assert await state(tw) == before

    twice = [{"op": "put", "key": "x", "body": {}}, {"op": "delete", "key": "x"}]
    answer = await tw.client.post("/api/storage/notes/batch", json={"ops": twice}, headers=auth)
    assert answer.status_code == 400 and "twice" in answer.json()["error"]["message"]

    good = [
        {"op": "put", "key": "new/a", "body": {"a": 1}, "if_none_match": "*"},
        {"op": "delete", "key": "kept", "if_match": kept.json()["version"]},
    ]
    done = await tw.client.post("/api/storage/notes/batch", json={"ops": good}, headers=auth)
    assert done.status_code == 200, done.text
    results = done.json()["results"]
    assert [(r["op"], r["key"]) for r in results] == [("put", "new/a"), ("delete", "kept")]
    assert results[1]["version"] == results[0]["version"] + 1
    after = await state(tw)
    assert set(after["documents"]) == {"new/a"}


# The change feed


async def test_the_feed_gives_the_latest_change_of_each_key_in_order(tw: Running) -> None:
    auth = await tw.auth("storage:*")
    space = storage(tw).namespace("notes")
    a = await space.put("a", {"v": 1})
    await space.put("b", {"v": 1})
    await space.put("a", {"v": 2})
    gone = await space.delete("b")
    c = await space.put("c", {"v": 1})

    everything = await tw.client.get(
        "/api/storage/notes/changes", params={"bodies": "true"}, headers=auth
    )
    body = everything.json()
    # from 0 a client holds nothing, so deletions are left out
    assert [(ch["key"], ch["op"], ch["body"]) for ch in body["changes"]] == [
        ("a", "put", {"v": 2}),
        ("c", "put", {"v": 1}),
    ]
    assert body["last_seq"] == c.version and body["more"] is False

    since_first = await tw.client.get(
        "/api/storage/notes/changes", params={"since": a.version}, headers=auth
    )
    changes = since_first.json()["changes"]
    assert [(ch["key"], ch["op"]) for ch in changes] == [
        ("a", "put"),
        ("b", "delete"),
        ("c", "put"),
    ]
    assert [ch["seq"] for ch in changes] == sorted(ch["seq"] for ch in changes)
    assert changes[1]["seq"] == gone.version and "body" not in changes[0]

    paged: list[str] = []
    since = 0
    while True:
        page = await tw.client.get(
            "/api/storage/notes/changes", params={"since": since, "limit": 1}, headers=auth
        )
        paged += [ch["key"] for ch in page.json()["changes"]]
        since = page.json()["last_seq"]
        if not page.json()["more"]:
            break
    # later pages may tell of deletions of keys the first never gave: nothing to do for them
    assert paged == ["a", "b", "c"] and since == c.version

    ahead = await tw.client.get(
        "/api/storage/notes/changes", params={"since": c.version + 1}, headers=auth
    )
    assert ahead.status_code == 400 and "since=0" in ahead.json()["error"]["message"]


async def test_a_since_older_than_the_kept_deletions_is_gone(tw: Running) -> None:
    auth = await tw.auth("storage:*")
    space = storage(tw).namespace("notes")
    first = await space.put("a", {})
    await space.put("b", {})
    await space.delete("b")
    assert await storage(tw).store.purge(older_than=1e12) == 1  # as if 30 days went by
    gone = await tw.client.get(
        "/api/storage/notes/changes", params={"since": first.version}, headers=auth
    )
    assert gone.status_code == 410
    assert "since=0" in gone.json()["error"]["message"]
    fresh = await tw.client.get("/api/storage/notes/changes", headers=auth)
    assert [ch["key"] for ch in fresh.json()["changes"]] == ["a"]
    latest = fresh.json()["last_seq"]
    ok = await tw.client.get("/api/storage/notes/changes", params={"since": latest}, headers=auth)
    assert ok.status_code == 200 and ok.json()["changes"] == []


# The live stream, over a real HTTP server


@asynccontextmanager
async def served(tw: Running) -> AsyncIterator[str]:
    """The twin's app on a loopback port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        create_app(tw.twin),
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        http=BoundedHttpTools,
    )
    server = TwinServer(config, tw.twin.stopping)
    task = asyncio.create_task(server.serve())
    with anyio.fail_after(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with anyio.fail_after(10):
            await task


class Stream:
    """Reads server-sent events: ``(event, id, data)`` triples."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments = 0

    async def next(self, timeout: float = 10, comments: bool = False) -> tuple[str, str, Any]:
        """The next event (or, with ``comments``, the next comment line as ``("comment", ...)``)."""
        event, ident, data = "message", "", []
        with anyio.fail_after(timeout):
            async for line in self.lines:
                if line == "":
                    if data:
                        return event, ident, json.loads("\n".join(data))
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "":
                    self.comments += 1
                    if comments:
                        return "comment", "", value
                elif field == "event":
                    event = value
                elif field == "id":
                    ident = value
                elif field == "data":
                    data.append(value)
        raise EOFError("the stream ended")

    async def until_ready(self) -> list[dict[str, Any]]:
        changes = []
        while True:
            event, _, data = await self.next()
            if event == "ready":
                return changes
            changes.append(data)


@asynccontextmanager
async def live(
    client: httpx.AsyncClient, path: str, token: str, **headers: str
) -> AsyncIterator[Stream]:
    async with client.stream(
        "GET", path, headers={"Authorization": f"Bearer {token}", **headers}
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


async def test_the_live_stream_catches_up_then_follows_and_resumes_without_loss(
    tw: Running,
) -> None:
    token = await tw.token("storage:*")
    space = storage(tw).namespace("notes")
    await space.put("before", {"n": 0})
    async with served(tw) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with live(client, "/api/storage/notes/changes/live?bodies=true", token) as stream:
            backlog = await stream.until_ready()
            assert [(c["key"], c["body"]) for c in backlog] == [("before", {"n": 0})]

            # over HTTP, and from Python, with a body that spans lines
            written = await client.put(
                "/api/storage/notes/docs/a",
                content=b'{"text":\n"two\\nlines"}',
                headers={"Authorization": f"Bearer {token}", **JSON},
            )
            event, ident, data = await stream.next()
            assert (event, data["key"], data["body"]) == ("message", "a", {"text": "two\nlines"})
            assert ident == str(written.json()["version"]) == str(data["seq"])
            await space.delete("before")
            _, _, data = await stream.next()
            assert (data["key"], data["op"]) == ("before", "delete")
            last = ident = str(data["seq"])

        # written while nobody listens; resumed from the last id seen: each change once
        for n in range(5):
            await space.put(f"while-away/{n}", {"n": n})
        await space.put("while-away/0", {"n": "again"})
        async with live(
            client, "/api/storage/notes/changes/live", token, **{"Last-Event-ID": last}
        ) as stream:
            missed = await stream.until_ready()
            assert [c["key"] for c in missed] == [f"while-away/{n}" for n in range(1, 5)] + [
                "while-away/0"
            ]
            assert all(int(c["seq"]) > int(last) for c in missed)
            await space.batch([Put("x", {}), Put("y", {}), Delete("while-away/1")])
            keys = [(await stream.next())[2]["key"] for _ in range(3)]
            assert keys == ["x", "y", "while-away/1"]


async def test_a_live_stream_ends_when_access_is_withdrawn_or_the_twin_stops(
    tw: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_http, "KEEP_ALIVE", 0.2)
    token = await tw.token("storage:read", name="watcher")
    space = storage(tw).namespace("notes")
    async with served(tw) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with live(client, "/api/storage/notes/changes/live", token) as stream:
            await stream.until_ready()
            assert await stream.next(comments=True) == ("comment", "", "keep-alive")  # idle
            await tw.twin.tokens.revoke("watcher")
            await space.put("after-revoke", {})
            event, _, data = await stream.next()
            assert (event, data) == ("end", {"reason": "access withdrawn"})
            with pytest.raises(EOFError):
                await stream.next()

        token = await tw.token("storage:read")
        async with live(client, "/api/storage/notes/changes/live", token) as stream:
            await stream.until_ready()
            tw.twin.stopping.set()
            with pytest.raises(EOFError):
                await stream.next()


async def test_streams_are_limited_per_caller(tw: Running) -> None:
    token = await tw.token("storage:read")
    async with served(tw) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with contextlib_stack(
            [live(client, "/api/storage/notes/changes/live", token) for _ in range(8)]
        ):
            refused = await client.get(
                "/api/storage/notes/changes/live", headers={"Authorization": f"Bearer {token}"}
            )
            assert refused.status_code == 429
            assert "8 live streams" in refused.json()["error"]["message"]
        # closed ones are counted off at once
        with anyio.fail_after(5):
            while storage_routes_open(tw):
                await asyncio.sleep(0.02)
        async with live(client, "/api/storage/notes/changes/live", token) as stream:
            await stream.until_ready()


@asynccontextmanager
async def contextlib_stack(managers: list[Any]) -> AsyncIterator[None]:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        for manager in managers:
            await stack.enter_async_context(manager)
        yield


def storage_routes_open(tw: Running) -> int:
    # the stream counter lives with the routes; reach it through an endpoint's bound method
    for endpoint in tw.twin.registry.loaded["storage"].endpoints:
        owner = getattr(endpoint.handler, "__self__", None)
        if owner is not None and hasattr(owner, "streams"):
            return sum(owner.streams.values())
    raise AssertionError("no storage routes")


# Namespaces and scopes


def test_who_may_reach_which_namespace() -> None:
    def experience(*scopes: str) -> Principal:
        return Principal("experience", "notes", frozenset(scopes))

    def token(*scopes: str) -> Principal:
        return Principal("token", "tok_1", frozenset(scopes))

    assert may(experience("storage:read"), "read", "notes")
    assert not may(experience("storage:read"), "read", "journal")
    assert not may(experience("storage:read"), "write", "notes")
    assert may(experience("storage:read@journal"), "read", "journal")
    assert not may(experience("storage:read@journal"), "write", "journal")
    assert not may(experience("storage:read@journal"), "read", "notes")
    assert may(token("storage:read"), "read", "journal")  # the owner's own token
    assert may(token("storage:write@a"), "write", "a")
    assert not may(token("storage:write@a"), "write", "b")
    assert may(token("storage:*"), "write", "b") and may(token("*"), "read", "b")
    assert not may(token("profile:*"), "read", "b")


async def test_an_experience_reaches_its_own_namespace_and_only_what_it_was_granted(
    tw: Running,
) -> None:
    registry = tw.twin.registry
    diary = Experience(
        "diary",
        "Diary",
        "",
        frozenset({"storage:read", "storage:write", "storage:read@journal"}),
        Path("."),
        "test",
    )
    registry.experiences["diary"] = diary
    # the owner is told, before allowing it, which namespace beyond its own it would read
    cookie = await tw.sign_in()
    asked = await tw.client.get("/x/diary/", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert asked.status_code == 200 and "Allow Diary?" in asked.text
    assert "in the namespace <strong>journal</strong>, which is not its own" in asked.text
    assert asked.text.count("Read its documents") == 2
    grant = await tw.twin.grants.grant(diary, diary.uses)
    page = {"Authorization": f"Bearer {tw.twin.grants.token(grant)}"}
    owner = await tw.auth("storage:*")
    await put(tw, owner, "journal/docs/day1", {"text": "dear diary"})
    await put(tw, owner, "secrets/docs/pin", {"pin": "1234"})

    assert (await put(tw, page, "diary/docs/mine", {"ok": True})).status_code == 201
    assert (await tw.client.get("/api/storage/diary/docs/mine", headers=page)).status_code == 200
    read = await tw.client.get("/api/storage/journal/docs/day1", headers=page)
    assert read.status_code == 200 and read.json() == {"text": "dear diary"}

    refused = await put(tw, page, "journal/docs/day2", {"text": "forged"})
    assert refused.status_code == 403
    assert "storage:write@journal" in refused.json()["error"]["message"]
    for path in ("secrets/docs/pin", "secrets/docs", "secrets/changes", "secrets"):
        answer = await tw.client.get(f"/api/storage/{path}", headers=page)
        assert answer.status_code == 403, path
    listed = await tw.client.get("/api/storage/", headers=page)
    assert {n["namespace"] for n in listed.json()["namespaces"]} == {"diary", "journal"}
    everything = await tw.client.get("/api/storage/", headers=owner)
    assert {n["namespace"] for n in everything.json()["namespaces"]} == {
        "diary",
        "journal",
        "secrets",
    }

    await tw.twin.grants.revoke("diary")
    gone = await tw.client.get("/api/storage/diary/docs/mine", headers=page)
    assert gone.status_code == 401


async def test_scopes_name_namespaces_only_where_a_permission_takes_one(tw: Running) -> None:
    owner = await tw.auth("*")
    for scopes, status in (
        (["storage:read@notes"], 201),
        (["storage:write@notes", "storage:read"], 201),
        (["profile:read@notes"], 400),
        (["storage:read@Notes"], 400),
        (["storage:*@notes"], 400),
        (["storage:read@"], 400),
    ):
        answer = await tw.client.post(
            "/api/twin/tokens", json={"name": "t", "scopes": scopes}, headers=owner
        )
        assert answer.status_code == status, (scopes, answer.text)
    # a token may hand on a namespace it holds, not another one
    narrow = await tw.auth("storage:read@notes", "twin:admin")
    for scopes, status in ((["storage:read@notes"], 201), (["storage:read@other"], 403)):
        answer = await tw.client.post(
            "/api/twin/tokens", json={"name": "child", "scopes": scopes}, headers=narrow
        )
        assert answer.status_code == status, (scopes, answer.text)


# Limits and quota


async def test_the_quota_refuses_growth_with_the_numbers_but_never_deletion(
    tmp_path: Path,
) -> None:
    async with running_twin(tmp_path / "small", storage_quota=2000) as tw:
        auth = await tw.auth("storage:*")
        filler = {"text": "x" * 900}
        assert (await put(tw, auth, "notes/docs/a", filler)).status_code == 201
        assert (await put(tw, auth, "notes/docs/b", filler)).status_code == 201
        before = await state(tw)
        over = await put(tw, auth, "notes/docs/c", filler)
        assert over.status_code == 507
        message = over.json()["error"]["message"]
        assert over.json()["error"]["code"] == "insufficient_storage"
        assert "2,000 bytes" in message and "would hold" in message
        assert await state(tw) == before
        # another namespace has a quota of its own
        assert (await put(tw, auth, "other/docs/c", filler)).status_code == 201
        # shrinking and deleting always work
        assert (await put(tw, auth, "notes/docs/a", {"text": "small"})).status_code == 200
        assert (
            await tw.client.delete("/api/storage/notes/docs/b", headers=auth)
        ).status_code == 204
        usage = (await tw.client.get("/api/storage/notes", headers=auth)).json()
        assert usage["documents"] == 1 and usage["quota"] == 2000
        assert usage["bytes"] == len("a") + len(json.dumps({"text": "small"}))


# From Python, as another capability uses it


async def test_a_plugin_uses_storage_through_python_and_sees_the_same_data(tw: Running) -> None:
    contacts = storage(tw).namespace("contacts")
    created = await contacts.put("people/ada", {"name": "Ada"}, if_none_match=True)
    assert created.created
    document = await contacts.get("people/ada")
    assert document is not None and document.body == {"name": "Ada"}
    assert document.version == created.version
    results = await contacts.batch(
        [Put("people/bob", {"name": "Bob"}), Put("people/ada", {"name": "Ada L."}, if_match=1)]
    )
    assert [r.key for r in results] == ["people/bob", "people/ada"]
    page = await contacts.list("people/", bodies=True)
    assert [d.body["name"] for d in page.items] == ["Ada L.", "Bob"]
    changes = await contacts.changes(since=created.version)
    assert [c.key for c in changes.changes] == ["people/bob", "people/ada"]
    with pytest.raises(Exception) as refused:
        await contacts.put("people/ada", {"name": "?"}, if_none_match=True)
    assert type(refused.value).__name__ == "PreconditionFailed"

    auth = await tw.auth("storage:read@contacts")
    over_http = await tw.client.get("/api/storage/contacts/docs/people/bob", headers=auth)
    assert over_http.json() == {"name": "Bob"}


async def test_documents_and_versions_survive_a_restart(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "t") as tw:
        written = await storage(tw).namespace("notes").put("kept", {"k": 1})
    async with running_twin(tmp_path / "t") as tw:
        space = storage(tw).namespace("notes")
        document = await space.get("kept")
        assert document is not None and document.body == {"k": 1}
        later = await space.put("kept", {"k": 2})
        assert later.version == written.version + 1


async def test_keys_and_bodies_are_not_in_the_database_in_clear(tw: Running) -> None:
    space = storage(tw).namespace("notes")
    await space.put("folder-marker-7f3a/key-marker-91c2", {"text": "body-marker-44d0"})
    await tw.twin.db.flush()
    raw = b""
    for path in tw.settings.data_dir.iterdir():
        if path.name.startswith("twin.db"):
            raw += path.read_bytes()
    for marker in (b"folder-marker-7f3a", b"key-marker-91c2", b"body-marker-44d0"):
        assert marker not in raw
    rows = sqlite3.connect(tw.settings.db_path).execute(
        "SELECT namespace, size FROM storage_documents"
    )
    body = len(b'{"text":"body-marker-44d0"}')
    assert list(rows) == [("notes", len("folder-marker-7f3a/key-marker-91c2") + body)]


@pytest.mark.slow
def test_twin_serve_stops_promptly_with_a_live_stream_open(serve: Any) -> None:
    process = serve()
    created = subprocess.run(
        twin_command(
            "token", "create", "--scope", "storage:*", "--data-dir", str(process.data_dir)
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    token = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{process.url}/api/storage/notes/changes/live"
    with httpx.stream("GET", url, headers=headers, timeout=20) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: ready"
        written = httpx.put(
            f"{process.url}/api/storage/notes/docs/hello", json={"hi": 1}, headers=headers
        )
        assert written.status_code == 201
        assert next(line for line in lines if line.startswith("id:")) == "id: 1"
        process.proc.send_signal(signal.SIGTERM)
        rest = list(lines)  # the twin ends the stream itself, after the event's data
        assert rest[0].startswith('data: {"seq":1,"key":"hello"') and rest[1:] == [""]
    assert process.proc.wait(20) in (0, -signal.SIGTERM)
    output = process.output()
    assert "Application shutdown complete" in output
    assert "timeout graceful shutdown exceeded" not in output


CONTACTS_PLUGIN = '''\
"""A stranger's capability that keeps its data in storage, through the Python API."""
from twin import Capability, api
from twin_capabilities.storage import Put, Storage


class Contacts(Capability):
    async def startup(self):
        self.people = self.require(Storage).namespace("contacts")

    def routes(self):
        return [api.post("/add", self.add, permission="use", summary="Add two people")]

    async def add(self, call):
        written = await self.people.batch([Put("people/ada", {"name": "Ada"}),
                                           Put("people/bob", {"name": "Bob"})])
        return {"versions": [w.version for w in written]}
'''


async def test_another_capability_requires_storage_and_keeps_its_data_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "contacts_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(CONTACTS_PLUGIN)
    (package / "capability.toml").write_text(
        'id = "contacts"\nversion = "1.0.0"\nrequires = ["storage"]\n'
        '[permissions.use]\ndescription = "Add people"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    group = "twin.capabilities"
    ours = [ep for ep in entry_points(group=group) if ep.name in ("profile", "storage")]
    sources = find_sources([*ours, EntryPoint("contacts", "contacts_plugin:Contacts", group)])

    config = Settings(data_dir=tmp_path / "twin", rate_limit=0)
    initialize(config)
    twin = await Twin.open(config)
    await twin.start(sources)
    try:
        assert set(twin.registry.loaded) >= {"contacts", "storage"}, twin.registry.failed
        transport = httpx.ASGITransport(app=create_app(twin))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            _, secret = await twin.tokens.create(frozenset({"contacts:use"}), "c")
            added = await client.post(
                "/api/contacts/add", headers={"Authorization": f"Bearer {secret}"}
            )
            assert added.status_code == 200, added.text
            _, reader = await twin.tokens.create(frozenset({"storage:read@contacts"}), "r")
            listed = await client.get(
                "/api/storage/contacts/docs",
                params={"prefix": "people/", "bodies": "true"},
                headers={"Authorization": f"Bearer {reader}"},
            )
            assert [i["body"]["name"] for i in listed.json()["items"]] == ["Ada", "Bob"]
    finally:
        await twin.stop()


async def test_a_write_whose_caller_went_away_is_still_seen_by_reads_and_streams(
    tw: Running,
) -> None:
    space = storage(tw).namespace("notes")
    await space.put("k", {"v": 1})
    first = await space.get("k")  # now kept, decrypted, for the next reads
    assert first is not None and first.body == {"v": 1}
    woken = storage(tw).store.feed.next_change("notes")

    writing = asyncio.create_task(space.put("k", {"v": 2}))
    await asyncio.sleep(0)  # queued for the writer
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    await tw.twin.db.flush()
    with anyio.fail_after(5):
        await woken.wait()
    again = await space.get("k")
    assert again is not None and again.body == {"v": 2} and again.version > first.version
    await space.delete("k")
    assert await space.get("k") is None


async def test_settings_show_the_owner_what_each_namespace_keeps(tw: Running) -> None:
    cookie = await tw.sign_in()
    empty = await tw.client.get("/settings", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert "What your twin keeps" in empty.text and "Nothing yet" in empty.text
    space = storage(tw).namespace("notes")
    await space.batch([Put("notes/a", {"text": "x" * 2000}), Put("notes/b", {"text": "y"})])
    await storage(tw).namespace("journal").put("day", {"t": 1})
    page = await tw.client.get("/settings", headers={"Cookie": f"{COOKIE}={cookie}"})
    usage = await space.usage()
    assert "<code>notes</code>" in page.text and "<code>journal</code>" in page.text
    assert f"2 documents, {size(usage.bytes)}" in page.text and "1 document, " in page.text
    assert size(usage.bytes) == "1.99 KiB"
    assert f'<progress value="{usage.bytes}" max="{usage.quota}"' in page.text
    assert "of 256 MiB" in page.text
