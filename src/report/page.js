// guardian's status page refreshes itself every five seconds, unless someone is typing in it,
// has text selected, or the tab is hidden. The page works the same without this script.
(function () {
  "use strict";
  var EVERY_MS = 5000;
  function busy() {
    var a = document.activeElement;
    if (a && (a.tagName === "INPUT" || a.tagName === "TEXTAREA" || a.tagName === "BUTTON")) {
      return true;
    }
    // A pointer over a form: a refresh could move what is about to be clicked.
    if (document.querySelector("form:hover")) {
      return true;
    }
    var s = window.getSelection && window.getSelection();
    return !!(s && String(s).length > 0) || document.hidden;
  }
  function refresh() {
    if (busy()) { return; }
    fetch("/", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html || busy()) { return; }
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var here = document.getElementById("live");
        // Signed out meanwhile (no #live in the answer): reload to show the sign-in page.
        if (!next) { window.location.reload(); return; }
        var open = {};
        here.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
        here.replaceWith(next);
        next.querySelectorAll("details[id]").forEach(function (d) {
          if (d.id in open) { d.open = open[d.id]; }
        });
      })
      .catch(function () { /* the daemon is restarting: try again next time */ });
  }
  window.setInterval(refresh, EVERY_MS);
}());
