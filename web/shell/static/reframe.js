// Shown in the frame of a notifying experience when the frame's request could not be its page:
// a reload from the frame's opaque origin comes without the session cookie, and the sign-in,
// grant and unlock pages belong at the top. Asks the shell's page around the frame (frame.js)
// to open it again from the twin's own origin.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const top = document.getElementById("reframe").dataset.top === "yes";
  if (window.parent === window) { // opened on its own: open the experience's own address
    const params = new URLSearchParams(location.search);
    params.delete("frame");
    const query = params.toString();
    location.replace(location.pathname + (query ? "?" + query : "") + location.hash);
    return;
  }
  const href = location.pathname + location.search + location.hash;
  window.parent.postMessage({ type: "twin.reframe", top, href }, location.origin);
});
