"""What the owner wrote stays encrypted at rest: markers sent through every write API (and the
root seed, the passphrase and every token secret) appear in no file under the data directory,
in no common encoding, while `twin serve` runs (the WAL not yet checkpointed) or after it stops."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Process, process_session, twin_command

from twin.identity import Identity, b64url, read_key_file
from twin.peers import address_hint, seal

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"
# Every operation of /openapi.json that takes a body; a new one fails the coverage check below
# until this test sends a marker through it too.
COVERED = {
    ("PUT", "/api/profile/"),
    ("PUT", "/api/profile/avatar"),
    ("POST", "/api/twin/tokens"),
    ("PUT", "/api/twin/grants/{experience}"),
    ("POST", "/api/twin/unlock"),
    ("POST", "/api/guestbook/entries"),
    ("PUT", "/api/storage/{namespace}/docs/{key}"),
    ("POST", "/api/storage/{namespace}/batch"),
    ("PUT", "/api/files/content/{path}"),
    ("POST", "/api/files/folders"),
    ("POST", "/api/files/move"),
    ("POST", "/api/files/copy"),
    ("POST", "/api/files/shares"),
    ("POST", "/api/contacts/invites"),
    ("POST", "/api/contacts/connect"),
    ("PATCH", "/api/contacts/{id}"),
    ("POST", "/api/contacts/{id}/vouches"),
    ("POST", "/api/guestbook/send"),
    ("POST", "/api/chat/conversations"),
    ("POST", "/api/chat/groups"),
    ("PATCH", "/api/chat/conversations/{id}"),
    ("POST", "/api/chat/conversations/{id}/members"),
    ("PATCH", "/api/chat/conversations/{id}/members/{did}"),
    ("POST", "/api/chat/conversations/{id}/messages"),
    ("PATCH", "/api/chat/conversations/{id}/messages/{mid}"),
    ("POST", "/api/chat/conversations/{id}/messages/{mid}/reactions"),
    ("POST", "/api/chat/conversations/{id}/read"),
    ("POST", "/api/chat/conversations/{id}/attachments"),
    ("POST", "/api/chat/blocked"),
}


def _marker() -> str:
    return f"MARKER-{uuid.uuid4().hex}"


def _guestbook_installed() -> bool:
    try:
        importlib.metadata.distribution("hello-twin")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def encodings(value: str | bytes) -> dict[str, bytes]:
    """``value`` as it could sit in a file: raw, UTF-16, hex and base64 at each alignment."""
    raw = value.encode() if isinstance(value, str) else value
    forms = {"raw": raw, "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode()}
    if isinstance(value, str):
        forms |= {"utf-16-le": value.encode("utf-16-le"), "utf-16-be": value.encode("utf-16-be")}
    for shift in range(3):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            # Drop the edge characters, which depend on the bytes around the value in the file.
            text = encode(b"\0" * shift + raw).rstrip(b"=")
            forms[f"{name}@{shift}"] = text[4 if shift else 0 : -4]
    return forms


def _files(data_dir: Path) -> Iterator[Path]:
    return (p for p in sorted(data_dir.rglob("*")) if p.is_file())


def find(
    data_dir: Path, secrets: Mapping[str, str | bytes], *, only: tuple[str, ...] = ()
) -> list[str]:
    """Each (secret, encoding, file) found; ``only`` keeps to file names with these prefixes."""
    hits = []
    for path in _files(data_dir):
        if only and not path.name.startswith(only):
            continue
        content = path.read_bytes()
        for label, value in secrets.items():
            hits += [
                f"{label} ({form}) in {path.relative_to(data_dir)}"
                for form, needle in encodings(value).items()
                if needle in content
            ]
    return hits


def _cli(*args: str) -> str:
    done = subprocess.run(twin_command(*args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _token(data_dir: Path, name: str, scope: str, *extra: str) -> str:
    return _cli(
        "token", "create", "--scope", scope, "--name", name, "--data-dir", str(data_dir), *extra
    ).splitlines()[-1]


def _sign_in(process: Process, device_name: str) -> str:
    """Spend a fresh setup link from `twin access link` on a passkey named ``device_name``;
    the session cookie's secret."""
    port = process.url.rsplit(":", 1)[1]
    printed = _cli("access", "link", "--data-dir", str(process.data_dir), "--port", port)
    links = re.findall(r"/setup/([A-Za-z0-9_-]+)", printed)
    assert links, printed
    return process_session(process, links[-1], device_name)


def contacts_everywhere(
    api: httpx.Client, process: Process, guestbook: bool
) -> tuple[dict[str, str | bytes], Identity]:
    """Markers through contacts (an invite's label; someone's invite, with a note; a contact's
    name and note; a vouch) and the peer outbox; the contact is a twin this test plays itself
    (its key comes back too), at an address that answers nothing."""
    label = _marker()
    assert api.post("/api/contacts/invites", json={"label": label}).status_code == 201
    stranger = Identity.generate()
    their_name, place = _marker(), _marker()
    invite = {
        "v": 1,
        "type": "contacts.invite",
        "did": stranger.did,
        "name": their_name,
        "token": _marker(),
        "address": address_hint(stranger, [f"http://127.0.0.1:9/{place}"]),
        "expires": int(time.time()) + 3600,
    }
    signed = {**invite, "sig": stranger.sign(invite)}
    code = "twin-invite:" + base64.urlsafe_b64encode(json.dumps(signed).encode()).decode()
    note = _marker()
    asked = api.post("/api/contacts/connect", json={"invite": code.rstrip("="), "note": note})
    assert asked.status_code == 201, asked.text
    # their twin accepts: an envelope this test makes with their key
    me = api.get("/api/health").json()["did"]
    accept = seal(stranger, me, "contacts.accept", {"name": their_name}, ttl=600)
    assert httpx.post(f"{process.url}/p2p/v1/inbox", json=accept).status_code == 202
    person = asked.json()["id"]
    renamed, about = _marker(), _marker()
    changed = api.patch(f"/api/contacts/{person}", json={"name": renamed, "note": about})
    assert changed.status_code == 200 and changed.json()["status"] == "connected"
    topic, comment = _marker().lower(), _marker()
    vouched = api.post(
        f"/api/contacts/{person}/vouches", json={"topic": topic, "level": 2, "comment": comment}
    )
    assert vouched.status_code == 201, vouched.text
    found = {
        "invite label": label,
        "contact's did": stranger.did,
        "contact's own name": their_name,
        "contact's address": place,
        "request note": note,
        "contact's name": renamed,
        "contact's note": about,
        "vouch topic": topic,
        "vouch comment": comment,
    }
    if guestbook:
        words = _marker()
        sent = api.post(
            "/api/guestbook/send", json={"to": stranger.did, "author": "me", "text": words}
        )
        assert sent.status_code == 202, sent.text
        found["guestbook note sent"] = words
    return found, stranger


def _inbox(process: Process, sender: Identity, me: str, type_: str, body: object) -> None:
    envelope = seal(sender, me, type_, body, ttl=600)
    answer = httpx.post(f"{process.url}/p2p/v1/inbox", json=envelope)
    assert answer.status_code == 202, answer.text


def chat_everywhere(
    api: httpx.Client, process: Process, friend: Identity
) -> dict[str, str | bytes]:
    """Markers through chat: messages posted, edited and received (with the name their sender
    gives), a reaction, an attachment's name and content (and one offered), a read mark, a
    search, groups made, renamed and received, a member added and made admin, a block;
    ``friend`` is the contact contacts_everywhere made, played by this test."""
    me = api.get("/api/health").json()["did"]
    made = api.post("/api/chat/conversations", json={"with": friend.did})
    assert made.status_code == 201, made.text
    base = f"/api/chat/conversations/{made.json()['id']}"
    said, edited, caption = _marker(), _marker(), _marker()
    posted = api.post(f"{base}/messages", json={"text": said})
    assert posted.status_code == 201, posted.text
    mine = posted.json()["id"]
    changed = api.patch(f"{base}/messages/{mine}", json={"text": edited})
    assert changed.status_code == 200 and changed.json()["text"] == edited, changed.text
    # a reaction is emoji, not a marker's letters: eight random ones are as unlikely by chance
    reaction = "".join(chr(0x1F400 + b) for b in os.urandom(8))
    reacted = api.post(f"{base}/messages/{mine}/reactions", json={"emoji": reaction})
    assert reacted.status_code == 200, reacted.text
    assert [r["emoji"] for r in reacted.json()["reactions"]] == [reaction]
    file_name, content = f"{_marker()}.txt", _marker().encode() * 3
    uploaded = api.post(f"{base}/attachments", params={"name": file_name}, content=content)
    assert uploaded.status_code == 201, uploaded.text
    attachment = uploaded.json()["id"]
    with_file = api.post(f"{base}/messages", json={"text": caption, "attachments": [attachment]})
    assert with_file.status_code == 201, with_file.text
    assert api.get(f"/api/chat/attachments/{attachment}?download=1").content == content
    # the friend writes back (with a file on offer, which its silent twin never hands over),
    # and the owner marks it read
    heard, their_name, offered = _marker(), _marker(), f"{_marker()}.pdf"
    offer = {"id": "offer1", "name": offered, "size": 10, "type": "application/pdf"}
    _inbox(
        process,
        friend,
        me,
        "chat.message",
        {
            "c": made.json()["id"],
            "id": "theirs1",
            "n": with_file.json()["n"] + 1,
            "sent": time.time(),
            "text": heard,
            "name": their_name,
            "att": [{**offer, "key": b64url(os.urandom(32))}],
        },
    )
    read = api.post(f"{base}/read", json={"upto": "theirs1"})
    assert read.status_code == 200 and read.json()["unread"] == 0, read.text
    last = api.get(f"{base}/messages").json()["messages"][-1]
    assert (last["text"], last["attachments"][0]["name"]) == (heard, offered)
    found = api.get("/api/chat/search", params={"q": edited}).json()["messages"]
    assert [m["id"] for m in found] == [mine]
    # a group of the owner's: made, the friend added and made admin, renamed and muted
    group_name, renamed, group_said = _marker(), _marker(), _marker()
    group = api.post("/api/chat/groups", json={"name": group_name, "members": []})
    assert group.status_code == 201, group.text
    where = f"/api/chat/conversations/{group.json()['id']}"
    added = api.post(f"{where}/members", json={"did": friend.did})
    assert added.status_code == 200, added.text
    promoted = api.patch(f"{where}/members/{friend.did}", json={"admin": True})
    assert promoted.status_code == 200 and all(m["admin"] for m in promoted.json()["members"])
    named = api.patch(where, json={"name": renamed, "muted": True})
    assert named.status_code == 200 and named.json()["name"] == renamed, named.text
    assert api.post(f"{where}/messages", json={"text": group_said}).status_code == 201
    # and one the friend makes with the owner in it, a signed creation this test makes
    theirs, their_group, named_there = "g" + os.urandom(12).hex(), _marker(), _marker()
    creation = {
        "type": "chat.member",
        "v": 1,
        "id": b64url(os.urandom(12)),
        "group": theirs,
        "n": 1,
        "by": friend.did,
        "action": "create",
        "name": their_group,
        "members": [me],
    }
    signed = {**creation, "sig": friend.sign(creation)}
    body = {"c": theirs, "events": [signed], "names": {friend.did: named_there}}
    _inbox(process, friend, me, "chat.group", body)
    assert api.get(f"/api/chat/conversations/{theirs}").json()["name"] == their_group
    # a twin blocked (and unblocked) by its did
    blocked = Identity.generate().did
    assert api.post("/api/chat/blocked", json={"did": blocked}).status_code == 204
    assert api.delete(f"/api/chat/blocked/{blocked}").status_code == 204
    return {
        "chat message": said,
        "chat message edited": edited,
        "chat reaction": reaction,
        "chat reaction (JSON-escaped)": json.dumps(reaction)[1:-1],
        "chat attachment name": file_name,
        "chat attachment content": content,
        "chat caption": caption,
        "chat message received": heard,
        "chat sender's own name": their_name,
        "chat attachment offered": offered,
        "chat group name": group_name,
        "chat group renamed": renamed,
        "chat group message": group_said,
        "chat group received": their_group,
        "chat group sender's name": named_there,
        "chat blocked did": blocked,
    }


def write_everywhere(process: Process, *cli_extra: str) -> dict[str, str | bytes]:
    """Send a marker through every write API, read each back, and return the markers together
    with every secret this made (token secrets, the session, an experience's token)."""
    data_dir = process.data_dir
    admin = _token(data_dir, "at-rest", "*", *cli_extra)
    secrets: dict[str, str | bytes] = {"token secret (CLI, *)": admin}
    api = httpx.Client(
        base_url=process.url, headers={"Authorization": f"Bearer {admin}"}, timeout=10
    )
    with api:
        spec = api.get("/openapi.json").json()
        with_body = {
            (method.upper(), path)
            for path, ops in spec["paths"].items()
            for method, op in ops.items()
            if "requestBody" in op
        }
        assert with_body <= COVERED, f"write APIs without a marker here: {with_body - COVERED}"

        name, bio = _marker(), _marker()
        text = {"display_name": name, "bio": f"Hello, I am {bio}.\nBye."}
        assert api.put("/api/profile/", json=text).status_code == 200
        picture = _marker()
        avatar = PNG + f"tEXt{picture}".encode() + bytes(range(256))
        assert (
            api.put(
                "/api/profile/avatar", content=avatar, headers={"Content-Type": "image/png"}
            ).status_code
            == 200
        )
        profile = api.get("/api/profile/").json()
        assert (profile["display_name"], profile["bio"]) == (text["display_name"], text["bio"])
        assert api.get("/api/profile/avatar").content == avatar
        secrets |= {
            "profile display name": name,
            "profile bio": bio,
            "avatar marker": picture,
            "avatar bytes": avatar,
        }

        api_name = _marker()
        created = api.post("/api/twin/tokens", json={"name": api_name, "scopes": ["profile:read"]})
        assert created.status_code == 201, created.text
        cli_name = _marker()
        cli_secret = _token(data_dir, cli_name, "profile:read", *cli_extra)
        names = {t["name"] for t in api.get("/api/twin/tokens").json()}
        assert {api_name, cli_name} <= names
        for secret in (created.json()["token"], cli_secret):
            assert (
                httpx.get(
                    f"{process.url}/api/profile/", headers={"Authorization": f"Bearer {secret}"}
                ).status_code
                == 200
            )
        secrets |= {
            "token name (API)": api_name,
            "token name (CLI)": cli_name,
            "token secret (API)": created.json()["token"],
            "token secret (CLI)": cli_secret,
        }

        if _guestbook_installed():
            author, words = _marker(), _marker()
            signed = api.post("/api/guestbook/entries", json={"author": author, "text": words})
            assert signed.status_code == 201, signed.text
            entries = api.get("/api/guestbook/entries").json()
            assert (entries[0]["author"], entries[0]["text"]) == (author, words)
            secrets |= {"guestbook author": author, "guestbook text": words}

        made, friend = contacts_everywhere(api, process, _guestbook_installed())
        secrets |= made
        secrets |= chat_everywhere(api, process, friend)

        # Storage: keys (the folder names in them too) and bodies, by PUT and by batch.
        folder, leaf, body = _marker(), _marker(), _marker()
        key = f"{folder}/{leaf}"
        put = api.put(f"/api/storage/notes/docs/{key}", json={"text": body})
        assert put.status_code == 201, put.text
        batch_key, batch_body = _marker(), _marker()
        batched = api.post(
            "/api/storage/notes/batch",
            json={"ops": [{"op": "put", "key": f"b/{batch_key}", "body": {"t": batch_body}}]},
        )
        assert batched.status_code == 200, batched.text
        listed = api.get("/api/storage/notes/docs", params={"prefix": f"{folder}/"}).json()
        assert [item["key"] for item in listed["items"]] == [key]
        assert api.get(f"/api/storage/notes/docs/b/{batch_key}").json() == {"t": batch_body}
        secrets |= {
            "storage folder": folder,
            "storage key": leaf,
            "storage body": body,
            "storage batch key": batch_key,
            "storage batch body": batch_body,
        }

        # Files: folder and file names (made, moved, copied), small and large contents, links.
        top, inner, small_name, big_name = _marker(), _marker(), _marker(), _marker()
        small, big = _marker().encode(), _marker().encode() * 50_000  # 2 MB: chunk files
        made = api.post("/api/files/folders", json={"path": f"{top}/{inner}", "parents": True})
        assert made.status_code == 201, made.text
        for name, content in ((small_name, small), (big_name, big)):
            sent = api.put(f"/api/files/content/{top}/{inner}/{name}", content=content)
            assert sent.status_code == 201, sent.text
        # the same contents again over WebDAV as rclone's owncloud mode sends them (X-OC-Mtime),
        # so the twin keeps their digests, which must be sealed too
        for name, content in ((small_name, small), (big_name, big)):
            synced = httpx.put(
                f"{process.url}/dav/{top}/{inner}/{name}",
                content=content,
                auth=("rclone", admin),
                headers={"X-OC-Mtime": "1700000000"},
            )
            assert synced.status_code == 204, synced.text
        kept = httpx.request(
            "PROPFIND",
            f"{process.url}/dav/{top}/{inner}/{small_name}",
            auth=("rclone", admin),
            headers={"Depth": "0", "Content-Type": "application/xml"},
            content=b'<D:propfind xmlns:D="DAV:" xmlns:oc="http://owncloud.org/ns"><D:prop>'
            b"<oc:checksums/></D:prop></D:propfind>",
        )
        assert hashlib.sha1(small).hexdigest() in kept.text  # kept, and given to the client
        moved_name, copied_name = _marker(), _marker()
        moved = api.post(
            "/api/files/move", json={"from": f"{top}/{inner}/{small_name}", "to": moved_name}
        )
        assert moved.status_code == 200, moved.text
        copied = api.post("/api/files/copy", json={"from": top, "to": copied_name})
        assert copied.status_code == 201, copied.text
        shared = api.post("/api/files/shares", json={"path": moved_name})
        assert shared.status_code == 201, shared.text
        link = shared.json()["url"].rsplit("/", 1)[1]
        assert httpx.get(f"{process.url}/s/{link}/download").content == small
        assert api.get(f"/api/files/content/{copied_name}/{inner}/{big_name}").content == big
        secrets |= {
            "folder name": top,
            "inner folder name": inner,
            "small file name": small_name,
            "big file name": big_name,
            "small file content": small,
            "big file content": big[:64],
            "moved name": moved_name,
            "copied name": copied_name,
            "share link secret": link,
            "small file's SHA-1": hashlib.sha1(small).hexdigest(),
            "big file's MD5": hashlib.md5(big).hexdigest(),
        }

        # Grants carry no free text: the marker goes into the path (and must not be kept, e.g. by
        # the access log), and the grant's derived page token must never be stored.
        stray = _marker()
        assert api.put(f"/api/twin/grants/{stray}", json={"scopes": []}).status_code == 404
        assert api.delete(f"/api/twin/tokens/{stray}").status_code == 404
        experience = {e["id"]: e for e in api.get("/api/twin/experiences").json()}["profile"]
        granted = api.put(
            f"/api/twin/grants/{experience['id']}", json={"scopes": experience["uses"]}
        )
        assert granted.status_code == 200 and granted.json()["granted"] == experience["uses"]
        device = _marker()
        session = _sign_in(process, device)
        page = httpx.get(f"{process.url}{experience['url']}", cookies={"twin_session": session})
        page_token = re.search(r'name="twin-token" content="([^"]+)"', page.text)
        assert page_token, page.text
        assert (
            httpx.get(
                f"{process.url}/api/profile/", headers={"Authorization": f"Bearer {page_token[1]}"}
            ).status_code
            == 200
        )
        secrets |= {
            "path marker": stray,
            "session secret": session,
            "device name": device,
            "experience token": page_token[1],
        }

        # The unlock door of an unlocked twin answers 200 whatever it is given; still not kept.
        wrong = _marker()
        assert api.post("/api/twin/unlock", json={"passphrase": wrong}).json() == {"locked": False}
        secrets["unlock passphrase"] = wrong
        assert api.get("/api/twin/access-log").status_code == 200  # flushes the access log
    return secrets


def stop(process: Process) -> None:
    """SIGTERM, as a service manager stops it; uvicorn shuts down, then re-raises the signal."""
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in process.output()


def _start(serve: Any, data_dir: Path, *extra: str) -> Process:
    # --log-level debug: whatever the twin logs at any level lands in the data dir and is scanned.
    process: Process = serve("--log-level", "debug", *extra, data_dir=data_dir)
    assert process.log.is_relative_to(process.data_dir), "the log must live in the data dir"
    return process


@pytest.mark.parametrize(
    "encode",
    [
        lambda m: m.encode(),
        lambda m: m.encode("utf-16-le"),
        lambda m: m.encode("utf-16-be"),
        lambda m: m.encode().hex().encode(),
        lambda m: m.encode().hex().upper().encode(),
        *(lambda m, pad=pad: base64.b64encode(b"x" * pad + m.encode() + b"y") for pad in range(3)),
        *(lambda m, pad=pad: base64.urlsafe_b64encode(b"x" * pad + m.encode()) for pad in range(3)),
    ],
    ids=[
        "raw",
        "utf-16-le",
        "utf-16-be",
        "hex",
        "HEX",
        *(f"base64@{i}" for i in range(3)),
        *(f"base64url@{i}" for i in range(3)),
    ],
)
def test_the_scan_sees_a_marker_in_each_encoding(tmp_path: Path, encode: Any) -> None:
    marker = _marker()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "blob").write_bytes(b"\x00head" + encode(marker) + b"tail\xff")
    assert find(tmp_path, {"m": marker}) != []
    assert find(tmp_path, {"other": _marker()}) == []


def test_nothing_written_through_the_api_is_readable_on_disk(serve: Any, tmp_path: Path) -> None:
    process = _start(serve, tmp_path)
    secrets = write_everywhere(process)
    # The unsealed key file holds the seed (mode 0600, by design); the database never does.
    identity = read_key_file(tmp_path / "identity.json").unlock(None)
    seed = {
        "seed": identity.seed,
        "seed (hex)": identity.seed.hex(),
        "recovery phrase": identity.phrase(),
    }

    running = {p.name for p in _files(tmp_path)}
    assert {"twin.db", "twin.db-wal", process.log.name} <= running
    assert find(tmp_path, secrets) == []
    assert find(tmp_path, seed, only=("twin.db",)) == []
    assert any("identity.json" in hit for hit in find(tmp_path, seed))  # where it is, it is seen
    stop(process)
    assert "twin.db-wal" not in {p.name for p in _files(tmp_path)}  # checkpointed on shutdown
    assert find(tmp_path, secrets) == []
    assert find(tmp_path, seed, only=("twin.db",)) == []


def test_sealed_twin_keeps_no_trace_of_its_seed(
    serve: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    passphrase = f"passphrase {uuid.uuid4().hex}"
    passphrase_file = tmp_path_factory.mktemp("outside-data-dir") / "passphrase"
    passphrase_file.write_text(passphrase + "\n")
    sealed = ("--passphrase-file", str(passphrase_file))
    _cli("init", "--data-dir", str(tmp_path), *sealed)
    identity = read_key_file(tmp_path / "identity.json").unlock(passphrase)

    process = _start(serve, tmp_path, *sealed)
    secrets = write_everywhere(process, *sealed)
    secrets |= {
        "seed": identity.seed,
        "seed (hex)": identity.seed.hex(),
        "recovery phrase": identity.phrase(),
        "passphrase": passphrase,
    }
    assert find(tmp_path, secrets) == []
    stop(process)
    assert find(tmp_path, secrets) == []
