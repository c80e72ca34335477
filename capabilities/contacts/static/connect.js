// The public invite page: reads the invite from the link's fragment (never sent to a server)
// and hands it to the visitor's own twin.
"use strict";

(function () {
  const prefix = "twin-invite:";
  const code = decodeURIComponent(location.hash.slice(1)).replace(/^invite=/, "");
  const who = document.getElementById("who");
  let invite = null;
  try {
    if (!code.startsWith(prefix)) throw new Error("not an invite");
    const b64 = code.slice(prefix.length).replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    invite = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    invite = null;
  }
  if (!invite || typeof invite.name !== "string") {
    document.getElementById("bad").hidden = false;
    document.getElementById("good").hidden = true;
    return;
  }
  // The page is this twin's: an invite made by another twin, shown here, would borrow its name.
  if (invite.did !== document.getElementById("page").dataset.did) {
    who.textContent = "An invite that is not from this twin";
    document.getElementById("foreign").hidden = false;
    document.getElementById("good").hidden = true;
    return;
  }
  who.textContent = (invite.name || "Someone") + " invites you to connect your twins";
  document.getElementById("code").value = code;
  const field = document.getElementById("twin");
  field.value = localStorage.getItem("twin-home") || "";
  document.getElementById("open").addEventListener("submit", (event) => {
    event.preventDefault();
    let home = field.value.trim().replace(/\/+$/, "");
    if (!/^https?:\/\//.test(home)) home = "https://" + home;
    localStorage.setItem("twin-home", home);
    location.href = home + "/x/contacts/#invite=" + encodeURIComponent(code);
  });
})();
