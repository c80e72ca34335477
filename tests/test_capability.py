"""The plugin base class as an author meets it: a capability reaches the ones it requires."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin import Capability, Context, PluginError
from twin.admin import admin_builtin
from twin.core import Twin, initialize
from twin.manifest import parse_manifest
from twin.settings import Settings

pytestmark = pytest.mark.anyio


class Clock(Capability):
    def now(self) -> str:
        return "noon"


class Diary(Capability):
    pass


class Unrelated(Capability):
    pass


def manifest(cap_id: str, requires: list[str]) -> object:
    return parse_manifest({"id": cap_id, "version": "1.0", "requires": requires}, "test")


async def test_a_capability_reaches_what_it_requires_and_nothing_else(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "twin")
    initialize(settings)
    twin = await Twin.open(settings)
    try:
        builtin = [
            admin_builtin(twin),
            (lambda c: Diary(c), manifest("diary", ["watch"]), tmp_path),
            (lambda c: Clock(c), manifest("watch", []), tmp_path),
            (lambda c: Unrelated(c), manifest("unrelated", []), tmp_path),
        ]
        await twin.registry.load(
            builtin,
            [],
            db=twin.db,
            vault=twin.vault,
            settings=settings,
            did=twin.did,
            experience_dirs=[],
        )  # type: ignore[arg-type]
        loaded = twin.registry.loaded
        assert list(loaded).index("watch") < list(loaded).index("diary")  # dependency first
        diary = loaded["diary"].capability
        assert diary.require(Clock).now() == "noon"
        with pytest.raises(PluginError, match="Unrelated"):
            diary.require(Unrelated)
        context: Context = diary.context
        assert context.box("notes").seal(b"x") != b"x"
    finally:
        await twin.stop()
