// badge-bridge console: the muster list, fetched again when people badge (bb:events access.* and door.*),
// and printed for an evacuation with the time of printing.
"use strict";

(function () {
  let busy = false, again = false;

  async function refresh() {
    const list = document.getElementById("muster-list");
    if (!list) return;
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(list.dataset.url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.ok) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("muster-list");
        if (fresh) document.getElementById("muster-list").replaceWith(document.adoptNode(fresh));
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  document.addEventListener("bb:events", (msg) => {
    if (msg.detail.events.some((e) => e.kind.startsWith("access.") || e.kind.startsWith("door."))) refresh();
  });
  document.addEventListener("bb:open", refresh);  // after a reconnect: what changed meanwhile
  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("muster-print");
    if (button) button.addEventListener("click", () => window.print());
  });
  window.addEventListener("beforeprint", () => {
    const printed = document.getElementById("muster-printed");
    if (printed) {
      printed.textContent = new Intl.DateTimeFormat("en-GB", { timeZone: printed.dataset.timezone, dateStyle: "full",
                                                                timeStyle: "long" }).format(new Date());
    }
  });
})();
