"""The Notes experience in a real browser (Debian's chromium): allowing it, writing a note in
Markdown, autosave, a second tab following live (also after the network drops), conflicts shown
instead of overwritten, search and tags, delete with undo; screenshots go to tests/screenshots."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from browser import authenticator, chromium, screenshot
from conftest import wait_for
from playwright.sync_api import Dialog, Locator, Page, Route, expect
from test_browser import create_passkey, setup_link

pytestmark = pytest.mark.slow

NOTE = """# Analytical engine

It **weaves** *algebraic* patterns, with `cards`.

- [x] read the Sketch
- cards
  - operation cards
  - variable cards

> The engine has no pretensions to originate anything.

```
<script>alert("not run")</script>
```

[Menabrea's paper](https://example.org/sketch) and [a trap](javascript:alert(1))
<img src=x onerror=alert(2)>"""
MUSIC = "\n\n## Next\n\n- It might compose music."


def live(page: Page) -> None:
    """Wait until ``page`` has loaded the notes and follows the live stream."""
    expect(page.locator("#live-dot.ok")).to_be_visible()


def item(page: Page, key: str) -> Locator:
    return page.locator(f'.note-item[data-key="{key}"]')


def test_notes_write_follow_conflict_search_and_delete(serve: Any) -> None:
    twin = serve()
    notes_url = twin.url.replace("127.0.0.1", "localhost") + "/x/notes/"
    errors: list[str] = []
    dialogs: list[str] = []

    def dialog(opened: Dialog) -> None:
        dialogs.append(opened.message)
        opened.dismiss()

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1200, "height": 780})
        a = context.new_page()
        a.on("pageerror", lambda error: errors.append(f"A: {error}"))
        a.on("dialog", dialog)
        authenticator(a)
        create_passkey(a, setup_link(twin.output()))

        a.goto(notes_url)
        expect(a.get_by_role("heading", name="Allow Notes?")).to_be_visible()
        expect(a.get_by_text("Create, change and delete its documents")).to_be_visible()
        a.get_by_role("button", name="Allow").click()
        live(a)
        expect(a.get_by_role("heading", name="No notes yet")).to_be_visible()
        token = a.locator('meta[name="twin-token"]').get_attribute("content")

        def stored(key: str) -> Any:
            """The note as the twin holds it, or None."""
            response = httpx.get(
                f"{twin.url}/api/storage/notes/docs/{key}",
                headers={"Authorization": f"Bearer {token}"},
            )
            return response.json() if response.status_code == 200 else None

        # Create: typed into the editor, saved without a button, with its tags.
        a.get_by_role("button", name="New note").click()
        a.locator("#title").fill("Analytical engine")
        a.locator("#tag-input").fill("ideas, math")
        a.locator("#text").fill(NOTE)
        current = a.locator(".note-item.current")
        expect(current).to_contain_text("Analytical engine")
        key = current.get_attribute("data-key") or ""
        assert re.fullmatch(r"notes/[0-9a-f]{24}", key)
        wait_for(lambda: (stored(key) or {}).get("text") == NOTE, what="the note to be saved")
        assert stored(key)["title"] == "Analytical engine"
        assert stored(key)["tags"] == ["ideas", "math"]
        expect(a.locator("#save-status")).to_have_text("Saved")
        screenshot(a, "notes-editor")

        # The preview renders Markdown and never the note's HTML; only the safe link is a link.
        a.get_by_role("tab", name="Preview").click()
        preview = a.locator("#preview")
        expect(preview.locator("h1")).to_have_text("Analytical engine")
        expect(preview.locator("strong")).to_have_text("weaves")
        expect(preview.locator("ul ul li")).to_have_count(2)
        expect(preview.locator("blockquote")).to_contain_text("no pretensions")
        expect(preview.locator("pre")).to_contain_text('<script>alert("not run")</script>')
        expect(preview.locator("a")).to_have_count(1)
        assert preview.locator("a").get_attribute("href") == "https://example.org/sketch"
        expect(preview).to_contain_text("<img src=x onerror=alert(2)>")
        assert preview.locator("script, img").count() == 0
        a.get_by_role("tab", name="Edit").click()

        # A second tab of the same browser opens the note and follows edits made in the first.
        b = context.new_page()
        b.on("pageerror", lambda error: errors.append(f"B: {error}"))
        b.on("dialog", dialog)
        b.goto(notes_url)
        live(b)
        item(b, key).click()
        expect(b.locator("#title")).to_have_value("Analytical engine")
        a.locator("#text").fill(NOTE + MUSIC)
        expect(b.locator("#text")).to_have_value(re.compile("compose music"))
        expect(b.locator("#save-status")).to_have_text("Updated from another tab or device")
        a.locator("#title").fill("The Analytical Engine")
        expect(item(b, key)).to_contain_text("The Analytical Engine")
        expect(b.locator("#title")).to_have_value("The Analytical Engine")
        wait_for(lambda: stored(key)["title"] == "The Analytical Engine", what="the title")

        # Conflict 1: B has unsaved edits (its saves fail: the twin is out of reach) when A
        # saves. B shows both versions and overwrites nothing.
        def unreachable(route: Route) -> None:
            if route.request.method == "PUT":
                route.abort()
            else:
                route.continue_()

        b.route("**/api/storage/notes/docs/**", unreachable)
        b_text = NOTE + MUSIC + "\n- B: punch the cards first."
        a_text = NOTE + MUSIC + "\n- A: write the program first."
        b.locator("#text").fill(b_text)
        expect(b.locator("#save-status")).to_contain_text("Can't reach your twin")
        a.locator("#text").fill(a_text)
        a.keyboard.press("Control+s")
        wait_for(lambda: stored(key)["text"] == a_text, what="A's save")
        banner = b.locator("#conflict")
        expect(banner).to_be_visible()
        expect(banner.locator("#conflict-mine")).to_contain_text("B: punch the cards first.")
        expect(banner.locator("#conflict-theirs")).to_contain_text("A: write the program first.")
        expect(b.locator("#save-status")).to_contain_text("Not saved")
        expect(item(b, key)).to_contain_text("conflict")
        b.unroute("**/api/storage/notes/docs/**")
        screenshot(b, "notes-conflict")
        assert stored(key)["text"] == a_text  # nothing overwritten

        # Keep both: B's text stays in the note, A's is kept as a copy; A follows both live.
        b.get_by_role("button", name="Keep both").click()
        expect(banner).to_be_hidden()
        wait_for(lambda: stored(key)["text"] == b_text, what="B's text in the note")
        expect(a.locator("#text")).to_have_value(b_text)
        copy = a.locator(".note-item", has_text="The Analytical Engine (other version)")
        expect(copy).to_contain_text("Analytical engine")
        copy_key = copy.get_attribute("data-key") or ""
        assert stored(copy_key)["text"] == a_text

        # Conflict 2: B's save is on its way when A's lands first; the twin refuses B's (412),
        # and B shows both versions again; "Keep mine" then overwrites knowingly.
        held: list[Route] = []

        def hold(route: Route) -> None:
            held.append(route)

        b.route("**/api/storage/notes/docs/**", hold)
        with b.expect_request(lambda request: request.method == "PUT"):
            b.locator("#text").fill(b_text + " Then the tables.")
        expect(b.locator("#save-status")).to_have_text("Saving…")
        assert len(held) == 1
        a.locator("#text").fill(b_text + " Then the music.")
        a.keyboard.press("Control+s")
        wait_for(lambda: stored(key)["text"].endswith("music."), what="A's second save")
        held[0].continue_()
        b.unroute("**/api/storage/notes/docs/**")
        expect(banner).to_be_visible()
        expect(banner.locator("#conflict-theirs")).to_contain_text("Then the music.")
        assert stored(key)["text"].endswith("Then the music.")
        b.get_by_role("button", name="Keep mine").click()
        expect(banner).to_be_hidden()
        wait_for(lambda: stored(key)["text"].endswith("tables."), what="B's, knowingly")
        expect(a.locator("#text")).to_have_value(b_text + " Then the tables.")

        # Offline for a while: another device changes the note meanwhile; once the stream is
        # back, both tabs catch up without a reload.
        context.set_offline(True)
        expect(b.locator("#live-dot.wait")).to_be_visible()
        before = stored(key)
        elsewhere = {**before, "text": before["text"] + "\n- Added on the phone meanwhile."}
        put = httpx.put(
            f"{twin.url}/api/storage/notes/docs/{key}",
            json=elsewhere,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert put.status_code == 200, put.text
        with b.expect_request(lambda request: "/changes/live" in request.url) as resumed:
            context.set_offline(False)
        assert f"since={put.json()['version'] - 1}" in resumed.value.url  # from its last event
        expect(b.locator("#text")).to_have_value(elsewhere["text"], timeout=15000)
        expect(a.locator("#text")).to_have_value(elsewhere["text"], timeout=15000)
        live(b)

        # Search and tags: a third note, found by its words and by its tag. (A comes to the
        # front: headless chromium gives a tab behind another one a frame a second, and a click
        # waits for frames.)
        a.bring_to_front()
        a.get_by_role("button", name="New note").click()
        a.locator("#title").fill("Shopping")
        a.locator("#tag-input").fill("home")
        a.locator("#text").fill("- brass gears\n- punched cards\n- **oil**")
        shopping = a.locator(".note-item.current")
        expect(shopping).to_contain_text("Shopping")
        shop_key = shopping.get_attribute("data-key") or ""
        wait_for(lambda: stored(shop_key) is not None, what="the new note")
        expect(item(b, shop_key)).to_contain_text("brass gears")
        a.get_by_role("button", name="Delete").click()  # stop editing it: delete, then undo
        expect(a.locator("#toast")).to_contain_text("Note deleted.")
        wait_for(lambda: stored(shop_key) is None, what="the delete")
        expect(item(b, shop_key)).to_have_count(0)
        a.get_by_role("button", name="Undo").click()
        expect(a.locator("#toast")).to_be_hidden()
        wait_for(lambda: (stored(shop_key) or {}).get("title") == "Shopping", what="the undo")
        assert stored(shop_key)["tags"] == ["home"]
        expect(item(b, shop_key)).to_contain_text("brass gears")
        expect(a.locator("#title")).to_have_value("Shopping")

        a.locator("#search").fill("gears")
        expect(a.locator(".note-item")).to_have_count(1)
        expect(a.locator("#list-info")).to_have_text("1 of 3 notes")
        a.locator("#search").fill("engine cards")
        expect(a.locator(".note-item")).to_have_count(2)
        a.locator("#search").fill("")
        a.locator("#tags").get_by_role("button", name=re.compile("^home")).click()
        expect(a.locator("#list-info")).to_have_text("1 of 3 notes")
        a.locator("#tags").get_by_role("button", name=re.compile("^home")).click()
        expect(a.locator(".note-item")).to_have_count(3)
        item(a, key).click()
        a.get_by_role("tab", name="Preview").click()
        expect(a.locator("#preview h1")).to_have_text("Analytical engine")
        screenshot(a, "notes-list")

        # Delete for good: gone from the twin and from the other tab, also after a reload.
        item(a, shop_key).click()
        a.get_by_role("button", name="Delete").click()
        a.get_by_role("button", name="Dismiss").click()
        expect(a.locator("#toast")).to_be_hidden()
        wait_for(lambda: stored(shop_key) is None, what="the delete for good")
        expect(item(b, shop_key)).to_have_count(0)
        a.reload()
        live(a)
        expect(a.locator(".note-item")).to_have_count(2)
        expect(a.get_by_role("heading", name="Pick a note")).to_be_visible()

        # On a phone-sized screen the list and the open note take turns.
        phone = context.new_page()
        phone.set_viewport_size({"width": 400, "height": 760})
        phone.goto(notes_url)
        live(phone)
        item(phone, key).click()
        expect(phone.locator("#title")).to_be_visible()
        expect(phone.locator("#note-list")).to_be_hidden()
        phone.get_by_role("button", name="← Notes").click()
        expect(phone.locator("#note-list")).to_be_visible()

    assert not errors, errors
    assert not dialogs, dialogs  # nothing in a note ran as code
