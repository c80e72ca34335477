"""`twin dev`: a plugin author edits code or a manifest and the running twin picks it up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, twin_command, wait_for

pytestmark = pytest.mark.slow

CODE = """
from twin import Capability, api


class Echo(Capability):
    def routes(self):
        return [api.get("/ping", self.ping, permission="use", summary="{summary}")]

    async def ping(self, call):
        return {{"pong": True}}
"""


def write_plugin(root: Path, *, name: str, summary: str) -> Path:
    package = root / "echo_plugin"
    package.mkdir(parents=True, exist_ok=True)
    (package / "capability.toml").write_text(
        f'id = "echo"\nname = "{name}"\nversion = "1.0.0"\n'
        '[permissions.use]\ndescription = "Ping the echo"\n'
    )
    (package / "__init__.py").write_text(CODE.format(summary=summary))
    dist = root / "echo_plugin-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[twin.capabilities]\necho = echo_plugin:Echo\n")
    return package


def openapi(url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(url + "/openapi.json", timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def test_dev_reloads_on_code_and_manifest_changes(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    package = write_plugin(plugins, name="Echo", summary="first")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(plugins), "TWIN_RATE_LIMIT": "0"}
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            twin_command("dev", "--data-dir", str(tmp_path / "twin"), "--port", str(port)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:

        def summary() -> str | None:
            assert proc.poll() is None, log.read_text()
            spec = openapi(url)
            ping = spec and spec["paths"].get("/api/echo/ping")
            return ping["get"]["summary"] if ping else None

        assert wait_for(summary, 30, "twin dev to serve the plugin") == "first"
        assert "/setup/" in log.read_text()

        (package / "__init__.py").write_text(CODE.format(summary="second"))
        wait_for(lambda: summary() == "second", 30, "the code change to be reloaded")

        (package / "capability.toml").write_text(
            'id = "echo"\nname = "Echo, renamed"\nversion = "1.0.1"\n'
            '[permissions.use]\ndescription = "Ping the echo"\n'
        )

        def renamed() -> bool:
            spec = openapi(url)
            return bool(spec) and {"name": "echo", "description": "Echo, renamed"} in spec["tags"]

        wait_for(renamed, 30, "the manifest change to be reloaded")

        rival = subprocess.run(
            twin_command("serve", "--data-dir", str(tmp_path / "twin"), "--port", str(free_port())),
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        assert rival.returncode == 1 and "already served by twin dev (pid" in rival.stderr
    finally:
        proc.terminate()
        proc.wait(15)
    assert "Traceback" not in log.read_text()
