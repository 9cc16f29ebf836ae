// Usage page: the four charts, drawn with the vendored Chart.js from the JSON the page embeds.
(function () {
  "use strict";

  var PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#14b8a6",
    "#ec4899", "#84cc16", "#f97316"];

  function color(n) {
    return PALETTE[n % PALETTE.length];
  }

  function dollars(micros) {
    return micros / 1e6;
  }

  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  // The site's one date format, in UTC: "12 Mar 2025, 14:05" (the hour charts), "12 Mar" (days).
  function slotLabel(iso, hourly) {
    var d = new Date(iso);
    var day = d.getUTCDate() + " " + MONTHS[d.getUTCMonth()];
    if (!hourly) return day;
    return day + ", " + String(d.getUTCHours()).padStart(2, "0") + ":00";
  }

  // Decimal places for a money axis whose largest value is `top` dollars: enough that the ticks
  // (about five of them) differ, so sub-cent costs never read "$0.00" on every line.
  function moneyPlaces(top) {
    if (!(top > 0)) return 2;
    var step = top / 5;
    var places = Math.ceil(-Math.log10(step));
    return Math.min(6, Math.max(2, places));
  }

  function moneyFormatter(places) {
    return function (value) {
      return "$" + Number(value).toLocaleString("en-US", {
        minimumFractionDigits: places,
        maximumFractionDigits: places,
      });
    };
  }

  function themed() {
    var styles = getComputedStyle(document.documentElement);
    var text = styles.getPropertyValue("--muted").trim() || "#5c6178";
    var grid = styles.getPropertyValue("--border").trim() || "#e2e4ee";
    window.Chart.defaults.color = text;
    window.Chart.defaults.borderColor = grid;
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  }

  function canvas(id) {
    return document.getElementById(id);
  }

  function draw(data) {
    var Chart = window.Chart;
    var labels = data.slots.map(function (iso) { return slotLabel(iso, data.hourly); });
    var common = { responsive: true, maintainAspectRatio: false, animation: false };
    var xAxis = { ticks: { autoSkip: true, maxRotation: 0, autoSkipPadding: 12 } };
    var charts = {};

    if (canvas("chart-tokens")) {
      charts.tokens = new Chart(canvas("chart-tokens"), {
        type: "bar",
        data: {
          labels: labels,
          datasets: data.tokens_by_model.map(function (series, n) {
            var other = !!series.other;
            return {
              label: series.model,
              data: series.tokens,
              backgroundColor: other ? "#9ca3af" : color(n),
              stack: "t",
            };
          }),
        },
        options: Object.assign({}, common, {
          scales: {
            x: Object.assign({ stacked: true }, xAxis),
            y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
          },
          plugins: {
            legend: { position: "bottom", labels: { boxWidth: 10, boxHeight: 10 } },
          },
        }),
      });
    }

    if (canvas("chart-cost")) {
      var costs = data.cost_micros.map(dollars);
      var money = moneyFormatter(moneyPlaces(Math.max.apply(null, costs.concat([0]))));
      var exact = moneyFormatter(6);
      charts.cost = new Chart(canvas("chart-cost"), {
        type: data.hourly ? "bar" : "line",
        data: {
          labels: labels,
          datasets: [{
            label: "Cost",
            data: costs,
            borderColor: color(0),
            backgroundColor: data.hourly ? color(0) : color(0) + "33",
            fill: true,
            tension: 0,
          }],
        },
        options: Object.assign({}, common, {
          scales: { x: xAxis, y: { beginAtZero: true, ticks: { callback: money } } },
          plugins: {
            legend: { display: false },
            tooltip: { callbacks: { label: function (ctx) { return exact(ctx.parsed.y); } } },
          },
        }),
      });
      charts.cost.moneyPlaces = moneyPlaces(Math.max.apply(null, costs.concat([0])));
    }

    if (canvas("chart-surfaces")) {
      var surfaces = Object.keys(data.requests_by_surface).sort();
      charts.surfaces = new Chart(canvas("chart-surfaces"), {
        type: "doughnut",
        data: {
          labels: surfaces.map(function (s) { return s === "openai" ? "OpenAI" : s === "anthropic" ? "Anthropic" : s; }),
          datasets: [{
            data: surfaces.map(function (s) { return data.requests_by_surface[s]; }),
            backgroundColor: surfaces.map(function (_, n) { return color(n + 1); }),
          }],
        },
        options: Object.assign({}, common, { plugins: { legend: { position: "bottom" } } }),
      });
    }

    if (canvas("chart-errors")) {
      charts.errors = new Chart(canvas("chart-errors"), {
        type: "bar",
        data: {
          labels: labels,
          datasets: [{ label: "Errors", data: data.errors, backgroundColor: "#ef4444" }],
        },
        options: Object.assign({}, common, {
          scales: { x: xAxis, y: { beginAtZero: true, ticks: { precision: 0 } } },
          plugins: { legend: { display: false } },
        }),
      });
    }
    return charts;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var source = document.getElementById("usage-data");
    if (!source || !window.Chart) return;
    themed();
    // Exposed for tests and the console: window.tfUsageCharts.tokens.data ...
    window.tfUsageCharts = draw(JSON.parse(source.textContent));
  });
})();
