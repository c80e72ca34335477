"""The Containerfile's install and start, run as CI can run them: a wheel (not an editable
checkout) in a fresh virtual environment, with the Containerfile's environment and health check."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def containerfile() -> dict[str, object]:
    text = (ROOT / "Containerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    env = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            env.update(dict(pair.split("=", 1) for pair in shlex.split(line[4:])))
    health = re.search(r"^HEALTHCHECK .*?CMD (.+)$", joined, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", joined, re.M)
    user = re.search(r"^USER (\S+)$", joined, re.M)
    assert health and cmd and user, "Containerfile lacks HEALTHCHECK, CMD or USER"
    return {
        "env": env,
        "health": health.group(1),
        "cmd": eval(cmd.group(1)),
        "user": user.group(1),
        "text": text,
    }


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment with the twin installed from its wheel, as `pip install .` does."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(base / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    wheels = list((base / "dist").glob("twin-*.whl"))
    assert len(wheels) == 1
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run(
        [
            venv / "bin" / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--force-reinstall",
            str(wheels[0]),
        ],
        check=True,
    )
    yield venv


def test_containerfile_runs_as_non_root_with_data_on_a_volume() -> None:
    spec = containerfile()
    assert spec["user"] not in ("root", "0")
    assert "VOLUME /data" in str(spec["text"])
    assert spec["env"]["TWIN_HOME"] == "/data"  # type: ignore[index]
    assert spec["env"]["TWIN_HOST"] == "0.0.0.0"  # type: ignore[index]
    assert "pip install --no-cache-dir ." in str(spec["text"])


def test_wheel_ships_templates_static_files_and_experiences(wheel_env: Path) -> None:
    code = (
        "import twin_web, twin_capabilities.profile, pathlib;"
        "w = pathlib.Path(twin_web.__file__).parent;"
        "p = pathlib.Path(twin_capabilities.profile.__file__).parent;"
        "print(w); print(p)"
    )
    out = subprocess.run(
        [wheel_env / "bin" / "python", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout.split()
    web, profile = Path(out[0]), Path(out[1])
    assert str(wheel_env) in str(web), "the twin was imported from the checkout, not the wheel"
    assert (web / "shell" / "templates" / "base.html").is_file()
    assert (web / "shell" / "static" / "twin.css").is_file()
    assert (profile / "capability.toml").is_file()
    assert (profile / "experience" / "experience.toml").is_file()
    assert (profile / "experience" / "static" / "profile.js").is_file()


def test_container_start_and_health_check(wheel_env: Path, tmp_path: Path) -> None:
    spec = containerfile()
    port = free_port()
    env = {
        **os.environ,
        **spec["env"],
        "TWIN_HOME": str(tmp_path / "data"),  # type: ignore[dict-item]
        "TWIN_HOST": "127.0.0.1",
        "TWIN_PORT": str(port),
        "PATH": f"{wheel_env / 'bin'}:{os.environ['PATH']}",
    }
    with (tmp_path / "serve.log").open("w") as log:
        proc = subprocess.Popen(
            spec["cmd"],
            env=env,
            stdout=log,  # type: ignore[call-overload]
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
    try:

        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            health = str(spec["health"])  # reads TWIN_PORT, as inside the container
            return (
                subprocess.run(
                    shlex.split(health), env=env, cwd="/", capture_output=True
                ).returncode
                == 0
            )

        wait_for(healthy, what="the Containerfile's health check to pass")
        base = f"http://127.0.0.1:{port}"
        # as a browser on the host reaches it through the published port
        welcome = httpx.get(base + "/", headers={"Host": f"localhost:{port}"})
        assert "This is a twin" in welcome.text
        assert httpx.get(base + "/static/twin.css").status_code == 200
        assert (tmp_path / "data" / "identity.json").is_file()
        output = (tmp_path / "serve.log").read_text()
        assert "/setup/" in output and "Recovery phrase" in output
    finally:
        proc.terminate()
        proc.wait(10)
