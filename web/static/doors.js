// badge-bridge console: door states, live, on the doors board.
"use strict";

(function () {
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

  document.addEventListener("bb:door", (msg) => door(msg.detail));
})();
