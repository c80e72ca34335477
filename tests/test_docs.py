"""Documentation that must stay true: every setting, command and error code is documented, and
the plugin surface exported by ``twin`` is exactly what its ``__all__`` says."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import click
import pytest

import twin
from twin import errors
from twin.cli import main
from twin.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented(setting: object) -> None:
    for text, where in ((README, "README.md"), (_doc("operators.md"), "docs/operators.md")):
        assert f"`{setting.flag}`" in text, f"{setting.flag} missing from {where}"  # type: ignore[attr-defined]
        assert f"`{setting.env}`" in text, f"{setting.env} missing from {where}"  # type: ignore[attr-defined]


def _commands(group: click.Group, prefix: str = "twin") -> list[str]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append(f"{prefix} {name}")
    return found


@pytest.mark.parametrize("command", _commands(main))
def test_every_command_is_documented(command: str) -> None:
    assert f"`{command}" in README, f"{command} missing from README.md"
    assert command in _doc("users.md") + _doc("operators.md") + _doc("plugins.md"), (
        f"{command} missing from docs/"
    )


def test_every_error_code_is_documented() -> None:
    api = _doc("api.md")
    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.TwinError)
    }
    missing = sorted(code for code in codes if f"`{code}`" not in api)
    assert not missing, f"error codes missing from docs/api.md: {missing}"


def test_public_surface_is_sorted_and_complete() -> None:
    assert twin.__all__ == sorted(twin.__all__)
    exported = {name for name in dir(twin) if not name.startswith("_")}
    submodules = {module.name for module in pkgutil.iter_modules(twin.__path__)}
    assert exported - submodules <= set(twin.__all__)
    for name in twin.__all__:
        assert hasattr(twin, name), name


def test_quickstart_has_exactly_two_commands() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0].strip() for b in quickstart.split("```sh\n")[1:]]
    assert blocks == ["pip install . && twin serve", "scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec scripts/test" in ci
