// Settings, Backups: while a backup runs, its bar follows it; when it ends, the page shows
// how it went.
(function () {
  "use strict";
  const state = document.getElementById("backup-state");
  if (!state || state.dataset.running !== "yes") return;
  const bar = document.getElementById("backup-progress");
  const figure = document.getElementById("backup-figure");
  const part = state.querySelector("[data-backup=part]");
  const mib = (n) => (n / 1048576).toFixed(1) + " MiB";

  async function look() {
    let answer;
    try {
      const response = await fetch("/settings/backup/state", { credentials: "same-origin" });
      if (response.status === 401) {
        figure.textContent = "Signed out: sign in again to follow the backup.";
        return;
      }
      if (!response.ok) throw new Error(response.status);
      answer = await response.json();
    } catch (err) {
      figure.textContent = "Cannot reach your twin; trying again.";
      setTimeout(look, 3000);
      return;
    }
    const running = answer.running;
    if (!running) {
      // done or failed: the page says which
      if (location.search) location.replace("/settings#backups");
      else location.reload();
      return;
    }
    bar.hidden = false;
    bar.max = Math.max(running.total, running.done, 1);
    bar.value = running.done;
    if (part) part.textContent = running.part;
    figure.textContent = mib(running.done) + " of " + mib(running.total);
    setTimeout(look, 500);
  }
  look();
})();
