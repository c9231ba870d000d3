// badge-bridge console: a wall display's one-time link (/wall/connect#TOKEN). The token is in the fragment,
// which the browser never sends; this posts it once (with the form's CSRF token) and drops it from the address
// bar and the history first, so a reload or the back button cannot show it again.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("wall-connect");
  const token = decodeURIComponent(window.location.hash.slice(1));
  if (!form || !token) return;
  history.replaceState(null, "", window.location.pathname);
  form.elements.token.value = token;
  form.submit();
});
