// badge-bridge console: the alarm panel beside every page, the banner, the count in the header, the title and
// a tone on a new HIGH-priority alarm (lower priorities redraw the panel quietly).
// The panel is redrawn from /alarms/panel (HTML the server escaped, parsed inert with DOMParser, never given to
// innerHTML) when an alarm event arrives or the stream says the alarm table changed (an acknowledgement in
// another console process). Everything taken from an event is set with textContent.
"use strict";

(function () {
  let panel = document.getElementById("alarm-panel");
  if (!panel) return;
  const banner = document.getElementById("alarm-banner");
  const count = document.getElementById("alarm-count");
  const baseTitle = document.title.replace(/^\(\d+\) ALARM · /, "");
  const url = panel.dataset.panel;
  let highSeen = parseInt(panel.dataset.high, 10) || 0;
  let fetching = null, again = false, awaySince = null, retrying = null;

  function status(text, ok) {
    const line = document.getElementById("alarm-panel-status");
    line.textContent = text || "";
    line.hidden = !text;
    line.classList.toggle("ok", !!ok);
  }

  function age(ms) {
    const s = Math.max(0, Math.floor((Date.now() - ms) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
    return Math.floor(s / 86400) + " d ago";
  }

  function tick() {
    for (const row of panel.querySelectorAll(".alarm-group[data-raised]")) {
      row.querySelector(".age").textContent = age(parseInt(row.dataset.raised, 10));
    }
  }

  function tone() {
    try {  // browsers allow sound once the page has had a click
      const ctx = new AudioContext(), osc = ctx.createOscillator();
      osc.frequency.value = 880; osc.connect(ctx.destination); osc.start(); osc.stop(ctx.currentTime + 0.4);
    } catch (err) { /* no sound: the banner and the title still show it */ }
  }

  // a new HIGH alarm: banner, title, tone; any change: the open count in the header
  function announce() {
    const open = parseInt(document.getElementById("alarm-panel-count").textContent, 10) || 0;
    if (count) { count.textContent = open; count.classList.toggle("hot", open > 0); }
    let newest = null;
    const highOpen = panel.querySelectorAll(".alarm-group.prio-high.state-open");
    for (const row of highOpen) {
      const id = parseInt(row.dataset.newest, 10);
      if (id > highSeen && (!newest || id > parseInt(newest.dataset.newest, 10))) newest = row;
    }
    if (newest) {
      highSeen = parseInt(newest.dataset.newest, 10);
      const what = newest.querySelector(".alarm-kind").textContent + " at " + newest.querySelector(".place").textContent;
      if (banner) { banner.hidden = false; document.getElementById("alarm-text").textContent = what; }
      document.title = "(" + open + ") ALARM · " + what + " · " + baseTitle;
      tone();
    } else if (highOpen.length === 0) {  // every high alarm acknowledged (here or at another desk)
      document.title = baseTitle;
      if (banner) banner.hidden = true;
    }
  }

  // what the operator is typing survives a redraw
  function typed() {
    const kept = {};
    for (const row of panel.querySelectorAll(".alarm-group")) {
      const box = row.querySelector("textarea[name=comment]"), details = row.querySelector("details");
      if (box && (box.value || details.open)) kept[row.dataset.key] = { text: box.value, focus: document.activeElement === box };
    }
    return kept;
  }

  function restore(kept) {
    for (const row of panel.querySelectorAll(".alarm-group")) {
      const k = kept[row.dataset.key], box = row.querySelector("textarea[name=comment]");
      if (!k || !box) continue;
      row.querySelector("details").open = true;
      box.value = k.text;
      if (k.focus) box.focus();
    }
  }

  function redraw() {
    if (fetching) { again = true; return fetching; }
    fetching = fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then((r) => {
        if (!r.ok) throw new Error("status " + r.status);
        return r.text();
      })
      .then((text) => {
        const fresh = new DOMParser().parseFromString(text, "text/html").getElementById("alarm-panel");
        if (!fresh) throw new Error("no panel in the answer");
        const kept = typed();
        const node = document.importNode(fresh, true);
        panel.replaceWith(node);
        panel = node;
        restore(kept);
        awaySince = null;
        status("");
        tick();
        announce();
      })
      .catch(() => {
        awaySince = awaySince || new Date();
        status("Not up to date since " + awaySince.toTimeString().slice(0, 8) +
               ": the console cannot read the alarms (database or network away). Retrying…");
        if (!retrying) retrying = setTimeout(() => { retrying = null; redraw(); }, 5000);
      })
      .finally(() => {
        fetching = null;
        if (again) { again = false; redraw(); }
      });
    return fetching;
  }

  // acknowledge in place: the page keeps its place, the panel says what happened
  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!form.classList || !form.classList.contains("ack-form")) return;
    ev.preventDefault();
    fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin",
                         headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error("status " + r.status))))
      .then((answer) => {
        const box = form.querySelector("textarea[name=comment]");
        if (answer.ok) { box.value = ""; form.closest("details").open = false; }
        return redraw().then(() => status(answer.messages.join(" "), answer.ok));
      })
      .catch(() => status("The acknowledgement was not sent (the console does not answer). Try again."));
  });

  document.addEventListener("bb:events", (msg) => {
    if (msg.detail.events.some((e) => e.kind === "alarm.raised" || e.kind === "alarm.cleared")) redraw();
  });
  document.addEventListener("bb:alarms", (msg) => {
    if (msg.detail.version === null) {
      awaySince = awaySince || new Date();
      status("Not up to date since " + awaySince.toTimeString().slice(0, 8) +
             ": the console cannot read the alarms (database away). Retrying…");
    } else if (msg.detail.version !== panel.dataset.version || awaySince) {
      redraw();
    }
  });
  tick();
  setInterval(tick, 1000);
})();
