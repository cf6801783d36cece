// The playground page. It holds no update rule: every path, contour, state and file comes from
// the server (ravine.viz's runner and plots); the page draws, keeps the state in the URL in the
// CLI's spec syntax, and asks again when something changes (newest request wins).
"use strict";

const $ = (id) => document.getElementById(id);
const SVGNS = "http://www.w3.org/2000/svg";
// Timestamps read by benchmarks/serve_latency.py (input -> path drawn).
const metrics = (window.ravineMetrics = []);
const mark = (kind, extra = {}) => metrics.push({ kind, t: performance.now(), ...extra });

const app = {
  catalog: new Map(), // optimizer name -> {controls, paper}
  palette: [],
  surfaces: [],
  surfaceText: "beale",
  surface: null, // the server's surface info
  contours: null,
  start: [0, 0],
  steps: 200,
  runs: [], // {id, name, colour, values, extra, text, key, data, rev, error, errorKey}
  t: 200,
  playing: false,
  selected: null,
  seq: 0,
  inflight: null,
  client: Math.random().toString(36).slice(2) + Date.now().toString(36),
  cache: new Map(), // key -> full trajectory (this page's copy of the server's cache)
  nextId: 1,
  view: null,
  command: "",
};

// --- small helpers -----------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVGNS, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.setAttribute("class", v);
    else if (k === "style") {
      // Through the CSSOM: the page's Content Security Policy refuses style attributes.
      for (const decl of v.split(";")) {
        const i = decl.indexOf(":");
        if (i > 0) node.style.setProperty(decl.slice(0, i).trim(), decl.slice(i + 1).trim());
      }
    }
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(digits - 1) : String(Number(v.toPrecision(digits)));
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function getJSON(url, options = {}) {
  const resp = await fetch(url, options);
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || `${resp.status} ${resp.statusText}`);
  return body;
}

// --- specs in the CLI's syntax -----------------------------------------------------------------

// A value as a spec writes it (Python literal syntax); {raw} is text the user typed, sent as is
// so that ravine, not the page, says what is wrong with it.
function literal(v) {
  if (v && typeof v === "object" && "raw" in v) return v.raw.trim();
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (Array.isArray(v)) return "(" + v.map(literal).join(",") + (v.length === 1 ? ",)" : ")");
  if (typeof v === "number") return String(v);
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(v) ? v : JSON.stringify(v);
}

function specText(run) {
  const entry = app.catalog.get(run.name);
  const parts = [];
  for (const c of entry ? entry.controls : []) {
    const v = run.values[c.name];
    if (literal(v) !== literal(c.default)) parts.push(`${c.name}=${literal(v)}`);
  }
  for (const [k, v] of Object.entries(run.extra)) parts.push(`${k}=${literal(v)}`);
  return parts.length ? `${run.name}:${parts.join(",")}` : run.name;
}

const sceneKey = () => `${app.surfaceText}|${app.start[0]},${app.start[1]}|${app.steps}`;
const startText = () => `${app.start[0]},${app.start[1]}`;

function updateURL() {
  const q = new URLSearchParams();
  q.set("surface", app.surfaceText);
  q.set("start", startText());
  q.set("steps", String(app.steps));
  q.set("optimizers", app.runs.map((r) => specText(r)).join(","));
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

// --- runs: state, requests, drawing --------------------------------------------------------------

function addRun(name, hparams = {}) {
  const entry = app.catalog.get(name);
  if (!entry) throw new Error(`optimizer ${name} is not in the registry`);
  const used = new Set(app.runs.map((r) => r.colour));
  const colour = app.palette.find((c) => !used.has(c)) || app.palette[app.runs.length % app.palette.length];
  const values = {};
  for (const c of entry.controls) values[c.name] = c.default;
  const extra = {};
  for (const [k, v] of Object.entries(hparams)) {
    if (entry.controls.some((c) => c.name === k)) values[k] = v;
    else extra[k] = v;
  }
  const run = { id: app.nextId++, name, colour, values, extra, text: "", key: "", data: null, rev: 0, error: null, errorKey: null };
  app.runs.push(run);
  buildCard(run);
  return run;
}

function removeRun(run) {
  app.runs = app.runs.filter((r) => r !== run);
  document.querySelector(`.run[data-id="${run.id}"]`)?.remove();
  document.querySelector(`#overlay g.path[data-id="${run.id}"]`)?.remove();
  if (app.selected === run.id) select(null);
  refresh();
}

function setData(run, data) {
  run.data = data;
  run.rev += 1;
  drawRun(run);
  updateCard(run);
  mark("drawn", { id: run.id, partial: !!data.partial, key: run.key });
}

// Everything that changes the picture ends here: work out which runs need new trajectories and
// ask for exactly those, in one request that replaces any older one.
function refresh() {
  updateURL();
  const scene = sceneKey();
  const missing = [];
  for (const run of app.runs) {
    run.text = specText(run);
    const key = `${scene}|${run.text}`;
    const drawn = run.data && run.data.key === key && !run.data.partial;
    if (key === run.key && (drawn || run.errorKey === key)) continue;
    if (key !== run.key) {
      run.key = key;
      run.error = null;
      const hit = app.cache.get(key);
      if (hit) {
        setData(run, hit);
        continue;
      }
    }
    if (run.errorKey !== key) missing.push(run);
  }
  // The request goes out first (fetch is sent before request() first awaits); the loss plot
  // is redrawn while the server computes.
  if (missing.length) request(missing);
  else finishRequest();
  drawLoss();
  if (!missing.length) settle();
  if (app.selected !== null) scheduleInspect();
}

function finishRequest() {
  if (app.inflight) app.inflight.abort();
  app.inflight = null;
}

async function request(runs) {
  finishRequest();
  const controller = new AbortController();
  app.inflight = controller;
  const seq = ++app.seq;
  const keys = runs.map((r) => r.key);
  document.body.dataset.busy = "true";
  const body = {
    surface: app.surfaceText, start: startText(), steps: app.steps,
    optimizers: runs.map((r) => r.text), client: app.client, seq,
  };
  mark("request", { seq, n: runs.length });
  try {
    const resp = await fetch("/api/trajectories", {
      method: "POST", body: JSON.stringify(body), signal: controller.signal,
      headers: { "Content-Type": "application/json" },
    });
    if (!resp.ok) {
      const err = await resp.json();
      showError(err.error);
      // Not asked again until something changes: the message says what to change.
      runs.forEach((run, i) => { if (run.key === keys[i]) run.errorKey = run.key; });
      return;
    }
    mark("response", { seq });
    showError("");
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line);
        mark("line", { seq, index: msg.index, partial: !!msg.partial, bytes: line.length });
        onLine(msg, runs, keys);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") showError(String(err.message || err));
  } finally {
    if (app.inflight === controller) {
      app.inflight = null;
      document.body.dataset.busy = "false";
      settle();
    }
  }
}

function onLine(msg, runs, keys) {
  if (msg.done) {
    mark("done", { server: msg.server_ms });
    app.command = msg.command || "";
    $("command").textContent = app.command;
    return;
  }
  if (msg.stale || msg.index === undefined) {
    if (msg.error) showError(msg.error);
    return;
  }
  const run = runs[msg.index];
  const key = keys[msg.index];
  if (msg.error) {
    if (run.key === key) {
      run.error = msg.error;
      run.errorKey = key;
      updateCard(run);
    }
    return;
  }
  msg.key = key;
  if (!msg.partial) app.cache.set(key, msg);
  // A run that moved on since this request was sent waits for its own, newer one.
  const complete = run.data && run.data.key === key && !run.data.partial;
  if (run.key === key && app.runs.includes(run) && !(msg.partial && complete)) setData(run, msg);
}

function settle() {
  const pending = app.runs.some((r) => (!r.data || r.data.partial || r.data.key !== r.key) && r.errorKey !== r.key);
  if (!pending) {
    updateCommand();
    if (document.body.dataset.ready !== "true") {
      document.body.dataset.ready = "true";
      mark("ready");
    }
  }
  $("scrub").max = String(app.steps);
  clampT();
  drawAll();
}

function updateCommand() {
  // The server writes the command with every answer; from the cache, the last one still holds
  // unless the runs changed, so ask for it (cheap: no trajectories are computed).
  const q = new URLSearchParams({ surface: app.surfaceText, start: startText(), steps: String(app.steps),
    optimizers: app.runs.filter((r) => r.errorKey !== r.key).map((r) => r.text).join(",") });
  if (!app.runs.length) {
    $("command").textContent = "";
    return;
  }
  getJSON(`/api/state?${q}`).then((s) => { app.command = s.command || ""; $("command").textContent = app.command; }).catch(() => {});
}

// --- the contour view ----------------------------------------------------------------------------

function layout() {
  const w = app.surface.window;
  const dx = w[1] - w[0], dy = w[3] - w[2];
  const avail = Math.max(360, Math.min(660, window.innerHeight - 210, window.innerWidth - 640));
  const s = avail / Math.max(dx, dy);
  const pad = 34;
  app.view = { s, pad, w, width: dx * s + 2 * pad, height: dy * s + 2 * pad };
}

const px = (x) => app.view.pad + (x - app.view.w[0]) * app.view.s;
const py = (y) => app.view.pad + (app.view.w[3] - y) * app.view.s;
const fromPx = (X, Y) => [app.view.w[0] + (X - app.view.pad) / app.view.s, app.view.w[3] - (Y - app.view.pad) / app.view.s];

function drawContours() {
  layout();
  const { width, height } = app.view;
  const plot = $("plot");
  plot.style.width = `${width}px`;
  plot.style.height = `${height}px`;
  const canvas = $("contours");
  const dpr = window.devicePixelRatio || 1;
  canvas.width = width * dpr;
  canvas.height = height * dpr;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.save();
  ctx.beginPath();
  ctx.rect(px(app.view.w[0]), py(app.view.w[3]), app.view.w[1] * app.view.s - app.view.w[0] * app.view.s, (app.view.w[3] - app.view.w[2]) * app.view.s);
  ctx.clip();
  const trace = (ring) => {
    ctx.moveTo(px(ring[0]), py(ring[1]));
    for (let i = 2; i < ring.length; i += 2) ctx.lineTo(px(ring[i]), py(ring[i + 1]));
  };
  for (const band of app.contours.bands) {
    ctx.beginPath();
    for (const ring of band.rings) trace(ring);
    ctx.fillStyle = band.color;
    ctx.fill("evenodd");
  }
  ctx.strokeStyle = "rgba(115,115,115,0.9)";
  ctx.lineWidth = 0.6;
  for (const level of app.contours.levels) {
    ctx.beginPath();
    for (const line of level.lines) trace(line);
    ctx.stroke();
  }
  ctx.restore();
  drawAxes(ctx);
  drawColourbar();
  const svg = $("overlay");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren(
    el("svg:defs", {}, el("svg:clipPath", { id: "window" },
      el("svg:rect", { x: px(app.view.w[0]), y: py(app.view.w[3]), width: width - 2 * app.view.pad, height: height - 2 * app.view.pad }))),
    el("svg:g", { id: "stationary" }),
    el("svg:g", { id: "paths", "clip-path": "url(#window)" }),
    el("svg:g", { id: "marks" }),
    el("svg:g", { id: "arrows" }),
  );
  for (const [x, y] of app.surface.minima) {
    $("stationary").append(el("svg:path", { d: star(px(x), py(y), 9), class: "minimum", fill: "gold", stroke: "#000", "stroke-width": 0.8 }));
  }
  for (const [x, y] of app.surface.saddles) {
    $("stationary").append(el("svg:path", { d: plus(px(x), py(y), 6), fill: "#fff", stroke: "#000", "stroke-width": 0.8 }));
  }
  for (const run of app.runs) delete run.g;
  drawAll();
}

function drawAxes(ctx) {
  const { w } = app.view;
  ctx.strokeStyle = "#4a5560";
  ctx.lineWidth = 1;
  ctx.strokeRect(px(w[0]), py(w[3]), (w[1] - w[0]) * app.view.s, (w[3] - w[2]) * app.view.s);
  ctx.fillStyle = "#1d2733";
  ctx.font = "11px system-ui, sans-serif";
  for (const x of niceTicks(w[0], w[1], 6)) {
    ctx.textAlign = "center";
    ctx.fillText(fmt(x, 3), px(x), py(w[2]) + 14);
    ctx.beginPath(); ctx.moveTo(px(x), py(w[2])); ctx.lineTo(px(x), py(w[2]) + 4); ctx.stroke();
  }
  for (const y of niceTicks(w[2], w[3], 6)) {
    ctx.textAlign = "right";
    ctx.fillText(fmt(y, 3), px(w[0]) - 6, py(y) + 4);
    ctx.beginPath(); ctx.moveTo(px(w[0]) - 4, py(y)); ctx.lineTo(px(w[0]), py(y)); ctx.stroke();
  }
  ctx.textAlign = "center";
  ctx.fillText("x", px((w[0] + w[1]) / 2), py(w[2]) + 28);
  ctx.fillText("y", px(w[0]) - 26, py((w[2] + w[3]) / 2));
}

function niceTicks(lo, hi, n) {
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.abs(v) < 1e-12 ? 0 : v);
  return out;
}

function drawColourbar() {
  const canvas = $("colourbar");
  const bands = app.contours.bands;
  const h = Math.round(app.view.height - 2 * app.view.pad);
  canvas.height = h;
  canvas.style.marginTop = `${app.view.pad}px`;
  const ctx = canvas.getContext("2d");
  bands.forEach((b, i) => {
    ctx.fillStyle = b.color;
    const y0 = h - ((i + 1) * h) / bands.length;
    ctx.fillRect(0, Math.floor(y0), canvas.width, Math.ceil(h / bands.length) + 1);
  });
  const ticks = $("colourbar-ticks");
  ticks.setAttribute("width", 48);
  ticks.setAttribute("height", app.view.height);
  ticks.replaceChildren();
  const levels = app.contours.band_levels;
  const every = Math.max(1, Math.round(levels.length / 7));
  levels.forEach((v, i) => {
    if (i % every && i !== levels.length - 1) return;
    const y = app.view.pad + h - (i * h) / (levels.length - 1);
    ticks.append(el("svg:text", { x: 4, y: y + 4, text: fmt(v, 2) }));
  });
  ticks.append(el("svg:text", { x: -14, y: app.view.pad - 8, text: "f(x, y)" }));
}

const star = (x, y, r) => {
  let d = "";
  for (let i = 0; i < 10; i++) {
    const a = -Math.PI / 2 + (i * Math.PI) / 5;
    const rr = i % 2 ? r * 0.45 : r;
    d += `${i ? "L" : "M"}${x + rr * Math.cos(a)},${y + rr * Math.sin(a)}`;
  }
  return d + "Z";
};
const plus = (x, y, r) => `M${x - r},${y - r / 3}h${(2 * r) / 3}v${-(2 * r) / 3}h${(2 * r) / 3}v${(2 * r) / 3}h${(2 * r) / 3}v${(2 * r) / 3}h${-(2 * r) / 3}v${(2 * r) / 3}h${-(2 * r) / 3}v${-(2 * r) / 3}h${-(2 * r) / 3}Z`;
const cross = (x, y, r) => `M${x - r},${y - r}L${x + r},${y + r}M${x - r},${y + r}L${x + r},${y - r}`;

function drawAll() {
  if (!app.view) return;
  for (const run of app.runs) drawRun(run);
  drawStart();
  drawLoss();
  $("step-label").textContent = `step ${app.t} / ${app.steps}`;
  $("scrub").value = String(app.t);
}

function drawRun(run) {
  if (!app.view) return;
  if (!run.g || !run.g.isConnected) {
    run.g = el("svg:g", { class: "path", "data-id": run.id, "data-name": run.name });
    $("paths").append(run.g);
  }
  const g = run.g;
  const data = run.key && run.data && run.data.key === run.key ? run.data : null;
  // Redraw only what changed: a run whose data, step and highlight are as drawn is left alone.
  const signature = `${data ? run.rev : "none"}|${app.t}|${app.selected === run.id}|${app.view.s}`;
  if (g.dataset.signature === signature) return;
  g.dataset.signature = signature;
  g.dataset.rev = String(run.rev);
  g.dataset.spec = run.text;
  $("marks").querySelector(`.edge-mark[data-id="${run.id}"]`)?.remove();
  if (!data) {
    g.replaceChildren();
    return;
  }
  const drawn = data.drawn || data.points;
  const upto = Math.min(app.t, drawn.length - 1);
  let points = "";
  for (let i = 0; i <= upto; i++) {
    const p = drawn[i];
    if (p[0] !== null && p[1] !== null) points += `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)} `;
  }
  const width = app.selected === run.id ? 3 : 1.9;
  const children = [el("svg:polyline", { points, fill: "none", stroke: run.colour, "stroke-width": width, "stroke-linejoin": "round" })];
  const last = drawn[upto];
  if (last && last[0] !== null) {
    const X = px(last[0]), Y = py(last[1]);
    if (upto === drawn.length - 1 && !data.partial && data.end === "diverged") {
      // The end of a diverged run sits on the window's edge: its cross is drawn unclipped.
      $("marks").append(el("svg:g", { class: "edge-mark", "data-id": run.id },
        el("svg:path", { d: cross(X, Y, 6), stroke: "#000", "stroke-width": 4.5 }),
        el("svg:path", { d: cross(X, Y, 6), stroke: run.colour, "stroke-width": 2.5 })));
    } else {
      children.push(el("svg:circle", { cx: X, cy: Y, r: 4.2, fill: run.colour, stroke: "#000", "stroke-width": 0.7 }));
    }
  }
  g.replaceChildren(...children);
}

function drawStart() {
  const marks = $("marks");
  marks.querySelector("#start-mark")?.remove();
  marks.append(el("svg:circle", { id: "start-mark", cx: px(app.start[0]), cy: py(app.start[1]), r: 6, fill: "#000", stroke: "#fff", "stroke-width": 1.5 }));
  $("start").value = `${fmt(app.start[0], 6)}, ${fmt(app.start[1], 6)}`;
}

function clampT() {
  app.t = Math.max(0, Math.min(app.t, app.steps));
}

// --- click or drag to set the start ------------------------------------------------------------

function setupPointer() {
  const svg = $("overlay");
  let dragging = false;
  let queued = null;
  const apply = () => {
    if (!queued) return;
    app.start = queued;
    queued = null;
    app.t = app.steps;
    drawStart();
    refresh();
  };
  // A click asks at once; a drag asks once per frame, for where the pointer is by then.
  const move = (ev, now) => {
    const r = svg.getBoundingClientRect();
    const [x, y] = fromPx(ev.clientX - r.left, ev.clientY - r.top);
    const w = app.view.w;
    queued = [Math.min(Math.max(x, w[0]), w[1]), Math.min(Math.max(y, w[2]), w[3])].map((v) => Number(v.toPrecision(4)));
    if (now) apply();
    else requestAnimationFrame(apply);
  };
  svg.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    dragging = true;
    svg.setPointerCapture(ev.pointerId);
    mark("input", { what: "start" });
    move(ev, true);
  });
  svg.addEventListener("pointermove", (ev) => {
    if (dragging) {
      mark("input", { what: "start" });
      move(ev, false);
    }
  });
  const stop = () => { dragging = false; };
  svg.addEventListener("pointerup", stop);
  svg.addEventListener("pointercancel", stop);
}

// --- the optimizer cards -----------------------------------------------------------------------

function sliderToValue(slider, f) {
  const v = slider.scale === "log"
    ? Math.exp(Math.log(slider.min) + f * (Math.log(slider.max) - Math.log(slider.min)))
    : slider.min + f * (slider.max - slider.min);
  return Number(v.toPrecision(3));
}

function valueToSlider(slider, v) {
  if (typeof v !== "number" || !isFinite(v)) return 0;
  const f = slider.scale === "log"
    ? (Math.log(Math.max(v, slider.min)) - Math.log(slider.min)) / (Math.log(slider.max) - Math.log(slider.min))
    : (v - slider.min) / (slider.max - slider.min);
  return Math.round(1000 * Math.min(Math.max(f, 0), 1));
}

function parseTyped(text) {
  const t = text.trim();
  if (t !== "" && !isNaN(Number(t))) return Number(t);
  return { raw: t };
}

function numberRow(run, label, get, set, slider) {
  const field = el("input", { type: "text", value: literal(get()), "data-param": label, spellcheck: "false" });
  const nodes = [el("label", { text: label, title: label })];
  let range = null;
  if (slider) {
    range = el("input", { type: "range", min: 0, max: 1000, value: valueToSlider(slider, get()), "data-param": label });
    range.addEventListener("input", () => {
      mark("input", { what: "slider", id: run.id });
      set(sliderToValue(slider, Number(range.value) / 1000));
      field.value = literal(get());
      refresh();
    });
    nodes.push(range, field);
  } else {
    field.classList.add("wide");
    nodes.push(field);
  }
  field.addEventListener("change", () => {
    mark("input", { what: "field", id: run.id });
    set(parseTyped(field.value));
    if (range) range.value = valueToSlider(slider, get());
    refresh();
  });
  return nodes;
}

function controlRows(run, c) {
  const v = () => run.values[c.name];
  if (c.type === "flag") {
    const box = el("input", { type: "checkbox", "data-param": c.name });
    box.checked = !!v();
    box.addEventListener("change", () => { run.values[c.name] = box.checked; refresh(); });
    return [el("label", { text: c.name }), el("span", { class: "wide" }, box)];
  }
  if (c.type === "choice") {
    const sel = el("select", { class: "wide", "data-param": c.name });
    for (const choice of c.choices) sel.append(el("option", { value: literal(choice), text: literal(choice) }));
    sel.value = literal(v());
    sel.addEventListener("change", () => {
      run.values[c.name] = c.choices.find((x) => literal(x) === sel.value);
      refresh();
    });
    return [el("label", { text: c.name }), sel];
  }
  if (c.type === "reals" && c.arity && Array.isArray(c.default)) {
    const rows = [];
    for (let i = 0; i < c.arity; i++) {
      const get = () => (Array.isArray(v()) ? v()[i] : null);
      const set = (x) => {
        const arr = Array.isArray(v()) ? v().slice() : c.default.slice();
        arr[i] = x;
        run.values[c.name] = arr;
      };
      rows.push(...numberRow(run, `${c.name}[${i}]`, get, set, c.sliders && c.sliders[i]));
    }
    return rows;
  }
  const slider = c.type === "real" ? c.slider : null;
  return numberRow(run, c.name, v, (x) => { run.values[c.name] = x; }, slider);
}

function buildCard(run) {
  const entry = app.catalog.get(run.name);
  const primary = el("div", { class: "controls" });
  const more = el("div", { class: "controls" });
  for (const c of entry.controls) (c.primary ? primary : more).append(...controlRows(run, c));
  const card = el("div", { class: "run", "data-id": run.id, "data-name": run.name, style: `--colour:${run.colour}` },
    el("div", { class: "head" },
      el("span", { class: "name", text: run.name, title: `${entry.paper}\n(click: step inspector)`, onclick: () => select(run.id) }),
      el("span", { class: "status" }),
      el("button", { class: "remove", type: "button", title: "remove", "aria-label": `remove ${run.name}`, text: "×", onclick: () => removeRun(run) })),
    primary,
    more.childElementCount ? el("details", {}, el("summary", { text: "more hyperparameters" }), more) : null,
    el("div", { class: "error-line", hidden: "" }));
  $("runs").append(card);
}

function updateCard(run) {
  const card = document.querySelector(`.run[data-id="${run.id}"]`);
  if (!card) return;
  const status = card.querySelector(".status");
  const errorLine = card.querySelector(".error-line");
  errorLine.hidden = !run.error;
  errorLine.textContent = run.error || "";
  card.querySelectorAll("input[type=text]").forEach((f) => f.classList.toggle("invalid", !!run.error && run.error.includes(`Invalid ${f.dataset.param.split("[")[0]}`)));
  const d = run.data && run.data.key === run.key ? run.data : null;
  if (run.error) {
    status.textContent = "not run";
    status.className = "status bad";
  } else if (d) {
    const loss = d.losses[d.losses.length - 1];
    status.textContent = d.partial ? "running…" : `f = ${fmt(loss)}${d.status ? ` · ${d.status}` : ""}`;
    status.className = d.end === "diverged" ? "status bad" : "status";
  }
}

// --- the loss plot -----------------------------------------------------------------------------

function lossTransform() {
  const mv = app.surface.min_value;
  if (mv !== null && mv !== undefined) {
    return { f: (v) => Math.log10(Math.max(v - mv, 1e-16)), label: "log10(f − f*)", inv: (u) => `1e${Math.round(u)}` };
  }
  // matplotlib's symlog with linthresh 0.01, as ravine viz --view loss draws it
  const lt = 0.01;
  const f = (v) => (Math.abs(v) <= lt ? v / lt : Math.sign(v) * (1 + Math.log10(Math.abs(v) / lt)));
  const inv = (u) => fmt(Math.abs(u) <= 1 ? u * lt : Math.sign(u) * lt * 10 ** (Math.abs(u) - 1), 2);
  return { f, label: "f (symlog)", inv };
}

function drawLoss() {
  const svg = $("loss");
  if (!app.surface) return;
  const W = svg.clientWidth || 480, H = svg.clientHeight || 210;
  const m = { l: 46, r: 10, t: 8, b: 24 };
  const tr = lossTransform();
  $("loss-axis").textContent = tr.label;
  const series = [];
  let lo = Infinity, hi = -Infinity;
  for (const run of app.runs) {
    const d = run.data && run.data.key === run.key ? run.data : null;
    if (!d) continue;
    const ys = d.losses.map((v) => (v === null ? null : tr.f(v)));
    for (const y of ys) if (y !== null && isFinite(y)) { lo = Math.min(lo, y); hi = Math.max(hi, y); }
    series.push([run, ys]);
  }
  svg.replaceChildren();
  if (!series.length || !isFinite(lo)) return;
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const X = (i) => m.l + (i / Math.max(app.steps, 1)) * (W - m.l - m.r);
  const Y = (u) => m.t + ((hi - u) / (hi - lo)) * (H - m.t - m.b);
  const grid = el("svg:g", { class: "grid" });
  const axis = el("svg:g", { class: "axis" });
  for (const u of niceTicks(lo, hi, 4)) {
    grid.append(el("svg:line", { x1: m.l, x2: W - m.r, y1: Y(u), y2: Y(u) }));
    axis.append(el("svg:text", { x: m.l - 4, y: Y(u) + 4, "text-anchor": "end", text: tr.inv(u) }));
  }
  for (const s of niceTicks(0, app.steps, 5)) {
    axis.append(el("svg:text", { x: X(s), y: H - 8, "text-anchor": "middle", text: String(Math.round(s)) }));
  }
  axis.append(el("svg:line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
  axis.append(el("svg:line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
  svg.append(grid, axis);
  for (const [run, ys] of series) {
    let pts = "";
    ys.forEach((y, i) => { if (y !== null && isFinite(y)) pts += `${X(i).toFixed(1)},${Y(y).toFixed(1)} `; });
    svg.append(el("svg:polyline", { points: pts, fill: "none", stroke: run.colour, "stroke-width": app.selected === run.id ? 2.6 : 1.5, "data-id": run.id }));
    if (run.data.end === "diverged") {
      const i = ys.length - 1;
      if (ys[i] !== null) svg.append(el("svg:path", { d: cross(X(i), Y(ys[i]), 4), stroke: run.colour, "stroke-width": 2 }));
    }
  }
  svg.append(el("svg:line", { x1: X(app.t), x2: X(app.t), y1: m.t, y2: H - m.b, stroke: "#1d2733", "stroke-dasharray": "3 3", id: "loss-cursor" }));
  svg.onpointermove = svg.onpointerdown = (ev) => {
    if (ev.type === "pointermove" && !ev.buttons) return;
    const r = svg.getBoundingClientRect();
    app.t = Math.round(((ev.clientX - r.left - m.l) / (W - m.l - m.r)) * app.steps);
    clampT();
    drawAll();
    scheduleInspect();
  };
}

// --- playback ----------------------------------------------------------------------------------

function setupPlayback() {
  $("scrub").addEventListener("input", () => {
    app.t = Number($("scrub").value);
    drawAll();
    scheduleInspect();
  });
  $("play").addEventListener("click", () => {
    app.playing = !app.playing;
    $("play").innerHTML = app.playing ? "&#10074;&#10074;" : "&#9654;";
    $("play").setAttribute("aria-label", app.playing ? "pause" : "play");
    if (app.playing) {
      if (app.t >= app.steps) app.t = 0;
      requestAnimationFrame(tick);
    }
  });
}

function tick() {
  if (!app.playing) return;
  app.t = Math.min(app.steps, app.t + Math.max(1, Math.round(app.steps / 240)));
  drawAll();
  if (app.t >= app.steps) {
    app.playing = false;
    $("play").innerHTML = "&#9654;";
    $("play").setAttribute("aria-label", "play");
    scheduleInspect();
    return;
  }
  requestAnimationFrame(tick);
}

// --- the step inspector ------------------------------------------------------------------------

let inspectTimer = null;
let inspectAbort = null;

function select(id) {
  app.selected = id;
  document.querySelectorAll(".run").forEach((c) => c.classList.toggle("selected", Number(c.dataset.id) === id));
  drawAll();
  if (id === null) {
    $("inspector").replaceChildren(el("p", { class: "hint", text: "click an optimizer's name to see its state at the current step" }));
    $("inspect-title").textContent = "";
    $("arrows").replaceChildren();
  } else scheduleInspect();
}

function scheduleInspect() {
  if (app.selected === null) return;
  clearTimeout(inspectTimer);
  inspectTimer = setTimeout(inspect, 60);
}

async function inspect() {
  const run = app.runs.find((r) => r.id === app.selected);
  if (!run || !run.data || run.data.key !== run.key || run.data.partial) return;
  if (inspectAbort) inspectAbort.abort();
  inspectAbort = new AbortController();
  const q = new URLSearchParams({ surface: app.surfaceText, start: startText(), steps: String(app.steps), spec: run.text, step: String(app.t) });
  try {
    const state = await getJSON(`/api/inspect?${q}`, { signal: inspectAbort.signal });
    renderInspector(run, state);
  } catch (err) {
    if (err.name !== "AbortError") $("inspector").replaceChildren(el("p", { class: "error-line", text: String(err.message) }));
  }
}

function arrow(x, y, v, colour, dashed) {
  // Direction only, a fixed length: the table gives the size (units differ between quantities).
  const n = Math.hypot(v[0], v[1]);
  if (!n || !isFinite(n)) return null;
  const L = 46;
  const X = px(x), Y = py(y);
  const X2 = X + (L * v[0]) / n, Y2 = Y - (L * v[1]) / n;
  const a = Math.atan2(Y2 - Y, X2 - X);
  const head = `M${X2},${Y2}L${X2 - 8 * Math.cos(a - 0.4)},${Y2 - 8 * Math.sin(a - 0.4)}M${X2},${Y2}L${X2 - 8 * Math.cos(a + 0.4)},${Y2 - 8 * Math.sin(a + 0.4)}`;
  return el("svg:g", { class: "arrow" },
    el("svg:path", { d: `M${X},${Y}L${X2},${Y2}${head}`, stroke: "#fff", "stroke-width": 4, fill: "none", "stroke-linecap": "round" }),
    el("svg:path", { d: `M${X},${Y}L${X2},${Y2}${head}`, stroke: colour, "stroke-width": 2, fill: "none", "stroke-dasharray": dashed ? "4 3" : null, "stroke-linecap": "round" }));
}

function bars(values, scale, colour) {
  return el("td", { class: "bars" }, ...values.map((v) => el("div", {
    class: "bar", style: `width:${Math.max(1, Math.round(140 * Math.min(1, scale(Math.abs(v)))))}px;--colour:${colour}`,
    title: String(v),
  })));
}

function renderInspector(run, s) {
  $("inspect-title").textContent = `${run.text} at step ${s.step}`;
  const [x, y] = s.point;
  const rows = [];
  const row = (k, v, extra) => rows.push(el("tr", {}, el("td", { class: "k", text: k }), el("td", { class: "mono", text: v }), extra || el("td")));
  const vec = (v) => (v ? `(${fmt(v[0])}, ${fmt(v[1])})` : "–");
  row("point θ", vec(s.point));
  row("f(θ)", fmt(run.data.losses[Math.min(s.step, run.data.losses.length - 1)]));
  row("gradient g", vec(s.gradient), el("td", { class: "hint", text: "black arrow" }));
  if (s.update) row("next step Δθ", vec(s.update), el("td", { class: "hint", text: "dashed arrow" }));
  const arrows = [];
  if (s.gradient) arrows.push(arrow(x, y, s.gradient, "#111", false));
  if (s.update) arrows.push(arrow(x, y, s.update, run.colour, true));
  const mags = s.vectors.filter((v) => v.kind === "magnitude").flatMap((v) => v.value.filter((a) => a !== null && a > 0));
  const top = mags.length ? Math.log10(Math.max(...mags)) : 0;
  const bottom = mags.length ? Math.min(top - 1, Math.log10(Math.min(...mags))) : -1;
  const logScale = (a) => (a > 0 ? (Math.log10(a) - bottom + 0.05) / (top - bottom + 0.05) : 0);
  let drawnDirections = 0;
  for (const v of s.vectors) {
    if (v.kind === "magnitude") row(v.name, vec(v.value), bars(v.value, logScale, run.colour));
    else if (v.kind === "point") {
      row(v.name, vec(v.value), el("td", { class: "hint", text: "hollow diamond" }));
      arrows.push(el("svg:rect", { x: px(v.value[0]) - 5, y: py(v.value[1]) - 5, width: 10, height: 10, transform: `rotate(45 ${px(v.value[0])} ${py(v.value[1])})`, fill: "none", stroke: run.colour, "stroke-width": 2 }));
    } else if (drawnDirections < 3) {
      // A learned optimizer carries dozens of hidden-state vectors: three arrows stay readable.
      drawnDirections += 1;
      row(v.name, vec(v.value), el("td", { class: "hint", text: "solid arrow" }));
      arrows.push(arrow(x, y, v.value, run.colour, false));
    } else {
      row(v.name, vec(v.value));
    }
  }
  for (const sc of s.scalars) row(sc.name, fmt(sc.value));
  for (const b of s.bias_corrections || []) {
    row(`${b.name} (β=${b.beta})`, fmt(b.value) + (b.applied ? "" : " (not applied)"), bars([b.value], (a) => a, run.colour));
  }
  $("inspector").replaceChildren(el("table", {}, ...rows), el("p", { class: "hint", text: "arrows show directions (not to scale); bars: magnitudes on a log scale, bias corrections on [0, 1]" }));
  $("arrows").replaceChildren(...arrows.filter(Boolean));
}

// --- header: surface, steps, start, command, export --------------------------------------------

async function loadSurface(text, keepStart, fetched = null) {
  const contours = fetched || (await getJSON(`/api/contours?surface=${encodeURIComponent(text)}`));
  app.surfaceText = contours.surface.name;
  app.surface = contours.surface;
  app.contours = contours;
  if (!keepStart) app.start = app.surface.start.slice();
  const builtin = app.surfaces.some((s) => s.name === app.surfaceText);
  $("surface").value = builtin ? app.surfaceText : "expr:";
  $("formula").hidden = builtin;
  if (!builtin) $("formula").value = app.surfaceText.slice(5);
  $("formula-line").textContent = app.surface.formula ? `f(x, y) = ${app.surface.formula}${app.surface.description ? ` — ${app.surface.description}` : ""}` : "";
  drawContours();
  if (!metrics.some((m) => m.kind === "shown")) mark("shown");
}

function setupHeader() {
  for (const s of app.surfaces) $("surface").append(el("option", { value: s.name, text: s.name }));
  $("surface").append(el("option", { value: "expr:", text: "formula…" }));
  $("surface").addEventListener("change", async () => {
    const v = $("surface").value;
    if (v === "expr:") {
      $("formula").hidden = false;
      $("formula").focus();
      return;
    }
    await changeSurface(v);
  });
  $("formula").addEventListener("change", () => changeSurface(`expr:${$("formula").value}`));
  $("steps").addEventListener("change", () => {
    const n = Number($("steps").value);
    if (!Number.isInteger(n) || n < 1) {
      showError(`steps=${JSON.stringify($("steps").value)}: expected a whole number of steps`);
      $("steps").classList.add("invalid");
      return;
    }
    $("steps").classList.remove("invalid");
    app.steps = n;
    app.t = n;
    refresh();
  });
  $("start").addEventListener("change", () => {
    const parts = $("start").value.split(",").map((p) => Number(p.trim()));
    if (parts.length !== 2 || parts.some((p) => !isFinite(p))) {
      showError(`start=${JSON.stringify($("start").value)}: expected a point x, y`);
      return;
    }
    app.start = parts;
    drawStart();
    refresh();
  });
  $("copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(app.command);
      $("copy").textContent = "copied ✓";
    } catch {
      const range = document.createRange();
      range.selectNodeContents($("command"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      $("copy").textContent = "selected: Ctrl-C";
    }
    setTimeout(() => { $("copy").textContent = "copy as command"; }, 1500);
  });
  for (const b of document.querySelectorAll(".export button")) b.addEventListener("click", () => exportFile(b));
  for (const name of app.catalog.keys()) $("add-name").append(el("option", { value: name, text: name }));
  $("add").addEventListener("click", () => {
    const run = addRun($("add-name").value);
    drawRun(run);
    refresh();
  });
  window.addEventListener("resize", () => { if (app.contours) drawContours(); });
}

async function changeSurface(text) {
  try {
    await loadSurface(text, false);
    showError("");
    app.t = app.steps;
    refresh();
  } catch (err) {
    showError(String(err.message));
  }
}

async function exportFile(button) {
  const fmtName = button.dataset.format;
  const q = new URLSearchParams({ surface: app.surfaceText, start: startText(), steps: String(app.steps),
    optimizers: app.runs.map((r) => r.text).join(","), format: fmtName,
    view: ["gif", "mp4"].includes(fmtName) ? "contour" : $("export-view").value });
  const label = button.textContent;
  button.textContent = "…";
  button.disabled = true;
  try {
    const resp = await fetch(`/api/export?${q}`);
    if (!resp.ok) throw new Error((await resp.json()).error);
    const blob = await resp.blob();
    const name = (resp.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
    const a = el("a", { href: URL.createObjectURL(blob), download: name ? name[1] : `ravine.${fmtName}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    showError("");
  } catch (err) {
    showError(String(err.message));
  } finally {
    button.textContent = label;
    button.disabled = false;
  }
}

// The bench lab's HTML reports the server was given or found (ravine report's output).
function showReports(reports) {
  const first = $("report-link");
  first.hidden = !reports.length;
  reports.forEach((r, i) => {
    const a = i ? el("a", { target: "_blank", rel: "noopener", class: "report-link" }) : first;
    a.href = r.href;
    a.title = r.name;
    a.textContent = reports.length > 1 ? `bench report ${i + 1}` : "bench report";
    if (i) first.parentNode.insertBefore(a, $("copy"));
  });
}

// --- start -------------------------------------------------------------------------------------

async function main() {
  mark("start");
  const q = new URLSearchParams(location.search);
  const ask = new URLSearchParams();
  for (const k of ["surface", "start", "steps", "optimizers"]) if (q.has(k)) ask.set(k, q.get(k));
  // Asked at once, side by side: the map needs no optimizer, so it shows while the server
  // checks the state (whose first optimizer makes torch.optim import torch._dynamo: seconds).
  const asked = getJSON(`/api/state?${ask}`).then((s) => ({ s }), (err) => ({ err }));
  const map = getJSON(`/api/contours?surface=${encodeURIComponent(q.get("surface") || "beale")}`).catch(() => null);
  const [opts, surfs, links] = await Promise.all([
    getJSON("/api/optimizers"), getJSON("/api/surfaces"), getJSON("/api/links"),
  ]);
  showReports(links.reports || []);
  app.palette = opts.palette;
  for (const o of opts.optimizers) app.catalog.set(o.name, o);
  app.surfaces = surfs.surfaces;
  setupHeader();
  setupPointer();
  setupPlayback();
  const early = await map;
  if (early) {
    const start = (q.get("start") || "").split(",").map((v) => Number(v));
    app.start = start.length === 2 && start.every((v) => isFinite(v)) ? start : early.surface.start.slice();
    await loadSurface(early.surface.name, true, early);
  }
  let { s: state, err } = await asked;
  if (!state) {
    showError(`this link does not give a valid picture: ${err.message}`);
    state = await getJSON("/api/state");
  }
  app.steps = state.steps;
  app.t = state.steps;
  $("steps").value = String(state.steps);
  app.start = state.start;
  if (!early || state.surface.name !== app.surfaceText) await loadSurface(state.surface.name, true);
  else drawStart();
  for (const o of state.optimizers) addRun(o.name, o.hparams);
  refresh();
}

main().catch((err) => showError(`the page could not start: ${err.message}`));
