"""The Community Solid Server (CSS) for the storage benchmark: installed with npm into a cache
outside the repository when missing, started with its file backend on a free loopback port.

Config ``file-root.json``, as shipped with CSS 7: resources are files on disk, no accounts, and
the root container is created with an ACL that gives everyone full access, so unauthenticated
PUT and GET of JSON resources work as they would for a pod's owner; every request still goes
through CSS's access control (WAC), as every twin request goes through its token check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from _procs import HOST, Server, clean_env

PACKAGE = "@solid/community-server@7"
CONFIG = "@css:config/file-root.json"
INSTALL_SECONDS = 600
START_SECONDS = 120


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "twin-bench" / "css"


def _env() -> dict[str, str]:
    """No TWIN_* and no CSS_* setting of the shell (CSS reads CSS_PORT, CSS_CONFIG, …)."""
    return {k: v for k, v in clean_env().items() if not k.startswith("CSS_")}


def find(install: bool = True) -> tuple[Path | None, str]:
    """The community-solid-server command (installing it into the cache if missing) and how."""
    cache = cache_dir()
    command = cache / "node_modules" / ".bin" / "community-solid-server"
    how = "found in"
    if not command.exists():
        if not shutil.which("node") or not shutil.which("npm"):
            return None, "node or npm is missing, so the Community Solid Server cannot be installed"
        if not install:
            return None, f"the Community Solid Server is not installed in {cache}"
        cache.mkdir(parents=True, exist_ok=True)
        if not (cache / "package.json").exists():
            (cache / "package.json").write_text('{"name": "twin-bench-css", "private": true}\n')
        try:
            done = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", PACKAGE],
                cwd=cache,
                capture_output=True,
                text=True,
                timeout=INSTALL_SECONDS,
                env=_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, f"npm install {PACKAGE} took over {INSTALL_SECONDS} s"
        if done.returncode != 0 or not command.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"npm install {PACKAGE} failed: {' | '.join(tail)}"
        how = "just installed with npm into"
    manifest = cache / "node_modules" / "@solid" / "community-server" / "package.json"
    version = json.loads(manifest.read_text()).get("version", "?")
    return command, f"Community Solid Server {version}, {how} {cache}"


def spawn(command: Path, root: Path, port: int, log: Path) -> Server:
    root.mkdir(parents=True, exist_ok=True)
    args = [
        str(command),
        "--config",
        CONFIG,
        "--rootFilePath",
        str(root),
        "--port",
        str(port),
        "--baseUrl",
        f"http://{HOST}:{port}/",
        "--loggingLevel",
        "warn",
    ]
    return Server.spawn("solid", args, port, log, env=_env())


def wait_ready(server: Server, timeout: float = START_SECONDS) -> float:
    """Seconds from spawn until the root container answers 200."""
    return server.wait_healthy(timeout, every=0.1, path="/")
