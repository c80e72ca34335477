"""Schemathesis against a real `twin serve`: every /api operation of /openapi.json, fuzzed with
an all-scopes token, answers without a 500, with a declared status, media type and schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import twin_command

pytestmark = pytest.mark.slow

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "allow_header_conformance",
)  # a 405's Allow lists every method of the path
# DELETE /api/twin/tokens/{token_id} gets a run of its own. Fuzzed among the others, Schemathesis
# takes ids it saw in GET /api/twin/tokens (in any phase, not only the stateful one) and revokes
# the very token it authenticates with; every later request then gets a declared 401 and the
# run passes while testing nothing. Alone, it sees no token id, so its ids can only miss
# (tok_ + 48 random bits): its 404 path.
REVOKE = "twin_revoke_token"
# The live streams never end by themselves, so each fuzzed call would wait out the request
# timeout; tests/test_storage.py drives storage's with a real client instead (catch-up, resume,
# withdrawal, stop, limits) and tests/test_storage_bad_input.py its refusals; tests/test_chat.py
# and tests/test_chat_bad_input.py drive chat's.
LIVE = ("storage_live", "chat_stream")


def _schemathesis(url: str, auth: str, scratch: Path, *selection: str) -> tuple[int, str]:
    config = scratch / "schemathesis.toml"  # an empty config, so no stray one is picked up
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--header",
        auth,
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        "25",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",  # no .hypothesis folder left behind
        "--no-color",
        *selection,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=scratch, env=env)
    return run.returncode, run.stdout + run.stderr


def test_schemathesis_finds_nothing(serve: Any, tmp_path: Path) -> None:
    process = serve()
    created = subprocess.run(
        twin_command(
            "token",
            "create",
            "--scope",
            "*",
            "--name",
            "schemathesis",
            "--data-dir",
            str(process.data_dir),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    auth = f"Authorization: Bearer {created.stdout.strip().splitlines()[-1]}"
    spec = httpx.get(f"{process.url}/openapi.json").json()
    operations = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert REVOKE in operations

    assert set(LIVE) <= set(operations)
    skipped = [arg for op in (REVOKE, *LIVE) for arg in ("--exclude-operation-id", op)]
    for selection, tested in (
        (tuple(skipped), len(operations) - 1 - len(LIVE)),
        (("--include-operation-id", REVOKE), 1),
    ):
        status, report = _schemathesis(process.url, auth, tmp_path, *selection)
        failure = f"{report[-8000:]}\n--- twin serve log ---\n{process.output()[-4000:]}"
        assert status == 0, failure
        assert f"Tested: {tested}" in report, failure

    # The runs kept their token throughout: they really reached the authorised paths.
    survived = httpx.get(f"{process.url}/api/twin/", headers=dict([auth.split(": ", 1)]))
    assert survived.status_code == 200
    assert "unexpected error" not in process.output()
