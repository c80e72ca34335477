"""Bad input to /api/files: each answers a clear 4xx saying what was wrong, and what was stored
stays as it was."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import Running, running_twin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twin_capabilities.files._paths import check_path

from twin import BadInput

pytestmark = pytest.mark.anyio


@pytest.fixture
async def auth(tw: Running) -> dict[str, str]:
    headers = await tw.auth("files:*")
    for path, content in (("Keep/a.txt", b"alpha"), ("Keep/Sub/b.txt", b"beta")):
        sent = await tw.client.put(
            f"/api/files/content/{path}", params={"parents": "1"}, content=content, headers=headers
        )
        assert sent.status_code == 201
    return headers


async def intact(tw: Running, auth: dict[str, str]) -> None:
    for path, content in (("Keep/a.txt", b"alpha"), ("Keep/Sub/b.txt", b"beta")):
        got = await tw.client.get(f"/api/files/content/{path}", headers=auth)
        assert got.status_code == 200 and got.content == content
    root = (await tw.client.get("/api/files/tree/", headers=auth)).json()
    assert [e["name"] for e in root["entries"]] == ["Keep"]


BAD_PATHS = {
    "dot-dot": ("Keep/../../etc/passwd", "'..' is not a file name"),
    "absolute": ("/etc/passwd", "without a leading '/': 'etc/passwd'"),
    "dot": ("Keep/./a.txt", "'.' is not a file name"),
    "empty segment": ("Keep//a.txt", "empty segments"),
    "NUL": ("Keep/a\x00.txt", "control characters"),
    "newline": ("Keep/a\n.txt", "control characters"),
    "escape": ("Keep/\x1b[31m.txt", "control characters"),
    "backslash": ("Keep\\..\\a.txt", "backslash"),
    "name over 255 bytes": ("Keep/" + "é" * 128, "at most 255 bytes"),
    "too deep": ("/".join(["d"] * 65), "at most 64 segments"),
}


@pytest.mark.parametrize("case", BAD_PATHS, ids=list(BAD_PATHS))
async def test_bad_paths_are_refused_everywhere(
    tw: Running, auth: dict[str, str], case: str
) -> None:
    path, words = BAD_PATHS[case]
    # dot segments percent-encoded, or the client would resolve them before sending
    url = "/".join(
        "%2E" * len(seg) if seg in (".", "..") else quote(seg, safe="") for seg in path.split("/")
    )
    answers = [
        await tw.client.put(f"/api/files/content/{url}", content=b"x", headers=auth),
        await tw.client.get(f"/api/files/tree/{url}", headers=auth),
        await tw.client.delete(f"/api/files/tree/{url}", headers=auth),
        await tw.client.post("/api/files/folders", json={"path": path}, headers=auth),
        await tw.client.post(
            "/api/files/move", json={"from": "Keep/a.txt", "to": path}, headers=auth
        ),
        await tw.client.post("/api/files/copy", json={"from": path, "to": "x"}, headers=auth),
    ]
    for answer in answers:
        assert answer.status_code == 400, (answer.request.url, answer.text)
        assert words in answer.json()["error"]["message"]
    await intact(tw, auth)


async def test_a_path_that_is_too_long_is_refused(tw: Running, auth: dict[str, str]) -> None:
    answer = await tw.client.post("/api/files/folders", json={"path": "a/" * 2100}, headers=auth)
    assert answer.status_code == 400 and "at most 4096" in answer.json()["error"]["message"]


MOVES = {
    "onto itself": ("move", {"from": "Keep", "to": "Keep"}, 400, "onto itself"),
    "into its own child": ("move", {"from": "Keep", "to": "Keep/Sub/Keep"}, 400, "into itself"),
    "copy into its own child": ("copy", {"from": "Keep", "to": "Keep/Sub/X"}, 400, "into itself"),
    "the root": ("move", {"from": "", "to": "Elsewhere"}, 400, "root folder"),
    "over the root": ("copy", {"from": "Keep", "to": "/"}, 400, "root folder"),
    "missing source": ("move", {"from": "Nope", "to": "X"}, 404, "no file or folder"),
    "missing target folder": ("copy", {"from": "Keep", "to": "No/X"}, 409, "create it first"),
    "into a file": ("move", {"from": "Keep/Sub", "to": "Keep/a.txt/Sub"}, 409, "is a file"),
    "over something": ("copy", {"from": "Keep/a.txt", "to": "Keep/Sub"}, 412, "overwrite"),
    "unknown field": ("move", {"from": "Keep", "to": "X", "force": True}, 422, "force"),
    "not a string": ("move", {"from": 3, "to": "X"}, 422, "Expected `str`"),
}


@pytest.mark.parametrize("case", MOVES, ids=list(MOVES))
async def test_moves_and_copies_that_cannot_be(
    tw: Running, auth: dict[str, str], case: str
) -> None:
    verb, body, status, words = MOVES[case]
    answer = await tw.client.post(f"/api/files/{verb}", json=body, headers=auth)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]["message"]
    await intact(tw, auth)


async def test_uploads_that_cannot_be(tw: Running, auth: dict[str, str]) -> None:
    client = tw.client
    cases = [
        ("Keep/Sub", {}, 409, "is a folder"),
        ("Nowhere/a.txt", {}, 409, "no folder"),
        ("Keep/a.txt/b.txt", {}, 409, "no folder"),
        ("", {}, 409, "a file needs a name"),
        ("Keep/a.txt", {"If-None-Match": '"abc"'}, 400, "can only be *"),
        ("Keep/a.txt", {"If-Match": '"not-its-etag"'}, 412, "changed"),
        ("Keep/a.txt", {"Content-Length": "12abc"}, 400, "Content-Length"),
    ]
    for path, headers, status, words in cases:
        answer = await client.put(
            f"/api/files/content/{path}", content=b"replaced!", headers={**auth, **headers}
        )
        assert answer.status_code == status, (path, answer.text)
        assert words in answer.json()["error"]["message"], answer.text
    await intact(tw, auth)


async def test_other_bad_requests(tw: Running, auth: dict[str, str]) -> None:
    client = tw.client
    folder_download = await client.get("/api/files/content/Keep", headers=auth)
    assert folder_download.status_code == 400 and "is a folder" in folder_download.text
    assert (await client.post("/api/files/trash/999/restore", headers=auth)).status_code == 404
    assert (await client.delete("/api/files/trash/abc", headers=auth)).status_code in (404, 405)
    assert (await client.delete("/api/files/tree/", headers=auth)).status_code == 400
    assert (await client.delete("/api/files/shares/nope", headers=auth)).status_code == 404
    not_json = await client.post(
        "/api/files/folders",
        content=b'{"path": "x"',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.text
    for body in ({"path": "Keep", "days": 0}, {"path": "Keep", "days": 366}):
        answer = await client.post("/api/files/shares", json=body, headers=auth)
        assert answer.status_code == 400 and "365 days" in answer.text
    limit = await client.post(
        "/api/files/shares", json={"path": "Keep", "max_downloads": 0}, headers=auth
    )
    assert limit.status_code == 400 and "max_downloads" in limit.text
    assert (await client.get("/s/" + "A" * 40)).status_code == 404
    assert (await client.post("/s/" + "A" * 40)).status_code == 405
    await intact(tw, auth)


async def test_hostile_names_are_kept_as_text(tw: Running, auth: dict[str, str]) -> None:
    name = "<img src=x onerror=alert(1)> \"quoted\" 'single' ;rm -rf ~ %00 %2e%2e.html"
    sent = await tw.client.put(
        f"/api/files/content/Keep/{quote(name)}", content=b"<h1>hi</h1>", headers=auth
    )
    assert sent.status_code == 201 and sent.json()["name"] == name
    got = await tw.client.get(f"/api/files/content/Keep/{quote(name)}", headers=auth)
    assert got.headers["content-type"].startswith("text/html")
    assert "sandbox" in got.headers["content-security-policy"]  # never runs on the twin's origin
    share = await tw.client.post("/api/files/shares", json={"path": f"Keep/{name}"}, headers=auth)
    page = await tw.client.get(share.json()["url"].removeprefix("http://localhost:8470"))
    assert "<img src=x" not in page.text and "&lt;img src=x" in page.text
    download = await tw.client.get(
        share.json()["url"].removeprefix("http://localhost:8470") + "/download"
    )
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "\n" not in download.headers["content-disposition"]


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=names)
def test_any_name_is_refused_clearly_or_comes_back_the_same(tmp_path: Path, name: str) -> None:
    import anyio

    async def run() -> None:
        try:
            check_path(name)
        except BadInput as exc:
            assert exc.message
            return
        async with running_twin(tmp_path / f"t{abs(hash(name))}") as tw:
            auth = await tw.auth("files:*")
            path = check_path(name)
            sent = await tw.client.put(
                f"/api/files/content/{quote(path)}",
                content=name.encode(),
                params={"parents": "1"},
                headers=auth,
            )
            assert sent.status_code == 201, sent.text
            assert sent.json()["path"] == path
            got = await tw.client.get(f"/api/files/content/{quote(path)}", headers=auth)
            assert got.content == name.encode()

    anyio.run(run)


@pytest.mark.parametrize("item", ["0", "18446744073709551616", "9" * 40])
async def test_a_trash_item_id_out_of_range_is_not_found(
    tw: Running, auth: dict[str, str], item: str
) -> None:
    for method, url in (
        ("POST", f"/api/files/trash/{item}/restore"),
        ("DELETE", f"/api/files/trash/{item}"),
    ):
        answer = await tw.client.request(method, url, headers=auth)
        assert answer.status_code == 404, answer.text
        assert "no item" in answer.json()["error"]["message"]
    await intact(tw, auth)
