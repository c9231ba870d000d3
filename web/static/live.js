// badge-bridge console: the live feed (server-sent events), the doors board and the alarm banner.
// No framework: rows are built with textContent only, so nothing from an event is ever parsed as HTML.
"use strict";

(function () {
  const url = document.body.dataset.stream;
  if (!url) return;
  const feed = document.querySelector("#feed tbody");
  const state = document.getElementById("live-state");
  const filters = document.getElementById("filters");
  const banner = document.getElementById("alarm-banner");
  const count = document.getElementById("alarm-count");
  const baseTitle = document.title;

  function wanted(kind, door) {
    if (!filters) return true;
    const f = new FormData(filters);
    const wantDoor = f.get("door"), wantKind = f.get("kind"), area = filters.querySelector("select[name=area]");
    if (wantDoor && door !== wantDoor) return false;
    if (area && area.value) {
      const doors = area.selectedOptions[0].dataset.doors.split(" ");
      if (!doors.includes(door)) return false;
    }
    if (wantKind && !(wantKind.endsWith(".") ? kind.startsWith(wantKind) : kind === wantKind)) return false;
    return true;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function row(e) {
    const tr = document.createElement("tr");
    tr.className = "new kind-" + e.kind.split(".")[0] + (e.kind === "alarm.raised" ? " alarm" : "");
    tr.dataset.kind = e.kind;
    tr.dataset.door = e.door || "";
    tr.appendChild(cell(e.ts.replace("T", " ").slice(0, 19), "time"));
    const kind = cell("");
    const link = document.createElement("span");
    link.textContent = e.kind;
    kind.appendChild(link);
    tr.appendChild(kind);
    tr.appendChild(cell(e.door || ""));
    tr.appendChild(cell(e.source));
    tr.appendChild(cell(JSON.stringify(e.subject), "json"));
    tr.appendChild(cell(JSON.stringify(e.detail), "json"));
    return tr;
  }

  function alarm(e) {
    banner.hidden = false;
    document.getElementById("alarm-text").textContent =
      (e.detail.alarm || e.kind) + " at " + (e.door || e.source) + " — " + e.ts.replace("T", " ").slice(0, 19);
    const n = (parseInt(count.textContent, 10) || 0) + 1;
    count.textContent = n;
    count.classList.add("hot");
    document.title = "(" + n + ") ALARM · " + baseTitle;
    try {  // a short tone; browsers allow it once the page has had a click
      const ctx = new AudioContext(), osc = ctx.createOscillator();
      osc.frequency.value = 880; osc.connect(ctx.destination); osc.start(); osc.stop(ctx.currentTime + 0.4);
    } catch (err) { /* no sound: the banner and the title still show it */ }
  }

  function door(s) {
    const tr = document.getElementById("door-" + s.door);
    if (!tr) return;
    const label = !s.online ? "OFFLINE" : s.alarms.includes("door.forced") ? "FORCED"
      : s.alarms.includes("door.held_open") ? "HELD OPEN" : s.contact;
    const pill = tr.querySelector(".door-state .pill");
    pill.textContent = label;
    pill.className = "pill " + (!s.online ? "offline" : s.alarms.length ? "alarm" : s.contact);
    tr.querySelector(".door-contact").textContent = s.contact;
    const lock = tr.querySelector(".door-lock");
    lock.textContent = s.lock;
    lock.className = "door-lock lock-" + s.lock;
    tr.querySelector(".door-alarms").textContent = s.alarms.join(", ");
  }

  const source = new EventSource(url);
  source.onopen = () => { if (state) { state.textContent = "live"; state.className = "live-state on"; } };
  source.onerror = () => { if (state) { state.textContent = "reconnecting…"; state.className = "live-state off"; } };
  source.addEventListener("events", (msg) => {
    const batch = JSON.parse(msg.data);
    for (const e of batch.events) {
      if (e.kind === "alarm.raised") alarm(e);
      if (feed && wanted(e.kind, e.door || "")) {
        feed.insertBefore(row(e), feed.firstChild);
        while (feed.rows.length > 500) feed.deleteRow(-1);
      }
    }
  });
  source.addEventListener("door", (msg) => door(JSON.parse(msg.data)));
  // the session ended (logout elsewhere, password changed, user disabled): reload, and the login page says why
  source.addEventListener("session", () => { source.close(); window.location.reload(); });
  if (filters) filters.addEventListener("change", () => {
    for (const tr of feed.rows) tr.hidden = !wanted(tr.dataset.kind || "", tr.dataset.door || "");
  });
})();
