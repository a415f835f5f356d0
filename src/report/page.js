// guardian's status page refreshes itself every five seconds, unless someone is typing in it,
// has text selected, or the tab is hidden. The page works the same without this script.
(function () {
  "use strict";
  var EVERY_MS = 5000;
  function busy() {
    var a = document.activeElement;
    if (a && (a.tagName === "INPUT" || a.tagName === "TEXTAREA")) {
      return true;
    }
    // A pointer over a form: a refresh could move what is about to be clicked.
    if (document.querySelector("form:hover")) {
      return true;
    }
    var s = window.getSelection && window.getSelection();
    return !!(s && String(s).length > 0) || document.hidden;
  }
  // Said at the top while guardian does not answer: the page would otherwise go on showing
  // what it last knew as if it were now.
  function offline(since, why) {
    var bar = document.getElementById("offline");
    if (!since) {
      if (bar) { bar.remove(); }
      return;
    }
    if (!bar) {
      bar = document.createElement("p");
      bar.id = "offline";
      bar.setAttribute("role", "alert");
      document.body.prepend(bar);
    }
    bar.textContent = "guardian has not answered" + (why ? " (" + why + ")" : "") +
      " since " + since.toLocaleTimeString() + ": what follows is what it last said.";
  }
  var failingSince = null;
  function refresh() {
    if (busy()) { return; }
    fetch("/", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("it said " + r.status); }
        return r.text();
      })
      .then(function (html) {
        failingSince = null;
        offline(null);
        if (busy()) { return; }
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var here = document.getElementById("live");
        // Signed out meanwhile (no #live in the answer): reload to show the sign-in page.
        if (!next) { window.location.reload(); return; }
        // What the reader opened, closed or scrolled sideways stays as it was.
        var open = {};
        here.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
        var scrolled = Array.prototype.map.call(
          here.querySelectorAll(".scroll"), function (e) { return e.scrollLeft; });
        here.replaceWith(next);
        next.querySelectorAll("details[id]").forEach(function (d) {
          if (d.id in open) { d.open = open[d.id]; }
        });
        next.querySelectorAll(".scroll").forEach(function (e, i) {
          if (i < scrolled.length) { e.scrollLeft = scrolled[i]; }
        });
      })
      .catch(function (e) {
        // Stopped, restarting or refusing: said at the top, tried again next time.
        failingSince = failingSince || new Date();
        offline(failingSince, e && e.message && e.message.indexOf("it said") === 0 ? e.message : "");
      });
  }
  window.setInterval(refresh, EVERY_MS);
}());
