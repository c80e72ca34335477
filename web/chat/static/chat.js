// The Chat experience: the conversations (most recent first, live), one conversation's messages
// with replies, reactions, edits, tombstones, files and delivery ticks, a composer that uploads
// files with a progress bar, new chats and groups, a group's members, mute, leave and block,
// marking read and background notifications, through /api/chat/… with this page's token.
// Everything a person or another twin wrote is put on the page as text, never as markup
// (format.js builds the light markdown out of DOM nodes).
document.addEventListener("DOMContentLoaded", () => {
  const API = "/chat";
  const LIMIT = 4000; // characters in a message
  const COUNT_FROM = 3500; // the counter shows from here
  const PAGE = 50;
  const EMOJI = ["👍", "❤️", "😂", "😮", "😢", "🙏", "🎉", "👀"];
  const THUMB_LIMIT = 16 * 1024 * 1024; // bigger images are offered for download only
  const NOTIFY_WITHIN = 120; // s: older messages are history, not news
  const fmt = window.chatFormat;
  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $("chat-app"), newChat: $("new-chat"), newGroup: $("new-group"),
    liveDot: $("live-dot"), liveText: $("live-text"), notifyOffer: $("notify-offer"), notifyOn: $("notify-on"),
    notifyState: $("notify-state"), notice: $("notice"), list: $("conversation-list"), listEmpty: $("list-empty"),
    nothingOpen: $("nothing-open"), body: $("conversation-body"), back: $("back"),
    initial: $("conversation-initial"), name: $("conversation-name"), sub: $("conversation-sub"), openInfo: $("open-info"),
    messages: $("messages"), older: $("older"), messageList: $("message-list"), messagesEmpty: $("messages-empty"),
    inactive: $("inactive"), composer: $("composer"), replyBar: $("reply-bar"), replyWho: $("reply-who"),
    replyText: $("reply-text"), replyCancel: $("reply-cancel"), editBar: $("edit-bar"), editCancel: $("edit-cancel"),
    pending: $("pending"), attach: $("attach"), picker: $("picker"), text: $("text"), send: $("send"),
    composeError: $("compose-error"), counter: $("counter"),
    info: $("info"), infoTitle: $("info-title"), closeInfo: $("close-info"), renameForm: $("rename-form"),
    rename: $("rename"), memberList: $("member-list"), addForm: $("add-form"), addWho: $("add-who"),
    addNone: $("add-none"), infoStatus: $("info-status"), mute: $("mute"), block: $("block"), leave: $("leave"), infoHint: $("info-hint"),
    newDialog: $("new-dialog"), peopleList: $("people-list"), peopleEmpty: $("people-empty"), newError: $("new-error"),
    groupDialog: $("group-dialog"), groupForm: $("group-form"), groupName: $("group-name"),
    groupPeople: $("group-people"), groupEmpty: $("group-empty"), groupError: $("group-error"),
    confirmDialog: $("confirm-dialog"), confirmTitle: $("confirm-title"), confirmText: $("confirm-text"),
    confirmOk: $("confirm-ok"), emojiPicker: $("emoji-picker"),
    toast: $("toast"), toastText: $("toast-text"), toastClose: $("toast-close"),
  };

  const conversations = new Map(); // id → conversation, as the twin sent it
  let loaded = false;
  let openId = null; // the conversation on screen
  let messages = []; // its messages, in conversation order
  let more = false; // it has older ones than these
  const listNodes = new Map(); // conversation id → {key, node}
  const messageNodes = new Map(); // message id → {key, node}
  const dayNodes = new Map();
  const thumbs = new Map(); // attachment id → a promise of an object URL
  const drafts = new Map(); // conversation id → {text, reply, pending, upload}
  const readSent = new Map(); // conversation id → the message id last marked read
  const seen = new Set(); // message ids met so far: only a new one from someone else notifies
  let editing = null; // the message being edited
  let people = null; // the contacts one can chat with, once asked for
  let stream = null;
  let fetching = 0; // loads under way: live events that arrive meanwhile are applied again after
  let late = [];
  let refreshTimer = null;
  let infoOpen = false;
  let sending = false;
  let restarted = 0;

  // ---- words -------------------------------------------------------------------------------

  function make(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  const enc = encodeURIComponent;
  const quote = (text) => "“" + text + "”";
  const plural = (n, one, many) => n + " " + (n === 1 ? one : many);
  const initialOf = (name) => ((name || "").trim()[0] || "?").toUpperCase();
  const length = (text) => [...text].length; // characters as the twin counts them
  const capital = (text) => text.slice(0, 1).toUpperCase() + text.slice(1);
  const narrow = () => window.matchMedia("(max-width: 720px)").matches;

  function human(bytes) {
    if (bytes < 1024) return bytes + " B";
    const units = ["KB", "MB", "GB", "TB"];
    let n = bytes / 1024;
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (n < 10 ? n.toFixed(1) : Math.round(n)) + " " + units[i];
  }

  const date = (seconds) => new Date(seconds * 1000);
  const dayKey = (seconds) => { const d = date(seconds); return d.getFullYear() + "-" + d.getMonth() + "-" + d.getDate(); };
  const timeOf = (seconds) => date(seconds).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const fullTime = (seconds) => date(seconds).toLocaleString();

  function daysAgo(seconds) {
    const then = date(seconds);
    const today = new Date();
    const a = Date.UTC(then.getFullYear(), then.getMonth(), then.getDate());
    const b = Date.UTC(today.getFullYear(), today.getMonth(), today.getDate());
    return Math.round((b - a) / 86400000);
  }

  function dayLabel(seconds) {
    const ago = daysAgo(seconds);
    if (ago === 0) return "Today";
    if (ago === 1) return "Yesterday";
    const sameYear = date(seconds).getFullYear() === new Date().getFullYear();
    return date(seconds).toLocaleDateString([], { weekday: "long", day: "numeric", month: "long", ...(sameYear ? {} : { year: "numeric" }) });
  }

  function listTime(seconds) {
    if (!seconds) return "";
    const ago = daysAgo(seconds);
    if (ago === 0) return timeOf(seconds);
    if (ago === 1) return "Yesterday";
    if (ago < 7 && ago > 0) return date(seconds).toLocaleDateString([], { weekday: "short" });
    return date(seconds).toLocaleDateString([], { day: "numeric", month: "short", year: "2-digit" });
  }

  // What to tell the person when the twin refused or could not be reached.
  function explain(error) {
    const s = error.status;
    if (!s) return "Can't reach your twin. Check the connection and try again.";
    if (s === 401) return "Chat has lost access to your twin. Reload the page, and allow Chat again if asked.";
    if (s === 403 && error.code !== "forbidden") return "Chat may not do this (" + error.message + "). Allow it again from your twin's home page.";
    if (s === 423) return "Your twin is locked. Unlock it from its home page, then try again.";
    if (s === 429) return "Your twin is busy. Try again in a moment.";
    if (s >= 500) return "Your twin failed (" + s + "): " + error.message + ". Try again; if it goes on, look at the twin's log.";
    const text = capital(error.message || "your twin refused (" + s + ")");
    return /[.!?]$/.test(text) ? text : text + ".";
  }

  function showNotice(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = !text;
  }

  function liveStatus(state, text) {
    ui.liveDot.className = "dot " + state;
    ui.liveText.textContent = text;
  }

  // ---- the twin ----------------------------------------------------------------------------

  const path = (id, rest = "") => API + "/conversations/" + enc(id) + rest;

  // A load from the twin; live events that arrive while it runs are applied again after it,
  // so an answer a moment old never wins over a newer event.
  async function fetched(work) {
    fetching += 1;
    try {
      return await work();
    } finally {
      fetching -= 1;
      if (!fetching && late.length) {
        const again = late;
        late = [];
        for (const [kind, item] of again) apply(kind, item, true);
      }
    }
  }

  async function loadConversations() {
    const answer = await fetched(async () => {
      const got = await twin.api(API + "/conversations", { cache: "no-store" });
      const list = Array.isArray(got.conversations) ? got.conversations : [];
      const ids = new Set(list.map((c) => c.id));
      for (const id of [...conversations.keys()]) if (!ids.has(id)) conversations.delete(id);
      for (const c of list) conversations.set(c.id, c);
      return got;
    });
    loaded = true;
    ui.app.dataset.state = "ready";
    return answer;
  }

  async function loadPeople() {
    const answer = await twin.api(API + "/people", { cache: "no-store" });
    people = Array.isArray(answer.people) ? answer.people : [];
    return people;
  }

  async function loadLatest() {
    const id = openId;
    if (!id) return;
    await fetched(async () => {
      const answer = await twin.api(path(id, "/messages?limit=" + PAGE), { cache: "no-store" });
      if (openId !== id) return;
      mergeLatest(answer.messages || [], Boolean(answer.more));
    });
    drawMessages();
  }

  // The latest page replaces what it covers; older pages loaded before stay in front of it.
  function mergeLatest(page, pageMore) {
    const ids = new Set(page.map((m) => m.id));
    for (const m of page) seen.add(m.id);
    let before = [];
    if (page.length) {
      const at = messages.findIndex((m) => m.id === page[0].id);
      if (at >= 0) before = messages.slice(0, at).filter((m) => !ids.has(m.id));
      else more = pageMore;
    } else {
      more = false;
    }
    if (!messages.length) more = pageMore;
    messages = before.concat(page);
  }

  async function loadOlder() {
    const id = openId;
    if (!id || !messages.length) return;
    ui.older.disabled = true;
    try {
      const first = messages[0].id;
      const answer = await fetched(() => twin.api(path(id, "/messages?limit=" + PAGE + "&before=" + enc(first)), { cache: "no-store" }));
      if (openId !== id) return;
      const known = new Set(messages.map((m) => m.id));
      const older = (answer.messages || []).filter((m) => !known.has(m.id));
      for (const m of older) seen.add(m.id);
      more = Boolean(answer.more);
      const fromBottom = ui.messages.scrollHeight - ui.messages.scrollTop;
      messages = older.concat(messages);
      drawMessages({ stay: false });
      ui.messages.scrollTop = ui.messages.scrollHeight - fromBottom;
    } catch (error) {
      toast("Could not load earlier messages. " + explain(error), true);
    } finally {
      ui.older.disabled = false;
    }
  }

  // ---- live --------------------------------------------------------------------------------

  function apply(kind, item, again = false) {
    if (!item || typeof item !== "object" || !item.id) return;
    if (fetching && !again) late.push([kind, item]);
    if (kind === "conversation") onConversation(item);
    else if (kind === "message") onMessage(item, again);
  }

  function onConversation(c) {
    conversations.set(c.id, c);
    scheduleDraw();
    if (c.id === openId) markRead();
  }

  function onMessage(m, again) {
    if (!again) notify(m);
    seen.add(m.id);
    const c = conversations.get(m.conversation);
    if (c && c.last && c.last.id === m.id) { c.last = m; scheduleDraw(); }
    if (m.conversation !== openId) return;
    const at = messages.findIndex((x) => x.id === m.id);
    if (at >= 0) messages[at] = m;
    else {
      messages.push(m);
      // where a new message stands in conversation order is the twin's to say
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => loadLatest().catch(() => {}), 400);
    }
    scheduleDraw();
    if (!m.mine) markRead();
  }

  function startLive() {
    if (stream) stream.close();
    liveStatus("", "Connecting…");
    let first = true;
    const begin = () => { if (first) { first = false; start(); return true; } return false; };
    setTimeout(begin, 5000); // a stream slow to answer does not keep the list away
    stream = twin.live(API + "/stream", {
      onChange: (item) => apply("message", item),
      onEvent: (kind, item) => apply(kind, item),
      onReady: () => {
        liveStatus("ok", "Live");
        // Loaded after the stream is up, so nothing between the two is missed; after a
        // reconnect, loaded again in case the twin could not replay everything.
        if (!begin()) resync();
      },
      onError: (error, { final }) => {
        begin();
        if (final && (error.status === 410 || error.status === 400) && Date.now() - restarted > 60000) {
          restarted = Date.now();
          startLive();
          return;
        }
        if (final) liveStatus("bad", "Not live: " + explain(error));
        else liveStatus("wait", "Reconnecting to your twin…");
      },
    });
  }

  async function start() {
    try {
      await loadConversations();
      showNotice("");
    } catch (error) {
      ui.app.dataset.state = "failed";
      showNotice("Could not load your conversations. " + explain(error));
      setTimeout(start, 5000);
      return;
    }
    route();
  }

  async function resync() {
    try {
      await loadConversations();
      scheduleDraw();
      await loadLatest();
      showNotice("");
    } catch (_) { /* the live status says so */ }
  }

  // ---- notifications -----------------------------------------------------------------------

  // The twin's shell shows them (twin.notifications): the page's own origin may not.
  let notifyPermission = "unavailable";

  function notify(m) {
    if (seen.has(m.id) || m.mine || m.kind !== "text" || m.deleted || m.blocked || m.edited) return;
    if (notifyPermission !== "granted" || document.visibilityState === "visible") return;
    if (!m.received || m.received < Date.now() / 1000 - NOTIFY_WITHIN) return;
    const c = conversations.get(m.conversation);
    if (c && c.muted) return;
    const title = c && c.kind === "group" ? m.sender_name + " in " + c.name : m.sender_name;
    const files = (m.attachments || []).length;
    const body = fmt.excerpt(m.text || "", 140) || (files ? "📎 " + plural(files, "file", "files") : "");
    twin.notifications.show({ title, body, tag: m.conversation }); // one at a time per conversation
  }

  async function drawNotify() {
    notifyPermission = await twin.notifications.state();
    ui.notifyOffer.hidden = notifyPermission !== "default";
  }

  async function askNotify() {
    notifyPermission = await twin.notifications.ask();
    ui.notifyOffer.hidden = notifyPermission !== "default";
    ui.notifyState.hidden = false;
    ui.notifyState.textContent = notifyPermission === "granted"
      ? "Notifications are on: you are told of new messages while this tab is in the background (not for muted conversations)."
      : "Your browser did not allow notifications for this page. You can allow them in its site settings.";
  }

  // ---- drawing -----------------------------------------------------------------------------

  let drawQueued = false;
  function scheduleDraw() {
    if (drawQueued) return;
    drawQueued = true;
    setTimeout(() => {
      drawQueued = false;
      drawList();
      if (openId) { drawHeader(); drawMessages(); drawComposer(); if (infoOpen) drawInfo(); }
    }, 0);
  }

  const sorted = () => [...conversations.values()].sort((a, b) => (b.updated || 0) - (a.updated || 0));

  function drawList() {
    const list = sorted();
    const nodes = list.map((c) => {
      const key = JSON.stringify([c, c.id === openId, listTime(c.updated)]);
      const held = listNodes.get(c.id);
      if (held && held.key === key) return held.node;
      const node = conversationItem(c);
      listNodes.set(c.id, { key, node });
      return node;
    });
    if (!sameChildren(ui.list, nodes)) ui.list.replaceChildren(...nodes);
    ui.list.hidden = !list.length;
    ui.listEmpty.hidden = !loaded || list.length > 0;
    const unread = list.filter((c) => !c.muted).reduce((n, c) => n + (c.unread || 0), 0);
    document.title = (unread ? "(" + unread + ") " : "") + "Chat";
  }

  function sameChildren(parent, nodes) {
    const now = parent.children;
    if (now.length !== nodes.length) return false;
    return nodes.every((node, i) => now[i] === node);
  }

  function lastWords(c) {
    const m = c.last;
    if (!m) return c.kind === "group" ? "No messages yet" : "No messages yet: say hello";
    if (m.kind === "event") return eventWords(m);
    let words = m.deleted ? "This message was deleted" : fmt.excerpt(m.text || "", 90);
    if (!words && m.attachments && m.attachments.length) words = "📎 " + m.attachments.map((a) => a.name).join(", ");
    if (m.mine) return "You: " + words;
    if (c.kind === "group") return (m.sender_name || "").split(" ")[0] + ": " + words;
    return words;
  }

  // A group change names what was done ("added Charles"); who did it comes first.
  function eventWords(m) {
    const text = m.text || "";
    const who = m.mine ? "You" : m.sender_name || "Someone";
    return text.startsWith(who + " ") ? text : who + " " + text;
  }

  function conversationItem(c) {
    const li = make("li", { className: "conv" });
    li.dataset.id = c.id;
    li.dataset.kind = c.kind;
    if (c.muted) li.dataset.muted = "true";
    if (c.unread && !c.muted) li.dataset.unread = "true";
    if (!c.active) li.dataset.inactive = "true";
    const link = make("a", { className: "conv-link", href: "#c/" + enc(c.id) });
    if (c.id === openId) link.setAttribute("aria-current", "page");
    const name = make("span", { className: "conv-name", textContent: c.name, dir: "auto" });
    const top = make("span", { className: "conv-top" }, name);
    if (c.muted) top.append(make("span", { className: "muted-mark", textContent: "🔕", title: "Muted", ariaLabel: "muted" }));
    top.append(make("time", { className: "conv-time small muted", textContent: listTime(c.updated), title: c.updated ? fullTime(c.updated) : "" }));
    const bottom = make("span", { className: "conv-bottom" },
      make("span", { className: "conv-last small", textContent: lastWords(c), dir: "auto" }));
    if (c.unread) {
      const badge = make("span", { className: "unread", textContent: c.unread > 99 ? "99+" : String(c.unread) });
      badge.title = plural(c.unread, "unread message", "unread messages");
      bottom.append(badge);
    }
    link.append(make("span", { className: "initial" + (c.kind === "group" ? " group" : ""), textContent: c.kind === "group" ? "#" : initialOf(c.name), ariaHidden: "true" }),
      make("span", { className: "conv-text" }, top, bottom));
    li.append(link);
    return li;
  }

  function setPane(pane) {
    ui.app.dataset.pane = pane;
  }

  function current() {
    return openId ? conversations.get(openId) || null : null;
  }

  function others(c) {
    return (c.members || []).filter((p) => !p.me);
  }

  function drawHeader() {
    const c = current();
    if (!c) return;
    ui.name.textContent = c.name;
    ui.initial.textContent = c.kind === "group" ? "#" : initialOf(c.name);
    ui.initial.classList.toggle("group", c.kind === "group");
    const bits = [];
    if (c.kind === "group") {
      const names = (c.members || []).filter((p) => !p.me).map((p) => p.name);
      if ((c.members || []).some((p) => p.me)) names.push("you");
      bits.push(plural(names.length, "member", "members") + ": " + (names.length > 5 ? names.slice(0, 5).join(", ") + "…" : names.join(", ")));
    } else {
      const other = others(c)[0];
      if (other && other.blocked) bits.push("blocked: their messages do not reach you");
      else if (other && !other.contact) bits.push("no longer a contact");
    }
    if (c.muted) bits.push("muted");
    if (!c.active) bits.push(c.kind === "group" ? "you are not in this group any more" : "closed");
    ui.sub.textContent = bits.join(" · ");
    ui.openInfo.textContent = c.kind === "group" ? "Group info" : "Details";
    ui.openInfo.setAttribute("aria-expanded", String(infoOpen));
  }

  // ---- messages ----------------------------------------------------------------------------

  function drawMessages({ stay = true } = {}) {
    const c = current();
    if (!c) return;
    const box = ui.messages;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    const group = c.kind === "group";
    const nodes = [];
    let lastDay = null;
    let prev = null;
    for (const m of messages) {
      const day = dayKey(m.sent);
      if (day !== lastDay) {
        nodes.push(dayNode(m.sent, day));
        lastDay = day;
        prev = null;
      }
      const named = group && !m.mine && m.kind !== "event" && (!prev || prev.kind === "event" || prev.sender !== m.sender);
      const key = JSON.stringify([m, named, group, c.active]);
      const held = messageNodes.get(m.id);
      if (held && held.key === key) nodes.push(held.node);
      else {
        const node = messageItem(m, { named, group, active: c.active });
        messageNodes.set(m.id, { key, node });
        nodes.push(node);
      }
      prev = m;
    }
    if (!sameChildren(ui.messageList, nodes)) ui.messageList.replaceChildren(...nodes);
    ui.messagesEmpty.hidden = messages.length > 0;
    ui.older.hidden = !more;
    if (stay && atBottom) box.scrollTop = box.scrollHeight;
  }

  function dayNode(seconds, day) {
    const label = dayLabel(seconds);
    const key = day + label;
    if (!dayNodes.has(key)) {
      const li = make("li", { className: "day" }, make("span", { textContent: label }));
      li.setAttribute("role", "separator");
      dayNodes.set(key, li);
    }
    return dayNodes.get(key);
  }

  const TICKS = {
    queued: ["◷", "Waiting to be sent"],
    sent: ["✓", "Sent"],
    delivered: ["✓✓", "Delivered"],
    read: ["✓✓", "Read"],
    failed: ["⚠", "Not delivered"],
  };

  function ticks(m, group) {
    const [mark, words] = TICKS[m.status] || ["", m.status || ""];
    const span = make("span", { className: "ticks", textContent: mark });
    span.dataset.status = m.status || "";
    let title = words;
    if (group && m.recipients) {
      title += " · delivered to " + m.delivered + " of " + m.recipients + ", read by " + m.read;
    }
    span.title = title;
    span.setAttribute("aria-label", title);
    span.setAttribute("role", "img");
    return span;
  }

  function messageItem(m, { named, group, active }) {
    if (m.kind === "event") {
      const li = make("li", { className: "event" },
        make("span", { className: "event-text", textContent: eventWords(m), dir: "auto" }),
        make("time", { className: "small muted", textContent: " · " + timeOf(m.sent), title: fullTime(m.sent) }));
      li.dataset.id = m.id;
      return li;
    }
    const li = make("li", { className: "message " + (m.mine ? "mine" : "theirs") });
    li.dataset.id = m.id;
    if (m.deleted) li.classList.add("deleted");
    if (m.blocked) li.classList.add("blocked");
    if (m.mine) li.dataset.status = m.status || "";
    const bubble = make("div", { className: "bubble" });
    if ((named || m.blocked) && !m.mine) {
      const sender = make("p", { className: "sender", textContent: m.sender_name, dir: "auto" });
      if (m.blocked) sender.append(" ", make("span", { className: "blocked-mark", textContent: "blocked", title: "You blocked this twin: its new messages do not reach you" }));
      bubble.append(sender);
    }
    if (m.reply_to && !m.deleted) bubble.append(replyQuote(m.reply_to));
    if (m.deleted) {
      bubble.append(make("p", { className: "tombstone", textContent: "This message was deleted" }));
    } else {
      if (m.text) {
        const body = make("div", { className: "body", dir: "auto" });
        body.append(fmt.render(m.text));
        bubble.append(body);
      }
      if (m.attachments && m.attachments.length) {
        bubble.append(make("ul", { className: "attachments" }, ...m.attachments.map((a) => attachmentItem(a))));
      }
    }
    const meta = make("p", { className: "meta small" });
    if (m.edited && !m.deleted) meta.append(make("span", { className: "edited", textContent: "(edited)", title: "Edited " + fullTime(m.edited) }), " ");
    meta.append(make("time", { textContent: timeOf(m.sent), title: "Sent " + fullTime(m.sent) }));
    if (m.mine && m.status && !m.deleted) meta.append(" ", ticks(m, group));
    bubble.append(meta);
    if (m.mine && m.status === "failed") {
      bubble.append(make("p", { className: "failed-hint small" },
        "Not delivered: their twin could not be reached. See how delivery goes in ",
        make("a", { href: "/x/contacts/", textContent: "Contacts" }), "."));
    }
    li.append(bubble);
    if (!m.deleted && m.reactions && m.reactions.length) {
      const chips = make("ul", { className: "reactions" });
      chips.setAttribute("aria-label", "Reactions");
      for (const r of m.reactions) {
        const chip = make("button", { type: "button", className: "chip", textContent: r.emoji + " " + r.count });
        chip.dataset.emoji = r.emoji;
        chip.setAttribute("aria-pressed", String(Boolean(r.mine)));
        chip.title = (r.names || []).join(", ") + (active ? (r.mine ? " · click to take yours back" : " · click to add yours") : "");
        chip.setAttribute("aria-label", r.emoji + " " + r.count + ": " + (r.names || []).join(", "));
        chip.disabled = !active;
        chip.addEventListener("click", () => react(m, r.emoji, !r.mine, chip));
        chips.append(make("li", {}, chip));
      }
      li.append(chips);
    }
    if (!m.deleted && active) li.append(actionsFor(m));
    return li;
  }

  function replyQuote(reply) {
    const button = make("button", { type: "button", className: "reply-quote" },
      make("span", { className: "reply-who", textContent: reply.sender_name === "you" ? "You" : reply.sender_name || "" }),
      make("span", { className: "reply-text", textContent: reply.deleted ? "This message was deleted" : fmt.excerpt(reply.text || "", 140), dir: "auto" }));
    if (reply.deleted) button.classList.add("deleted");
    button.title = "Show the message this answers";
    button.addEventListener("click", () => showMessage(reply.id));
    return button;
  }

  function showMessage(id) {
    const held = messageNodes.get(id);
    if (!held || !held.node.isConnected) { toast("That message is further back: choose Show earlier messages."); return; }
    held.node.scrollIntoView({ block: "center", behavior: "smooth" });
    held.node.classList.remove("flash");
    void held.node.offsetWidth; // restart the animation
    held.node.classList.add("flash");
  }

  function actionsFor(m) {
    const bar = make("div", { className: "actions-bar" });
    bar.setAttribute("role", "toolbar");
    bar.setAttribute("aria-label", "Message actions");
    const button = (label, icon, work) => {
      const b = make("button", { type: "button", className: "act", textContent: icon, title: label });
      b.setAttribute("aria-label", label);
      b.addEventListener("click", (event) => work(event, b));
      bar.append(b);
      return b;
    };
    button("Reply", "↩", () => setReply(m));
    button("React", "☺", (event, b) => openPicker(m, b));
    if (m.mine && m.text) button("Edit", "✎", () => startEdit(m));
    if (m.mine) button("Delete", "🗑", (event, b) => removeMessage(m, b));
    return bar;
  }

  // ---- attachments -------------------------------------------------------------------------

  const attachmentPath = (id) => API + "/attachments/" + enc(id);
  const isImage = (a) => /^image\/(png|jpeg|gif|webp|avif|bmp)$/.test(a.type || "") && a.size <= THUMB_LIMIT;

  function attachmentItem(a) {
    const li = make("li", { className: "attachment" });
    li.dataset.state = a.state;
    if (a.state === "ready" && isImage(a)) {
      const img = make("img", { className: "thumb", alt: a.name });
      thumb(a.id).then((url) => { if (url) img.src = url; else img.remove(); });
      const open = make("a", { className: "thumb-link", href: "/api" + attachmentPath(a.id) + "?download=1", title: "Download " + a.name }, img);
      open.addEventListener("click", (event) => { event.preventDefault(); download(a); });
      li.append(open);
    }
    const line = make("p", { className: "file-line" });
    if (a.state === "ready") {
      const link = make("a", { className: "file-link", href: "/api" + attachmentPath(a.id) + "?download=1", textContent: a.name, download: a.name });
      link.setAttribute("aria-label", "Download " + a.name);
      link.addEventListener("click", (event) => { event.preventDefault(); download(a); });
      line.append(make("span", { className: "file-icon", textContent: "📄", ariaHidden: "true" }), link);
    } else {
      line.append(make("span", { className: "file-icon", textContent: "📄", ariaHidden: "true" }), make("span", { className: "file-name", textContent: a.name }));
    }
    line.append(" ", make("span", { className: "size small muted", textContent: human(a.size || 0) }));
    const state = attachmentState(a);
    if (state) line.append(" ", make("span", { className: "file-state small", textContent: state }));
    li.append(line);
    return li;
  }

  function attachmentState(a) {
    if (a.state === "fetching") {
      const part = a.size && a.received ? " " + Math.floor((a.received / a.size) * 100) + "%" : "";
      return "fetching…" + part;
    }
    if (a.state === "failed") return "failed" + (a.error ? ": " + a.error : "");
    if (a.state === "too_large") return "too large to fetch";
    return "";
  }

  function thumb(id) {
    if (!thumbs.has(id)) {
      thumbs.set(id, twin.request(attachmentPath(id), { cache: "no-store" })
        .then((response) => (response.ok ? response.blob() : null))
        .then((blob) => (blob ? URL.createObjectURL(blob) : null))
        .catch(() => null));
    }
    return thumbs.get(id);
  }

  function forgetThumbs() {
    for (const promise of thumbs.values()) promise.then((url) => { if (url) URL.revokeObjectURL(url); });
    thumbs.clear();
  }

  // The token goes in a header, so a plain link cannot carry it: the file is fetched, then
  // handed to the browser's downloads.
  async function download(a) {
    try {
      const response = await twin.request(attachmentPath(a.id) + "?download=1", { cache: "no-store" });
      if (!response.ok) {
        let message = response.statusText;
        try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
        throw Object.assign(new Error(message), { status: response.status });
      }
      const url = URL.createObjectURL(await response.blob());
      const link = make("a", { href: url, download: a.name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (error) {
      toast("Could not download " + quote(a.name) + ". " + explain(error), true);
    }
  }

  // ---- the composer ------------------------------------------------------------------------

  function draftOf(id) {
    if (!drafts.has(id)) drafts.set(id, { text: "", reply: null, pending: [], upload: null });
    return drafts.get(id);
  }

  function drawComposer() {
    const c = current();
    if (!c) return;
    const draft = draftOf(c.id);
    ui.composer.hidden = !c.active;
    ui.inactive.hidden = c.active;
    if (!c.active) ui.inactive.textContent = c.kind === "group"
      ? "You are not in this group any more: you can read it, but not write to it."
      : "This conversation is closed.";
    ui.replyBar.hidden = !draft.reply || Boolean(editing);
    if (draft.reply) {
      ui.replyWho.textContent = "Replying to " + (draft.reply.mine ? "yourself" : draft.reply.sender_name);
      ui.replyText.textContent = fmt.excerpt(draft.reply.text || "", 140) || "📎 a file";
    }
    ui.editBar.hidden = !editing;
    ui.attach.disabled = Boolean(editing);
    const items = draft.pending.map(pendingItem);
    if (draft.upload) items.push(draft.upload.li);
    if (!sameChildren(ui.pending, items)) ui.pending.replaceChildren(...items);
    ui.pending.hidden = !items.length;
    drawCounter();
  }

  function drawCounter() {
    const n = length(ui.text.value);
    ui.counter.textContent = n >= COUNT_FROM ? n.toLocaleString("en") + " / " + LIMIT.toLocaleString("en") : "";
    ui.counter.classList.toggle("over", n > LIMIT);
    ui.counter.title = n > LIMIT ? "Too long: take out " + plural(n - LIMIT, "character", "characters") : "";
    ui.send.disabled = n > LIMIT || sending;
    ui.send.textContent = editing ? "Save" : "Send";
  }

  function autosize() {
    ui.text.style.height = "auto";
    ui.text.style.height = Math.min(ui.text.scrollHeight + 2, 200) + "px";
  }

  const pendingNodes = new WeakMap(); // an uploaded file → its line in the composer

  function pendingItem(a) {
    if (pendingNodes.has(a)) return pendingNodes.get(a);
    const remove = make("button", { type: "button", className: "link", textContent: "×", title: "Don't send " + a.name });
    remove.setAttribute("aria-label", "Remove " + a.name);
    remove.addEventListener("click", () => {
      const draft = draftOf(openId);
      draft.pending = draft.pending.filter((p) => p.id !== a.id);
      drawComposer();
    });
    const li = make("li", { className: "pending-item" },
      make("span", { className: "file-icon", textContent: "📄", ariaHidden: "true" }),
      make("span", { className: "file-name", textContent: a.name }),
      make("span", { className: "small muted", textContent: human(a.size || 0) + " · ready to send" }), remove);
    li.dataset.state = "ready";
    pendingNodes.set(a, li);
    return li;
  }

  function upload(file) {
    const id = openId;
    const draft = draftOf(id);
    if (draft.upload) { toast("One file at a time: wait for " + quote(draft.upload.name) + " to finish."); return; }
    const bar = make("progress", { max: 100, value: 0 });
    bar.setAttribute("aria-label", "Upload of " + file.name);
    const note = make("span", { className: "small muted up-note", textContent: "Starting…" });
    const cancel = make("button", { type: "button", className: "link", textContent: "Cancel" });
    cancel.setAttribute("aria-label", "Cancel the upload of " + file.name);
    const li = make("li", { className: "pending-item uploading" },
      make("span", { className: "file-icon", textContent: "📄", ariaHidden: "true" }),
      make("span", { className: "file-name", textContent: file.name }), bar, note, cancel);
    li.dataset.state = "uploading";
    const xhr = new XMLHttpRequest();
    const job = { name: file.name, li, xhr };
    draft.upload = job;
    const done = () => { if (draft.upload === job) draft.upload = null; if (openId === id) drawComposer(); };
    const failed = (text) => {
      done();
      if (openId === id) ui.composeError.textContent = text;
      else toast(text, true);
    };
    cancel.addEventListener("click", () => xhr.abort());
    xhr.open("POST", "/api" + path(id, "/attachments?name=" + enc(file.name)));
    xhr.setRequestHeader("Authorization", "Bearer " + twin.token);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.upload.addEventListener("progress", (event) => {
      const total = event.lengthComputable ? event.total : file.size;
      const percent = total ? Math.floor((event.loaded / total) * 100) : 100;
      bar.value = percent;
      note.textContent = human(event.loaded) + " of " + human(total) + " · " + percent + "%";
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if ((xhr.status === 201 || xhr.status === 200) && body && body.id) {
        draft.pending.push(body);
        done();
        if (openId === id) ui.composeError.textContent = "";
        return;
      }
      const message = body && body.error ? body.error.message : xhr.statusText;
      failed("Could not upload " + quote(file.name) + ". " + explain({ status: xhr.status, message, code: body && body.error ? body.error.code : "" }));
    });
    xhr.addEventListener("error", () => failed("Could not upload " + quote(file.name) + ". Can't reach your twin; nothing was sent."));
    xhr.addEventListener("abort", () => done());
    xhr.send(file);
    ui.composeError.textContent = "";
    drawComposer();
  }

  function setReply(m) {
    if (editing) stopEdit();
    draftOf(openId).reply = m;
    drawComposer();
    ui.text.focus();
  }

  function startEdit(m) {
    const draft = draftOf(openId);
    if (!editing) draft.text = ui.text.value;
    editing = m;
    ui.text.value = m.text;
    ui.composeError.textContent = "";
    drawComposer();
    autosize();
    ui.text.focus();
    ui.text.setSelectionRange(ui.text.value.length, ui.text.value.length);
  }

  function stopEdit() {
    editing = null;
    ui.text.value = openId ? draftOf(openId).text : "";
    drawComposer();
    autosize();
  }

  async function submit() {
    if (sending || !openId) return;
    const id = openId;
    const draft = draftOf(id);
    const text = ui.text.value.replace(/^\s*\n/, "").trimEnd(); // an indented first line stays so
    if (length(text) > LIMIT) { ui.composeError.textContent = "This message is too long: " + length(text).toLocaleString("en") + " characters, at most " + LIMIT.toLocaleString("en") + "."; return; }
    if (editing) {
      const m = editing;
      if (!text) { ui.composeError.textContent = "A message can't be empty; to take it back, delete it."; return; }
      if (text === m.text) { stopEdit(); return; }
      await sendWith(async () => {
        const changed = await twin.api(path(id, "/messages/" + enc(m.id)), { method: "PATCH", body: { text } });
        upsert(changed);
        if (editing === m) stopEdit();
      }, "Could not save the edit.");
      return;
    }
    if (draft.upload) { ui.composeError.textContent = "Wait for " + quote(draft.upload.name) + " to finish uploading, then send."; return; }
    if (!text && !draft.pending.length) return;
    const body = { text };
    if (draft.reply) body.reply_to = draft.reply.id;
    if (draft.pending.length) body.attachments = draft.pending.map((a) => a.id);
    await sendWith(async () => {
      const made = await twin.api(path(id, "/messages"), { method: "POST", body });
      draft.text = "";
      draft.reply = null;
      draft.pending = [];
      if (openId === id) { ui.text.value = ""; autosize(); }
      upsert(made);
      ui.messages.scrollTop = ui.messages.scrollHeight;
    }, "Not sent.");
  }

  async function sendWith(work, failed) {
    sending = true;
    drawCounter();
    ui.composeError.textContent = "";
    try {
      await work();
    } catch (error) {
      ui.composeError.textContent = failed + " " + explain(error);
      if (error.status === 404 || error.status === 409) resync();
    } finally {
      sending = false;
      drawComposer();
    }
  }

  // A message the twin answered with: held and drawn as it is, new or changed.
  function upsert(m) {
    if (!m || !m.id) return;
    seen.add(m.id);
    if (m.conversation !== openId) return;
    const at = messages.findIndex((x) => x.id === m.id);
    if (at >= 0) messages[at] = m;
    else messages.push(m);
    drawMessages();
  }

  async function removeMessage(m, button) {
    const ok = await confirmWith("Delete this message?", "It is deleted for everyone in the conversation; they see that a message was deleted.", "Delete");
    if (!ok) return;
    button.disabled = true;
    try {
      const answer = await twin.api(path(m.conversation, "/messages/" + enc(m.id)), { method: "DELETE" });
      if (answer && answer.id) upsert(answer);
      else await loadLatest();
      if (editing && editing.id === m.id) stopEdit();
    } catch (error) {
      toast("Could not delete the message. " + explain(error), true);
      button.disabled = false;
    }
  }

  async function react(m, emoji, on, button) {
    if (button) button.disabled = true;
    try {
      const answer = await twin.api(path(m.conversation, "/messages/" + enc(m.id) + "/reactions"), { method: "POST", body: { emoji, on } });
      if (answer && answer.id) upsert(answer);
    } catch (error) {
      toast("Could not react. " + explain(error), true);
      if (button) button.disabled = false;
    }
  }

  // ---- the emoji picker --------------------------------------------------------------------

  let pickFor = null;
  for (const emoji of EMOJI) {
    const b = make("button", { type: "button", className: "emoji", textContent: emoji });
    b.setAttribute("role", "menuitem");
    b.setAttribute("aria-label", "React with " + emoji);
    b.addEventListener("click", () => {
      const m = pickFor;
      closePicker();
      if (!m) return;
      const had = (m.reactions || []).find((r) => r.emoji === emoji);
      react(m, emoji, !(had && had.mine));
    });
    ui.emojiPicker.append(b);
  }

  function openPicker(m, anchor) {
    pickFor = m;
    ui.emojiPicker.hidden = false;
    const box = anchor.getBoundingClientRect();
    const width = ui.emojiPicker.offsetWidth;
    const left = Math.max(8, Math.min(box.right - width, window.innerWidth - width - 8));
    const top = box.top - ui.emojiPicker.offsetHeight - 6 > 8 ? box.top - ui.emojiPicker.offsetHeight - 6 : box.bottom + 6;
    ui.emojiPicker.style.left = left + "px";
    ui.emojiPicker.style.top = top + "px";
    ui.emojiPicker.querySelector("button").focus();
  }

  function closePicker() {
    pickFor = null;
    ui.emojiPicker.hidden = true;
  }

  document.addEventListener("click", (event) => {
    if (ui.emojiPicker.hidden) return;
    if (ui.emojiPicker.contains(event.target) || (event.target.closest && event.target.closest(".act"))) return;
    closePicker();
  });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !ui.emojiPicker.hidden) closePicker(); });

  // ---- marking read ------------------------------------------------------------------------

  async function markRead() {
    const c = current();
    if (!c || document.visibilityState !== "visible" || !messages.length) return;
    const last = messages[messages.length - 1];
    if (readSent.get(c.id) === last.id) return;
    if (!c.unread && last.mine) return;
    readSent.set(c.id, last.id);
    try {
      const answer = await twin.api(path(c.id, "/read"), { method: "POST", body: { upto: last.id } });
      if (answer && answer.id === c.id && answer.members) conversations.set(c.id, answer);
      else if (conversations.has(c.id)) conversations.get(c.id).unread = 0;
      scheduleDraw();
    } catch (_) {
      readSent.delete(c.id); // tried again with the next change
    }
  }

  // ---- one conversation --------------------------------------------------------------------

  async function openConversation(id) {
    closePicker();
    if (openId !== id) {
      if (openId && !editing) draftOf(openId).text = ui.text.value;
      editing = null;
      openId = id;
      messages = [];
      more = false;
      messageNodes.clear();
      forgetThumbs();
      ui.messageList.replaceChildren();
      ui.text.value = draftOf(id).text;
      ui.composeError.textContent = "";
      autosize();
    }
    if (!conversations.has(id)) {
      try {
        const c = await twin.api(path(id), { cache: "no-store" });
        conversations.set(c.id, c);
      } catch (error) {
        toast(error.status === 404 ? "That conversation is not here any more." : "Could not open the conversation. " + explain(error), true);
        go("#");
        return;
      }
    }
    if (openId !== id) return;
    ui.nothingOpen.hidden = true;
    ui.body.hidden = false;
    setPane("conversation");
    drawList();
    drawHeader();
    drawComposer();
    if (infoOpen) drawInfo();
    try {
      await loadLatest();
      ui.messages.scrollTop = ui.messages.scrollHeight;
      markRead();
    } catch (error) {
      toast("Could not load the messages. " + explain(error), true);
    }
    if (!narrow()) ui.text.focus();
  }

  function closeConversation() {
    if (openId && !editing) draftOf(openId).text = ui.text.value;
    openId = null;
    editing = null;
    messages = [];
    messageNodes.clear();
    forgetThumbs();
    closePicker();
    showInfo(false);
    ui.body.hidden = true;
    ui.nothingOpen.hidden = false;
    setPane("list");
    drawList();
  }

  function route() {
    const raw = location.hash.replace(/^#\/?/, "");
    if (raw.startsWith("c/")) {
      let id = raw.slice(2);
      try { id = decodeURIComponent(id); } catch (_) { /* as it came */ }
      openConversation(id);
    } else closeConversation();
  }

  function go(hash) {
    if (location.hash === hash || (hash === "#" && !location.hash)) route();
    else location.hash = hash;
  }

  // ---- details: members, name, mute, leave, block ------------------------------------------

  function showInfo(open) {
    infoOpen = open;
    ui.info.hidden = !open;
    ui.app.dataset.info = String(open);
    ui.openInfo.setAttribute("aria-expanded", String(open));
    ui.infoStatus.textContent = "";
    if (open) {
      drawInfo();
      if (people === null) loadPeople().then(drawInfo).catch(() => {});
    }
  }

  function drawInfo() {
    const c = current();
    if (!c) return;
    const group = c.kind === "group";
    const admin = group && c.admin && c.active;
    ui.infoTitle.textContent = group ? "Group info" : "Details";
    ui.renameForm.hidden = !admin;
    if (admin && document.activeElement !== ui.rename) ui.rename.value = c.name;
    const members = [...(c.members || [])].sort((a, b) => (b.me - a.me) || (b.admin - a.admin) || a.name.localeCompare(b.name));
    ui.memberList.replaceChildren(...members.map((p) => memberItem(c, p, admin)));
    ui.addForm.hidden = !admin;
    if (admin) {
      const inside = new Set((c.members || []).map((p) => p.did));
      const can = (people || []).filter((p) => !inside.has(p.did) && !p.blocked);
      ui.addWho.replaceChildren(...can.map((p) => make("option", { value: p.did, textContent: p.name })));
      ui.addForm.hidden = !can.length;
      ui.addNone.hidden = Boolean(can.length) || people === null;
    } else {
      ui.addNone.hidden = true;
    }
    ui.mute.textContent = c.muted ? "Unmute" : "Mute";
    ui.mute.setAttribute("aria-pressed", String(Boolean(c.muted)));
    ui.mute.title = c.muted ? "Notifications are off for this conversation" : "No notifications for this conversation; its unread count still shows";
    const other = group ? null : others(c)[0];
    ui.block.hidden = !other;
    if (other) ui.block.textContent = other.blocked ? "Unblock " + other.name : "Block " + other.name;
    ui.block.className = other && other.blocked ? "" : "danger";
    ui.leave.hidden = !group || !c.active;
    const hints = [];
    if (c.muted) hints.push("Muted: you get no notifications from it; its unread count still shows.");
    if (other && other.blocked) hints.push("You blocked " + other.name + ": their twin's messages are dropped. Their old messages stay, marked.");
    if (group && !c.admin && c.active) hints.push("Only the group's admins can add or remove members or rename it.");
    ui.infoHint.textContent = hints.join(" ");
  }

  function memberItem(c, p, admin) {
    const li = make("li", { className: "member" });
    li.dataset.did = p.did;
    const name = make("span", { className: "member-name", dir: "auto", textContent: p.me ? p.name + " (you)" : p.name });
    const who = make("div", { className: "member-who" }, name);
    const marks = make("span", { className: "marks" });
    if (p.admin) marks.append(make("span", { className: "badge", textContent: "admin" }));
    if (p.blocked) marks.append(make("span", { className: "badge bad", textContent: "blocked" }));
    if (!p.me && !p.contact) marks.append(make("span", { className: "badge plain", textContent: "not a contact", title: "Not in your Contacts: your twin knows their key through the group" }));
    who.append(marks);
    li.append(make("span", { className: "initial small-initial", textContent: initialOf(p.name), ariaHidden: "true" }), who);
    if (admin && !p.me) {
      const tools = make("span", { className: "member-tools" });
      const role = make("button", { type: "button", className: "link", textContent: p.admin ? "Not admin" : "Make admin" });
      role.setAttribute("aria-label", (p.admin ? "Take admin from " : "Make admin: ") + p.name);
      role.addEventListener("click", () => infoAct(role, () => twin.api(path(c.id, "/members/" + p.did), { method: "PATCH", body: { admin: !p.admin } }),
        p.admin ? p.name + " is no longer an admin." : p.name + " is now an admin.", "Could not change " + p.name + "'s role."));
      const remove = make("button", { type: "button", className: "link bad", textContent: "Remove" });
      remove.setAttribute("aria-label", "Remove " + p.name);
      remove.addEventListener("click", async () => {
        if (!await confirmWith("Remove " + p.name + "?", "They stop getting the group's messages; the others are told.", "Remove")) return;
        infoAct(remove, () => twin.api(path(c.id, "/members/" + p.did), { method: "DELETE" }), "Removed " + p.name + ".", "Could not remove " + p.name + ".");
      });
      tools.append(role, remove);
      li.append(tools);
    }
    return li;
  }

  // A change to the open conversation; the twin answers with the conversation as it is now
  // (or nothing: then it is asked for).
  async function infoAct(button, work, done, failed) {
    const id = openId;
    if (button) button.disabled = true;
    ui.infoStatus.textContent = "";
    ui.infoStatus.classList.remove("error");
    try {
      const answer = await work();
      if (answer && answer.id === id && answer.members) conversations.set(id, answer);
      else {
        const fresh = await twin.api(path(id), { cache: "no-store" });
        conversations.set(id, fresh);
      }
      if (done) ui.infoStatus.textContent = done;
      scheduleDraw();
      return true;
    } catch (error) {
      ui.infoStatus.textContent = failed + " " + explain(error);
      ui.infoStatus.classList.add("error");
      return false;
    } finally {
      if (button) button.disabled = false;
    }
  }

  ui.renameForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = ui.rename.value.trim();
    if (!name) { ui.infoStatus.textContent = "A group needs a name."; ui.infoStatus.classList.add("error"); return; }
    infoAct($("rename-save"), () => twin.api(path(openId), { method: "PATCH", body: { name } }), "Renamed.", "Could not rename the group.");
  });

  ui.addForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const did = ui.addWho.value;
    if (!did) return;
    const person = (people || []).find((p) => p.did === did);
    infoAct($("add-member"), () => twin.api(path(openId, "/members"), { method: "POST", body: { did } }),
      "Added " + (person ? person.name : "them") + ".", "Could not add them.");
  });

  ui.mute.addEventListener("click", () => {
    const c = current();
    if (!c) return;
    infoAct(ui.mute, () => twin.api(path(c.id), { method: "PATCH", body: { muted: !c.muted } }),
      c.muted ? "Unmuted." : "Muted.", "Could not change it.");
  });

  ui.block.addEventListener("click", async () => {
    const c = current();
    const other = c && others(c)[0];
    if (!other) return;
    if (other.blocked) {
      if (await infoAct(ui.block, () => twin.api(API + "/blocked/" + other.did, { method: "DELETE" }), "Unblocked " + other.name + ".", "Could not unblock them.")) loadLatest().catch(() => {});
      return;
    }
    if (!await confirmWith("Block " + other.name + "?", "Their twin's messages stop reaching you, in every conversation. Their old messages stay, marked. You can unblock them later.", "Block")) return;
    // their old messages are marked now: the page asks for them again
    if (await infoAct(ui.block, () => twin.api(API + "/blocked", { method: "POST", body: { did: other.did } }), "Blocked " + other.name + ".", "Could not block them.")) loadLatest().catch(() => {});
  });

  ui.leave.addEventListener("click", async () => {
    const c = current();
    if (!c) return;
    if (!await confirmWith("Leave " + quote(c.name) + "?", "You stop getting its messages and the others are told. Only an admin can add you again.", "Leave")) return;
    infoAct(ui.leave, () => twin.api(path(c.id, "/leave"), { method: "POST" }), "You left the group.", "Could not leave the group.");
  });

  // ---- new chats and groups ----------------------------------------------------------------

  async function openNew() {
    ui.newError.textContent = "";
    ui.peopleEmpty.hidden = true;
    ui.peopleList.replaceChildren(make("li", { className: "small muted", textContent: "Loading your contacts…" }));
    ui.newDialog.showModal();
    try {
      await loadPeople();
    } catch (error) {
      ui.peopleList.replaceChildren();
      ui.newError.textContent = "Could not load your contacts. " + explain(error);
      return;
    }
    ui.peopleEmpty.hidden = people.length > 0;
    ui.peopleList.replaceChildren(...people.map((p) => {
      const b = make("button", { type: "button", className: "person" },
        make("span", { className: "initial", textContent: initialOf(p.name), ariaHidden: "true" }),
        make("span", { className: "person-name", textContent: p.name, dir: "auto" }));
      if (p.blocked) b.append(make("span", { className: "badge bad", textContent: "blocked" }));
      b.addEventListener("click", () => startWith(p, b));
      return make("li", {}, b);
    }));
  }

  async function startWith(person, button) {
    button.disabled = true;
    ui.newError.textContent = "";
    try {
      const c = await twin.api(API + "/conversations", { method: "POST", body: { with: person.did } });
      conversations.set(c.id, c);
      ui.newDialog.close();
      go("#c/" + enc(c.id));
    } catch (error) {
      ui.newError.textContent = "Could not start a chat with " + person.name + ". " + explain(error);
    } finally {
      button.disabled = false;
    }
  }

  async function openGroup() {
    ui.groupError.textContent = "";
    ui.groupName.value = "";
    ui.groupEmpty.hidden = true;
    ui.groupPeople.replaceChildren(make("li", { className: "small muted", textContent: "Loading your contacts…" }));
    ui.groupDialog.showModal();
    ui.groupName.focus();
    try {
      await loadPeople();
    } catch (error) {
      ui.groupPeople.replaceChildren();
      ui.groupError.textContent = "Could not load your contacts. " + explain(error);
      return;
    }
    const can = people.filter((p) => !p.blocked);
    ui.groupEmpty.hidden = can.length > 0;
    ui.groupPeople.replaceChildren(...can.map((p, i) => {
      const box = make("input", { type: "checkbox", value: p.did, id: "pick-" + i });
      return make("li", {}, make("label", { className: "pick", htmlFor: "pick-" + i }, box, make("span", { textContent: p.name, dir: "auto" })));
    }));
  }

  ui.groupForm.addEventListener("submit", async (event) => {
    if (!event.submitter || event.submitter.value !== "ok") return; // Cancel closes it
    event.preventDefault();
    const name = ui.groupName.value.trim();
    const members = [...ui.groupPeople.querySelectorAll("input:checked")].map((box) => box.value);
    if (!name) { ui.groupError.textContent = "Give the group a name."; ui.groupName.focus(); return; }
    if (!members.length) { ui.groupError.textContent = "Choose at least one contact to be in it."; return; }
    const button = $("group-create");
    button.disabled = true;
    ui.groupError.textContent = "";
    try {
      const c = await twin.api(API + "/groups", { method: "POST", body: { name, members } });
      conversations.set(c.id, c);
      ui.groupDialog.close();
      go("#c/" + enc(c.id));
    } catch (error) {
      ui.groupError.textContent = "Could not make the group. " + explain(error);
    } finally {
      button.disabled = false;
    }
  });

  // ---- dialogs and the toast ---------------------------------------------------------------

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

  let toastTimer = null;
  function toast(text, bad = false) {
    clearTimeout(toastTimer);
    ui.toastText.textContent = text;
    ui.toast.classList.toggle("bad", bad);
    ui.toast.hidden = false;
    toastTimer = setTimeout(hideToast, bad ? 16000 : 8000);
  }

  function hideToast() {
    clearTimeout(toastTimer);
    ui.toast.hidden = true;
  }

  // ---- wiring ------------------------------------------------------------------------------

  ui.toastClose.addEventListener("click", hideToast);
  ui.newChat.addEventListener("click", openNew);
  ui.newGroup.addEventListener("click", openGroup);
  ui.back.addEventListener("click", () => go("#"));
  ui.openInfo.addEventListener("click", () => showInfo(!infoOpen));
  ui.closeInfo.addEventListener("click", () => showInfo(false));
  ui.older.addEventListener("click", loadOlder);
  ui.notifyOn.addEventListener("click", askNotify);
  ui.replyCancel.addEventListener("click", () => { draftOf(openId).reply = null; drawComposer(); ui.text.focus(); });
  ui.editCancel.addEventListener("click", () => { stopEdit(); ui.text.focus(); });
  ui.attach.addEventListener("click", () => ui.picker.click());
  ui.picker.addEventListener("change", () => {
    const file = ui.picker.files && ui.picker.files[0];
    ui.picker.value = "";
    if (file && openId) upload(file);
  });
  ui.composer.addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  ui.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape") {
      if (editing) stopEdit();
      else if (openId && draftOf(openId).reply) { draftOf(openId).reply = null; drawComposer(); }
    }
  });
  ui.text.addEventListener("input", () => {
    if (openId && !editing) draftOf(openId).text = ui.text.value;
    ui.composeError.textContent = "";
    drawCounter();
    autosize();
  });
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") { markRead(); drawNotify(); }
  });
  twin.notifications.onClick((id) => { if (conversations.has(id)) go("#c/" + enc(id)); });
  setInterval(() => { listNodes.clear(); drawList(); }, 60000); // "Yesterday" arrives at midnight

  drawNotify();
  startLive();
});
