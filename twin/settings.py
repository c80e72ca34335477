"""The twin's settings: one table of (name, default, help); flags > TWIN_* env > default."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from twin.errors import BadInput


@dataclass(frozen=True)
class Setting:
    """One setting: its name (the flag is ``--name-with-dashes``, the env var ``TWIN_NAME``)."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    env_name: str = ""

    @property
    def env(self) -> str:
        return self.env_name or "TWIN_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "twin"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise BadInput(f"port must be a number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise BadInput(f"port must be between 0 and 65535, got {port}")
    return port


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    raw = text.strip().lower().removesuffix("b")
    factor = units.get(raw[-1:], 1)
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        value = int(float(number) * factor)
    except (ValueError, OverflowError):
        raise BadInput(f"size must look like 1048576, 512k or 4m, got {text!r}") from None
    if value <= 0:
        raise BadInput(f"size must be positive, got {text!r}")
    return value


def _size_or_zero(text: str) -> int:
    return 0 if text.strip() == "0" else _size(text)


def _positive(unit: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise BadInput(f"{unit} must be a number, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise BadInput(f"{unit} must be a positive number, got {text!r}")
        return value

    return parse


_days = _positive("days")
_seconds = _positive("seconds")


def human_size(count: int) -> str:
    """A byte count as people read it: 512 bytes, 3.4 KiB, 256 MiB."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= factor:
            return f"{count / factor:.3g} {unit}"
    return f"{count} bytes" if count != 1 else "1 byte"


def _public_url(text: str) -> str:
    url = text.strip().rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        raise BadInput(f"public URL must start with http:// or https://, got {text!r}")
    return url


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise BadInput(f"rate limit must be a number of requests a second, got {text!r}") from None
    if not math.isfinite(rate) or rate < 0:
        raise BadInput(f"rate limit must be a finite number, 0 (off) or more, got {text!r}")
    return rate


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise BadInput(f"log level must be debug, info, warning or error, got {text!r}")
    return level


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir",
        None,
        "Where the twin keeps its key, database and files "
        "(default: $XDG_DATA_HOME/twin, usually ~/.local/share/twin).",
        Path,
        "TWIN_HOME",
    ),
    Setting("host", "127.0.0.1", "Address to listen on; 0.0.0.0 inside a container."),
    Setting("port", 8470, "Port to listen on.", _port),
    Setting(
        "public_url",
        "",
        "The URL people and peers reach this twin at (default: http://HOST:PORT).",
        _public_url,
    ),
    Setting(
        "passphrase_file",
        None,
        "Read the passphrase that unlocks a sealed key from this file instead of prompting.",
        Path,
    ),
    Setting(
        "max_body",
        1024 * 1024,
        "Largest request body the API accepts, in bytes (suffixes k, m, g).",
        _size,
    ),
    Setting(
        "rate_limit",
        50.0,
        "Requests a second each token may make, in bursts of four "
        "times that; 0 turns the limit off.",
        _rate,
    ),
    Setting(
        "storage_quota",
        256 * 1024 * 1024,
        "Most bytes (keys and bodies) one storage namespace may hold (suffixes k, m, g).",
        _size,
    ),
    Setting(
        "files_quota",
        0,
        "Most bytes the twin's files may take, trash included (suffixes k, m, g); "
        "0: whatever the disk has free, less 256 MiB.",
        _size_or_zero,
    ),
    Setting(
        "trash_days",
        30.0,
        "Days a deleted file stays in the trash before it is deleted for good.",
        _days,
    ),
    Setting(
        "peer_rate",
        1000.0,
        "Envelopes a second each peer may send this twin, in bursts of four times that.",
        _rate,
    ),
    Setting(
        "peer_backoff",
        600.0,
        "Longest wait, in seconds, between two tries to reach a peer that does not answer.",
        _seconds,
    ),
    Setting("log_level", "info", "debug, info, warning or error.", _log_level),
)


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL holds it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one twin."""

    data_dir: Path = field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8470
    public_url: str = ""
    passphrase_file: Path | None = None
    max_body: int = 1024 * 1024
    rate_limit: float = 50.0
    storage_quota: int = 256 * 1024 * 1024
    files_quota: int = 0
    trash_days: float = 30.0
    peer_rate: float = 1000.0
    peer_backoff: float = 600.0
    log_level: str = "info"

    @property
    def url(self) -> str:
        """The twin's base URL, as people and peers reach it."""
        if self.public_url:
            return self.public_url
        host = "localhost" if self.host in {"127.0.0.1", "0.0.0.0", "::", "::1"} else self.host
        return f"http://{host_port(host, self.port)}"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "identity.json"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "twin.db"

    @classmethod
    def resolve(
        cls, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Flags (parsed; None = not given) win over TWIN_* env, which wins over defaults."""
        flags = flags or {}
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            if flags.get(setting.name) is not None:
                values[setting.name] = flags[setting.name]
            elif env.get(setting.env):
                try:
                    values[setting.name] = setting.parse(env[setting.env])
                except BadInput as exc:
                    raise BadInput(f"{setting.env}: {exc.message}") from None
        if values.get("data_dir") is not None:
            values["data_dir"] = Path(values["data_dir"]).expanduser()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
