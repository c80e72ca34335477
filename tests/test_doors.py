"""Doors: a capability may answer a path of its own outside /api, never one of the core's."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import running_twin
from starlette.types import Receive, Scope, Send

from twin.doors import RESERVED, Mount, check_mounts
from twin.errors import PluginError
from twin.shell import shell_routes

pytestmark = pytest.mark.anyio


async def nothing(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("never called")


async def test_every_shell_page_is_reserved(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "twin") as tw:
        pages = {"/" + route.path.lstrip("/").split("/")[0] for route in shell_routes(tw.twin)}  # type: ignore[attr-defined]
    assert pages - {"/"} <= set(RESERVED), pages - set(RESERVED)


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/settings", "belongs to the twin's core"),
        ("/login", "belongs to the twin's core"),
        ("/api", "belongs to the twin's core"),
        ("/dav/sub", "one path segment"),
        ("dav", "one path segment"),
        ("/", "one path segment"),
        ("/Dav", "one path segment"),
        ("/files", "already the door of capability files"),
    ],
)
def test_a_door_on_a_taken_or_malformed_path_is_refused(path: str, words: str) -> None:
    with pytest.raises(PluginError) as refused:
        check_mounts("stranger", [Mount(path, nothing)], {"/files": "files"})
    assert words in refused.value.message


def test_a_door_of_its_own_is_accepted() -> None:
    assert check_mounts("stranger", (Mount("/photos", nothing),), {"/dav": "files"})[0].path == (
        "/photos"
    )
    with pytest.raises(PluginError, match="not a twin.doors.Mount"):
        check_mounts("stranger", ["/photos"], {})


async def test_the_capabilities_doors_answer_past_the_shell(tmp_path: Path) -> None:
    async with running_twin(tmp_path / "twin") as tw:
        assert set(tw.twin.registry.doors) == {"/dav", "/s", "/connect"}
        invite = await tw.client.get("/connect")
        assert invite.status_code == 200 and "invites you to connect" in invite.text
        assert "connect.js" in invite.text
        script = await tw.client.get("/connect/connect.js")
        assert script.status_code == 200 and "twin-invite:" in script.text
        refused = await tw.client.post("/connect")
        assert refused.status_code == 405
        dav = await tw.client.request("PROPFIND", "/dav/")
        assert dav.status_code == 401 and dav.headers["www-authenticate"] == 'Basic realm="twin"'
        page = await tw.client.get("/settings")
        assert page.status_code in (200, 303)  # still the shell's
