// The Contacts experience: invites (a link and its QR code), using someone's invite, answering
// requests, the address book with delivery health, a contact's page (name, note, trust, safety
// number, block, remove), vouches and reputation, through /api/contacts/… with this page's token.
// Everything a person or another twin wrote is put on the page as text, never as markup.
document.addEventListener("DOMContentLoaded", () => {
  const API = "/contacts";
  const POLL = 4000; // how often the page asks for news (requests, deliveries, vouches)
  const POLL_FAST = 1000; // just after something was sent, until it is through
  const FAST_FOR = 15000;
  const TRUST = ["none", "a little", "some", "a lot", "fully"];
  const MY_WORDS = { 2: "vouch strongly", 1: "vouch", "-1": "have doubts", "-2": "warn strongly" };
  const INVITE_PREFIX = "twin-invite:";
  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $("contacts-app"), notice: $("notice"), requestCount: $("request-count"),
    views: [...document.querySelectorAll(".views .view")],
    people: $("people"), requests: $("requests"), requestList: $("request-list"), peopleList: $("people-list"),
    peopleEmpty: $("people-empty"), peopleStatus: $("people-status"), goUse: $("go-use"), goInvite: $("go-invite"),
    contact: $("contact"), contactInitial: $("contact-initial"), contactName: $("contact-name"),
    contactStatus: $("contact-status"), contactVerified: $("contact-verified"), contactSeen: $("contact-seen"),
    contactRequest: $("contact-request"), contactRequestText: $("contact-request-text"),
    contactRequestNote: $("contact-request-note"),
    aboutForm: $("about-form"), aboutName: $("about-name"), aboutTheirName: $("about-their-name"),
    aboutNote: $("about-note"), aboutTrust: $("about-trust"), aboutSave: $("about-save"), aboutStatus: $("about-status"),
    safetyNumber: $("safety-number"), safetyState: $("safety-state"), markVerified: $("mark-verified"),
    copyDid: $("copy-did"), safetyStatus: $("safety-status"),
    deliveryCard: $("delivery-card"), deliveryState: $("delivery-state"), deliveryDetail: $("delivery-detail"),
    contactRetry: $("contact-retry"), contactAddress: $("contact-address"), contactAsk: $("contact-ask"),
    vouchCard: $("vouch-card"), vouchTitle: $("vouch-title"), vouchForm: $("vouch-form"), vouchTopic: $("vouch-topic"),
    vouchTopics: $("vouch-topics"), vouchLevel: $("vouch-level"), vouchComment: $("vouch-comment"),
    vouchSend: $("vouch-send"), vouchStatus: $("vouch-status"), contactVouches: $("contact-vouches"),
    contactReputation: $("contact-reputation"),
    manageText: $("manage-text"), contactBlock: $("contact-block"), contactUnblock: $("contact-unblock"),
    contactRemove: $("contact-remove"),
    invites: $("invites"), meLine: $("me-line"), meNameless: $("me-nameless"), inviteForm: $("invite-form"),
    inviteLabel: $("invite-label"), inviteDays: $("invite-days"), inviteError: $("invite-error"),
    inviteMake: $("invite-make"), inviteMade: $("invite-made"), inviteExpires: $("invite-expires"),
    inviteLink: $("invite-link"), inviteCopy: $("invite-copy"), inviteCopied: $("invite-copied"), inviteQr: $("invite-qr"),
    inviteList: $("invite-list"), invitesEmpty: $("invites-empty"),
    use: $("use"), useConfirm: $("use-confirm"), useWho: $("use-who"), useFrom: $("use-from"), useForm: $("use-form"),
    useInvite: $("use-invite"), useNote: $("use-note"), useError: $("use-error"), useSend: $("use-send"),
    useCancel: $("use-cancel"),
    vouches: $("vouches"), vouchList: $("vouch-list"), vouchesEmpty: $("vouches-empty"),
    lookupForm: $("lookup-form"), lookupDid: $("lookup-did"), lookupMe: $("lookup-me"), lookupError: $("lookup-error"),
    myDid: $("my-did"), copyMyDid: $("copy-my-did"), myDidCopied: $("my-did-copied"),
    lookupResult: $("lookup-result"), lookupHeading: $("lookup-heading"), lookupTopics: $("lookup-topics"),
    toast: $("toast"), toastText: $("toast-text"), toastClose: $("toast-close"),
    confirmDialog: $("confirm-dialog"), confirmTitle: $("confirm-title"), confirmText: $("confirm-text"),
    confirmOk: $("confirm-ok"),
  };

  let view = "people";
  let contacts = []; // as the twin sent them
  let contactsJson = "";
  let loaded = false;
  let me = null; // {did, name, address}
  let named = true; // whether the owner set a display name
  let invites = [];
  let invitesJson = "";
  let madeInvite = null; // the invite made last, shown with its link and QR code
  let myVouches = [];
  let vouchesJson = "";
  let current = null; // the id of the contact whose page is open
  let fieldsFor = null; // the contact whose fields the form holds (not overwritten by refreshes)
  let reputationJson = "";
  let lookupFor = null; // the did looked up on the Vouches view
  let lookupJson = "";
  let fastUntil = 0;
  let nextPoll = 0;
  let polling = false;
  const dropped = new Set(); // contacts this page removed, declined or forgot

  // ---- words -------------------------------------------------------------------------------

  function make(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  }

  const quote = (text) => "“" + text + "”";
  const plural = (n, one, many) => n + " " + (n === 1 ? one : many);
  const shortDid = (did) => (did.length > 30 ? did.slice(0, 16) + "…" + did.slice(-6) : did);
  const initialOf = (name) => (name.trim()[0] || "?").toUpperCase();

  function ago(seconds) {
    if (!seconds) return "";
    const diff = Date.now() / 1000 - seconds;
    if (diff < 45) return "just now";
    if (diff < 3600) return plural(Math.round(diff / 60), "minute", "minutes") + " ago";
    if (diff < 86400) return plural(Math.round(diff / 3600), "hour", "hours") + " ago";
    if (diff < 30 * 86400) return plural(Math.round(diff / 86400), "day", "days") + " ago";
    return "on " + new Date(seconds * 1000).toLocaleDateString([], { day: "numeric", month: "short", year: "numeric" });
  }

  const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const day = (seconds) => new Date(seconds * 1000).toLocaleString([], { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" });
  const fullDate = (seconds) => new Date(seconds * 1000).toLocaleString();

  function statusWords(person) {
    return {
      connected: "connected",
      requested: "waiting for them to accept",
      incoming: "asks to connect",
      blocked: "blocked",
    }[person.status] || person.status;
  }

  // How delivery to a contact goes, as the list and their page show it.
  function health(person) {
    const d = person.delivery;
    if (person.status === "blocked") return { kind: "none", text: "Blocked: nothing goes either way", detail: "" };
    if (!d) return { kind: "none", text: person.status === "incoming" ? "Not connected yet" : "Nothing sent yet", detail: "" };
    const waiting = d.queued + d.sent;
    const never = d.failed ? plural(d.failed, "message", "messages") + " could not be delivered this week." : "";
    if (waiting && d.last_error) {
      return {
        kind: "failing",
        text: "Failing: " + plural(waiting, "message", "messages") + " waiting",
        detail: "Last error: " + d.last_error + "." + (d.retry_at ? " Next try at " + clock(d.retry_at) + "." : ""),
      };
    }
    if (waiting) {
      return { kind: "waiting", text: plural(waiting, "message", "messages") + " waiting", detail: "On its way to their twin." };
    }
    const last = d.last_delivered ? "Last delivered " + ago(d.last_delivered) + "." : "";
    return { kind: d.failed ? "lost" : "ok", text: "All delivered", detail: [last, never].filter(Boolean).join(" ") };
  }

  function scoreWords(score) {
    if (score >= 1.5) return "strongly vouched for";
    if (score >= 0.5) return "vouched for";
    if (score > -0.5) return "mixed";
    if (score > -1.5) return "doubted";
    return "strongly warned against";
  }

  const signed = (n) => (n > 0 ? "+" : n < 0 ? "−" : "") + Math.abs(n).toFixed(1);

  // What to tell the person when the twin refused or could not be reached.
  function explain(error) {
    const s = error.status;
    if (!s) return "Can't reach your twin. Check the connection and try again.";
    if (s === 401) return "Contacts has lost access to your twin. Reload the page, and allow Contacts again if asked.";
    if (s === 403) return "Contacts may not do this (" + error.message + "). Allow it again from your twin's home page.";
    if (s === 423) return "Your twin is locked. Unlock it from its home page, then try again.";
    if (s === 429) return "Your twin is busy. Try again in a moment.";
    if (s === 404) return capital(error.message) + ". The list has been refreshed.";
    if (s >= 500) return "Your twin failed (" + s + "): " + error.message + ". Try again; if it goes on, look at the twin's log.";
    return capital(error.message || "your twin refused (" + s + ")") + (/[.!?]$/.test(error.message || "") ? "" : ".");
  }

  const capital = (text) => text.slice(0, 1).toUpperCase() + text.slice(1);

  function showNotice(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = !text;
  }

  // ---- the twin ----------------------------------------------------------------------------

  const byId = (id) => contacts.find((c) => c.id === id) || null;
  const byDid = (did) => contacts.find((c) => c.did === did) || null;

  async function loadContacts() {
    const answer = await twin.api(API + "/", { cache: "no-store" });
    const list = Array.isArray(answer.contacts) ? answer.contacts : [];
    const json = JSON.stringify(list);
    const changed = json !== contactsJson;
    contacts = list;
    contactsJson = json;
    loaded = true;
    ui.app.dataset.state = "ready";
    return changed;
  }

  async function loadMe() {
    try {
      me = await twin.api(API + "/me", { cache: "no-store" });
      const profile = await twin.api("/profile/", { cache: "no-store" });
      named = Boolean(profile.display_name);
    } catch (error) {
      if (!me) throw error;
    }
    drawMe();
  }

  async function loadInvites() {
    const answer = await twin.api(API + "/invites", { cache: "no-store" });
    const list = Array.isArray(answer.invites) ? answer.invites : [];
    const json = JSON.stringify(list);
    if (json === invitesJson) return;
    invites = list;
    invitesJson = json;
    drawInvites();
  }

  async function loadVouches() {
    const answer = await twin.api(API + "/vouches", { cache: "no-store" });
    const list = Array.isArray(answer.vouches) ? answer.vouches : [];
    const json = JSON.stringify(list);
    const changed = json !== vouchesJson;
    myVouches = list;
    vouchesJson = json;
    return changed;
  }

  const reputationOf = (did) => twin.api(API + "/reputation/" + encodeURIComponent(did), { cache: "no-store" });

  // Ask for news soon and often for a while: something was just sent.
  function hurry() {
    fastUntil = Date.now() + FAST_FOR;
    nextPoll = Math.min(nextPoll, Date.now() + POLL_FAST);
  }

  async function poll() {
    if (polling || document.visibilityState !== "visible") return;
    polling = true;
    try {
      let changed = await loadContacts();
      if (view === "invites") await loadInvites();
      if ((view === "vouches" || view === "contact") && await loadVouches()) changed = true;
      if (changed) draw();
      else drawAges();
      if (view === "contact") await refreshReputation();
      if (view === "vouches" && lookupFor) await showLookup(lookupFor, { quiet: true });
      showNotice("");
    } catch (error) {
      showNotice("Could not load your contacts. " + explain(error));
    } finally {
      polling = false;
      nextPoll = Date.now() + (Date.now() < fastUntil || waiting() ? POLL_FAST : POLL);
    }
  }

  const waiting = () => contacts.some((c) => c.delivery && c.delivery.queued + c.delivery.sent > 0 && !c.delivery.last_error);

  setInterval(() => { if (Date.now() >= nextPoll) poll(); }, 250);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") nextPoll = 0; });

  // ---- views -------------------------------------------------------------------------------

  function fromHash() {
    let raw = location.hash.replace(/^#\/?/, "");
    try { raw = decodeURIComponent(raw); } catch (_) { /* keep it as it came */ }
    if (raw.startsWith("invite=")) return { view: "use", invite: raw.slice("invite=".length) };
    if (raw.startsWith(INVITE_PREFIX)) return { view: "use", invite: raw };
    if (raw.startsWith("contact/")) return { view: "contact", id: raw.slice("contact/".length) };
    if (raw.startsWith("reputation/")) return { view: "vouches", did: raw.slice("reputation/".length) };
    if (["invites", "use", "vouches"].includes(raw)) return { view: raw };
    return { view: "people" };
  }

  function go(hash) {
    if (location.hash === hash || (hash === "#" && !location.hash)) route();
    else location.hash = hash;
  }

  async function route() {
    const where = fromHash();
    setView(where.view);
    hideToastIfBad();
    if (where.view === "contact") openContact(where.id);
    else if (where.view === "invites") { drawMe(); loadInvites().catch((e) => showNotice("Could not load your invites. " + explain(e))); }
    else if (where.view === "use") openUse(where.invite || "");
    else if (where.view === "vouches") openVouches(where.did || null);
    else { current = null; document.title = "Contacts"; draw(); }
    nextPoll = Math.min(nextPoll, Date.now() + 50);
  }

  function setView(name) {
    view = name;
    ui.app.dataset.view = name;
    ui.people.hidden = name !== "people";
    ui.contact.hidden = name !== "contact";
    ui.invites.hidden = name !== "invites";
    ui.use.hidden = name !== "use";
    ui.vouches.hidden = name !== "vouches";
    const tab = name === "contact" ? "people" : name;
    for (const button of ui.views) button.setAttribute("aria-pressed", String(button.dataset.view === tab));
  }

  function draw() {
    drawCount();
    if (view === "people") drawPeople();
    else if (view === "contact") { drawContact(); drawVouchViews(); }
    else if (view === "vouches") drawVouchViews();
  }

  function drawAges() { // "seen 3 minutes ago" ages even when nothing changed
    if (view === "people") drawPeople();
    else if (view === "contact") drawContact();
  }

  function drawCount() {
    const asking = contacts.filter((c) => c.status === "incoming").length;
    ui.requestCount.textContent = asking ? String(asking) : "";
  }

  // ---- the list ----------------------------------------------------------------------------

  const ORDER = { connected: 0, requested: 1, blocked: 2 };

  function drawPeople() {
    if (!loaded) return;
    const asking = contacts.filter((c) => c.status === "incoming");
    ui.requests.hidden = !asking.length;
    ui.requestList.replaceChildren(...asking.map(requestItem));
    const others = contacts.filter((c) => c.status !== "incoming")
      .sort((a, b) => ORDER[a.status] - ORDER[b.status]); // the twin sorts by name already
    ui.peopleList.replaceChildren(...others.map(personItem));
    ui.peopleList.hidden = !others.length;
    ui.peopleEmpty.hidden = Boolean(others.length);
    drawCount();
  }

  function requestItem(person) {
    const li = make("li", { className: "request" });
    li.dataset.id = person.id;
    const head = make("p", { className: "request-head" },
      make("span", { className: "initial", textContent: initialOf(person.name), ariaHidden: "true" }),
      make("span", {}, make("strong", { className: "name", textContent: person.name }), " wants to connect"));
    const via = person.invite !== null
      ? "Through your invite " + quote(person.invite || "without a label")
      : "Not through an open invite of yours (it was used, revoked or expired): be sure you know them";
    const meta = make("p", { className: "small muted via", textContent: via + " · " + ago(person.created) });
    li.append(head, meta);
    if (person.request_note) li.append(make("blockquote", { className: "note-text", textContent: person.request_note }));
    li.append(make("p", { className: "small muted did", textContent: person.did, title: "Their twin's id" }));
    const actions = make("p", { className: "actions wrap" });
    const accept = make("button", { type: "button", className: "primary", textContent: "Accept" });
    accept.setAttribute("aria-label", "Accept " + person.name);
    accept.addEventListener("click", () => acceptRequest(person, accept));
    const decline = make("button", { type: "button", textContent: "Decline" });
    decline.setAttribute("aria-label", "Decline " + person.name);
    decline.addEventListener("click", () => declineRequest(person, decline));
    const block = make("button", { type: "button", className: "danger", textContent: "Block" });
    block.setAttribute("aria-label", "Block " + person.name);
    block.addEventListener("click", () => blockPerson(person, block));
    actions.append(accept, decline, block);
    li.append(actions);
    return li;
  }

  function personItem(person) {
    const li = make("li", { className: "person" });
    li.dataset.id = person.id;
    li.dataset.status = person.status;
    const name = make("a", { className: "name", href: "#contact/" + encodeURIComponent(person.id), textContent: person.name });
    const title = make("p", { className: "who-line" }, name);
    if (person.verified) title.append(" ", verifiedMark());
    const bits = [statusWords(person)];
    if (person.status === "connected") bits.push("trust: " + (TRUST[person.trust] || person.trust_label));
    if (person.last_seen) bits.push("seen " + ago(person.last_seen));
    const who = make("div", { className: "who" }, title, make("p", { className: "meta small muted", textContent: bits.join(" · ") }));
    li.append(make("span", { className: "initial", textContent: initialOf(person.name), ariaHidden: "true" }), who,
      healthBox(person, true));
    return li;
  }

  function verifiedMark() {
    const mark = make("span", { className: "verified", textContent: "✓ verified" });
    mark.title = "You compared safety numbers with them";
    return mark;
  }

  function healthBox(person, compact) {
    const h = health(person);
    const box = make("div", { className: "health" });
    box.dataset.kind = h.kind;
    box.append(make("span", { className: "health-text", textContent: h.text }));
    if (h.detail && (!compact || h.kind === "failing")) box.append(make("span", { className: "health-detail small", textContent: h.detail }));
    if (h.kind === "failing" || h.kind === "waiting") {
      const retry = make("button", { type: "button", className: "retry", textContent: "Retry now" });
      retry.setAttribute("aria-label", "Retry now for " + person.name);
      retry.addEventListener("click", () => retryPerson(person, retry));
      box.append(retry);
    }
    return box;
  }

  // ---- actions on a person -----------------------------------------------------------------

  async function busy(button, work) {
    if (button) button.disabled = true;
    try {
      return await work();
    } finally {
      if (button) button.disabled = false;
    }
  }

  async function act(button, work, failed) {
    try {
      return await busy(button, work);
    } catch (error) {
      toast(failed + " " + explain(error), true);
      if (error.status === 404 || error.status === 409) await refreshNow();
      return undefined;
    }
  }

  async function refreshNow() {
    try {
      await loadContacts();
      draw();
    } catch (_) { /* the poll says so */ }
  }

  function replaceContact(person) {
    contacts = contacts.filter((c) => c.id !== person.id).concat(person);
    contactsJson = JSON.stringify(contacts);
    draw();
  }

  function dropContact(id) {
    dropped.add(id);
    contacts = contacts.filter((c) => c.id !== id);
    contactsJson = JSON.stringify(contacts);
    draw();
  }

  async function acceptRequest(person, button) {
    const done = await act(button, () => twin.api(API + "/" + enc(person.id) + "/accept", { method: "POST" }), "Could not accept.");
    if (!done) return;
    replaceContact(done);
    hurry();
    toast("You and " + done.name + " are connected. Compare your safety number with them to be sure it is their twin.");
  }

  async function declineRequest(person, button) {
    const done = await act(button, () => twin.api(API + "/" + enc(person.id) + "/decline", { method: "POST" }), "Could not decline.");
    if (done === undefined) return;
    dropContact(person.id);
    toast("Declined " + person.name + "'s request. They are not told.");
    if (view === "contact") go("#");
  }

  async function blockPerson(person, button) {
    const sure = await confirmWith("Block " + person.name + "?",
      "Whatever their twin sends yours is dropped unseen, and nothing more goes to them. You can unblock them later from their page.",
      "Block");
    if (!sure) return;
    const done = await act(button, () => twin.api(API + "/" + enc(person.id) + "/block", { method: "POST" }), "Could not block.");
    if (!done) return;
    replaceContact(done);
    toast("Blocked " + done.name + ".");
  }

  async function unblockPerson(person, button) {
    const done = await act(button, () => twin.api(API + "/" + enc(person.id) + "/unblock", { method: "POST" }), "Could not unblock.");
    if (done === undefined) return;
    if (done === null) { // a blocked request is forgotten: they may ask again
      dropContact(person.id);
      toast("Unblocked " + person.name + ". Their request was forgotten; they may ask again.");
      go("#");
      return;
    }
    replaceContact(done);
    hurry();
    toast("Unblocked " + done.name + ". You are connected again.");
  }

  async function removePerson(person, button) {
    const sure = await confirmWith("Remove " + person.name + "?",
      "Their key, anything still waiting to go to them and the vouches they shared are deleted. To connect again, one of you needs a new invite.",
      "Remove");
    if (!sure) return;
    const done = await act(button, () => twin.api(API + "/" + enc(person.id), { method: "DELETE" }), "Could not remove.");
    if (done === undefined) return;
    dropContact(person.id);
    toast("Removed " + person.name + ".");
    go("#");
  }

  async function retryPerson(person, button) {
    const done = await act(button, () => twin.api(API + "/" + enc(person.id) + "/retry", { method: "POST" }), "Could not retry.");
    if (!done) return;
    replaceContact(done);
    hurry();
    toast("Trying to reach " + done.name + "'s twin now.");
  }

  async function askVouches(person, button) {
    const done = await act(button, () => twin.api(API + "/" + enc(person.id) + "/ask", { method: "POST" }), "Could not ask.");
    if (!done) return;
    hurry();
    toast("Asked " + done.name + "'s twin for its vouches; they appear here as they arrive.");
  }

  const enc = encodeURIComponent;

  // ---- one contact -------------------------------------------------------------------------

  function openContact(id) {
    if (current !== id) {
      fieldsFor = null;
      reputationJson = "";
      ui.contactReputation.replaceChildren();
      ui.aboutStatus.textContent = "";
      ui.vouchStatus.textContent = "";
      ui.safetyStatus.textContent = "";
    }
    current = id;
    drawContact();
    loadVouches().then(drawVouchViews).catch(() => {});
    refreshReputation();
  }

  function drawContact() {
    if (!loaded || view !== "contact") return;
    const person = byId(current);
    if (!person) {
      if (dropped.has(current)) { go("#"); return; }
      toast("That contact is not there any more: they were removed, or the link is mistyped.", true);
      go("#");
      return;
    }
    document.title = person.name + " · Contacts";
    ui.contactInitial.textContent = initialOf(person.name);
    ui.contactName.textContent = person.name;
    ui.contactStatus.textContent = capital(statusWords(person));
    ui.contactStatus.dataset.status = person.status;
    ui.contactVerified.hidden = !person.verified;
    ui.contactSeen.textContent = person.last_seen ? "· seen " + ago(person.last_seen) : "";

    ui.contactRequest.hidden = person.status !== "incoming";
    if (person.status === "incoming") {
      ui.contactRequestText.textContent = person.name + " wants to connect" +
        (person.invite !== null ? ", through your invite " + quote(person.invite || "without a label") + "." : ", not through an open invite of yours.");
      ui.contactRequestNote.textContent = person.request_note;
      ui.contactRequestNote.hidden = !person.request_note;
    }

    if (fieldsFor !== person.id) { // fill the form once; refreshes leave what is being typed
      fieldsFor = person.id;
      ui.aboutName.value = person.name;
      ui.aboutNote.value = person.note;
      ui.aboutTrust.value = String(person.trust);
    }
    ui.aboutTheirName.textContent = person.their_name && person.their_name !== person.name
      ? "They call themselves " + quote(person.their_name) + "." : "";

    const groups = person.safety_number.split(" ");
    ui.safetyNumber.replaceChildren(...groups.map((g) => make("span", { className: "group", textContent: g })));
    ui.safetyNumber.dataset.number = person.safety_number;
    ui.safetyState.textContent = person.verified
      ? "✓ You marked this number verified: it matched theirs."
      : "Not verified yet.";
    ui.safetyState.classList.toggle("ok", person.verified);
    ui.markVerified.textContent = person.verified ? "Unmark verified" : "Mark verified";
    ui.markVerified.classList.toggle("primary", !person.verified);

    const h = health(person);
    ui.deliveryState.textContent = h.text;
    ui.deliveryState.dataset.kind = h.kind;
    ui.deliveryDetail.textContent = h.detail;
    ui.contactRetry.hidden = !(h.kind === "failing" || h.kind === "waiting");
    ui.contactAddress.textContent = person.address.length ? "Their twin: " + person.address.join(", ") : "";
    ui.deliveryCard.hidden = person.status === "incoming";

    const connected = person.status === "connected";
    ui.vouchCard.hidden = !connected;
    ui.contactAsk.hidden = !connected;
    ui.vouchTitle.textContent = "Vouch for " + person.name;

    const blocked = person.status === "blocked";
    ui.contactBlock.hidden = blocked;
    ui.contactUnblock.hidden = !blocked;
    ui.manageText.textContent = blocked
      ? "You blocked " + person.name + ": what their twin sends is dropped unseen. Unblocking lets a contact reach you again; a blocked request is forgotten instead, so they may ask again."
      : "Blocking drops what their twin sends, unseen, and sends them nothing. Removing deletes their key and what they shared; to connect again one of you needs a new invite.";
  }

  function drawVouchViews() {
    if (view === "contact") {
      const person = byId(current);
      if (!person) return;
      const mine = myVouches.filter((v) => v.about === person.did);
      ui.contactVouches.replaceChildren(...(mine.length ? mine.map((v) => vouchItem(v, false))
        : [make("li", { className: "small muted", textContent: "None yet." })]));
    }
    if (view === "vouches") drawMyVouches();
    const topics = [...new Set(myVouches.map((v) => v.topic))].sort();
    ui.vouchTopics.replaceChildren(...topics.map((t) => make("option", { value: t })));
  }

  function vouchItem(vouch, withWhom) {
    const li = make("li", { className: "vouch" });
    li.dataset.id = vouch.id;
    li.dataset.level = String(vouch.level);
    const about = byDid(vouch.about);
    const whom = about ? about.name : shortDid(vouch.about);
    const head = make("p", { className: "vouch-head" });
    if (withWhom) {
      const link = about ? make("a", { href: "#contact/" + enc(about.id), textContent: whom }) : make("span", { textContent: whom });
      head.append(make("strong", {}, link), ": ");
    }
    const words = (withWhom ? "you " : "You ") + MY_WORDS[vouch.level];
    head.append(make("span", { className: "level", textContent: words }), " on ",
      make("strong", { className: "topic", textContent: vouch.topic }));
    const revoke = make("button", { type: "button", className: "link bad", textContent: "Revoke" });
    revoke.setAttribute("aria-label", "Revoke your vouch on " + vouch.topic + " for " + whom);
    revoke.addEventListener("click", () => revokeVouch(vouch, whom, revoke));
    li.append(head);
    if (vouch.comment) li.append(make("p", { className: "comment", textContent: vouch.comment }));
    li.append(make("p", { className: "small muted" }, make("span", { textContent: ago(vouch.issued) + " · " }), revoke));
    return li;
  }

  async function refreshReputation() {
    const person = byId(current);
    if (!person) return;
    try {
      const rep = await reputationOf(person.did);
      const json = JSON.stringify(rep);
      if (json === reputationJson || current !== person.id) return;
      reputationJson = json;
      drawReputation(ui.contactReputation, rep, person.name);
    } catch (error) {
      ui.contactReputation.replaceChildren(make("p", { className: "status error small", textContent: "Could not load what people say. " + explain(error) }));
    }
  }

  function drawReputation(into, rep, subject) {
    const topics = Array.isArray(rep.topics) ? rep.topics : [];
    if (!topics.length) {
      into.replaceChildren(make("p", { className: "muted small empty-rep", textContent:
        "Nobody you know has vouched for " + subject + " yet." }));
      return;
    }
    into.replaceChildren(...topics.map(topicItem));
  }

  function topicItem(topic) {
    const art = make("article", { className: "topic" });
    art.dataset.topic = topic.topic;
    const score = make("span", { className: "score" });
    if (topic.score === null) {
      score.textContent = "no score";
      score.dataset.sign = "none";
    } else {
      score.textContent = signed(topic.score) + " · " + scoreWords(topic.score);
      score.dataset.sign = topic.score > 0 ? "plus" : topic.score < 0 ? "minus" : "zero";
    }
    const count = plural(topic.vouches.length, "vouch", "vouches");
    const weight = topic.score === null
      ? count + ", none from someone you trust: set how much you trust them on their page for it to count"
      : count + ", weight " + topic.weight.toFixed(2);
    art.append(make("header", { className: "topic-head" },
      make("h4", { className: "topic-name", textContent: topic.topic }), score,
      make("span", { className: "small muted", textContent: weight })));
    art.append(make("ul", { className: "said" }, ...topic.vouches.map(saidItem)));
    return art;
  }

  function saidItem(said) {
    const li = make("li", { className: "said-item" });
    li.dataset.level = String(said.level);
    const mine = said.mine;
    const who = make("strong", { className: "voucher", textContent: mine ? "You" : said.voucher });
    const words = mine ? MY_WORDS[said.level] : said.says;
    const trust = mine ? "counts fully"
      : "you trust them " + (TRUST[said.trust] || said.trust) + (said.weight ? ", so it counts " + Math.round(said.weight * 100) + "%" : ", so it does not count");
    li.append(make("p", {}, who, " ", make("span", { className: "level", textContent: words })));
    if (said.comment) li.append(make("p", { className: "comment", textContent: said.comment }));
    li.append(make("p", { className: "small muted weight", textContent: trust + " · " + ago(said.issued) }));
    return li;
  }

  ui.aboutForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const person = byId(current);
    if (!person) return;
    const changes = { name: ui.aboutName.value.trim(), note: ui.aboutNote.value, trust: Number(ui.aboutTrust.value) };
    ui.aboutStatus.classList.remove("error");
    ui.aboutStatus.textContent = "Saving…";
    try {
      const done = await busy(ui.aboutSave, () => twin.api(API + "/" + enc(person.id), { method: "PATCH", body: changes }));
      fieldsFor = null;
      replaceContact(done);
      ui.aboutStatus.textContent = "Saved.";
    } catch (error) {
      ui.aboutStatus.classList.add("error");
      ui.aboutStatus.textContent = "Not saved. " + explain(error);
    }
  });

  ui.markVerified.addEventListener("click", async () => {
    const person = byId(current);
    if (!person) return;
    ui.safetyStatus.classList.remove("error");
    ui.safetyStatus.textContent = "";
    try {
      const done = await busy(ui.markVerified, () => twin.api(API + "/" + enc(person.id), { method: "PATCH", body: { verified: !person.verified } }));
      replaceContact(done);
      ui.safetyStatus.textContent = done.verified ? "Marked verified." : "No longer marked verified.";
    } catch (error) {
      ui.safetyStatus.classList.add("error");
      ui.safetyStatus.textContent = explain(error);
    }
  });

  ui.copyDid.addEventListener("click", async () => {
    const person = byId(current);
    if (person) ui.safetyStatus.textContent = (await copyText(person.did)) ? "Their did is copied." : "Select it and copy: " + person.did;
  });

  ui.contactRetry.addEventListener("click", () => { const p = byId(current); if (p) retryPerson(p, ui.contactRetry); });
  ui.contactAsk.addEventListener("click", () => { const p = byId(current); if (p) askVouches(p, ui.contactAsk); });
  ui.contactBlock.addEventListener("click", () => { const p = byId(current); if (p) blockPerson(p, ui.contactBlock); });
  ui.contactUnblock.addEventListener("click", () => { const p = byId(current); if (p) unblockPerson(p, ui.contactUnblock); });
  ui.contactRemove.addEventListener("click", () => { const p = byId(current); if (p) removePerson(p, ui.contactRemove); });
  for (const button of ui.contactRequest.querySelectorAll("button[data-act]")) {
    button.addEventListener("click", () => {
      const p = byId(current);
      if (!p) return;
      if (button.dataset.act === "accept") acceptRequest(p, button);
      else if (button.dataset.act === "decline") declineRequest(p, button);
      else blockPerson(p, button);
    });
  }

  ui.vouchForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const person = byId(current);
    if (!person) return;
    const body = { topic: ui.vouchTopic.value.trim(), level: Number(ui.vouchLevel.value), comment: ui.vouchComment.value.trim() };
    ui.vouchStatus.classList.remove("error");
    if (!body.topic) {
      ui.vouchStatus.classList.add("error");
      ui.vouchStatus.textContent = "Say what it is about: a topic like “trustworthy seller” or “knows python”.";
      return;
    }
    ui.vouchStatus.textContent = "Signing…";
    try {
      await busy(ui.vouchSend, () => twin.api(API + "/" + enc(person.id) + "/vouches", { method: "POST", body }));
      ui.vouchTopic.value = "";
      ui.vouchComment.value = "";
      ui.vouchStatus.textContent = "Vouched. Your contacts are being told.";
      hurry();
      await loadVouches();
      drawVouchViews();
      await refreshReputation();
    } catch (error) {
      ui.vouchStatus.classList.add("error");
      ui.vouchStatus.textContent = "Not sent. " + explain(error);
    }
  });

  async function revokeVouch(vouch, whom, button) {
    const sure = await confirmWith("Revoke this vouch?",
      "Your vouch on " + quote(vouch.topic) + " for " + whom + " is withdrawn, and your contacts are told.", "Revoke");
    if (!sure) return;
    const done = await act(button, () => twin.api(API + "/vouches/" + enc(vouch.id), { method: "DELETE" }), "Could not revoke.");
    if (done === undefined) return;
    hurry();
    toast("Revoked your vouch on " + quote(vouch.topic) + ".");
    await loadVouches().catch(() => {});
    drawVouchViews();
    if (view === "contact") refreshReputation();
  }

  // ---- invites -----------------------------------------------------------------------------

  function drawMe() {
    if (!me) return;
    ui.meLine.replaceChildren("Your invites show your name, ", make("strong", { textContent: me.name }),
      ", and your twin's address, " + (me.address.join(", ") || "unknown") + ".");
    ui.meNameless.hidden = named;
    ui.myDid.textContent = me.did;
  }

  function drawInvites() {
    const now = Date.now() / 1000;
    ui.inviteList.replaceChildren(...invites.map((invite) => {
      const label = invite.label || "Invite without a label";
      const li = make("li", { className: "invite" });
      li.dataset.id = invite.id;
      let state;
      let kind;
      if (invite.used) { state = "Used " + ago(invite.used); kind = "used"; }
      else if (invite.expires < now) { state = "Expired " + ago(invite.expires); kind = "expired"; }
      else { state = "Open until " + day(invite.expires); kind = "open"; }
      li.dataset.state = kind;
      const button = make("button", { type: "button", className: kind === "open" ? "danger" : "", textContent: kind === "open" ? "Revoke" : "Remove" });
      button.setAttribute("aria-label", (kind === "open" ? "Revoke the invite " : "Remove the invite ") + label);
      button.addEventListener("click", () => revokeInvite(invite, kind, button));
      li.append(
        make("div", { className: "invite-text" },
          make("strong", { className: "label", textContent: label }),
          make("span", { className: "small muted", textContent: "Made " + ago(invite.created) + " · " + state })),
        button);
      return li;
    }));
    ui.invitesEmpty.hidden = invites.length > 0;
  }

  ui.inviteForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.inviteError.textContent = "";
    try {
      const invite = await busy(ui.inviteMake, () => twin.api(API + "/invites", {
        method: "POST", body: { label: ui.inviteLabel.value.trim(), days: Number(ui.inviteDays.value) },
      }));
      madeInvite = invite;
      ui.inviteLink.value = invite.link;
      const qr = typeof invite.qr === "string" && invite.qr.startsWith("data:image/") ? invite.qr : "";
      ui.inviteQr.src = qr;
      ui.inviteQr.hidden = !qr;
      ui.inviteExpires.textContent = day(invite.expires);
      ui.inviteCopied.textContent = "";
      ui.inviteMade.hidden = false;
      ui.inviteLabel.value = "";
      ui.inviteLink.focus();
      ui.inviteLink.select();
      await loadInvites();
    } catch (error) {
      ui.inviteError.textContent = "No invite was made. " + explain(error);
    }
  });

  ui.inviteCopy.addEventListener("click", async () => {
    const done = await copyText(ui.inviteLink.value);
    ui.inviteLink.focus();
    ui.inviteLink.select();
    ui.inviteCopied.textContent = done ? "Copied." : "Press Ctrl+C (or ⌘C) to copy the selected link.";
  });

  async function revokeInvite(invite, kind, button) {
    if (kind === "open") {
      const sure = await confirmWith("Revoke this invite?",
        "Whoever has the link can no longer use it to ask you to connect.", "Revoke");
      if (!sure) return;
    }
    const done = await act(button, () => twin.api(API + "/invites/" + enc(invite.id), { method: "DELETE" }), "Could not revoke the invite.");
    if (done === undefined) return;
    if (madeInvite && madeInvite.id === invite.id) { madeInvite = null; ui.inviteMade.hidden = true; }
    toast(kind === "open" ? "Revoked the invite." : "Removed the invite.");
    await loadInvites().catch(() => {});
  }

  // ---- using an invite ---------------------------------------------------------------------

  // What an invite says about itself, read here only to ask "connect with …?": the twin checks
  // its signature before it sends anything.
  function readInvite(text) {
    const code = text.trim().split("#").pop().replace(/^invite=/, "");
    if (!code.startsWith(INVITE_PREFIX)) return null;
    try {
      const b64 = code.slice(INVITE_PREFIX.length).replace(/-/g, "+").replace(/_/g, "/");
      const bytes = Uint8Array.from(atob(b64 + "===".slice((b64.length + 3) % 4)), (c) => c.charCodeAt(0));
      const invite = JSON.parse(new TextDecoder().decode(bytes));
      return invite && typeof invite === "object" && typeof invite.name === "string" ? invite : null;
    } catch (_) {
      return null;
    }
  }

  function openUse(code) {
    document.title = "Use an invite · Contacts";
    ui.useError.textContent = "";
    if (!code) {
      ui.useConfirm.hidden = true;
      ui.useCancel.hidden = true;
      ui.useSend.textContent = "Send a contact request";
      return;
    }
    ui.useInvite.value = code;
    const invite = readInvite(code);
    ui.useConfirm.hidden = false;
    ui.useCancel.hidden = false;
    if (!invite) {
      ui.useWho.textContent = "This link does not hold a whole invite";
      ui.useFrom.textContent = "Ask for the invite again, and copy all of it; or paste it below.";
      ui.useSend.textContent = "Send a contact request";
      return;
    }
    const name = invite.name || "Someone";
    ui.useWho.textContent = "Connect with " + name + "?";
    const where = invite.address && Array.isArray(invite.address.urls) ? invite.address.urls.join(", ") : "";
    const until = typeof invite.expires === "number" ? " It works until " + day(invite.expires) + "." : "";
    const expired = typeof invite.expires === "number" && invite.expires < Date.now() / 1000;
    ui.useFrom.textContent = expired
      ? "This invite has expired. Ask " + name + " for a new one."
      : name + " invites you to connect" + (where ? ", from the twin at " + where : "") + "." + until;
    ui.useSend.textContent = "Connect with " + name;
    ui.useNote.focus();
  }

  ui.useForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = ui.useInvite.value.trim();
    ui.useError.textContent = "";
    if (!text) {
      ui.useError.textContent = "Paste the link or code you were sent.";
      return;
    }
    try {
      const person = await busy(ui.useSend, () => twin.api(API + "/connect", {
        method: "POST", body: { invite: text, note: ui.useNote.value.trim() },
      }));
      ui.useInvite.value = "";
      ui.useNote.value = "";
      replaceContact(person);
      hurry();
      toast(person.status === "connected"
        ? "You and " + person.name + " are connected: they had asked you too."
        : "Request sent to " + person.name + ". You are connected once they accept.");
      location.replace("#contact/" + enc(person.id)); // the invite leaves the address bar and history
    } catch (error) {
      ui.useError.textContent = "No request was sent. " + explain(error);
    }
  });

  ui.useCancel.addEventListener("click", () => {
    ui.useInvite.value = "";
    ui.useNote.value = "";
    location.replace("#");
  });

  // ---- vouches and look-ups ----------------------------------------------------------------

  function openVouches(did) {
    document.title = "Vouches · Contacts";
    loadVouches().then(drawVouchViews).catch((e) => showNotice("Could not load your vouches. " + explain(e)));
    if (did) {
      ui.lookupDid.value = did;
      showLookup(did);
    }
  }

  function drawMyVouches() {
    ui.vouchList.replaceChildren(...myVouches.map((v) => vouchItem(v, true)));
    ui.vouchesEmpty.hidden = myVouches.length > 0;
  }

  async function showLookup(did, { quiet = false } = {}) {
    if (!quiet) ui.lookupError.textContent = "";
    try {
      const rep = await reputationOf(did);
      const json = JSON.stringify(rep);
      if (quiet && (json === lookupJson || lookupFor !== did)) return;
      lookupFor = did;
      lookupJson = json;
      const person = byDid(did);
      const mine = me && me.did === did;
      const subject = mine ? "you" : person ? person.name : shortDid(did);
      ui.lookupHeading.textContent = "What you and your contacts say about " + subject;
      drawReputation(ui.lookupTopics, rep, subject);
      ui.lookupResult.hidden = false;
    } catch (error) {
      if (quiet) return;
      lookupFor = null;
      ui.lookupResult.hidden = true;
      ui.lookupError.textContent = explain(error) + (error.status === 400 ? " A did looks like did:key:z6Mk… ; ask the person to copy theirs." : "");
    }
  }

  ui.lookupForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const did = ui.lookupDid.value.trim();
    if (!did) return;
    lookupJson = "";
    showLookup(did);
  });

  ui.copyMyDid.addEventListener("click", async () => {
    if (me) ui.myDidCopied.textContent = (await copyText(me.did)) ? "Copied." : "Select it and copy it.";
  });

  ui.lookupMe.addEventListener("click", () => {
    if (!me) return;
    ui.lookupDid.value = me.did;
    lookupJson = "";
    showLookup(me.did);
  });

  // ---- small things ------------------------------------------------------------------------

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) { // the sandbox may keep the clipboard API away: copy a selection instead
      const field = make("textarea", { value: text, readOnly: true, className: "offscreen" });
      document.body.append(field);
      field.select();
      let done = false;
      try { done = document.execCommand("copy"); } catch (_) { done = false; }
      field.remove();
      return done;
    }
  }

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

  function hideToastIfBad() {
    if (ui.toast.classList.contains("bad")) hideToast();
  }

  ui.toastClose.addEventListener("click", hideToast);

  // ---- wiring ------------------------------------------------------------------------------

  for (const button of ui.views) {
    button.addEventListener("click", () => go(button.dataset.view === "people" ? "#" : "#" + button.dataset.view));
  }
  ui.goUse.addEventListener("click", () => go("#use"));
  ui.goInvite.addEventListener("click", () => go("#invites"));
  window.addEventListener("hashchange", route);

  (async () => {
    try {
      await Promise.all([loadContacts(), loadMe()]);
      showNotice("");
    } catch (error) {
      ui.app.dataset.state = "failed";
      showNotice("Could not load your contacts. " + explain(error));
    }
    nextPoll = Date.now() + POLL;
    route();
  })();
});
