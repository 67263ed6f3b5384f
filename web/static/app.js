// fvescrow web UI: the few things a server-rendered page cannot do alone.
// Loaded from this origin only (the CSP allows no inline script).
"use strict";

// Copy buttons: data-copy names the element whose text to copy. Buttons
// start hidden so that without JavaScript none is shown that cannot work.
function setupCopy() {
  document.querySelectorAll("button[data-copy]").forEach(function (btn) {
    var target = document.getElementById(btn.dataset.copy);
    var status = btn.parentElement.querySelector(".status");
    if (!target || !navigator.clipboard) {
      return;
    }
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var groups = target.querySelectorAll("[data-group]");
      var text = groups.length
        ? Array.prototype.map.call(groups, function (g) { return g.textContent; }).join("-")
        : target.textContent.trim();
      navigator.clipboard.writeText(text).then(function () {
        if (status) { status.textContent = "Copied to the clipboard."; }
      }, function () {
        if (status) { status.textContent = "Copying failed; select the text and copy it by hand."; }
      });
    });
  });
}

// A revealed key hides itself after data-hide-after seconds; revealing it
// again needs a new request, with a new reason, and is audited again.
function setupKey() {
  var panel = document.getElementById("key-panel");
  if (!panel) {
    return;
  }
  var seconds = parseInt(panel.dataset.hideAfter, 10) || 60;
  var countdown = document.getElementById("countdown");
  var left = document.getElementById("seconds");
  var hideBtn = document.getElementById("hide");
  var done = false;
  function hide() {
    if (done) { return; }
    done = true;
    clearInterval(timer);
    var key = document.getElementById("key");
    if (key) { key.textContent = ""; key.remove(); }
    panel.remove();
    var msg = document.getElementById("key-hidden");
    msg.hidden = false;
    var lead = msg.querySelector(".lead");
    lead.tabIndex = -1;
    lead.focus();
  }
  countdown.hidden = false;
  hideBtn.hidden = false;
  hideBtn.addEventListener("click", hide);
  var deadline = Date.now() + seconds * 1000;
  var timer = setInterval(function () {
    var s = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    left.textContent = String(s);
    if (s === 0) { hide(); }
  }, 250);
  // A page restored from history must not show the key again.
  window.addEventListener("pagehide", hide);
}

document.addEventListener("DOMContentLoaded", function () {
  setupCopy();
  setupKey();
});
