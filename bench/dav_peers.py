"""The servers the files benchmark sets the twin beside: nginx (its dav module), wsgidav on
cheroot and `rclone serve webdav`, each serving a plain folder on loopback, unencrypted, with
no authentication; installed on demand (apt-get as root, pip) and started in the foreground.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _procs import HOST, Server, clean_env

PEERS = ("nginx", "wsgidav", "rclone")
_APT = {"nginx": "nginx-light", "rclone": "rclone"}  # nginx-light has the dav module


def _apt_install(package: str, command: str) -> tuple[str | None, str]:
    found = shutil.which(command) or (
        f"/usr/sbin/{command}" if Path(f"/usr/sbin/{command}").exists() else None
    )
    if found:
        return found, f"{command} (found)"
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, f"{command} is missing and apt-get is not usable here"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (
        ["apt-get", "install", "-y", "-q", package],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", package],
    ):
        try:
            subprocess.run(step, env=env, capture_output=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            break
        found = shutil.which(command) or (
            f"/usr/sbin/{command}" if Path(f"/usr/sbin/{command}").exists() else None
        )
        if found:
            return found, f"{command} (just installed with apt-get: {package})"
    return None, f"{command} could not be installed with apt-get ({package})"


def _pip_install() -> tuple[str | None, str]:
    """wsgidav and cheroot in this interpreter (pip, on demand): they are no twin dependency."""
    if importlib.util.find_spec("wsgidav") and importlib.util.find_spec("cheroot"):
        return sys.executable, "wsgidav (found)"
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "wsgidav", "cheroot"],
            capture_output=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "wsgidav could not be installed with pip in 300 s"
    importlib.invalidate_caches()
    if importlib.util.find_spec("wsgidav") and importlib.util.find_spec("cheroot"):
        return sys.executable, "wsgidav (just installed with pip, with cheroot)"
    return None, "wsgidav could not be installed with pip"


def find(name: str) -> tuple[str | None, str]:
    """The program that runs peer ``name`` (installing it if missing) and what happened."""
    if name == "wsgidav":
        return _pip_install()
    return _apt_install(_APT[name], name)


def version(name: str, program: str) -> str:
    """One line naming the peer's version, for the report."""
    if name == "wsgidav":
        command = [
            program,
            "-c",
            "import wsgidav, cheroot; print(wsgidav.__version__, "
            "'on cheroot', cheroot.__version__)",
        ]
    elif name == "nginx":
        command = [program, "-v"]
    else:
        command = [program, "version"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "version unknown"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].replace("nginx version: ", "") if text else "version unknown"


_NGINX_CONF = """\
# One process (no master) so that the measured pid is the one doing the work.
master_process off;
daemon off;
worker_processes 1;
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_max_body_size 0;
    client_body_temp_path {scratch}/nginx-body;
    server {{
        listen {host}:{port};
        root {root};
        dav_methods PUT DELETE MKCOL COPY MOVE;
        create_full_put_path on;
        dav_access user:rw;
    }}
}}
"""


def spawn(name: str, program: str, root: Path, port: int, scratch: Path) -> Server:
    """Start peer ``name`` serving ``root`` at http://127.0.0.1:``port``/."""
    log = scratch / f"{name}.log"
    if name == "nginx":
        conf = scratch / "nginx.conf"
        (scratch / "nginx-body").mkdir(exist_ok=True)
        conf.write_text(_NGINX_CONF.format(scratch=scratch, host=HOST, port=port, root=root))
        command = [
            program,
            "-p",
            str(scratch),
            "-e",
            str(scratch / "nginx-error.log"),
            "-c",
            str(conf),
        ]
    elif name == "wsgidav":
        # -q -q: warnings only, not a line per request (a user serving files would do the same).
        command = [
            program,
            "-m",
            "wsgidav.server.server_cli",
            "--no-config",
            "--host",
            HOST,
            "--port",
            str(port),
            "--root",
            str(root),
            "--auth",
            "anonymous",
            "--server",
            "cheroot",
            "-q",
            "-q",
        ]
    else:
        command = [
            program,
            "serve",
            "webdav",
            str(root),
            "--addr",
            f"{HOST}:{port}",
            "--config",
            str(scratch / "rclone.conf"),
            "-q",
        ]
    return Server.spawn(name, command, port, log, env=clean_env())
