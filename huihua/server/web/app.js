// huihua's page: a plain ES module on the native job API (/api/v1), served by `huihua serve`.
// No build step, no network but the server.

const $ = (id) => document.getElementById(id);
const FIELDS = ["prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "cfg_scale", "seed", "width",
  "height", "batch_size", "n_iter", "clip_skip", "enable_hr", "hr_scale", "denoising_strength", "resize_mode",
  "mask_blur", "inpainting_fill", "inpaint_full_res"];
const NUMBERS = new Set(["steps", "cfg_scale", "seed", "width", "height", "batch_size", "n_iter", "clip_skip",
  "hr_scale", "denoising_strength", "resize_mode", "mask_blur", "inpainting_fill"]);
const STORE = "huihua.settings";
const state = { jobs: new Map(), lastSeed: null, cursor: null, selected: null, initName: null, pngParams: null,
  started: new Map() };

async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "content-type": "application/json" }, ...options });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const error = new Error(body?.detail || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// --- the form ---------------------------------------------------------------------------------------

function readForm() {
  const params = {};
  for (const name of FIELDS) {
    const el = $(name);
    if (!el) continue;
    if (el.type === "checkbox") params[name] = el.checked;
    else if (NUMBERS.has(name)) params[name] = Number(el.value);
    else params[name] = el.value;
  }
  for (const side of ["width", "height"]) params[side] = Math.max(8, Math.round(params[side] / 8) * 8);
  if (!params.enable_hr) { delete params.hr_scale; }
  return params;
}

function fillForm(params) {
  for (const [name, value] of Object.entries(params)) {
    const el = $(name);
    if (!el || value === null || value === undefined) continue;
    if (el.type === "checkbox") el.checked = Boolean(value);
    else el.value = value;
  }
}

function saveSettings() { localStorage.setItem(STORE, JSON.stringify(readForm())); }

function showError(message) {
  document.querySelectorAll(".field-error").forEach((el) => { el.textContent = ""; });
  if (!message) return;
  const field = message.split(/[.:]/)[message.startsWith("params.") ? 1 : 0];
  const target = document.querySelector(`.field-error[data-for="${field}"]`);
  $("error").textContent = message;
  if (target) target.textContent = message;
  const input = $(field);
  if (input) input.setAttribute("aria-invalid", "true");
}

async function generate(event) {
  event?.preventDefault();
  showError("");
  const params = readForm();
  saveSettings();
  const body = { kind: "txt2img", params, client_id: "web" };
  if (state.initName) {
    body.images = { init_images: [state.initName] };
    body.kind = "img2img";
    const mask = await maskUpload();
    if (mask) { body.images.mask = mask; body.kind = "inpaint"; }
  } else {
    delete params.denoising_strength; delete params.resize_mode; delete params.mask_blur;
    delete params.inpainting_fill; delete params.inpaint_full_res;
  }
  const checkpoint = $("checkpoint").value;
  if (checkpoint) body.checkpoint = checkpoint;
  try {
    const job = await api("/api/v1/jobs", { method: "POST", body: JSON.stringify(body) });
    state.jobs.set(job.id, { id: job.id, status: job.status, step: 0, total: params.steps, prompt: params.prompt });
    renderQueue();
  } catch (error) { showError(error.message); }
}

// --- queue, progress, events --------------------------------------------------------------------------

function renderQueue() {
  const list = $("queue");
  list.textContent = "";
  for (const job of state.jobs.values()) {
    if (!["queued", "running"].includes(job.status)) continue;
    const li = document.createElement("li");
    li.dataset.testid = "queue-item";
    li.dataset.job = job.id;
    li.textContent = `${job.status} · ${job.prompt || "(no prompt)"} `;
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.dataset.testid = "cancel";
    cancel.addEventListener("click", () => api(`/api/v1/jobs/${job.id}/cancel`, { method: "POST" }).catch(showError));
    li.append(cancel);
    list.append(li);
  }
}

function setProgress(job, step, total) {
  const pct = total ? Math.round((100 * step) / total) : 0;
  const bar = $("progress");
  bar.setAttribute("aria-valuenow", String(pct));
  bar.querySelector(".bar").style.width = `${pct}%`;
  const started = state.started.get(job) || performance.now();
  const seconds = (performance.now() - started) / 1000;
  const rate = seconds > 0 ? step / seconds : 0;
  const eta = rate > 0 ? (total - step) / rate : 0;
  $("progress-text").textContent = `step ${step} / ${total} · ${rate.toFixed(1)} it/s · ETA ${eta.toFixed(1)} s`;
}

function onEvent(type, data) {
  const job = state.jobs.get(data.job_id) || { id: data.job_id, prompt: "" };
  state.jobs.set(job.id, job);
  if (type === "queued") job.status = "queued";
  if (type === "started") { job.status = "running"; state.started.set(job.id, performance.now()); }
  if (type === "progress") {
    job.status = "running";
    setProgress(job.id, data.step, data.total);
    if (data.preview) { $("preview").src = `data:image/jpeg;base64,${data.preview}`; $("preview").hidden = false; }
  }
  if (["succeeded", "failed", "canceled", "interrupted", "deleted"].includes(type)) {
    job.status = type;
    if (type === "succeeded") addToGallery(data.job_id, data.images || [], true);
    if (type === "failed" && data.error) showError(data.error);
    $("progress-text").textContent = type;
  }
  renderQueue();
}

function connect() {
  const source = new EventSource(`/api/v1/events${state.lastEvent ? `?last_event_id=${state.lastEvent}` : ""}`);
  const types = ["queued", "started", "progress", "succeeded", "failed", "canceled", "interrupted", "deleted"];
  for (const type of types) {
    source.addEventListener(type, (event) => {
      state.lastEvent = Number(event.lastEventId);
      onEvent(type, JSON.parse(event.data));
    });
  }
  source.onopen = () => { $("banner").hidden = true; };
  source.onerror = () => {
    $("banner").hidden = false;
    source.close();
    setTimeout(connect, 1000);
  };
}

// --- gallery and history ----------------------------------------------------------------------------

function addToGallery(jobId, images, front) {
  const gallery = $("gallery");
  for (const name of images) {
    if (gallery.querySelector(`[data-name="${name}"]`)) continue;
    const img = document.createElement("img");
    img.src = `/api/v1/images/${name}`;
    img.alt = name;
    img.dataset.testid = "gallery-item";
    img.dataset.name = name;
    img.dataset.job = jobId;
    img.addEventListener("click", () => select(jobId, name));
    if (front) gallery.prepend(img); else gallery.append(img);
  }
}

async function loadHistory() {
  const query = new URLSearchParams({ status: "succeeded", limit: "24" });
  if (state.cursor) query.set("cursor", state.cursor);
  const page = await api(`/api/v1/jobs?${query}`);
  for (const job of page.jobs) addToGallery(job.id, job.images, false);
  state.cursor = page.next_cursor;
  $("more").hidden = !page.next_cursor;
}

async function select(jobId, name) {
  const job = await api(`/api/v1/jobs/${jobId}`);
  const index = job.images.indexOf(name);
  state.selected = { job, name, index };
  $("detail").hidden = false;
  $("detail-image").src = `/api/v1/images/${name}`;
  $("infotext").textContent = job.infotexts[index] || "";
  $("download").href = `/api/v1/images/${name}`;
}

function seedOf(job, index) {
  const match = /Seed: (\d+)/.exec(job.infotexts[index] || "");
  return match ? Number(match[1]) : job.params.seed;
}

function reuse() {
  const { job, index } = state.selected;
  fillForm({ ...job.params, seed: seedOf(job, index), batch_size: 1, n_iter: 1 });
  state.lastSeed = seedOf(job, index);
  saveSettings();
}

// --- img2img: the picture and the mask ---------------------------------------------------------------

async function toBase64(blob) {
  const buffer = new Uint8Array(await blob.arrayBuffer());
  let binary = "";
  for (let i = 0; i < buffer.length; i += 0x8000) binary += String.fromCharCode(...buffer.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function setInit(blob) {
  try {
    const upload = await api("/api/v1/uploads", { method: "POST", body: JSON.stringify({ image: await toBase64(blob) }) });
    state.initName = upload.name;
    const url = URL.createObjectURL(blob);
    $("init-preview").src = url;
    const canvas = $("mask");
    canvas.width = upload.width; canvas.height = upload.height;
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    state.masked = false;
    $("canvas-wrap").hidden = false;
    $("img2img").open = true;
    $("width").value = Math.max(8, Math.floor(upload.width / 8) * 8);
    $("height").value = Math.max(8, Math.floor(upload.height / 8) * 8);
  } catch (error) { showError(error.message); }
}

function paint(event) {
  if (!(event.buttons & 1)) return;
  const canvas = $("mask");
  const box = canvas.getBoundingClientRect();
  const x = ((event.clientX - box.left) / box.width) * canvas.width;
  const y = ((event.clientY - box.top) / box.height) * canvas.height;
  const ctx = canvas.getContext("2d");
  const radius = (Number($("brush").value) / box.width) * canvas.width;
  ctx.globalCompositeOperation = $("eraser").checked ? "destination-out" : "source-over";
  ctx.fillStyle = "rgba(255,255,255,1)";
  ctx.beginPath(); ctx.arc(x, y, Math.max(1, radius / 2), 0, Math.PI * 2); ctx.fill();
  state.masked = true;
}

async function maskUpload() {
  if (!state.masked) return null;
  const canvas = $("mask");
  const out = document.createElement("canvas");
  out.width = canvas.width; out.height = canvas.height;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "black"; ctx.fillRect(0, 0, out.width, out.height);
  ctx.drawImage(canvas, 0, 0);
  const blob = await new Promise((resolve) => out.toBlob(resolve, "image/png"));
  const upload = await api("/api/v1/uploads", { method: "POST", body: JSON.stringify({ image: await toBase64(blob) }) });
  return upload.name;
}

function invertMask() {
  const canvas = $("mask");
  const ctx = canvas.getContext("2d");
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 3; i < data.data.length; i += 4) {
    data.data[i] = 255 - data.data[i];
    data.data[i - 3] = data.data[i - 2] = data.data[i - 1] = 255;
  }
  ctx.putImageData(data, 0, 0);
  state.masked = true;
}

// --- prompt editing: Ctrl+Up/Down changes the emphasis of the selection, as in A1111 ------------------

function emphasis(textarea, delta) {
  let { selectionStart: start, selectionEnd: end, value } = textarea;
  if (start === end) {
    while (start > 0 && !/[\s,()]/.test(value[start - 1])) start -= 1;
    while (end < value.length && !/[\s,()]/.test(value[end])) end += 1;
  }
  let text = value.slice(start, end);
  const weighted = /^\((.*):([\d.]+)\)$/.exec(text);
  let weight = 1.0;
  if (weighted) { text = weighted[1]; weight = Number(weighted[2]); } else if (
    value[start - 1] === "(" && value[end] === ")") { start -= 1; end += 1; weight = 1.1; }
  weight = Math.round((weight + delta) * 100) / 100;
  const replacement = weight === 1 ? text : `(${text}:${weight})`;
  textarea.value = value.slice(0, start) + replacement + value.slice(end);
  textarea.setSelectionRange(start, start + replacement.length);
}

// --- PNG info ----------------------------------------------------------------------------------------

async function pngInfo(file) {
  try {
    const info = await api("/sdapi/v1/png-info", { method: "POST", body: JSON.stringify({ image: await toBase64(file) }) });
    $("png-info-text").textContent = info.info || "(no parameters in this picture)";
    state.pngParams = info.parameters;
  } catch (error) { $("png-info-text").textContent = error.message; }
}

function pngToGenerate() {
  const p = state.pngParams || {};
  fillForm({ prompt: p.Prompt, negative_prompt: p["Negative prompt"], steps: p.Steps, cfg_scale: p["CFG scale"],
    seed: p.Seed, width: p["Size-1"], height: p["Size-2"], sampler_name: p.Sampler });
  showTab("generate");
}

// --- start ---------------------------------------------------------------------------------------------

function showTab(name) {
  document.querySelectorAll(".panel").forEach((el) => el.classList.toggle("active", el.id === name));
  document.querySelectorAll(".tab").forEach((el) => el.classList.toggle("active", el.dataset.tab === name));
}

function option(select, value, label = value) {
  const el = document.createElement("option");
  el.value = value; el.textContent = label;
  select.append(el);
}

async function start() {
  const [samplers, schedules, models] = await Promise.all([
    api("/sdapi/v1/samplers"), api("/sdapi/v1/schedulers"), api("/api/v1/models")]);
  samplers.forEach((s) => option($("sampler_name"), s.name));
  schedules.forEach((s) => option($("scheduler"), s.label));
  models.checkpoints.forEach((m) => option($("checkpoint"), m.name, m.title));
  $("sampler_name").value = "Euler";
  $("scheduler").value = "Automatic";
  for (const lora of models.loras) {
    const chip = document.createElement("button");
    chip.type = "button"; chip.textContent = lora.name; chip.dataset.testid = "lora-item";
    chip.addEventListener("click", () => {
      const prompt = $("prompt");
      prompt.value = `${prompt.value.trimEnd()} <lora:${lora.name}:1>`.trim();
      saveSettings();
    });
    $("lora-list").append(chip);
  }
  for (const emb of models.embeddings) {
    const chip = document.createElement("button");
    chip.type = "button"; chip.textContent = emb.name;
    chip.addEventListener("click", () => { $("prompt").value = `${$("prompt").value.trimEnd()} ${emb.name}`.trim(); });
    $("embedding-list").append(chip);
  }
  const saved = localStorage.getItem(STORE);
  if (saved) fillForm(JSON.parse(saved));
  $("form").addEventListener("submit", generate);
  $("form").addEventListener("change", saveSettings);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey && event.key === "Enter") generate(event);
    if (event.ctrlKey && (event.key === "ArrowUp" || event.key === "ArrowDown")
        && ["prompt", "negative_prompt"].includes(document.activeElement?.id)) {
      event.preventDefault();
      emphasis(document.activeElement, event.key === "ArrowUp" ? 0.1 : -0.1);
    }
  });
  $("dice").addEventListener("click", () => { $("seed").value = -1; });
  $("recycle").addEventListener("click", () => { if (state.lastSeed !== null) $("seed").value = state.lastSeed; });
  $("init-image").addEventListener("change", (e) => e.target.files[0] && setInit(e.target.files[0]));
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) setInit(file);
  });
  $("canvas-wrap").addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) setInit(e.dataTransfer.files[0]); });
  $("canvas-wrap").addEventListener("dragover", (e) => e.preventDefault());
  $("mask").addEventListener("pointerdown", paint);
  $("mask").addEventListener("pointermove", paint);
  $("invert-mask").addEventListener("click", invertMask);
  $("clear-mask").addEventListener("click", () => {
    const c = $("mask"); c.getContext("2d").clearRect(0, 0, c.width, c.height); state.masked = false; });
  $("clear-init").addEventListener("click", () => { state.initName = null; $("canvas-wrap").hidden = true; });
  $("png-info-input").addEventListener("change", (e) => e.target.files[0] && pngInfo(e.target.files[0]));
  $("png-to-generate").addEventListener("click", pngToGenerate);
  document.querySelectorAll(".tab").forEach((el) => el.addEventListener("click", () => showTab(el.dataset.tab)));
  $("reuse").addEventListener("click", reuse);
  $("to-img2img").addEventListener("click", async () => {
    const blob = await (await fetch($("detail-image").src)).blob();
    reuse(); await setInit(blob);
  });
  $("delete").addEventListener("click", async () => {
    const { job } = state.selected;
    await api(`/api/v1/jobs/${job.id}`, { method: "DELETE" });
    job.images.forEach((n) => document.querySelector(`[data-name="${n}"]`)?.remove());
    $("detail").hidden = true;
  });
  $("close-detail").addEventListener("click", () => { $("detail").hidden = true; });
  $("more").addEventListener("click", loadHistory);
  await loadHistory();
  const queue = await api("/api/v1/jobs?status=queued&limit=100");
  for (const job of queue.jobs) state.jobs.set(job.id, { id: job.id, status: job.status, prompt: job.params.prompt });
  renderQueue();
  connect();
  document.body.dataset.ready = "true";
}

start().catch((error) => { $("banner").hidden = false; $("banner").textContent = `huihua: ${error.message}`; });
