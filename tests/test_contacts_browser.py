"""The Contacts experience in a real browser (Debian's chromium), between two real twins: an
invite with its QR code, the public invite page handing the invite to the visitor's own twin,
a request with its note and invite label, accepting it, the safety number both sides see,
verifying, trust, vouches and reputation, a delivery that fails while the other twin is down and
goes through on "Retry now", blocking and unblocking, errors in words, and a phone-sized screen;
screenshots go to tests/screenshots."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from browser import authenticator, chromium, screenshot
from conftest import Process, stop_twin, twin_command, wait_for
from playwright.sync_api import Browser, Locator, Page, Response, expect
from test_browser import create_passkey, setup_link

from twin.account import qr_svg

pytestmark = pytest.mark.slow

SAFETY_NUMBER = re.compile(r"^\d{5}( \d{5}){11}$")
NOTE = "Charles <b>from</b> the Analytical Society.\nWe met at the soirée."
ACROSS = 10_000  # ms: what crosses from one twin to the other, and the page's next poll


def local(process: Process) -> str:
    """The twin's address as its owner's browser opens it (passkeys need a host name)."""
    return process.url.replace("127.0.0.1", "localhost")


def name_twin(process: Process, name: str) -> None:
    made = subprocess.run(
        twin_command(
            "token", "create", "--scope", "profile:write", "--data-dir", str(process.data_dir)
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    owner = {"Authorization": f"Bearer {made.stdout.split()[-1]}"}
    named = httpx.put(
        f"{process.url}/api/profile/", json={"display_name": name, "bio": ""}, headers=owner
    )
    assert named.is_success, named.text


def open_contacts(
    browser: Browser, process: Process, errors: list[str], who: str, *, allow: bool = True
) -> Page:
    """A browser of its own for the owner of ``process``: a passkey, then Contacts allowed
    (unless ``allow`` is False: then it is allowed on the way, following an invite)."""
    context = browser.new_context(viewport={"width": 1100, "height": 820})
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(f"{who}: {error}"))
    authenticator(page)
    create_passkey(page, setup_link(process.output()))
    if not allow:
        return page
    page.goto(local(process) + "/x/contacts/")
    expect(page.get_by_role("heading", name="Allow Contacts?")).to_be_visible()
    page.get_by_role("button", name="Allow").click()
    expect(page.get_by_role("heading", name="No contacts yet")).to_be_visible()
    return page


def token_of(page: Page) -> dict[str, str]:
    token = page.locator('meta[name="twin-token"]').get_attribute("content")
    return {"Authorization": f"Bearer {token}"}


def person(page: Page, name: str) -> Locator:
    return page.locator("#people-list li.person").filter(
        has=page.locator("a.name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


def invite_made(response: Response) -> bool:
    return response.request.method == "POST" and response.url.endswith("/contacts/invites")


def calm(page: Page) -> None:
    """Dismiss the toast, so a screenshot shows the page under it."""
    if page.locator("#toast").is_visible():
        page.get_by_role("button", name="Dismiss").click()


def open_person(page: Page, name: str) -> None:
    page.get_by_role("button", name=re.compile("^Contacts")).click()
    person(page, name).locator("a.name").click()
    expect(page.locator("#contact-name")).to_have_text(name)


@contextmanager
def restarted(process: Process) -> Iterator[Process]:
    """``process``'s twin started again on the same port and data directory (so its address
    is unchanged and its peers are not told of a new one)."""
    port = process.url.rsplit(":", 1)[1]
    log = process.log.with_name(f"serve-{port}-again.log")
    with log.open("w") as handle:
        proc = subprocess.Popen(
            twin_command("serve", "--data-dir", str(process.data_dir), "--port", port),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TWIN_RATE_LIMIT": "0"},
            text=True,
        )
    again = replace(process, proc=proc, log=log)

    def up() -> bool:
        assert proc.poll() is None, again.output()
        try:
            return httpx.get(again.url + "/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, what="the twin to answer again")
        yield again
    finally:
        stop_twin(again)


def test_two_twins_connect_verify_vouch_and_block(serve: Any) -> None:
    ada, charles = serve(), serve()
    errors: list[str] = []
    ada_did = httpx.get(ada.url + "/api/health").json()["did"]

    with chromium() as browser:
        pa = open_contacts(browser, ada, errors, "ada")
        pc = open_contacts(browser, charles, errors, "charles", allow=False)

        # Without a display name, an invite would say "someone": the page says so.
        pa.get_by_role("button", name="Invite", exact=True).click()
        expect(pa.locator("#me-nameless")).to_be_visible()
        name_twin(ada, "Ada Lovelace")
        name_twin(charles, "Charles Babbage")
        pa.reload()
        expect(pa.locator("#me-line")).to_contain_text("Ada Lovelace")
        expect(pa.locator("#me-nameless")).to_be_hidden()

        # Ada makes an invite: the link the twin made, with its QR code, listed as open.
        pa.locator("#invite-label").fill("Charles")
        with pa.expect_response(invite_made) as made:
            pa.get_by_role("button", name="Make an invite").click()
        invite = made.value.json()
        link = pa.locator("#invite-link")
        expect(link).to_have_value(invite["link"])
        assert invite["link"].startswith(local(ada) + "/connect#twin-invite:")
        qr = pa.locator("#invite-qr")
        expect(qr).to_be_visible()
        assert qr.get_attribute("src") == invite["qr"] == qr_svg(invite["link"])
        wait_for(lambda: qr.evaluate("img => img.naturalWidth") > 0, what="the QR code drawn")
        pa.get_by_role("button", name="Copy", exact=True).click()
        expect(pa.locator("#invite-copied")).not_to_be_empty()
        listed = pa.locator("#invite-list li.invite")
        expect(listed).to_have_count(1)
        expect(listed).to_contain_text("Charles")
        expect(listed).to_contain_text("Open until")
        calm(pa)
        screenshot(pa, "contacts-invite")

        # Charles opens the link: Ada's public page sends him to his own twin, which asks.
        pc.goto(invite["link"])
        expect(pc.get_by_role("heading", name="Ada Lovelace invites you")).to_be_visible()
        pc.locator("#twin").fill(local(charles))
        pc.get_by_role("button", name="Open in my twin").click()
        # Contacts was never allowed on his twin: it asks first, and the invite survives that
        expect(pc.get_by_role("heading", name="Allow Contacts?")).to_be_visible()
        pc.get_by_role("button", name="Allow").click()
        pc.wait_for_url(re.compile(re.escape(local(charles)) + r"/x/contacts/#invite="))
        expect(pc.locator("#use-who")).to_have_text("Connect with Ada Lovelace?")
        expect(pc.locator("#use-from")).to_contain_text(local(ada))
        expect(pc.locator("#use-invite")).to_have_value(invite["code"])
        pc.locator("#use-note").fill(NOTE)
        pc.get_by_role("button", name="Connect with Ada Lovelace").click()
        expect(pc.locator("#contact-name")).to_have_text("Ada Lovelace")
        expect(pc.locator("#contact-status")).to_have_text("Waiting for them to accept")
        assert "invite=" not in pc.url  # the used invite leaves the address bar

        # Ada's page shows the request, with his note (as text) and the invite he used.
        pa.get_by_role("button", name=re.compile("^Contacts")).click()
        request = pa.locator("#request-list li.request")
        expect(request).to_contain_text("Charles Babbage wants to connect", timeout=ACROSS)
        expect(request).to_contain_text("Through your invite “Charles”")
        expect(request.locator(".note-text")).to_have_text(NOTE)
        assert request.locator("b").count() == 0
        expect(pa.locator("#request-count")).to_have_text("1")
        calm(pa)
        screenshot(pa, "contacts-request")
        pa.get_by_role("button", name="Accept Charles Babbage").click()
        expect(person(pa, "Charles Babbage")).to_contain_text("connected")
        expect(pa.locator("#requests")).to_be_hidden()
        pa.get_by_role("button", name="Invite", exact=True).click()
        expect(listed).to_contain_text("Used")

        # Both see each other connected, with the same safety number.
        expect(pc.locator("#contact-status")).to_have_text("Connected", timeout=ACROSS)
        open_person(pa, "Charles Babbage")
        number = pa.locator("#safety-number").get_attribute("data-number") or ""
        assert SAFETY_NUMBER.match(number), number
        expect(pa.locator("#safety-number .group")).to_have_count(12)
        assert pc.locator("#safety-number").get_attribute("data-number") == number
        expect(pc.locator("#safety-number")).to_have_text(number.replace(" ", ""))

        # Charles compared it with Ada on a call: he marks her verified, and trusts her a lot.
        pc.get_by_role("button", name="Mark verified").click()
        expect(pc.locator("#contact-verified")).to_be_visible()
        expect(pc.locator("#safety-state")).to_contain_text("verified")
        pc.locator("#about-trust").select_option(label="a lot")
        pc.get_by_role("button", name="Save", exact=True).click()
        expect(pc.locator("#about-status")).to_have_text("Saved.")
        pc.get_by_role("button", name=re.compile("^Contacts")).click()
        expect(person(pc, "Ada Lovelace")).to_contain_text("✓ verified")
        expect(person(pc, "Ada Lovelace")).to_contain_text("trust: a lot")
        expect(person(pc, "Ada Lovelace").locator(".health")).to_contain_text("All delivered")

        # He vouches for her; his page shows his word in her reputation.
        person(pc, "Ada Lovelace").locator("a.name").click()
        pc.locator("#vouch-topic").fill("Writes programs")
        pc.locator("#vouch-level").select_option(label="I vouch strongly (+2)")
        pc.locator("#vouch-comment").fill("Wrote the first program for my engine.")
        pc.get_by_role("button", name="Vouch", exact=True).click()
        expect(pc.locator("#vouch-status")).to_contain_text("Vouched")
        topic = pc.locator('#contact-reputation .topic[data-topic="writes programs"]')
        expect(topic.locator(".score")).to_have_text("+2.0 · strongly vouched for")
        expect(topic.locator(".said-item")).to_contain_text("You vouch strongly")
        expect(topic.locator(".comment")).to_have_text("Wrote the first program for my engine.")
        mine = pc.locator("#contact-vouches")
        expect(mine).to_contain_text("You vouch strongly on writes programs")
        calm(pc)
        screenshot(pc, "contacts-contact")

        # On Ada's twin, what her contacts say about her: Charles's vouch counts as much as
        # she trusts him.
        pa.locator("#about-trust").select_option(label="some")
        pa.get_by_role("button", name="Save", exact=True).click()
        expect(pa.locator("#about-status")).to_have_text("Saved.")
        pa.get_by_role("button", name="Vouches", exact=True).click()
        expect(pa.locator("#my-did")).to_have_text(ada_did)
        pa.locator("#lookup-did").fill(ada_did)
        pa.get_by_role("button", name="Look up", exact=True).click()
        expect(pa.locator("#lookup-heading")).to_have_text(
            "What you and your contacts say about you"
        )
        said = pa.locator('#lookup-topics .topic[data-topic="writes programs"] .said-item')
        expect(said).to_contain_text("Charles Babbage vouches strongly", timeout=ACROSS)
        expect(said).to_contain_text("you trust them some, so it counts 50%")
        expect(said.locator(".comment")).to_have_text("Wrote the first program for my engine.")
        pa.locator("#lookup-did").fill("did:key:nonsense")
        pa.get_by_role("button", name="Look up", exact=True).click()
        expect(pa.locator("#lookup-error")).to_contain_text("A did looks like did:key:z6Mk")

        # Ada's twin goes down: Charles's next vouch waits, and his page says why and when
        # it tries again; his twin keeps trying, and "Retry now" sends it once she is back.
        stop_twin(ada)
        pc.locator("#vouch-topic").fill("Pays her debts")
        pc.locator("#vouch-level").select_option(label="I have doubts (−1)")
        pc.get_by_role("button", name="Vouch", exact=True).click()
        expect(pc.locator("#vouch-status")).to_contain_text("Vouched")
        expect(pc.locator("#delivery-state")).to_have_text(
            "Failing: 1 message waiting", timeout=ACROSS
        )
        expect(pc.locator("#delivery-detail")).to_contain_text("cannot connect to " + local(ada))
        expect(pc.locator("#delivery-detail")).to_contain_text("Next try at")
        expect(pa.locator("#notice")).to_contain_text("Can't reach your twin", timeout=ACROSS)
        ada_id = pc.evaluate("() => location.hash.split('/')[1]")
        charles_auth = token_of(pc)
        pc.get_by_role("button", name=re.compile("^Contacts")).click()
        health = person(pc, "Ada Lovelace").locator(".health")
        expect(health).to_have_attribute("data-kind", "failing")
        expect(health).to_contain_text("Failing: 1 message waiting")
        expect(health).to_contain_text("Next try at")
        calm(pc)
        screenshot(pc, "contacts-list")

        def delivery() -> dict[str, Any]:
            view = httpx.get(f"{charles.url}/api/contacts/{ada_id}", headers=charles_auth)
            return dict(view.json()["delivery"])

        later = wait_for(
            lambda: (d := delivery())["retry_at"] and d["retry_at"] - time.time() > 3 and d,
            what="the next try to be seconds away",
        )
        with restarted(ada) as ada:
            pc.get_by_role("button", name="Retry now for Ada Lovelace").click()
            expect(health).to_have_attribute("data-kind", "ok", timeout=ACROSS)
            expect(health).to_contain_text("All delivered")
            assert delivery()["last_delivered"] < later["retry_at"]  # sooner than it would have
            expect(pa.locator("#notice")).to_be_hidden(timeout=ACROSS)
            doubts = pa.locator('#lookup-topics .topic[data-topic="pays her debts"]')
            pa.get_by_role("button", name="What do my contacts say about me?").click()
            expect(doubts.locator(".said-item")).to_contain_text("Charles Babbage has doubts")
            expect(doubts.locator(".score")).to_have_text("−1.0 · doubted")
            calm(pa)
            screenshot(pa, "contacts-reputation")

            # Ada blocks Charles, then unblocks him.
            open_person(pa, "Charles Babbage")
            pa.get_by_role("button", name="Block", exact=True).click()
            pa.locator("#confirm-dialog").get_by_role("button", name="Block").click()
            expect(pa.locator("#contact-status")).to_have_text("Blocked")
            expect(pa.locator("#contact-unblock")).to_be_visible()
            pa.get_by_role("button", name=re.compile("^Contacts")).click()
            expect(person(pa, "Charles Babbage")).to_contain_text("blocked")
            person(pa, "Charles Babbage").locator("a.name").click()
            pa.get_by_role("button", name="Unblock").click()
            expect(pa.locator("#contact-status")).to_have_text("Connected")
            expect(pa.locator("#toast")).to_contain_text("Unblocked Charles Babbage")

            # Errors say what went wrong and what to do.
            pc.get_by_role("button", name="Use an invite", exact=True).first.click()
            pc.locator("#use-invite").fill(invite["link"])
            pc.get_by_role("button", name="Send a contact request").click()
            expect(pc.locator("#use-error")).to_have_text(
                "No request was sent. Ada Lovelace is already a contact."
            )
            pc.locator("#use-invite").fill("hello, this is no invite")
            pc.get_by_role("button", name="Send a contact request").click()
            expect(pc.locator("#use-error")).to_contain_text("paste the whole link or code")

            # A phone-sized screen: one column, nothing wider than the screen.
            phone = pc.context.new_page()
            phone.on("pageerror", lambda error: errors.append(f"phone: {error}"))
            phone.set_viewport_size({"width": 390, "height": 800})
            phone.goto(local(charles) + "/x/contacts/")
            expect(person(phone, "Ada Lovelace")).to_contain_text("All delivered")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            person(phone, "Ada Lovelace").locator("a.name").click()
            expect(phone.locator("#safety-number .group")).to_have_count(12)
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            screenshot(phone, "contacts-phone")

            # Signed out, an invite link still arrives: the login returns to Contacts, with it.
            pc.goto(local(charles) + "/")
            pc.get_by_role("button", name="Sign out").click()
            pc.goto(local(charles) + "/x/contacts/#invite=" + invite["code"])
            pc.wait_for_url(re.compile(r"/login\?next=/x/contacts/#invite="))
            pc.get_by_role("button", name="Sign in with a passkey").click()
            pc.wait_for_url(re.compile(re.escape(local(charles)) + r"/x/contacts/#invite="))
            expect(pc.locator("#use-invite")).to_have_value(invite["code"])

    assert not errors, errors
