// The alluxiojob web page. Everything shown comes from the coordinator's REST API,
// called with the cluster token the user typed (kept in this tab's sessionStorage).
// The page is built with DOM calls and text nodes only: no HTML is ever made from data.
"use strict";

const TOKEN_KEY = "alluxiojob.token";
const STATES = ["WAITING", "RUNNING", "VERIFYING", "SUCCEEDED", "FAILED", "STOPPED"];
const ACTIVE = new Set(["WAITING", "RUNNING", "VERIFYING"]);
const REFRESH_MS = 1000;
const WORKERS_EVERY = 3; // refreshes between two worker reports
const FAILURES_SHOWN = 200;

const view = { state: "", selected: null, store: "", rows: new Map(), ticks: 0,
               timer: null, lastError: "" };

// ------------------------------------------------------------------ helpers
function $(selector) { return document.querySelector(selector); }

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
function size(bytes) {
  let value = Number(bytes) || 0;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit += 1; }
  return (unit === 0 ? value.toFixed(0) : value.toFixed(value < 10 ? 2 : 1)) + " " + UNITS[unit];
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  let s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function ago(timestamp) {
  if (!timestamp) return "–";
  const seconds = Date.now() / 1000 - timestamp;
  if (seconds < 90) return `${Math.max(0, Math.round(seconds))}s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m ago`;
  return new Date(timestamp * 1000).toLocaleString();
}

function when(timestamp) {
  return timestamp ? new Date(timestamp * 1000).toLocaleString() : "–";
}

function target(job) { return job.path + (job.dst ? " → " + job.dst : ""); }

// ------------------------------------------------------------------ API
class ApiError extends Error {
  constructor(code, message, status) { super(message); this.code = code; this.status = status; }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError("UNAVAILABLE", "cannot reach the coordinator: " + err.message, 0);
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    const code = (data && data.error) || "HTTP_" + response.status;
    const message = (data && data.message) || response.statusText || "request failed";
    if (response.status === 401 || response.status === 403) showTokenPanel(true);
    throw new ApiError(code, message, response.status);
  }
  return data;
}

// ------------------------------------------------------------------ messages and token
function say(text, isError) {
  const box = $("#message");
  box.hidden = false;
  box.className = isError ? "error" : "";
  setText(box, text);
}

function showTokenPanel(needed) {
  $("#token-panel").hidden = false;
  if (needed) {
    say("The coordinator wants the cluster token (alluxio.job.cluster.token): enter it above.",
        true);
  }
}

function updateTokenButton() {
  setText($("#token-button"), sessionStorage.getItem(TOKEN_KEY) ? "Token: set" : "Token");
}

// ------------------------------------------------------------------ jobs
function stateBadge(state) { return el("span", { className: "state " + state }, state); }

function progressBar() {
  return el("div", { className: "bar" }, el("div", { className: "fill" }),
            el("div", { className: "label" }));
}

function fillBar(bar, done, total, known, failed, active) {
  const fill = bar.querySelector(".fill");
  const label = bar.querySelector(".label");
  if (known && total > 0) {
    const ratio = Math.min(1, done / total);
    bar.classList.remove("unknown");
    fill.style.width = (ratio * 100).toFixed(1) + "%";
    setText(label, (ratio * 100).toFixed(ratio < 1 ? 1 : 0) + "%");
  } else if (known) {
    bar.classList.remove("unknown");
    fill.style.width = "100%";
    setText(label, "empty");
  } else if (active) {
    bar.classList.add("unknown");
    fill.style.width = "100%";
    setText(label, "listing…");
  } else {
    bar.classList.remove("unknown");
    fill.style.width = "0";
    setText(label, "–");
  }
  fill.classList.toggle("failed", Boolean(failed));
}

function jobRow(id) {
  const cells = {
    state: el("td"), type: el("td"), path: el("td", { className: "path" }),
    progress: el("td", { className: "progress-col" }), files: el("td"), bytes: el("td"),
    rate: el("td"), eta: el("td"), updated: el("td"), actions: el("td", { className: "actions" }),
  };
  const bar = progressBar();
  cells.progress.append(bar);
  const stop = el("button", { type: "button", className: "stop danger" }, "Stop");
  const rerun = el("button", { type: "button", className: "rerun" }, "Rerun");
  cells.actions.append(stop, rerun);
  const tr = el("tr", { dataset: { jobId: id } }, ...Object.values(cells));
  const row = { tr, cells, bar, stop, rerun, summary: null };
  tr.addEventListener("click", (event) => {
    if (event.target.closest("button")) return;
    select(id);
  });
  stop.addEventListener("click", () => stopJob(row.summary.job));
  rerun.addEventListener("click", () => rerunJob(row.summary.job));
  return row;
}

function updateRow(row, summary) {
  row.summary = summary;
  const { job, files, bytes } = summary;
  const c = row.cells;
  if (c.state.dataset.state !== job.state) {
    c.state.replaceChildren(stateBadge(job.state));
    c.state.dataset.state = job.state;
  }
  setText(c.type, job.type);
  setText(c.path, target(job));
  c.path.title = job.error || "";
  const done = bytes.processed + bytes.skipped;
  const byFiles = bytes.listed === 0;
  fillBar(row.bar, byFiles ? files.done : done, byFiles ? files.listed : bytes.listed,
          summary.total_known || job.state === "SUCCEEDED" || job.state === "FAILED",
          files.failed, ACTIVE.has(job.state));
  setText(c.files, `${files.done} / ${files.listed}` + (files.failed ? ` (${files.failed} failed)` : ""));
  setText(c.bytes, `${size(done)} / ${size(bytes.listed)}`);
  setText(c.rate, ACTIVE.has(job.state) ? size(summary.throughput_recent) + "/s"
                                        : size(summary.throughput_avg) + "/s avg");
  setText(c.eta, ACTIVE.has(job.state) ? duration(summary.eta_seconds) : "–");
  setText(c.updated, ago(job.updated_at));
  row.stop.hidden = !ACTIVE.has(job.state);
  row.rerun.hidden = ACTIVE.has(job.state);
  row.tr.classList.toggle("selected", view.selected === job.id);
}

function renderFilters(counts) {
  const box = $("#state-filters");
  const wanted = [["", "All"], ...STATES.map((s) => [s, s])];
  if (!box.children.length) {
    for (const [state, label] of wanted) {
      const button = el("button", { type: "button", dataset: { state } }, label);
      button.addEventListener("click", () => { view.state = state; refresh(true); });
      box.append(button);
    }
  }
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  for (const button of box.children) {
    const state = button.dataset.state;
    const count = state ? counts[state] || 0 : total;
    setText(button, `${state || "All"} (${count})`);
    button.setAttribute("aria-pressed", String(state === view.state));
  }
}

async function refreshJobs() {
  const query = view.state ? "?state=" + encodeURIComponent(view.state) : "";
  const overview = await api("GET", "/api/v1/master/jobs_overview" + query);
  view.store = overview.store;
  setText($("#cluster"), `coordinator ${overview.coordinator} · ${overview.store} job store`);
  renderFilters(overview.counts);
  const tbody = $("#jobs tbody");
  const seen = new Set();
  for (const summary of overview.jobs) {
    const id = summary.job.id;
    seen.add(id);
    let row = view.rows.get(id);
    if (!row) { row = jobRow(id); view.rows.set(id, row); }
    updateRow(row, summary);
    tbody.append(row.tr); // appending an attached row moves it: keeps the order
  }
  for (const [id, row] of view.rows) {
    if (!seen.has(id)) { row.tr.remove(); view.rows.delete(id); }
  }
  $("#jobs-empty").hidden = overview.jobs.length > 0;
}

async function stopJob(job) {
  try {
    await api("POST", `/api/v1/master/stop_job/${job.type.toLowerCase()}`, { id: job.id });
    say(`Stopping ${job.type} job ${job.id} (${target(job)}).`);
  } catch (err) {
    say(`Cannot stop job ${job.id}: ${err.message}`, true);
  }
  refresh(true);
}

async function rerunJob(job) {
  try {
    if (view.store === "ETCD") {
      const answer = await api("POST", "/api/v1/master/rerun_job", { id: job.id });
      say(`Re-queued ${job.type} job ${answer.id} (${target(job)}).`);
    } else {
      // One coordinator (RocksDB): a rerun is the same submission again. It resumes a
      // STOPPED job and starts a new one after SUCCEEDED or FAILED.
      // A job's options carry where its files came from (a manifest, a template), which
      // a submission names as its own field rather than as an option.
      const options = Object.assign({}, job.options);
      delete options.source;
      const body = { options };
      if (job.options.source === "index") body.indexFile = job.path;
      else if (job.options.source === "template") body.template = job.path;
      else body.path = job.path;
      if (job.dst) body.dst = job.dst;
      const answer = await api("POST", `/api/v1/master/submit_job/${job.type.toLowerCase()}`,
                               body);
      say(`${outcomeText(answer)} (rerun of ${job.id}).`);
      view.selected = answer.id;
    }
  } catch (err) {
    say(`Cannot rerun job ${job.id}: ${err.message}`, true);
  }
  refresh(true);
}

function outcomeText(answer) {
  const job = answer.job;
  const what = `${job.type} job ${job.id} for ${target(job)}`;
  if (answer.outcome === "ALREADY_RUNNING") return `Job ${job.id} for ${target(job)} is already ${job.state}`;
  if (answer.outcome === "RESUMED") return `Resumed stopped ${what}`;
  return `Submitted ${what}`;
}

// ------------------------------------------------------------------ one job
function select(id) {
  view.selected = id;
  for (const row of view.rows.values()) row.tr.classList.toggle("selected", row.summary.job.id === id);
  $("#detail").hidden = false;
  refreshDetail();
}

function kvRows(tbody, pairs) {
  tbody.replaceChildren(...pairs.map(([key, value]) =>
    el("tr", {}, el("th", {}, key), el("td", { dataset: { key } }, value))));
}

async function refreshDetail() {
  const id = view.selected;
  if (!id) return;
  let report;
  try {
    report = await api("GET", `/api/v1/master/job/${encodeURIComponent(id)}/progress` +
                              "?file_status=FAILURE");
  } catch (err) {
    if (err.status === 404 && view.selected === id) { // removed after its retention time
      view.selected = null;
      $("#detail").hidden = true;
    }
    throw err;
  }
  if (view.selected !== id) return;
  const { job, files, bytes } = report;
  setText($("#detail-id"), job.id);
  kvRows($("#detail-summary tbody"), [
    ["State", job.state + (job.error ? ` — ${job.error}` : "")],
    ["Type", job.type],
    ["Path", target(job)],
    ["Files", `${files.done} done of ${files.listed}${report.total_known ? "" : " listed so far"}: ` +
              `${files.processed} processed, ${files.skipped} skipped, ${files.failed} failed`],
    ["Bytes", `${size(bytes.processed)} processed, ${size(bytes.skipped)} skipped, of ${size(bytes.listed)}`],
    ["Throughput", `${size(report.throughput_recent)}/s recent, ${size(report.throughput_avg)}/s average`],
    ["ETA", ACTIVE.has(job.state) ? duration(report.eta_seconds) : "–"],
    ["Time elapsed", duration(report.elapsed_seconds)],
    ["Failure rate", (report.file_failure_ratio * 100).toFixed(2) + "%"],
    ["Verify passes", `${report.verify_passes} (files repaired: ${report.files_repaired})`],
    ["Workers", (report.workers || []).join(", ") || "–"],
  ]);
  const o = job.options;
  kvRows($("#detail-settings tbody"), [
    ["Batch size", o.batch_size || "default"],
    ["Replicas", o.replicas],
    ["Bandwidth", o.bandwidth ? size(o.bandwidth) + "/s per worker" : "unlimited"],
    ["Verify", String(o.verify)],
    ["Skip if exists", String(o.skip_if_exists)],
    ["Overwrite", String(o.overwrite)],
    ["Owner", job.owner || "–"],
    ["Submitted", when(job.created_at)],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
  ]);
  const shards = report.shards || [];
  $("#detail-shards tbody").replaceChildren(...shards.map((s) =>
    el("tr", {}, el("td", {}, String(s.index)), el("td", {}, s.state), el("td", {}, s.owner || "–"),
       el("td", {}, `${s.files_processed} / ${s.files_listed}`), el("td", {}, String(s.files_failed)))));
  $("#detail-shards-section").hidden = shards.length === 0;
  const failures = report.failures || [];
  const tbody = $("#detail-failures tbody");
  const rows = failures.slice(0, FAILURES_SHOWN).map((f) =>
    el("tr", {}, el("td", {}, f.path), el("td", {}, f.reason), el("td", {}, f.message)));
  if (failures.length > FAILURES_SHOWN) {
    rows.push(el("tr", {}, el("td", { colSpan: 3, className: "muted" },
      `… and ${failures.length - FAILURES_SHOWN} more (alluxiojob job ${job.type.toLowerCase()} ` +
      "--progress --file-status FAILURE)")));
  }
  tbody.replaceChildren(...rows);
  $("#detail-failures").hidden = failures.length === 0;
  $("#detail-no-failures").hidden = failures.length > 0;
}

// ------------------------------------------------------------------ workers
async function refreshWorkers() {
  const report = await api("GET", "/api/v1/master/report");
  const rows = report.workers.map((w) => {
    if (w.error) {
      return el("tr", { dataset: { worker: w.worker } }, el("td", {}, w.worker),
                el("td", { className: "disconnected" }, "unreachable"),
                el("td", { colSpan: 6, className: "muted" }, w.error));
    }
    const bar = progressBar();
    if (w.cache_capacity) {
      fillBar(bar, w.cache_used, w.cache_capacity, true, false, false);
      setText(bar.querySelector(".label"), `${size(w.cache_used)} of ${size(w.cache_capacity)}`);
    } else {
      bar.querySelector(".fill").style.width = "0";
      setText(bar.querySelector(".label"), `${size(w.cache_used)} (no limit)`);
    }
    return el("tr", { dataset: { worker: w.worker } },
      el("td", {}, w.worker),
      el("td", { className: w.connected ? "connected" : "disconnected" },
         w.connected ? "connected" : "disconnected"),
      el("td", {}, `${w.unfinished_tasks} / ${w.active_tasks}`),
      el("td", {}, w.pool_size),
      el("td", {}, w.load_avg.map((x) => x.toFixed(2)).join(", ")),
      el("td", { className: "progress-col" }, bar),
      el("td", { className: "s3-reads" },
         `${w.s3_requests ?? 0} requests, ${size(w.s3_bytes_served ?? 0)}`),
      el("td", {}, w.cached_files));
  });
  $("#workers tbody").replaceChildren(...rows);
}

// ------------------------------------------------------------------ submit
function submitBody() {
  const type = $("#submit-type").value;
  const body = { path: $("#submit-path").value.trim(), options: {} };
  if (type === "COPY" || type === "MOVE") body.dst = $("#submit-dst").value.trim();
  const o = body.options;
  // Values travel as typed; the API reads "10" as 10 and "100MiB" as bytes.
  const batch = $("#submit-batch-size").value.trim();
  if (batch) o.batch_size = batch;
  const replicas = $("#submit-replicas").value.trim();
  if (replicas && type === "LOAD") o.replicas = replicas;
  const bandwidth = $("#submit-bandwidth").value.trim();
  if (bandwidth && type === "LOAD") o.bandwidth = bandwidth;
  if (type === "LOAD") {
    o.verify = $("#submit-verify").checked;
    o.skip_if_exists = $("#submit-skip").checked;
  }
  if (type === "COPY" || type === "MOVE") o.overwrite = $("#submit-overwrite").checked;
  return [type, body];
}

async function submitJob(event) {
  event.preventDefault();
  const [type, body] = submitBody();
  if (!body.path) { say("Give a path to submit a job.", true); return; }
  try {
    const answer = await api("POST", `/api/v1/master/submit_job/${type.toLowerCase()}`, body);
    say(outcomeText(answer) + ".");
    view.state = "";
    view.selected = answer.id;
    $("#detail").hidden = false;
  } catch (err) {
    say(`Cannot submit the ${type} job: ${err.message}`, true);
  }
  refresh(true);
}

// ------------------------------------------------------------------ refresh loop
async function refresh(now) {
  if (view.timer !== null) { clearTimeout(view.timer); view.timer = null; }
  if (!document.hidden || now) {
    const work = [refreshJobs()];
    if (view.selected) work.push(refreshDetail());
    if (now || view.ticks % WORKERS_EVERY === 0) work.push(refreshWorkers());
    view.ticks += 1;
    const results = await Promise.allSettled(work);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      const text = failed.reason.message;
      if (text !== view.lastError) say(text, true);
      view.lastError = text;
    } else {
      if (view.lastError) $("#message").hidden = true;
      view.lastError = "";
      setText($("#refreshed"), "updated " + new Date().toLocaleTimeString());
    }
  }
  view.timer = setTimeout(() => refresh(false), REFRESH_MS);
}

function start() {
  $("#token-button").addEventListener("click", () => {
    const panel = $("#token-panel");
    panel.hidden = !panel.hidden;
  });
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token-input").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("#token-input").value = "";
    $("#token-panel").hidden = true;
    $("#message").hidden = true;
    view.lastError = "";
    updateTokenButton();
    refresh(true);
  });
  $("#token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    updateTokenButton();
    refresh(true);
  });
  $("#submit-type").addEventListener("change", () => {
    const type = $("#submit-type").value;
    $("#submit-dst-label").hidden = !(type === "COPY" || type === "MOVE");
  });
  $("#submit-form").addEventListener("submit", submitJob);
  $("#detail-close").addEventListener("click", () => {
    view.selected = null;
    $("#detail").hidden = true;
    for (const row of view.rows.values()) row.tr.classList.remove("selected");
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(true); });
  updateTokenButton();
  refresh(true);
}

document.addEventListener("DOMContentLoaded", start);
