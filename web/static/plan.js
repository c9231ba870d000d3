// badge-bridge console: the door icons on floor plans and the lockdown banner, live from the bridge's door
// states (bb:door). Text is set with textContent only; the icon's word, not only its colour, says the state.
"use strict";

(function () {
  // the same order as web/plans.py icon_state: the most urgent first
  function iconState(s) {
    if (!s.online) return "offline";
    if (s.alarms.includes("door.forced")) return "forced";
    if (s.alarms.includes("door.held_open")) return "held-open";
    if (s.lock === "lockdown") return "lockdown";
    if (s.contact === "open") return "open";
    return s.lock === "unlocked" ? "unlocked" : "locked";
  }

  function icons(s) {
    const holder = document.querySelector(".plan-icons[data-labels]");
    if (!holder) return;
    const labels = JSON.parse(holder.dataset.labels);
    const state = iconState(s);
    for (const a of document.querySelectorAll(".plan-icons .door-icon")) {
      if (a.dataset.door !== s.door) continue;
      a.setAttribute("class", "door-icon state-" + state);
      a.querySelector("text.state").textContent = labels[state];
      a.querySelector("title").textContent = a.querySelector("text.name").textContent + ": " + labels[state];
    }
  }

  const banner = document.getElementById("lockdown-banner");
  const down = new Map(Object.entries(banner ? JSON.parse(banner.dataset.down || "{}") : {}));
  const names = banner ? JSON.parse(banner.dataset.names || "{}") : {};
  let site = banner ? banner.dataset.site === "yes" : false;

  // "Mon 07 Dec 10:31:05 CET", as web/plans.py site_time writes it
  function siteTime(date) {
    const parts = new Intl.DateTimeFormat("en-GB", {
      timeZone: banner.dataset.timezone, weekday: "short", day: "2-digit", month: "short", hour: "2-digit",
      minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short" }).formatToParts(date);
    const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
    return `${p.weekday} ${p.day} ${p.month} ${p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
  }

  function showLockdown() {
    const doors = [...down.keys()];
    const all = Object.keys(names).length > 0 && Object.keys(names).every((d) => down.has(d));
    banner.hidden = !(site || doors.length);
    if (banner.hidden) return;
    const what = site || all ? "The whole site is locked down"
      : "Locked down: " + doors.map((d) => names[d] || d).sort().join(", ");
    const since = [...down.values()].map((t) => new Date(t)).sort((a, b) => a - b)[0];
    document.getElementById("lockdown-text").textContent = since ? `${what}, since ${siteTime(since)}` : what;
  }

  function lockdown(s) {
    if (!banner) return;
    if (s.lock === "lockdown") {
      if (!down.has(s.door)) down.set(s.door, s.ts);
    } else if (down.has(s.door) || site) {
      down.delete(s.door);
      site = false;  // a door out of lockdown: the site-wide one is lifted (or this door was let out of it)
    } else {
      return;
    }
    showLockdown();
  }

  document.addEventListener("bb:door", (msg) => { icons(msg.detail); lockdown(msg.detail); });
})();
