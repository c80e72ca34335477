"""The ``twin`` command: init, serve, dev, check, status, token and access verbs."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from twin.__about__ import __version__
from twin.errors import InvalidSignature, PluginError, TwinError, WrongPassphrase
from twin.settings import SETTINGS, Settings, host_port

T = TypeVar("T")
_BY_NAME = {s.name: s for s in SETTINGS}


def _option(name: str, **extra: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    setting = _BY_NAME[name]

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return setting.parse(value)
        except TwinError as exc:
            raise click.BadParameter(exc.message) from None

    return click.option(
        setting.flag,
        name,
        default=None,
        callback=convert,
        help=f"{setting.help} [env {setting.env}]",
        **extra,
    )


def data_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _option("data_dir", metavar="DIR")(fn)


def _settings(**flags: Any) -> Settings:
    try:
        return Settings.resolve(flags)
    except TwinError as exc:
        raise click.UsageError(exc.message) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:  # pragma: no cover - uvloop is missing only on Windows
        return asyncio.run(coro)


def _fail_on_twin_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TwinError as exc:
            raise click.ClickException(exc.message) from None

    return wrapper


def _read_passphrase_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise click.ClickException(f"cannot read passphrase file {path}: {exc.strerror}") from None


def _passphrase_for(settings: Settings, *, required: bool) -> str | None:
    """The passphrase for a sealed key: from --passphrase-file, else asked at the terminal."""
    from twin.identity import read_key_file

    if not settings.key_path.exists() or not read_key_file(settings.key_path).sealed:
        return None
    if settings.passphrase_file is not None:
        return _read_passphrase_file(settings.passphrase_file)
    if sys.stdin.isatty():
        return str(click.prompt("Passphrase to unlock the twin", hide_input=True))
    if required:
        raise click.ClickException(
            "the key is sealed: give --passphrase-file or run this "
            "at a terminal to be asked for the passphrase"
        )
    return None


async def _open(settings: Settings, *, unlock: bool | None = True) -> Any:
    """Open the twin; ``unlock`` True needs the key open, None opens it if it can, False never
    does (for verbs that touch no secret, so no key derivation is paid for)."""
    from twin.core import Twin

    passphrase = None if unlock is False else _passphrase_for(settings, required=bool(unlock))
    return await Twin.open(settings, passphrase)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="twin")
def main() -> None:
    """Your digital twin: identity, encrypted vault and capabilities in one process."""


def _announce_identity(identity: Any, settings: Settings, passphrase: str | None) -> None:
    words = identity.phrase().split()
    click.echo(f"Created a new twin in {settings.data_dir}")
    click.echo(f"  id: {identity.did}")
    click.echo(
        "\nRecovery phrase (shown this once; write it down and keep it offline; it is "
        "the only way to restore this twin elsewhere):\n"
    )
    for row in range(0, 24, 6):
        click.echo(
            "  "
            + "  ".join(
                f"{i + 1:>2}. {w:<9}" for i, w in enumerate(words[row : row + 6], start=row)
            )
        )
    click.echo("")
    if passphrase is None:
        click.echo(
            f"The root key is stored unencrypted in {settings.key_path} (mode 0600): "
            "whoever has root on this machine can read it. Seal it with a passphrase: "
            "`twin init --passphrase` on a fresh data directory."
        )
    else:
        click.echo(
            "The root key is sealed with your passphrase; the twin starts locked until it is given."
        )


def _new_passphrase(settings: Settings, ask: bool) -> str | None:
    if settings.passphrase_file is not None:
        passphrase = _read_passphrase_file(settings.passphrase_file)
    elif ask:
        passphrase = str(click.prompt("New passphrase", hide_input=True, confirmation_prompt=True))
    else:
        return None
    if len(passphrase) < 8:
        raise click.ClickException("a passphrase needs at least 8 characters")
    return passphrase


def _read_phrase() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("Your 24-word recovery phrase", hide_input=True))
    return sys.stdin.read()


async def _print_setup_link(settings: Settings, twin: Any) -> None:
    from twin.sessions import setup_line

    secret = await twin.sessions.create_link()
    click.echo(setup_line(settings.url, secret))


async def _print_fresh_link(settings: Settings) -> None:
    twin = await _open(settings, unlock=False)
    try:
        await _print_setup_link(settings, twin)
    finally:
        await twin.stop()


@main.command()
@data_dir_option
@click.option(
    "--recover",
    is_flag=True,
    help="Restore a twin from its 24-word recovery phrase "
    "(asked for, or read from standard input).",
)
@click.option(
    "--passphrase",
    "ask_passphrase",
    is_flag=True,
    help="Seal the root key with a passphrase (asked for twice).",
)
@_option("passphrase_file", metavar="FILE")
@_option("public_url")
@_option("host")
@_option("port")
@_fail_on_twin_errors
def init(recover: bool, ask_passphrase: bool, **flags: Any) -> None:
    """Create a twin: its data directory and root key."""
    from twin.core import initialize
    from twin.identity import Identity

    settings = _settings(**flags)
    identity = Identity.from_phrase(_read_phrase()) if recover else None
    passphrase = _new_passphrase(settings, ask_passphrase)
    identity = initialize(settings, passphrase=passphrase, identity=identity)
    if recover:
        click.echo(f"Restored twin {identity.did} in {settings.data_dir}")
    else:
        _announce_identity(identity, settings, passphrase)

    _run(_print_fresh_link(settings))


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aiosqlite logs every statement with its parameters at debug level: user data
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    # httpx logs each request to a peer, with its address, at info level
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _serve_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(
        [
            "data_dir",
            "host",
            "port",
            "public_url",
            "passphrase_file",
            "max_body",
            "rate_limit",
            "storage_quota",
            "files_quota",
            "trash_days",
            "peer_rate",
            "peer_backoff",
            "log_level",
        ]
    ):
        fn = _option(name)(fn)
    return fn


@main.command()
@_serve_options
@_fail_on_twin_errors
def serve(**flags: Any) -> None:
    """Run the twin (creating it on first run)."""
    import uvicorn

    from twin.app import create_app
    from twin.core import initialize
    from twin.registry import find_sources
    from twin.server import BoundedHttpTools, TwinServer, keep_large_buffers

    settings = _settings(**flags)
    _configure_logging(settings.log_level)
    try:
        sources = find_sources()  # two packages offering one id: refuse before creating anything
    except PluginError as exc:
        raise click.ClickException(exc.message) from None
    listener = _bind(settings)
    created = not settings.key_path.exists()
    if created:
        _announce_identity(initialize(settings), settings, None)
    lock = _hold_data_dir(settings)

    async def run() -> None:
        twin = await _open(settings, unlock=False)
        try:
            _unlock_at_start(twin, settings)
            await twin.start(sources)
        except BaseException:
            await twin.stop()
            raise
        for cap_id, reason in sorted(twin.registry.failed.items()):
            click.echo(f"Disabled {cap_id}: {reason}", err=True)
        click.echo(f"Twin {twin.did}")
        click.echo(f"Listening on http://{_hostport(settings)} ({settings.url})")
        if twin.vault.locked:
            click.echo(
                "The twin is LOCKED: unlock it with its passphrase "
                "(POST /api/twin/unlock, or restart at a terminal)."
            )
        if created or sys.stdout.isatty():
            await _print_setup_link(settings, twin)
        else:
            # A log is often kept by the host's owner; a sign-in link there would be theirs too.
            click.echo("To sign in, run `twin access link` on this machine.")
        config = uvicorn.Config(
            create_app(twin),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            http=BoundedHttpTools,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=10,
        )
        keep_large_buffers()
        await TwinServer(config, twin.stopping).serve(sockets=[listener])

    try:
        _run(run())
    finally:
        lock.close()


def _unlock_at_start(twin: Any, settings: Settings) -> None:
    """Open a sealed key with --passphrase-file, or by asking at a terminal (three tries);
    otherwise the twin runs locked until unlocked over the API."""
    if not twin.vault.locked:
        return
    if settings.passphrase_file is not None:
        twin.unlock(_read_passphrase_file(settings.passphrase_file))
        return
    if not sys.stdin.isatty():
        return
    for _ in range(3):
        try:
            twin.unlock(str(click.prompt("Passphrase to unlock the twin", hide_input=True)))
            return
        except WrongPassphrase:
            click.echo("That passphrase does not open the key.", err=True)
    raise click.ClickException("three wrong passphrases; the twin was not started")


def _bind(settings: Settings) -> Any:
    """The listening socket, bound before anything is printed, so a busy port is said plainly."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {_hostport(settings)}: {exc.strerror or exc}; is another twin "
            "running there? Choose another with --port"
        ) from None
    return listener


def _hold_data_dir(settings: Settings, command: str = "serve") -> Any:
    """Hold a lock on the data directory while serving: two servers on one vault would each
    believe they are its only writer. ``command`` names the holder in the other's error."""
    import fcntl

    path = settings.data_dir / "serve.lock"
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise click.ClickException(
            f"{settings.data_dir} is already served by {holder}; stop "
            "it first or use another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"twin {command} (pid {os.getpid()})")
    handle.flush()
    return handle


async def _check_vault(twin: Any, settings: Settings) -> int:
    """Check the copied database's integrity and each capability's stored data against the
    real data directory; prints a line each, returns how many problems were found."""
    found = 0
    result = await twin.db.fetchval("PRAGMA integrity_check")
    if result == "ok":
        click.echo("ok      vault database (integrity check)")
    else:
        click.echo(f"FAILED  vault database: {result}")
        found += 1
    for cap_id, item in sorted(twin.registry.loaded.items()):
        try:
            problems = list(await item.capability.check(settings.data_dir))
        except Exception as exc:
            problems = [f"the check failed: {type(exc).__name__}: {exc}"]
        for problem in problems:
            click.echo(f"FAILED  {cap_id}: {problem}")
        found += len(problems)
    if not found:
        click.echo("ok      vault data (every capability's stored data checked)")
    return found


def _copy_twin(source: Settings, target: Settings) -> None:
    import shutil
    import sqlite3

    target.data_dir.mkdir(mode=0o700)
    shutil.copy2(source.key_path, target.key_path)
    if source.db_path.exists():
        src = sqlite3.connect(source.db_path.resolve().as_uri() + "?mode=ro", uri=True)
        dst = sqlite3.connect(target.db_path)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()


def _hostport(settings: Settings) -> str:
    return host_port(settings.host, settings.port)


@main.command()
@_serve_options
@_fail_on_twin_errors
def dev(**flags: Any) -> None:
    """Run the twin and restart it when code, templates or manifests change."""
    import uvicorn

    from twin.registry import find_sources, package_dir
    from twin.server import BoundedHttpTools

    settings = _settings(**flags)
    sources = find_sources()  # two packages offering one id: refuse before creating anything
    _bind(settings).close()  # a busy port is said plainly; uvicorn binds it again below
    if not settings.key_path.exists():
        from twin.core import initialize

        _announce_identity(initialize(settings), settings, None)
    lock = _hold_data_dir(settings, "dev")
    for setting in SETTINGS:
        value = getattr(settings, setting.name, None)
        if value is not None and value != "":
            os.environ[setting.env] = str(value)
    from twin.experiences import package_folder

    watched = {
        Path(__file__).parent,
        package_folder("twin_web"),
        package_folder("twin_capabilities"),
    }
    for source in sources:
        try:
            watched.add(package_dir(source))
        except PluginError:
            continue
    click.echo(f"Watching {len(watched)} folder(s); serving http://{_hostport(settings)}")
    try:
        uvicorn.run(
            "twin.app:app_from_environment",
            factory=True,
            reload=True,
            reload_dirs=[str(p) for p in sorted(watched)],
            reload_includes=["*.py", "*.html", "*.toml", "*.css", "*.js"],
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,  # request lines would put sign-in links in the log
            timeout_graceful_shutdown=3,  # a reload must not wait for live streams
            http=BoundedHttpTools,
            server_header=False,
        )
    finally:
        lock.close()


@main.command()
@data_dir_option
@_fail_on_twin_errors
def check(data_dir: Path | None) -> None:
    """Validate every installed capability and experience; exit 1 if any is broken."""
    from twin.registry import find_sources

    settings = _settings(data_dir=data_dir)
    try:
        sources = find_sources()
    except PluginError as exc:
        raise click.ClickException(exc.message) from None

    async def run() -> int:
        import tempfile

        from twin.core import Twin, initialize

        with tempfile.TemporaryDirectory() as scratch:
            # A scratch twin: a copy of this one where there is one (so permissions it recorded
            # are checked), never the real database, which a running twin may be using.
            target = Settings(data_dir=Path(scratch) / "twin")
            if settings.key_path.exists():
                _copy_twin(settings, target)
            else:
                initialize(target)
            logging.getLogger("twin.registry").setLevel(logging.CRITICAL)
            twin = await Twin.open(target)
            try:
                await twin.start(sources)
                for cap_id, item in sorted(twin.registry.loaded.items()):
                    click.echo(
                        f"ok      capability {cap_id} {item.manifest.version} "
                        f"({item.source}, {len(item.endpoints)} routes)"
                    )
                for exp_id, exp in sorted(twin.registry.experiences.items()):
                    click.echo(
                        f"ok      experience {exp_id} "
                        f"(uses {', '.join(sorted(exp.uses)) or 'nothing'})"
                    )
                for name, reason in sorted(twin.registry.failed.items()):
                    click.echo(f"FAILED  {name}: {reason}")
                problems = await _check_vault(twin, settings) if settings.key_path.exists() else 0
                return 1 if twin.registry.failed or problems else 0
            finally:
                await twin.stop()

    sys.exit(_run(run()))


@main.command()
@data_dir_option
@_option("host")
@_option("port")
@_fail_on_twin_errors
def status(**flags: Any) -> None:
    """Show this twin's identity, lock state, capabilities and whether it is running."""
    from twin.identity import key_file_permissions_ok, read_key_file
    from twin.registry import installed_manifests

    settings = _settings(**flags)
    if not settings.key_path.exists():
        raise click.ClickException(
            f"no twin in {settings.data_dir}: run `twin init` or `twin serve`"
        )
    keyfile = read_key_file(settings.key_path)
    manifests, failed = installed_manifests()
    size = sum(p.stat().st_size for p in settings.data_dir.glob("twin.db*") if p.is_file())
    click.echo(f"twin        {keyfile.did}")
    click.echo(f"data        {settings.data_dir} ({size / 1024:.0f} KiB database)")
    key_state = "sealed with a passphrase" if keyfile.sealed else "unencrypted (mode 0600)"
    if not key_file_permissions_ok(settings.key_path):
        key_state += "; WARNING: readable by other users, run chmod 600"
    click.echo(f"key         {key_state}")
    click.echo(f"capabilities {', '.join(sorted(manifests))}")
    for cap_id, reason in sorted(failed.items()):
        click.echo(f"broken      {cap_id}: {reason}")
    click.echo(f"server      {_probe(settings)}")


def _probe(settings: Settings) -> str:
    import json
    import urllib.request

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    try:
        health_url = f"http://{host_port(host, settings.port)}/api/health"
        with urllib.request.urlopen(health_url, timeout=1) as r:
            health = json.load(r)
    except (OSError, ValueError):
        return f"not running on {_hostport(settings)}"
    state = "locked" if health.get("locked") else "unlocked"
    return f"running at {settings.url} ({state}, version {health.get('version')})"


@main.command("export")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="The archive file to write (with --open: a new or empty folder).",
)
@click.option(
    "--open",
    "plain",
    is_flag=True,
    help="Write plain, documented files for other software instead: NOT encrypted.",
)
@click.option(
    "--passphrase",
    "ask_passphrase",
    is_flag=True,
    help="Encrypt with a passphrase asked now, instead of with the recovery phrase.",
)
@data_dir_option
@_option("passphrase_file", metavar="FILE")
@_fail_on_twin_errors
def export(
    out: Path,
    plain: bool,
    ask_passphrase: bool,
    data_dir: Path | None,
    passphrase_file: Path | None,
) -> None:
    """Write the whole twin to one encrypted archive (or, with --open, to plain files)."""
    import time

    from twin.archive import ArchiveWriter
    from twin.export import Folder
    from twin.registry import find_sources
    from twin.transfer import export_twin

    settings = _settings(data_dir=data_dir, passphrase_file=passphrase_file)
    if not settings.key_path.exists():
        raise click.ClickException(f"there is no twin in {settings.data_dir} to export")
    if plain and ask_passphrase:
        raise click.UsageError("--open writes plain files: it takes no --passphrase")
    archive_passphrase = None
    if ask_passphrase:
        archive_passphrase = str(
            click.prompt("Passphrase for the archive", hide_input=True, confirmation_prompt=True)
        )
    if not plain and out.exists():
        raise click.ClickException(f"{out} exists already: give a new file name")
    lock = _hold_data_dir(settings, "export")  # a twin at rest: its data does not move meanwhile

    async def run() -> None:
        twin = await _open(settings)
        try:
            logging.getLogger("twin.registry").setLevel(logging.WARNING)
            await twin.start(find_sources(), connect=False)
            identity = twin.require_identity()
            total = sum(h.bytes for _, h in await twin.holdings())
            meter = _Meter("Exporting", total)
            began = time.monotonic()
            handle = None
            if plain:
                sink: Any = Folder(out, identity, created=time.time())
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                handle = os.fdopen(os.open(out, flags, 0o600), "wb")
                sink = ArchiveWriter(handle, identity, passphrase=archive_passphrase)
            try:
                parts = await export_twin(twin, sink, open=plain, progress=meter.show)
            except BaseException:
                # no half export is left to be taken for a whole one
                if handle is not None:
                    handle.close()
                    out.unlink(missing_ok=True)
                else:
                    import shutil

                    shutil.rmtree(out, ignore_errors=True)  # it was new or empty
                raise
            finally:
                meter.done()
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            for folder, part in parts:
                click.echo(f"  {folder:<12} {part.entries:>7,} entries  {_mib(part.bytes)}")
            took = time.monotonic() - began
            click.echo(f"Exported {identity.did} to {out} in {took:.1f} s.")
            if plain:
                click.echo(
                    f"This copy is NOT encrypted: anyone who can read {out} can read "
                    "everything in it. Keep it safe, and delete it once you are done."
                )
            elif archive_passphrase is None:
                click.echo("It opens with this twin's recovery phrase.")
            else:
                click.echo("It opens with the passphrase you gave.")
        finally:
            await twin.stop()

    try:
        _run(run())
    finally:
        lock.close()


@main.command("import")
@click.argument("source", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--replace",
    is_flag=True,
    help="Replace the twin already in the data directory, and everything it holds.",
)
@click.option(
    "--seal",
    "ask_passphrase",
    is_flag=True,
    help="Seal the imported root key with a new passphrase (asked twice).",
)
@data_dir_option
@_option("passphrase_file", metavar="FILE")
@_option("public_url")
@_option("host")
@_option("port")
@click.option("--snapshot", help="From a backup folder: which backup (default: the newest).")
@_fail_on_twin_errors
def import_(
    source: Path, replace: bool, ask_passphrase: bool, snapshot: str | None, **flags: Any
) -> None:
    """Restore a whole twin from `twin export` (an archive or an --open folder) or a backup."""
    settings = _settings(**flags)
    target = settings.data_dir
    if settings.key_path.exists() and not replace:
        raise click.ClickException(
            f"{target} already holds a twin: to replace it, and all it holds, with the "
            "imported one, give --replace (export it first if you may want it back)"
        )
    if target.exists() and not settings.key_path.exists() and any(target.iterdir()):
        if not replace:
            raise click.ClickException(
                f"{target} holds files but no twin: give an empty or new --data-dir, "
                "or --replace to put the twin in place of them"
            )
    if target.resolve() in source.resolve().parents:
        raise click.ClickException(
            f"{source} is inside {target}, which the import replaces: move it out first"
        )
    opened = _open_export(source, snapshot)
    new_passphrase = _new_passphrase(settings, ask_passphrase)
    lock = _hold_data_dir(settings, "import") if target.is_dir() else None
    try:
        did, counts, kept_passkeys, peers = _run(_import(settings, opened, new_passphrase))
    finally:
        if lock is not None:
            lock.close()
    for folder, items in counts.items():
        click.echo(f"  {folder:<12} {items:>7,} entries")
    click.echo(f"Imported {did} into {target}.")
    if peers:
        click.echo(
            f"When it serves, it tells its {peers} peer{'s' * (peers != 1)} its address, "
            f"{settings.url}, so they reach it here."
        )
    if kept_passkeys == "kept":
        click.echo(f"Your passkeys work as before at {settings.url}.")
    else:
        if kept_passkeys == "left":
            click.echo(
                f"A passkey belongs to the address it was made at: make one for "
                f"{settings.url} with this link."
            )
        else:
            click.echo(f"Make your passkey for {settings.url} with this link.")
        _run(_print_fresh_link(settings))


@main.group(invoke_without_command=True)
@click.option(
    "--to",
    "root",
    type=click.Path(path_type=Path, file_okay=False),
    help="The backup folder (made if new); later backups into it write only what changed.",
)
@click.option(
    "--keep",
    type=click.IntRange(1, 365),
    default=7,
    show_default=True,
    help="How many backups to keep in the folder; older ones are let go.",
)
@data_dir_option
@_option("passphrase_file", metavar="FILE")
@click.pass_context
@_fail_on_twin_errors
def backup(ctx: click.Context, root: Path | None, keep: int, **flags: Any) -> None:
    """Back the whole twin up, encrypted, into a folder: `twin backup --to DIR`."""
    if ctx.invoked_subcommand is not None:
        return
    if root is None:
        raise click.UsageError("say where: twin backup --to DIR (or twin backup verify DIR)")
    import time

    from twin.backups import back_up
    from twin.registry import find_sources

    settings = _settings(**flags)
    if not settings.key_path.exists():
        raise click.ClickException(f"there is no twin in {settings.data_dir} to back up")
    try:
        lock = _hold_data_dir(settings, "backup")
    except click.ClickException as exc:
        raise click.ClickException(
            f"{exc.message}. A serving twin backs itself up: switch it on in Settings, Backups"
        ) from None

    async def run() -> None:
        twin = await _open(settings)
        try:
            logging.getLogger("twin.registry").setLevel(logging.WARNING)
            await twin.start(find_sources(), connect=False)
            meter = _Meter("Backing up", sum(h.bytes for _, h in await twin.holdings()))
            began = time.monotonic()
            try:
                written = await back_up(twin, root, keep, meter.show)
            finally:
                meter.done()
            click.echo(
                f"Backed up {_mib(written.bytes)} in {written.entries:,} entries to {root} as "
                f"{written.snapshot} in {time.monotonic() - began:.1f} s: "
                f"{written.new_chunks:,} of {written.chunks:,} chunks were new "
                f"({_mib(written.new_bytes)} written; {written.reused:,} unchanged files "
                "taken from the last backup unread)."
            )
            if written.removed:
                click.echo(f"Let go of {len(written.removed)} older: {', '.join(written.removed)}.")
            click.echo("It opens with this twin's recovery phrase: twin import " + str(root))
        finally:
            await twin.stop()

    try:
        _run(run())
    finally:
        lock.close()


def _open_backup(root: Path, settings: Settings) -> Any:
    """The backup folder opened with this machine's twin's key when it is the same twin,
    else with the recovery phrase (asked)."""
    from twin.backup import BackupFolder, read_info
    from twin.identity import Identity, read_key_file

    info = read_info(root)
    if settings.key_path.exists():
        keyfile = read_key_file(settings.key_path)
        if keyfile.did == info["did"]:
            seed = keyfile.unlock(_passphrase_for(settings, required=True)).seed
            return BackupFolder(root, seed)
    click.echo(f"These are the backups of {info['did']}; they open with its recovery phrase.")
    return BackupFolder(root, Identity.from_phrase(_read_phrase()).seed)


@backup.command("verify")
@click.argument(
    "root", metavar="DIR", type=click.Path(path_type=Path, file_okay=False, exists=True)
)
@click.option("--snapshot", help="The backup to check (default: the newest).")
@click.option("--all", "every", is_flag=True, help="Check every backup in the folder.")
@data_dir_option
@_option("passphrase_file", metavar="FILE")
@_fail_on_twin_errors
def backup_verify(root: Path, snapshot: str | None, every: bool, **flags: Any) -> None:
    """Read a backup back and check every byte of it, without restoring it."""
    folder = _open_backup(root, _settings(**flags))
    names = folder.snapshots()
    if not names:
        raise click.ClickException(f"{root} holds no backup yet")
    chosen = names if every else [snapshot or names[-1]]
    for name in chosen:
        entries, size = folder.verify(name)
        click.echo(f"{name}: sound, {entries:,} entries, {_mib(size)}.")


@backup.command("list")
@click.argument(
    "root", metavar="DIR", type=click.Path(path_type=Path, file_okay=False, exists=True)
)
@data_dir_option
@_option("passphrase_file", metavar="FILE")
@_fail_on_twin_errors
def backup_list(root: Path, **flags: Any) -> None:
    """The backups in a folder, oldest first."""
    folder = _open_backup(root, _settings(**flags))
    for name in folder.snapshots():
        manifest = folder.manifest(name)
        size = sum(e[1] for e in manifest["entries"])
        click.echo(f"{name}  {len(manifest['entries']):>7,} entries  {_mib(size)}")


class _Opened:
    """An export opened for reading: its entries, and how far through it the reading is."""

    def __init__(self, entries: Any, total: int, position: Callable[[], int]) -> None:
        self.entries = entries
        self.total = total
        self.position = position
        self.seed: bytes | None = None
        self.manifest: Callable[[], dict[str, Any] | None] = lambda: None


def _open_export(source: Path, snapshot: str | None) -> _Opened:
    from twin.archive import ArchiveReader, opens_with
    from twin.backup import is_backup
    from twin.export import read_folder
    from twin.identity import Identity

    if is_backup(source):
        return _open_snapshot(source, snapshot)
    if snapshot is not None:
        raise click.UsageError("--snapshot picks a backup: SOURCE must be a backup folder")
    if source.is_dir():
        if not (source / "manifest.json").exists():
            raise click.ClickException(
                f"{source} is neither a twin export's folder (it has no manifest.json) nor a backup"
            )
        manifest, entries = read_folder(source)
        read = [0]

        def counted() -> Any:
            for path, chunks in entries:
                yield path, _counting(chunks, read)

        opened = _Opened(counted(), sum(e[1] for e in manifest["entries"]), lambda: read[0])
        opened.manifest = lambda: manifest
        click.echo("A plain export holds no key: it is imported with the twin's recovery phrase.")
        opened.seed = Identity.from_phrase(_read_phrase()).seed
        return opened
    handle = open(source, "rb")  # noqa: SIM115 (read to its end by the import)
    if opens_with(source) == "passphrase":
        if sys.stdin.isatty():
            passphrase = str(click.prompt("Passphrase of the archive", hide_input=True))
        else:
            passphrase = sys.stdin.readline().rstrip("\n")
        reader = ArchiveReader(handle, passphrase=passphrase)
        seed = None
    else:
        seed = Identity.from_phrase(_read_phrase()).seed
        reader = ArchiveReader(handle, seed=seed)
    opened = _Opened(reader.entries(), source.stat().st_size, lambda: reader.position)
    opened.seed = seed
    opened.manifest = lambda: reader.manifest
    return opened


def _open_snapshot(source: Path, snapshot: str | None) -> _Opened:
    from twin.backup import BackupFolder, read_info
    from twin.identity import Identity

    info = read_info(source)
    click.echo(f"These are the backups of {info['did']}; they open with its recovery phrase.")
    seed = Identity.from_phrase(_read_phrase()).seed
    folder = BackupFolder(source, seed)
    names = folder.snapshots()
    if not names:
        raise click.ClickException(f"{source} holds no backup yet")
    name = snapshot or names[-1]
    manifest = folder.manifest(name)
    click.echo(f"Importing the backup {name}.")
    read = [0]

    def counted() -> Any:
        for path, chunks in folder.entries(name):
            yield path, _counting(chunks, read)

    opened = _Opened(counted(), sum(e[1] for e in manifest["entries"]), lambda: read[0])
    opened.seed = seed
    opened.manifest = lambda: manifest
    return opened


def _counting(chunks: Any, read: list[int]) -> Any:
    for chunk in chunks:
        read[0] += len(chunk)
        yield chunk


async def _import(
    settings: Settings, opened: _Opened, passphrase: str | None
) -> tuple[str, dict[str, int], str, int]:
    """Read the export into a new data directory beside the target, and only once all of it
    is read and checked put it in the target's place; on any failure the target is as it
    was. The did, each part's entries, what became of the passkeys, how many peers to tell."""
    import dataclasses
    import shutil
    import sqlite3

    from twin.core import Twin, initialize
    from twin.export import Entries
    from twin.identity import Identity
    from twin.registry import find_sources
    from twin.transfer import read_identity, restore_twin

    # a data directory that is a symbolic link is replaced where it points, on that disk
    target = settings.data_dir.resolve()
    # beside the target, or in it when it is a mount point (a container's volume), so the
    # new directory is on the target's own disk and goes in place by renames
    mounted = target.is_dir() and os.path.ismount(target)
    beside = target if mounted else target.parent
    staging = beside / f".{target.name}.importing-{os.getpid()}"
    for stale in beside.glob(f".{target.name}.importing-*"):  # an import killed midway
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    meter = _Meter("Importing", opened.total)
    entries = Entries(opened.entries)
    try:
        core, did, seed = await read_identity(entries)
        seed = seed or opened.seed
        if seed is None or Identity.from_seed(seed).did != did:
            raise WrongPassphrase(f"that recovery phrase is not the phrase of {did}")
        staged = dataclasses.replace(settings, data_dir=staging)
        initialize(staged, passphrase=passphrase, identity=Identity.from_seed(seed))
        twin = await Twin.open(staged, passphrase)
        try:
            logging.getLogger("twin.registry").setLevel(logging.WARNING)
            await twin.start(find_sources(), connect=False)

            def progress(part: str, _entries: int, _bytes: int) -> None:
                meter.show(part, 0, opened.position())

            progress("twin", 0, 0)
            counts, kept = await restore_twin(twin, entries, core, progress)
            peers = sum(p.state == "pinned" for p in await twin.peers.directory.all())
            schedule = (await twin.backups.state())["schedule"]
        finally:
            await twin.stop()
            meter.done()
        manifest = opened.manifest()
        if manifest is None or manifest.get("did") != did:
            raise InvalidSignature(f"the export's manifest is not {did}'s")
        _swap(staging, target, mounted=mounted)
    except (OSError, sqlite3.Error) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise click.ClickException(
            f"the import stopped ({exc}); {target} is as it was. If the disk is full, free "
            "about twice the export's size and try again."
        ) from None
    except TwinError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise click.ClickException(
            f"{exc.message}. Nothing was imported: {target} is as it was."
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if schedule is not None:
        click.echo(
            f"Backups into {schedule['folder']} came along switched off: switch them on in "
            "Settings, Backups, once this twin is the one in use."
        )
    return did, counts, kept, peers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap(staging: Path, target: Path, *, mounted: bool) -> None:
    """Put the new data directory in the target's place: the old one (if any) is moved
    aside first and removed last, so a crash between leaves both, never neither; a rename
    that fails puts back what had moved. A mount point stays: what it holds is moved."""
    import time

    if not target.exists():
        os.rename(staging, target)
        return
    if not mounted:
        aside = target.parent / f".{target.name}.replaced-{int(time.time())}"
        os.rename(target, aside)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(aside, target)
            raise
        _remove_old(aside)
        return
    aside = target / f".{target.name}.replaced-{int(time.time())}"
    aside.mkdir()
    moved: list[tuple[Path, Path]] = []
    try:
        for child in list(target.iterdir()):
            if child in (staging, aside) or child.name == "serve.lock":
                continue
            if child.name.startswith(f".{target.name}."):
                continue  # what an import cut short left: not the twin's
            os.rename(child, aside / child.name)
            moved.append((aside / child.name, child))
        for child in list(staging.iterdir()):
            os.rename(child, target / child.name)
            moved.append((target / child.name, staging / child.name))
    except OSError:
        for now, was in reversed(moved):
            os.rename(now, was)
        aside.rmdir()
        raise
    staging.rmdir()
    _remove_old(aside)


def _remove_old(aside: Path) -> None:
    """The replaced twin, once the new one is in place: what cannot go is said, not fatal."""
    import shutil

    try:
        shutil.rmtree(aside)
    except OSError as exc:
        click.echo(f"The replaced twin is left in {aside} ({exc.strerror}): remove it by hand.")


class _Meter:
    """One line of progress on the terminal, redrawn in place: a bar when the total is known."""

    def __init__(self, verb: str, total: int) -> None:
        self._verb = verb
        self._total = total
        self._shown = False
        self._tty = sys.stdout.isatty()
        self._last = 0.0

    def show(self, part: str, entries: int, done: int) -> None:
        import time

        now = time.monotonic()
        if not self._tty and now - self._last < 5:  # a log file gets a line every 5 s
            return
        self._last = now
        line = f"{self._verb} {part:<10} {_mib(done):>12}"
        if self._total:
            share = min(done / self._total, 1.0)
            filled = int(share * 30)
            line += f"  [{'#' * filled}{'.' * (30 - filled)}] {share:4.0%}"
        click.echo(("\r" if self._tty else "") + line, nl=not self._tty)
        self._shown = True

    def done(self) -> None:
        if self._shown and self._tty:
            click.echo("")


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB" if size >= 2**20 else f"{size / 1024:,.1f} KiB"


@main.group()
def token() -> None:
    """Create, list and revoke bearer tokens for scripts and clients."""


@token.command("create")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="cap:perm, cap:* or * (repeat for several).",
)
@click.option("--name", default="cli", show_default=True, help="A name to recognise it by.")
@data_dir_option
@_option("passphrase_file", metavar="FILE")
@_fail_on_twin_errors
def token_create(
    scopes: tuple[str, ...], name: str, data_dir: Path | None, passphrase_file: Path | None
) -> None:
    """Print a new bearer token (shown once; only its hash is kept)."""
    from twin.registry import installed_manifests
    from twin.scopes import parse_scopes

    settings = _settings(data_dir=data_dir, passphrase_file=passphrase_file)
    manifests, _ = installed_manifests()
    parsed = parse_scopes([s for arg in scopes for s in arg.split()], manifests)

    async def run() -> str:
        twin = await _open(settings)
        try:
            _, secret = await twin.tokens.create(parsed, name)
            return str(secret)
        finally:
            await twin.stop()

    click.echo(_run(run()))


@token.command("list")
@data_dir_option
@_option("passphrase_file", metavar="FILE")
@_fail_on_twin_errors
def token_list(data_dir: Path | None, passphrase_file: Path | None) -> None:
    """List tokens: id, name, scopes, last use."""
    import time

    settings = _settings(data_dir=data_dir, passphrase_file=passphrase_file)

    async def run() -> list[Any]:
        twin = await _open(settings)
        try:
            return list(await twin.tokens.list())
        finally:
            await twin.stop()

    tokens = _run(run())
    if not tokens:
        click.echo("No tokens yet: `twin token create --scope ... --name ...` makes one.")
    for t in tokens:
        used = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(t.last_used)) if t.last_used else "never"
        )
        click.echo(
            f"{t.id:<18} {t.kind:<10} {t.name:<24} {' '.join(t.scopes):<30} last used {used}"
        )


@token.command("revoke")
@click.argument("token_id")
@data_dir_option
@_option("passphrase_file", metavar="FILE")
@_fail_on_twin_errors
def token_revoke(token_id: str, data_dir: Path | None, passphrase_file: Path | None) -> None:
    """Revoke a token by its id or name (takes effect within seconds on a running twin)."""
    settings = _settings(data_dir=data_dir, passphrase_file=passphrase_file)

    async def run() -> Any:
        twin = await _open(settings)
        try:
            return await twin.tokens.revoke(token_id)
        finally:
            await twin.stop()

    info = _run(run())
    click.echo(f"Revoked {info.id} ({info.name})")


@main.group()
def access() -> None:
    """Regain access to the twin from its machine's shell."""


@access.command("link")
@data_dir_option
@_option("public_url")
@_option("host")
@_option("port")
@_fail_on_twin_errors
def access_link(**flags: Any) -> None:
    """Print a fresh one-time sign-in link (whoever holds this shell is the owner)."""
    _run(_print_fresh_link(_settings(**flags)))
