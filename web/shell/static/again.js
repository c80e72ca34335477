// Opens the experience again from the twin's own origin, so the browser sends the session
// cookie it held back from the sandboxed page's reload; its query and fragment go along.
document.addEventListener("DOMContentLoaded", () => {
  const again = document.getElementById("again");
  location.replace(again.getAttribute("href") + location.search + location.hash);
});
