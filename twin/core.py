"""The Twin: one person's identity, vault, database and capabilities, held in one object."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.requests import Request

from twin.__about__ import __version__
from twin.accesslog import AccessLog
from twin.backups import Backups
from twin.capability import Holding
from twin.db import Database
from twin.doors import DOOR_RATE_FACTOR, Door
from twin.errors import BadInput, RateLimited, Unauthorized, VaultLocked, WrongPassphrase
from twin.experiences import web_root
from twin.grants import Grants
from twin.guards import RateLimiter
from twin.identity import Identity, KeyFile, read_key_file, write_key_file
from twin.passkeys import Passkeys
from twin.peers import Peers
from twin.registry import Builtin, Registry, Source, find_sources
from twin.schema import MIGRATIONS
from twin.scopes import Principal
from twin.sessions import Sessions
from twin.settings import Settings
from twin.tokens import Tokens
from twin.vault import Vault

log = logging.getLogger("twin")
DOCUMENT_TTL = 24 * 3600


def experience_dirs() -> list[Path]:
    """The experiences shipped in ``web/`` (every folder with an experience.toml)."""
    return sorted(p.parent for p in web_root().glob("*/experience.toml"))


def initialize(
    settings: Settings, *, passphrase: str | None = None, identity: Identity | None = None
) -> Identity:
    """Create the data directory and the root key; refuses to overwrite an existing key."""
    if settings.key_path.exists():
        raise BadInput(
            f"{settings.data_dir} already holds a twin ({settings.key_path.name}); "
            "use another --data-dir, or move it away first"
        )
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(settings.data_dir, 0o700)
    except OSError as exc:
        raise BadInput(
            f"cannot use {settings.data_dir} as the data directory: {exc.strerror}"
        ) from None
    identity = identity or Identity.generate()
    write_key_file(settings.key_path, identity, passphrase)
    return identity


class Twin:
    """Everything one twin holds; ``start()`` opens the database and loads the capabilities."""

    def __init__(self, settings: Settings, keyfile: KeyFile, db: Database) -> None:
        self.settings = settings
        self.keyfile = keyfile
        self.db = db
        self.identity: Identity | None = None
        self.vault = Vault(None)
        self.registry = Registry()
        self.access = AccessLog(db)
        self.tokens = Tokens(db, self.vault, self.registry.declared)
        self.grants = Grants(db, self.vault, self.tokens)
        self.sessions = Sessions(db, self.vault)
        self.passkeys = Passkeys(db, self.vault, settings, keyfile.did, self.sessions)
        self.limiter = RateLimiter(settings.rate_limit)
        self.door_limiter = RateLimiter(settings.rate_limit * DOOR_RATE_FACTOR)
        self.door = Door(self)
        self.peers = Peers(db, self.vault, settings, self.require_identity)
        self.backups = Backups(self)
        self.started = False
        self.connected = False  # the outbox runs (not in an export)
        self.stopping = asyncio.Event()  # set as the twin begins to stop; ends live streams
        self._unlocking = asyncio.Lock()
        self._failed_unlocks: dict[str, list[float]] = {}

    @property
    def did(self) -> str:
        return self.keyfile.did

    @property
    def version(self) -> str:
        return __version__

    @classmethod
    async def open(cls, settings: Settings, passphrase: str | None = None) -> Twin:
        """Open an initialised data directory; unlocks at once unless the key is sealed and no
        passphrase is given."""
        if not settings.key_path.exists():
            raise BadInput(
                f"no twin in {settings.data_dir}: run `twin init` (or `twin serve`, "
                "which creates one)"
            )
        keyfile = read_key_file(settings.key_path)
        db = await Database.open(settings.db_path)
        twin = cls(settings, keyfile, db)
        try:
            await db.migrate("twin", MIGRATIONS)
            if not keyfile.sealed or passphrase is not None:
                twin.unlock(passphrase)
        except BaseException:
            await db.close()
            raise
        return twin

    def unlock(self, passphrase: str | None) -> None:
        """Open the sealed root key (a wrong passphrase raises WrongPassphrase)."""
        identity = self.keyfile.unlock(passphrase)
        self.identity = identity
        self.vault.unlock(identity.seed)

    async def unlock_remotely(self, passphrase: str, who: str) -> None:
        """Unlock from the API or the browser: one attempt at a time, and five wrong ones a
        minute for each ``who`` (a client address, or the owner's session), so a stranger's
        guesses cannot lock the owner out."""
        async with self._unlocking:
            if not self.vault.locked:
                return
            now = time.monotonic()
            # every failure cost a key derivation, so this holds at most a minute's worth
            self._failed_unlocks = {
                key: recent
                for key, times in self._failed_unlocks.items()
                if (recent := [t for t in times if now - t < 60])
            }
            failures = self._failed_unlocks.setdefault(who, [])
            if len(failures) >= 5:
                raise RateLimited(
                    "too many wrong passphrases; wait a minute and try again", retry_after=60
                )
            try:
                await asyncio.to_thread(self.unlock, passphrase)
            except WrongPassphrase:
                failures.append(now)
                # the key file's message names its path; whoever asks here may be anyone
                raise WrongPassphrase("that passphrase does not open this twin") from None
        # device names given while it was locked waited in memory for the vault
        await self.sessions.names.flush()
        await self.passkeys.names.flush()
        if self.started and self.connected:
            await self.peers.start()

    def require_identity(self) -> Identity:
        if self.identity is None:
            raise VaultLocked("the twin is locked: unlock it with its passphrase")
        return self.identity

    async def start(
        self,
        sources: Sequence[Source] | None = None,
        builtin: Sequence[Builtin] | None = None,
        *,
        connect: bool = True,
    ) -> None:
        """Load every capability (entry points unless ``sources`` is given) and experience;
        with ``connect`` False (an export), the outbox and announcements stay stopped."""
        from twin.admin import admin_builtin

        await self.registry.load(
            builtin if builtin is not None else [admin_builtin(self)],
            find_sources() if sources is None else sources,
            db=self.db,
            vault=self.vault,
            settings=self.settings,
            did=self.did,
            experience_dirs=experience_dirs(),
            stopping=self.stopping,
            door=self.door,
            peers=self.peers,
        )
        if connect:
            await self.peers.start()
            self.backups.start()
        self.started = True
        self.connected = connect

    async def stop(self) -> None:
        self.stopping.set()
        if self.started:
            if self.connected:
                await self.backups.stop()
                await self.peers.stop()
            await self.registry.shutdown()
            self.started = False
        self.access.write()
        await self.db.close()

    async def authenticate(self, request: Request) -> Principal:
        """The principal of a request's bearer token; 401 without a valid one."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise Unauthorized(
                "send Authorization: Bearer <token>; create a token with "
                "`twin token create --scope ...`"
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        principal = await self.tokens.authenticate(token.strip())
        if principal is None:
            raise Unauthorized("that token is not valid: it was revoked or mistyped")
        return principal

    async def holdings(self) -> list[tuple[str, Holding]]:
        """What each capability keeps (name, holding), for Settings; a capability whose
        holdings fail is left out and logged."""
        kept: list[tuple[str, Holding]] = []
        if self.vault.locked:
            return kept
        for item in self.registry.loaded.values():
            try:
                kept += [(item.manifest.name, h) for h in await item.capability.holdings()]
            except Exception:
                log.exception("capability %s failed to say what it keeps", item.manifest.id)
        return kept

    async def public_document(self) -> dict[str, Any]:
        """The twin's signed public document, served at ``/.well-known/twin``."""
        identity = self.require_identity()
        url = self.settings.url
        document: dict[str, Any] = {
            "type": "twin",
            "did": identity.did,
            "version": self.version,
            "endpoints": {"api": f"{url}/api", "web": url, "inbox": f"{url}/p2p/v1/inbox"},
            "issued": int(time.time()),
            "expires": int(time.time()) + DOCUMENT_TTL,
        }
        for cap_id, item in self.registry.loaded.items():
            try:
                part = await item.capability.public_document()
            except VaultLocked:
                raise
            except Exception:  # one plugin's fault leaves the others' parts published
                log.exception("capability %s failed to give its public part", cap_id)
                continue
            if part is not None:
                document[cap_id] = dict(part)
        return {**document, "signature": identity.sign(document)}
