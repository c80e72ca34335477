// Passkey ceremonies for the shell's pages: [data-passkey="login"] signs in, [data-passkey=
// "register"] creates a passkey (with the page's setup or pairing link, or for a signed-in
// owner); forms with data-confirm ask before they are sent. No inline script: the CSP forbids it.
(function () {
  "use strict";
  const status = document.getElementById("passkey-status");

  function say(text, isError) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function fromB64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
  }

  function toB64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(json) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return {
      ...json,
      challenge: fromB64url(json.challenge),
      user: { ...json.user, id: fromB64url(json.user.id) },
      excludeCredentials: (json.excludeCredentials || []).map((c) => ({ ...c, id: fromB64url(c.id) })),
    };
  }

  function requestOptions(json) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return {
      ...json,
      challenge: fromB64url(json.challenge),
      allowCredentials: (json.allowCredentials || []).map((c) => ({ ...c, id: fromB64url(c.id) })),
    };
  }

  // Only what the twin checks is sent; extension results (a PRF secret, say) never leave.
  function credentialJSON(credential) {
    const r = credential.response;
    const response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) response.userHandle = toB64url(r.userHandle);
    }
    return {
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      response,
      clientExtensionResults: {},
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
    };
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = data.error ? data.error.message : response.statusText;
      const error = new Error(message.charAt(0).toUpperCase() + message.slice(1) + ".");
      error.code = data.error ? data.error.code : "";
      throw error;
    }
    return data;
  }

  function explain(error, origin) {
    switch (error.name) {
      case "NotAllowedError":
        return "No passkey was used: the prompt was closed, timed out, or could not verify you " +
               "(fingerprint, face or PIN). Try again when you are ready.";
      case "InvalidStateError":
        return "This device already has a passkey for this twin: sign in with it instead.";
      case "SecurityError":
        return "This browser will not use passkeys at this address. Open the twin at " + origin + ".";
      case "NotSupportedError":
        return "This device has no passkey that works here. Try your phone, or a security key.";
      default:
        return error.message || String(error);
    }
  }

  async function register(element) {
    const nameField = document.getElementById("device-name");
    say("Follow your device's prompt…");
    const start = await post("/auth/register/options", { link: element.dataset.link || null });
    const credential = await navigator.credentials.create({ publicKey: creationOptions(start.publicKey) });
    say("Checking…");
    const done = await post("/auth/register", {
      ceremony: start.ceremony,
      credential: credentialJSON(credential),
      name: nameField ? nameField.value : "",
    });
    location.assign(element.dataset.next || done.next);
  }

  async function login(element) {
    say("Follow your device's prompt…");
    const start = await post("/auth/login/options", {});
    const credential = await navigator.credentials.get({ publicKey: requestOptions(start.publicKey) });
    say("Checking…");
    try {
      const done = await post("/auth/login", { ceremony: start.ceremony, credential: credentialJSON(credential) });
      // back to the experience the visitor was sent here from, with its link's #fragment
      const back = element.dataset.next ? element.dataset.next + location.hash : "";
      location.assign(back || done.next);
    } catch (error) {
      // A passkey removed in Settings: ask the device to stop offering it (where supported).
      if (error.code === "unknown_passkey" && PublicKeyCredential.signalUnknownCredential) {
        await PublicKeyCredential.signalUnknownCredential({
          rpId: start.publicKey.rpId, credentialId: credential.id,
        }).catch(() => {});
      }
      throw error;
    }
  }

  async function run(element) {
    const origin = element.dataset.origin || location.origin;
    if (!window.PublicKeyCredential || !window.isSecureContext) {
      say("This browser cannot use passkeys at " + location.origin + ". Open the twin at " + origin +
          " (passkeys need https, or localhost on the twin's own machine).", true);
      return;
    }
    const button = element.tagName === "FORM" ? element.querySelector("button") : element;
    button.disabled = true;
    try {
      await (element.dataset.passkey === "login" ? login(element) : register(element));
    } catch (error) {
      say(explain(error, origin), true);
      button.disabled = false;
    }
  }

  document.addEventListener("click", (event) => {
    const element = event.target.closest("button[data-passkey]");
    if (element) { event.preventDefault(); run(element); }
  });
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.passkey) { event.preventDefault(); run(form); return; }
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });
})();
