"""Experiences as the registry loads them from folders: valid ones are served, broken ones are
named with what is wrong and skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import passkey_session

from twin.core import Twin, initialize
from twin.errors import PluginError
from twin.experiences import load_experience
from twin.settings import Settings

pytestmark = pytest.mark.anyio


def make(root: Path, name: str, toml: str, index: bool = True) -> Path:
    folder = root / name
    (folder / "templates").mkdir(parents=True)
    (folder / "experience.toml").write_text(toml)
    if index:
        (folder / "templates" / "index.html").write_text("<p>{{ experience.name }}</p>")
    return folder


async def test_experiences_from_folders_load_or_are_named_and_skipped(tmp_path: Path) -> None:
    web = tmp_path / "web"
    good = make(web, "notes", 'id = "notes"\nname = "Notes"\nuses = ["twin:read"]\n')
    make(web, "twice", 'id = "notes"\nname = "Notes again"\n')
    make(web, "greedy", 'id = "greedy"\nname = "Greedy"\nuses = ["twin:*"]\n')
    make(web, "unknown", 'id = "unknown"\nname = "Unknown"\nuses = ["twin:fly"]\n')
    make(web, "bare", 'id = "bare"\nname = "Bare"\n', index=False)
    make(web, "badid", 'id = "Bad Id"\nname = "x"\n')
    make(web, "noisy", 'id = "noisy"\nname = "Noisy"\nnotifications = "yes"\n')
    settings = Settings(data_dir=tmp_path / "twin")
    initialize(settings)
    twin = await Twin.open(settings)
    try:
        from twin.admin import admin_builtin

        await twin.registry.load(
            [admin_builtin(twin)],
            [],
            db=twin.db,
            vault=twin.vault,
            settings=settings,
            did=twin.did,
            experience_dirs=sorted(p for p in web.iterdir()),
        )
    finally:
        await twin.stop()
    assert set(twin.registry.experiences) == {"notes"}
    assert twin.registry.experiences["notes"].root == good
    failed = twin.registry.failed
    assert "already used" in failed["experience twice"]
    assert "wildcard" in failed["experience greedy"]
    assert "twin has no permission 'fly'" in failed["experience unknown"]
    assert "templates/index.html is missing" in failed["experience bare"]
    assert "must match" in failed["experience badid"]
    assert "notifications must be true or false, not 'yes'" in failed["experience noisy"]


def test_uses_must_name_real_current_permissions(tmp_path: Path) -> None:
    from twin.manifest import parse_manifest

    manifests = {
        "notes": parse_manifest(
            {
                "id": "notes",
                "version": "1.0",
                "permissions": {
                    "read": {"description": "Read notes"},
                    "old": {"description": "Old way", "obsolete": True},
                },
            },
            "test",
        )
    }
    folder = make(tmp_path, "x", 'id = "x"\nname = "X"\nuses = ["notes:read"]\n')
    assert load_experience(folder, "test", manifests).uses == {"notes:read"}
    assert not load_experience(folder, "test", manifests).notifications
    told = make(tmp_path, "t", 'id = "t"\nname = "T"\nnotifications = true\n')
    assert load_experience(told, "test", manifests).notifications
    stale = make(tmp_path, "y", 'id = "y"\nname = "Y"\nuses = ["notes:old"]\n')
    with pytest.raises(PluginError, match="obsolete"):
        load_experience(stale, "test", manifests)
    extra = make(tmp_path, "z", 'id = "z"\nname = "Z"\nscript = "evil.py"\n')
    with pytest.raises(PluginError, match="unknown field"):
        load_experience(extra, "test", manifests)


async def test_an_experience_is_sandboxed_in_its_templates_and_its_files(tmp_path: Path) -> None:
    import httpx

    from twin.app import create_app
    from twin.registry import Registry

    web = tmp_path / "web"
    folder = make(web, "sneaky", 'id = "sneaky"\nname = "Sneaky"\n')
    (folder / "templates" / "index.html").write_text(
        "{{ cycler.__init__.__globals__.os.popen('echo owned').read() }}"
    )
    (folder / "static").mkdir()
    (folder / "static" / "page.html").write_text("<script src='x.js'></script>")
    settings = Settings(data_dir=tmp_path / "twin", rate_limit=0)
    initialize(settings)
    twin = await Twin.open(settings)
    await twin.start()
    # the loaded registry plus the sneaky experience, as if a plugin had shipped it
    registry: Registry = twin.registry
    registry._load_experiences([folder])
    assert "sneaky" in registry.experiences
    app = create_app(twin)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8470") as c:
            cookie = await passkey_session(c, await twin.sessions.create_link())
            page = await c.get("/x/sneaky/", headers={"Cookie": f"twin_session={cookie}"})
            assert "owned" not in page.text
            assert page.status_code == 500 and page.json()["error"]["code"] == "internal"
            shipped = await c.get("/x/sneaky/static/page.html")
            assert shipped.status_code == 200
            policies = shipped.headers.get_list("content-security-policy")
            assert any(p.startswith("sandbox allow-scripts") for p in policies), policies
    finally:
        await twin.stop()


async def test_a_plugin_cannot_take_a_name_of_the_signed_public_document(tmp_path: Path) -> None:
    from twin.admin import admin_builtin
    from twin.registry import Source

    settings = Settings(data_dir=tmp_path / "twin")
    initialize(settings)
    twin = await Twin.open(settings)
    try:
        sources = [Source(name, f"evil_{name}:Cap", "evil") for name in ("endpoints", "did")]
        await twin.registry.load(
            [admin_builtin(twin)],
            sources,
            db=twin.db,
            vault=twin.vault,
            settings=settings,
            did=twin.did,
            experience_dirs=[],
        )
        document = await twin.public_document()
    finally:
        await twin.stop()
    assert "reserved" in twin.registry.failed["endpoints"]
    assert "reserved" in twin.registry.failed["did"]
    assert document["did"] == twin.did and set(document["endpoints"]) == {"api", "web", "inbox"}
