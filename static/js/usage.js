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

  function formatDollars(value) {
    var places = Math.abs(value) < 1 && value !== 0 ? 4 : 2;
    return "$" + value.toLocaleString(undefined, {
      minimumFractionDigits: 2,
      maximumFractionDigits: places,
    });
  }

  function shortDay(iso) {
    var parts = iso.split("-");
    return parts[2] + "/" + parts[1];
  }

  function themed() {
    var styles = getComputedStyle(document.documentElement);
    var text = styles.getPropertyValue("--muted").trim() || "#5c6178";
    var grid = styles.getPropertyValue("--border").trim() || "#e2e4ee";
    window.Chart.defaults.color = text;
    window.Chart.defaults.borderColor = grid;
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  }

  function draw(data) {
    var Chart = window.Chart;
    var labels = data.days.map(shortDay);
    var common = { responsive: true, maintainAspectRatio: false, animation: false };
    var charts = {};

    charts.tokens = new Chart(document.getElementById("chart-tokens"), {
      type: "bar",
      data: {
        labels: labels,
        datasets: data.tokens_by_model.map(function (series, n) {
          return { label: series.model, data: series.tokens, backgroundColor: color(n), stack: "t" };
        }),
      },
      options: Object.assign({}, common, {
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
        plugins: { legend: { position: "bottom" } },
      }),
    });

    charts.cost = new Chart(document.getElementById("chart-cost"), {
      type: "line",
      data: {
        labels: labels,
        datasets: [{
          label: "Cost",
          data: data.cost_micros.map(dollars),
          borderColor: color(0),
          backgroundColor: color(0) + "33",
          fill: true,
          tension: 0,
        }],
      },
      options: Object.assign({}, common, {
        scales: { y: { beginAtZero: true, ticks: { callback: formatDollars } } },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: function (ctx) { return formatDollars(ctx.parsed.y); } } },
        },
      }),
    });

    var surfaces = Object.keys(data.requests_by_surface).sort();
    charts.surfaces = new Chart(document.getElementById("chart-surfaces"), {
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

    charts.errors = new Chart(document.getElementById("chart-errors"), {
      type: "bar",
      data: {
        labels: labels,
        datasets: [{ label: "Errors", data: data.errors, backgroundColor: "#ef4444" }],
      },
      options: Object.assign({}, common, {
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { display: false } },
      }),
    });
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
