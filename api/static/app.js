// otrt dashboard: a single page over the HTTP API, no build step, no network but the API.
// Routes: #/ (jobs), #/jobs/ID (one job, live), #/new (submit form), #/sweeps (sweeps),
// #/sweeps/ID (one sweep: its trials, the metric against each value, the best trial).

const view = document.getElementById("view");
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
let stopPage = () => {};

// --- the API, with the key kept in this tab's session -------------------------------------

function headers(extra = {}) {
  const key = sessionStorage.getItem("otrt-key");
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

// One prompt at a time: requests refused together wait for the same answer, and a
// request refused with a key older than the one now stored just retries with it.
let keyPrompt = null;
function askForKey(refusedKey) {
  const current = sessionStorage.getItem("otrt-key");
  if (current && current !== refusedKey) return Promise.resolve();
  keyPrompt ??= (async () => {
    const dialog = document.getElementById("key-dialog");
    dialog.showModal();
    await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
    sessionStorage.setItem("otrt-key", document.getElementById("key-input").value.trim());
  })().finally(() => { keyPrompt = null; });
  return keyPrompt;
}

async function api(path, options = {}) {
  for (;;) {
    const key = sessionStorage.getItem("otrt-key");
    const response = await fetch(path, { ...options, headers: headers(options.headers) });
    if (response.status === 401) { await askForKey(key); continue; }
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ detail: response.statusText }));
      throw Object.assign(new Error(problem.detail || response.statusText), { problem, status: response.status });
    }
    return response;
  }
}
const getJSON = async (path) => (await api(path)).json();

// Server-sent events through fetch (EventSource cannot send the Authorization header).
async function followEvents(jobId, onEvent, signal) {
  let last = 0;
  while (!signal.aborted) {
    try {
      const response = await api(`/v1/jobs/${jobId}/events`, {
        headers: { Accept: "text/event-stream", "Last-Event-ID": String(last) }, signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;  // the server ends the stream when the job has ended
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          const data = frame.split("\n").find((line) => line.startsWith("data: "));
          if (data) { const event = JSON.parse(data.slice(6)); last = event.id; onEvent(event); }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      await new Promise((r) => setTimeout(r, 1000));  // reconnect, resuming after `last`
    }
  }
}

// Children left out with null or undefined (a conditional part) are skipped, never printed.
const present = (children) => children.filter((c) => c !== null && c !== undefined);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  node.append(...present(children));
  return node;
};
// Every page and card is (re)built through fill: replaceChildren would print "null".
const fill = (node, ...children) => node.replaceChildren(...present(children));
const fmtEta = (s) => (s == null ? "" : s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);
const statusBadge = (status) => el("span", { class: `status ${status}`, "data-status": status }, status);
const progressBar = (fraction) => el("span", { class: "bar" }, el("span", { style: `width:${Math.round(100 * fraction)}%` }));

// --- jobs list ---------------------------------------------------------------------------

async function jobsPage() {
  const filter = el("select", { id: "status-filter" },
    ...["", "queued", "running", "cancelling", "succeeded", "failed", "cancelled"].map((s) => el("option", { value: s }, s || "all statuses")));
  const body = el("tbody");
  fill(view, el("h2", {}, "Jobs"), filter,
    el("table", { id: "jobs" }, el("thead", {}, el("tr", {}, ...["job", "status", "mode", "student", "progress", "ETA", "created"].map((h) => el("th", {}, h)))), body));
  const refresh = async () => {
    const query = filter.value ? `?status=${filter.value}&limit=100` : "?limit=100";
    const page = await getJSON(`/v1/jobs${query}`);
    fill(body, ...page.data.map((job) => el("tr", { "data-job": job.id },
      el("td", {}, el("a", { href: `#/jobs/${job.id}` }, job.id)), el("td", {}, statusBadge(job.status)),
      el("td", {}, job.spec.mode), el("td", {}, job.spec.student.architecture),
      el("td", {}, progressBar(job.progress.fraction)), el("td", {}, fmtEta(job.eta_seconds)),
      el("td", {}, job.created_at.slice(0, 19).replace("T", " ")))));
  };
  filter.addEventListener("change", refresh);
  await refresh();
  const timer = setInterval(refresh, 2000);
  return () => clearInterval(timer);
}

// --- charts ------------------------------------------------------------------------------

const COLORS = ["#2f6fed", "#e8590c", "#0ca678", "#ae3ec9"];

function lineChart(canvas, series, records) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d"); g.scale(ratio, ratio); g.clearRect(0, 0, width, height);
  const points = series.map((key) => records.filter((r) => r[key] != null).map((r) => [r.epoch, r[key]]));
  const all = points.flat();
  canvas.dataset.points = String(all.length);
  if (!all.length) return;
  const [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  const [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  const pad = 34, sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (width - pad - 8);
  const sy = (y) => height - pad + 8 - ((y - y0) / (y1 - y0 || 1)) * (height - pad - 8);
  g.strokeStyle = "#d0d5dd"; g.fillStyle = "#667085"; g.font = "11px system-ui";
  g.beginPath(); g.moveTo(pad, 8); g.lineTo(pad, height - pad + 8); g.lineTo(width - 8, height - pad + 8); g.stroke();
  g.fillText(y1.toPrecision(3), 2, 14); g.fillText(y0.toPrecision(3), 2, height - pad + 8);
  g.fillText(`epoch ${x0}`, pad, height - 8); g.fillText(`${x1}`, width - 24, height - 8);
  points.forEach((line, i) => {
    g.strokeStyle = COLORS[i]; g.lineWidth = 2; g.beginPath();
    line.forEach(([x, y], j) => (j ? g.lineTo(sx(x), sy(y)) : g.moveTo(sx(x), sy(y))));
    g.stroke();
  });
}

// A .npy file (little-endian float32/float64, C order, 2-D) as rows of numbers.
function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const major = bytes[6];
  const headerLength = major === 1 ? bytes[8] | (bytes[9] << 8) : new DataView(buffer).getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + headerLength));
  const descr = header.match(/'descr':\s*'([^']+)'/)[1];
  const shape = header.match(/'shape':\s*\((\d+),\s*(\d+)\)/).slice(1).map(Number);
  if (/True/.test(header.match(/'fortran_order':\s*(\w+)/)[1])) throw new Error("Fortran-ordered plan");
  const offset = start + headerLength;
  const values = descr === "<f4" ? new Float32Array(buffer.slice(offset)) : new Float64Array(buffer.slice(offset));
  return { rows: shape[0], cols: shape[1], values };
}

function heatmap(canvas, plan) {
  const cell = Math.max(1, Math.floor(480 / Math.max(plan.rows, plan.cols)));
  canvas.width = plan.cols * cell; canvas.height = plan.rows * cell;
  canvas.style.width = `${canvas.width}px`;
  canvas.dataset.rows = String(plan.rows); canvas.dataset.cols = String(plan.cols);
  const g = canvas.getContext("2d");
  const max = plan.values.reduce((a, b) => Math.max(a, b), 0) || 1;
  for (let i = 0; i < plan.rows; i++) {
    for (let j = 0; j < plan.cols; j++) {
      const v = plan.values[i * plan.cols + j] / max;
      g.fillStyle = `rgb(${255 - Math.round(208 * v)}, ${255 - Math.round(144 * v)}, ${255 - Math.round(18 * v)})`;
      g.fillRect(j * cell, i * cell, cell, cell);
    }
  }
}

// --- one job -----------------------------------------------------------------------------

async function jobPage(jobId) {
  const controller = new AbortController();
  const header = el("div", { id: "job-header" });
  const charts = { loss: el("canvas", { id: "chart-loss" }), accuracy: el("canvas", { id: "chart-accuracy" }), ot: el("canvas", { id: "chart-ot" }) };
  const log = el("div", { id: "log" });
  const artifacts = el("ul", { id: "artifacts" });
  const planCanvas = el("canvas", { id: "plan", class: "plan" });
  const planCard = el("div", { class: "card", id: "plan-card", hidden: "" }, el("h3", {}, "Transport plan (teacher neurons × student neurons)"), planCanvas);
  const spec = el("pre", { id: "spec" });
  const reportCard = el("div", { class: "card", id: "report-card", hidden: "" });
  const card = (title, ...body) => el("div", { class: "card" }, el("h3", {}, title), ...body);
  const legend = (...names) => el("div", { class: "legend" }, ...names.map((n, i) => el("span", { style: `color:${COLORS[i]}` }, `— ${n}`)));
  fill(view, header,
    el("div", { class: "grid" },
      card("Loss", legend("train", "validation"), charts.loss),
      card("Accuracy", legend("train", "validation"), charts.accuracy),
      card("OT distance", charts.ot)),
    reportCard,
    el("div", { class: "grid" }, card("Events", log), card("Artifacts", artifacts), planCard),
    card("Resolved spec", spec));

  let records = [];
  const draw = () => {
    lineChart(charts.loss, ["train_loss", "val_loss"], records);
    lineChart(charts.accuracy, ["train_accuracy", "val_accuracy"], records);
    lineChart(charts.ot, ["ot_distance"], records);
  };
  const renderJob = (job) => {
    const cancel = TERMINAL.has(job.status) ? null : el("button", { class: "danger", id: "cancel", onclick: async () => { await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" }); refresh(); } }, "Cancel");
    const accuracy = job.metrics.test_accuracy == null ? "" : ` · test accuracy ${(100 * job.metrics.test_accuracy).toFixed(1)}%`;
    fill(header, ...[el("h2", {}, `${jobId} `, statusBadge(job.status)),
      el("p", {}, `${job.spec.mode}: ${job.spec.teacher ? job.spec.teacher.architecture + " → " : ""}${job.spec.student.architecture} on ${job.spec.dataset.name} · epoch ${job.progress.epoch}/${job.progress.epochs ?? "?"} `,
        progressBar(job.progress.fraction), ` ${fmtEta(job.eta_seconds) && "ETA " + fmtEta(job.eta_seconds)}${accuracy}`),
      job.error ? el("p", { class: "error" }, `${job.error.code}: ${job.error.message}`) : null, cancel].filter(Boolean));
    spec.textContent = JSON.stringify(job.spec, null, 2);
  };
  const showArtifacts = async () => {
    const list = await getJSON(`/v1/jobs/${jobId}/artifacts`);
    fill(artifacts, ...list.map((a) => el("li", {}, el("a", { href: "#", "data-artifact": a.name, onclick: (e) => { e.preventDefault(); download(jobId, a.name); } }, a.name), ` ${(a.bytes / 1024).toFixed(1)} KiB`)));
    if (list.some((a) => a.name === "plan.npy")) {
      heatmap(planCanvas, parseNpy(await (await api(`/v1/jobs/${jobId}/artifacts/plan.npy`)).arrayBuffer()));
      planCard.hidden = false;
    }
  };
  const showReport = async () => {
    const report = await getJSON(`/v1/jobs/${jobId}/report`);
    const pct = (v) => (v == null ? "—" : `${(100 * v).toFixed(1)}%`);
    const ms = (v) => `${v.toFixed(2)} ms`;
    const row = (name, c, accuracy) => el("tr", {}, el("td", {}, name), el("td", {}, c.params == null ? "—" : c.params.toLocaleString()),
      el("td", {}, c.macs == null ? "—" : c.macs.toLocaleString()), el("td", {}, ms(c.latency_ms.b1)), el("td", {}, ms(c.latency_ms.b64)), el("td", {}, pct(accuracy)));
    fill(reportCard, el("h3", {}, "Report"),
      el("p", { id: "report-summary" }, `test accuracy ${pct(report.test_accuracy)} (95% interval ${pct(report.ci95[0])}–${pct(report.ci95[1])}) · ` +
        `calibration error ${pct(report.ece)}` + (report.teacher_agreement == null ? "" : ` · agreement with the teacher ${pct(report.teacher_agreement)}`)),
      el("table", {}, el("tr", {}, ...["", "parameters", "MACs / input", "batch 1", "batch 64", "accuracy"].map((h) => el("th", {}, h))),
        row("student", report.student, report.test_accuracy), report.teacher ? row("teacher", report.teacher, null) : null,
        row("student, int8", report.int8, report.int8.accuracy)),
      report.collapsed ? el("p", { class: "error", id: "report-collapsed" }, "The student collapsed: it is at chance. The job's warning event names each loss part's share and the likely fix.") : null,
      report.int8.warning ? el("p", { class: "error" }, report.int8.warning) : null,
      el("button", { id: "open-report", onclick: async () => {
        const page = await (await api(`/v1/jobs/${jobId}/artifacts/report.html`)).blob();
        window.open(URL.createObjectURL(new Blob([page], { type: "text/html" })), "_blank");
      } }, "Open the full report"));
    reportCard.hidden = false;
  };
  const refresh = async () => {
    const job = await getJSON(`/v1/jobs/${jobId}`);
    renderJob(job);
    if (TERMINAL.has(job.status)) await showArtifacts();
    if (job.status === "succeeded" && reportCard.hidden) await showReport();
    return job;
  };
  records = await getJSON(`/v1/jobs/${jobId}/metrics`);
  draw();
  await refresh();
  followEvents(jobId, async (event) => {
    const text = event.message.startsWith(event.type) ? event.message : `${event.type}: ${event.message}`;
    log.append(el("div", {}, `${event.at.slice(11, 19)} ${text}`));
    log.scrollTop = log.scrollHeight;
    if (event.type === "epoch") {
      records = records.filter((r) => r.epoch !== event.data.epoch).concat([event.data]);
      draw();
      await showArtifacts();  // the latest transport plan, rewritten every epoch
    }
    if (["started", "epoch", "done"].includes(event.type) || TERMINAL.has(event.type)) await refresh();
  }, controller.signal);
  window.addEventListener("resize", draw);
  return () => { controller.abort(); window.removeEventListener("resize", draw); };
}

async function download(jobId, name) {
  const blob = await (await api(`/v1/jobs/${jobId}/artifacts/${name}`)).blob();
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link); link.click(); link.remove();
}

// --- submit form -------------------------------------------------------------------------

async function newJobPage() {
  const [architectures, datasets, files, finished, registered] = await Promise.all([
    getJSON("/v1/architectures"), getJSON("/v1/datasets"), getJSON("/v1/files?limit=100"), getJSON("/v1/jobs?status=succeeded&limit=100"),
    getJSON("/v1/datasets/registered?limit=100")]);
  // Registered datasets a job can learn from: ready, with labels (a pool has none).
  const labeled = registered.data.filter((d) => d.status === "ready" && d.counts && d.counts.train);
  const options = (items) => items.map(([value, label]) => el("option", { value }, label));
  const field = (label, loc, input) => el("div", { "data-field": loc }, el("label", { for: input.id }, label), input, el("div", { class: "field-error", "data-error-for": loc }));
  const select = (id, items) => el("select", { id, name: id }, ...options(items));
  const input = (id, attrs) => el("input", { id, name: id, ...attrs });
  const archs = architectures.map((a) => [a.name, `${a.name} (${(a.parameters / 1e6).toFixed(2)} M)`]);
  const models = files.data.filter((f) => f.purpose === "teacher");
  const graphOf = (id) => models.find((f) => f.id === id && f.format === "onnx");
  const form = el("form", { class: "job card", id: "job-form" },
    field("Mode", "mode", select("mode", [["supervised", "supervised"], ["distill", "distill"], ["transfer", "transfer"], ["transfer_distill", "transfer + distill"]])),
    field("Teacher architecture", "teacher.architecture", select("teacher-architecture", archs)),
    field("Teacher checkpoint", "teacher.checkpoint", select("teacher-checkpoint", [["", "—"],
      ...finished.data.map((j) => [j.id, `job ${j.id} (${j.spec.student.architecture})`]),
      ...models.map((f) => [f.id, `file ${f.filename}${f.format === "onnx" ? " (ONNX graph)" : ""}`])])),
    field("Student architecture", "student.architecture", select("student-architecture", archs)),
    field("Dataset", "dataset.name", select("dataset", [...datasets.map((d) => [d.name, `${d.name} (${d.num_classes} classes)`]),
      ...labeled.map((d) => [d.id, `${d.name} (registered, ${d.classes.length} classes)`]),
      ...files.data.filter((f) => f.purpose === "dataset").map((f) => [f.id, `file ${f.filename}`])])),
    field("Classes (comma-separated, optional)", "dataset.classes", input("classes", { placeholder: "e.g. 5,6,7,8,9" })),
    field("Labeled examples per class (optional)", "dataset.train_subset", input("train-subset", { type: "number", min: "1" })),
    field("Regularizer", "regularizer.kind", select("kind", [["", "mode default"], ["ot", "ot"], ["kd", "kd"], ["fitnet", "fitnet"], ["at", "at"], ["wkd_f", "wkd_f"], ["l2sp", "l2sp"], ["none", "none"]])),
    field("Weight λ (optional)", "regularizer.weight", input("weight", { type: "number", step: "any" })),
    el("div", { "data-field": "regularizer.layers" }, el("label", {}, "Layer pairs (teacher → student; none: penultimate)"),
      el("div", { id: "pairs" }), el("button", { type: "button", id: "add-pair" }, "Add layer pair"),
      el("div", { class: "field-error", "data-error-for": "regularizer.layers" })),
    field("Epochs", "training.epochs", input("epochs", { type: "number", value: "20" })),
    field("Batch size", "training.batch_size", input("batch-size", { type: "number", value: "128" })),
    field("Learning rate", "training.lr", input("lr", { type: "number", step: "any", value: "0.05" })),
    el("p", { class: "error", id: "form-error" }), el("button", { type: "submit", id: "submit" }, "Submit job"));
  fill(view, el("h2", {}, "New job"), form);
  const value = (id) => form.querySelector(`#${id}`).value.trim();
  // A layer pair names a teacher layer and a student layer: a graph's tensors (with their
  // shapes, from the upload's details) or a zoo architecture's stages.
  const layersOf = (architecture, graph) => graph
    ? graph.details.layers.map((l) => [l.name, `${l.name} [${l.shape.join("×")}]`])
    : (architectures.find((a) => a.name === architecture)?.stages || ["penultimate"]).map((s) => [s, s]);
  const teacherLayers = () => layersOf(value("teacher-architecture"), graphOf(value("teacher-checkpoint")));
  // In transfer, an ONNX teacher's student is a copy of its graph.
  const studentLayers = () => (value("mode") === "transfer" && graphOf(value("teacher-checkpoint"))
    ? teacherLayers() : layersOf(value("student-architecture"), null));
  const refreshPairs = () => {
    form.querySelector("#teacher-architecture").disabled = Boolean(graphOf(value("teacher-checkpoint")));
    for (const row of form.querySelectorAll("#pairs .pair")) {
      for (const [selector, items] of [[".pair-teacher", teacherLayers()], [".pair-student", studentLayers()]]) {
        const node = row.querySelector(selector);
        const kept = node.value;
        fill(node, ...options(items));
        if (items.some(([name]) => name === kept)) node.value = kept;
      }
    }
  };
  form.querySelector("#add-pair").addEventListener("click", () => {
    const index = form.querySelectorAll("#pairs .pair").length;
    const row = el("div", { class: "pair" },
      el("select", { class: "pair-teacher", "aria-label": `teacher layer ${index + 1}` }), " → ",
      el("select", { class: "pair-student", "aria-label": `student layer ${index + 1}` }),
      el("button", { type: "button", class: "remove-pair" }, "Remove"));
    row.querySelector(".remove-pair").addEventListener("click", () => row.remove());
    form.querySelector("#pairs").append(row);
    refreshPairs();
  });
  for (const id of ["mode", "teacher-checkpoint", "teacher-architecture", "student-architecture"]) {
    form.querySelector(`#${id}`).addEventListener("change", refreshPairs);
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".field-error").forEach((node) => (node.textContent = ""));
    form.querySelector("#form-error").textContent = "";
    const body = { mode: value("mode"), student: { architecture: value("student-architecture") },
      dataset: { name: value("dataset") }, regularizer: {},
      training: { epochs: Number(value("epochs")), batch_size: Number(value("batch-size")), lr: Number(value("lr")) } };
    if (body.mode !== "supervised") {
      body.teacher = { checkpoint: value("teacher-checkpoint") };
      if (!graphOf(body.teacher.checkpoint)) body.teacher.architecture = value("teacher-architecture");
    }
    const pairs = [...form.querySelectorAll("#pairs .pair")].map((row) => (
      { teacher: row.querySelector(".pair-teacher").value, student: row.querySelector(".pair-student").value }));
    if (pairs.length) body.regularizer.layers = pairs;
    if (value("classes")) body.dataset.classes = value("classes").split(",").map((c) => Number(c.trim()));
    if (value("train-subset")) body.dataset.train_subset = Number(value("train-subset"));
    if (value("kind")) body.regularizer.kind = value("kind");
    if (value("weight")) body.regularizer.weight = Number(value("weight"));
    try {
      const job = await (await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      const unplaced = [];
      for (const problem of error.problem?.errors || []) {
        const loc = problem.loc.filter((part) => part !== "body").join(".");
        const slot = [...form.querySelectorAll("[data-error-for]")].find((node) => loc === node.dataset.errorFor || loc.startsWith(`${node.dataset.errorFor}.`));
        if (slot) slot.textContent = problem.msg; else unplaced.push(`${loc}: ${problem.msg}`);
      }
      form.querySelector("#form-error").textContent = unplaced.join("; ") || (error.problem?.errors?.length ? "" : error.message);
    }
  });
}

// --- sweeps ------------------------------------------------------------------------------

const pct = (v) => (v == null ? "" : `${(100 * v).toFixed(1)}%`);
const points = (g) => (g == null ? "" : `${g >= 0 ? "+" : ""}${(100 * g).toFixed(1)}`);

async function sweepsPage() {
  const body = el("tbody");
  fill(view, el("h2", {}, "Sweeps"),
    el("table", { id: "sweeps" }, el("thead", {}, el("tr", {}, ...["sweep", "status", "search", "points", "best", "created"].map((h) => el("th", {}, h)))), body));
  const refresh = async () => {
    const page = await getJSON("/v1/sweeps?limit=100");
    fill(body, ...page.data.map((sweep) => el("tr", { "data-sweep": sweep.id },
      el("td", {}, el("a", { href: `#/sweeps/${sweep.id}` }, sweep.id)), el("td", {}, statusBadge(sweep.status)),
      el("td", {}, sweep.search), el("td", {}, `${sweep.points.planned}/${sweep.points.total}`),
      el("td", {}, pct(sweep.best?.metric)), el("td", {}, sweep.created_at.slice(0, 19).replace("T", " ")))));
  };
  await refresh();
  const timer = setInterval(refresh, 2000);
  return () => clearInterval(timer);
}

// --- registered datasets -----------------------------------------------------------------

const imageCount = (ds) => (ds.counts ? Object.values(ds.counts).reduce((n, perClass) => n + Object.values(perClass).reduce((a, b) => a + b, 0), 0) : null);

async function datasetsPage() {
  const body = el("tbody");
  fill(view, el("h2", {}, "Datasets"),
    el("table", { id: "datasets" }, el("thead", {}, el("tr", {}, ...["dataset", "name", "status", "images", "classes", "unreadable", "created"].map((h) => el("th", {}, h)))), body));
  const refresh = async () => {
    const page = await getJSON("/v1/datasets/registered?limit=100");
    fill(body, ...page.data.map((ds) => el("tr", { "data-dataset": ds.id },
      el("td", {}, el("a", { href: `#/datasets/${ds.id}` }, ds.id)), el("td", {}, ds.name), el("td", {}, statusBadge(ds.status)),
      el("td", {}, `${imageCount(ds) ?? ""}`), el("td", {}, `${(ds.classes || []).length}`),
      el("td", {}, `${ds.unreadable?.count ?? ""}`), el("td", {}, ds.created_at.slice(0, 19).replace("T", " ")))));
  };
  await refresh();
  const timer = setInterval(refresh, 2000);
  return () => clearInterval(timer);
}

async function datasetPage(datasetId) {
  const refresh = async () => {
    const ds = await getJSON(`/v1/datasets/${datasetId}`);
    const counts = el("tbody", { id: "counts" }, ...Object.entries(ds.counts || {}).flatMap(([split, perClass]) =>
      Object.entries(perClass).map(([name, n]) => el("tr", {}, el("td", {}, split), el("td", {}, name), el("td", {}, `${n}`)))));
    const unreadable = el("ul", { id: "unreadable" }, ...(ds.unreadable?.files || []).map((f) => el("li", {}, `${f.name}: ${f.reason}`)));
    const images = ds.images ? `${ds.images.min.join("x")} to ${ds.images.max.join("x")}, median ${ds.images.median.join("x")}; ${ds.images.modes.join(", ")}` : "";
    fill(view, el("h2", {}, `${ds.name} `, statusBadge(ds.status)),
      el("p", {}, `${ds.id} from ${ds.source} (${ds.format})`),
      ds.error ? el("p", { class: "error" }, `${ds.error.code}: ${ds.error.message}`) : null,
      ds.status === "ready" ? null : el("p", {}, "Progress ", progressBar(ds.progress.fraction || 0)),
      images ? el("p", { id: "images" }, `Images: ${images}`) : null,
      el("table", {}, el("thead", {}, el("tr", {}, ...["split", "class", "images"].map((h) => el("th", {}, h)))), counts),
      el("h3", {}, `Unreadable files: ${ds.unreadable?.count ?? 0}`), unreadable);
    return ds;
  };
  const ds = await refresh();
  if (ds.status === "ready" || ds.status === "failed") return () => {};
  const timer = setInterval(async () => { const now = await refresh(); if (now.status === "ready" || now.status === "failed") clearInterval(timer); }, 1000);
  return () => clearInterval(timer);
}

// The metric of each finished trial against one field's value: numbers on a linear or log
// axis, other values (choices) as evenly spaced labels.
function scatter(canvas, trials, field) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d"); g.scale(ratio, ratio); g.clearRect(0, 0, width, height);
  const done = trials.filter((t) => t.metric != null && field in t.params);
  canvas.dataset.points = String(done.length);
  if (!done.length) return;
  const values = done.map((t) => t.params[field]);
  const numeric = values.every((v) => typeof v === "number");
  const labels = numeric ? [] : [...new Set(values.map((v) => JSON.stringify(v)))];
  const log = numeric && values.every((v) => v > 0) && Math.max(...values) / Math.min(...values) > 20;
  const xOf = (v) => (numeric ? (log ? Math.log10(v) : v) : labels.indexOf(JSON.stringify(v)));
  const xs = values.map(xOf), ys = done.map((t) => t.metric);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const pad = 34, sx = (x) => pad + 10 + ((x - x0) / (x1 - x0 || 1)) * (width - pad - 28);
  const sy = (y) => height - pad + 8 - ((y - y0) / (y1 - y0 || 1)) * (height - pad - 16);
  g.strokeStyle = "#d0d5dd"; g.fillStyle = "#667085"; g.font = "11px system-ui";
  g.beginPath(); g.moveTo(pad, 8); g.lineTo(pad, height - pad + 8); g.lineTo(width - 8, height - pad + 8); g.stroke();
  g.fillText(pct(y1), 2, 14); g.fillText(pct(y0), 2, height - pad + 8);
  if (numeric) {
    const show = (x) => (log ? 10 ** x : x).toPrecision(2);
    g.fillText(show(x0), pad, height - 8); g.fillText(show(x1), width - 40, height - 8);
  } else {
    labels.forEach((label, i) => {
      const text = label.slice(0, 18);
      g.fillText(text, Math.min(sx(i) - 10, width - g.measureText(text).width - 4), height - 8);
    });
  }
  done.forEach((t, i) => {
    g.fillStyle = t.status === "succeeded" ? COLORS[0] : COLORS[1];
    g.beginPath(); g.arc(sx(xs[i]), sy(ys[i]), 4, 0, 2 * Math.PI); g.fill();
  });
}

async function sweepPage(sweepId) {
  const summary = el("div", { class: "card", id: "sweep-summary" });
  const body = el("tbody");
  const charts = el("div", { class: "grid", id: "sweep-charts" });
  const cancel = el("button", { class: "danger", id: "cancel-sweep", onclick: async () => {
    cancel.disabled = true; await api(`/v1/sweeps/${sweepId}/cancel`, { method: "POST" }); } }, "Cancel sweep");
  fill(view, el("h2", {}, `Sweep ${sweepId}`), cancel, summary, charts,
    el("h3", {}, "Trials"),
    el("table", { id: "trials" }, el("thead", {}, el("tr", {}, ...["job", "role", "point", "seed", "values", "status", "metric", "test"].map((h) => el("th", {}, h)))), body));
  let timer = null;
  const refresh = async () => {
    const sweep = await getJSON(`/v1/sweeps/${sweepId}`);
    const best = sweep.best;
    fill(summary, 
      el("p", {}, statusBadge(sweep.status), ` ${sweep.search} search, ${sweep.points.planned}/${sweep.points.total} points, up to ${sweep.parallel} jobs at once`),
      best ? el("p", { id: "best" }, "Best: point ", String(best.point), ` at ${pct(best.metric)} `,
        el("a", { href: `#/jobs/${best.job_id}` }, best.job_id), ` (${Object.entries(best.params).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ")})`) : el("p", {}, "No finished point yet."),
      ...Object.entries(sweep.compare).map(([kind, gain]) => el("p", { "data-compare": kind },
        `Over ${kind}: ${points(gain.gain)} points`, gain.ci95 ? ` (95% interval ${points(gain.ci95[0])} to ${points(gain.ci95[1])}, ${gain.seeds} seeds)` : "")));
    fill(body, ...sweep.trials.map((t) => el("tr", { "data-trial": t.job_id || "" },
      el("td", {}, t.job_id ? el("a", { href: `#/jobs/${t.job_id}` }, t.job_id) : ""), el("td", {}, t.role),
      el("td", {}, t.point ?? ""), el("td", {}, String(t.seed)),
      el("td", {}, Object.entries(t.params).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ")),
      el("td", {}, statusBadge(t.status)), el("td", {}, pct(t.metric)), el("td", {}, pct(t.test_accuracy)))));
    const fields = [...new Set(sweep.trials.flatMap((t) => Object.keys(t.params)))];
    if (charts.children.length !== fields.length) {
      fill(charts, ...fields.map((field) => el("div", { class: "card" }, el("h3", {}, `${sweep.metric} against ${field}`), el("canvas", { "data-field": field }))));
    }
    for (const canvas of charts.querySelectorAll("canvas")) scatter(canvas, sweep.trials, canvas.dataset.field);
    cancel.hidden = TERMINAL.has(sweep.status);
    if (TERMINAL.has(sweep.status) && timer) { clearInterval(timer); timer = null; }
  };
  await refresh();
  timer = setInterval(refresh, 2000);
  return () => timer && clearInterval(timer);
}

// --- routing -----------------------------------------------------------------------------

async function route() {
  stopPage();
  stopPage = () => {};
  const [, page, id] = location.hash.split("/");
  try {
    const pages = { jobs: id && (() => jobPage(id)), new: newJobPage, sweeps: () => (id ? sweepPage(id) : sweepsPage()),
      datasets: () => (id ? datasetPage(id) : datasetsPage()) };
    stopPage = (await (pages[page] || jobsPage)()) || (() => {});
  } catch (error) {
    fill(view, el("p", { class: "error" }, `Error: ${error.message}`));
  }
}

window.addEventListener("hashchange", route);
document.getElementById("key-form").addEventListener("submit", () => {});
route();
