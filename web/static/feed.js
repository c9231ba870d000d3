// badge-bridge console: the live feed. Each event arrives presented by the server (`shown`: names, site local
// time, a sentence; web/present.py) and becomes a row like _event_row.html's, built with textContent only, so
// nothing from an event or a name is ever parsed as HTML. A row opens its event's page on a click.
"use strict";

(function () {
  const table = document.getElementById("feed");
  const filters = document.getElementById("filters");

  // every event table (the feed, the event log): a click on a row, not on a link in it, opens the event
  for (const body of document.querySelectorAll("table.events tbody")) {
    body.addEventListener("click", (click) => {
      const tr = click.target.closest("tr[data-href]");
      if (tr && !click.target.closest("a") && !window.getSelection().toString()) window.location.assign(tr.dataset.href);
    });
  }
  if (!table) return;
  const feed = table.tBodies[0];

  function wanted(kind, door, machine) {
    if (!filters) return !machine;  // the wall: door events only
    const f = new FormData(filters);
    const wantDoor = f.get("door"), wantKind = f.get("kind"), area = filters.querySelector("select[name=area]");
    if (wantDoor && door !== wantDoor) return false;
    if (area && area.value) {
      const doors = area.selectedOptions[0].dataset.doors.split(" ");
      if (!doors.includes(door)) return false;
    }
    if (wantKind) return wantKind.endsWith(".") ? kind.startsWith(wantKind) : kind === wantKind;
    return !machine || f.get("all") === "1";
  }

  function cell(cls, text, note) {
    const td = document.createElement("td");
    td.className = cls;
    if (text instanceof Node) td.appendChild(text); else td.textContent = text;
    if (note) {
      const small = document.createElement("small");
      small.textContent = note;
      td.appendChild(small);
    }
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function row(e, v) {
    const tr = document.createElement("tr");
    tr.className = "event new kind-" + e.kind.split(".")[0] + (v.alarm ? " alarm" : "");
    tr.dataset.kind = e.kind;
    tr.dataset.door = e.door || "";
    tr.dataset.machine = v.door_event ? "0" : "1";
    const links = Boolean(table.dataset.find);  // none on the wall: it may open nothing
    if (links) tr.dataset.href = table.dataset.find + "?event=" + encodeURIComponent(e.id);
    const time = document.createElement("time");
    time.dateTime = v.utc;
    time.textContent = v.time;
    tr.appendChild(cell("time", time));
    tr.appendChild(cell("label", links ? link(tr.dataset.href, v.label) : v.label));
    tr.appendChild(cell("where", v.where, v.areas));
    const who = v.who;
    const name = !who ? "" : links && Number.isInteger(who.person) ? link(table.dataset.person + who.person, who.name) : who.name;
    tr.appendChild(cell("person", name, who ? who.note : ""));
    tr.appendChild(cell("text", v.text));
    return tr;
  }

  document.addEventListener("bb:events", (msg) => {
    for (const e of msg.detail.events) {
      const v = e.shown;
      if (!v || !wanted(e.kind, e.door || "", !v.door_event)) continue;
      const empty = feed.querySelector("tr.empty");
      if (empty) empty.remove();
      feed.insertBefore(row(e, v), feed.firstChild);
      while (feed.rows.length > 500) feed.deleteRow(-1);
    }
  });
  if (filters) filters.addEventListener("change", (change) => {
    // the rows of motion and the rest were never loaded: fetch the page again with or without them
    if (change.target.name === "all") { filters.requestSubmit(); return; }
    for (const tr of feed.rows) {
      if (tr.dataset.kind) tr.hidden = !wanted(tr.dataset.kind, tr.dataset.door || "", tr.dataset.machine === "1");
    }
  });
})();
