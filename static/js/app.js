// Token Factory: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain http (a self-hosted box on a LAN): fall back to a hidden textarea.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      try {
        document.execCommand("copy") ? resolve() : reject(new Error("copy failed"));
      } catch (err) {
        reject(err);
      } finally {
        document.body.removeChild(area);
      }
    });
  }

  // <button data-copy="#element-id"> or <button data-copy-text="literal">
  function setupCopyButtons() {
    document.querySelectorAll("[data-copy], [data-copy-text]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var text = button.getAttribute("data-copy-text");
        if (text === null) {
          var target = document.querySelector(button.getAttribute("data-copy"));
          text = target ? target.textContent.trim() : "";
        }
        var label = button.textContent;
        copyText(text).then(
          function () {
            button.textContent = "Copied";
            button.setAttribute("data-copied", "true");
            announce("Copied to the clipboard");
          },
          function () {
            button.textContent = "Press Ctrl+C";
          }
        ).then(function () {
          window.setTimeout(function () {
            button.textContent = label;
            button.removeAttribute("data-copied");
          }, 1800);
        });
      });
    });
  }

  var live;
  function announce(message) {
    if (!live) {
      live = document.createElement("div");
      live.setAttribute("role", "status");
      live.setAttribute("aria-live", "polite");
      live.className = "visually-hidden";
      document.body.appendChild(live);
    }
    live.textContent = "";
    window.setTimeout(function () {
      live.textContent = message;
    }, 30);
  }

  // <form data-confirm="Question?" data-confirm-field="confirm">: ask first; when the person
  // agrees, add the field the server wants (without JavaScript the server asks on its own page).
  function setupConfirms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
          return;
        }
        var field = form.getAttribute("data-confirm-field");
        if (field && !form.querySelector('input[name="' + field + '"]')) {
          var input = document.createElement("input");
          input.type = "hidden";
          input.name = field;
          input.value = "yes";
          form.appendChild(input);
        }
      });
    });
  }

  // Tabs: <div data-tabs> with <button role="tab" aria-controls="panel-id"> and panels.
  function setupTabs() {
    document.querySelectorAll("[data-tabs]").forEach(function (root) {
      var tabs = Array.prototype.slice.call(root.querySelectorAll('[role="tab"]'));
      function select(tab) {
        tabs.forEach(function (other) {
          var selected = other === tab;
          other.setAttribute("aria-selected", selected ? "true" : "false");
          other.tabIndex = selected ? 0 : -1;
          var panel = document.getElementById(other.getAttribute("aria-controls"));
          if (panel) panel.hidden = !selected;
        });
      }
      root.hidden = false;
      tabs.forEach(function (tab, index) {
        tab.addEventListener("click", function () {
          select(tab);
        });
        tab.addEventListener("keydown", function (event) {
          var step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
          if (!step) return;
          var next = tabs[(index + step + tabs.length) % tabs.length];
          next.focus();
          select(next);
        });
      });
      if (tabs.length) select(tabs[0]);
    });
  }

  // A text box that narrows a list: <input data-filter="#list"> over [data-filter-item] rows.
  function setupFilters() {
    document.querySelectorAll("input[data-filter]").forEach(function (input) {
      var list = document.querySelector(input.getAttribute("data-filter"));
      if (!list) return;
      input.hidden = false;
      input.addEventListener("input", function () {
        var needle = input.value.trim().toLowerCase();
        list.querySelectorAll("[data-filter-item]").forEach(function (item) {
          var hay = item.getAttribute("data-filter-item").toLowerCase();
          item.hidden = needle !== "" && hay.indexOf(needle) === -1;
        });
      });
    });
  }

  // Filter forms apply as soon as a choice changes; the submit button stays for no-JS.
  function setupAutoSubmit() {
    document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
      form.addEventListener("change", function (event) {
        if (event.target && event.target.type !== "search") form.submit();
      });
    });
  }

  // The signed-in shell on narrow screens: the Menu button opens and closes the sidebar.
  function setupMenu() {
    var button = document.querySelector("[data-menu]");
    var sidebar = document.querySelector("[data-sidebar]");
    if (!button || !sidebar) return;
    button.hidden = false;
    function set(open) {
      sidebar.classList.toggle("is-open", open);
      button.setAttribute("aria-expanded", open ? "true" : "false");
      button.textContent = open ? "Close" : "Menu";
    }
    button.addEventListener("click", function () {
      set(!sidebar.classList.contains("is-open"));
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && sidebar.classList.contains("is-open")) {
        set(false);
        button.focus();
      }
    });
  }

  // A form that came back with errors: focus its summary, so the person hears every error and
  // Tab goes on to the fields.
  function focusErrorSummary() {
    var summary = document.querySelector("[data-error-summary]");
    if (summary) summary.focus();
  }

  // <table data-local-times>: its <time datetime> cells in the reader's own time zone (the
  // server writes UTC, which stays in the title and is what shows without JavaScript).
  function setupLocalTimes() {
    document.querySelectorAll("[data-local-times] time[datetime]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment.getTime())) return;
      el.textContent = moment.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
    });
    document.querySelectorAll("[data-local-zone]").forEach(function (el) {
      el.textContent = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    focusErrorSummary();
    setupLocalTimes();
    setupMenu();
    setupCopyButtons();
    setupConfirms();
    setupTabs();
    setupFilters();
    setupAutoSubmit();
  });
})();
