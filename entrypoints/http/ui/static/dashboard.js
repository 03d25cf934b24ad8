// TaskForge dashboard: the only script. Takes a shown notice out of the address, and
// refreshes the overview's live part in place.
"use strict";

(function () {
  // A notice says what an action just did. Once shown it leaves the address, so a reload,
  // Back or a copied link does not say it again, about a job that may have moved since.
  const address = new URL(window.location.href);
  if (address.searchParams.has("notice")) {
    address.searchParams.delete("notice");
    address.searchParams.delete("signed");
    window.history.replaceState(null, "", address.pathname + address.search + address.hash);
  }

  const live = document.getElementById("live");
  if (!live) {
    return;
  }
  const url = live.dataset.live;
  const every = Number(live.dataset.every) || 3000;
  const MOST_POSTPONED = Math.ceil(30000 / every);
  let postponed = 0;
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
        const text = await response.text();
        if (selecting() && postponed < MOST_POSTPONED) {
          // Replacing the part would wipe what the operator is selecting (a worker id);
          // a selection left behind holds the counts up for half a minute at most.
          postponed += 1;
          live.dataset.postponed = String(Date.now());
        } else {
          postponed = 0;
          const focused = focusedLink();
          live.innerHTML = text;
          live.dataset.refreshed = String(Date.now());
          refocus(focused);
        }
      }
    } catch (error) {
      // The server is restarting or unreachable: keep the last counts, try again later.
    }
    window.setTimeout(refresh, every);
  }
  window.setTimeout(refresh, every);

  function selecting() {
    const selection = window.getSelection();
    return Boolean(
      selection &&
        !selection.isCollapsed &&
        (live.contains(selection.anchorNode) || live.contains(selection.focusNode)),
    );
  }

  // The link the keyboard is on inside the live part, by its address: the refresh puts
  // the focus back on the new link with that address, or a keyboard user would be thrown
  // back to the top of the page every few seconds.
  function focusedLink() {
    const active = document.activeElement;
    return active instanceof HTMLAnchorElement && live.contains(active)
      ? active.getAttribute("href")
      : null;
  }

  function refocus(href) {
    if (href === null) {
      return;
    }
    const link = live.querySelector(`a[href="${CSS.escape(href)}"]`);
    if (link) {
      link.focus({ preventScroll: true });
    }
  }
})();
