/* Live refresh of the staff dashboard, without a full reload.
 *
 * Every data-interval-ms (ENRICHMENT_POLL_INTERVAL_MS) it fetches data-live-url, the dashboard's
 * live sections rendered by the server (templates/admin/dashboard_live.html), and replaces each
 * [data-live] section whose content changed. The server renders every number, so the page never
 * formats one differently from a reload. Paused while the tab is hidden; if the session ends,
 * it stops and says so instead of showing a login form inside the page. */
(function () {
  "use strict";

  var root = document.getElementById("mc-dashboard");
  if (!root || !window.fetch || !window.DOMParser) {
    return;
  }
  var url = root.getAttribute("data-live-url");
  var interval = Math.max(1000, parseInt(root.getAttribute("data-interval-ms"), 10) || 5000);
  var status = document.getElementById("mc-refresh");
  var statusText = document.getElementById("mc-refresh-text");
  var busy = false;
  var stopped = false;
  var timer = null;

  function say(text, stale) {
    if (statusText) {
      statusText.textContent = text;
    }
    if (status) {
      status.classList.toggle("mc-stale", Boolean(stale));
    }
  }

  function clock() {
    var now = new Date();
    function two(n) {
      return (n < 10 ? "0" : "") + n;
    }
    return two(now.getUTCHours()) + ":" + two(now.getUTCMinutes()) + ":" + two(now.getUTCSeconds());
  }

  // A fresh CSRF token is rendered each time; give the fresh copy the page's token, so a
  // section is replaced only when something real changed (and a form is never swapped mid-click).
  function sameTokens(fresh) {
    var current = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (!current) {
      return;
    }
    var inputs = fresh.querySelectorAll("input[name=csrfmiddlewaretoken]");
    for (var i = 0; i < inputs.length; i++) {
      inputs[i].setAttribute("value", current.value);
    }
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    sameTokens(doc);
    var sections = doc.querySelectorAll("[data-live][id]");
    var changed = 0;
    for (var i = 0; i < sections.length; i++) {
      var fresh = sections[i];
      var current = document.getElementById(fresh.id);
      if (current && current.outerHTML !== fresh.outerHTML) {
        current.replaceWith(document.importNode(fresh, true));
        changed++;
      }
    }
    return changed;
  }

  function refresh() {
    if (busy || stopped || document.hidden) {
      return;
    }
    busy = true;
    fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    })
      .then(function (response) {
        // Logged out (or no longer staff): the admin redirects to its login page.
        if (response.redirected || response.status === 401 || response.status === 403) {
          stopped = true;
          say("Your session ended: reload the page to log in again.", true);
          return null;
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        swap(html);
        say("Updated " + clock() + " UTC · refreshes every " + interval + " ms", false);
        root.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {
        say("Cannot reach the server (last try " + clock() + " UTC); retrying…", true);
      })
      .then(function () {
        busy = false;
      });
  }

  timer = window.setInterval(refresh, interval);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
  window.addEventListener("pagehide", function () {
    window.clearInterval(timer);
  });
})();
