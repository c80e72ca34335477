"""Real twin processes that know each other, for tests of what passes between twins: a Peer
is a `twin serve` process with its owner's token; befriend() runs the whole invite flow."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

import httpx
from conftest import Process, twin_command, wait_for

from twin.identity import Identity, read_key_file


@dataclass
class Peer:
    """A twin process with an owner's token, and what the tests ask of it."""

    process: Process
    name: str
    token: str = ""
    did: str = ""
    named: bool = True  # False: a twin that has its profile already (an imported one)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.connect()
        self.token = subprocess.run(
            twin_command(
                "token", "create", "--scope", "*", "--data-dir", str(self.process.data_dir)
            ),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        self.did = self.get("/api/health")["did"]
        if self.named:
            self.call("PUT", "/api/profile", json={"display_name": self.name})

    def connect(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        self.client = httpx.Client(base_url=self.process.url, timeout=15)

    @property
    def url(self) -> str:
        return self.process.url

    def call(self, method: str, path: str, **options: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self.client.request(method, path, headers=headers, **options)

    def get(self, path: str) -> Any:
        response = self.call("GET", path)
        assert response.status_code == 200, response.text
        return response.json()

    def identity(self) -> Identity:
        """The twin's own key, read from its data directory (for crafting envelopes as it)."""
        return read_key_file(self.process.data_dir / "identity.json").unlock(None)

    def contact(self, other: Peer) -> dict[str, Any] | None:
        for person in self.get("/api/contacts/")["contacts"]:
            if person["did"] == other.did:
                return dict(person)
        return None

    def note(self, to: Peer, text: str) -> str:
        response = self.call(
            "POST", "/api/guestbook/send", json={"to": to.did, "author": self.name, "text": text}
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def state(self, sent: str) -> str:
        return str(self.get(f"/api/guestbook/sent/{sent}")["state"])

    def entries(self) -> list[str]:
        """The guestbook's texts, oldest first."""
        return [e["text"] for e in reversed(self.get("/api/guestbook/entries"))]

    def inbox(self, body: object) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            "/p2p/v1/inbox", content=raw, headers={"Content-Type": "application/json"}
        )


def befriend(a: Peer, b: Peer) -> None:
    """A invites B, B asks with the invite, A accepts: both hold each other's key."""
    invite = a.call("POST", "/api/contacts/invites", json={"label": f"for {b.name}"})
    assert invite.status_code == 201, invite.text
    asked = b.call("POST", "/api/contacts/connect", json={"invite": invite.json()["link"]})
    assert asked.status_code == 201, asked.text
    assert asked.json()["status"] == "requested"
    request = wait_for(lambda: a.contact(b), 15, f"{b.name}'s request to reach {a.name}")
    assert request["status"] == "incoming"
    assert request["invite"] == f"for {b.name}"
    accepted = a.call("POST", f"/api/contacts/{request['id']}/accept")
    assert accepted.status_code == 200, accepted.text
    wait_for(
        lambda: (b.contact(a) or {}).get("status") == "connected", 15, f"{a.name}'s acceptance"
    )


def arrives(peer: Peer, text: str, timeout: float = 15) -> None:
    wait_for(lambda: text in peer.entries(), timeout, f"{text!r} in {peer.name}'s guestbook")
