// The shell's page around a notifying experience (experience_frame.html): it holds the
// experience's page in a sandboxed frame and does, when the frame asks by postMessage (twin.js),
// what the frame's opaque origin may not: browser notifications, the tab's title, the address's
// #fragment, and opening another of the twin's pages at the top. Only messages from its own
// frame count, and but for "twin.reframe" only those that carry the key this page gave it.
"use strict";

(function () {
  const frame = document.getElementById("experience");
  const own = frame.dataset.src; // the experience's address, /x/<id>/
  const name = document.title;
  const LIMIT = { title: 200, body: 500, tag: 200, hash: 2000, href: 2000 };
  const EXPERIENCE = /^\/x\/[a-z][a-z0-9_]*\/$/;
  const AGAIN_AFTER = 10000; // ms: a page opened again sooner than this is not opened again
  let key = ""; // rides in the frame's address: a page the frame is sent to afterwards lacks it
  let answered = false; // the page in the frame spoke (with the key) since it was last loaded

  // A new key each time also makes a new address, which the frame loads even when only its
  // #fragment would otherwise differ from the one it shows.
  function load(search, hash) {
    key = Array.from(crypto.getRandomValues(new Uint8Array(16)),
      (byte) => byte.toString(16).padStart(2, "0")).join("");
    const params = new URLSearchParams(search);
    params.delete("frame");
    const rest = params.toString();
    answered = false;
    frame.src = own + "?frame=" + key + (rest ? "&" + rest : "") + hash;
  }

  // The frame's origin is opaque, so no target origin can name it; what goes there is the
  // experience's own: a permission state, a tag it gave, its #fragment.
  function tell(message) {
    if (frame.contentWindow) frame.contentWindow.postMessage(message, "*");
  }

  const permission = () => ("Notification" in window ? Notification.permission : "unavailable");
  const text = (value, limit) => (typeof value === "string" ? value.slice(0, limit) : "");

  function notify(data) {
    if (permission() !== "granted" || !document.hidden) return;
    const title = text(data.title, LIMIT.title).trim();
    if (!title) return;
    const tag = text(data.tag, LIMIT.tag);
    try {
      const shown = new Notification(title, { body: text(data.body, LIMIT.body), tag });
      shown.addEventListener("click", () => {
        window.focus();
        shown.close();
        tell({ type: "twin.notification-click", tag });
      });
    } catch (_) { /* the browser would not show it */ }
  }

  // The answer names the question it answers (twin.js may ask several at once).
  async function answer(data, ask) {
    let state = permission();
    if (ask && state === "default") {
      try { state = await Notification.requestPermission(); } catch (_) { state = permission(); }
    }
    tell({ type: "twin.notify-state", state, id: Number.isSafeInteger(data.id) ? data.id : null });
  }

  function follow(hash) {
    if (typeof hash !== "string" || hash.length > LIMIT.hash || (hash && hash[0] !== "#")) return;
    if (hash !== location.hash) history.replaceState(history.state, "", hash || location.pathname + location.search);
  }

  function leave(href) {
    if (typeof href !== "string" || href.length > LIMIT.href) return;
    let url;
    try { url = new URL(href, location.href); } catch (_) { return; }
    if (url.origin === location.origin) {
      url.searchParams.delete("frame");
      location.assign(url.href);
    } else if (url.protocol === "https:" || url.protocol === "http:") {
      window.open(url.href, "_blank", "noopener");
    }
  }

  // Open the top page again, once in a while at most: a page that keeps failing stays put.
  function reloadTop(hash) {
    try {
      const last = Number(sessionStorage.getItem("twin.reframed") || 0);
      if (Date.now() - last < AGAIN_AFTER) return;
      sessionStorage.setItem("twin.reframed", String(Date.now()));
    } catch (_) { /* no storage: open it anyway */ }
    history.replaceState(history.state, "", hash || location.pathname + location.search);
    location.reload();
  }

  // The frame's request could not be its page (see reframe.js): its own reload came without the
  // session cookie, so load it from here, where the cookie goes along; if that did not help, or
  // the twin wants its own page at the top (sign-in, grant, unlock), open the top page again.
  function reframe(data) {
    let url;
    try { url = new URL(text(data.href, LIMIT.href), location.href); } catch (_) { return; }
    if (url.origin !== location.origin || !EXPERIENCE.test(url.pathname)) return;
    if (url.pathname !== own) {
      url.searchParams.delete("frame");
      location.assign(url.href);
    } else if (data.top !== true && answered) load(url.search, url.hash);
    else reloadTop(url.hash);
  }

  window.addEventListener("message", (event) => {
    if (!frame.contentWindow || event.source !== frame.contentWindow) return;
    const data = event.data;
    if (!data || typeof data !== "object" || typeof data.type !== "string") return;
    if (data.type === "twin.reframe") { reframe(data); return; }
    if (data.key !== key) return;
    answered = true;
    if (data.type === "twin.notify") notify(data);
    else if (data.type === "twin.notify-ask") answer(data, true);
    else if (data.type === "twin.notify-state?") answer(data, false);
    else if (data.type === "twin.title") document.title = text(data.title, LIMIT.title) || name;
    else if (data.type === "twin.hash") follow(data.hash);
    else if (data.type === "twin.open") leave(data.href);
  });
  window.addEventListener("hashchange", () => tell({ type: "twin.hash", hash: location.hash }));

  load(location.search, location.hash);
})();
