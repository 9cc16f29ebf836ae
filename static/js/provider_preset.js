// The provider form in the admin: picking a preset fills the fields it sets (the server does the
// same on save for fields left at their defaults, so this file is a convenience, not a need).
// The presets come from the select's data-presets attribute (gateway/admin.py); CSP allows no
// inline script.
(function () {
  "use strict";

  function field(name) {
    return document.getElementById("id_" + name);
  }

  function setValue(name, value) {
    var input = field(name);
    if (!input) return;
    if (input.type === "checkbox") {
      input.checked = Boolean(value);
    } else if (typeof value === "object" && value !== null) {
      input.value = JSON.stringify(value);
    } else {
      input.value = value === null || value === undefined ? "" : String(value);
    }
  }

  function baseUrl(template) {
    return template.replace(/\{(\w+)\}/g, function (whole, name) {
      var input = field(name);
      var given = input ? input.value.trim() : "";
      return given || whole;
    });
  }

  function init() {
    var select = field("preset");
    if (!select || !select.dataset.presets) return;
    var presets = JSON.parse(select.dataset.presets);
    var template = "";

    function fill() {
      var preset = presets[select.value];
      if (!preset) return;
      template = preset.base_url;
      Object.keys(preset).forEach(function (name) {
        if (name === "needs" || name === "preset" || name === "base_url") return;
        if (name === "api_key_env" && field(name) && field(name).value) return;
        setValue(name, preset[name]);
      });
      setValue("base_url", baseUrl(template));
    }

    select.addEventListener("change", fill);
    ["resource", "region"].forEach(function (name) {
      var input = field(name);
      if (!input) return;
      input.addEventListener("input", function () {
        if (template && template.indexOf("{" + name + "}") >= 0) setValue("base_url", baseUrl(template));
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
