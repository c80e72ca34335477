"""What `twin import` reads of the twin's own part (twin/): the peers, grants, passkeys and
envelopes still on their way come back; a damaged one, or an export that is not a twin's or
holds a capability not installed here, is refused saying what is wrong."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_peers_core import twin_with

from twin import BadInput, InvalidSignature
from twin.core import initialize
from twin.export import Entries
from twin.identity import Identity
from twin.settings import Settings
from twin.transfer import read_identity, restore_twin

pytestmark = pytest.mark.anyio


def export_of(identity: Identity, parts: dict[str, Any]) -> Entries:
    """An export of ``identity`` whose entries are ``parts`` (path: JSON value or bytes)."""
    rows: list[tuple[str, Iterator[bytes]]] = [
        ("twin/identity.json", iter([json.dumps({"did": identity.did}).encode()]))
    ]
    for path, value in parts.items():
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        rows.append(
            (
                path.replace("__", "/").replace("_json", ".json").replace("_jsonl", ".jsonl"),
                iter([raw]),
            )
        )
    return Entries(iter(rows))


async def restore(tmp_path: Path, entries: Entries) -> Any:
    async with twin_with(tmp_path / "t") as (twin, _client):
        core, _did, _seed = await read_identity(entries)
        return await restore_twin(twin, entries, core)


CASES = {
    "peers not a list": ({"twin/peers.json": {"did": "x"}}, "twin/peers.json is not a list"),
    "a peer with no state": (
        {"twin/peers.json": [{"did": "did:key:z6Mkx", "created": 1, "last_seen": None}]},
        "each peer needs a did and a state",
    ),
    "grants not an object": ({"twin/grants.json": [1]}, "twin/grants.json is not an object"),
    "passkeys not a list": (
        {"twin/passkeys.json": {"origin": "x", "passkeys": 3}},
        "holds no list of passkeys",
    ),
    "an envelope that is none": (
        {"twin/outbox.jsonl": b'{"to": "did:key:z6Mkx", "envelope": 5}\n'},
        "line 1 of twin/outbox.jsonl is not a waiting envelope",
    ),
    "an envelope for a stranger": (
        {
            "twin/outbox.jsonl": json.dumps(
                {
                    "to": Identity.generate().did,
                    "created": 1,
                    "envelope": {"id": "e", "type": "t", "expires": 9e9},
                }
            ).encode()
            + b"\n"
        },
        "for a twin it does not know",
    ),
    "a capability not installed here": (
        {"spreadsheets/sheets.json": {}},
        "'spreadsheets', which is not installed here",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_a_damaged_twin_part_is_refused_saying_what(tmp_path: Path, case: str) -> None:
    parts, message = CASES[case]
    identity = Identity.generate()
    with pytest.raises(BadInput) as raised:
        await restore(tmp_path, export_of(identity, parts))
    assert message in raised.value.message


async def test_an_export_that_is_not_a_twins_is_refused(tmp_path: Path) -> None:
    not_a_twin = Entries(iter([("photos/a.jpg", iter([b"..."]))]))
    with pytest.raises(BadInput, match="not a twin's"):
        await restore(tmp_path, not_a_twin)
    identity = Identity.generate()
    for seed in ("AAAA", base64.b64encode(Identity.generate().seed).decode()):
        stolen = export_of(identity, {"twin/key.json": {"seed": seed}})
        with pytest.raises(InvalidSignature, match="not the key of the twin it names"):
            await restore(tmp_path, stolen)


async def test_grants_and_passkeys_come_back_and_the_same_device_signs_in(
    tmp_path: Path,
) -> None:
    """At the same address the owner's device signs in to the moved twin as before, and each
    experience keeps what it was allowed; at another address the passkeys stay behind."""
    from authenticator import Authenticator
    from conftest import running_twin
    from test_restore_capabilities import archive_of

    from twin.archive import ArchiveReader

    device = Authenticator()
    async with running_twin(tmp_path / "old") as old:
        await old.sign_in(device)
        notes = old.twin.registry.experiences["notes"]
        await old.twin.grants.grant(notes, frozenset({"storage:read"}))
        grants = {k: (v.scopes, v.granted) for k, v in (await old.twin.grants.all()).items()}
        passkeys = [(p.id, p.name, p.created) for p in await old.twin.passkeys.all()]
        identity = old.twin.require_identity()
        archive = await archive_of(old.twin)

    async def into(data_dir: Path, **settings: Any) -> Any:
        initialize(Settings(data_dir=data_dir, rate_limit=0, **settings), identity=identity)
        return running_twin(data_dir, **settings)

    async with await into(tmp_path / "same") as moved:
        entries = Entries(ArchiveReader(io.BytesIO(archive), seed=identity.seed).entries())
        core, _did, _seed = await read_identity(entries)
        _counts, kept = await restore_twin(moved.twin, entries, core)
        assert kept == "kept"
        assert {
            k: (v.scopes, v.granted) for k, v in (await moved.twin.grants.all()).items()
        } == grants
        assert [(p.id, p.name, p.created) for p in await moved.twin.passkeys.all()] == passkeys
        signed_in = await moved.login(device)
        assert signed_in.status_code == 200, signed_in.text

    elsewhere = {"public_url": "https://twin.example.org"}
    async with await into(tmp_path / "elsewhere", **elsewhere) as moved:
        entries = Entries(ArchiveReader(io.BytesIO(archive), seed=identity.seed).entries())
        core, _did, _seed = await read_identity(entries)
        _counts, kept = await restore_twin(moved.twin, entries, core)
        assert kept == "left" and await moved.twin.passkeys.all() == []
