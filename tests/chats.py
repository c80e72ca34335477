"""Three chat twins that are all contacts of one another, and the chat calls the process tests
make of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from conftest import start_twin, stop_twin, wait_for
from twins import Peer, befriend

NAMES = ("Ada", "Babbage", "Charles")


@contextmanager
def three_friends(root: Path) -> Iterator[tuple[Peer, Peer, Peer]]:
    """Ada, Babbage and Charles as `twin serve` processes, all contacts of one another."""
    processes = [start_twin(root, "--peer-backoff", "2") for _ in NAMES]
    peers: list[Peer] = []
    try:
        peers += [Peer(p, n) for p, n in zip(processes, NAMES, strict=True)]
        ada, babbage, charles = peers
        befriend(ada, babbage)
        befriend(babbage, charles)
        befriend(charles, ada)
        yield ada, babbage, charles
    finally:
        for peer in peers:  # a test may have restarted one
            peer.client.close()
            processes.append(peer.process)
        for process in processes:
            stop_twin(process)


def direct(peer: Peer, other: Peer) -> dict[str, Any]:
    response = peer.call("POST", "/api/chat/conversations", json={"with": other.did})
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def make_group(peer: Peer, name: str, *members: Peer) -> dict[str, Any]:
    response = peer.call(
        "POST", "/api/chat/groups", json={"name": name, "members": [m.did for m in members]}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def post(peer: Peer, conv: str, text: str, **extra: Any) -> httpx.Response:
    return peer.call(
        "POST", f"/api/chat/conversations/{conv}/messages", json={"text": text, **extra}
    )


def send(peer: Peer, conv: str, text: str, **extra: Any) -> dict[str, Any]:
    response = post(peer, conv, text, **extra)
    assert response.status_code == 201, response.text
    return dict(response.json())


def messages(peer: Peer, conv: str) -> list[dict[str, Any]]:
    """Every message of ``conv`` as ``peer`` holds it, oldest first (page by page); none
    while the conversation has not reached it."""
    found: list[dict[str, Any]] = []
    query = "limit=200"
    while True:
        response = peer.call("GET", f"/api/chat/conversations/{conv}/messages?{query}")
        if response.status_code == 404 and not found:
            return []
        assert response.status_code == 200, response.text
        page = response.json()
        found[:0] = page["messages"]
        if not page["more"]:
            return found
        query = f"limit=200&before={found[0]['id']}"


def texts(peer: Peer, conv: str) -> list[str]:
    return [m["text"] for m in messages(peer, conv) if m["kind"] == "text"]


def shows(peer: Peer, conv: str, wanted: list[str], timeout: float = 15) -> None:
    wait_for(
        lambda: texts(peer, conv)[-len(wanted) :] == wanted,
        timeout,
        f"{wanted!r} in {peer.name}'s conversation",
    )
