// tunesmith web page: a form over POST /v1/generations, a poller for progress, a player,
// and a history drawn from GET /v1/generations. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const LIVE = new Set(["queued", "running"]);
const state = {
  current: null, pollTimer: null, offset: 0, pageSize: 12, objectUrl: null,
  uploads: new Map(), spectrogramUrl: null,
};

function keyHeaders() {
  const key = localStorage.getItem("tunesmith-key");
  return key ? { "X-API-Key": key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...keyHeaders(), ...(options.headers || {}) },
  });
  if (response.status === 401) $("key-row").hidden = false;
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).detail || message; } catch (_) { /* not JSON */ }
    const retry = response.headers.get("Retry-After");
    if (retry) message += ` (retry in ${retry} s)`;
    throw new Error(message);
  }
  return response;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

// --- waveform pictures ------------------------------------------------------------------

function drawPeaks(canvas, peaks, played = 0) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || 40;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const styles = getComputedStyle(document.documentElement);
  const bar = width / peaks.length;
  const loudest = Math.max(0.05, ...peaks); // scale quiet pieces up so their shape shows
  peaks.forEach((peak, i) => {
    const h = Math.max(1.5, (peak / loudest) * (height - 2));
    ctx.fillStyle = (i + 0.5) / peaks.length <= played
      ? styles.getPropertyValue("--accent") : styles.getPropertyValue("--wave");
    ctx.fillRect(i * bar, (height - h) / 2, Math.max(1, bar - 1), h);
  });
}

async function fetchPeaks(id) {
  return (await (await api(`/v1/generations/${id}/peaks`)).json()).peaks;
}

// --- the form ---------------------------------------------------------------------------

function readForm() {
  const number = (id) => Number($(id).value);
  const body = {
    prompt: $("prompt").value.trim(),
    duration: number("duration"),
    top_k: Math.round(number("top_k")),
    top_p: number("top_p"),
    temperature: number("temperature"),
    cfg_scale: number("cfg_scale"),
    stride: number("stride"),
    format: $("format").value,
    normalize: $("normalize").value,
  };
  if ($("seed").value !== "") body.seed = Math.round(number("seed"));
  return body;
}

// An audio file chosen in the form, uploaded once (POST /v1/uploads); its id.
async function uploaded(inputId) {
  const file = $(inputId).files[0];
  if (!file) return null;
  const known = state.uploads.get(file);
  if (known) return known;
  const info = await (await api("/v1/uploads", {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream" },
    body: file,
  })).json();
  state.uploads.set(file, info.id);
  return info.id;
}

async function queue(body) {
  const job = await (await api("/v1/generations", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  })).json();
  state.current = job.id;
  state.lastStatus = null;
  $("result").hidden = true;
  showJob(job);
  poll();
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const key = $("api-key").value.trim();
  if (key && key !== localStorage.getItem("tunesmith-key")) {
    localStorage.setItem("tunesmith-key", key);
    loadHealth();
  }
  $("generate").disabled = true;
  try {
    const body = readForm();
    const prompt = await uploaded("audio-prompt-file");
    if (prompt) body.audio_prompt = prompt;
    const melody = await uploaded("melody-file");
    if (melody) body.melody = melody;
    await queue(body);
  } catch (err) {
    showError(err.message);
  } finally {
    $("generate").disabled = false;
  }
}

// Seconds as a musician reads them: "0.5 s", "12 s", "1 min 30 s".
function secondsText(value) {
  const s = Math.max(0, Number(value) || 0);
  if (s >= 59.5) {
    const minutes = Math.floor((s + 0.5) / 60);
    const rest = Math.round(s - 60 * minutes);
    return rest > 0 ? `${minutes} min ${rest} s` : `${minutes} min`;
  }
  return s >= 10 ? `${Math.round(s)} s` : `${Number(s.toFixed(1))} s`;
}

function progressText(job) {
  const p = job.progress;
  if (job.status === "running") {
    const made = `${secondsText(p.seconds_done)} of ${secondsText(p.seconds_total)} of music made`;
    return p.seconds_left === null || p.seconds_left === undefined ? made
      : `${made} · about ${secondsText(p.seconds_left)} left`;
  }
  if (job.status === "queued") return "waiting for the worker…";
  if (job.status === "done") {
    return `${secondsText(job.audio_seconds)} of music, made in ${secondsText(job.timings.run_seconds)}`;
  }
  return job.error || "";
}

function showJob(job) {
  $("job").hidden = false;
  const badge = $("job-status");
  badge.textContent = job.status;
  badge.className = `badge ${job.status}`;
  const { steps_done: done, steps_total: total } = job.progress;
  const percent = job.status === "done" ? 100 : total ? Math.round((100 * done) / total) : 0;
  $("bar").style.width = `${percent}%`;
  $("bar").parentElement.setAttribute("aria-valuenow", String(percent));
  $("job-text").textContent = progressText(job);
  $("cancel").hidden = !LIVE.has(job.status);
}

async function poll() {
  clearTimeout(state.pollTimer);
  const id = state.current;
  if (!id) return;
  try {
    const job = await (await api(`/v1/generations/${id}`)).json();
    if (id !== state.current) return;
    if (job.status !== state.lastStatus) refreshHistory();
    state.lastStatus = job.status;
    showJob(job);
    if (LIVE.has(job.status)) {
      state.pollTimer = setTimeout(poll, 300);
    } else {
      if (job.status === "done") await loadResult(job);
      else if (job.error) showError(job.error);
    }
  } catch (err) {
    showError(err.message);
  }
}

async function cancelCurrent() {
  if (!state.current) return;
  try {
    await api(`/v1/generations/${state.current}`, { method: "DELETE" });
    poll();
  } catch (err) {
    showError(err.message);
  }
}

// --- the player -------------------------------------------------------------------------

async function loadResult(job) {
  const response = await api(job.audio_url);
  const blob = await response.blob();
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(blob);
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="?([^";]+)"?/) || [])[1] || `${job.id}.${job.parameters.format}`;
  $("player").src = state.objectUrl;
  $("download").href = state.objectUrl;
  $("download").download = name;
  $("download").textContent = `Download ${job.parameters.format.toUpperCase()}`;
  $("result-prompt").textContent = job.parameters.prompt || "(unconditional)";
  $("result").hidden = false;
  state.peaks = await fetchPeaks(job.id).catch(() => null);
  if (state.peaks) drawPeaks($("wave"), state.peaks);
  try {
    const picture = await (await api(`/v1/generations/${job.id}/spectrogram`)).blob();
    if (state.spectrogramUrl) URL.revokeObjectURL(state.spectrogramUrl);
    state.spectrogramUrl = URL.createObjectURL(picture);
    $("spectrogram").src = state.spectrogramUrl;
    $("spectrogram").hidden = false;
  } catch (_) {
    $("spectrogram").hidden = true; // no matplotlib on the server: the waveform suffices
  }
}

// Run a past job again with the same settings (its uploads included), and show them.
async function again(job) {
  const p = job.parameters;
  $("prompt").value = p.prompt;
  $("duration").value = p.duration;
  $("duration-range").value = Math.min(p.duration, Number($("duration-range").max));
  $("duration-out").textContent = `${Number(p.duration).toFixed(1)} s`;
  for (const key of ["top_k", "top_p", "temperature", "cfg_scale", "stride"]) $(key).value = p[key];
  $("seed").value = p.seed === null ? "" : p.seed;
  $("format").value = p.format;
  if (p.normalize) $("normalize").value = p.normalize;
  showError("");
  try {
    await queue({ ...p });
  } catch (err) {
    showError(err.message);
  }
}

function onTimeUpdate() {
  const player = $("player");
  if (state.peaks && player.duration) drawPeaks($("wave"), state.peaks, player.currentTime / player.duration);
}

function seekFromWave(event) {
  const player = $("player");
  const box = $("wave").getBoundingClientRect();
  if (player.duration) player.currentTime = ((event.clientX - box.left) / box.width) * player.duration;
}

// --- history ----------------------------------------------------------------------------

function historyItem(job) {
  const li = document.createElement("li");
  li.className = `item${job.id === state.current ? " current" : ""}`;
  li.dataset.id = job.id;
  const top = document.createElement("div");
  top.className = "item-top";
  const prompt = document.createElement("span");
  prompt.className = "item-prompt";
  prompt.textContent = job.parameters.prompt || "(unconditional)";
  prompt.title = prompt.textContent;
  const badge = document.createElement("span");
  badge.className = `badge ${job.status}`;
  badge.textContent = job.status === "running" && job.progress.steps_total
    ? `${secondsText(job.progress.seconds_done)} of ${secondsText(job.progress.seconds_total)}`
    : job.status;
  top.append(prompt, badge);
  li.append(top);
  if (job.status === "done") {
    const canvas = document.createElement("canvas");
    li.append(canvas);
    fetchPeaks(job.id).then((peaks) => drawPeaks(canvas, peaks)).catch(() => canvas.remove());
  }
  const meta = document.createElement("div");
  meta.className = "item-meta muted";
  const when = new Date(job.timings.created_at)
    .toLocaleString([], { dateStyle: "short", timeStyle: "short" });
  const seed = job.parameters.seed === null ? "" : ` · seed ${job.parameters.seed}`;
  const upload = job.parameters.audio_prompt ? " · continues an upload"
    : job.parameters.melody ? " · follows a melody" : "";
  const facts = document.createElement("span");
  facts.textContent = `${job.parameters.duration} s · ${job.parameters.format}${seed}${upload} · ${when}`;
  const actions = document.createElement("span");
  actions.className = "actions";
  meta.append(facts, actions);
  if (job.status === "done") {
    actions.append(button("Play", () => { state.current = job.id; loadResult(job).then(() => $("player").play()); }));
  }
  if (!LIVE.has(job.status)) actions.append(button("Again", () => again(job)));
  actions.append(button(LIVE.has(job.status) ? "Cancel" : "Delete", async () => {
    try {
      await api(`/v1/generations/${job.id}`, { method: "DELETE" });
      refreshHistory();
      if (job.id === state.current) poll();
    } catch (err) { showError(err.message); }
  }));
  li.append(meta);
  return li;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "link";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

async function refreshHistory() {
  try {
    const limit = state.pageSize + state.offset;
    const page = await (await api(`/v1/generations?limit=${Math.min(limit, 100)}`)).json();
    $("history").replaceChildren(...page.items.map(historyItem));
    $("history-empty").hidden = page.total > 0;
    $("history-count").textContent = page.total ? `${page.total} in all` : "";
    $("more").hidden = page.items.length >= page.total || limit >= 100;
    clearTimeout(state.historyTimer);
    if (page.items.some((job) => LIVE.has(job.status))) {
      state.historyTimer = setTimeout(refreshHistory, 1000);
    }
  } catch (err) {
    showError(err.message);
  }
}

// --- start --------------------------------------------------------------------------------

async function start() {
  $("form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancelCurrent);
  $("player").addEventListener("timeupdate", onTimeUpdate);
  $("wave").addEventListener("click", seekFromWave);
  $("more").addEventListener("click", () => { state.offset += state.pageSize; refreshHistory(); });
  const range = $("duration-range");
  const number = $("duration");
  const show = () => { $("duration-out").textContent = `${Number(number.value).toFixed(1)} s`; };
  range.addEventListener("input", () => { number.value = range.value; show(); });
  number.addEventListener("input", () => { range.value = number.value; show(); });
  $("api-key").value = localStorage.getItem("tunesmith-key") || "";
  $("api-key").addEventListener("change", () => {
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem("tunesmith-key", key);
    else localStorage.removeItem("tunesmith-key");
    loadHealth().then(refreshHistory);
  });
  await loadHealth();
  refreshHistory();
}

// The model and its limits (/healthz). A server with keys tells them to a key holder only.
async function loadHealth() {
  const number = $("duration");
  const range = $("duration-range");
  try {
    const response = await fetch("/healthz", { headers: keyHeaders() });
    if (response.status === 401) {
      $("health-dot").className = "dot bad";
      $("model-name").textContent = "this API key is not known here";
      $("key-row").hidden = false;
      return;
    }
    const health = await response.json();
    $("health-dot").className = "dot ok";
    if (health.model === null) { // keys are set and none was sent
      $("model-name").textContent = "enter your API key";
      $("key-row").hidden = false;
      return;
    }
    $("model-name").textContent = `${health.model} · ${health.sample_rate / 1000} kHz`;
    number.max = String(health.max_duration);
    range.max = String(Math.min(health.max_duration, 120)); // past it, type the seconds
    $("stride").min = String(health.min_stride);
    $("melody-row").hidden = !health.melody;
    for (const option of $("format").options) {
      option.disabled = !health.formats.includes(option.value);
    }
    if (health.auth_required) $("key-row").hidden = !!localStorage.getItem("tunesmith-key");
  } catch (err) {
    $("health-dot").className = "dot bad";
    $("model-name").textContent = "server unreachable";
  }
}

document.addEventListener("DOMContentLoaded", start);
