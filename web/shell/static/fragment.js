// Keeps the page's #fragment through a form that redirects: a form's action carries it, and
// the browser gives it to the redirect's target (RFC 9110 §10.2.2), so an invite link opened
// before an experience was allowed still reaches the experience once it is.
"use strict";

for (const form of document.querySelectorAll("form[data-keep-fragment]")) {
  if (location.hash) form.action = form.getAttribute("action") + location.hash;
}
