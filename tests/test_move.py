"""Moving a twin, as a person does it: a twin with something in every capability and a friend
is exported, imported into a new data directory served on another port, and everything the
owner sees compares equal; the friend, told the new address, goes on exchanging messages with
it. Then the ways an import can go wrong, each leaving the target as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chats import direct, messages, send
from conftest import free_port, start_twin, stop_twin, twin_command, wait_for
from test_cli import DID, words_of
from twins import Peer, arrives, befriend

from twin.archive import MAGIC

pytestmark = pytest.mark.slow

VOLATILE = {"last_seen", "last_delivered", "last_error", "online", "address", "addresses"}


def run(*args: str | Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    return subprocess.run(
        twin_command(*map(str, args)),
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def steady(value: Any) -> Any:
    """``value`` without what changes by itself (when a peer was last seen, its address)."""
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [steady(v) for v in value]
    return value


def everything(peer: Peer) -> dict[str, Any]:
    """What the owner sees in every capability, over the API."""
    seen: dict[str, Any] = {
        "profile": peer.get("/api/profile/"),
        # (each contact's outbox health aside: a moved twin queues its new address too)
        "contacts": [
            {k: v for k, v in c.items() if k != "delivery"}
            for c in peer.get("/api/contacts/")["contacts"]
        ],
        "invites": peer.get("/api/contacts/invites"),
        "vouches": peer.get("/api/contacts/vouches"),
        "guestbook": peer.get("/api/guestbook/entries"),
        "namespaces": peer.get("/api/storage/"),
        "notes": peer.get("/api/storage/notes/docs"),
        "changes": peer.get("/api/storage/notes/changes"),
    }
    folders = [""]
    while folders:
        folder = folders.pop()
        listing = peer.get(f"/api/files/tree/{folder}")
        seen[f"files:{folder}"] = listing
        for entry in listing["entries"]:
            if entry["kind"] == "folder":
                folders.append(entry["path"])
            else:
                content = peer.call("GET", f"/api/files/content/{entry['path']}")
                assert content.status_code == 200, content.text
                seen[f"bytes:{entry['path']}"] = hashlib.sha256(content.content).hexdigest()
    conversations = peer.get("/api/chat/conversations")
    seen["conversations"] = conversations["conversations"]  # (not "seq", the live stream's)
    for conv in conversations["conversations"]:
        seen[f"chat:{conv['id']}"] = messages(peer, conv["id"])
    return steady(seen)


def fill(ada: Peer, bob: Peer) -> str:
    """Something of Ada's in every capability; the id of her chat with Bob."""
    assert (
        ada.call(
            "PUT", "/api/profile", json={"display_name": "Ada", "bio": "Counting engines."}
        ).status_code
        < 300
    )
    for key, text in [("plans", "an engine"), ("tea", "earl grey"), ("gone", "soon deleted")]:
        put = ada.call("PUT", f"/api/storage/notes/docs/{key}", json={"text": text})
        assert put.status_code in (200, 201), put.text
    assert ada.call("DELETE", "/api/storage/notes/docs/gone").status_code < 300
    for path, content in [
        ("Photos/engine.bin", os.urandom(1536 * 1024)),
        ("Letters/to Bob.txt", "Dear Bob, é ü 🙂".encode()),
    ]:
        put = ada.call(
            "PUT", f"/api/files/content/{path}", content=content, params={"parents": "1"}
        )
        assert put.status_code in (200, 201), put.text
    invite = ada.call("POST", "/api/contacts/invites", json={"label": "for later"})
    assert invite.status_code == 201, invite.text
    bob_id = ada.contact(bob)["id"]  # type: ignore[index]
    vouch = ada.call(
        "POST", f"/api/contacts/{bob_id}/vouches", json={"topic": "engines", "level": 2}
    )
    assert vouch.status_code == 201, vouch.text
    chat = direct(ada, bob)["id"]
    send(ada, chat, "hello Bob")
    wait_for(lambda: len(messages(bob, chat)) == 1, 15, "Ada's message at Bob's")
    send(bob, chat, "hello Ada")
    wait_for(lambda: len(messages(ada, chat)) == 2, 15, "Bob's answer at Ada's")
    bob.note(ada, "signed, Bob")
    arrives(ada, "signed, Bob")
    wait_for(
        lambda: all(m["status"] in ("delivered", "read") for m in messages(ada, chat) if m["mine"]),
        15,
        "Ada's message to be delivered",
    )
    return chat


def test_a_moved_twin_holds_everything_and_its_friend_still_reaches_it(tmp_path: Path) -> None:
    first = start_twin(tmp_path, "--peer-backoff", "2")
    phrase = " ".join(words_of(first.output()))
    bob_process = start_twin(tmp_path, "--peer-backoff", "2")
    ada, bob = Peer(first, "Ada"), Peer(bob_process, "Bob")
    moved_process = moved = None
    try:
        befriend(ada, bob)
        chat = fill(ada, bob)
        # Bob is away: what Ada says now waits in her outbox, and moves with her
        stop_twin(bob_process)
        send(ada, chat, "while you were away")
        before = everything(ada)
        stop_twin(first)

        archive = tmp_path / "ada.twin"
        exported = run("export", "--data-dir", first.data_dir, "--out", archive)
        assert exported.returncode == 0, exported.stderr
        plain = tmp_path / "ada-open"
        opened = run("export", "--data-dir", first.data_dir, "--out", plain, "--open")
        assert opened.returncode == 0, opened.stderr
        layout_holds_everything(plain, before)

        port = free_port()
        new_home = tmp_path / "new-home"
        imported = run("import", archive, "--data-dir", new_home, "--port", str(port), stdin=phrase)
        assert imported.returncode == 0, imported.stderr
        assert f"Imported {ada.did}" in imported.stdout
        assert "tells its 1 peer its address" in imported.stdout
        assert f"http://localhost:{port}/setup/" in imported.stdout  # no passkey yet: a link

        moved_process = start_twin(tmp_path, "--peer-backoff", "2", data_dir=new_home, port=port)
        moved = Peer(moved_process, "Ada", named=False)
        assert moved.did == ada.did
        assert everything(moved) == before

        # Bob comes back, hears of the new address, gets what waited for him, once
        bob_process = start_twin(
            tmp_path,
            "--peer-backoff",
            "2",
            data_dir=bob_process.data_dir,
            port=int(bob_process.url.rsplit(":", 1)[1]),
        )
        bob.process = bob_process
        bob.connect()
        wait_for(
            lambda: "while you were away" in [m["text"] for m in messages(bob, chat)],
            30,
            "the message that waited in the moved outbox",
        )
        # and the two talk on as before
        send(moved, chat, "from my new home")
        wait_for(
            lambda: "from my new home" in [m["text"] for m in messages(bob, chat)],
            30,
            "the moved twin's message at Bob's",
        )
        send(bob, chat, "welcome back")
        wait_for(
            lambda: "welcome back" in [m["text"] for m in messages(moved, chat)],
            30,
            "Bob's answer at the moved twin",
        )
        bob.note(moved, "a note to the new home")
        arrives(moved, "a note to the new home")
        texts = [m["text"] for m in messages(bob, chat)]
        assert texts.count("while you were away") == 1, texts
        # and the other import of the same twin, from the plain folder, holds it all too
        again = tmp_path / "from-open"
        from_open = run("import", plain, "--data-dir", again, stdin=phrase)
        assert from_open.returncode == 0, from_open.stderr
        assert f"Imported {ada.did}" in from_open.stdout
    finally:
        for peer in (ada, bob, moved):
            if peer is not None:
                peer.client.close()
        for process in (first, bob_process, moved_process):
            if process is not None:
                stop_twin(process)


def layout_holds_everything(plain: Path, before: dict[str, Any]) -> None:
    """The open export holds every file at its real name and every document, as
    docs/export-format.md describes them."""
    manifest = json.loads((plain / "manifest.json").read_text())
    listed = {e[0] for e in manifest["entries"]}
    for path in ("Photos/engine.bin", "Letters/to Bob.txt"):
        on_disk = plain / "files" / "tree" / path
        assert on_disk.is_file(), sorted(listed)
        assert hashlib.sha256(on_disk.read_bytes()).hexdigest() == before[f"bytes:{path}"]
    assert not (plain / "twin" / "key.json").exists()  # never the key in the plain copy
    identity = json.loads((plain / "twin" / "identity.json").read_text())
    assert DID.fullmatch(identity["did"])
    profile = json.loads((plain / "profile" / "profile.json").read_text())
    assert profile["bio"] == "Counting engines."
    stored = (plain / "storage").rglob("*.jsonl")
    texts = "".join(p.read_text() for p in stored)
    assert "earl grey" in texts and "an engine" in texts
    chat = (plain / "chat" / "messages").glob("*.jsonl")
    lines = [json.loads(line) for p in chat for line in p.read_text().splitlines()]
    assert {"hello Bob", "hello Ada"} <= {m.get("text") for m in lines}
    guestbook = "".join(p.read_text() for p in (plain / "guestbook").iterdir())
    assert "signed, Bob" in guestbook
    contacts = "".join(p.read_text() for p in (plain / "contacts").iterdir() if p.is_file())
    assert "engines" in contacts  # the vouch


def export_of(root: Path, fill: Any) -> tuple[Path, str, Path]:
    """A new twin, filled by ``fill(peer)`` and exported: (archive, recovery phrase, the
    twin's data dir)."""
    process = start_twin(root)
    phrase = " ".join(words_of(process.output()))
    peer = Peer(process, "Ada")
    fill(peer)
    peer.client.close()
    stop_twin(process)
    archive = root / "ada.twin"
    done = run("export", "--data-dir", process.data_dir, "--out", archive)
    assert done.returncode == 0, done.stderr
    return archive, phrase, process.data_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A twin with a file in it, exported."""

    def a_file(peer: Peer) -> None:
        peer.call("PUT", "/api/files/content/a.bin", content=os.urandom(2_000_000))

    return export_of(tmp_path_factory.mktemp("exported"), a_file)


@pytest.fixture(scope="module")
def exported_documents(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A twin holding 3 MB of storage documents and no file, exported."""

    def documents(peer: Peer) -> None:
        for n in range(300):
            text = os.urandom(5_000).hex()  # 10 kB that do not compress
            put = peer.call("PUT", f"/api/storage/notes/docs/n{n}", json={"text": text})
            assert put.status_code in (200, 201), put.text

    return export_of(tmp_path_factory.mktemp("documents"), documents)


def target_with_a_twin(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A data directory holding another twin, and a fingerprint of every file in it."""
    target = tmp_path / "target"
    made = run("init", "--data-dir", target)
    assert made.returncode == 0, made.stderr
    return target, fingerprint(target)


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "serve.lock"
    }


def damaged(archive: Path, tmp_path: Path, how: str) -> Path:
    data = bytearray(archive.read_bytes())
    if how == "truncated":
        data = data[: len(data) * 2 // 3]
    elif how == "flipped":
        data[len(data) // 2] ^= 0x20
    elif how == "flipped-header":
        data[len(MAGIC) + 10] ^= 0x01
    elif how == "newer":
        header_length = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "big")
        start = len(MAGIC) + 4
        header = json.loads(data[start : start + header_length])
        header["version"] = 99
        raw = json.dumps(header).encode()
        data = (
            data[: len(MAGIC)] + len(raw).to_bytes(4, "big") + raw + data[start + header_length :]
        )
    path = tmp_path / f"{how}.twin"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("truncated", "cut off"),
        ("flipped", "damaged"),
        ("flipped-header", "not a twin archive"),
        ("newer", "newer"),
    ],
)
def test_a_damaged_archive_is_refused_and_the_twin_there_kept(
    exported: tuple[Path, str, Path], tmp_path: Path, how: str, said: str
) -> None:
    archive, phrase, _ = exported
    target, before = target_with_a_twin(tmp_path)
    result = run(
        "import", damaged(archive, tmp_path, how), "--data-dir", target, "--replace", stdin=phrase
    )
    assert result.returncode == 1, result.stdout
    assert said.lower() in result.stderr.lower(), result.stderr
    assert fingerprint(target) == before  # exactly as it was
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".target")] == []


def test_the_wrong_phrase_and_a_forged_manifest_are_refused(
    exported: tuple[Path, str, Path], tmp_path: Path
) -> None:
    archive, phrase, data_dir = exported
    target, before = target_with_a_twin(tmp_path)
    other = words_of(run("init", "--data-dir", tmp_path / "other").stdout)
    wrong = run("import", archive, "--data-dir", target, "--replace", stdin=" ".join(other))
    assert wrong.returncode == 1 and "recovery phrase" in wrong.stderr, wrong.stderr
    assert fingerprint(target) == before

    # an open export whose manifest was edited after it was signed
    plain = tmp_path / "open"
    assert run("export", "--data-dir", data_dir, "--out", plain, "--open").returncode == 0
    manifest = json.loads((plain / "manifest.json").read_text())
    manifest["created"] += 1
    (plain / "manifest.json").write_text(json.dumps(manifest))
    forged = run("import", plain, "--data-dir", target, "--replace", stdin=phrase)
    assert forged.returncode == 1 and "signed" in forged.stderr, forged.stderr
    assert fingerprint(target) == before


def test_a_twin_with_data_is_replaced_only_when_asked(
    exported: tuple[Path, str, Path], tmp_path: Path
) -> None:
    archive, phrase, _ = exported
    target, before = target_with_a_twin(tmp_path)
    refused = run("import", archive, "--data-dir", target, stdin=phrase)
    assert refused.returncode == 1 and "--replace" in refused.stderr
    assert fingerprint(target) == before
    replaced = run("import", archive, "--data-dir", target, "--replace", stdin=phrase)
    assert replaced.returncode == 0, replaced.stderr
    assert fingerprint(target) != before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".target")] == []


@pytest.mark.parametrize("holding", ["exported", "exported_documents"])
def test_a_disk_that_fills_up_during_import_leaves_the_twin_as_it_was(
    holding: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The import stages beside the target on a small disk of its own (a tmpfs in a mount
    namespace) that the export does not fit: its files are refused before they are written
    (the files capability measures the room), its documents when the database finds the
    disk full."""
    archive, phrase, _ = request.getfixturevalue(holding)
    disk = tmp_path / "disk"
    disk.mkdir()
    sums = f"find {disk / 'target'} -type f ! -name serve.lock -exec sha256sum {{}} + | sort"
    script = (
        f"mount -t tmpfs -o size=1200k tmpfs {disk} && "
        f"{' '.join(twin_command('init', '--data-dir', str(disk / 'target')))} >/dev/null && "
        f"{sums} > {tmp_path / 'before'} && "
        f"{' '.join(twin_command('import', str(archive), '--data-dir', str(disk / 'target')))} "
        f"--replace < {tmp_path / 'phrase'} > {tmp_path / 'out'} 2>&1; "
        f"echo $? > {tmp_path / 'rc'}; "
        f"{sums} > {tmp_path / 'after'}; "
        f"ls -a {disk} > {tmp_path / 'left'}"
    )
    (tmp_path / "phrase").write_text(phrase)
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    if "Operation not permitted" in done.stderr or not (tmp_path / "rc").exists():
        pytest.fail(f"cannot make a small disk here: {done.stderr}")
    output = (tmp_path / "out").read_text()
    assert (tmp_path / "rc").read_text().strip() == "1", output
    assert "is as it was" in output and "disk" in output, output
    assert (tmp_path / "after").read_text() == (tmp_path / "before").read_text()
    assert sorted((tmp_path / "left").read_text().split()) == [".", "..", "target"]


def test_an_import_into_a_mount_point_keeps_the_mount(
    exported: tuple[Path, str, Path], tmp_path: Path
) -> None:
    """A container's data volume is a mount point: the import cannot rename a new directory
    over it, so it fills it in place, over a twin already there with --replace."""
    archive, phrase, _ = exported
    volume = tmp_path / "volume"
    volume.mkdir()
    (tmp_path / "phrase").write_text(phrase)
    twin = " ".join(twin_command())
    script = (
        f"mount -t tmpfs -o size=400m tmpfs {volume} && "
        f"{twin} init --data-dir {volume} >/dev/null && "
        f"{twin} import {archive} --data-dir {volume} --replace < {tmp_path / 'phrase'} "
        f"> {tmp_path / 'out'} 2>&1; echo $? > {tmp_path / 'rc'}; "
        f"ls -a {volume} > {tmp_path / 'left'}; "
        f"cp {volume}/identity.json {tmp_path / 'identity.json'}; "
        f"{twin} export --open --data-dir {volume} --out {tmp_path / 'open'} > /dev/null"
    )
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    if not (tmp_path / "rc").exists():
        pytest.fail(f"cannot mount a volume here: {done.stderr}")
    output = (tmp_path / "out").read_text()
    assert (tmp_path / "rc").read_text().strip() == "0", output
    left = sorted((tmp_path / "left").read_text().split())
    assert [n for n in left if n.startswith(".") and n not in (".", "..")] == [], left
    assert {"identity.json", "twin.db"} <= set(left)
    identity = json.loads((tmp_path / "identity.json").read_text())
    assert f"Imported {identity['did']}" in output  # the exported twin, not the one there before
    assert (tmp_path / "open" / "files" / "tree" / "a.bin").stat().st_size == 2_000_000


def test_an_import_through_a_linked_data_dir_and_from_inside_it(
    exported: tuple[Path, str, Path], tmp_path: Path
) -> None:
    """A data directory that is a symbolic link is replaced where it points, and the link
    stays; an export inside the directory it would replace is refused, not lost with it."""
    archive, phrase, _ = exported
    real = tmp_path / "big-disk" / "twin"
    real.mkdir(parents=True, mode=0o700)
    link = tmp_path / "twin-link"
    link.symlink_to(real, target_is_directory=True)
    assert run("init", "--data-dir", link).returncode == 0
    done = run("import", archive, "--data-dir", link, "--replace", stdin=phrase)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and (real / "identity.json").is_file()
    assert "left in" not in done.stdout  # the replaced twin went, all of it
    assert [p.name for p in real.parent.iterdir()] == ["twin"]

    # what an import killed midway left beside it goes with the next one
    killed = real.parent / ".twin.importing-999999999"
    (killed / "files").mkdir(parents=True)
    again = run("import", archive, "--data-dir", link, "--replace", stdin=phrase)
    assert again.returncode == 0, again.stderr
    assert not killed.exists()

    inside = real / "keep" / "ada.twin"
    inside.parent.mkdir()
    shutil.copy(archive, inside)
    refused = run("import", inside, "--data-dir", link, "--replace", stdin=phrase)
    assert refused.returncode == 1 and "move it out first" in refused.stderr
    assert inside.is_file()
