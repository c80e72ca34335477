// The Files experience: browse, upload (streamed, with progress and cancel), preview, organise,
// delete to the trash and share by link, through /api/files/… with this page's own token.
document.addEventListener("DOMContentLoaded", () => {
  const API = "/files";
  const TEXT_LIMIT = 256 * 1024; // a text preview shows at most this much of a file
  const IMAGE_LIMIT = 64 * 1024 * 1024; // bigger images are offered for download instead
  const PARALLEL = 3; // uploads under way at once
  const UNDO_FOR = 8000;
  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $("files-app"), viewFiles: $("view-files"), viewShares: $("view-shares"), viewTrash: $("view-trash"),
    trashCount: $("trash-count"), usage: $("usage"), usageFiles: $("usage-files"), usageTrash: $("usage-trash"),
    usageText: $("usage-text"),
    browse: $("browse"), crumbs: $("crumbs"), newFolder: $("new-folder"), upload: $("upload"), picker: $("picker"),
    entries: $("entries"), rows: $("rows"), empty: $("empty"), emptyTitle: $("empty-title"), emptyHint: $("empty-hint"),
    browseStatus: $("browse-status"),
    trash: $("trash"), trashRows: $("trash-rows"), trashEmpty: $("trash-empty"), trashHint: $("trash-hint"),
    emptyTrash: $("empty-trash"),
    shares: $("shares"), shareList: $("share-list"), sharesEmpty: $("shares-empty"),
    drop: $("drop"), dropTarget: $("drop-target"),
    uploads: $("uploads"), uploadsSummary: $("uploads-summary"), uploadsCancel: $("uploads-cancel"),
    uploadsClose: $("uploads-close"), uploadsTotal: $("uploads-total"), uploadList: $("upload-list"),
    toast: $("toast"), toastText: $("toast-text"), toastAction: $("toast-action"), toastClose: $("toast-close"),
    menu: $("menu"),
    nameDialog: $("name-dialog"), nameForm: $("name-form"), nameTitle: $("name-title"), nameInput: $("name-input"),
    nameError: $("name-error"), nameOk: $("name-ok"),
    moveDialog: $("move-dialog"), moveForm: $("move-form"), moveTitle: $("move-title"), moveCrumbs: $("move-crumbs"),
    moveList: $("move-list"), moveError: $("move-error"), moveOk: $("move-ok"),
    clashDialog: $("clash-dialog"), clashText: $("clash-text"), clashAll: $("clash-all"),
    confirmDialog: $("confirm-dialog"), confirmTitle: $("confirm-title"), confirmText: $("confirm-text"),
    confirmOk: $("confirm-ok"),
    previewDialog: $("preview-dialog"), previewTitle: $("preview-title"), previewMeta: $("preview-meta"),
    previewBody: $("preview-body"), previewPrev: $("preview-prev"), previewNext: $("preview-next"),
    previewPos: $("preview-pos"), previewDownload: $("preview-download"), previewClose: $("preview-close"),
    shareDialog: $("share-dialog"), shareTitle: $("share-title"), shareClose: $("share-close"), shareForm: $("share-form"),
    shareWhat: $("share-what"), shareDays: $("share-days"), shareLimit: $("share-limit"), shareError: $("share-error"),
    shareCreate: $("share-create"), shareMade: $("share-made"), shareUrl: $("share-url"), shareCopy: $("share-copy"),
    shareCopied: $("share-copied"), shareQr: $("share-qr"), shareExisting: $("share-existing"), shareNone: $("share-none"),
    qrDialog: $("qr-dialog"), qrImg: $("qr-img"),
  };

  let view = "files";
  let folder = ""; // the folder shown, "" for the root
  let listing = []; // its entries, as the twin sent them
  let loaded = false;
  let loadSeq = 0;
  let sort = { key: "name", dir: 1 };
  let shares = [];
  let trashItems = [];

  // ---- paths and words ---------------------------------------------------------------------

  const enc = (path) => path.split("/").map(encodeURIComponent).join("/");
  const join = (parent, name) => (parent ? parent + "/" + name : name);
  const parentOf = (path) => (path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "");
  const nameOf = (path) => path.slice(path.lastIndexOf("/") + 1);
  const folderLabel = (path) => (path ? nameOf(path) : "Files");
  const quote = (name) => "“" + name + "”";

  function human(bytes) {
    const units = [["TiB", 1024 ** 4], ["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]];
    for (const [unit, factor] of units) {
      if (bytes >= factor) return Number((bytes / factor).toPrecision(3)) + " " + unit;
    }
    return bytes === 1 ? "1 byte" : bytes + " bytes";
  }

  function when(seconds) {
    if (!seconds) return "";
    const diff = Date.now() / 1000 - seconds;
    const date = new Date(seconds * 1000);
    if (diff < 45 && diff > -45) return "just now";
    if (diff < 3600 && diff > 0) return Math.round(diff / 60) + " min ago";
    if (diff < 86400 && date.getDate() === new Date().getDate()) {
      return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
    const year = Math.abs(diff) > 300 * 86400 ? "numeric" : undefined;
    return date.toLocaleDateString([], { day: "numeric", month: "short", year });
  }

  const fullDate = (seconds) => new Date(seconds * 1000).toLocaleString();

  function days(n) {
    return n === 1 ? "1 day" : n + " days";
  }

  // What to tell the person when the twin refused or could not be reached.
  function explain(error) {
    const s = error.status;
    if (!s) return "Can't reach your twin. Check the connection and try again.";
    if (s === 401) return "Files has lost access to your twin. Reload the page, and allow Files again if asked.";
    if (s === 403) return "Files may not do this (" + error.message + "). Allow it again from your twin's home page.";
    if (s === 507) return "Not enough room: " + error.message;
    if (s === 429) return "Your twin is busy. Try again in a moment.";
    if (s === 413) return "Too big: " + error.message;
    return error.message || "Your twin refused (" + s + ").";
  }

  // ---- kinds and icons ---------------------------------------------------------------------

  const TEXT_TYPES = new Set(["application/json", "application/xml", "application/javascript", "application/x-sh",
    "application/toml", "application/yaml", "application/x-yaml", "application/sql", "application/x-python"]);
  const TEXT_EXTS = new Set(["txt", "md", "markdown", "rst", "csv", "tsv", "log", "json", "toml", "yaml", "yml", "ini",
    "cfg", "conf", "xml", "html", "htm", "css", "js", "mjs", "ts", "py", "rb", "go", "rs", "c", "h", "cc", "cpp", "hpp",
    "java", "kt", "swift", "sh", "bash", "zsh", "fish", "sql", "tex", "srt", "vtt", "env", "gitignore", "diff", "patch"]);
  const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml", "image/avif",
    "image/bmp", "image/x-icon", "image/vnd.microsoft.icon"]);
  const ARCHIVES = new Set(["zip", "tar", "gz", "tgz", "bz2", "xz", "7z", "rar", "zst"]);
  const DOCS = new Set(["doc", "docx", "odt", "rtf", "pages"]);
  const SHEETS = new Set(["xls", "xlsx", "ods", "numbers"]);
  const SLIDES = new Set(["ppt", "pptx", "odp", "key"]);

  function extOf(name) {
    const dot = name.lastIndexOf(".");
    return dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  }

  function isText(entry) {
    const type = (entry.type || "").split(";")[0];
    return type.startsWith("text/") || TEXT_TYPES.has(type) || TEXT_EXTS.has(extOf(entry.name));
  }

  function isImage(entry) {
    return IMAGE_TYPES.has((entry.type || "").split(";")[0]);
  }

  const EXT_KINDS = { image: ["png", "jpg", "jpeg", "gif", "webp", "svg", "avif", "bmp", "heic", "tif", "tiff"],
    audio: ["mp3", "wav", "ogg", "oga", "flac", "m4a", "opus"], video: ["mp4", "m4v", "mov", "webm", "mkv", "avi"],
    pdf: ["pdf"] };

  function kindOf(entry) {
    if (entry.kind === "folder") return "folder";
    const ext = extOf(entry.name || "");
    // shares and trash items carry no media type: go by the name's extension
    const type = entry.type || Object.keys(EXT_KINDS).filter((k) => EXT_KINDS[k].includes(ext)).map((k) => (k === "pdf" ? "application/pdf" : k + "/")).join("");
    if (type.startsWith("image/")) return "image";
    if (type.startsWith("video/")) return "video";
    if (type.startsWith("audio/")) return "audio";
    if (type === "application/pdf") return "pdf";
    if (ARCHIVES.has(ext)) return "archive";
    if (DOCS.has(ext)) return "doc";
    if (SHEETS.has(ext)) return "sheet";
    if (SLIDES.has(ext)) return "slides";
    if (isText(entry)) return "text";
    return "file";
  }

  function previewable(entry) {
    return entry.kind === "file" && (isText(entry) || (isImage(entry) && entry.size <= IMAGE_LIMIT));
  }

  function icon(entry) {
    const span = document.createElement("span");
    const kind = kindOf(entry);
    span.className = "ficon";
    span.dataset.kind = kind;
    span.setAttribute("aria-hidden", "true");
    if (kind !== "folder") span.textContent = (extOf(entry.name) || kind).slice(0, 4);
    return span;
  }

  function make(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  }

  // ---- the folder shown --------------------------------------------------------------------

  function fromHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    if (raw === "trash" || raw === "shares") return { view: raw, path: "" };
    try {
      return { view: "files", path: raw.split("/").filter(Boolean).map(decodeURIComponent).join("/") };
    } catch (_) {
      return { view: "files", path: "" };
    }
  }

  function go(path) {
    const hash = "#/" + enc(path);
    if (location.hash === hash || (!path && !location.hash)) route();
    else location.hash = hash;
  }

  function route() {
    const where = fromHash();
    setView(where.view);
    if (where.view === "files") load(where.path);
    else if (where.view === "trash") loadTrash();
    else loadShares();
  }

  function setView(name) {
    view = name;
    ui.app.dataset.view = name;
    ui.browse.hidden = name !== "files";
    ui.trash.hidden = name !== "trash";
    ui.shares.hidden = name !== "shares";
    ui.viewFiles.setAttribute("aria-pressed", String(name === "files"));
    ui.viewTrash.setAttribute("aria-pressed", String(name === "trash"));
    ui.viewShares.setAttribute("aria-pressed", String(name === "shares"));
  }

  async function load(path = folder) {
    const seq = ++loadSeq;
    if (path !== folder) ui.app.dataset.state = "loading";
    try {
      const entry = await twin.api(API + "/tree/" + enc(path), { cache: "no-store" });
      if (seq !== loadSeq) return;
      if (entry.kind !== "folder") { // an address of a file: show its folder, then the file
        go(parentOf(entry.path));
        if (previewable(entry)) setTimeout(() => openPreview(entry), 0);
        return;
      }
      folder = entry.path;
      listing = Array.isArray(entry.entries) ? entry.entries : [];
      loaded = true;
      drawCrumbs();
      drawRows();
      ui.browseStatus.textContent = entry.more ? "Showing the first " + listing.length + " items of this folder." : "";
    } catch (error) {
      if (seq !== loadSeq) return;
      if (error.status === 404 && path) {
        toast("The folder " + quote(nameOf(path)) + " is not there any more.", null, null, true);
        go(parentOf(path));
        return;
      }
      ui.app.dataset.state = "failed";
      ui.browseStatus.textContent = "Could not open this folder. " + explain(error);
      ui.browseStatus.classList.add("error");
      return;
    }
    ui.browseStatus.classList.remove("error");
    refreshUsage();
  }

  function drawCrumbs() {
    const parts = folder ? folder.split("/") : [];
    const nodes = [];
    const root = make("a", { href: "#/", textContent: "Files", className: "crumb-link" });
    nodes.push(root);
    let path = "";
    parts.forEach((part, i) => {
      path = join(path, part);
      nodes.push(make("span", { className: "sep", textContent: "/", ariaHidden: "true" }));
      nodes.push(make("a", { href: "#/" + enc(path), textContent: part, className: "crumb-link" }));
    });
    const last = nodes[nodes.length - 1];
    last.setAttribute("aria-current", "page");
    ui.crumbs.replaceChildren(...nodes);
    document.title = (folder ? nameOf(folder) + " · " : "") + "Files";
    ui.dropTarget.textContent = folderLabel(folder);
  }

  function byName(a, b) {
    return a.name.localeCompare(b.name, undefined, { numeric: true, sensitivity: "base" }) || (a.name < b.name ? -1 : 1);
  }

  function sorted(list) {
    return [...list].sort((a, b) => {
      if (a.kind !== b.kind) return a.kind === "folder" ? -1 : 1; // folders first, either way
      const first = sort.key === "size" ? a.size - b.size : sort.key === "modified" ? a.modified - b.modified : byName(a, b);
      return first ? first * sort.dir : byName(a, b);
    });
  }

  function drawRows() {
    const shown = sorted(listing);
    ui.rows.replaceChildren(...shown.map(row));
    for (const th of ui.entries.querySelectorAll("th[aria-sort]")) {
      const key = th.querySelector(".sort").dataset.sort;
      th.setAttribute("aria-sort", key === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
    }
    const none = !shown.length;
    ui.entries.hidden = none;
    ui.empty.hidden = !none;
    ui.emptyTitle.textContent = folder ? "This folder is empty" : "No files yet";
    ui.app.dataset.state = none ? "empty" : "files";
  }

  function row(entry) {
    const tr = make("tr", { className: "entry" });
    tr.dataset.path = entry.path;
    tr.dataset.kind = entry.kind;
    const open = make("button", { type: "button", className: "open", title: entry.name }, make("span", { className: "label", textContent: entry.name }));
    open.addEventListener("click", () => activate(entry));
    open.addEventListener("keydown", (event) => {
      if (event.key === "Delete") { event.preventDefault(); remove(entry); }
      else if (event.key === "F2") { event.preventDefault(); rename(entry); }
    });
    const size = make("td", { className: "col-size" + (entry.kind === "folder" ? " none" : ""), textContent: entry.kind === "folder" ? "—" : human(entry.size) });
    const time = make("time", { textContent: when(entry.modified), title: fullDate(entry.modified) });
    time.dateTime = new Date(entry.modified * 1000).toISOString();
    const more = make("button", { type: "button", className: "more", textContent: "⋯" });
    more.setAttribute("aria-label", "Actions for " + entry.name);
    more.setAttribute("aria-haspopup", "menu");
    more.setAttribute("aria-expanded", "false");
    more.addEventListener("click", () => openMenu(entry, more));
    tr.append(
      make("td", { className: "col-name" }, make("div", { className: "cell" }, icon(entry), open)),
      size,
      make("td", { className: "col-date" }, time),
      make("td", { className: "col-act" }, more),
    );
    return tr;
  }

  function activate(entry) {
    if (entry.kind === "folder") go(entry.path);
    else if (previewable(entry)) openPreview(entry);
    else download(entry);
  }

  function setSort(key) {
    if (sort.key === key) sort.dir = -sort.dir;
    else sort = { key, dir: key === "name" ? 1 : -1 }; // biggest and newest first
    drawRows();
  }

  // ---- storage used ------------------------------------------------------------------------

  let usageSeq = 0;
  async function refreshUsage() {
    const seq = ++usageSeq;
    let usage;
    try {
      usage = await twin.api(API + "/", { cache: "no-store" });
    } catch (_) {
      return; // the bar keeps its last figures
    }
    if (seq !== usageSeq) return;
    const trash = (usage.trash && usage.trash.bytes) || 0;
    const items = (usage.trash && usage.trash.items) || 0;
    const used = usage.used || 0;
    const quota = usage.quota || 0;
    ui.usage.hidden = false;
    ui.trashCount.textContent = items ? String(items) : "";
    const trashNote = trash ? " (" + human(trash) + " in the trash)" : "";
    if (quota > 0) {
      const files = Math.max(0, used - trash);
      ui.usageFiles.style.width = Math.min(100, (files / quota) * 100) + "%";
      ui.usageTrash.style.width = Math.min(100 - Math.min(100, (files / quota) * 100), (trash / quota) * 100) + "%";
      ui.usage.classList.toggle("full", used / quota > 0.9);
      ui.usageText.textContent = human(used) + " of " + human(quota) + " used" + trashNote;
    } else {
      ui.usageFiles.style.width = "0";
      ui.usageTrash.style.width = "0";
      ui.usageText.textContent = human(used) + " used" + trashNote;
    }
    ui.usage.title = (usage.files || 0) + " files, " + (usage.folders || 0) + " folders, " + items + " items in the trash";
  }

  // ---- the row menu ------------------------------------------------------------------------

  let menuFor = null; // {entry, button}

  function openMenu(entry, button) {
    if (menuFor && menuFor.button === button) { closeMenu(true); return; }
    closeMenu(false);
    menuFor = { entry, button };
    const file = entry.kind === "file";
    for (const item of ui.menu.querySelectorAll("[data-act]")) {
      const act = item.dataset.act;
      item.parentElement.hidden = (act === "download" && !file) || (act === "open" && file && !previewable(entry));
      if (act === "open") item.textContent = file ? "Preview" : "Open";
    }
    ui.menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    const box = button.getBoundingClientRect();
    const width = ui.menu.offsetWidth;
    const height = ui.menu.offsetHeight;
    const below = box.bottom + height + 8 < window.innerHeight;
    ui.menu.style.left = Math.max(8, box.right - width) + window.scrollX + "px";
    ui.menu.style.top = (below ? box.bottom + 4 : box.top - height - 4) + window.scrollY + "px";
    menuItems()[0].focus();
  }

  function menuItems() {
    return [...ui.menu.querySelectorAll("li:not([hidden]) [role=menuitem]")];
  }

  function closeMenu(refocus) {
    if (!menuFor) return;
    ui.menu.hidden = true;
    menuFor.button.setAttribute("aria-expanded", "false");
    if (refocus) menuFor.button.focus();
    menuFor = null;
  }

  ui.menu.addEventListener("click", (event) => {
    const item = event.target.closest("[data-act]");
    if (!item || !menuFor) return;
    const entry = menuFor.entry;
    closeMenu(true);
    const acts = { open: activate, download, share: openShare, rename, move: openMove, delete: remove };
    acts[item.dataset.act](entry);
  });

  ui.menu.addEventListener("keydown", (event) => {
    const items = menuItems();
    const at = items.indexOf(document.activeElement);
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      items[(at + step + items.length) % items.length].focus();
    } else if (event.key === "Home" || event.key === "End") {
      event.preventDefault();
      items[event.key === "Home" ? 0 : items.length - 1].focus();
    } else if (event.key === "Escape") {
      event.preventDefault();
      closeMenu(true);
    } else if (event.key === "Tab") {
      closeMenu(true);
    }
  });

  document.addEventListener("click", (event) => {
    if (menuFor && !ui.menu.contains(event.target) && event.target !== menuFor.button) closeMenu(false);
  });
  window.addEventListener("resize", () => closeMenu(false));

  // ---- dialogs -----------------------------------------------------------------------------

  for (const cancel of document.querySelectorAll("dialog .cancel")) {
    cancel.addEventListener("click", () => cancel.closest("dialog").close("cancel"));
  }

  // The answer a <dialog method=dialog> form was closed with ("" when dismissed with Escape).
  function answer(dialog) {
    return new Promise((resolve) => {
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
      dialog.showModal();
    });
  }

  async function confirmWith(title, text, ok) {
    ui.confirmTitle.textContent = title;
    ui.confirmText.textContent = text;
    ui.confirmOk.textContent = ok;
    return (await answer(ui.confirmDialog)) === "ok";
  }

  // A name for a new folder or a rename: checked here first, so the twin's refusals are rare.
  function badName(name) {
    if (!name) return "Type a name.";
    if (name === "." || name === "..") return "That name is reserved.";
    if (/[/\\]/.test(name)) return "A name cannot contain / or \\.";
    if (/[\u0000-\u001f\u007f]/.test(name)) return "A name cannot contain control characters.";
    if (new TextEncoder().encode(name).length > 255) return "That name is too long.";
    return "";
  }

  // Ask for a name; `act(name)` does the work and throws to keep the dialog open.
  function askName({ title, label, ok, value = "", act }) {
    ui.nameTitle.textContent = title;
    $("name-label").textContent = label;
    ui.nameOk.textContent = ok;
    ui.nameInput.value = value;
    ui.nameError.textContent = "";
    ui.nameForm.onsubmit = async (event) => {
      event.preventDefault();
      const name = ui.nameInput.value.trim();
      const bad = badName(name);
      if (bad) { ui.nameError.textContent = bad; return; }
      ui.nameOk.disabled = true;
      try {
        await act(name);
        ui.nameDialog.close("ok");
      } catch (error) {
        ui.nameError.textContent = explain(error);
      } finally {
        ui.nameOk.disabled = false;
      }
    };
    ui.nameDialog.showModal();
    const dot = value.lastIndexOf(".");
    ui.nameInput.focus();
    ui.nameInput.setSelectionRange(0, dot > 0 ? dot : value.length); // the name, not its extension
  }

  function newFolder() {
    askName({
      title: "New folder", label: "Name", ok: "Create",
      act: async (name) => {
        const entry = await twin.api(API + "/folders", { method: "POST", body: { path: join(folder, name) } });
        listing = listing.filter((e) => e.path !== entry.path).concat(entry);
        drawRows();
        focusRow(entry.path);
        toast("Created the folder " + quote(entry.name) + ".");
      },
    });
  }

  function rename(entry) {
    askName({
      title: "Rename", label: "New name", ok: "Rename", value: entry.name,
      act: async (name) => {
        if (name === entry.name) return;
        const moved = await twin.api(API + "/move", {
          method: "POST", body: { from: entry.path, to: join(parentOf(entry.path), name), overwrite: false },
        });
        listing = listing.filter((e) => e.path !== entry.path).concat(moved);
        drawRows();
        focusRow(moved.path);
        toast("Renamed to " + quote(moved.name) + ".");
      },
    });
  }

  function focusRow(path) {
    const tr = [...ui.rows.children].find((node) => node.dataset.path === path);
    if (tr) {
      tr.classList.add("fresh");
      tr.querySelector(".open").focus();
    }
  }

  // ---- move: pick a folder -----------------------------------------------------------------

  let moving = null; // {entry, at (folder shown in the picker), overwrite}

  async function openMove(entry) {
    moving = { entry, at: parentOf(entry.path), overwrite: false };
    ui.moveTitle.textContent = "Move " + quote(entry.name);
    ui.moveError.textContent = "";
    ui.moveDialog.showModal();
    await pick(moving.at);
  }

  function canMoveTo(target) {
    const source = moving.entry.path;
    if (target === parentOf(source)) return "It is already in this folder.";
    if (moving.entry.kind === "folder" && (target === source || target.startsWith(source + "/"))) {
      return "A folder cannot go inside itself.";
    }
    return "";
  }

  async function pick(path) {
    const state = moving;
    ui.moveList.replaceChildren(make("li", { className: "muted small", textContent: "Loading…" }));
    let entry;
    try {
      entry = await twin.api(API + "/tree/" + enc(path), { cache: "no-store" });
    } catch (error) {
      ui.moveError.textContent = explain(error);
      if (path) await pick(parentOf(path));
      return;
    }
    if (state !== moving) return;
    moving.at = entry.path;
    moving.overwrite = false;
    ui.moveOk.textContent = "Move here";
    const crumbs = [make("button", { type: "button", className: "link", textContent: "Files" })];
    crumbs[0].addEventListener("click", () => pick(""));
    let at = "";
    for (const part of entry.path ? entry.path.split("/") : []) {
      at = join(at, part);
      const target = at;
      const b = make("button", { type: "button", className: "link", textContent: part });
      b.addEventListener("click", () => pick(target));
      crumbs.push(make("span", { className: "sep", textContent: "/" }), b);
    }
    crumbs[crumbs.length - 1].setAttribute("aria-current", "location");
    ui.moveCrumbs.replaceChildren(...crumbs);
    const folders = sorted((entry.entries || []).filter((e) => e.kind === "folder"));
    const items = folders.map((f) => {
      const b = make("button", { type: "button", className: "move-to" }, icon(f), make("span", { textContent: f.name }));
      const inside = moving.entry.kind === "folder" && f.path === moving.entry.path;
      b.disabled = inside;
      if (inside) b.title = "A folder cannot go inside itself.";
      b.addEventListener("click", () => pick(f.path));
      return make("li", {}, b);
    });
    if (!items.length) items.push(make("li", { className: "muted small", textContent: "No folders in here." }));
    ui.moveList.replaceChildren(...items);
    const why = canMoveTo(entry.path);
    ui.moveOk.disabled = Boolean(why);
    ui.moveError.textContent = why && why !== "It is already in this folder." ? why : "";
    ui.moveOk.title = why;
  }

  ui.moveForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!moving || canMoveTo(moving.at)) return;
    const { entry, at, overwrite } = moving;
    ui.moveOk.disabled = true;
    try {
      const moved = await twin.api(API + "/move", {
        method: "POST", body: { from: entry.path, to: join(at, entry.name), overwrite },
      });
      ui.moveDialog.close("ok");
      listing = listing.filter((e) => e.path !== entry.path);
      drawRows();
      toast("Moved " + quote(moved.name) + " to " + quote(folderLabel(at)) + ".", "Open folder", () => go(at));
      refreshUsage();
    } catch (error) {
      if (error.status === 412 && entry.kind === "file") {
        ui.moveError.textContent = quote(folderLabel(at)) + " already has something named " + quote(entry.name) + ". Replace it? (The one there goes to the trash.)";
        moving.overwrite = true;
        ui.moveOk.textContent = "Replace";
      } else {
        ui.moveError.textContent = error.status === 412
          ? quote(folderLabel(at)) + " already has something named " + quote(entry.name) + "."
          : explain(error);
      }
    } finally {
      ui.moveOk.disabled = false;
    }
  });
  ui.moveDialog.addEventListener("close", () => { moving = null; });

  // ---- delete, with undo -------------------------------------------------------------------

  async function remove(entry) {
    try {
      const item = await twin.api(API + "/tree/" + enc(entry.path), { method: "DELETE" });
      listing = listing.filter((e) => e.path !== entry.path);
      drawRows();
      refreshUsage();
      toast("Moved " + quote(entry.name) + " to the trash.", "Undo", () => restore(item, true));
    } catch (error) {
      toast("Could not delete " + quote(entry.name) + ". " + explain(error), null, null, true);
    }
  }

  async function restore(item, undo = false) {
    try {
      const entry = await twin.api(API + "/trash/" + encodeURIComponent(item.id) + "/restore", { method: "POST" });
      const where = parentOf(entry.path);
      if (view === "files") await load();
      if (view === "trash") await loadTrash();
      refreshUsage();
      if (undo && where === folder && view === "files") {
        focusRow(entry.path);
        toast("Restored " + quote(entry.name) + ".");
      } else {
        toast("Restored " + quote(entry.name) + " to " + quote(folderLabel(where)) + ".", "Open folder", () => go(where));
      }
    } catch (error) {
      toast("Could not restore " + quote(item.name) + ". " + explain(error), null, null, true);
    }
  }

  // ---- the trash ---------------------------------------------------------------------------

  async function loadTrash() {
    try {
      const answer = await twin.api(API + "/trash", { cache: "no-store" });
      trashItems = Array.isArray(answer.items) ? answer.items : [];
    } catch (error) {
      ui.trashHint.textContent = "Could not open the trash. " + explain(error);
      return;
    }
    document.title = "Trash · Files";
    drawTrash();
    refreshUsage();
  }

  function drawTrash() {
    const items = [...trashItems].sort((a, b) => b.trashed - a.trashed);
    ui.trashRows.replaceChildren(...items.map(trashRow));
    const none = !items.length;
    ui.trashRows.parentElement.hidden = none;
    ui.trashEmpty.hidden = !none;
    ui.emptyTrash.disabled = none;
    const keep = items.find((i) => i.purge_at && i.trashed);
    ui.trashHint.textContent = keep
      ? "Items here are deleted for good " + days(Math.round((keep.purge_at - keep.trashed) / 86400)) + " after you delete them. They still count towards your storage until then."
      : "";
  }

  function trashRow(item) {
    const tr = make("tr", { className: "entry" });
    tr.dataset.id = String(item.id);
    const from = parentOf(item.path);
    const name = make("span", { className: "trash-name" },
      make("span", { className: "label", textContent: item.name }),
      make("span", { className: "small muted from", textContent: "from " + (from ? from.split("/").join(" / ") : "Files") }));
    const time = make("time", { textContent: when(item.trashed), title: "Deleted " + fullDate(item.trashed) + (item.purge_at ? "; gone for good " + fullDate(item.purge_at) : "") });
    const back = make("button", { type: "button", textContent: "Restore" });
    back.setAttribute("aria-label", "Restore " + item.name);
    back.addEventListener("click", () => restore(item));
    const forget = make("button", { type: "button", className: "danger", textContent: "Delete for good" });
    forget.setAttribute("aria-label", "Delete " + item.name + " for good");
    forget.addEventListener("click", () => forgetItem(item));
    tr.append(
      make("td", { className: "col-name" }, make("div", { className: "cell" }, icon(item), name)),
      make("td", { className: "col-size", textContent: item.kind === "folder" ? (item.size ? human(item.size) : "—") : human(item.size) }),
      make("td", { className: "col-date" }, time),
      make("td", { className: "col-act trash-act" }, back, forget),
    );
    return tr;
  }

  async function forgetItem(item) {
    const sure = await confirmWith("Delete " + quote(item.name) + " for good?", "It cannot be brought back afterwards.", "Delete for good");
    if (!sure) return;
    try {
      await twin.api(API + "/trash/" + encodeURIComponent(item.id), { method: "DELETE" });
      trashItems = trashItems.filter((i) => i.id !== item.id);
      drawTrash();
      refreshUsage();
      toast("Deleted " + quote(item.name) + " for good.");
    } catch (error) {
      toast("Could not delete " + quote(item.name) + ". " + explain(error), null, null, true);
    }
  }

  ui.emptyTrash.addEventListener("click", async () => {
    const n = trashItems.length;
    const sure = await confirmWith("Empty the trash?", (n === 1 ? "The item" : "All " + n + " items") + " in the trash will be deleted for good.", "Empty trash");
    if (!sure) return;
    try {
      const done = await twin.api(API + "/trash", { method: "DELETE" });
      trashItems = [];
      drawTrash();
      refreshUsage();
      const removed = done && typeof done.removed === "number" ? done.removed : n;
      toast("Emptied the trash: " + removed + (removed === 1 ? " item" : " items") + " deleted for good.");
    } catch (error) {
      toast("Could not empty the trash. " + explain(error), null, null, true);
    }
  });

  // ---- download ----------------------------------------------------------------------------

  async function download(entry) {
    toast("Downloading " + quote(entry.name) + "…");
    try {
      const response = await twin.request(API + "/content/" + enc(entry.path) + "?download=1", { cache: "no-store" });
      if (!response.ok) throw await failure(response);
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = make("a", { href: url, download: entry.name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      hideToast();
    } catch (error) {
      toast("Could not download " + quote(entry.name) + ". " + explain(error), null, null, true);
    }
  }

  async function failure(response) {
    const error = new Error(response.statusText);
    error.status = response.status;
    try {
      error.message = (await response.json()).error.message;
    } catch (_) { /* not JSON */ }
    return error;
  }

  // ---- preview -----------------------------------------------------------------------------

  let previewing = []; // the previewable files of the folder, in the order shown
  let previewAt = 0;
  let previewUrl = null;
  let previewSeq = 0;

  function openPreview(entry) {
    previewing = sorted(listing).filter(previewable);
    previewAt = previewing.findIndex((e) => e.path === entry.path);
    if (previewAt < 0) { // not in the folder shown (yet): preview it alone
      previewing = [entry];
      previewAt = 0;
    }
    if (!ui.previewDialog.open) ui.previewDialog.showModal();
    showPreview();
  }

  function dropPreviewUrl() {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
  }

  async function showPreview() {
    const seq = ++previewSeq;
    const entry = previewing[previewAt];
    dropPreviewUrl();
    ui.previewTitle.textContent = entry.name;
    ui.previewMeta.textContent = human(entry.size) + " · " + when(entry.modified);
    ui.previewPos.textContent = previewing.length > 1 ? previewAt + 1 + " of " + previewing.length : "";
    ui.previewPrev.disabled = previewAt === 0;
    ui.previewNext.disabled = previewAt === previewing.length - 1;
    ui.previewBody.dataset.kind = isImage(entry) ? "image" : "text";
    ui.previewBody.replaceChildren(make("p", { className: "muted loading", textContent: "Loading…" }));
    const path = API + "/content/" + enc(entry.path);
    try {
      if (isImage(entry)) {
        const response = await twin.request(path, { cache: "no-store" });
        if (!response.ok) throw await failure(response);
        const blob = await response.blob();
        if (seq !== previewSeq) return;
        previewUrl = URL.createObjectURL(blob);
        const img = make("img", { src: previewUrl, alt: entry.name, className: "preview-image" });
        ui.previewBody.replaceChildren(img);
      } else {
        const { text, cut } = await firstText(path);
        if (seq !== previewSeq) return;
        const nodes = [];
        if (cut) nodes.push(make("p", { className: "small muted cut", textContent: "Showing the first " + human(TEXT_LIMIT) + " of " + human(entry.size) + ". Download the file to see all of it." }));
        nodes.push(make("pre", { className: "preview-text", textContent: text || "" }));
        if (!text) nodes.push(make("p", { className: "muted", textContent: "This file is empty." }));
        ui.previewBody.replaceChildren(...nodes);
      }
    } catch (error) {
      if (seq !== previewSeq) return;
      ui.previewBody.replaceChildren(make("p", { className: "status error", textContent: "Could not show this file. " + explain(error) }));
    }
  }

  // The start of a file as text: asks for the first bytes only, and stops reading there even
  // if the twin sends more.
  async function firstText(path) {
    const response = await twin.request(path, { cache: "no-store", headers: { Range: "bytes=0-" + (TEXT_LIMIT - 1) } });
    if (!response.ok) throw await failure(response);
    const reader = response.body.getReader();
    const parts = [];
    let size = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parts.push(value);
      size += value.length;
      if (size >= TEXT_LIMIT) { reader.cancel(); break; }
    }
    const bytes = new Uint8Array(Math.min(size, TEXT_LIMIT));
    let at = 0;
    for (const part of parts) {
      const take = part.subarray(0, bytes.length - at);
      bytes.set(take, at);
      at += take.length;
      if (at >= bytes.length) break;
    }
    const total = Number((response.headers.get("Content-Range") || "").split("/")[1]) || size;
    return { text: new TextDecoder("utf-8").decode(bytes), cut: total > bytes.length };
  }

  function step(by) {
    const next = previewAt + by;
    if (next < 0 || next >= previewing.length) return;
    previewAt = next;
    showPreview();
  }

  ui.previewPrev.addEventListener("click", () => step(-1));
  ui.previewNext.addEventListener("click", () => step(1));
  ui.previewClose.addEventListener("click", () => ui.previewDialog.close());
  ui.previewDownload.addEventListener("click", () => download(previewing[previewAt]));
  ui.previewDialog.addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") { event.preventDefault(); step(-1); }
    else if (event.key === "ArrowRight") { event.preventDefault(); step(1); }
  });
  ui.previewDialog.addEventListener("close", () => {
    previewSeq++;
    dropPreviewUrl();
    ui.previewBody.replaceChildren();
    const entry = previewing[previewAt];
    if (entry) focusRow(entry.path);
  });

  // ---- shares ------------------------------------------------------------------------------

  let sharing = null; // the entry the share dialog is about

  async function fetchShares() {
    const answer = await twin.api(API + "/shares", { cache: "no-store" });
    shares = Array.isArray(answer.items) ? answer.items : [];
    return shares;
  }

  async function loadShares() {
    document.title = "Shared links · Files";
    try {
      await fetchShares();
    } catch (error) {
      ui.shareList.replaceChildren(make("li", { className: "status error", textContent: "Could not list your links. " + explain(error) }));
      return;
    }
    drawShares();
  }

  function drawShares() {
    const all = [...shares].sort((a, b) => b.created - a.created);
    ui.shareList.replaceChildren(...all.map((s) => shareItem(s, true)));
    ui.sharesEmpty.hidden = all.length > 0;
    if (sharing) drawExisting();
  }

  function shareState(share) {
    const now = Date.now() / 1000;
    if (share.expires && share.expires <= now) return { text: "Expired " + when(share.expires), bad: true };
    if (share.max_downloads && share.downloads >= share.max_downloads) return { text: "Used up", bad: true };
    const left = Math.max(1, Math.ceil((share.expires - now) / 86400));
    return { text: "Expires in " + days(left), bad: false };
  }

  function shareItem(share, withName) {
    const li = make("li", { className: "share-item" });
    li.dataset.id = String(share.id);
    const state = shareState(share);
    const downloads = share.max_downloads
      ? share.downloads + " of " + share.max_downloads + " downloads"
      : share.downloads === 1 ? "1 download" : (share.downloads || 0) + " downloads";
    const head = make("div", { className: "share-head" });
    if (withName) {
      const open = make("a", { href: "#/" + enc(parentOf(share.path)), className: "share-name" }, icon(share), make("span", { textContent: share.name || nameOf(share.path) }));
      open.title = "Show in its folder";
      head.append(open);
    }
    const meta = make("span", { className: "small share-meta" + (state.bad ? " bad" : " muted") });
    const expires = make("span", { textContent: state.text, title: share.expires ? "Until " + fullDate(share.expires) : "" });
    meta.append(expires, " · " + downloads + " · made " + when(share.created));
    head.append(meta);
    const url = make("input", { type: "text", readOnly: true, value: share.url || "", className: "copy" });
    url.setAttribute("aria-label", "Link to " + (share.name || share.path));
    const copy = make("button", { type: "button", textContent: "Copy" });
    copy.setAttribute("aria-label", "Copy the link to " + (share.name || share.path));
    const status = make("span", { className: "small muted copied", role: "status" });
    copy.addEventListener("click", () => copyLink(url, status));
    const qr = make("button", { type: "button", textContent: "QR code" });
    qr.setAttribute("aria-label", "QR code of the link to " + (share.name || share.path));
    qr.addEventListener("click", () => showQr(share));
    const revoke = make("button", { type: "button", className: "danger", textContent: "Revoke" });
    revoke.setAttribute("aria-label", "Revoke the link to " + (share.name || share.path));
    revoke.addEventListener("click", () => revokeShare(share));
    li.append(head, make("div", { className: "copy-row" }, url, copy, qr, revoke), status);
    return li;
  }

  function safeQr(share) {
    return typeof share.qr === "string" && share.qr.startsWith("data:image/") ? share.qr : "";
  }

  function showQr(share) {
    ui.qrImg.src = safeQr(share);
    ui.qrDialog.showModal();
  }

  async function copyLink(input, status) {
    let done = false;
    try {
      await navigator.clipboard.writeText(input.value);
      done = true;
    } catch (_) { // the sandbox may keep the clipboard API away: copy the selection instead
      input.focus();
      input.select();
      try { done = document.execCommand("copy"); } catch (_) { done = false; }
    }
    input.focus();
    input.select();
    status.textContent = done ? "Copied." : "Press Ctrl+C (or ⌘C) to copy the selected link.";
  }

  async function revokeShare(share) {
    try {
      await twin.api(API + "/shares/" + encodeURIComponent(share.id), { method: "DELETE" });
      shares = shares.filter((s) => s.id !== share.id);
      drawShares();
      toast("Link revoked: it no longer opens " + quote(share.name || nameOf(share.path)) + ".");
    } catch (error) {
      toast("Could not revoke the link. " + explain(error), null, null, true);
    }
  }

  async function openShare(entry) {
    sharing = entry;
    ui.shareTitle.textContent = "Share " + quote(entry.name);
    ui.shareWhat.textContent = entry.kind === "folder"
      ? "Anyone with the link can see the files in this folder and download them, without signing in."
      : "Anyone with the link can download this file, without signing in.";
    ui.shareDays.value = "7";
    ui.shareLimit.value = "";
    ui.shareError.textContent = "";
    ui.shareMade.hidden = true;
    ui.shareCopied.textContent = "";
    ui.shareExisting.replaceChildren();
    ui.shareNone.hidden = true;
    ui.shareDialog.showModal();
    ui.shareDays.focus();
    try {
      await fetchShares();
      drawExisting();
    } catch (error) {
      ui.shareError.textContent = "Could not list the links. " + explain(error);
    }
  }

  function drawExisting() {
    const mine = shares.filter((s) => s.path === sharing.path).sort((a, b) => b.created - a.created);
    ui.shareExisting.replaceChildren(...mine.map((s) => shareItem(s, false)));
    ui.shareNone.hidden = mine.length > 0;
  }

  ui.shareForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const daysValue = Number(ui.shareDays.value);
    const limitText = ui.shareLimit.value.trim();
    const limit = limitText ? Number(limitText) : null;
    if (!Number.isInteger(daysValue) || daysValue < 1 || daysValue > 365) {
      ui.shareError.textContent = "Choose between 1 and 365 days.";
      return;
    }
    if (limit !== null && (!Number.isInteger(limit) || limit < 1)) {
      ui.shareError.textContent = "A download limit is a whole number, 1 or more; leave it empty for no limit.";
      return;
    }
    ui.shareError.textContent = "";
    ui.shareCreate.disabled = true;
    try {
      const share = await twin.api(API + "/shares", {
        method: "POST", body: { path: sharing.path, days: daysValue, max_downloads: limit },
      });
      shares = shares.filter((s) => s.id !== share.id).concat(share);
      ui.shareUrl.value = share.url;
      ui.shareQr.src = safeQr(share);
      ui.shareQr.hidden = !safeQr(share);
      ui.shareCopied.textContent = "";
      ui.shareMade.hidden = false;
      drawExisting();
      if (view === "shares") drawShares();
      ui.shareUrl.focus();
      ui.shareUrl.select();
    } catch (error) {
      ui.shareError.textContent = explain(error);
    } finally {
      ui.shareCreate.disabled = false;
    }
  });
  ui.shareCopy.addEventListener("click", () => copyLink(ui.shareUrl, ui.shareCopied));
  ui.shareClose.addEventListener("click", () => ui.shareDialog.close());
  ui.shareDialog.addEventListener("close", () => { sharing = null; });

  // ---- uploads -----------------------------------------------------------------------------

  const uploads = []; // what this page sent or will send, as shown in the Uploads panel
  let clashChoice = null; // a choice made "for the other clashes" of one batch

  // Files picked or dropped; `dir` is the folder inside `base` each goes to (dropped folders).
  async function addUploads(items, base, folders = []) {
    if (!items.length && !folders.length) return;
    for (const path of folders) { // empty folders dropped too
      try {
        await twin.api(API + "/folders", { method: "POST", body: { path: join(base, path), parents: true } });
      } catch (error) {
        if (error.status !== 409) toast("Could not create " + quote(path) + ". " + explain(error), null, null, true);
      }
    }
    clashChoice = null;
    const here = new Map(base === folder ? listing.map((e) => [e.name, e]) : []);
    const taken = new Set(here.keys());
    for (const { file, dir } of items) {
      const parent = join(base, dir);
      let name = file.name;
      let overwrite = false;
      const clash = !dir && (here.get(name) || (taken.has(name) ? { kind: "file", name } : null));
      if (clash) {
        const choice = await askClash(name, clash.kind, parent, items.length > 1);
        if (choice === "skip") { track(file, parent, name, false).skip(); continue; }
        if (choice === "both") name = freeName(name, taken);
        else overwrite = true;
      }
      if (!dir) taken.add(name);
      track(file, parent, name, overwrite, Boolean(dir));
    }
    pump();
  }

  function freeName(name, taken) {
    const dot = name.lastIndexOf(".");
    const stem = dot > 0 ? name.slice(0, dot) : name;
    const ext = dot > 0 ? name.slice(dot) : "";
    for (let n = 2; ; n++) {
      const candidate = stem + " (" + n + ")" + ext;
      if (!taken.has(candidate)) return candidate;
    }
  }

  async function askClash(name, kind, parent, many) {
    if (clashChoice && !(clashChoice === "replace" && kind === "folder")) return clashChoice;
    ui.clashText.textContent = quote(folderLabel(parent)) + " already has " + (kind === "folder" ? "a folder" : "a file") + " named " + quote(name) + ".";
    const replace = ui.clashDialog.querySelector('[value="replace"]');
    replace.hidden = kind === "folder"; // a file does not replace a folder
    ui.clashAll.checked = false;
    ui.clashAll.parentElement.hidden = !many;
    const choice = (await answer(ui.clashDialog)) || "skip";
    if (ui.clashAll.checked) clashChoice = choice;
    return choice;
  }

  function track(file, parent, name, overwrite, parents = false) {
    const upload = {
      file, name, path: join(parent, name), parent, overwrite, parents,
      state: "queued", loaded: 0, total: file.size, xhr: null, note: "",
    };
    const bar = make("progress", { max: 100, value: 0 });
    bar.setAttribute("aria-label", "Upload of " + name);
    const note = make("span", { className: "small muted up-note", textContent: "Waiting…" });
    const cancel = make("button", { type: "button", className: "link", textContent: "Cancel" });
    cancel.setAttribute("aria-label", "Cancel the upload of " + name);
    cancel.addEventListener("click", () => cancelUpload(upload));
    const li = make("li", { className: "upload" },
      make("div", { className: "up-head" }, make("span", { className: "up-name", textContent: name, title: upload.path }), cancel),
      bar, note);
    li.dataset.path = upload.path;
    li.dataset.state = "queued";
    Object.assign(upload, { li, bar, note: note, cancel, skip: () => finish(upload, "skipped", "Skipped: already there") });
    uploads.push(upload);
    ui.uploadList.append(li);
    ui.uploads.hidden = false;
    drawTotal();
    return upload;
  }

  function active() {
    return uploads.filter((u) => u.state === "queued" || u.state === "uploading");
  }

  function pump() {
    const running = uploads.filter((u) => u.state === "uploading").length;
    const waiting = uploads.filter((u) => u.state === "queued");
    for (const upload of waiting.slice(0, Math.max(0, PARALLEL - running))) send(upload);
    drawTotal();
  }

  function send(upload) {
    const xhr = new XMLHttpRequest();
    upload.xhr = xhr;
    upload.state = "uploading";
    upload.li.dataset.state = "uploading";
    upload.note.textContent = "Starting…";
    const query = new URLSearchParams();
    if (upload.parents) query.set("parents", "1");
    // the file keeps the time it was last changed on this device
    if (upload.file.lastModified) query.set("modified", String(upload.file.lastModified / 1000));
    xhr.open("PUT", "/api" + API + "/content/" + enc(upload.path) + (query.size ? "?" + query : ""));
    xhr.setRequestHeader("Authorization", "Bearer " + twin.token);
    xhr.setRequestHeader("Content-Type", upload.file.type || "application/octet-stream");
    if (!upload.overwrite) xhr.setRequestHeader("If-None-Match", "*");
    xhr.upload.addEventListener("progress", (event) => {
      upload.loaded = event.loaded;
      if (event.lengthComputable) upload.total = event.total;
      const percent = upload.total ? Math.floor((upload.loaded / upload.total) * 100) : 100;
      upload.bar.value = percent;
      upload.note.textContent = human(upload.loaded) + " of " + human(upload.total) + " · " + percent + "%";
      drawTotal();
    });
    xhr.addEventListener("load", () => loadedUpload(upload, xhr));
    xhr.addEventListener("error", () => finish(upload, "failed", "Can't reach your twin; nothing was saved."));
    xhr.addEventListener("abort", () => finish(upload, "cancelled", "Cancelled; nothing was saved."));
    xhr.send(upload.file);
  }

  async function loadedUpload(upload, xhr) {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status === 200 || xhr.status === 201) {
      upload.loaded = upload.total;
      upload.bar.value = 100;
      finish(upload, "done", human(upload.total) + (xhr.status === 200 ? " · replaced" : " · uploaded"));
      if (body && upload.parent === folder) {
        listing = listing.filter((e) => e.path !== body.path).concat(body);
        scheduleDraw();
      }
      return;
    }
    const message = body && body.error ? body.error.message : xhr.statusText;
    if (xhr.status === 412 && !upload.overwrite) { // it appeared meanwhile (or in a dropped folder)
      upload.state = "asking";
      const choice = await askClash(upload.name, "file", upload.parent, false);
      if (choice === "skip") { finish(upload, "skipped", "Skipped: already there"); return; }
      if (choice === "both") {
        const names = await namesIn(upload.parent);
        upload.name = freeName(upload.name, names);
        upload.path = join(upload.parent, upload.name);
        upload.li.querySelector(".up-name").textContent = upload.name;
        upload.li.dataset.path = upload.path;
      } else {
        upload.overwrite = true;
      }
      upload.state = "queued";
      upload.loaded = 0;
      pump();
      return;
    }
    finish(upload, "failed", explain({ status: xhr.status, message }));
  }

  async function namesIn(path) {
    try {
      const entry = await twin.api(API + "/tree/" + enc(path), { cache: "no-store" });
      return new Set((entry.entries || []).map((e) => e.name));
    } catch (_) {
      return new Set();
    }
  }

  function finish(upload, state, text) {
    if (upload.state === "done" || upload.state === "cancelled") return;
    upload.state = state;
    upload.xhr = null;
    upload.li.dataset.state = state;
    upload.note.textContent = text;
    upload.note.classList.toggle("error", state === "failed");
    upload.cancel.hidden = true;
    pump();
    if (!active().length) {
      refreshUsage();
      if (view === "files") load();
    }
  }

  function cancelUpload(upload) {
    if (upload.state === "uploading" && upload.xhr) upload.xhr.abort();
    else if (upload.state === "queued") finish(upload, "cancelled", "Cancelled");
  }

  let drawQueued = false;
  function scheduleDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => { drawQueued = false; drawRows(); });
  }

  function drawTotal() {
    const counted = uploads.filter((u) => u.state !== "skipped" && u.state !== "cancelled");
    const total = counted.reduce((n, u) => n + u.total, 0);
    const sent = counted.reduce((n, u) => n + (u.state === "done" ? u.total : u.state === "failed" ? 0 : u.loaded), 0);
    const done = uploads.filter((u) => u.state === "done").length;
    const failed = uploads.filter((u) => u.state === "failed").length;
    const busy = active().length;
    ui.uploadsTotal.value = total ? Math.floor((sent / total) * 100) : busy ? 0 : 100;
    ui.uploadsCancel.hidden = !busy;
    ui.uploadsClose.hidden = Boolean(busy);
    ui.uploads.dataset.state = busy ? "busy" : "idle";
    let text;
    if (busy) text = done + " of " + (done + busy) + " uploaded · " + human(sent) + " of " + human(total);
    else if (failed) text = done + " uploaded, " + failed + " failed";
    else text = done === 1 ? "1 file uploaded" : done + " files uploaded";
    ui.uploadsSummary.textContent = text;
  }

  ui.uploadsCancel.addEventListener("click", () => { for (const u of [...active()].reverse()) cancelUpload(u); });
  ui.uploadsClose.addEventListener("click", () => {
    for (const u of uploads.filter((x) => x.state !== "queued" && x.state !== "uploading" && x.state !== "asking")) {
      u.li.remove();
      uploads.splice(uploads.indexOf(u), 1);
    }
    ui.uploads.hidden = uploads.length === 0;
  });
  window.addEventListener("beforeunload", (event) => { if (active().length) event.preventDefault(); });

  ui.upload.addEventListener("click", () => ui.picker.click());
  ui.picker.addEventListener("change", () => {
    const files = [...ui.picker.files];
    ui.picker.value = "";
    addUploads(files.map((file) => ({ file, dir: "" })), folder);
  });

  // ---- drag and drop -----------------------------------------------------------------------

  let dragDepth = 0;
  const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");

  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event) || view !== "files") return;
    event.preventDefault();
    dragDepth++;
    ui.drop.hidden = false;
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event) || view !== "files") return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) ui.drop.hidden = true;
  });
  document.addEventListener("drop", async (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    ui.drop.hidden = true;
    if (view !== "files") return;
    const base = folder;
    const entries = [...event.dataTransfer.items]
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
    if (entries.some((e) => e && e.isDirectory)) {
      const items = [];
      const folders = [];
      for (const entry of entries) if (entry) await walk(entry, "", items, folders);
      addUploads(items, base, folders);
    } else {
      addUploads([...event.dataTransfer.files].map((file) => ({ file, dir: "" })), base);
    }
  });

  // A dropped folder, read through the browser's file system entries.
  async function walk(entry, dir, items, folders) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      items.push({ file, dir });
      return;
    }
    const here = join(dir, entry.name);
    folders.push(here);
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) await walk(child, here, items, folders);
    }
  }

  // ---- toast -------------------------------------------------------------------------------

  let toastTimer = null;
  let toastDo = null;
  function toast(text, action, onAction, bad = false) {
    clearTimeout(toastTimer);
    ui.toastText.textContent = text;
    ui.toastAction.textContent = action || "";
    ui.toastAction.hidden = !action;
    ui.toast.classList.toggle("bad", bad);
    toastDo = onAction || null;
    ui.toast.hidden = false;
    toastTimer = setTimeout(hideToast, bad ? UNDO_FOR * 2 : UNDO_FOR);
  }

  function hideToast() {
    clearTimeout(toastTimer);
    ui.toast.hidden = true;
    toastDo = null;
  }

  ui.toastAction.addEventListener("click", () => { const act = toastDo; hideToast(); if (act) act(); });
  ui.toastClose.addEventListener("click", hideToast);

  // ---- wiring ------------------------------------------------------------------------------

  ui.viewFiles.addEventListener("click", () => go(folder));
  ui.viewTrash.addEventListener("click", () => { location.hash = "#trash"; });
  ui.viewShares.addEventListener("click", () => { location.hash = "#shares"; });
  ui.newFolder.addEventListener("click", newFolder);
  for (const button of ui.entries.querySelectorAll(".sort")) {
    button.addEventListener("click", () => setSort(button.dataset.sort));
  }
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => { // changes made elsewhere (WebDAV, a phone)
    if (document.visibilityState === "visible" && loaded && view === "files" && !active().length) load();
  });
  setInterval(() => { if (view === "files" && loaded && !menuFor) drawRows(); }, 60000); // "just now" ages

  route();
});
