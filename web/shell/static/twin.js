// The helper every experience page gets: twin.api(path, options) calls /api with the page's token.
(function () {
  const meta = document.querySelector('meta[name="twin-token"]');
  const token = meta ? meta.content : "";

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (token) headers.set("Authorization", "Bearer " + token);
    let body = options.body;
    if (body !== undefined && !(body instanceof Blob) && !(body instanceof FormData) && typeof body !== "string") {
      headers.set("Content-Type", "application/json");
      body = JSON.stringify(body);
    }
    const response = await fetch("/api" + path, { ...options, headers, body, credentials: "omit" });
    if (!response.ok) {
      let message = response.statusText;
      try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    if (response.status === 204) return null;
    const type = response.headers.get("Content-Type") || "";
    return type.includes("json") ? response.json() : response.blob();
  }

  window.twin = { api, token };
})();
