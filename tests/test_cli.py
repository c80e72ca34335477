"""The `twin` command as a user runs it: `python -m twin ...` in a subprocess, one data dir each."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port, twin_command
from mnemonic import Mnemonic

DID = re.compile(r"did:key:z6Mk[1-9A-HJ-NP-Za-km-z]+")
NUMBERED_WORD = re.compile(r"(\d+)\.\s+([a-z]+)")
SETUP_LINK = re.compile(r"http://[^\s/]+/setup/[A-Za-z0-9_-]{20,}")
TOKEN = re.compile(r"^twin_[A-Za-z0-9_-]{43}$")
pytestmark = pytest.mark.slow  # every test runs the command in a process of its own


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def xdg_data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg")


@pytest.fixture(scope="module")
def cli(xdg_data_home: Path) -> Cli:
    """Runs `python -m twin`, never at a terminal, with no TWIN_* variables from the caller's
    shell and XDG_DATA_HOME in a temporary folder, so the default data dir is never the user's."""
    xdg = xdg_data_home
    base = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    base["XDG_DATA_HOME"] = str(xdg)

    def run(*args: str | Path, env: dict[str, str] | None = None, stdin: str = "") -> Result:
        done = subprocess.run(
            twin_command(*map(str, args)),
            input=stdin,
            capture_output=True,
            text=True,
            env={**base, **(env or {})},
            timeout=60,
        )
        result = Result(done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in result.output, result.output
        return result

    return run


def words_of(output: str) -> list[str]:
    """The recovery phrase as `init` prints it: 24 numbered words, in order."""
    numbered = NUMBERED_WORD.findall(output)
    assert [int(n) for n, _ in numbered] == list(range(1, 25)), output
    return [word for _, word in numbered]


@dataclass
class Initialised:
    data_dir: Path
    output: str
    did: str
    words: list[str]


@pytest.fixture(scope="module")
def plain(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Initialised:
    """One `twin init` without a passphrase, shared by the tests that only read it."""
    data_dir = tmp_path_factory.mktemp("plain") / "twin"
    result = cli("init", "--data-dir", data_dir)
    assert result.returncode == 0, result.output
    dids = DID.findall(result.stdout)
    assert dids, result.stdout
    return Initialised(data_dir, result.stdout, dids[0], words_of(result.stdout))


@pytest.fixture(scope="module")
def passphrase_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "passphrase"
    path.write_text("correct horse battery\n")
    return path


@pytest.fixture(scope="module")
def sealed(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory, passphrase_file: Path
) -> Initialised:
    data_dir = tmp_path_factory.mktemp("sealed") / "twin"
    result = cli("init", "--data-dir", data_dir, "--passphrase-file", passphrase_file)
    assert result.returncode == 0, result.output
    return Initialised(
        data_dir, result.stdout, DID.findall(result.stdout)[0], words_of(result.stdout)
    )


# init


def test_init_prints_the_did_the_phrase_and_that_the_key_is_unencrypted(plain: Initialised) -> None:
    assert len(plain.words) == 24
    wordlist = set(Mnemonic("english").wordlist)
    assert all(word in wordlist for word in plain.words)
    assert "unencrypted" in plain.output
    assert SETUP_LINK.search(plain.output), plain.output


def test_init_keeps_the_key_file_0600_in_a_0700_data_dir(plain: Initialised) -> None:
    key = plain.data_dir / "identity.json"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(plain.data_dir.stat().st_mode) == 0o700
    assert json.loads(key.read_text())["did"] == plain.did


def test_init_again_refuses_and_leaves_the_key_alone(cli: Cli, plain: Initialised) -> None:
    key = plain.data_dir / "identity.json"
    before = key.read_bytes()
    result = cli("init", "--data-dir", plain.data_dir)
    assert result.returncode != 0
    assert "already holds a twin" in result.output
    assert key.read_bytes() == before


def test_init_recover_restores_the_same_did_elsewhere(
    cli: Cli, plain: Initialised, tmp_path: Path
) -> None:
    other = tmp_path / "restored"
    result = cli("init", "--recover", "--data-dir", other, stdin=" ".join(plain.words) + "\n")
    assert result.returncode == 0, result.output
    assert plain.did in result.stdout
    assert json.loads((other / "identity.json").read_text())["did"] == plain.did
    # The phrase is not printed back: it was typed by the user, who already has it.
    assert " ".join(plain.words[:3]) not in result.output


def _bad_checksum(words: list[str]) -> list[str]:
    # The last word's low 8 bits are the checksum: flipping one of them can never still match.
    wordlist = Mnemonic("english").wordlist
    return words[:-1] + [wordlist[wordlist.index(words[-1]) ^ 1]]


@pytest.mark.parametrize(
    "spoil, message",
    [
        (_bad_checksum, "checksum does not match"),
        (lambda w: w[:4] + ["qwertyx"] + w[5:], "word 5 is not in the BIP-39 English list"),
        (lambda w: w[:23], "has 23 words; it must have 24"),
    ],
    ids=["bad-checksum", "unknown-word", "too-short"],
)
def test_init_recover_refuses_a_wrong_phrase_and_leaves_no_key(
    cli: Cli,
    plain: Initialised,
    tmp_path: Path,
    spoil: Callable[[list[str]], list[str]],
    message: str,
) -> None:
    other = tmp_path / "restored"
    result = cli("init", "--recover", "--data-dir", other, stdin=" ".join(spoil(plain.words)))
    assert result.returncode != 0
    assert message in result.output
    assert not (other / "identity.json").exists()
    assert "qwertyx" not in result.output  # a mistyped secret word is nearly the word


# sealed keys


def test_init_with_a_passphrase_seals_the_key(sealed: Initialised) -> None:
    document = json.loads((sealed.data_dir / "identity.json").read_text())
    assert document["sealed"] is True
    assert "seed" not in document
    assert document["did"] == sealed.did
    assert "unencrypted" not in sealed.output
    assert "sealed with your passphrase" in sealed.output


def test_a_sealed_twin_needs_its_passphrase_for_a_token(
    cli: Cli, sealed: Initialised, passphrase_file: Path
) -> None:
    refused = cli("token", "create", "--scope", "profile:read", "--data-dir", sealed.data_dir)
    assert refused.returncode != 0
    assert "sealed" in refused.output and "--passphrase-file" in refused.output
    made = cli(
        "token",
        "create",
        "--scope",
        "profile:read",
        "--data-dir",
        sealed.data_dir,
        "--passphrase-file",
        passphrase_file,
    )
    assert made.returncode == 0, made.output
    assert TOKEN.match(made.stdout.strip())


def test_a_wrong_passphrase_is_named_as_such(cli: Cli, sealed: Initialised, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    result = cli("token", "list", "--data-dir", sealed.data_dir, "--passphrase-file", wrong)
    assert result.returncode != 0
    assert "wrong passphrase" in result.output


def test_init_refuses_a_passphrase_under_8_characters(cli: Cli, tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("1234567\n")
    result = cli("init", "--data-dir", tmp_path / "twin", "--passphrase-file", short)
    assert result.returncode != 0
    assert "at least 8 characters" in result.output
    assert not (tmp_path / "twin" / "identity.json").exists()


# tokens


def test_token_create_list_and_revoke(cli: Cli, plain: Initialised) -> None:
    made = cli(
        "token", "create", "--scope", "profile:read", "--name", "x", "--data-dir", plain.data_dir
    )
    assert made.returncode == 0, made.output
    assert TOKEN.match(made.stdout.strip()), made.stdout
    listed = cli("token", "list", "--data-dir", plain.data_dir)
    rows = [line.split() for line in listed.stdout.splitlines() if line.startswith("tok_")]
    mine = [row for row in rows if row[2] == "x"]
    assert len(mine) == 1, listed.stdout
    token_id, kind, name, scope = mine[0][:4]
    assert (kind, name, scope) == ("token", "x", "profile:read")
    assert made.stdout.strip() not in listed.output  # only the hash is kept
    revoked = cli("token", "revoke", "x", "--data-dir", plain.data_dir)
    assert revoked.returncode == 0, revoked.output
    assert token_id in revoked.stdout
    after = cli("token", "list", "--data-dir", plain.data_dir)
    assert token_id not in after.stdout


@pytest.mark.parametrize(
    "scope, message",
    [
        ("nope:read", "no capability 'nope' is installed"),
        ("profile:fly", "profile has no permission 'fly' (it has: read, write)"),
        ("Profile", "scope 'Profile' must look like"),
    ],
)
def test_token_create_names_what_is_wrong_with_a_scope(
    cli: Cli, plain: Initialised, scope: str, message: str
) -> None:
    result = cli("token", "create", "--scope", scope, "--data-dir", plain.data_dir)
    assert result.returncode != 0
    assert message in result.output
    assert "twin_" not in result.stdout


def test_token_create_refuses_a_blank_name(cli: Cli, plain: Initialised) -> None:
    result = cli(
        "token", "create", "--scope", "profile:read", "--name", " ", "--data-dir", plain.data_dir
    )
    assert result.returncode != 0
    assert "a token name is 1 to 64 printable characters" in result.output


def test_token_revoke_of_an_unknown_token_says_so(cli: Cli, plain: Initialised) -> None:
    result = cli("token", "revoke", "never-made", "--data-dir", plain.data_dir)
    assert result.returncode != 0
    assert "no token with id or name 'never-made'" in result.output


# settings: flag > TWIN_* env > default


def test_the_data_dir_comes_from_the_flag_then_twin_home_then_the_default(
    cli: Cli, plain: Initialised, sealed: Initialised, xdg_data_home: Path
) -> None:
    port = {"TWIN_PORT": str(free_port())}  # nothing answers there: "not running"
    from_env = cli("status", env={**port, "TWIN_HOME": str(plain.data_dir)})
    assert from_env.returncode == 0, from_env.output
    assert plain.did in from_env.stdout
    from_flag = cli(
        "status", "--data-dir", sealed.data_dir, env={**port, "TWIN_HOME": str(plain.data_dir)}
    )
    assert sealed.did in from_flag.stdout and plain.did not in from_flag.stdout
    default = cli("status", env=port)
    assert default.returncode != 0
    assert f"no twin in {xdg_data_home / 'twin'}" in default.output


def test_the_port_comes_from_the_flag_then_twin_port_then_the_default(
    cli: Cli, plain: Initialised
) -> None:
    def link_port(*flags: str, env: dict[str, str] | None = None) -> str:
        result = cli("access", "link", "--data-dir", plain.data_dir, *flags, env=env)
        assert result.returncode == 0, result.output
        found = re.search(r"http://localhost:(\d+)/setup/", result.stdout)
        assert found, result.stdout
        return found.group(1)

    assert link_port() == "8470"
    assert link_port(env={"TWIN_PORT": "9123"}) == "9123"
    assert link_port("--port", "9124", env={"TWIN_PORT": "9123"}) == "9124"


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("TWIN_PORT", "abc", ["TWIN_PORT", "port must be a number", "'abc'"]),
        ("TWIN_LOG_LEVEL", "loud", ["TWIN_LOG_LEVEL", "debug, info, warning or error"]),
        ("TWIN_RATE_LIMIT", "fast", ["TWIN_RATE_LIMIT", "'fast'"]),
        ("TWIN_RATE_LIMIT", "inf", ["TWIN_RATE_LIMIT", "'inf'"]),
    ],
)
def test_a_bad_environment_value_is_a_clear_error(
    cli: Cli, plain: Initialised, name: str, value: str, words: list[str]
) -> None:
    result = cli("status", "--data-dir", plain.data_dir, env={name: value})
    assert result.returncode != 0
    for word in words:
        assert word in result.output


# check, status, access link


def test_check_on_a_fresh_machine_is_all_ok(cli: Cli, tmp_path: Path) -> None:
    result = cli("check", "--data-dir", tmp_path / "never-created")
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    assert any(re.match(r"ok\s+capability profile \d", line) for line in lines), result.stdout
    assert any(re.match(r"ok\s+capability twin \d", line) for line in lines), result.stdout
    assert any(re.match(r"ok\s+experience profile ", line) for line in lines), result.stdout
    assert "FAILED" not in result.stdout
    assert not (tmp_path / "never-created").exists()  # checking creates no twin


def test_check_reads_an_existing_twin_without_changing_it(cli: Cli, plain: Initialised) -> None:
    def snapshot() -> dict[str, bytes]:
        # SQLite's shared-memory index (-shm) and an empty -wal appear whenever anything reads
        # a WAL database; what matters is that no page and no key changed.
        return {
            p.name: p.read_bytes()
            for p in sorted(plain.data_dir.iterdir())
            if p.is_file()
            and not p.name.endswith("-shm")
            and not (p.name.endswith("-wal") and p.stat().st_size == 0)
        }

    before = snapshot()
    result = cli("check", "--data-dir", plain.data_dir)
    assert result.returncode == 0, result.output
    assert "ok      capability profile" in result.stdout
    assert snapshot() == before, "twin check wrote to the twin it was checking"


def test_status_shows_the_did_and_that_it_is_not_running(cli: Cli, plain: Initialised) -> None:
    result = cli("status", "--data-dir", plain.data_dir, env={"TWIN_PORT": str(free_port())})
    assert result.returncode == 0, result.output
    assert plain.did in result.stdout
    assert "not running" in result.stdout
    assert "unencrypted" in result.stdout


def test_access_link_prints_a_fresh_one_time_link(cli: Cli, plain: Initialised) -> None:
    first = cli("access", "link", "--data-dir", plain.data_dir)
    second = cli("access", "link", "--data-dir", plain.data_dir)
    links = [SETUP_LINK.search(r.stdout) for r in (first, second)]
    assert all(links), first.output + second.output
    assert links[0].group(0) != links[1].group(0)  # type: ignore[union-attr]


# bad input never shows a traceback


def _file(tmp: Path) -> Path:
    path = tmp / "a-file"
    path.write_text("not a folder")
    return path


def _corrupt(tmp: Path) -> Path:
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "identity.json").write_text("{truncated")
    return tmp / "corrupt"


def _missing(tmp: Path) -> Path:
    return tmp / "missing"


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(("init", "--data-dir", _file), "cannot use", id="init-dir-is-a-file"),
        pytest.param(
            ("serve", "--data-dir", _file, "--port", "0"), "cannot use", id="serve-dir-is-a-file"
        ),
        pytest.param(("status", "--data-dir", _corrupt), "not valid JSON", id="status-corrupt-key"),
        pytest.param(
            ("token", "list", "--data-dir", _corrupt), "not valid JSON", id="token-list-corrupt-key"
        ),
        pytest.param(("check", "--data-dir", _corrupt), "not valid JSON", id="check-corrupt-key"),
        pytest.param(
            ("serve", "--data-dir", _corrupt, "--port", "0"),
            "not valid JSON",
            id="serve-corrupt-key",
        ),
        pytest.param(("status", "--data-dir", _missing), "no twin in", id="status-no-twin"),
        pytest.param(
            ("token", "list", "--data-dir", _missing), "no twin in", id="token-list-no-twin"
        ),
        pytest.param(
            ("serve", "--port", "99999", "--data-dir", _missing),
            "between 0 and 65535",
            id="serve-port-out-of-range",
        ),
        pytest.param(
            ("token", "create", "--scope", "profile:read", "--name", " ", "--data-dir", _missing),
            "no twin in",
            id="token-create-no-twin",
        ),
        pytest.param(
            ("init", "--data-dir", _missing, "--passphrase-file", _missing),
            "cannot read passphrase file",
            id="init-passphrase-file-missing",
        ),
        pytest.param(
            ("serve", "--max-body", "inf", "--data-dir", _missing),
            "size must look like",
            id="serve-max-body-infinite",
        ),
    ],
)
def test_bad_input_gets_a_message_not_a_traceback(
    cli: Cli, tmp_path: Path, args: tuple[object, ...], message: str
) -> None:
    resolved = [a(tmp_path) if callable(a) else a for a in args]
    result = cli(*resolved)  # the runner asserts there is no traceback
    assert result.returncode != 0
    assert message in result.output
    assert "Error" in result.stderr
