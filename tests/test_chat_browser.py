"""The Chat experience in a real browser (Debian's chromium), between three real twins: Ada and
Charles each in a browser of their own, Babbage a contact of both, talking over his API. A direct
chat both ways with unread counts, replies, reactions, an edit, a delete seen as a tombstone on
the other side and ticks that reach delivered and read; a file uploaded with its progress bar
and downloaded on the other side with the same bytes; hostile and right-to-left text shown as
text; a group with Babbage's message reaching both browsers, its members, an admin, a new name
and muting; a notification for a message that reaches Ada's tab in the background, through the
shell's page that holds Chat in a frame; and a phone-sized screen; screenshots go to
tests/screenshots."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import authenticator, chromium, screenshot
from conftest import Process, wait_for
from playwright.sync_api import Browser, Frame, FrameLocator, Locator, Page, expect
from test_browser import create_passkey, setup_link
from twins import Peer, befriend

pytestmark = pytest.mark.slow

ACROSS = 15_000  # ms: what crosses from one twin to another and comes back live
HOSTILE = (
    '<img src=x onerror=alert(1)> <script>alert("owned")</script> '
    "javascript:alert(2) [click me](javascript:alert(3)) https://example.org/safe"
)
RTL = "שלום Charles, מה שלומך?"
TOO_LARGE = (
    "an attachment is at most 100 MiB; this one is 120.0 MiB: share it from Files with a link "
    "instead"
)
# Headless chromium keeps every tab visible, and Playwright has no way to put one in the
# background: this stands in for the browser's page visibility (window.__hide), in the shell's
# page and in Chat's frame alike, and records the notifications the shell's page shows.
BACKGROUND = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true, get: () => (hidden ? "hidden" : "visible"),
  });
  window.__hide = (yes) => { hidden = yes; document.dispatchEvent(new Event("visibilitychange")); };
  if (window.top !== window) return;
  const Real = window.Notification;
  const shown = (window.__notifications = []);
  window.Notification = class extends Real {
    constructor(title, options) { super(title, options); shown.push(this); }
  };
  Object.defineProperty(window.Notification, "permission", { get: () => Real.permission });
  window.Notification.requestPermission = () => Real.requestPermission();
})();
"""
PLANS = b"".join(b"line %05d of the plans for the analytical engine\n" % i for i in range(6000))


def landscape(width: int = 180, height: int = 120) -> bytes:
    """A PNG of a green-to-blue sky over an orange field, built row by row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b""
    for y in range(height):
        pixel = bytes((230, 120, 40)) if y > height * 2 // 3 else bytes((60, 140 + y, 200))
        rows += b"\x00" + pixel * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def local(process: Process) -> str:
    """The twin's address as its owner's browser opens it (passkeys need a host name)."""
    return process.url.replace("127.0.0.1", "localhost")


def open_chat(browser: Browser, peer: Peer, errors: list[str], who: str) -> Page:
    """A browser of its own for ``peer``'s owner: a passkey, then Chat allowed; the tab holds
    the shell's page, with Chat in its frame."""
    context = browser.new_context(viewport={"width": 1200, "height": 800}, accept_downloads=True)
    context.add_init_script(BACKGROUND)
    tab = context.new_page()
    tab.on("pageerror", lambda error: errors.append(f"{who}: {error}"))
    tab.on("dialog", lambda dialog: (errors.append(f"{who}: {dialog.message}"), dialog.dismiss()))
    authenticator(tab)
    create_passkey(tab, setup_link(peer.process.output()))
    tab.goto(local(peer.process) + "/x/chat/")
    expect(tab.get_by_role("heading", name="Allow Chat?")).to_be_visible()
    tab.get_by_role("button", name="Allow").click()
    page = chat(tab)
    expect(page.get_by_role("heading", name="No conversations yet")).to_be_visible()
    expect(page.locator("#live-text")).to_have_text("Live")
    return tab


def chat(tab: Page) -> FrameLocator:
    """Chat's own page, in the frame of the shell's page that the tab shows."""
    return tab.frame_locator("iframe#experience")


def inner(tab: Page) -> Frame:
    frames = tab.main_frame.child_frames
    assert len(frames) == 1, [f.url for f in frames]
    return frames[0]


def to_background(tab: Page, hidden: bool) -> None:
    """Put the tab in the background (or bring it back), as its pages see it (BACKGROUND)."""
    for frame in (tab.main_frame, inner(tab)):
        frame.evaluate("hidden => window.__hide(hidden)", hidden)


def notifications(tab: Page) -> list[list[str]]:
    shown: list[list[str]] = tab.evaluate(
        "window.__notifications.map(n => [n.title, n.body, n.tag])"
    )
    return shown


def width(page: FrameLocator) -> int:
    scroll: int = page.locator("html").evaluate("html => html.scrollWidth")
    return scroll


def conversation(page: FrameLocator, name: str) -> Locator:
    return page.locator("#conversation-list li.conv").filter(
        has=page.locator(".conv-name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


def message(page: FrameLocator, text: str) -> Locator:
    return page.locator("#message-list li.message").filter(has_text=text)


def act(page: FrameLocator, item: Locator, name: str) -> None:
    """Use one of a message's action buttons (shown on hover)."""
    item.locator(".bubble").hover()
    item.get_by_role("button", name=name, exact=True).click()


def send(page: FrameLocator, text: str, shown: str | None = None) -> Locator:
    """Write ``text`` and press Enter; its message (showing ``shown``) on the right."""
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")
    expect(page.locator("#text")).to_have_value("")
    mine = page.locator("#message-list li.message.mine").filter(has_text=shown or text)
    expect(mine).to_be_visible()
    return mine


def calm(tab: Page) -> None:
    """Dismiss the toast and move the mouse away, so a screenshot shows the page as it rests."""
    page = chat(tab)
    if page.locator("#toast").is_visible():
        page.get_by_role("button", name="Dismiss").click()
    tab.mouse.move(0, 0)


@pytest.fixture
def peers(serve: Any) -> Iterator[list[Peer]]:
    """Ada, Charles and Babbage: three twins, each a contact of the other two."""
    made = [Peer(serve(), name) for name in ("Ada Lovelace", "Charles Dickens", "Babbage")]
    yield made
    for peer in made:
        peer.client.close()


def test_three_twins_chat_directly_and_in_a_group(peers: list[Peer], tmp_path: Path) -> None:
    ada, charles, babbage = peers
    befriend(ada, charles)
    befriend(ada, babbage)
    befriend(charles, babbage)
    errors: list[str] = []

    with chromium() as browser:
        ta = open_chat(browser, ada, errors, "ada")
        tc = open_chat(browser, charles, errors, "charles")
        pa, pc = chat(ta), chat(tc)

        # Ada turns notifications on (her browser is told to allow them when asked).
        expect(pa.locator("#notify-offer")).to_be_visible()
        ta.context.grant_permissions(["notifications"], origin=local(ada.process))
        pa.get_by_role("button", name="Turn on notifications").click()
        expect(pa.locator("#notify-state")).to_contain_text("Notifications are on")
        expect(pa.locator("#notify-offer")).to_be_hidden()
        expect(ta).to_have_title("Chat")

        # Ada starts a chat with Charles, picked from her contacts.
        pa.get_by_role("button", name="New chat").click()
        pa.locator("#new-dialog").get_by_role("button", name="Charles Dickens").click()
        expect(pa.locator("#conversation-name")).to_have_text("Charles Dickens")
        expect(pa.locator("#messages-empty")).to_be_visible()
        hello = send(pa, "Hello *Charles*, are you there?", "Hello Charles, are you there?")
        expect(hello.locator(".body em")).to_have_text("Charles")
        expect(hello).to_have_attribute("data-status", "delivered", timeout=ACROSS)
        expect(hello.locator(".ticks")).to_have_text("✓✓")

        # Charles sees it in his list, unread, and opens it: Ada's tick turns to read.
        ada_there = conversation(pc, "Ada Lovelace")
        expect(ada_there.locator(".unread")).to_have_text("1", timeout=ACROSS)
        expect(ada_there.locator(".conv-last")).to_contain_text("are you there?")
        ada_there.locator("a").click()
        expect(pc.locator("#conversation-name")).to_have_text("Ada Lovelace")
        theirs = message(pc, "are you there?")
        expect(theirs).to_have_class(re.compile(r"\btheirs\b"))
        expect(theirs.locator(".body em")).to_have_text("Charles")
        expect(ada_there.locator(".unread")).to_have_count(0)
        expect(hello).to_have_attribute("data-status", "read", timeout=ACROSS)

        # Ada's address follows Chat's frame; she goes back to her list from the address bar
        # and her tab goes to the background.
        expect(ta).to_have_url(re.compile(r"/x/chat/#c/[^/]+$"))
        ta.evaluate("location.hash = '#'")
        expect(pa.locator("#nothing-open")).to_be_visible()
        to_background(ta, True)

        # He replies to it: the quote bar, then the quote in the message on both sides.
        act(pc, theirs, "Reply")
        expect(pc.locator("#reply-bar")).to_be_visible()
        expect(pc.locator("#reply-who")).to_have_text("Replying to Ada Lovelace")
        answer = send(pc, "Yes, **here**.", "Yes, here.")
        expect(pc.locator("#reply-bar")).to_be_hidden()
        expect(answer.locator(".reply-quote")).to_contain_text("Hello Charles, are you there?")

        # Ada's browser shows a notification of it, and her tab's title counts it; clicking the
        # notification brings her back to that conversation, read.
        wait_for(lambda: notifications(ta), ACROSS / 1000, "a notification in Ada's browser")
        [(title, body, tag)] = notifications(ta)
        assert (title, body) == ("Charles Dickens", "Yes, here.")
        expect(ta).to_have_title("(1) Chat")
        to_background(ta, False)
        ta.evaluate("window.__notifications[0].dispatchEvent(new Event('click'))")
        expect(pa.locator("#conversation-name")).to_have_text("Charles Dickens")
        expect(ta).to_have_url(re.compile(f"/x/chat/#c/{re.escape(tag)}$"))
        expect(ta).to_have_title("Chat")
        got = message(pa, "Yes, here.")
        expect(got.locator(".reply-quote")).to_have_text(
            "YouHello Charles, are you there?", timeout=ACROSS
        )
        expect(got.locator(".body strong")).to_have_text("here")

        # Ada reacts with 👍; Charles adds his, by the chip.
        act(pa, got, "React")
        pa.get_by_role("menuitem", name="React with 👍").click()
        chip = got.locator(".chip")
        expect(chip).to_have_text("👍 1")
        expect(chip).to_have_attribute("aria-pressed", "true")
        their_chip = answer.locator(".chip")
        expect(their_chip).to_have_text("👍 1", timeout=ACROSS)
        expect(their_chip).to_have_attribute("aria-pressed", "false")
        their_chip.click()
        expect(their_chip).to_have_text("👍 2")
        expect(their_chip).to_have_attribute("aria-pressed", "true")
        expect(chip).to_have_text("👍 2", timeout=ACROSS)

        # An edit, marked on the other side; a delete, a tombstone on both.
        send(pa, "Let us meet at the Royal Society at eight")
        meet = message(pa, "Let us meet")
        expect(message(pc, "at eight")).to_be_visible(timeout=ACROSS)
        act(pa, meet, "Edit")
        expect(pa.locator("#edit-bar")).to_be_visible()
        expect(pa.locator("#text")).to_have_value("Let us meet at the Royal Society at eight")
        pa.locator("#text").fill("Let us meet at the Royal Society at nine")
        pa.locator("#text").press("Enter")
        expect(pa.locator("#edit-bar")).to_be_hidden()
        expect(meet).to_contain_text("at nine")
        expect(meet.locator(".edited")).to_have_text("(edited)")
        edited = message(pc, "at nine")
        expect(edited.locator(".edited")).to_have_text("(edited)", timeout=ACROSS)
        expect(message(pc, "at eight")).to_have_count(0)

        oops = send(pa, "The engine is a steam toy")
        expect(message(pc, "steam toy")).to_be_visible(timeout=ACROSS)
        act(pa, oops, "Delete")
        pa.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
        expect(message(pa, "steam toy")).to_have_count(0)
        expect(pa.locator("#message-list .deleted .tombstone")).to_have_text(
            "This message was deleted"
        )
        expect(message(pc, "steam toy")).to_have_count(0, timeout=ACROSS)
        expect(pc.locator("#message-list .deleted .tombstone")).to_have_text(
            "This message was deleted"
        )
        expect(pa.locator("#message-list li.day")).to_have_text(["Today"])
        calm(ta)
        screenshot(ta, "chat-direct")

        # A file the twin refuses as too large: the page says why, in the twin's words.
        refusal = {"error": {"code": "too_large", "message": TOO_LARGE}}
        ta.route(
            "**/api/chat/conversations/*/attachments?*",
            lambda route: route.fulfill(
                status=413, json=refusal, headers={"Access-Control-Allow-Origin": "*"}
            ),
        )
        huge = tmp_path / "engine.mov"
        huge.write_bytes(b"not really 120 MiB")
        pa.locator("#picker").set_input_files(huge)
        expect(pa.locator("#compose-error")).to_have_text(
            "Could not upload “engine.mov”. " + TOO_LARGE[0].upper() + TOO_LARGE[1:] + "."
        )
        expect(pa.locator("#pending li")).to_have_count(0)
        ta.unroute("**/api/chat/conversations/*/attachments?*")

        # A file: the upload is slowed down so its progress bar is seen moving; then it is sent
        # and Charles's twin fetches it; he downloads the same bytes.
        cdp = ta.context.new_cdp_session(inner(ta))  # Chat's frame runs in a process of its own
        cdp.send("Network.enable")
        slow = {"offline": False, "latency": 0, "downloadThroughput": -1}
        cdp.send("Network.emulateNetworkConditions", {**slow, "uploadThroughput": 120_000})
        plans = tmp_path / "plans.txt"
        plans.write_bytes(PLANS)
        pa.locator("#picker").set_input_files(plans)
        bar = pa.locator("#pending .uploading progress")
        expect(bar).to_be_visible()
        wait_for(
            lambda: 10 <= float(bar.get_attribute("value") or 0) < 100, 10, "the upload half way"
        )
        pa.locator("#text").fill("The plans, as promised")
        calm(ta)
        screenshot(ta, "chat-upload")
        ready = pa.locator('#pending li[data-state="ready"]')
        expect(ready).to_contain_text("plans.txt", timeout=ACROSS)
        expect(ready).to_contain_text("ready to send")
        cdp.send("Network.emulateNetworkConditions", {**slow, "uploadThroughput": -1})
        pa.locator("#text").press("Enter")
        sent = message(pa, "The plans, as promised")
        expect(sent.locator(".file-link")).to_have_text("plans.txt")
        expect(pa.locator("#pending li")).to_have_count(0)
        arrived = message(pc, "The plans, as promised")
        expect(arrived.locator(".attachment")).to_have_attribute(
            "data-state", "ready", timeout=ACROSS
        )
        expect(arrived.locator(".size")).to_have_text("293 KB")
        with tc.expect_download() as download:
            arrived.get_by_role("link", name="Download plans.txt").click()
        assert download.value.suggested_filename == "plans.txt"
        assert Path(download.value.path()).read_bytes() == PLANS

        # Hostile text stays text: no element is made of it, no script runs, only the
        # http(s) address is a link; right-to-left text runs right to left.
        send(pa, HOSTILE)
        send(pa, RTL)
        hostile = message(pc, "onerror").locator(".body")
        expect(hostile).to_have_text(HOSTILE, timeout=ACROSS)
        assert hostile.locator("img, script").count() == 0
        links = hostile.locator("a")
        expect(links).to_have_count(1)
        expect(links).to_have_attribute("href", "https://example.org/safe")
        expect(links).to_have_attribute("target", "_blank")
        expect(links).to_have_attribute("rel", re.compile(r"\bnoopener\b"))
        rtl = message(pc, "שלום").locator(".body")
        expect(rtl).to_have_text(RTL, timeout=ACROSS)
        expect(rtl).to_have_attribute("dir", "auto")
        assert rtl.evaluate("body => getComputedStyle(body).direction") == "rtl"

        # Near the limit a counter shows; over it, nothing can be sent.
        pa.locator("#text").fill("x" * 3999 + "ש")
        expect(pa.locator("#counter")).to_have_text("4,000 / 4,000")
        expect(pa.get_by_role("button", name="Send")).to_be_enabled()
        pa.locator("#text").press("End")
        pa.locator("#text").press("!")
        expect(pa.locator("#counter")).to_have_text("4,001 / 4,000")
        expect(pa.get_by_role("button", name="Send")).to_be_disabled()
        pa.locator("#text").fill("")
        expect(pa.locator("#counter")).to_be_empty()

        # Charles blocks Ada from the chat's details: marked in the header, then unblocked.
        pc.get_by_role("button", name="Details").click()
        pc.get_by_role("button", name="Block Ada Lovelace").click()
        pc.locator("#confirm-dialog").get_by_role("button", name="Block").click()
        expect(pc.locator("#conversation-sub")).to_contain_text("blocked")
        expect(message(pc, "are you there?").locator(".blocked-mark")).to_have_text("blocked")
        pc.get_by_role("button", name="Unblock Ada Lovelace").click()
        expect(pc.locator("#conversation-sub")).not_to_contain_text("blocked")
        expect(pc.locator("#message-list .blocked-mark")).to_have_count(0)
        pc.get_by_role("button", name="Close the details").click()

        # A group: Ada makes it with Charles and Babbage.
        pa.get_by_role("button", name="New group").click()
        pa.locator("#group-name").fill("Engine Club")
        group_dialog = pa.locator("#group-dialog")
        group_dialog.get_by_label("Charles Dickens").check()
        group_dialog.get_by_label("Babbage").check()
        group_dialog.get_by_role("button", name="Create the group").click()
        expect(pa.locator("#conversation-name")).to_have_text("Engine Club")
        expect(pa.locator("#conversation-sub")).to_contain_text("3 members")
        expect(pa.locator("#message-list li.event").first).to_contain_text(
            "You created the group “Engine Club”"
        )
        club = conversation(pc, "Engine Club")
        expect(club).to_be_visible(timeout=ACROSS)
        club.locator("a").click()
        expect(pc.locator("#message-list li.event").first).to_contain_text(
            "Ada Lovelace created the group"
        )

        # Babbage writes to it over his twin's API: both browsers show it, with his name.
        def babbage_group() -> str | None:
            found = babbage.get("/api/chat/conversations")["conversations"]
            return next((c["id"] for c in found if c["name"] == "Engine Club"), None)

        group_id = wait_for(babbage_group, ACROSS / 1000, "the group to reach Babbage")
        posted = babbage.call(
            "POST",
            f"/api/chat/conversations/{group_id}/messages",
            json={"text": "Greetings from the _engine room_"},
        )
        assert posted.status_code == 201, posted.text
        picture = babbage.call(
            "POST",
            f"/api/chat/conversations/{group_id}/attachments?name=engine.png",
            content=landscape(),
        )
        assert picture.status_code == 201, picture.text
        posted = babbage.call(
            "POST",
            f"/api/chat/conversations/{group_id}/messages",
            json={"text": "", "attachments": [picture.json()["id"]]},
        )
        assert posted.status_code == 201, posted.text
        for page in (pa, pc):
            greeting = message(page, "Greetings from the engine room")
            expect(greeting.locator(".sender")).to_have_text("Babbage", timeout=ACROSS)
            expect(greeting.locator(".body em")).to_have_text("engine room")
            thumb = message(page, "engine.png").locator("img.thumb")
            expect(thumb).to_have_attribute("alt", "engine.png", timeout=ACROSS)
            expect(thumb).to_have_js_property("naturalWidth", 180)  # fetched and drawn
        count_me = send(pc, "Count me in")
        expect(message(pa, "Count me in").locator(".sender")).to_have_text(
            "Charles Dickens", timeout=ACROSS
        )
        expect(count_me.locator(".sender")).to_have_count(0)  # his own, on the right

        # Ada's group info: members with admin marks; she makes Charles an admin and renames it.
        pa.get_by_role("button", name="Group info").click()
        members = pa.locator("#member-list li.member")
        expect(members).to_have_count(3)
        expect(members.filter(has_text="Ada Lovelace (you)")).to_contain_text("admin")
        charles_row = members.filter(has_text="Charles Dickens")
        expect(charles_row.locator(".badge")).to_have_count(0)
        charles_row.get_by_role("button", name="Make admin: Charles Dickens").click()
        expect(charles_row.locator(".badge")).to_have_text("admin")
        expect(pc.locator("#message-list li.event").last).to_contain_text(
            "an admin", timeout=ACROSS
        )
        pa.locator("#rename").fill("Difference Engine Club")
        pa.get_by_role("button", name="Rename").click()
        expect(pa.locator("#conversation-name")).to_have_text("Difference Engine Club")
        expect(pc.locator("#conversation-name")).to_have_text(
            "Difference Engine Club", timeout=ACROSS
        )
        calm(ta)
        screenshot(ta, "chat-group")

        # Charles mutes it: his list marks it.
        pc.get_by_role("button", name="Group info").click()
        pc.get_by_role("button", name="Mute").click()
        renamed = conversation(pc, "Difference Engine Club")
        expect(renamed.locator(".muted-mark")).to_be_visible()
        expect(pc.get_by_role("button", name="Unmute")).to_be_visible()

        # A phone-sized screen: the list, then one conversation with a way back.
        phone = tc.context.new_page()
        phone.on("pageerror", lambda error: errors.append(f"phone: {error}"))
        phone.set_viewport_size({"width": 390, "height": 800})
        phone.goto(local(charles.process) + "/x/chat/")
        pp = chat(phone)
        expect(conversation(pp, "Ada Lovelace")).to_be_visible()
        expect(pp.locator("#conversation")).to_be_hidden()
        assert width(pp) <= 390
        conversation(pp, "Difference Engine Club").locator("a").click()
        expect(pp.locator("#list-pane")).to_be_hidden()
        expect(message(pp, "Count me in")).to_be_visible()
        expect(pp.get_by_role("button", name="Back to the conversations")).to_be_visible()
        assert width(pp) <= 390
        calm(phone)
        screenshot(phone, "chat-phone")
        pp.get_by_role("button", name="Back to the conversations").click()
        conversation(pp, "Ada Lovelace").locator("a").click()
        expect(message(pp, "The plans, as promised")).to_be_visible()
        assert width(pp) <= 390

        # Chat reloading itself in its frame (where the browser keeps the session cookie back)
        # gets its page again, at the same conversation; the "twin" link opens the home page.
        inner(phone).evaluate("location.reload()")
        expect(message(pp, "The plans, as promised")).to_be_visible()
        expect(pp.locator("#live-text")).to_have_text("Live")
        pp.get_by_role("link", name="twin").click()
        expect(phone.get_by_role("heading", name="Your experiences")).to_be_visible()

        # Nothing else was notified: every later message reached a tab in front.
        assert len(notifications(ta)) == 1

    assert not errors, errors
