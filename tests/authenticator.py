"""A passkey authenticator in Python, for tests that speak the ceremonies over plain HTTP.

It answers ``navigator.credentials.create()`` and ``.get()`` the way a browser and a platform
authenticator would (attestation "none", a discoverable credential, a signature counter), with
Ed25519, ES256 or RS256 keys, and can be told to misbehave: skip user verification, sign for
another origin, or wind its counter back as a cloned key would. The browser tests use Chromium's
own virtual authenticator instead; this one reaches what a browser will not let a page do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from twin.shell import COOKIE

ED25519, ES256, RS256 = -8, -7, -257

ORIGIN = "http://localhost:8470"  # what an in-process twin on its defaults expects


def owner_headers(cookie: str | None = None, origin: str = ORIGIN) -> dict[str, str]:
    """What the owner's browser sends with a request from one of the twin's own pages."""
    headers = {"Origin": origin}
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    return headers


async def register_passkey(
    client: httpx.AsyncClient,
    device: Authenticator,
    link: str | None = None,
    *,
    cookie: str | None = None,
    name: str = "",
) -> httpx.Response:
    """Create a passkey on ``device`` as passkey.js does: by a link, or signed in."""
    headers = owner_headers(cookie, device.origin)
    start = await client.post("/auth/register/options", json={"link": link}, headers=headers)
    if start.status_code != 200:
        return start
    body = {
        "ceremony": start.json()["ceremony"],
        "credential": device.create(start.json()["publicKey"]),
        "name": name,
    }
    response = await client.post("/auth/register", json=body, headers=headers)
    client.cookies.clear()  # each test sends its cookie explicitly
    return response


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Key:
    alg: int
    private: Any
    user_handle: bytes
    counter: int = 0

    def cose(self) -> bytes:
        public = self.private.public_key()
        if self.alg == ED25519:
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return cbor2.dumps({1: 1, 3: ED25519, -1: 6, -2: raw})
        if self.alg == ES256:
            numbers = public.public_numbers()
            return cbor2.dumps(
                {
                    1: 2,
                    3: ES256,
                    -1: 1,
                    -2: numbers.x.to_bytes(32, "big"),
                    -3: numbers.y.to_bytes(32, "big"),
                }
            )
        numbers = public.public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        return cbor2.dumps({1: 3, 3: RS256, -1: n, -2: numbers.e.to_bytes(3, "big")})

    def sign(self, data: bytes) -> bytes:
        if self.alg == ED25519:
            return bytes(self.private.sign(data))
        if self.alg == ES256:
            return bytes(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return bytes(self.private.sign(data, padding.PKCS1v15(), hashes.SHA256()))


def new_private_key(alg: int) -> Any:
    if alg == ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if alg == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Authenticator:
    """One device's authenticator: its keys, by credential id."""

    origin: str = ORIGIN
    rp_id: str = "localhost"
    alg: int = ES256
    verifies_user: bool = True
    keys: dict[bytes, Key] = field(default_factory=dict)

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": False}
        ).encode()

    def _flags(self, attested: bool) -> int:
        return 0x01 | (0x04 if self.verifies_user else 0) | (0x40 if attested else 0)

    def create(self, options: dict[str, Any], *, reuse: bytes | None = None) -> dict[str, Any]:
        """The credential JSON that the twin's passkey.js posts after ``credentials.create``;
        ``reuse`` makes it answer with a credential id it already holds, as no honest one would."""
        algs = [p["alg"] for p in options["pubKeyCredParams"]]
        assert self.alg in algs, f"the twin did not offer algorithm {self.alg}: {algs}"
        assert options["authenticatorSelection"]["residentKey"] == "required"
        assert options["authenticatorSelection"]["userVerification"] == "required"
        excluded = {unb64url(c["id"]) for c in options.get("excludeCredentials", [])}
        assert reuse or not excluded & set(self.keys), "this authenticator holds a passkey"
        credential_id = reuse or os.urandom(32)
        key = Key(self.alg, new_private_key(self.alg), unb64url(options["user"]["id"]))
        self.keys[credential_id] = key
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([self._flags(attested=True)])
            + struct.pack(">I", key.counter)
            + bytes(16)  # aaguid
            + struct.pack(">H", len(credential_id))
            + credential_id
            + key.cose()
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(
                    self._client_data("webauthn.create", options["challenge"])
                ),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        }

    def get(self, options: dict[str, Any], *, counter: int | None = None) -> dict[str, Any]:
        """The credential JSON posted after ``credentials.get`` (the first key it holds)."""
        assert options["userVerification"] == "required"
        credential_id, key = next(iter(self.keys.items()))
        key.counter = key.counter + 1 if counter is None else counter
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([self._flags(attested=False)])
            + struct.pack(">I", key.counter)
        )
        client_data = self._client_data("webauthn.get", options["challenge"])
        signature = key.sign(auth_data + hashlib.sha256(client_data).digest())
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(key.user_handle),
            },
            "clientExtensionResults": {},
        }
