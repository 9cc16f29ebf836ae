// Live meter: a websocket to /ws/meter/ that receives the account's window, balance and requests
// this minute each time metering writes records. Reconnects with backoff; the page still shows
// the values it was rendered with when there is no socket.
(function () {
  "use strict";

  var NOT_SIGNED_IN = 4401;

  function number(value) {
    return value === null || value === undefined ? "No cap" : Number(value).toLocaleString("en-US");
  }

  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  // The site's one date format, in UTC: "12 Mar 2025, 14:05 UTC".
  function when(iso) {
    var d = new Date(iso);
    var pad = function (n) { return String(n).padStart(2, "0"); };
    return d.getUTCDate() + " " + MONTHS[d.getUTCMonth()] + " " + d.getUTCFullYear() + ", " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + " UTC";
  }

  // Two places, as every balance on the site ("$1,234.56"; "<$0.01" below a cent).
  function usd(micros) {
    var cents = Math.round(Math.abs(micros) / 10000);
    var sign = micros < 0 ? "-" : "";
    if (cents === 0 && micros !== 0) return "<" + sign + "$0.01";
    return sign + "$" + (cents / 100).toLocaleString("en-US", {
      minimumFractionDigits: 2, maximumFractionDigits: 2,
    });
  }

  function render(root, state) {
    var fields = {
      window_remaining_tokens: number(state.window_remaining_tokens),
      window_resets_at: state.window_resets_at
        ? "Resets " + when(state.window_resets_at)
        : "\u00a0",
      balance: usd(state.balance_micros),
      requests_this_minute: Number(state.requests_this_minute).toLocaleString("en-US"),
    };
    Object.keys(fields).forEach(function (name) {
      var el = root.querySelector('[data-meter-field="' + name + '"]');
      if (el) el.textContent = fields[name];
    });
    var status = root.querySelector("[data-meter-status]");
    if (status) status.textContent = "Live · updated " + when(new Date().toISOString());
    root.dataset.updates = String(Number(root.dataset.updates || "0") + 1);
  }

  function connect(root, delay) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    socket.onopen = function () {
      delay = 1000;
    };
    socket.onmessage = function (event) {
      try {
        render(root, JSON.parse(event.data));
      } catch (err) {
        // A malformed frame is skipped; the next one repairs the display.
      }
    };
    socket.onclose = function (event) {
      var status = root.querySelector("[data-meter-status]");
      if (event.code === NOT_SIGNED_IN) {
        if (status) status.textContent = "Sign in again to see live figures";
        return;
      }
      if (status) status.textContent = "Reconnecting…";
      setTimeout(function () { connect(root, Math.min(delay * 2, 30000)); }, delay);
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.querySelector("[data-meter]");
    if (root && "WebSocket" in window) connect(root, 1000);
  });
})();
