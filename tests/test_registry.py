"""Plugin discovery and validation through real entry points: fake installed distributions in a
temporary folder on PYTHONPATH, seen by `twin check` and `twin serve` as any pip install would be.
Then `parse_manifest` and `dependency_order` on their own."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, twin_command
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.errors import PluginError
from twin.manifest import ID_PATTERN, Manifest, dependency_order, parse_manifest

MARKER = "imported.marker"

PLUGIN_CODE = '''\
"""A fake capability; it leaves a marker when imported, so a test can tell it ran."""
from pathlib import Path

from twin import Capability, api

Path(__file__).with_name("{marker}").write_text("imported")


class Plugin(Capability):
    def routes(self):
        return [api.get("/ping", self.ping, permission="use", summary="Answer pong")]

    async def ping(self, call):
        return {{"pong": self.id}}

    async def startup(self):
        {startup}
'''


def manifest_text(
    cap_id: str,
    *,
    requires: tuple[str, ...] = (),
    extra: str = "",
    permissions: str = '[permissions.use]\ndescription = "Use it"\n',
) -> str:
    listed = ", ".join(f'"{r}"' for r in requires)
    return (
        f'id = "{cap_id}"\nname = "Fake {cap_id}"\nversion = "1.0.0"\n'
        f"requires = [{listed}]\n{extra}\n{permissions}"
    )


@dataclass
class Plugin:
    entry: str
    package: Path

    @property
    def imported(self) -> bool:
        return (self.package / MARKER).exists()

    @property
    def manifest(self) -> Path:
        return self.package / "capability.toml"


def add_plugin(
    site: Path,
    entry: str,
    manifest: str | None = None,
    *,
    dist: str | None = None,
    startup: str = "pass",
) -> Plugin:
    """Install a fake distribution into ``site``: a package with its manifest and a dist-info
    folder whose entry_points.txt declares it in ``twin.capabilities`` under ``entry``."""
    dist = dist or f"fake-{entry}".replace("_", "-")
    module = dist.replace("-", "_")
    package = site / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN_CODE.format(marker=MARKER, startup=startup))
    (package / "capability.toml").write_text(
        manifest if manifest is not None else manifest_text(entry)
    )
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[twin.capabilities]\n{entry} = {module}:Plugin\n")
    return Plugin(entry, package)


@dataclass
class Result:
    returncode: int
    output: str

    def line(self, prefix: str) -> str:
        """The one output line starting with ``prefix`` (after collapsing spaces)."""
        found = [
            line
            for line in self.output.splitlines()
            if re.sub(r"\s+", " ", line).startswith(prefix)
        ]
        assert len(found) == 1, f"no single line starting {prefix!r} in:\n{self.output}"
        return re.sub(r"\s+", " ", found[0])


def environment(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env["TWIN_RATE_LIMIT"] = "0"
    return env


def twin(site: Path, *args: str | Path, timeout: float = 60) -> Result:
    done = subprocess.run(
        twin_command(*map(str, args)),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environment(site),
        timeout=timeout,
    )
    result = Result(done.returncode, done.stdout + done.stderr)
    assert "Traceback" not in result.output, result.output
    return result


def check(site: Path, data_dir: Path) -> Result:
    return twin(site, "check", "--data-dir", data_dir)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    return folder


# discovery through entry points


@pytest.mark.slow
def test_a_good_plugin_is_listed_ok(site: Path, tmp_path: Path) -> None:
    plugin = add_plugin(site, "good")
    result = check(site, tmp_path / "twin")
    assert result.returncode == 0, result.output
    assert result.line("ok capability good") == "ok capability good 1.0.0 (fake-good, 1 routes)"
    assert result.line("ok capability profile")
    assert plugin.imported  # so the marker does tell when a plugin's code ran


@pytest.mark.slow
def test_two_distributions_with_one_id_stop_check_and_serve(site: Path, tmp_path: Path) -> None:
    first = add_plugin(site, "dup", dist="dup-one")
    second = add_plugin(site, "dup", dist="dup-two")
    checked = check(site, tmp_path / "twin")
    assert checked.returncode != 0
    assert "'dup' is provided by two packages" in checked.output
    assert "dup-one" in checked.output and "dup-two" in checked.output

    port = str(free_port())
    served = twin(site, "serve", "--data-dir", tmp_path / "twin", "--port", port, timeout=30)
    assert served.returncode != 0
    assert "dup-one" in served.output and "dup-two" in served.output
    assert "Listening on" not in served.output
    assert not first.imported and not second.imported


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry, manifest, problem",
    [
        pytest.param(
            "badid",
            manifest_text("Bad-Id"),
            "id 'Bad-Id' must match [a-z][a-z0-9_]*",
            id="bad-id-pattern",
        ),
        pytest.param(
            "noversion",
            manifest_text("noversion").replace('version = "1.0.0"\n', ""),
            "version is required",
            id="missing-version",
        ),
        pytest.param(
            "mute",
            manifest_text("mute", permissions="[permissions.use]\nobsolete = false\n"),
            "permission 'use' needs a description the owner can read",
            id="permission-without-description",
        ),
        pytest.param(
            "alpha",
            manifest_text("beta"),
            "id 'beta' differs from its entry-point name 'alpha'",
            id="id-not-entry-name",
        ),
        pytest.param(
            "colourful",
            manifest_text("colourful", extra='colour = "red"'),
            "unknown field(s) colour",
            id="unknown-field",
        ),
        pytest.param("broken_toml", 'id = "broken_toml\n', "not valid TOML", id="not-toml"),
    ],
)
def test_an_invalid_manifest_fails_check_before_any_plugin_code_runs(
    site: Path, tmp_path: Path, entry: str, manifest: str, problem: str
) -> None:
    plugin = add_plugin(site, entry, manifest)
    result = check(site, tmp_path / "twin")
    assert result.returncode == 1
    line = result.line(f"FAILED {entry}:")
    assert problem in line
    assert "capability.toml" in line  # names the file to fix
    assert result.line("ok capability profile")  # the others still load
    assert not plugin.imported


@pytest.mark.slow
def test_a_plugin_in_a_subpackage_runs_no_code_while_its_manifest_is_read(
    site: Path, tmp_path: Path
) -> None:
    # entry point nested = fake_nested.inner.cap:Plugin; the manifest sits beside cap.py, and
    # the packages above it have code of their own, which must not run before it is validated.
    plugin = add_plugin(site, "nested", manifest_text("nested", extra='colour = "red"'))
    inner = plugin.package / "inner"
    inner.mkdir()
    (inner / "__init__.py").write_text(
        f"from pathlib import Path\nPath(__file__).with_name('{MARKER}').write_text('x')\n"
    )
    (inner / "cap.py").write_text("from fake_nested import Plugin\n")
    plugin.manifest.rename(inner / "capability.toml")
    info = site / "fake_nested-1.0.dist-info" / "entry_points.txt"
    info.write_text("[twin.capabilities]\nnested = fake_nested.inner.cap:Plugin\n")
    result = check(site, tmp_path / "twin")
    assert result.returncode == 1
    assert "unknown field(s) colour" in result.line("FAILED nested:")
    assert not plugin.imported and not (inner / MARKER).exists()

    (inner / "capability.toml").write_text(manifest_text("nested"))
    loaded = check(site, tmp_path / "twin")
    assert loaded.returncode == 0, loaded.output
    assert loaded.line("ok capability nested")
    assert plugin.imported and (inner / MARKER).exists()


@pytest.mark.slow
def test_a_missing_requirement_is_named(site: Path, tmp_path: Path) -> None:
    plugin = add_plugin(site, "needy", manifest_text("needy", requires=("ghost",)))
    result = check(site, tmp_path / "twin")
    assert result.returncode == 1
    assert result.line("FAILED needy:") == "FAILED needy: requires 'ghost', which is not installed"
    assert not plugin.imported


@pytest.mark.slow
def test_a_dependency_cycle_fails_every_member_and_what_needs_them(
    site: Path, tmp_path: Path
) -> None:
    add_plugin(site, "cyc_a", manifest_text("cyc_a", requires=("cyc_b",)))
    add_plugin(site, "cyc_b", manifest_text("cyc_b", requires=("cyc_a",)))
    add_plugin(site, "above", manifest_text("above", requires=("cyc_a",)))
    add_plugin(site, "calm", manifest_text("calm", requires=("profile",)))
    result = check(site, tmp_path / "twin")
    assert result.returncode == 1
    cycle = "dependency cycle: cyc_a -> cyc_b -> cyc_a"
    assert result.line("FAILED cyc_a:") == f"FAILED cyc_a: {cycle}"
    assert result.line("FAILED cyc_b:") == f"FAILED cyc_b: {cycle}"
    assert "requires 'cyc_a', which could not be loaded" in result.line("FAILED above:")
    assert result.line("ok capability calm")


@pytest.mark.slow
def test_a_plugin_whose_startup_raises_fails_check_but_not_serve(
    site: Path, tmp_path: Path, serve: Any
) -> None:
    add_plugin(site, "boom", startup='raise RuntimeError("the boom disk is missing")')
    add_plugin(site, "fine")
    checked = check(site, tmp_path / "checked")
    assert checked.returncode == 1
    assert checked.line("FAILED boom:") == "FAILED boom: RuntimeError: the boom disk is missing"

    process = serve(env=environment(site))
    log = process.output()
    assert "Disabled boom: RuntimeError: the boom disk is missing" in log
    assert "capability boom disabled" in log
    token = twin(
        site,
        "token",
        "create",
        "--scope",
        "profile:read",
        "--scope",
        "twin:read",
        "--scope",
        "fine:use",
        "--data-dir",
        process.data_dir,
    ).output.strip()
    with httpx.Client(
        base_url=process.url, timeout=5, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        assert client.get("/api/profile/").status_code == 200
        assert client.get("/api/fine/ping").json() == {"pong": "fine"}
        assert client.get("/api/boom/ping").status_code == 404
        overview = client.get("/api/twin/").json()
    assert {"id": "boom", "reason": "RuntimeError: the boom disk is missing"} in overview["failed"]
    assert "boom" not in {c["id"] for c in overview["capabilities"]}


@pytest.mark.slow
def test_a_permission_removed_after_it_was_recorded_must_be_marked_obsolete(
    site: Path, tmp_path: Path, serve: Any
) -> None:
    two = (
        '[permissions.use]\ndescription = "Use it"\n[permissions.share]\ndescription = "Share it"\n'
    )
    plugin = add_plugin(site, "shifty", manifest_text("shifty", permissions=two))
    process = serve(env=environment(site))
    assert "Disabled" not in process.output()
    process.proc.terminate()
    process.proc.wait(15)

    plugin.manifest.write_text(manifest_text("shifty"))
    dropped = check(site, process.data_dir)
    assert dropped.returncode == 1
    line = dropped.line("FAILED shifty:")
    assert "share disappeared from the manifest" in line
    assert "obsolete = true" in line

    plugin.manifest.write_text(
        manifest_text(
            "shifty",
            permissions=two.replace(
                'description = "Share it"', 'description = "Share it"\nobsolete = true'
            ),
        )
    )
    kept = check(site, process.data_dir)
    assert kept.returncode == 0, kept.output
    assert kept.line("ok capability shifty")


# parse_manifest and dependency_order on their own

VALID_IDS = st.from_regex(ID_PATTERN, fullmatch=True)


@settings(max_examples=200)
@given(VALID_IDS)
def test_parse_manifest_accepts_every_valid_id(cap_id: str) -> None:
    manifest = parse_manifest({"id": cap_id, "version": "1.0.0"}, "test", expected_id=cap_id)
    assert manifest.id == cap_id
    assert manifest.name == cap_id  # the name defaults to the id


@settings(max_examples=200)
@given(
    st.one_of(
        st.text(max_size=50).filter(lambda s: not ID_PATTERN.fullmatch(s)),
        VALID_IDS.map(str.upper).filter(lambda s: s != s.lower()),
        VALID_IDS.map(lambda s: s + "-x"),
        VALID_IDS.map(lambda s: "_" + s),
        st.integers(),
        st.none(),
        st.lists(st.text(max_size=3), max_size=2),
    )
)
def test_parse_manifest_rejects_every_invalid_id(cap_id: Any) -> None:
    with pytest.raises(PluginError, match=r"^test: id .* must match"):
        parse_manifest({"id": cap_id, "version": "1.0.0"}, "test")


@pytest.mark.parametrize("cap_id", ["", "1abc", "Abc", "a-b", "a b", "a" * 41, "é", "ab\n"])
def test_parse_manifest_rejects_these_ids(cap_id: str) -> None:
    with pytest.raises(PluginError, match="must match"):
        parse_manifest({"id": cap_id, "version": "1.0.0"}, "test")


def test_parse_manifest_reads_permissions_requires_and_experiences() -> None:
    manifest = parse_manifest(
        {
            "id": "notes",
            "name": "Notes",
            "version": "2.1.0",
            "description": "Your notes",
            "requires": ["profile"],
            "experiences": ["ui"],
            "permissions": {
                "read": {"description": "  Read your notes "},
                "old": {"description": "Gone", "obsolete": True},
            },
        },
        "test",
        expected_id="notes",
    )
    assert (manifest.name, manifest.version, manifest.requires, manifest.experiences) == (
        "Notes",
        "2.1.0",
        ("profile",),
        ("ui",),
    )
    assert manifest.permission("read") is not None
    assert manifest.permissions["read"].description == "Read your notes"
    assert manifest.permissions["old"].obsolete is True
    assert manifest.permission("write") is None


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"id": "x", "version": "1.0", "shiny": True}, "unknown field(s) shiny"),
        ({"id": "x"}, "version is required"),
        ({"id": "x", "version": "one"}, "version is required"),
        (
            {"id": "x", "version": "1.0", "permissions": {"Read": {"description": "d"}}},
            "permission 'Read' must match",
        ),
        (
            {"id": "x", "version": "1.0", "permissions": {"read": {"description": " "}}},
            "permission 'read' needs a description",
        ),
        (
            {
                "id": "x",
                "version": "1.0",
                "permissions": {"read": {"description": "d", "scope": 1}},
            },
            "permission 'read' takes only description, obsolete and resource",
        ),
        (
            {
                "id": "x",
                "version": "1.0",
                "permissions": {"read": {"description": "d", "obsolete": "yes"}},
            },
            "obsolete must be true or false",
        ),
        (
            {"id": "x", "version": "1.0", "requires": "profile"},
            "requires must be a list of strings",
        ),
        (
            {"id": "x", "version": "1.0", "requires": ["Profile"]},
            "requires entry 'Profile' is not a capability id",
        ),
        (
            {"id": "x", "version": "1.0", "experiences": ["../outside"]},
            "must be a folder inside the package",
        ),
        (
            {"id": "x", "version": "1.0", "experiences": ["/etc"]},
            "must be a folder inside the package",
        ),
        ({"id": "x", "version": "1.0", "name": 3}, "name and description must be strings"),
    ],
)
def test_parse_manifest_names_what_is_wrong(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(PluginError) as caught:
        parse_manifest(data, "pkg/capability.toml", expected_id="x")
    assert caught.value.message.startswith("pkg/capability.toml: ")
    assert problem in caught.value.message


def test_parse_manifest_refuses_an_id_that_is_not_the_entry_point_name() -> None:
    with pytest.raises(PluginError, match="id 'notes' differs from its entry-point name 'memo'"):
        parse_manifest({"id": "notes", "version": "1.0"}, "test", expected_id="memo")


def _manifest(cap_id: str, *requires: str) -> Manifest:
    return Manifest(id=cap_id, name=cap_id, version="1.0", requires=tuple(requires))


@st.composite
def acyclic(draw: st.DrawFn) -> list[Manifest]:
    """Manifests where each requires only ones drawn before it, shuffled."""
    ids = draw(st.lists(VALID_IDS, min_size=1, max_size=12, unique=True))
    manifests = [
        _manifest(cap_id, *draw(st.lists(st.sampled_from(ids[:i]), unique=True)) if i else ())
        for i, cap_id in enumerate(ids)
    ]
    return list(draw(st.permutations(manifests)))


@settings(max_examples=100)
@given(acyclic())
def test_dependency_order_puts_each_capability_after_what_it_requires(
    manifests: list[Manifest],
) -> None:
    ordered, failed = dependency_order(manifests)
    assert failed == {}
    assert sorted(m.id for m in ordered) == sorted(m.id for m in manifests)
    position = {m.id: i for i, m in enumerate(ordered)}
    for manifest in ordered:
        assert all(position[dep] < position[manifest.id] for dep in manifest.requires)


def test_dependency_order_names_cycles_and_missing_dependencies() -> None:
    ordered, failed = dependency_order(
        [
            _manifest("a", "b"),
            _manifest("b", "c"),
            _manifest("c", "a"),
            _manifest("d", "a"),
            _manifest("e", "ghost"),
            _manifest("f", "e"),
            _manifest("g"),
            _manifest("h", "g"),
            _manifest("self", "self"),
        ]
    )
    assert [m.id for m in ordered] == ["g", "h"]
    cycle = "dependency cycle: a -> b -> c -> a"
    assert failed == {
        "a": cycle,
        "b": cycle,
        "c": cycle,
        "d": "requires 'a', which could not be loaded",
        "e": "requires 'ghost', which is not installed",
        "f": "requires 'e', which could not be loaded",
        "self": "dependency cycle: self -> self",
    }
