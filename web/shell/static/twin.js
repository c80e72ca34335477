// The helper every experience page gets: twin.api(path, options) calls /api with the page's token,
// twin.request does the same and hands back the raw Response, twin.live follows a server-sent
// event stream under /api (EventSource cannot send the token) and resumes it after a disconnect,
// twin.notifications shows browser notifications through the shell's page around a notifying
// experience (frame.js), which also gets the page's title, #fragment and links to other pages.
(function () {
  const meta = document.querySelector('meta[name="twin-token"]');
  const token = meta ? meta.content : "";

  function request(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (token) headers.set("Authorization", "Bearer " + token);
    let body = options.body;
    if (body !== undefined && body !== null && !(body instanceof Blob) && !(body instanceof FormData) && typeof body !== "string") {
      headers.set("Content-Type", "application/json");
      body = JSON.stringify(body);
    }
    return fetch("/api" + path, { ...options, headers, body, credentials: "omit" });
  }

  async function failure(response) {
    let message = response.statusText;
    let code = "";
    try {
      const error = (await response.json()).error;
      message = error.message;
      code = error.code;
    } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    error.code = code;
    error.headers = response.headers;
    return error;
  }

  async function api(path, options = {}) {
    const response = await request(path, options);
    if (!response.ok) throw await failure(response);
    if (response.status === 204) return null;
    const type = response.headers.get("Content-Type") || "";
    return type.includes("json") ? response.json() : response.blob();
  }

  // Statuses after which reconnecting cannot help: the caller must act (sign in, start over).
  const FINAL = new Set([400, 401, 403, 404, 410]);
  const QUIET_LIMIT = 45000; // the twin sends a comment every 15 s; silence this long is a dead line

  function live(path, { since = null, onChange, onReady, onEvent, onError } = {}) {
    let lastId = since;
    let stopped = false;
    let controller = null;
    let delay = 1000;
    let timer = null;
    let connected = false; // a request or a stream is under way

    function url() {
      if (lastId === null || lastId === undefined) return path;
      const [base, query = ""] = path.split("?");
      const params = new URLSearchParams(query);
      params.set("since", String(lastId));
      return base + "?" + params.toString();
    }

    function dispatch(event) {
      if (event.id !== null) lastId = event.id;
      let data = event.data;
      try { data = JSON.parse(data); } catch (_) { /* plain text */ }
      if (event.type === "message") { if (onChange) onChange(data, event.id); }
      else if (event.type === "ready") { delay = 1000; if (onReady) onReady(data); }
      else if (onEvent) onEvent(event.type, data, event.id);
    }

    let quiet = null;
    function watch() { // a line that stays silent too long is dead: drop it
      clearTimeout(quiet);
      const current = controller;
      quiet = setTimeout(() => current.abort(), QUIET_LIMIT);
    }

    async function read(response) {
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let event = { id: null, type: "message", data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done || stopped) return;
        watch();
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (event.data.length) dispatch({ ...event, data: event.data.join("\n") });
            else if (event.id !== null) lastId = event.id;
            event = { id: null, type: "message", data: [] };
            continue;
          }
          if (line.startsWith(":")) continue; // a comment: the keep-alive
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") event.data.push(value);
          else if (field === "event") event.type = value || "message";
          else if (field === "id") event.id = value === "" ? null : (/^\d+$/.test(value) ? Number(value) : value);
        }
      }
    }

    async function connect() {
      timer = null;
      if (stopped || connected) return;
      connected = true;
      controller = new AbortController();
      watch();
      let error = null;
      try {
        const response = await request(url(), { signal: controller.signal, headers: { Accept: "text/event-stream" } });
        if (!response.ok) {
          error = await failure(response);
          if (FINAL.has(response.status)) {
            error.final = true;
            stopped = true;
            window.removeEventListener("offline", offline);
            window.removeEventListener("online", online);
          }
        } else {
          await read(response);
          error = new Error("the stream ended");
        }
      } catch (caught) {
        error = caught;
      }
      connected = false;
      clearTimeout(quiet);
      if (stopped && !error.final) return; // closed by the page
      const retryIn = stopped ? null : delay + Math.floor(Math.random() * 500);
      if (onError) onError(error, { retryIn, final: Boolean(error.final) });
      if (stopped) return;
      timer = setTimeout(connect, retryIn);
      delay = Math.min(delay * 2, 30000);
    }

    // The browser knows when the network goes: drop the line then (it may linger half-open),
    // and try again at once when the network is back.
    function offline() { if (controller) controller.abort(); }
    function online() {
      if (stopped || connected) return;
      clearTimeout(timer);
      delay = 1000;
      connect();
    }
    window.addEventListener("offline", offline);
    window.addEventListener("online", online);

    connect();
    return {
      get lastId() { return lastId; },
      close() {
        stopped = true;
        clearTimeout(timer);
        if (controller) controller.abort();
        window.removeEventListener("offline", offline);
        window.removeEventListener("online", online);
      },
    };
  }

  // ---- in the shell's frame (experience.toml: notifications = true) -------------------------

  const STATES = new Set(["granted", "denied", "default", "unavailable"]);
  const frameKey = window.parent !== window ? new URLSearchParams(location.search).get("frame") : null;
  const framed = Boolean(frameKey);
  const answers = new Map(); // request id → the resolver waiting for the permission state
  const clickHandlers = [];
  let asked = 0;

  function toShell(message) {
    window.parent.postMessage({ ...message, key: frameKey }, location.origin);
  }

  function permission(type, wait) {
    if (!framed) return Promise.resolve("unavailable");
    return new Promise((resolve) => {
      const id = ++asked;
      answers.set(id, resolve);
      toShell({ type, id });
      if (wait) setTimeout(() => { if (answers.delete(id)) resolve("unavailable"); }, wait);
    });
  }

  const notifications = {
    state: () => permission("twin.notify-state?", 3000),
    ask: () => permission("twin.notify-ask", 0), // the browser's question waits for the owner
    show({ title = "", body = "", tag = "" } = {}) {
      if (framed) toShell({ type: "twin.notify", title: String(title), body: String(body), tag: String(tag) });
    },
    onClick(handler) { clickHandlers.push(handler); },
  };

  if (framed) {
    window.addEventListener("message", (event) => {
      if (event.source !== window.parent || event.origin !== location.origin) return;
      const data = event.data;
      if (!data || typeof data !== "object") return;
      if (data.type === "twin.notify-state") {
        const resolve = answers.get(data.id);
        answers.delete(data.id);
        if (resolve) resolve(STATES.has(data.state) ? data.state : "unavailable");
      } else if (data.type === "twin.notification-click") {
        for (const handler of clickHandlers) handler(String(data.tag || ""));
      } else if (data.type === "twin.hash" && typeof data.hash === "string") {
        if ((data.hash === "" || data.hash[0] === "#") && data.hash !== location.hash) location.replace(data.hash || "#");
      }
    });

    // The tab shows the shell's page: it takes this page's title and #fragment.
    let title = null;
    const sendTitle = () => {
      if (document.title === title) return;
      title = document.title;
      toShell({ type: "twin.title", title });
    };
    new MutationObserver(sendTitle).observe(document.head, { subtree: true, childList: true, characterData: true });
    sendTitle();
    window.addEventListener("hashchange", () => toShell({ type: "twin.hash", hash: location.hash }));

    // A link to another page would open it in the frame (where the twin's own pages refuse to
    // be): the shell's page opens it instead.
    window.addEventListener("click", (event) => {
      if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      const link = event.target instanceof Element ? event.target.closest("a[href]") : null;
      if (!link || link.hasAttribute("download")) return;
      const target = (link.getAttribute("target") || "_self").toLowerCase();
      if (!["_self", "_top", "_parent"].includes(target)) return;
      const url = new URL(link.href, location.href);
      if (url.protocol !== "http:" && url.protocol !== "https:") return;
      if (url.origin === location.origin && url.pathname === location.pathname && url.search === location.search) return;
      event.preventDefault();
      toShell({ type: "twin.open", href: url.href });
    });
  }

  window.twin = { api, request, live, token, notifications };
})();
