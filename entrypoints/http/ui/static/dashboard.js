// TaskForge dashboard: the only script. Refreshes the overview's live part in place.
"use strict";

(function () {
  const live = document.getElementById("live");
  if (!live) {
    return;
  }
  const url = live.dataset.live;
  const every = Number(live.dataset.every) || 3000;
  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (response.redirected) {
        // The session ended (after 12 hours, or Log out in another tab) and the answer is
        // the sign-in form: reload, so the whole page asks for the token and comes back.
        window.location.reload();
        return;
      }
      if (response.ok) {
        live.innerHTML = await response.text();
        live.dataset.refreshed = String(Date.now());
      }
    } catch (error) {
      // The server is restarting or unreachable: keep the last counts, try again later.
    }
    window.setTimeout(refresh, every);
  }
  window.setTimeout(refresh, every);
})();
