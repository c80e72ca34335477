"""Idle memory: resident set of `twin serve` (fresh data dir, defaults) and of the bare app, and
of `twin serve` once the owner has signed in with a passkey (webauthn loads on the first
ceremony, never at start-up)."""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _procs import HOST, Server, bare_serve, free_port, twin_serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from authenticator import Authenticator, owner_headers, register_passkey  # noqa: E402

TARGET_MIB = 45.0
IDLE_SECONDS = 2.0


@dataclass(frozen=True)
class Memory:
    name: str
    rss_mib: float
    hwm_mib: float


def _idle(server: Server) -> Memory:
    server.wait_healthy()
    time.sleep(IDLE_SECONDS)  # a measurement of the idle state, not a synchronisation
    kib = server.memory_kib()
    return Memory(server.name, kib["VmRSS"] / 1024, kib["VmHWM"] / 1024)


async def _sign_in(port: int, setup_secret: str) -> None:
    """What the owner's browser does: create a passkey by the setup link, then sign in with it."""
    device = Authenticator(origin=f"http://localhost:{port}")
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
        made = await register_passkey(client, device, setup_secret)
        assert made.status_code == 200, made.text
        headers = owner_headers(origin=device.origin)
        start = (await client.post("/auth/login/options", json={}, headers=headers)).json()
        body = {"ceremony": start["ceremony"], "credential": device.get(start["publicKey"])}
        assert (await client.post("/auth/login", json=body, headers=headers)).status_code == 200


def measure(scratch: Path) -> list[Memory]:
    """The twin first (every built-in loaded, default settings but a free port), then bare,
    then a twin after one passkey registration and one sign-in."""
    port = free_port()
    with Server.spawn(
        "twin serve", twin_serve(scratch / "idle-twin", port), port, scratch / "idle-twin.log"
    ) as twin:
        result = [_idle(twin)]
    port = free_port()
    with Server.spawn(
        "bare Starlette+uvicorn", bare_serve(port), port, scratch / "idle-bare.log"
    ) as bare:
        result.append(_idle(bare))
    port = free_port()
    log = scratch / "signed-in-twin.log"
    with Server.spawn(
        "twin serve, after a sign-in", twin_serve(scratch / "signed-in", port), port, log
    ) as signed:
        signed.wait_healthy()
        secret = re.search(r"/setup/([A-Za-z0-9_-]+)", log.read_text())
        assert secret, log.read_text()
        asyncio.run(_sign_in(port, secret.group(1)))
        result.append(_idle(signed))
    return result


def report(results: list[Memory]) -> list[str]:
    lines = [f"{'process':<28} {'VmRSS':>9} {'VmHWM':>9}"]
    for m in results:
        lines.append(f"{m.name:<28} {m.rss_mib:>5.1f} MiB {m.hwm_mib:>5.1f} MiB")
    twin = results[0]
    verdict = "meets" if twin.rss_mib <= TARGET_MIB else "MISSES"
    lines.append(
        f"target: twin VmRSS <= {TARGET_MIB:g} MiB after {IDLE_SECONDS:g} s idle: "
        f"{verdict} it; twin - bare = {twin.rss_mib - results[1].rss_mib:+.1f} MiB"
    )
    lines.append(
        f"the first passkey ceremony adds {results[2].rss_mib - twin.rss_mib:+.1f} MiB "
        "(webauthn, cryptography, cbor2), kept until the twin restarts"
    )
    return lines


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        print("\n".join(report(measure(Path(tmp)))))
