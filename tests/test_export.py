"""`twin export` as a person runs it: an encrypted archive that opens with the recovery phrase
(or a passphrase given then), a plain copy for other software that says it is not encrypted,
and refusals that leave nothing behind."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
from test_cli import Cli, Initialised, cli, plain, xdg_data_home  # noqa: F401 (fixtures)

from twin.archive import ArchiveReader
from twin.errors import WrongPassphrase
from twin.identity import Identity, verify


def entries_of(path: Path, **key: object) -> tuple[dict[str, bytes], dict[str, object]]:
    with path.open("rb") as source:
        reader = ArchiveReader(source, **key)  # type: ignore[arg-type]
        found = {name: b"".join(chunks) for name, chunks in reader.entries()}
    assert reader.manifest is not None
    return found, reader.manifest


def test_an_archive_opens_with_the_recovery_phrase(
    cli: Cli,  # noqa: F811
    plain: Initialised,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "twin.archive"
    result = cli("export", "--data-dir", plain.data_dir, "--out", out)
    assert result.returncode == 0, result.output
    assert "opens with this twin's recovery phrase" in result.stdout
    assert "twin" in result.stdout and "entries" in result.stdout  # a line a part, as it goes
    seed = Identity.from_phrase(" ".join(plain.words)).seed
    found, manifest = entries_of(out, seed=seed)
    assert manifest["did"] == plain.did
    assert json.loads(found["twin/identity.json"])["did"] == plain.did
    assert "twin/key.json" in found  # what a passphrase archive is imported with
    assert {"profile", "storage", "files", "contacts", "chat"} <= set(manifest["capabilities"])  # type: ignore[arg-type]
    assert os.stat(out).st_mode & 0o077 == 0  # the owner's alone, though encrypted
    with pytest.raises(WrongPassphrase):
        entries_of(out, seed=Identity.generate().seed)


def test_an_archive_with_its_own_passphrase(
    cli: Cli,  # noqa: F811
    plain: Initialised,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "pass.archive"
    result = cli(
        "export",
        "--data-dir",
        plain.data_dir,
        "--out",
        out,
        "--passphrase",
        stdin="s3cret\ns3cret\n",
    )
    assert result.returncode == 0, result.output
    assert "opens with the passphrase you gave" in result.stdout
    found, manifest = entries_of(out, passphrase="s3cret")
    assert manifest["did"] == plain.did and "twin/key.json" in found
    with pytest.raises(WrongPassphrase):
        entries_of(out, passphrase="secret")


def test_the_open_export_is_plain_files_and_says_so(
    cli: Cli,  # noqa: F811
    plain: Initialised,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "open"
    result = cli("export", "--data-dir", plain.data_dir, "--out", out, "--open")
    assert result.returncode == 0, result.output
    assert "NOT encrypted" in result.stdout
    assert json.loads((out / "twin" / "identity.json").read_text())["did"] == plain.did
    assert not (out / "twin" / "key.json").exists()  # the root seed never goes in the clear
    manifest = json.loads((out / "manifest.json").read_text())
    verify(plain.did, {k: v for k, v in manifest.items() if k != "sig"}, manifest["sig"])
    listed = {path for path, _, _ in manifest["entries"]}
    on_disk = {
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"
    }
    assert listed == on_disk


def test_what_export_refuses_leaves_nothing_behind(
    cli: Cli,  # noqa: F811
    plain: Initialised,  # noqa: F811
    tmp_path: Path,
) -> None:
    taken = tmp_path / "taken.archive"
    taken.write_bytes(b"mine")
    result = cli("export", "--data-dir", plain.data_dir, "--out", taken)
    assert result.returncode != 0 and "exists already" in result.output
    assert taken.read_bytes() == b"mine"
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    result = cli("export", "--data-dir", plain.data_dir, "--out", full, "--open")
    assert result.returncode != 0 and "not an empty folder" in result.output
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    # a twin being served changes as it is read: stop it first
    with open(plain.data_dir / "serve.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = tmp_path / "busy.archive"
        result = cli("export", "--data-dir", plain.data_dir, "--out", busy)
    assert result.returncode != 0 and "stop" in result.output and not busy.exists()
    missing = cli("export", "--data-dir", tmp_path / "nobody", "--out", tmp_path / "x.archive")
    assert missing.returncode != 0 and "no twin" in missing.output
