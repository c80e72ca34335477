// The Notes experience: Markdown notes kept as documents in the twin's storage (namespace
// "notes", keys "notes/<id>"), loaded from the change feed, followed live, and written with
// conditional requests so that a change made in another tab or device is never overwritten.
document.addEventListener("DOMContentLoaded", () => {
  const SPACE = "/storage/notes";
  const PREFIX = "notes/";
  const SAVE_AFTER = 700; // ms of quiet typing before a save: well under the twin's rate limit
  const SAVE_EVERY = 5000; // and at least this often while typing goes on
  const UNDO_FOR = 8000;
  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $("notes-app"), search: $("search"), newNote: $("new-note"), tags: $("tags"),
    info: $("list-info"), list: $("note-list"), liveDot: $("live-dot"), liveText: $("live-text"),
    empty: $("empty"), emptyTitle: $("empty-title"), emptyHint: $("empty-hint"),
    editor: $("editor"), back: $("back"), status: $("save-status"), remove: $("delete"),
    title: $("title"), tagInput: $("tag-input"), text: $("text"), preview: $("preview"),
    modeEdit: $("mode-edit"), modePreview: $("mode-preview"),
    conflict: $("conflict"), conflictTitle: $("conflict-title"), conflictHint: $("conflict-hint"),
    mine: $("conflict-mine"), theirs: $("conflict-theirs"),
    keepMine: $("keep-mine"), takeTheirs: $("take-theirs"), keepBoth: $("keep-both"),
    toast: $("toast"), toastText: $("toast-text"), toastAction: $("toast-action"), toastClose: $("toast-close"),
  };

  const notes = new Map(); // key -> {key, version, updated (s), body}: what the twin holds
  const drafts = new Map(); // key -> Draft: notes open in the editor or with work not yet saved
  let current = null; // the Draft in the editor
  let filterTag = ""; // lower case, to compare
  let filterLabel = ""; // as written
  let stream = null;
  let restarted = 0; // when the notes were last loaded again from scratch

  // ---- documents ---------------------------------------------------------------------------

  function docPath(key) {
    return SPACE + "/docs/" + key.split("/").map(encodeURIComponent).join("/");
  }

  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(12)); // randomUUID needs a secure context
    return PREFIX + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function cleanTags(tags) {
    const seen = new Set();
    const out = [];
    for (const raw of Array.isArray(tags) ? tags : []) {
      const tag = String(raw).replace(/^#+/, "").trim().slice(0, 40);
      if (tag && !seen.has(tag.toLowerCase()) && out.length < 20) {
        seen.add(tag.toLowerCase());
        out.push(tag);
      }
    }
    return out;
  }

  // A document from the twin is untrusted input: keep only the fields a note has, as strings.
  function noteBody(body) {
    const b = body && typeof body === "object" ? body : {};
    const number = (n) => (typeof n === "number" && isFinite(n) ? n : 0);
    return {
      title: typeof b.title === "string" ? b.title : "",
      text: typeof b.text === "string" ? b.text : "",
      tags: cleanTags(b.tags),
      created: number(b.created),
      updated: number(b.updated),
    };
  }

  function blank(body) {
    return !body.title.trim() && !body.text.trim() && !body.tags.length;
  }

  // The note as the twin holds it now: its body and version (the ETag), or {deleted: true}.
  async function readDoc(key) {
    const response = await twin.request(docPath(key), { cache: "no-store" });
    if (response.status === 404) return { deleted: true };
    if (!response.ok) throw Object.assign(new Error(response.statusText), { status: response.status });
    const version = Number(response.headers.get("ETag").replace(/\D/g, ""));
    return { version, body: noteBody(await response.json()) };
  }

  function ifMatch(version) {
    return { "If-Match": '"' + version + '"' };
  }

  // What to tell the person when a write failed, and whether trying again later may help.
  function explain(error) {
    const s = error.status;
    if (!s) return { text: "Can't reach your twin. Your changes stay in this tab and are saved when it is back.", retry: true };
    if (s === 401) return { text: "Notes has lost access to your twin. Copy your text, reload the page and allow Notes again if asked." };
    if (s === 403) return { text: "Notes may not write here (" + error.message + "). Reload the page; if it persists, allow Notes again from your twin's home page." };
    if (s === 413) return { text: "This note is too big to save (at most 1 MiB). Split it into smaller notes; your text stays here meanwhile." };
    if (s === 507) return { text: "Your twin's space for notes is full: " + error.message + ". Delete notes you no longer need, then type again to save." };
    if (s === 423) return { text: "Your twin is locked. Unlock it from its home page; your changes stay here and are saved after.", retry: true };
    if (s === 429) return { text: "Your twin is busy. Trying again shortly…", retry: true };
    if (s >= 500) return { text: "Your twin could not save this (" + error.message + "). Trying again shortly…", retry: true };
    return { text: "Your twin refused this note: " + error.message };
  }

  // ---- drafts: the editor's side of a note -------------------------------------------------

  function draftFor(key) {
    let draft = drafts.get(key);
    if (!draft) {
      const known = notes.get(key);
      const body = known ? known.body : noteBody({ created: Date.now(), updated: Date.now() });
      draft = {
        key, base: known ? known.version : null, body: { ...body }, dirty: false, timer: null,
        queue: Promise.resolve(), busy: 0, remote: null, conflict: null, retry: 1000, local: Date.now(),
        since: 0, retrying: false, note: "", bad: false,
      };
      drafts.set(key, draft);
    }
    return draft;
  }

  // Operations on one note (saves, deletes, resolving a conflict) run one after another.
  function run(draft, task) {
    draft.busy++;
    draft.queue = draft.queue.then(task).catch((error) => {
      say(draft, explain(error).text, true);
      show(draft);
    }).finally(() => {
      draft.busy--;
      if (!draft.busy) settle(draft);
    });
    return draft.queue;
  }

  function settle(draft) {
    if (draft.remote) {
      const change = draft.remote;
      draft.remote = null;
      remoteChange(draft, change);
    }
    if (draft.dirty && !draft.conflict && !draft.timer) schedule(draft, SAVE_AFTER);
    forget(draft);
    show(draft);
  }

  function forget(draft) {
    if (draft === current || draft.dirty || draft.busy || draft.conflict || draft.timer) return;
    drafts.delete(draft.key);
  }

  function schedule(draft, delay) {
    clearTimeout(draft.timer);
    draft.timer = setTimeout(() => { draft.timer = null; save(draft); }, delay);
  }

  function save(draft) {
    clearTimeout(draft.timer);
    draft.timer = null;
    if (!draft.dirty || draft.conflict) return Promise.resolve();
    return run(draft, async () => {
      if (!draft.dirty || draft.conflict) return;
      if (draft.base === null && blank(draft.body)) { draft.dirty = false; return; }
      const body = { ...draft.body, updated: Date.now() };
      draft.dirty = false; // edits made from now on need another save
      say(draft, "Saving…");
      show(draft);
      try {
        const done = await twin.api(docPath(draft.key), {
          method: "PUT", body,
          headers: draft.base === null ? { "If-None-Match": "*" } : ifMatch(draft.base),
        });
        draft.base = done.version;
        draft.retry = 1000;
        draft.retrying = false;
        remember({ key: draft.key, version: done.version, updated: done.updated, body });
        say(draft, draft.dirty ? "" : "Saved");
        renderList();
      } catch (error) {
        draft.dirty = true;
        draft.since = Date.now();
        if (error.status === 412) { // changed (or deleted) since we read it: show both
          conflictWith(draft, await readDoc(draft.key));
          return;
        }
        const why = explain(error);
        say(draft, why.text, true);
        draft.retrying = Boolean(why.retry); // edits wait for the retry instead of sending more
        if (why.retry) {
          schedule(draft, draft.retry);
          draft.retry = Math.min(draft.retry * 2, 30000);
        }
      }
    });
  }

  function remember(record) {
    const known = notes.get(record.key);
    if (!known || known.version < record.version) notes.set(record.key, record);
  }

  function conflictWith(draft, theirs) {
    if (!theirs.deleted) remember({ key: draft.key, version: theirs.version, updated: Date.now() / 1000, body: theirs.body });
    clearTimeout(draft.timer);
    draft.timer = null;
    draft.retrying = false;
    draft.conflict = theirs;
    say(draft, "Not saved: this note changed elsewhere. Choose below what to keep.", true);
    renderList();
    show(draft);
  }

  // A change from the feed or the live stream, for a note that has a draft.
  function remoteChange(draft, change) {
    if (draft.base !== null && change.version <= draft.base) return; // ours, or older than ours
    if (draft.busy) { draft.remote = change; return; } // decided once the request in flight is done
    const theirs = change.op === "delete" ? { deleted: true } : { version: change.version, body: noteBody(change.body) };
    if (draft.dirty || draft.conflict) {
      conflictWith(draft, theirs);
      return;
    }
    if (theirs.deleted) {
      drafts.delete(draft.key);
      if (draft === current) {
        close();
        toast("This note was deleted in another tab or device.", "Restore", () => restore(draft.key, draft.body));
      }
      return;
    }
    draft.base = theirs.version;
    draft.body = { ...theirs.body };
    say(draft, "Updated from another tab or device");
    if (draft === current) fill(draft, true);
  }

  // ---- resolving a conflict ----------------------------------------------------------------

  function resolve(how) {
    const draft = current;
    if (!draft || !draft.conflict) return;
    run(draft, async () => {
      const theirs = draft.conflict;
      if (how === "theirs") {
        draft.conflict = null;
        draft.dirty = false;
        if (theirs.deleted) {
          drafts.delete(draft.key);
          close();
          return;
        }
        draft.base = theirs.version;
        draft.body = { ...theirs.body };
        say(draft, "Took the other version");
        fill(draft, true);
        return;
      }
      if (how === "both" && !theirs.deleted) {
        const copy = { ...theirs.body, title: (theirs.body.title || "Untitled") + " (other version)", updated: Date.now() };
        const key = newKey();
        const made = await twin.api(docPath(key), { method: "PUT", body: copy, headers: { "If-None-Match": "*" } });
        remember({ key, version: made.version, updated: made.updated, body: copy });
      }
      const body = { ...draft.body, updated: Date.now() };
      let done;
      try { // overwrite exactly the version the person saw, nothing newer
        done = await twin.api(docPath(draft.key), {
          method: "PUT", body, headers: theirs.deleted ? { "If-None-Match": "*" } : ifMatch(theirs.version),
        });
      } catch (error) {
        if (error.status !== 412) throw error;
        draft.conflict = await readDoc(draft.key);
        say(draft, "It changed again meanwhile: look once more and choose.", true);
        return;
      }
      draft.conflict = null;
      draft.dirty = false;
      draft.base = done.version;
      remember({ key: draft.key, version: done.version, updated: done.updated, body });
      say(draft, how === "both" ? "Saved yours; theirs is kept as a copy" : "Saved your version");
      renderList();
    });
  }

  // ---- delete and undo ---------------------------------------------------------------------

  async function remove() {
    const draft = current;
    if (!draft) return;
    clearTimeout(draft.timer);
    draft.timer = null;
    const body = { ...draft.body }; // what the person sees, unsaved edits included
    if (draft.base === null) {
      draft.dirty = false;
      drafts.delete(draft.key);
      close();
      return;
    }
    await run(draft, async () => {
      // With a conflict on screen, the person deletes the version they see as the other one.
      const seen = draft.conflict ? draft.conflict : { version: draft.base };
      try {
        if (!seen.deleted) await twin.api(docPath(draft.key), { method: "DELETE", headers: ifMatch(seen.version) });
      } catch (error) {
        if (error.status === 412) {
          const theirs = await readDoc(draft.key);
          if (!theirs.deleted) {
            draft.conflict = null;
            draft.dirty = false;
            draft.base = theirs.version;
            draft.body = { ...theirs.body };
            remember({ key: draft.key, version: theirs.version, updated: Date.now() / 1000, body: theirs.body });
            say(draft, "Not deleted: it changed in another tab or device meanwhile. This is the new version; delete again if you still want to.", true);
            if (draft === current) fill(draft, true);
            return;
          }
        } else if (error.status !== 404) {
          throw error;
        }
      }
      draft.dirty = false;
      draft.conflict = null;
      notes.delete(draft.key);
      drafts.delete(draft.key);
      if (draft === current) close();
      toast("Note deleted.", "Undo", () => restore(draft.key, body));
    });
  }

  async function restore(key, body) {
    try {
      const made = await twin.api(docPath(key), { method: "PUT", body, headers: { "If-None-Match": "*" } });
      remember({ key, version: made.version, updated: made.updated, body });
      hideToast();
      open(key);
    } catch (error) {
      const text = error.status === 412 ? "It exists again already." : explain(error).text;
      toast("Could not restore the note: " + text, "Try again", () => restore(key, body));
    }
  }

  // ---- the editor --------------------------------------------------------------------------

  function open(key) {
    if (current && current.key !== key) leave(current);
    current = draftFor(key);
    ui.app.classList.add("editing");
    fill(current, false);
    setMode("edit");
    renderList();
  }

  function leave(draft) {
    current = null;
    if (draft.base === null && blank(draft.body)) { drafts.delete(draft.key); return; }
    if (draft.timer) save(draft);
    forget(draft);
  }

  function close() {
    if (current) leave(current);
    current = null;
    ui.app.classList.remove("editing");
    renderList();
    showEmpty();
  }

  // Put a draft into the editor; `inPlace` keeps the caret where it was when the text changes.
  function fill(draft, inPlace) {
    ui.empty.hidden = true;
    ui.editor.hidden = false;
    const focused = document.activeElement;
    const caret = [ui.text.selectionStart, ui.text.selectionEnd];
    if (ui.title.value !== draft.body.title) ui.title.value = draft.body.title;
    if (!inPlace || focused !== ui.tagInput) ui.tagInput.value = draft.body.tags.join(", ");
    if (ui.text.value !== draft.body.text) ui.text.value = draft.body.text;
    if (inPlace && focused === ui.text) ui.text.setSelectionRange(...caret);
    if (!ui.preview.hidden) renderPreview();
    show(draft);
    renderList();
  }

  function edited() {
    const draft = current;
    if (!draft) return;
    draft.body = {
      ...draft.body,
      title: ui.title.value,
      text: ui.text.value,
      tags: cleanTags(ui.tagInput.value.split(",")),
    };
    if (!draft.dirty) draft.since = Date.now();
    draft.dirty = true;
    draft.local = Date.now();
    say(draft, "");
    if (!draft.conflict && !draft.retrying) schedule(draft, draft.local - draft.since > SAVE_EVERY ? 0 : SAVE_AFTER);
    show(draft);
    renderItem(draft.key);
  }

  // What the status line says about a draft; `bad` when the person should act on it.
  function say(draft, text, bad = false) {
    draft.note = text;
    draft.bad = bad;
  }

  function show(draft) {
    if (draft !== current) { renderItem(draft.key); return; }
    let note = draft.note;
    if (!note && draft.dirty) note = "Edited";
    if (!note && draft.base !== null) note = "Saved";
    ui.status.textContent = note;
    ui.status.classList.toggle("error", Boolean(draft.note && draft.bad));
    renderConflict(draft);
  }

  function renderConflict(draft) {
    const theirs = draft.conflict;
    ui.conflict.hidden = !theirs;
    if (!theirs) return;
    ui.conflictTitle.textContent = theirs.deleted
      ? "This note was deleted in another tab or device"
      : "This note was changed in another tab or device";
    ui.conflictHint.textContent = theirs.deleted
      ? "Your changes are not saved yet. Keep your version to bring the note back, or let it go."
      : "Your changes are not saved yet, and nothing has been overwritten: choose what to keep.";
    ui.takeTheirs.textContent = theirs.deleted ? "Let it go" : "Take theirs";
    ui.keepBoth.hidden = Boolean(theirs.deleted);
    const otherLines = new Set(theirs.deleted ? [] : theirs.body.text.split("\n"));
    const mineLines = new Set(draft.body.text.split("\n"));
    side(ui.mine, draft.body, otherLines, "Not saved yet");
    if (theirs.deleted) {
      ui.theirs.querySelector(".conflict-meta").textContent = "Deleted";
      ui.theirs.querySelector(".conflict-text").replaceChildren();
    } else {
      side(ui.theirs, theirs.body, mineLines, "Saved " + ago(theirs.body.updated / 1000));
    }
    for (const box of [ui.mine, ui.theirs]) { // show where they differ first
      const text = box.querySelector(".conflict-text");
      const first = text.querySelector(".changed");
      text.scrollTop = first ? Math.max(0, first.offsetTop - 24) : 0;
    }
  }

  // One side of the conflict banner; lines the other side lacks are marked.
  function side(box, body, other, meta) {
    const tags = body.tags.length ? " · tags: " + body.tags.join(", ") : "";
    box.querySelector(".conflict-meta").textContent = (body.title || "Untitled") + tags + " · " + meta;
    const lines = document.createDocumentFragment();
    for (const line of body.text.split("\n")) {
      const span = document.createElement("span");
      span.textContent = line + "\n";
      if (!other.has(line)) span.className = "changed";
      lines.append(span);
    }
    box.querySelector(".conflict-text").replaceChildren(lines);
  }

  function setMode(mode) {
    const preview = mode === "preview";
    ui.preview.hidden = !preview;
    ui.text.hidden = preview;
    ui.modeEdit.setAttribute("aria-selected", String(!preview));
    ui.modePreview.setAttribute("aria-selected", String(preview));
    if (preview) renderPreview();
  }

  function renderPreview() {
    if (!current) return;
    const text = current.body.text;
    ui.preview.replaceChildren(notesMarkdown.render(text));
    if (!text.trim()) ui.preview.replaceChildren(Object.assign(document.createElement("p"), { className: "muted", textContent: "Nothing to preview yet." }));
  }

  // ---- the list ----------------------------------------------------------------------------

  function entries() {
    const unsaved = [...drafts.values()].filter((d) => d.base !== null || d === current || !blank(d.body));
    const keys = new Set([...notes.keys(), ...unsaved.map((d) => d.key)]);
    return [...keys].map((key) => {
      const draft = drafts.get(key);
      const known = notes.get(key);
      const body = draft ? draft.body : known.body;
      const when = Math.max(known ? known.updated * 1000 : 0, draft && draft.dirty ? draft.local : 0) || Date.now();
      return { key, body, when, draft };
    });
  }

  const haystacks = new WeakMap(); // body -> its words in lower case, made once per version
  function matches(entry, words) {
    if (filterTag && !entry.body.tags.some((t) => t.toLowerCase() === filterTag)) return false;
    if (!words.length) return true;
    let hay = haystacks.get(entry.body);
    if (hay === undefined) {
      hay = (entry.body.title + "\n" + entry.body.text + "\n" + entry.body.tags.join(" ")).toLowerCase();
      haystacks.set(entry.body, hay);
    }
    return words.every((w) => hay.includes(w));
  }

  let listQueued = false;
  function renderList() {
    if (listQueued) return;
    listQueued = true;
    queueMicrotask(() => { listQueued = false; drawList(); }); // once, after the current task
  }

  function drawList() {
    const all = entries().sort((a, b) => b.when - a.when);
    const words = ui.search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = all.filter((e) => matches(e, words));
    const items = document.createDocumentFragment();
    for (const entry of shown) items.append(item(entry));
    ui.list.replaceChildren(items);
    drawTags(all);
    const filtered = words.length || filterTag;
    if (!all.length) ui.info.textContent = "";
    else if (filtered && !shown.length) ui.info.textContent = "No notes match. Try other words or another tag.";
    else if (filtered) ui.info.textContent = shown.length + " of " + all.length + " notes";
    else ui.info.textContent = all.length === 1 ? "1 note" : all.length + " notes";
    ui.app.dataset.state = all.length ? "notes" : "empty";
    if (!current) showEmpty();
  }

  function item(entry) {
    const li = document.createElement("li");
    li.className = "note-item";
    li.dataset.key = entry.key;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "note-open";
    if (current && current.key === entry.key) {
      li.classList.add("current");
      button.setAttribute("aria-current", "true");
    }
    if (entry.draft && entry.draft.conflict) li.classList.add("conflicted");
    button.addEventListener("click", () => open(entry.key));
    fillItem(button, entry);
    li.append(button);
    return li;
  }

  function fillItem(button, entry) {
    const title = document.createElement("span");
    title.className = "note-title";
    title.textContent = entry.body.title.trim() || "Untitled";
    const when = document.createElement("time");
    when.className = "note-when";
    when.dateTime = new Date(entry.when).toISOString();
    when.textContent = ago(entry.when / 1000);
    const head = document.createElement("span");
    head.className = "note-head";
    head.append(title, when);
    const snippet = document.createElement("span");
    snippet.className = "note-snippet";
    snippet.textContent = notesMarkdown.plain(entry.body.text) || "No text";
    const tags = document.createElement("span");
    tags.className = "note-tags";
    tags.append(...entry.body.tags.map((t) => Object.assign(document.createElement("span"), { className: "chip", textContent: t })));
    if (entry.draft && entry.draft.conflict) tags.append(Object.assign(document.createElement("span"), { className: "chip warn-chip", textContent: "conflict" }));
    button.replaceChildren(head, snippet, tags);
  }

  // Typing changes one entry: redraw just that one, not the whole list.
  function renderItem(key) {
    const li = [...ui.list.children].find((node) => node.dataset.key === key);
    const entry = entries().find((e) => e.key === key);
    if (!li || !entry) { renderList(); return; }
    fillItem(li.firstChild, entry);
    li.classList.toggle("conflicted", Boolean(entry.draft && entry.draft.conflict));
  }

  function drawTags(all) {
    const counts = new Map();
    for (const entry of all) {
      for (const tag of entry.body.tags) {
        const k = tag.toLowerCase();
        const seen = counts.get(k) || { tag, n: 0 };
        seen.n++;
        counts.set(k, seen);
      }
    }
    const chips = [...counts.entries()].sort((a, b) => b[1].n - a[1].n || a[0].localeCompare(b[0])).slice(0, 40);
    ui.tags.replaceChildren(...chips.map(([k, { tag, n }]) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip tag-filter";
      chip.setAttribute("aria-pressed", String(filterTag === k));
      const count = Object.assign(document.createElement("span"), { className: "count", textContent: String(n) });
      chip.append(tag + " ", count);
      chip.addEventListener("click", () => {
        filterTag = filterTag === k ? "" : k;
        filterLabel = tag;
        renderList();
      });
      return chip;
    }));
    ui.tags.hidden = !chips.length;
  }

  function showEmpty() {
    if (current) return;
    ui.editor.hidden = true;
    ui.empty.hidden = false;
    const any = notes.size > 0;
    ui.emptyTitle.textContent = any ? "Pick a note" : "No notes yet";
    const strong = Object.assign(document.createElement("strong"), { textContent: "New note" });
    ui.emptyHint.replaceChildren(any
      ? "Choose a note from the list, or start one with "
      : "Notes are written in Markdown, saved as you type, and show up live on every device you sign in from. Start with ",
    strong, ".");
  }

  function ago(seconds) {
    const diff = Date.now() / 1000 - seconds;
    if (!seconds) return "";
    if (diff < 45) return "just now";
    if (diff < 3600) return Math.round(diff / 60) + " min ago";
    const date = new Date(seconds * 1000);
    if (diff < 86400 && date.getDate() === new Date().getDate()) {
      return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
    return date.toLocaleDateString([], { day: "numeric", month: "short", year: diff > 300 * 86400 ? "numeric" : undefined });
  }

  // ---- toast -------------------------------------------------------------------------------

  let toastTimer = null;
  let toastDo = null;
  function toast(text, action, onAction) {
    clearTimeout(toastTimer);
    ui.toastText.textContent = text;
    ui.toastAction.textContent = action || "";
    ui.toastAction.hidden = !action;
    toastDo = onAction || null;
    ui.toast.hidden = false;
    toastTimer = setTimeout(hideToast, UNDO_FOR);
  }

  function hideToast() {
    clearTimeout(toastTimer);
    ui.toast.hidden = true;
    toastDo = null;
  }

  // ---- loading and following the change feed ----------------------------------------------

  function apply(change) {
    if (typeof change.key !== "string" || !change.key.startsWith(PREFIX)) return;
    const known = notes.get(change.key);
    if (known && known.version >= change.version) return;
    if (change.op === "delete") notes.delete(change.key);
    else notes.set(change.key, { key: change.key, version: change.version, updated: change.updated, body: noteBody(change.body) });
    const draft = drafts.get(change.key);
    if (draft) remoteChange(draft, change);
    renderList();
  }

  async function load() {
    let since = 0;
    for (;;) {
      const page = await twin.api(SPACE + "/changes?since=" + since + "&bodies=true&limit=1000");
      page.changes.forEach(apply);
      since = page.last_seq;
      if (!page.more) return since;
    }
  }

  function liveStatus(state, text) {
    ui.liveDot.className = "dot " + state;
    ui.liveText.textContent = text;
    ui.liveText.title = state === "ok" ? "Changes made in other tabs and on your other devices show up here as they happen." : "";
  }

  async function start() {
    if (stream) stream.close();
    liveStatus("", "Loading…");
    let since;
    notes.clear();
    try {
      since = await load();
    } catch (error) {
      const why = explain(error);
      ui.app.dataset.state = "failed";
      liveStatus("bad", "Could not load your notes. " + why.text);
      if (why.retry) setTimeout(start, 5000);
      return;
    }
    drawList();
    stream = twin.live(SPACE + "/changes/live?bodies=true", {
      since,
      onChange: apply,
      onReady: () => liveStatus("ok", "Live"),
      onError: (error, { final }) => {
        // 410: too long away to resume; 400: the twin holds less than we saw (a restored
        // backup). Either way, load everything again, but not over and over.
        if (final && (error.status === 410 || error.status === 400) && Date.now() - restarted > 60000) {
          restarted = Date.now();
          start();
          return;
        }
        if (final) liveStatus("bad", explain(error).text);
        else liveStatus("wait", "Reconnecting to your twin…");
      },
    });
  }

  // ---- wiring ------------------------------------------------------------------------------

  ui.newNote.addEventListener("click", () => {
    const key = newKey();
    const draft = draftFor(key);
    if (filterTag) draft.body.tags = [filterLabel];
    ui.search.value = "";
    open(key);
    ui.title.focus();
  });
  ui.search.addEventListener("input", renderList);
  ui.back.addEventListener("click", close);
  ui.title.addEventListener("input", edited);
  ui.tagInput.addEventListener("input", edited);
  ui.text.addEventListener("input", edited);
  ui.tagInput.addEventListener("change", () => { if (current) ui.tagInput.value = current.body.tags.join(", "); });
  ui.editor.addEventListener("submit", (event) => event.preventDefault());
  ui.modeEdit.addEventListener("click", () => setMode("edit"));
  ui.modePreview.addEventListener("click", () => setMode("preview"));
  ui.remove.addEventListener("click", remove);
  ui.keepMine.addEventListener("click", () => resolve("mine"));
  ui.takeTheirs.addEventListener("click", () => resolve("theirs"));
  ui.keepBoth.addEventListener("click", () => resolve("both"));
  ui.toastAction.addEventListener("click", () => { const act = toastDo; hideToast(); if (act) act(); });
  ui.toastClose.addEventListener("click", hideToast);
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "s") {
      event.preventDefault();
      if (current) save(current);
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") for (const draft of drafts.values()) if (draft.timer) save(draft);
  });
  window.addEventListener("beforeunload", (event) => {
    if ([...drafts.values()].some((d) => d.dirty || d.busy)) event.preventDefault();
  });
  setInterval(renderList, 60000); // "just now" becomes "3 min ago"

  start();
});
