// cnnzoo lab's page: the editor, the plan as you type, the volumes, training with live
// curves, the runs and their comparison, and predictions. Everything comes from the
// lab's own API (/api/...); nothing is loaded from another host.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"));
const pct = (v) => (v === null || v === undefined || v === "" ? "-" : `${(100 * v).toFixed(2)}%`);
const COLORS = ["#2563eb", "#d97706", "#16a34a", "#dc2626", "#7c3aed", "#0891b2", "#be185d"];

const lab = {
  view: null,          // the CodeMirror editor
  configName: null,    // the bundled config the text started from (its default name)
  lines: {},           // layer path -> editor line, from the last good plan
  planSeq: 0,          // answers to older plan requests are dropped
  watched: null,       // the run whose events stream in
  source: null,        // its EventSource
  series: {},          // run -> {rows: [...metrics rows], live: [[x, loss], ...]}
  selected: new Set(), // runs whose curves are overlaid
  runs: [],
  charts: [],
};

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) {
    const error = new Error(body.error ? body.error.message : response.statusText);
    error.line = body.error ? body.error.line : null;
    error.status = response.status;
    throw error;
  }
  return body;
}

// ---- the editor ----------------------------------------------------------------------

function schemaWords(schema) {
  const words = new Map();
  const walk = (node) => {
    if (Array.isArray(node)) { node.forEach(walk); return; }
    if (!node || typeof node !== "object") return;
    for (const [key, value] of Object.entries(node.properties || {})) {
      if (!words.has(key)) words.set(key, (value && value.description) || "");
    }
    Object.values(node).forEach(walk);
  };
  walk(schema);
  return [...words].map(([label, info]) => ({ label, type: "property", info, apply: `${label}: ` }));
}

function createEditor(words) {
  const complete = (context) => {
    const word = context.matchBefore(/[A-Za-z_][\w]*/);
    if (!word && !context.explicit) return null;
    return { from: word ? word.from : context.pos, options: words, validFor: /^\w*$/ };
  };
  let timer = null;
  lab.view = new CM.EditorView({
    parent: $("editor"),
    extensions: [
      CM.basicSetup, CM.yaml(), CM.lintGutter(), CM.EditorView.lineWrapping,
      CM.autocompletion({ override: [complete] }),
      CM.EditorView.updateListener.of((update) => {
        if (!update.docChanged) return;
        clearTimeout(timer);
        timer = setTimeout(() => { if (getText() !== lab.planned) plan(); }, 250);
      }),
    ],
  });
}

function getText() { return lab.view.state.doc.toString(); }

function setText(text) {
  lab.view.dispatch({ changes: { from: 0, to: lab.view.state.doc.length, insert: text } });
  return plan();
}

function pinLine(line) {
  const doc = lab.view.state.doc;
  const at = doc.line(Math.min(Math.max(line, 1), doc.lines));
  lab.view.dispatch({ selection: { anchor: at.from, head: at.to }, scrollIntoView: true });
  lab.view.focus();
}

// ---- the plan: table, volumes, errors --------------------------------------------------

async function plan() {
  const seq = ++lab.planSeq;
  lab.planned = getText();
  const name = lab.configName ? `&name=${encodeURIComponent(lab.configName)}` : "";
  let document_, error = null;
  try {
    document_ = await api(`/api/plan?lines=1${name}`, { method: "POST", body: getText() });
  } catch (e) { error = e; }
  if (seq !== lab.planSeq) return;
  const box = $("config-error");
  if (error) {
    box.hidden = false;
    box.textContent = error.message;
    box.dataset.line = error.line || "";
    $("summary").classList.add("stale");
    $("volumes").classList.add("stale");
    const doc = lab.view.state.doc;
    const at = doc.line(Math.min(Math.max(error.line || 1, 1), doc.lines));
    lab.view.dispatch(CM.setDiagnostics(lab.view.state, [
      { from: at.from, to: at.to, severity: "error", message: error.message }]));
    return;
  }
  box.hidden = true;
  box.textContent = "";
  box.dataset.line = "";
  lab.view.dispatch(CM.setDiagnostics(lab.view.state, []));
  $("summary").classList.remove("stale");
  $("volumes").classList.remove("stale");
  lab.lines = document_.lines || {};
  renderSummary(document_);
  renderVolumes(document_);
}

function flatten(layers, depth = 0, out = []) {
  for (const layer of layers) {
    out.push([layer, depth]);
    if (layer.children) flatten(layer.children, depth + 1, out);
  }
  return out;
}

function renderSummary(doc) {
  const rows = flatten(doc.layers).map(([l, depth]) => {
    const [w, h, d] = l.output;
    return `<tr data-path="${l.path}"><td class="layer" style="padding-left:${6 + 14 * depth}px">`
      + `${escapeHtml(l.path)} ${escapeHtml(l.label)}</td><td>${w} x ${h} x ${d}</td>`
      + `<td>${fmt(l.params)}</td><td>${fmt(l.macs)}</td>`
      + `<td>${l.receptive_field.join(" x ")}</td><td>${fmt(l.dense_params)}</td></tr>`;
  });
  const [w, h, d] = doc.input;
  $("summary").innerHTML = `<thead><tr><th>layer</th><th>output W x H x D</th><th>params</th>`
    + `<th>mult-adds</th><th>receptive field</th><th>dense params</th></tr></thead>`
    + `<tbody><tr><td class="layer">input</td><td>${w} x ${h} x ${d}</td><td></td><td></td><td></td><td></td></tr>`
    + rows.join("") + `</tbody><tfoot><tr><td>total (${doc.name})</td><td>${doc.output.join(" x ")}</td>`
    + `<td data-testid="total-params">${fmt(doc.total_params)}</td><td>${fmt(doc.total_macs)}</td>`
    + `<td></td><td>${fmt(doc.dense_params)}</td></tr></tfoot>`;
  for (const row of $("summary").querySelectorAll("tbody tr[data-path]")) {
    row.addEventListener("click", () => pick(row.dataset.path));
  }
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// Each layer's volume as a box, cs231n style: height from H, thickness from D, the
// receding side from W, each on a log scale so that 1 x 1 x 10 and 224 x 224 x 64 fit.
function boxSize(w, h, d) {
  const s = (v) => Math.log2(v + 1);
  return { front: 6 + 5 * s(d), tall: 8 + 11 * s(h), side: 2 + 3.2 * s(w) };
}

function renderVolumes(doc) {
  const items = [];
  let x = 8;
  const tallest = Math.max(...flatten(doc.layers).map(([l]) => {
    const size = boxSize(...l.output);
    return size.tall + 0.6 * size.side;
  }));
  const top = 26, base = top + 8 + tallest;
  const place = (layer, group) => {
    const [w, h, d] = layer.output;
    const size = boxSize(w, h, d);
    items.push({ layer, x, size, group });
    const label = 5.2 * Math.max(layer.output.join("x").length, layer.type.length);
    x += Math.max(size.front + size.side, label) + 10;
  };
  for (const layer of doc.layers) {
    if (layer.children && layer.children.length) {
      const start = x;
      flatten(layer.children).filter(([c]) => !c.children).forEach(([c]) => place(c, layer));
      items.push({ frame: true, layer, x: start - 4, width: x - start - 4 });
      x += 6;
    } else {
      place(layer, null);
    }
  }
  const parts = [];
  for (const item of items) {
    if (item.frame) {
      parts.push(`<g><rect x="${item.x}" y="${top - 18}" width="${item.width}" height="${base - top + 46}" `
        + `rx="6" fill="none" stroke="#9aa3b5" stroke-dasharray="4 3"/>`
        + `<text x="${item.x + 4}" y="${top - 6}" font-size="10" fill="#6b7385">${escapeHtml(item.layer.label)}</text></g>`);
      continue;
    }
    const { layer, size } = item;
    const x0 = item.x, y1 = base, y0 = base - size.tall, dx = size.side, dy = -size.side * 0.6;
    const f = size.front;
    const hue = { conv: 215, pool: 30, fc: 140, dense: 140 }[layer.type] ?? 260;
    parts.push(`<g class="box" data-path="${layer.path}">`
      + `<polygon points="${x0},${y0} ${x0 + f},${y0} ${x0 + f + dx},${y0 + dy} ${x0 + dx},${y0 + dy}" fill="hsl(${hue} 60% 82%)" stroke="#55607a"/>`
      + `<polygon points="${x0 + f},${y0} ${x0 + f + dx},${y0 + dy} ${x0 + f + dx},${y1 + dy} ${x0 + f},${y1}" fill="hsl(${hue} 45% 62%)" stroke="#55607a"/>`
      + `<polygon points="${x0},${y0} ${x0 + f},${y0} ${x0 + f},${y1} ${x0},${y1}" fill="hsl(${hue} 55% 72%)" stroke="#55607a"/>`
      + `<text x="${x0}" y="${y1 + 14}" font-size="9">${layer.output.join("x")}</text>`
      + `<text x="${x0}" y="${y1 + 25}" font-size="9" fill="#6b7385">${escapeHtml(layer.type)}</text>`
      + `<title>${escapeHtml(layer.path)} ${escapeHtml(layer.label)}: ${layer.output.join(" x ")}</title></g>`);
  }
  $("volumes").innerHTML = `<svg width="${x + 10}" height="${base + 34}">${parts.join("")}</svg>`;
  for (const box of $("volumes").querySelectorAll(".box")) {
    box.addEventListener("click", () => pick(box.dataset.path));
  }
}

// A layer picked in the drawing or the table: its row, its box and its line.
function pick(path) {
  for (const el of document.querySelectorAll(".picked")) el.classList.remove("picked");
  for (const el of document.querySelectorAll(`[data-path="${CSS.escape(path)}"]`)) {
    el.classList.add("picked");
  }
  const row = $("summary").querySelector(`tr[data-path="${CSS.escape(path)}"]`);
  if (row) row.scrollIntoView({ block: "nearest" });
  if (lab.lines[path]) pinLine(lab.lines[path]);
}

// ---- configs and runs ------------------------------------------------------------------

async function loadConfigs() {
  const configs = await api("/api/configs");
  const select = $("configs"), source = $("predict-source");
  select.innerHTML = `<optgroup label="bundled">` + configs.map((c) =>
    `<option value="config:${escapeHtml(c.name)}">${escapeHtml(c.name)} (${escapeHtml(c.dataset)}, `
    + `${fmt(c.params)} params${c.test_accuracy ? `, ${pct(c.test_accuracy)}` : ""})</option>`).join("")
    + `</optgroup><optgroup label="runs" id="run-configs"></optgroup>`;
  source.innerHTML = `<optgroup label="runs" id="predict-runs"></optgroup><optgroup label="pretrained">`
    + configs.filter((c) => c.pretrained).map((c) =>
      `<option value="pretrained:${escapeHtml(c.name)}">${escapeHtml(c.name)}</option>`).join("") + `</optgroup>`;
  select.addEventListener("change", () => openConfig(select.value));
  const first = configs.find((c) => c.name === "lenet5") || configs[0];
  if (first) { select.value = `config:${first.name}`; await openConfig(select.value); }
}

async function openConfig(value) {
  const [kind, name] = [value.slice(0, value.indexOf(":")), value.slice(value.indexOf(":") + 1)];
  if (kind === "config") {
    const config = await api(`/api/configs/${encodeURIComponent(name)}`);
    lab.configName = name;
    await setText(config.yaml);
  } else {
    const run = await api(`/api/runs/${encodeURIComponent(name)}`);
    lab.configName = run.config;
    await setText(run.config_text || "");
  }
}

async function loadRuns() {
  lab.runs = await api("/api/runs");
  const rows = lab.runs.map((r) => `<tr data-run="${escapeHtml(r.run)}">`
    + `<td><input type="checkbox" data-testid="select-run" ${lab.selected.has(r.run) ? "checked" : ""}></td>`
    + `<td class="name">${escapeHtml(r.run)}</td><td class="name">${escapeHtml(r.config || "")}</td>`
    + `<td class="name status-${r.status}" title="${escapeHtml(r.message || "")}">${r.status}</td>`
    + `<td>${fmt(r.params)}</td><td>${pct(r.test_accuracy)}</td>`
    + `<td>${r.train_seconds === null ? "-" : `${Math.round(r.train_seconds)} s`}</td></tr>`);
  $("runs").innerHTML = `<thead><tr><th></th><th class="name">run</th><th class="name">config</th>`
    + `<th class="name">status</th><th>params</th><th>test acc</th><th>time</th></tr></thead>`
    + `<tbody>${rows.join("")}</tbody>`;
  for (const row of $("runs").querySelectorAll("tbody tr")) {
    const name = row.dataset.run;
    row.querySelector("input").addEventListener("change", (e) => selectRun(name, e.target.checked));
    row.querySelector(".name").addEventListener("click", () => showRun(name));
  }
  const options = lab.runs.filter((r) => r.config).map((r) =>
    `<option value="run:${escapeHtml(r.run)}">${escapeHtml(r.run)}</option>`).join("");
  $("run-configs").innerHTML = options;
  $("predict-runs").innerHTML = lab.runs.filter((r) => r.status === "finished" || r.status === "stopped")
    .map((r) => `<option value="run:${escapeHtml(r.run)}">${escapeHtml(r.run)}</option>`).join("");
  $("activations").disabled = !$("predict-source").value.startsWith("run:");
}

async function loadRows(name) {
  const run = await api(`/api/runs/${encodeURIComponent(name)}`);
  const entry = lab.series[name] || (lab.series[name] = { rows: [], live: [] });
  entry.rows = run.metrics;
  entry.config = run.config_text;
  return run;
}

async function selectRun(name, on) {
  if (on) { lab.selected.add(name); await loadRows(name); } else { lab.selected.delete(name); }
  drawCurves();
  const chosen = [...lab.selected];
  if (chosen.length === 2) showDiff(lab.series[chosen[0]].config || "", lab.series[chosen[1]].config || "", chosen);
  else $("diff").hidden = true;
}

async function showRun(name) {
  const run = await loadRows(name);
  $("pictures").innerHTML = `<h2>${escapeHtml(name)} <small>${run.status}${run.message ? `: ${escapeHtml(run.message)}` : ""}</small></h2>`
    + run.pictures.map((p) => `<img alt="${escapeHtml(p)}" src="/api/runs/${encodeURIComponent(name)}/files/${encodeURIComponent(p)}?t=${Date.now()}">`).join("");
}

// Two configs side by side, line against line (a longest common subsequence).
function showDiff(a, b, names) {
  const x = a.split("\n"), y = b.split("\n");
  const n = x.length, m = y.length;
  const table = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    table[i][j] = x[i] === y[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
  }
  const cells = [`<div><b>${escapeHtml(names[0])}</b></div>`, `<div><b>${escapeHtml(names[1])}</b></div>`];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { cells.push(`<div>${escapeHtml(x[i++])}</div>`, `<div>${escapeHtml(y[j++])}</div>`); }
    else if (j >= m || (i < n && table[i + 1][j] >= table[i][j + 1])) { cells.push(`<div class="del">${escapeHtml(x[i++])}</div>`, `<div class="gap"></div>`); }
    else { cells.push(`<div class="gap"></div>`, `<div class="add">${escapeHtml(y[j++])}</div>`); }
  }
  $("diff").innerHTML = cells.join("");
  $("diff").hidden = false;
}

// ---- curves ----------------------------------------------------------------------------

function drawCurves() {
  const shown = [...new Set([...lab.selected, ...(lab.watched ? [lab.watched] : [])])];
  for (const chart of lab.charts) chart.destroy();
  lab.charts = [];
  $("curves").innerHTML = "";
  const width = Math.max(320, Math.floor(($("curves").clientWidth - 30) / 2));
  for (const [key, title] of [["loss", "loss"], ["accuracy", "accuracy"]]) {
    const lines = [];
    shown.forEach((name, k) => {
      const entry = lab.series[name] || { rows: [], live: [] };
      for (const split of ["train", "val", "test"]) {
        const points = entry.rows.filter((r) => r.split === split && r[key] !== "")
          .map((r) => [Number(r.epoch), Number(r[key])]);
        if (points.length) lines.push({ label: `${name} ${split}`, points, color: COLORS[k % COLORS.length], dash: split === "train" ? [5, 4] : [] });
      }
      if (key === "loss" && entry.live.length) {
        lines.push({ label: `${name} train (live)`, points: entry.live, color: COLORS[k % COLORS.length], dash: [1, 3] });
      }
    });
    const xs = [...new Set(lines.flatMap((l) => l.points.map((p) => p[0])))].sort((a, b) => a - b);
    const data = [xs, ...lines.map((l) => { const at = new Map(l.points); return xs.map((v) => (at.has(v) ? at.get(v) : null)); })];
    const holder = document.createElement("div");
    holder.dataset.testid = `curve-${key}`;
    holder.dataset.points = String(lines.reduce((s, l) => s + l.points.length, 0));
    holder.dataset.lines = lines.map((l) => l.label).join("|");
    $("curves").appendChild(holder);
    lab.charts.push(new uPlot({
      title, width, height: 230, scales: { x: { time: false } }, legend: { live: false },
      axes: [{ label: "epoch" }, {}],
      series: [{ label: "epoch" }, ...lines.map((l) => ({ label: l.label, stroke: l.color, dash: l.dash, width: 2, spanGaps: true, points: { show: true, size: 4 } }))],
    }, data, holder));
  }
  $("curves-note").textContent = shown.length ? shown.join(", ") : "train a network or select runs";
}

// ---- training --------------------------------------------------------------------------

async function train() {
  const overrides = [];
  if ($("epochs").value.trim()) overrides.push(`train.epochs=${$("epochs").value.trim()}`);
  if ($("device").value.trim()) overrides.push(`train.device=${$("device").value.trim()}`);
  try {
    const body = { yaml: getText(), set: overrides, config: lab.configName };
    const answer = await api("/api/runs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    lab.series[answer.run] = { rows: [], live: [] };
    watch(answer.run);
  } catch (e) {
    $("progress").textContent = `cannot train: ${e.message}`;
  }
}

function watch(name) {
  if (lab.source) lab.source.close();
  lab.watched = name;
  const entry = lab.series[name] || (lab.series[name] = { rows: [], live: [] });
  entry.rows = [];
  $("stop").disabled = false;
  $("resume").disabled = true;
  $("progress").textContent = `${name}: starting`;
  drawCurves();
  loadRuns();
  const source = new EventSource(`/api/runs/${encodeURIComponent(name)}/events`);
  lab.source = source;
  source.addEventListener("epoch", (e) => {
    const row = JSON.parse(e.data);
    entry.rows.push(row);
    entry.live = entry.live.filter((p) => p[0] < Number(row.epoch));
    drawCurves();
  });
  source.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    if (p.epoch === null || p.epoch === undefined) return;
    const eta = Math.round(p.eta_seconds);
    $("progress").textContent = `${name}: epoch ${p.epoch}/${p.epochs}, step ${p.batch}/${p.steps}, `
      + `${fmt(Math.round(p.images_per_s))} images/s, ETA ${Math.floor(eta / 60)}m${String(eta % 60).padStart(2, "0")}s, loss ${p.loss.toFixed(4)}`;
    entry.live.push([p.epoch - 1 + p.batch / p.steps, p.loss]);
    drawCurves();
  });
  source.addEventListener("end", (e) => {
    const end = JSON.parse(e.data);
    source.close();
    $("progress").textContent = `${name}: ${end.status}${end.message ? ` (${end.message})` : ""}`;
    $("progress").dataset.status = end.status;
    $("stop").disabled = true;
    $("resume").disabled = end.status !== "stopped";
    loadRuns();
  });
}

async function stop() {
  if (!lab.watched) return;
  try { await api(`/api/runs/${encodeURIComponent(lab.watched)}/stop`, { method: "POST" }); }
  catch (e) { $("progress").textContent = e.message; }
}

async function resume() {
  if (!lab.watched) return;
  try {
    await api(`/api/runs/${encodeURIComponent(lab.watched)}/resume`, { method: "POST" });
    watch(lab.watched);
  } catch (e) { $("progress").textContent = e.message; }
}

// ---- try an image ----------------------------------------------------------------------

async function tryImage(file) {
  const value = $("predict-source").value;
  if (!value || !file) return;
  const [kind, name] = [value.slice(0, value.indexOf(":")), value.slice(value.indexOf(":") + 1)];
  const form = new FormData();
  form.append("image", file);
  form.append(kind === "run" ? "run" : "pretrained", name);
  form.append("top", "5");
  try {
    const [answer] = await api("/api/predict", { method: "POST", body: form });
    const key = answer.top.length && "probability" in answer.top[0] ? "probability" : "score";
    $("answers").innerHTML = `<table>${answer.top.map((g) => `<tr><td class="name">${escapeHtml(g.class)}</td>`
      + `<td>${key === "probability" ? pct(g[key]) : g[key].toFixed(3)}</td>`
      + `<td style="width:160px"><div class="bar" style="width:${Math.max(1, 100 * (key === "probability" ? g[key] : 1))}%"></div></td></tr>`).join("")}</table>`;
  } catch (e) {
    $("answers").textContent = e.message;
  }
}

async function showActivations(file) {
  const value = $("predict-source").value;
  if (!value.startsWith("run:") || !file) return;
  const form = new FormData();
  form.append("image", file);
  try {
    const png = await api(`/api/runs/${encodeURIComponent(value.slice(4))}/activations`, { method: "POST", body: form });
    const img = document.createElement("img");
    img.src = URL.createObjectURL(png);
    $("answers").appendChild(img);
  } catch (e) { $("answers").textContent = e.message; }
}

function wireImage() {
  const drop = $("drop");
  const chosen = () => $("image").files[0];
  $("image").addEventListener("change", () => tryImage(chosen()));
  $("activations").addEventListener("click", () => showActivations(chosen()));
  $("predict-source").addEventListener("change", () => {
    $("activations").disabled = !$("predict-source").value.startsWith("run:");
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) { const list = new DataTransfer(); list.items.add(file); $("image").files = list.files; tryImage(file); }
  });
}

async function start() {
  const words = schemaWords(await api("/api/schema"));
  createEditor(words);
  $("train").addEventListener("click", train);
  $("stop").addEventListener("click", stop);
  $("resume").addEventListener("click", resume);
  wireImage();
  await loadConfigs();
  await loadRuns();
  drawCurves();
  window.cnnzooLab.readyAt = performance.now();
  window.cnnzooLab.ready = true;
}

window.cnnzooLab = { getText, setText, plan, watch, loadRuns, selectRun, state: lab, ready: false };
start().catch((e) => {
  $("progress").textContent = `the lab could not start: ${e.message}`;
  console.error(e);
});
