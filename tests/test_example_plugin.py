"""The example package `examples/hello-twin` (capability `guestbook`, permission `sign`, experience
`guestbook`), installed as a stranger's plugin would be: discovered, mounted, guarded, encrypted
at rest, and its experience served after a grant; in process and under a real `twin serve`."""

from __future__ import annotations

import importlib.metadata
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from authenticator import Authenticator
from conftest import passkey_session, running_twin, twin_command

from twin.shell import COOKIE

pytestmark = pytest.mark.anyio

SECRET_TEXT = "Meet me by the third oak at dawn, bring the blue lantern"
AUTHOR = "Wilhelmina Quartermaine"
TOKEN_META = re.compile(r'<meta name="twin-token" content="(twin_[A-Za-z0-9_-]+)">')
MakeToken = Callable[..., Awaitable[str]]


@pytest.fixture(scope="module", autouse=True)
def hello_twin_installed() -> None:
    try:
        importlib.metadata.distribution("hello-twin")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            "the example package is not installed: run `pip install ./examples/hello-twin`"
            " (or `pip install -e ./examples/hello-twin`) before these tests",
            pytrace=False,
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def check_api(client: httpx.AsyncClient, make_token: MakeToken) -> None:
    """What a user of the guestbook's API sees: it is listed, documented, guarded and works."""
    overview = await client.get("/api/twin/", headers=bearer(await make_token("twin:read")))
    assert overview.status_code == 200
    listed = {c["id"]: c for c in overview.json()["capabilities"]}
    guestbook = listed["guestbook"]
    assert guestbook["source"] == "hello-twin"
    assert guestbook["version"] == "1.0.0"
    assert guestbook["permissions"] == [
        {"name": "sign", "obsolete": False, "description": "Read your guestbook and write in it"},
        {
            "name": "send",
            "obsolete": False,
            "description": "Write in your contacts' guestbooks, from your twin to theirs",
        },
    ]
    assert "guestbook" not in {f["id"] for f in overview.json()["failed"]}

    spec = (await client.get("/openapi.json")).json()
    assert {"get", "post"} <= set(spec["paths"]["/api/guestbook/entries"])

    entries = "/api/guestbook/entries"
    anonymous = await client.get(entries)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"

    profile_only = bearer(await make_token("profile:*"))
    for response in (
        await client.get(entries, headers=profile_only),
        await client.post(entries, headers=profile_only, json={"author": "x", "text": "y"}),
    ):
        assert response.status_code == 403
        assert "guestbook:sign" in response.json()["error"]["message"]

    signer = bearer(await make_token("guestbook:sign"))
    empty = await client.post(entries, headers=signer, json={"author": AUTHOR, "text": ""})
    assert empty.status_code == 422
    blank = await client.post(entries, headers=signer, json={"author": "   ", "text": "hi"})
    assert blank.status_code == 400 and "spaces" in blank.json()["error"]["message"]
    signed = await client.post(
        entries, headers=signer, json={"author": AUTHOR, "text": SECRET_TEXT}
    )
    assert signed.status_code == 201, signed.text
    assert signed.json()["text"] == SECRET_TEXT and signed.json()["author"] == AUTHOR
    read = await client.get(entries, headers=signer)
    assert read.status_code == 200
    assert [(e["author"], e["text"]) for e in read.json()] == [(AUTHOR, SECRET_TEXT)]


async def check_experience(client: httpx.AsyncClient, setup_secret: str, origin: str) -> None:
    """The owner signs in, allows the Guestbook experience, and its page works with its token."""
    cookie = await passkey_session(client, setup_secret, Authenticator(origin=origin))
    session = {"Cookie": f"{COOKIE}={cookie}"}

    ask = await client.get("/x/guestbook/", headers=session)
    assert ask.status_code == 200
    assert "Allow Guestbook?" in ask.text
    assert "Read your guestbook and write in it" in ask.text
    assert not TOKEN_META.search(ask.text)

    granted = await client.post("/x/guestbook/grant", headers={**session, "Origin": origin})
    assert granted.status_code == 303
    assert granted.headers["location"] == "/x/guestbook/"
    page = await client.get("/x/guestbook/", headers=session)
    assert page.status_code == 200
    assert "<h1>Guestbook</h1>" in page.text
    assert "/x/guestbook/static/guestbook.js" in page.text
    found = TOKEN_META.search(page.text)
    assert found, page.text
    script = await client.get("/x/guestbook/static/guestbook.js")
    assert script.status_code == 200 and "/guestbook/entries" in script.text

    page_token = bearer(found.group(1))
    mine = await client.get("/api/guestbook/entries", headers=page_token)
    assert mine.status_code == 200
    assert [e["text"] for e in mine.json()] == [SECRET_TEXT]
    assert (await client.get("/api/profile/", headers=page_token)).status_code == 403


def assert_encrypted_at_rest(data_dir: Path) -> None:
    """After the twin closed its database, the entry's words are nowhere in its files."""
    files = sorted(p for p in data_dir.glob("twin.db*") if p.is_file())
    stored = b"".join(p.read_bytes() for p in files)
    assert b"guestbook_entries" in stored  # the table is there, in the files read
    for secret in (SECRET_TEXT, AUTHOR, "third oak", "Quartermaine"):
        assert secret.encode() not in stored, f"{secret!r} is stored in clear"
        assert secret.encode("utf-16-le") not in stored


async def test_in_process_the_guestbook_is_mounted_guarded_and_encrypted(tmp_path: Path) -> None:
    data_dir = tmp_path / "twin"
    async with running_twin(data_dir) as tw:

        async def make_token(*scopes: str) -> str:
            return await tw.token(*scopes)

        await check_api(tw.client, make_token)
        await check_experience(
            tw.client, await tw.twin.sessions.create_link(), "http://localhost:8470"
        )
    assert_encrypted_at_rest(data_dir)


def cli(*args: str | Path) -> str:
    done = subprocess.run(
        twin_command(*map(str, args)),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
async def test_under_twin_serve_the_guestbook_is_mounted_guarded_and_encrypted(serve: Any) -> None:
    process = serve()
    port = process.url.rsplit(":", 1)[1]
    secret = re.findall(rf"http://localhost:{port}/setup/([A-Za-z0-9_-]+)", process.output())
    assert secret, process.output()
    admin = cli(
        "token", "create", "--scope", "*", "--name", "admin", "--data-dir", process.data_dir
    ).strip()

    async with httpx.AsyncClient(base_url=process.url, timeout=10) as client:

        async def make_token(*scopes: str) -> str:
            made = await client.post(
                "/api/twin/tokens",
                headers=bearer(admin),
                json={"name": "test", "scopes": list(scopes)},
            )
            assert made.status_code == 201, made.text
            return str(made.json()["token"])

        await check_api(client, make_token)
        await check_experience(client, secret[-1], f"http://localhost:{port}")

    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(15) in (0, -signal.SIGTERM)
    assert "Traceback" not in process.output()
    assert_encrypted_at_rest(process.data_dir)


@pytest.mark.slow
def test_twin_check_lists_the_guestbook(tmp_path: Path) -> None:
    output = cli("check", "--data-dir", tmp_path / "twin")
    assert re.search(r"^ok\s+capability guestbook 1\.0\.0 \(hello-twin, 4 routes\)$", output, re.M)
    assert re.search(r"^ok\s+experience guestbook \(uses guestbook:sign\)$", output, re.M)
