/* The transposed-convolution explorer: a page's <div class="ct-explorer"></div> becomes a
   small calculator for torch's conv_transpose1d. Choose the input length, kernel size,
   stride, padding, dilation and output_padding; it shows the output length with its
   formula, which output positions each input touches, and how many taps land on each
   output. Plain JavaScript, no kernel and no network: it works on the static site. */
(function () {
  "use strict";

  // Defaults draw the lecture's picture: stride 2, padding 1, output_padding 1.
  const PARAMETERS = [
    { name: "L", label: "input length L", min: 1, max: 24, value: 4 },
    { name: "k", label: "kernel size k", min: 1, max: 9, value: 3 },
    { name: "s", label: "stride s", min: 1, max: 6, value: 2 },
    { name: "p", label: "padding p", min: 0, max: 8, value: 1 },
    { name: "d", label: "dilation d", min: 1, max: 4, value: 1 },
    { name: "op", label: "output_padding op", min: 0, max: 5, value: 1 },
  ];
  const STYLESHEET = "explorer.css";
  // The script's own address, read while it runs: the stylesheet sits beside it.
  const SCRIPT_URL = document.currentScript ? document.currentScript.src : null;

  /** torch's output length: (L - 1)s - 2p + d(k - 1) + op + 1. */
  function outputLength(v) {
    return (v.L - 1) * v.s - 2 * v.p + v.d * (v.k - 1) + v.op + 1;
  }

  /** Why torch (or this explorer) refuses the settings, or null when it accepts them. */
  function refusal(v) {
    for (const parameter of PARAMETERS) {
      const value = v[parameter.name];
      if (!Number.isInteger(value) || value < parameter.min) {
        return `${parameter.label} must be a whole number, at least ${parameter.min}.`;
      }
      if (value > parameter.max) {
        return `This explorer draws ${parameter.label} up to ${parameter.max}.`;
      }
    }
    if (v.op >= Math.max(v.s, v.d)) {
      return (
        "torch refuses: output padding must be smaller than either stride or dilation " +
        `(output_padding = ${v.op}, stride = ${v.s}, dilation = ${v.d}).`
      );
    }
    const length = outputLength(v);
    if (length <= 0) {
      return `torch refuses: the calculated output length is ${length}, too small (at least 1).`;
    }
    return null;
  }

  /** Where input i's tap j lands: full position i*s + j*d, output position minus p. */
  function stamps(v) {
    const rows = [];
    for (let i = 0; i < v.L; i++) {
      const row = [];
      for (let j = 0; j < v.k; j++) row.push({ tap: j, full: i * v.s + j * v.d });
      rows.push(row);
    }
    return rows;
  }

  /** Taps landing on each output position 0..L_out-1 (the transposed conv of ones by ones). */
  function coverage(v) {
    const counts = new Array(outputLength(v)).fill(0);
    for (const row of stamps(v)) {
      for (const stamp of row) {
        const position = stamp.full - v.p;
        if (position >= 0 && position < counts.length) counts[position] += 1;
      }
    }
    return counts;
  }

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function buildControls(root, onChange) {
    const form = element("form", { class: "ct-explorer-controls" });
    form.addEventListener("submit", (event) => event.preventDefault());
    for (const parameter of PARAMETERS) {
      const label = element("label", {}, parameter.label + " ");
      const input = element("input", {
        type: "number",
        inputmode: "numeric",
        step: "1",
        min: String(parameter.min),
        max: String(parameter.max),
        value: String(parameter.value),
        "data-param": parameter.name,
      });
      input.addEventListener("input", onChange);
      label.appendChild(input);
      form.appendChild(label);
    }
    root.appendChild(form);
    return form;
  }

  function readSettings(form) {
    const settings = {};
    for (const input of form.querySelectorAll("input[data-param]")) {
      // An empty or half-typed box is not a number: the refusal says what is expected.
      settings[input.dataset.param] = input.value.trim() === "" ? NaN : Number(input.value);
    }
    return settings;
  }

  function formulaText(v, length) {
    return (
      `= (${v.L} − 1)·${v.s} − 2·${v.p} + ${v.d}·(${v.k} − 1) + ${v.op} + 1 = ${length}`
    );
  }

  function renderLength(parts, v, refused) {
    parts.refusal.hidden = !refused;
    parts.refusal.textContent = refused || "";
    if (refused) {
      parts.length.textContent = "none";
      parts.length.dataset.length = "";
      parts.substituted.textContent = "";
      return;
    }
    const length = outputLength(v);
    parts.length.textContent = String(length);
    parts.length.dataset.length = String(length);
    parts.substituted.textContent = formulaText(v, length);
  }

  function headerRow(v, fullLength) {
    const row = element("tr");
    row.appendChild(element("th", { scope: "col" }, "input ↓ · output →"));
    for (let full = 0; full < fullLength; full++) {
      const position = full - v.p;
      const cropped = position < 0 || position >= outputLength(v);
      const cell = element("th", { scope: "col" }, cropped ? "cut" : String(position));
      if (cropped) {
        cell.className = "ct-explorer-cropped";
        cell.title = "cropped by the padding";
      }
      row.appendChild(cell);
    }
    return row;
  }

  function stampRow(v, i, row, fullLength) {
    const length = outputLength(v);
    const touched = row.map((s) => s.full - v.p).filter((o) => o >= 0 && o < length);
    const tr = element("tr", { "data-input": String(i) });
    const label = `x[${i}] → ${touched.length ? touched.join(", ") : "nothing"}`;
    tr.appendChild(element("th", { scope: "row", "data-touches": touched.join(",") }, label));
    const byColumn = new Map(row.map((s) => [s.full, s]));
    for (let full = 0; full < fullLength; full++) {
      const stamp = byColumn.get(full);
      const cell = element("td", {}, stamp ? `w${stamp.tap}` : "");
      const position = full - v.p;
      if (position < 0 || position >= length) cell.className = "ct-explorer-cropped";
      if (stamp) cell.title = `x[${i}]·w[${stamp.tap}] lands on output ${position}`;
      tr.appendChild(cell);
    }
    return tr;
  }

  function coverageRow(v, fullLength) {
    const counts = coverage(v);
    const tr = element("tr", { class: "ct-explorer-coverage" });
    tr.appendChild(element("th", { scope: "row" }, "taps per output"));
    for (let full = 0; full < fullLength; full++) {
      const position = full - v.p;
      const inside = position >= 0 && position < counts.length;
      const cell = element("td", inside ? { "data-output": String(position) } : {});
      cell.textContent = inside ? String(counts[position]) : "";
      if (!inside) cell.className = "ct-explorer-cropped";
      tr.appendChild(cell);
    }
    return tr;
  }

  function renderMap(parts, v, refused) {
    parts.map.replaceChildren();
    parts.mapBox.hidden = Boolean(refused);
    parts.legend.hidden = Boolean(refused);
    if (refused) return;
    // Every stamp's column, and output_padding's columns past the last stamp (if any).
    const stampedLength = (v.L - 1) * v.s + v.d * (v.k - 1) + 1;
    const fullLength = Math.max(stampedLength, v.p + outputLength(v));
    parts.legend.textContent =
      `Each row is one input's stamp of the kernel (taps w0 … w${v.k - 1}); columns are ` +
      "output positions; 'cut' columns are cropped by the padding.";
    const head = element("thead");
    head.appendChild(headerRow(v, fullLength));
    const body = element("tbody");
    stamps(v).forEach((row, i) => body.appendChild(stampRow(v, i, row, fullLength)));
    body.appendChild(coverageRow(v, fullLength));
    parts.map.append(head, body);
  }

  function buildResults(root) {
    const results = element("div", { class: "ct-explorer-results", "aria-live": "polite" });
    const formula = element("p", { class: "ct-explorer-formula" });
    formula.append("output length L_out = (L − 1)·s − 2p + d·(k − 1) + op + 1 ");
    const substituted = element("span", { class: "ct-explorer-substituted" });
    formula.appendChild(substituted);
    const lengthLine = element("p", {}, "L_out = ");
    const length = element("output", { class: "ct-explorer-length" });
    lengthLine.appendChild(length);
    const refusalBox = element("p", { class: "ct-explorer-refusal", role: "alert" });
    const mapBox = element("div", { class: "ct-explorer-map-box" });
    const map = element("table", {
      class: "ct-explorer-map",
      "aria-label": "where each input's kernel stamp lands on the output",
    });
    mapBox.appendChild(map);
    const legend = element("p", { class: "ct-explorer-legend" });
    results.append(formula, lengthLine, refusalBox, mapBox, legend);
    root.appendChild(results);
    return { substituted, length, refusal: refusalBox, mapBox, map, legend };
  }

  function mount(root) {
    root.dataset.ready = "true";
    root.replaceChildren(element("p", { class: "ct-explorer-title" }, "conv_transpose1d explorer"));
    const form = buildControls(root, update);
    const parts = buildResults(root);
    function update() {
      const settings = readSettings(form);
      const refused = refusal(settings);
      renderLength(parts, settings, refused);
      renderMap(parts, settings, refused);
    }
    update();
  }

  function addStylesheet() {
    if (!SCRIPT_URL || document.querySelector("link[data-ct-explorer]")) return;
    const link = element("link", {
      rel: "stylesheet",
      href: new URL(STYLESHEET, SCRIPT_URL).href,
      "data-ct-explorer": "",
    });
    document.head.appendChild(link);
  }

  function mountAll() {
    addStylesheet();
    document.querySelectorAll(".ct-explorer:not([data-ready])").forEach(mount);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mountAll);
  } else {
    mountAll();
  }
})();
