// badge-bridge console: the one server-sent-events connection of a page, shared by the page's scripts.
// Each server event NAME is re-dispatched on `document` as a CustomEvent "bb:NAME" whose detail is the parsed
// JSON, so feed.js, alarms.js, doors.js ... listen without opening streams of their own.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const url = document.body.dataset.stream;
  if (!url) return;
  const state = document.getElementById("live-state");
  const source = new EventSource(url);
  source.onopen = () => {
    if (state) { state.textContent = "live"; state.className = "live-state on"; }
    document.dispatchEvent(new CustomEvent("bb:open"));
  };
  source.onerror = () => { if (state) { state.textContent = "reconnecting…"; state.className = "live-state off"; } };
  for (const name of ["events", "door", "bridge", "alarms", "lockdown"]) {
    source.addEventListener(name, (msg) => document.dispatchEvent(new CustomEvent("bb:" + name, { detail: JSON.parse(msg.data) })));
  }
  // the session ended (logout elsewhere, password changed, user disabled): reload, and the login page says why
  source.addEventListener("session", () => { source.close(); window.location.reload(); });
});
