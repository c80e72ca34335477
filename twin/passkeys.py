"""The owner's passkeys: the WebAuthn relying party, its ceremonies and the stored credentials.

``webauthn`` (with cryptography, cbor2 and pyOpenSSL, about 24 MB) is imported inside the
ceremonies, never at start-up: a twin nobody signs in to does not pay for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twin.db import Database
from twin.errors import BadInput, Conflict, Forbidden, Gone, NotFound, Unauthorized
from twin.sessions import DEAD_LINK, DeviceNames, Sessions
from twin.settings import Settings
from twin.vault import Vault

# COSE ids: Ed25519 (EdDSA), ES256 and RS256, in the order we prefer them
ALGORITHMS = (-8, -7, -257)
CEREMONY_TTL = 300.0
MAX_CEREMONIES = 512
MAX_NAME = 60
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


class UnknownPasskey(Unauthorized):
    """A sign-in with a passkey the twin does not hold: the page asks the device to forget it."""

    code = "unknown_passkey"


@dataclass(frozen=True)
class RelyingParty:
    """Who the passkeys are for: the RP id (a host name) and the one origin that may use them."""

    id: str
    origin: str

    @classmethod
    def of(cls, settings: Settings) -> RelyingParty:
        parts = urlsplit(settings.url)
        default_port = {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname or "localhost"
        shown = f"[{host}]" if ":" in host else host
        port = "" if parts.port in (None, default_port) else f":{parts.port}"
        return cls(id=host, origin=f"{parts.scheme}://{shown}{port}")


@dataclass(frozen=True)
class Passkey:
    """A registered passkey, as the owner sees it in the settings."""

    id: str
    name: str | None
    created: float
    last_used: float | None
    flagged: float | None


@dataclass
class _Ceremony:
    kind: str  # "register" or "login"
    challenge: bytes
    expires: float
    link: str | None


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise BadInput(f"a device name is 1 to {MAX_NAME} printable characters")
    return name


def _b64url(text: object, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > 65536:
        raise BadInput(f"the passkey's {what} is missing or not text")
    if not _BASE64URL.fullmatch(text):
        raise BadInput(f"the passkey's {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadInput(f"the passkey's {what} is not base64url") from None


class Passkeys:
    """Registers passkeys and signs the owner in with them; nothing here needs the vault open,
    so a locked twin can still be signed in to (and then unlocked from the browser)."""

    def __init__(
        self, db: Database, vault: Vault, settings: Settings, did: str, sessions: Sessions
    ) -> None:
        self._db = db
        self._sessions = sessions
        self.rp = RelyingParty.of(settings)
        self.names = DeviceNames(db, vault, "twin_passkeys", "name")
        # The user handle the authenticator stores: stable for this twin, no personal data.
        self._user_id = hashlib.sha256(b"twin owner\0" + did.encode()).digest()[:16]
        self._did = did
        self._ceremonies: dict[str, _Ceremony] = {}

    # ceremonies in progress: single use, five minutes, bounded (strangers can start them)

    def _begin(self, kind: str, challenge: bytes, link: str | None) -> str:
        now = time.monotonic()
        if len(self._ceremonies) >= MAX_CEREMONIES:
            self._ceremonies = {k: c for k, c in self._ceremonies.items() if c.expires > now}
            while len(self._ceremonies) >= MAX_CEREMONIES:
                del self._ceremonies[next(iter(self._ceremonies))]
        ceremony = secrets.token_urlsafe(16)
        self._ceremonies[ceremony] = _Ceremony(kind, challenge, now + CEREMONY_TTL, link)
        return ceremony

    def _take(self, ceremony: object, kind: str) -> _Ceremony:
        found = self._ceremonies.pop(ceremony, None) if isinstance(ceremony, str) else None
        if found is None or found.kind != kind or found.expires < time.monotonic():
            raise BadInput("this passkey request expired or was already used; start again")
        return found

    def _check_origin(self, credential: object) -> dict[str, Any]:
        """The credential as a dict, its client data checked for our origin, with a message that
        says what to do (the library's would only say the origins differ)."""
        if not isinstance(credential, dict) or not isinstance(credential.get("response"), dict):
            raise BadInput("send the passkey's answer as a JSON object with a response")
        raw = _b64url(credential["response"].get("clientDataJSON"), "clientDataJSON")
        try:
            client = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise BadInput("the passkey's clientDataJSON is not JSON") from None
        origin = client.get("origin") if isinstance(client, dict) else None
        if origin != self.rp.origin:
            raise Forbidden(
                f"this passkey request came from {str(origin)[:200]}, but this twin is at "
                f"{self.rp.origin}: open the twin there, or start it with --public-url set to "
                "the address you use"
            )
        return credential

    # registration

    async def registration_options(self, link: str | None) -> tuple[str, dict[str, Any]]:
        """Start registering a passkey on this device; ``link`` is the setup or pairing link it
        will spend (None when a signed-in owner adds one)."""
        from webauthn import generate_registration_options, options_to_json
        from webauthn.helpers.structs import (
            AuthenticatorSelectionCriteria,
            PublicKeyCredentialDescriptor,
            ResidentKeyRequirement,
            UserVerificationRequirement,
        )

        rows = await self._db.fetchall("SELECT credential FROM twin_passkeys")
        options = generate_registration_options(
            rp_id=self.rp.id,
            rp_name="twin",
            user_id=self._user_id,
            user_name=f"owner@{self.rp.id}",
            user_display_name=f"Owner of twin {self._did[8:16]}…{self._did[-4:]}",
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=r["credential"]) for r in rows],
            supported_pub_key_algs=_algorithms(),
            timeout=120_000,
        )
        ceremony = self._begin("register", options.challenge, link)
        return ceremony, json.loads(options_to_json(options))

    async def register(
        self, ceremony: object, credential: object, name: str, *, signed_in: bool
    ) -> str:
        """Check a new passkey's answer, spend the ceremony's link and keep the passkey;
        returns the passkey's id. Without a link, only a signed-in owner may add one."""
        from webauthn import verify_registration_response

        name = check_name(name)
        started = self._take(ceremony, "register")
        if started.link is None and not signed_in:
            raise Unauthorized("sign in first, or open a setup or pairing link")
        checked = self._check_origin(credential)
        with _checking("register"):
            verified = verify_registration_response(
                credential=checked,
                expected_challenge=started.challenge,
                expected_rp_id=self.rp.id,
                expected_origin=self.rp.origin,
                require_user_verification=True,
                supported_pub_key_algs=_algorithms(),
            )
        _usable_key(verified.credential_public_key)
        transports = checked["response"].get("transports")
        if not isinstance(transports, list):
            transports = []
        passkey_id = secrets.token_hex(8)
        row = (
            passkey_id,
            verified.credential_id,
            verified.credential_public_key,
            verified.sign_count,
            json.dumps([t for t in transports if isinstance(t, str)][:8]),
            self.names.seal(passkey_id, name),
            time.time(),
        )

        async def keep(conn: Any) -> str:
            """Spend the link and store the passkey together: a refusal keeps the link."""
            async with conn.execute(
                "SELECT 1 FROM twin_passkeys WHERE credential = ?", (verified.credential_id,)
            ) as cursor:
                if await cursor.fetchone() is not None:
                    return "known"
            if started.link and not await self._sessions.spend_link(conn, started.link):
                return "link dead"
            await conn.execute(
                "INSERT INTO twin_passkeys (id, credential, public_key, sign_count, transports, "
                "name, created) VALUES (?,?,?,?,?,?,?)",
                row,
            )
            return "kept"

        outcome = await self._db.transaction(keep)
        if outcome == "link dead":
            raise Gone(DEAD_LINK)
        if outcome == "known":
            raise Conflict("this passkey is already registered with this twin")
        return passkey_id

    # signing in

    def login_options(self) -> tuple[str, dict[str, Any]]:
        """Start signing in: any of the owner's discoverable passkeys may answer."""
        from webauthn import generate_authentication_options, options_to_json
        from webauthn.helpers.structs import UserVerificationRequirement

        options = generate_authentication_options(
            rp_id=self.rp.id,
            user_verification=UserVerificationRequirement.REQUIRED,
            timeout=120_000,
        )
        ceremony = self._begin("login", options.challenge, None)
        return ceremony, json.loads(options_to_json(options))

    async def login(self, ceremony: object, credential: object) -> str:
        """Check a sign-in answer against the stored passkey; returns the passkey's id.

        The signature is checked before the sign count, so only the real key can get a passkey
        flagged: a count that went backwards means the key was copied, and is refused."""
        from webauthn import verify_authentication_response

        started = self._take(ceremony, "login")
        checked = self._check_origin(credential)
        raw_id = _b64url(checked.get("rawId") or checked.get("id"), "id")
        row = await self._db.fetchone(
            "SELECT id, public_key, sign_count, flagged FROM twin_passkeys WHERE credential = ?",
            (raw_id,),
        )
        if row is None:
            raise UnknownPasskey(
                "this passkey is not one of this twin's (it may have been removed); use another, "
                "or add this device from a signed-in one"
            )
        handle = checked["response"].get("userHandle")
        if handle and _b64url(handle, "userHandle") != self._user_id:
            raise Unauthorized("this passkey belongs to another twin")
        with _checking("sign in"):
            verified = verify_authentication_response(
                credential=checked,
                expected_challenge=started.challenge,
                expected_rp_id=self.rp.id,
                expected_origin=self.rp.origin,
                credential_public_key=row["public_key"],
                credential_current_sign_count=0,
                require_user_verification=True,
            )
        if row["flagged"] is not None:
            raise Forbidden(
                "this passkey was flagged as possibly copied and is refused; remove it in "
                "Settings from another device, and add this device again"
            )
        count, stored = verified.new_sign_count, row["sign_count"]
        now = time.time()
        if (count or stored) and count <= stored:
            await self._db.execute(
                "UPDATE twin_passkeys SET flagged = ? WHERE id = ?", (now, row["id"])
            )
            await self._sessions.end_for_passkey(str(row["id"]))  # maybe the copy's too
            raise Forbidden(
                f"this passkey's signature counter went back (from {stored} to {count}), a sign "
                "that it was copied; it is refused from now on and flagged in Settings"
            )
        # only if no other sign-in moved the counter since it was read
        moved = await self._db.execute(
            "UPDATE twin_passkeys SET sign_count = ?, last_used = ? "
            "WHERE id = ? AND sign_count = ?",
            (count, now, row["id"], stored),
        )
        if moved.rowcount != 1:
            raise Unauthorized("another sign-in with this passkey came first; try again")
        return str(row["id"])

    # what the owner manages in the settings

    async def count(self) -> int:
        return int(await self._db.fetchval("SELECT count(*) FROM twin_passkeys") or 0)

    async def all(self) -> list[Passkey]:
        rows = await self._db.fetchall(
            "SELECT id, name, created, last_used, flagged FROM twin_passkeys ORDER BY created"
        )
        return [
            Passkey(
                id=r["id"],
                name=self.names.open(r["id"], r["name"]),
                created=r["created"],
                last_used=r["last_used"],
                flagged=r["flagged"],
            )
            for r in rows
        ]

    async def export(self) -> list[dict[str, Any]]:
        """Every passkey as ``twin export`` writes it: what Settings shows, and the public
        half the browser's sign-ins are checked with (a passkey's secret never leaves it)."""
        rows = await self._db.fetchall("SELECT * FROM twin_passkeys ORDER BY created")
        return [
            {
                "id": r["id"],
                "name": self.names.open(r["id"], r["name"]),
                "credential": base64.urlsafe_b64encode(r["credential"]).decode(),
                "public_key": base64.urlsafe_b64encode(r["public_key"]).decode(),
                "sign_count": r["sign_count"],
                "transports": json.loads(r["transports"]),
                "created": r["created"],
                "last_used": r["last_used"],
                "flagged": r["flagged"],
            }
            for r in rows
        ]

    async def restore(self, passkeys: list[Any]) -> None:
        """The passkeys of an export, into a twin at the same address (they are bound to it)."""
        for held in passkeys:
            try:
                row = (
                    str(held["id"]),
                    _b64url(held["credential"], "a passkey's credential"),
                    _b64url(held["public_key"], "a passkey's public key"),
                    int(held["sign_count"]),
                    json.dumps([str(t) for t in held["transports"]]),
                    float(held["created"]),
                    None if held["last_used"] is None else float(held["last_used"]),
                    None if held["flagged"] is None else float(held["flagged"]),
                )
            except (KeyError, TypeError, ValueError):
                raise BadInput(
                    "twin/passkeys.json: a passkey lacks a field or has a bad one"
                ) from (None)
            await self._db.execute(
                "INSERT INTO twin_passkeys (id, credential, public_key, sign_count, transports, "
                "created, last_used, flagged) VALUES (?,?,?,?,?,?,?,?)",
                row,
            )
            if isinstance(held.get("name"), str):
                await self.rename(row[0], held["name"])

    async def rename(self, passkey_id: str, name: str) -> None:
        name = check_name(name)
        result = await self._db.execute(
            "UPDATE twin_passkeys SET name = ? WHERE id = ?",
            (self.names.seal(passkey_id, name), passkey_id),
        )
        if result.rowcount != 1:
            raise NotFound("no such passkey: it may have been removed already")

    async def remove(self, passkey_id: str) -> None:
        """Remove a passkey and sign out the browsers it signed in; never the last one."""

        async def remove(conn: Any) -> int:
            # flagged passkeys cannot sign in: one that can must remain
            async with conn.execute(
                "SELECT count(*) FROM twin_passkeys WHERE flagged IS NULL AND id != ?",
                (passkey_id,),
            ) as cursor:
                (others,) = await cursor.fetchone()
            if others == 0:
                return -1
            gone = await conn.execute("DELETE FROM twin_passkeys WHERE id = ?", (passkey_id,))
            await conn.execute("DELETE FROM twin_sessions WHERE passkey = ?", (passkey_id,))
            return int(gone.rowcount)

        removed = await self._db.transaction(remove)
        if removed == -1:
            raise Conflict(
                "this is your only passkey: add another device first, or you could not sign in"
            )
        if removed == 0:
            raise NotFound("no such passkey: it may have been removed already")


def _usable_key(cose_key: bytes) -> None:
    """Refuse a public key that no signature could ever be checked against (the library
    accepts some: a short Ed25519 key, a point that is not on the curve)."""
    from webauthn.helpers import decode_credential_public_key
    from webauthn.helpers.decoded_public_key_to_cryptography import (
        decoded_public_key_to_cryptography,
    )

    try:
        decoded_public_key_to_cryptography(decode_credential_public_key(cose_key))
    except Exception:  # whatever the library or cryptography raise, the key is unusable
        raise BadInput("the new passkey's public key is not a valid key") from None


def _algorithms() -> list[Any]:
    from webauthn.helpers.cose import COSEAlgorithmIdentifier

    return [COSEAlgorithmIdentifier(alg) for alg in ALGORITHMS]


@contextmanager
def _checking(doing: str) -> Iterator[None]:
    """Turn what the library raises on a bad answer into a refusal that says what is wrong."""
    from webauthn.helpers.exceptions import WebAuthnException

    try:
        yield
    except WebAuthnException as exc:
        raise _refused(exc, doing) from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise BadInput(f"the passkey's answer is malformed ({type(exc).__name__})") from None


def _refused(exc: Exception, doing: str) -> BadInput | Unauthorized:
    """The library's reason, in words that say what to do."""
    reason = str(exc).split(". See __cause__")[0]
    if "User verification is required" in reason:
        return Unauthorized(
            f"this passkey did not verify you (PIN, fingerprint or face), and the twin needs "
            f"that to {doing}; use a passkey or device that asks for it"
        )
    if "Unsupported" in reason or "algorithm" in reason.lower():
        return BadInput(f"this passkey uses a kind of key the twin does not take: {reason}")
    if doing == "register":
        return BadInput(f"the new passkey could not be checked: {reason}")
    return Unauthorized(f"the passkey could not be checked: {reason}")
