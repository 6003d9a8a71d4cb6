// The dubbing server's page: plain JavaScript, no build step. It uses the same REST and WebSocket routes as any
// client (GET /openapi.json describes them).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { schema: null, job: null, poll: null, live: null };

// -- token, requests, errors -----------------------------------------------------------------------------------
// The server prints its address with ?token=...: the page keeps it and takes it out of the address bar.
const given = new URLSearchParams(location.search).get("token");
if (given) {
  localStorage.setItem("musetalk-token", given);
  history.replaceState(null, "", location.pathname);
}
$("token").value = localStorage.getItem("musetalk-token") || "";
$("token").addEventListener("change", () => { localStorage.setItem("musetalk-token", $("token").value); boot(); });
const token = () => $("token").value.trim();
const withToken = (url) => token() ? url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token()) : url;

async function api(path, init = {}) {
  init.headers = Object.assign({}, init.headers || {}, token() ? { Authorization: "Bearer " + token() } : {});
  const r = await fetch(path, init);
  const body = (r.headers.get("content-type") || "").includes("json") ? await r.json() : null;
  if (!r.ok) {
    const e = (body && body.error) || { message: r.statusText, fix: "" };
    throw new Error((e.field ? e.field + ": " : "") + e.message + (e.fix ? "\n→ " + e.fix : ""));
  }
  return body;
}

// -- tabs ------------------------------------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    document.querySelectorAll(".tab, .panel").forEach((el) => el.classList.remove("active"));
    tab.classList.add("active");
    $(tab.dataset.tab).classList.add("active");
    if (tab.dataset.tab === "jobs") refreshJobs();
  });
}

// -- options from the server's own description -----------------------------------------------------------------
function renderOptions(kind) {
  const schema = state.schema.components.schemas[kind === "avatar" ? "AvatarOptions" : "DubOptions"];
  const box = $("options");
  box.innerHTML = "";
  for (const [name, s] of Object.entries(schema.properties)) {
    if (s.deprecated) continue;                       // older names of the same options
    const label = document.createElement("label");
    label.title = s.description || "";
    label.textContent = name.replaceAll("_", " ");
    let input;
    if (s.enum) {
      input = document.createElement("select");
      if (s.nullable) input.add(new Option("(default)", "", false, s.default === undefined));
      for (const v of s.enum) input.add(new Option(v, v, false, v === s.default));
    } else {
      input = document.createElement("input");
      input.type = s.type === "boolean" ? "checkbox" : (s.type === "string" ? "text" : "number");
      if (s.type === "number") input.step = "any";
      if (s.minimum !== undefined) input.min = s.minimum;
      if (s.maximum !== undefined) input.max = s.maximum;
      if (s.type === "boolean") input.checked = s.default === true;
      else if (s.default !== undefined) input.value = s.default;
    }
    input.name = name;
    input.dataset.type = s.type;
    input.dataset.default = s.default === undefined ? "" : String(s.default);
    label.appendChild(input);
    box.appendChild(label);
  }
}

function chosenOptions() {
  const out = {};
  for (const input of $("options").querySelectorAll("input, select")) {
    if (input.dataset.type === "boolean") {
      if (String(input.checked) !== input.dataset.default) out[input.name] = input.checked;
      continue;
    }
    if (input.value === "" || input.value === input.dataset.default) continue;
    out[input.name] = input.dataset.type === "integer" ? parseInt(input.value, 10)
      : input.dataset.type === "number" ? parseFloat(input.value) : input.value;
  }
  return out;
}

const sourceKind = () => document.querySelector("input[name=source]:checked").value;
document.querySelectorAll("input[name=source]").forEach((r) => r.addEventListener("change", () => renderOptions(sourceKind())));

// -- a job -----------------------------------------------------------------------------------------------------
$("dub-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("dub-error").textContent = "";
  const form = new FormData();
  if (sourceKind() === "video") {
    if (!$("video").files[0]) { $("dub-error").textContent = "Choose a video to dub."; return; }
    form.append("video", $("video").files[0]);
  } else {
    if (!$("avatar").value) { $("dub-error").textContent = "No avatar is prepared yet (python <pack> avatar prepare)."; return; }
    if (!$("audio").files[0]) { $("dub-error").textContent = "An avatar needs a voice file."; return; }
    form.append("avatar", $("avatar").value);
  }
  if ($("audio").files[0]) form.append("audio", $("audio").files[0]);
  form.append("options", JSON.stringify(chosenOptions()));
  $("submit").disabled = true;
  try {
    const job = await api("/v1/jobs", { method: "POST", body: form });
    follow(job.id);
  } catch (e) {
    $("dub-error").textContent = e.message;
  } finally {
    $("submit").disabled = false;
  }
});

function follow(id) {
  state.job = id;
  $("job-view").hidden = false;
  $("result").hidden = true; $("download").hidden = true; $("report").textContent = ""; $("report").hidden = true;
  clearInterval(state.poll);
  const tick = async () => {
    try {
      const job = await api("/v1/jobs/" + id);
      showJob(job);
      if (!ACTIVE.includes(job.state)) clearInterval(state.poll);
    } catch (e) { $("dub-error").textContent = e.message; clearInterval(state.poll); }
  };
  state.poll = setInterval(tick, 700);
  tick();
}

const ACTIVE = ["queued", "running", "cancelling"];

function stageText(job) {    // what is being done now; a finished job says how it ended instead
  const p = job.progress;
  if (!p.stage || !ACTIVE.includes(job.state)) return "";
  return p.total > 1 ? `${p.stage} ${p.done}/${p.total}` : p.stage;
}

function showJob(job) {
  const p = job.progress, what = stageText(job);
  $("status").textContent = `Job ${job.id.slice(0, 8)}: ${job.state}${what ? " · " + what : ""}${job.error ? " · " + job.error : ""}`;
  $("status").dataset.state = job.state;
  $("progress").value = job.state === "done" ? 1 : (p.fraction || 0);
  $("cancel").hidden = !["queued", "running"].includes(job.state);
  if (job.report) $("report").textContent = job.report.text || JSON.stringify(job.report, null, 1);
  $("report").hidden = !job.report;
  if (job.state === "done" && $("result").hidden) {
    $("result").src = withToken(job.result);
    $("result").hidden = false;
    $("download").href = withToken(job.result + "?download=1");
    $("download").download = `dubbed_${job.id.slice(0, 8)}.mp4`;
    $("download").hidden = false;
  }
}

$("cancel").addEventListener("click", async () => {
  try {
    const r = await api("/v1/jobs/" + state.job, { method: "DELETE" });
    $("cancel").hidden = true;      // the answer says where it stands: shown at once, not at the next poll
    $("status").textContent = `Job ${state.job.slice(0, 8)}: ${r.state}`;
    $("status").dataset.state = r.state;
  } catch (e) { $("dub-error").textContent = e.message; }
});

// -- the jobs list ---------------------------------------------------------------------------------------------
async function refreshJobs() {
  const rows = $("job-rows");
  try {
    const { jobs } = await api("/v1/jobs?limit=50");
    rows.innerHTML = "";
    for (const job of jobs) {
      const tr = rows.insertRow();
      const progress = ACTIVE.includes(job.state) ? `${Math.round(100 * (job.progress.fraction || 0))} %` : "";
      for (const text of [job.id.slice(0, 8), job.kind, job.state + (job.error ? ` (${job.error})` : ""),
                          progress, new Date(job.created * 1000).toLocaleString()]) {
        tr.insertCell().textContent = text;
      }
      const cell = tr.insertCell();
      const open = document.createElement("button");
      open.textContent = "Open";
      open.onclick = () => { $("tab-dub").click(); follow(job.id); };
      const del = document.createElement("button");
      const finished = !ACTIVE.includes(job.state);
      del.textContent = finished ? "Delete" : "Cancel";
      del.hidden = job.state === "cancelling";
      del.onclick = async () => {
        if (finished && !confirm(`Delete job ${job.id.slice(0, 8)} and its files? This cannot be undone.`)) return;
        await api("/v1/jobs/" + job.id, { method: "DELETE" }).catch(() => {});
        refreshJobs();
      };
      cell.append(open, del);
    }
  } catch (e) { rows.innerHTML = ""; rows.insertRow().insertCell().textContent = e.message; }
}
$("refresh").addEventListener("click", refreshJobs);

// -- live avatar -----------------------------------------------------------------------------------------------
const LIVE_RATE = 16000, CHUNK_S = 0.2;

async function decodeTo16k(file) {
  const ctx = new AudioContext();
  const decoded = await ctx.decodeAudioData(await file.arrayBuffer());
  ctx.close();
  const offline = new OfflineAudioContext(1, Math.ceil(decoded.duration * LIVE_RATE), LIVE_RATE);
  const src = offline.createBufferSource();
  src.buffer = decoded; src.connect(offline.destination); src.start();
  return (await offline.startRendering()).getChannelData(0);
}

function resample(input, fromRate) {   // linear, for the microphone
  const n = Math.floor(input.length * LIVE_RATE / fromRate), out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const x = i * fromRate / LIVE_RATE, j = Math.floor(x), f = x - j;
    out[i] = input[j] * (1 - f) + (input[Math.min(j + 1, input.length - 1)] * f);
  }
  return out;
}

function openLive() {
  const name = $("live-avatar").value;
  if (!name) throw new Error("No avatar is prepared yet (python <pack> avatar prepare --video v.mp4 --name NAME).");
  const url = new URL(withToken(`/v1/avatars/${encodeURIComponent(name)}/live?format=f32`), location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const live = { ws, frames: 0, dropped: 0, t0: null, stopped: false, ready: null };
  live.ready = new Promise((resolve, reject) => { ws.onerror = () => reject(new Error("the live connection failed (is the avatar prepared? see the server log)")); live.resolveReady = resolve; });
  ws.onmessage = (ev) => onLiveMessage(live, ev);
  ws.onclose = () => { $("live-stop").disabled = true; $("live-start").disabled = false; $("live-mic").disabled = false; };
  $("live-frames").textContent = "0"; $("live-dropped").textContent = "0"; $("live-latency").textContent = "-";
  $("live-error").textContent = "";
  $("live-stop").disabled = false; $("live-start").disabled = true; $("live-mic").disabled = true;
  state.live = live;
  return live;
}

function onLiveMessage(live, ev) {
  if (typeof ev.data === "string") {
    const msg = JSON.parse(ev.data);
    if (msg.type === "ready") live.resolveReady(msg);
    if (msg.type === "dropped") { live.dropped += msg.count; $("live-dropped").textContent = live.dropped; }
    if (msg.type === "error") $("live-error").textContent = msg.message + (msg.fix ? "\n→ " + msg.fix : "");
    if (msg.type === "end") $("live-status").dataset.ended = "1";
    return;
  }
  const view = new DataView(ev.data);
  const t = view.getFloat64(4, true);
  const img = $("live-frame");
  const old = img.src;
  img.src = URL.createObjectURL(new Blob([ev.data.slice(12)], { type: "image/jpeg" }));
  if (old) URL.revokeObjectURL(old);
  live.frames += 1;
  $("live-frames").textContent = live.frames;
  if (live.t0 !== null) $("live-latency").textContent = Math.max(0, (performance.now() - live.t0) / 1000 - t).toFixed(2) + " s";
}

$("live-start").addEventListener("click", async () => {
  let live;
  try {
    const file = $("live-audio").files[0];
    if (!file) throw new Error("Choose a voice file to speak.");
    const pcm = await decodeTo16k(file);
    live = openLive();
    await live.ready;
    live.t0 = performance.now();
    const step = Math.round(CHUNK_S * LIVE_RATE);
    for (let i = 0; i < pcm.length && !live.stopped; i += step) {   // at the voice's own pace, like a live source
      live.ws.send(pcm.slice(i, i + step).buffer);
      await new Promise((r) => setTimeout(r, CHUNK_S * 1000));
    }
    if (live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify({ type: "end" }));
  } catch (e) { $("live-error").textContent = e.message; if (live) live.ws.close(); }
});

$("live-mic").addEventListener("click", async () => {
  let live;
  try {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw new Error("This browser gives no microphone here (it needs https or localhost).");
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    live = openLive();
    await live.ready;
    const ctx = new AudioContext();
    const node = ctx.createScriptProcessor(4096, 1, 1);
    node.onaudioprocess = (e) => { if (live.ws.readyState === WebSocket.OPEN) live.ws.send(resample(e.inputBuffer.getChannelData(0), ctx.sampleRate).buffer); };
    ctx.createMediaStreamSource(stream).connect(node);
    node.connect(ctx.destination);
    live.t0 = performance.now();
    live.stopMic = () => { node.disconnect(); stream.getTracks().forEach((t) => t.stop()); ctx.close(); };
  } catch (e) { $("live-error").textContent = e.message; if (live) live.ws.close(); }
});

$("live-stop").addEventListener("click", () => {
  const live = state.live;
  if (!live) return;
  live.stopped = true;
  if (live.stopMic) live.stopMic();
  if (live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify({ type: "end" }));
});

// -- start -----------------------------------------------------------------------------------------------------
async function boot() {
  try {
    state.schema = await api("/openapi.json");
    renderOptions(sourceKind());
    const { avatars } = await api("/v1/avatars");
    for (const sel of [$("avatar"), $("live-avatar")]) {
      sel.innerHTML = "";
      const usable = avatars.filter((a) => !a.error);
      for (const a of usable) sel.add(new Option(`${a.name} (${a.frames} frames, ${a.fps} fps)`, a.name));
      if (!usable.length) sel.add(new Option("none prepared yet", ""));
    }
    $("live-hint").hidden = avatars.some((a) => !a.error);
    $("dub-error").textContent = "";        // an earlier "needs a bearer token" is answered now
    document.body.dataset.ready = "1";
  } catch (e) { $("dub-error").textContent = e.message; }
}
boot();
