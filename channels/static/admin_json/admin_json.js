// The admin's JSON values, readable: a read-only value that parses as a JSON object or list is
// pretty-printed inside a collapsed <details> whose summary is its first characters (so is a long
// read-only text); a JSON textarea is re-indented so it reads as a document, not one long line.
(function () {
  "use strict";
  function parse(text) {
    var trimmed = text.trim();
    if (!/^[\[{]/.test(trimmed) || trimmed.length < 2) { return undefined; }
    try { return JSON.parse(trimmed); } catch (error) { return undefined; }
  }
  function collapse(element) {
    if (element.querySelector("details, input, select, textarea, a, img")) { return; }
    var text = element.textContent || "";
    var value = parse(text);
    var pretty, flat;
    if (value !== undefined) {
      pretty = JSON.stringify(value, null, 2);
      flat = JSON.stringify(value);
    } else {
      // Long plain text (a step's output, a message): collapsed the same way, as it is.
      pretty = text.trim();
      flat = pretty.replace(/\s+/g, " ");
      if (flat.length <= 160) { return; }
    }
    if (flat.length <= 80) { element.textContent = flat; return; }
    var details = document.createElement("details");
    details.className = "json-value";
    var summary = document.createElement("summary");
    summary.textContent = flat.slice(0, 80) + "…";
    var pre = document.createElement("pre");
    pre.textContent = pretty;
    details.appendChild(summary);
    details.appendChild(pre);
    element.textContent = "";
    element.appendChild(details);
  }
  function indent(textarea) {
    var value = parse(textarea.value || "");
    if (value === undefined) { return; }
    textarea.value = JSON.stringify(value, null, 2);
    textarea.rows = Math.min(Math.max(textarea.value.split("\n").length, 3), 20);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("div.readonly, .tabular td.field-output p, .tabular td p, td[class^='field-']").forEach(collapse);
    document.querySelectorAll("textarea").forEach(indent);
  });
})();
