// The model catalog: the same filters as gateway/pages/catalog.py, applied as you type. Without this file
// the form submits and the server filters; with it, nothing reloads and the URL keeps the state.
(function () {
  "use strict";

  // "0.50" -> 500000 micro-dollars, without floats (billing/money.py from_dollars); null if bad.
  function dollarsToMicros(text) {
    var match = /^\$?(\d*)(?:\.(\d{0,6}))?$/.exec(text.trim().replace(/,/g, ""));
    if (!match || (match[1] === "" && !match[2])) return null;
    return parseInt(match[1] || "0", 10) * 1000000 + parseInt((match[2] || "").padEnd(6, "0"), 10);
  }

  function readFilters(form) {
    var data = new FormData(form);
    var maxPrice = String(data.get("max_price") || "").trim();
    return {
      words: String(data.get("q") || "").toLowerCase().split(/\s+/).filter(Boolean),
      kind: String(data.get("kind") || ""),
      provider: String(data.get("provider") || ""),
      caps: data.getAll("cap").map(String),
      available: data.get("available") === "1",
      maxPriceMicros: maxPrice === "" ? null : dollarsToMicros(maxPrice),
      hasMaxPrice: maxPrice !== "",
      sort: String(data.get("sort") || "name"),
    };
  }

  function matches(item, f) {
    var hay = item.getAttribute("data-search") || "";
    for (var i = 0; i < f.words.length; i++) {
      if (hay.indexOf(f.words[i]) === -1) return false;
    }
    if (f.kind && item.getAttribute("data-kind") !== f.kind) return false;
    if (f.available && item.getAttribute("data-available") !== "1") return false;
    if (f.provider && item.getAttribute("data-provider") !== f.provider) return false;
    var caps = (item.getAttribute("data-caps") || "").split(" ");
    for (var j = 0; j < f.caps.length; j++) {
      if (caps.indexOf(f.caps[j]) === -1) return false;
    }
    if (f.maxPriceMicros !== null) {
      var price = item.getAttribute("data-input-price");
      if (!price || parseInt(price, 10) > f.maxPriceMicros) return false;
    }
    return true;
  }

  function compareBy(sort) {
    function byName(a, b) {
      var x = a.getAttribute("data-name");
      var y = b.getAttribute("data-name");
      if (x !== y) return x < y ? -1 : 1;
      x = a.getAttribute("data-model");
      y = b.getAttribute("data-model");
      return x < y ? -1 : x > y ? 1 : 0;
    }
    if (sort === "price") {
      return function (a, b) {
        var x = a.getAttribute("data-input-price");
        var y = b.getAttribute("data-input-price");
        if (!x !== !y) return x ? -1 : 1;
        if (x && y && x !== y) return parseInt(x, 10) - parseInt(y, 10);
        return byName(a, b);
      };
    }
    if (sort === "context") {
      return function (a, b) {
        var diff = parseInt(b.getAttribute("data-context"), 10) -
          parseInt(a.getAttribute("data-context"), 10);
        return diff || byName(a, b);
      };
    }
    return byName;
  }

  function setup(form) {
    var table = document.querySelector("[data-catalog-table]");
    var empty = document.querySelector("[data-catalog-empty]");
    var count = document.getElementById("catalog-count");
    var clear = form.querySelector("[data-clear]");
    var apply = form.querySelector("[data-apply]");
    var price = form.querySelector("#max_price");
    var help = document.getElementById("max-price-help");
    var helpText = help ? help.textContent : "";
    if (!table || !count) return;
    var items = Array.prototype.slice.call(table.querySelectorAll("tbody[data-model]"));
    var total = items.length;
    var lastSort = null;
    if (apply) apply.hidden = true;

    function run() {
      var f = readFilters(form);
      if (f.sort !== lastSort) {
        var body = items.length ? items[0].parentNode : null;
        items.slice().sort(compareBy(f.sort)).forEach(function (item) {
          body.appendChild(item);
        });
        lastSort = f.sort;
      }
      var shown = 0;
      items.forEach(function (item) {
        var ok = matches(item, f);
        item.hidden = !ok;
        if (ok) shown += 1;
      });
      table.hidden = shown === 0;
      if (empty) empty.hidden = shown !== 0;
      count.textContent =
        "Showing " + shown + " of " + total + " model" + (total === 1 ? "" : "s") + ".";

      var badPrice = f.hasMaxPrice && f.maxPriceMicros === null;
      if (price) {
        if (badPrice) price.setAttribute("aria-invalid", "true");
        else price.removeAttribute("aria-invalid");
        price.closest(".field").classList.toggle("has-error", badPrice);
      }
      if (help) help.textContent = badPrice ? "Enter a price in dollars, like 0.50." : helpText;

      var filtering = f.words.length || f.kind || f.provider || f.caps.length || f.hasMaxPrice;
      if (clear) clear.hidden = !filtering;

      var params = new URLSearchParams();
      new FormData(form).forEach(function (value, key) {
        if (value !== "" && !(key === "sort" && value === "name")) params.append(key, value);
      });
      var query = params.toString();
      var url = window.location.pathname + (query ? "?" + query : "");
      if (url !== window.location.pathname + window.location.search) {
        window.history.replaceState(null, "", url);
      }
    }

    form.addEventListener("input", run);
    form.addEventListener("change", run);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      run();
    });
    if (clear) {
      clear.addEventListener("click", function (event) {
        event.preventDefault();
        form.reset();
        form.querySelectorAll("input[type=search], input[type=number]").forEach(function (el) {
          el.value = "";
        });
        form.querySelectorAll("input[type=checkbox]").forEach(function (el) {
          el.checked = false;
        });
        form.querySelectorAll("select").forEach(function (el) {
          el.selectedIndex = 0;
        });
        run();
        form.querySelector("#q").focus();
      });
    }
    run();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-catalog-filters]").forEach(setup);
  });
})();
