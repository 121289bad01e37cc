// whisper-ft studio: the page. Plain JavaScript, no build step; it talks to server.py's API.
"use strict";

const $ = (id) => document.getElementById(id);
const DOUBTFUL = 0.5; // words the model gave less probability than this are underlined
const state = { recordings: [], models: [], embedded: [], jobs: [], trainInputs: [] };
let current = null; // the recording being corrected: {id, name, cues, version}
let currentCue = -1;
let stopAt = null; // playing one cue: pause when the audio reaches its end
let undoStack = [];
let saveTimer = null;
let watched = null; // the job whose progress the header shows

// ---------------------------------------------------------------- talking to the server

async function api(method, path, body, raw) {
  const options = { method, headers: {} };
  if (raw !== undefined) {
    options.body = raw;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function showError(error) {
  $("error-text").textContent = error.message || String(error);
  $("error").hidden = false;
}

async function guarded(action) {
  try {
    await action();
  } catch (error) {
    showError(error);
  }
}

// ---------------------------------------------------------------- recordings and models

async function refresh() {
  const data = await api("GET", "/api/state");
  state.recordings = data.recordings;
  state.models = data.models;
  state.embedded = data.embedded_models;
  state.jobs = data.jobs;
  if (!state.trainInputs.length) {
    state.trainInputs = data.train_inputs;
    renderTrainForm();
  }
  renderRecordings();
  renderModelPickers();
  const running = data.jobs.filter((j) => j.state === "running" || j.state === "queued");
  if (running.length && !watched) watch(running[running.length - 1].id);
}

function renderRecordings() {
  const list = $("recordings");
  list.replaceChildren();
  for (const r of state.recordings) {
    const item = document.createElement("li");
    item.dataset.id = r.id;
    item.className = current && current.id === r.id ? "selected" : "";
    const name = document.createElement("span");
    name.textContent = r.name;
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = `${r.duration.toFixed(1)} s · ${r.status}${r.in_training_set ? " · in set" : ""}`;
    item.append(name, status);
    item.addEventListener("click", () => guarded(() => open(r.id)));
    list.append(item);
  }
  $("transcribe").disabled = !current;
  const set = state.recordings.filter((r) => r.in_training_set);
  $("training-set").textContent = set.length
    ? `Training set: ${set.length} recording(s), ${set.reduce((s, r) => s + r.duration, 0).toFixed(1)} s`
    : 'Tick "In the training set" on corrected recordings.';
  fillSelect($("compare-recording"), state.recordings.map((r) => [r.id, r.name]));
}

function modelChoices() {
  return [
    ...state.embedded.map((m) => [m, `${m} (embedded)`]),
    ...state.models.map((m) => [m.model, m.name]),
  ];
}

function renderModelPickers() {
  const choices = modelChoices();
  fillSelect($("model"), [...choices, ["other", "other: hub id or archive…"]]);
  fillSelect($("train-model"), choices);
  fillSelect($("compare-a"), choices);
  fillSelect($("compare-b"), choices, choices.length > 2 ? choices[choices.length - 1][0] : undefined);
}

function fillSelect(select, options, preferred) {
  const previous = select.value;
  const now = [...select.options].map((o) => `${o.value}\t${o.text}`).join("\n");
  if (now === options.map(([v, l]) => `${v}\t${l}`).join("\n")) return; // unchanged: keep it
  select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  const values = options.map(([v]) => v);
  if (values.includes(previous)) select.value = previous;
  else if (preferred !== undefined) select.value = preferred;
}

function chosenModel() {
  return $("model").value === "other" ? $("model-other").value.trim() : $("model").value;
}

async function upload(files) {
  for (const file of files) {
    const meta = await api("POST", `/api/recordings?name=${encodeURIComponent(file.name)}`, undefined, file);
    await refresh();
    await open(meta.id);
  }
}

// ---------------------------------------------------------------- the cue editor

async function open(id) {
  const data = await api("GET", `/api/recordings/${id}`);
  current = { id, name: data.name, cues: data.cues, version: data.version, meta: data };
  undoStack = [];
  currentCue = -1;
  $("recording-name").textContent = `— ${data.name}`;
  $("audio").src = `/api/recordings/${id}/audio`;
  $("player").hidden = false;
  $("in-training").checked = !!data.in_training_set;
  for (const fmt of ["vtt", "srt", "txt"]) $(`export-${fmt}`).href = `/api/recordings/${id}/export.${fmt}`;
  $("editor-hint").hidden = data.cues.length > 0;
  $("saved").textContent = data.version ? `saved (version ${data.version})` : "";
  renderRecordings();
  renderCues();
}

function renderCues() {
  const list = $("cues");
  list.replaceChildren();
  current.cues.forEach((cue, index) => list.append(cueRow(cue, index)));
  $("undo").disabled = undoStack.length === 0;
  highlight(currentCue, false);
}

function cueRow(cue, index) {
  const row = document.createElement("li");
  row.dataset.index = index;
  const number = document.createElement("span");
  number.className = "index";
  number.textContent = index + 1;
  number.title = "Play this cue";
  number.addEventListener("click", () => playCue(index));

  const times = document.createElement("div");
  times.className = "times";
  for (const edge of ["start", "end"]) {
    const minus = button("−", `Move the ${edge} 0.1 s earlier`, () => nudge(index, edge, -0.1));
    const input = document.createElement("input");
    input.type = "number";
    input.step = "0.01";
    input.min = "0";
    input.value = cue[edge].toFixed(2);
    input.className = edge;
    input.addEventListener("change", () => setTime(index, edge, parseFloat(input.value)));
    const plus = button("+", `Move the ${edge} 0.1 s later`, () => nudge(index, edge, 0.1));
    times.append(minus, input, plus);
  }

  const text = document.createElement("div");
  text.className = "text";
  text.contentEditable = "true";
  text.spellcheck = true;
  renderText(text, cue);
  text.addEventListener("focus", () => {
    highlight(index, false);
    remember();
  });
  text.addEventListener("input", () => {
    cue.text = text.innerText.replace(/\n+$/, "");
    cue.words = []; // the model's words no longer match the text
    scheduleSave();
  });

  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(
    button("Split", "Split this cue in two (at the cursor)", () => split(index, text)),
    button("Merge ↓", "Merge with the next cue", () => merge(index)),
  );
  row.append(number, times, text, actions);
  return row;
}

function button(label, title, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.title = title;
  b.addEventListener("click", (event) => {
    event.stopPropagation();
    guarded(action);
  });
  return b;
}

function renderText(element, cue) {
  element.replaceChildren();
  const words = cue.words || [];
  if (!words.length || words.map((w) => w.text).join(" ") !== cue.text.split(/\s+/).join(" ")) {
    element.textContent = cue.text;
    return;
  }
  // The text with its line breaks, each word a span; doubtful words underlined.
  const lines = cue.text.split("\n");
  let k = 0;
  lines.forEach((line, lineIndex) => {
    line.split(" ").forEach((token, i) => {
      if (i) element.append(" ");
      const span = document.createElement("span");
      span.textContent = token;
      const word = words[k++];
      if (word && word.p < DOUBTFUL) {
        span.className = "doubt";
        span.title = `probability ${word.p}`;
      }
      element.append(span);
    });
    if (lineIndex < lines.length - 1) element.append("\n");
  });
}

function remember() {
  undoStack.push(JSON.stringify(current.cues));
  if (undoStack.length > 200) undoStack.shift();
  $("undo").disabled = false;
}

function change(action) {
  remember();
  action();
  renderCues();
  save();
}

function nudge(index, edge, delta) {
  const cue = current.cues[index];
  change(() => {
    cue[edge] = Math.max(0, Math.round((cue[edge] + delta) * 1000) / 1000);
    if (cue.start > cue.end) cue[edge === "start" ? "end" : "start"] = cue[edge];
  });
}

function setTime(index, edge, value) {
  if (!Number.isFinite(value) || value < 0) return renderCues();
  const cue = current.cues[index];
  change(() => {
    cue[edge] = Math.round(value * 1000) / 1000;
    if (cue.start > cue.end) cue[edge === "start" ? "end" : "start"] = cue[edge];
  });
}

function split(index, element) {
  const cue = current.cues[index];
  const text = cue.text.replace(/\n/g, " ");
  let at = caretOffset(element);
  if (at <= 0 || at >= text.length) at = nearestSpace(text, Math.floor(text.length / 2));
  const left = text.slice(0, at).trim();
  const right = text.slice(at).trim();
  if (!left || !right) return;
  // The time splits where the words say; without word times, in proportion to the text.
  const words = cue.words || [];
  const leftCount = left.split(/\s+/).length;
  const time = words.length > leftCount
    ? words[leftCount].start
    : cue.start + ((cue.end - cue.start) * left.length) / text.length;
  change(() => {
    current.cues.splice(
      index,
      1,
      { start: cue.start, end: Math.max(cue.start, time - 0.01), text: left, words: words.slice(0, leftCount) },
      { start: time, end: cue.end, text: right, words: words.slice(leftCount) },
    );
  });
}

function caretOffset(element) {
  const selection = window.getSelection();
  if (!selection.rangeCount || !element.contains(selection.anchorNode)) return -1;
  const range = selection.getRangeAt(0).cloneRange();
  range.selectNodeContents(element);
  range.setEnd(selection.anchorNode, selection.anchorOffset);
  return range.toString().length;
}

function nearestSpace(text, around) {
  for (let d = 0; d < text.length; d++) {
    if (text[around + d] === " ") return around + d;
    if (text[around - d] === " ") return around - d;
  }
  return around;
}

function merge(index) {
  if (index + 1 >= current.cues.length) return;
  const [a, b] = current.cues.slice(index, index + 2);
  change(() => {
    current.cues.splice(index, 2, {
      start: a.start,
      end: Math.max(a.end, b.end),
      text: `${a.text} ${b.text}`.replace(/\s*\n\s*/g, " "),
      words: [...(a.words || []), ...(b.words || [])],
    });
  });
}

function undo() {
  if (!undoStack.length) return;
  current.cues = JSON.parse(undoStack.pop());
  renderCues();
  save();
}

function scheduleSave() {
  $("saved").textContent = "saving…";
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => guarded(save), 300);
}

async function save() {
  clearTimeout(saveTimer);
  const saved = await api("PUT", `/api/recordings/${current.id}/cues`, { cues: current.cues });
  current.version = saved.version;
  $("saved").textContent = `saved (version ${saved.version})`;
}

// ---------------------------------------------------------------- playing

function playCue(index) {
  const cue = current.cues[index];
  if (!cue) return;
  const audio = $("audio");
  audio.currentTime = cue.start;
  stopAt = cue.end;
  highlight(index, true);
  audio.play();
}

function highlight(index, scroll) {
  currentCue = index;
  for (const row of $("cues").children) {
    row.classList.toggle("current", Number(row.dataset.index) === index);
  }
  const row = $("cues").children[index];
  if (row && scroll) row.scrollIntoView({ block: "nearest" });
}

function onTime() {
  const audio = $("audio");
  const t = audio.currentTime;
  if (stopAt !== null && t >= stopAt) {
    audio.pause();
    stopAt = null;
  }
  if (!current) return;
  const spoken = current.cues.findIndex((c) => c.start <= t && t < c.end);
  for (const row of $("cues").children) {
    row.classList.toggle("playing", Number(row.dataset.index) === spoken);
  }
  if (spoken >= 0 && !audio.paused && spoken !== currentCue) highlight(spoken, true);
}

function togglePlay() {
  const audio = $("audio");
  stopAt = null;
  if (audio.paused) audio.play();
  else audio.pause();
}

function onKey(event) {
  if (!current) return;
  if (event.ctrlKey && event.code === "Space") {
    event.preventDefault();
    togglePlay();
  } else if (event.altKey && event.key === "ArrowDown") {
    event.preventDefault();
    playCue(Math.min(currentCue + 1, current.cues.length - 1));
  } else if (event.altKey && event.key === "ArrowUp") {
    event.preventDefault();
    playCue(Math.max(currentCue - 1, 0));
  } else if (event.altKey && event.code === "KeyR") {
    event.preventDefault();
    playCue(Math.max(currentCue, 0));
  } else if (event.altKey && event.code === "KeyZ") {
    event.preventDefault();
    undo();
  }
}

// ---------------------------------------------------------------- jobs

async function watch(id) {
  watched = id;
  $("job").hidden = false;
  $("job-cancel").disabled = false;
  for (;;) {
    let job;
    try {
      job = await api("GET", `/api/jobs/${id}`);
    } catch (error) {
      showError(error);
      break;
    }
    showJob(job);
    if (!["queued", "running"].includes(job.state)) {
      await finished(job);
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
  watched = null;
  $("job-cancel").disabled = true;
}

function showJob(job) {
  $("job-title").textContent = `${job.title}: ${job.state}`;
  const last = job.last || {};
  let percent = null;
  let detail = "";
  if (last.transcribe) {
    percent = (100 * last.transcribe.done) / Math.max(last.transcribe.total, 1e-6);
    detail = `${last.transcribe.done.toFixed(0)} s of ${last.transcribe.total.toFixed(0)} s`;
  }
  if (job.kind === "train") showTraining(job);
  if (last.step) {
    percent = (100 * last.step.step) / last.step.steps;
    detail = `step ${last.step.step}/${last.step.steps} · loss ${last.step.loss.toFixed(3)} · ETA ${Math.round(last.step.eta)} s`;
  }
  const bar = $("job-progress");
  if (percent === null) bar.removeAttribute("value");
  else bar.value = Math.min(100, percent);
  if (job.state === "done") bar.value = 100;
  $("job-detail").textContent = job.state === "failed" ? job.message : detail;
}

function showTraining(job) {
  $("train-progress").hidden = false;
  const step = job.last && job.last.step;
  const ended = { canceled: "Canceled.", failed: `Failed: ${job.message}`, done: "Done." }[job.state];
  $("train-step").textContent = step
    ? `Step ${step.step} of ${step.steps} · epoch ${step.epoch} · loss ${step.loss.toFixed(3)} · about ${Math.round(step.eta)} s left`
    : job.state === "queued" ? "Waiting for the job before it" : "Preparing: reading the training set, scoring the base model…";
  if (ended && job.state !== "done") $("train-step").textContent = `${ended} ${$("train-step").textContent}`;
  const kept = job.last && job.last.kept ? job.last.kept.epoch : null;
  $("epochs").replaceChildren(
    ...job.epochs.map((e) => {
      const row = document.createElement("tr");
      if (e.epoch === kept) row.className = "kept";
      for (const value of [e.epoch, e.loss.toFixed(3), e.wer === undefined ? "–" : `${e.wer.toFixed(2)}%`]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      return row;
    }),
  );
}

async function finished(job) {
  if (job.state === "failed") showError(new Error(`${job.title}: ${job.message}`));
  await refresh();
  if (job.kind === "transcribe" && job.result && current && job.result.recording === current.id) {
    await open(current.id);
  }
  if (job.kind === "train" && job.state === "done") showTrainResult(job.result);
  if (job.kind === "compare" && job.state === "done") showComparison(job.result);
}

// ---------------------------------------------------------------- training

function renderTrainForm() {
  const form = $("train-form");
  form.replaceChildren();
  for (const input of state.trainInputs) {
    const label = document.createElement("label");
    label.textContent = input.name;
    let field;
    if (input.choices) {
      field = document.createElement("select");
      if (input.default === null) field.append(new Option("(chosen by the recipe)", ""));
      for (const c of input.choices) field.append(new Option(c, c));
      field.value = input.default === null ? "" : input.default;
    } else if (input.type === "bool") {
      field = document.createElement("select");
      field.append(new Option("true", "true"), new Option("false", "false"));
      field.value = String(input.default);
    } else {
      field = document.createElement("input");
      field.value = input.default === null ? "" : input.default;
      if (input.type === "int" || input.type === "float") field.inputMode = "decimal";
    }
    field.name = input.name;
    field.dataset.default = input.default === null ? "" : String(input.default);
    const help = document.createElement("small");
    const bounds = input.ge !== null || input.le !== null ? ` (${input.ge ?? ""}…${input.le ?? ""})` : "";
    const given = input.default === null || input.default === "" ? "" : ` default: ${input.default}`;
    help.textContent = `${input.description || ""}${bounds}${given}`;
    label.append(field, help);
    form.append(label);
  }
}

function trainValues() {
  const values = {};
  for (const field of $("train-form").elements) {
    if (field.name && field.value !== field.dataset.default) values[field.name] = field.value;
  }
  return values;
}

function showTrainResult(report) {
  const box = $("train-result");
  box.hidden = false;
  box.replaceChildren();
  const fmt = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(2)}%`);
  const lines = [
    `${report.name}: validation WER ${fmt(report.wer_before)} → ${fmt(report.wer_after)} (epoch ${report.best_epoch} kept, ${report.training_seconds} s).`,
    `Words it was taught: ${(report.vocabulary || []).join(", ") || "none found"}.`,
  ];
  for (const text of lines) {
    const p = document.createElement("p");
    p.textContent = text;
    box.append(p);
  }
  const link = document.createElement("a");
  link.href = `/api/models/${report.id}/weights.tar`;
  link.textContent = "Download the weights archive";
  link.download = "weights.tar";
  const use = button("Use this model", "Transcribe with the new model", () => {
    $("model").value = report.model;
    $("compare-b").value = report.model;
  });
  use.id = "use-model";
  box.append(link, " ", use);
}

// ---------------------------------------------------------------- comparing

function showComparison(result) {
  const box = $("compare-result");
  box.replaceChildren();
  const labels = Object.fromEntries(modelChoices());
  result.models.forEach((model, side) => {
    const title = document.createElement("h3");
    title.textContent = labels[model] || model;
    const text = document.createElement("div");
    text.className = "text";
    text.dataset.side = side ? "b" : "a";
    for (const part of result.diff) {
      const words = side ? part.b : part.a;
      if (!words) continue;
      const span = document.createElement("span");
      span.textContent = `${words} `;
      if (part.op !== "equal") span.className = side ? "ins" : "del";
      text.append(span);
    }
    box.append(title, text);
  });
}

// ---------------------------------------------------------------- wiring

function start() {
  $("error-close").addEventListener("click", () => ($("error").hidden = true));
  $("upload").addEventListener("change", (e) => {
    const files = [...e.target.files];
    e.target.value = ""; // the same file may be chosen again
    guarded(() => upload(files));
  });
  $("url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(async () => {
      const meta = await api("POST", "/api/recordings/url", { url: $("url").value });
      await refresh();
      await open(meta.id);
    });
  });
  $("model").addEventListener("change", () => ($("model-other").hidden = $("model").value !== "other"));
  $("transcribe").addEventListener("click", () => guarded(async () => {
    const job = await api("POST", `/api/recordings/${current.id}/transcribe`, {
      model: chosenModel(),
      language: $("language").value,
      task: $("task").value,
    });
    watch(job.id);
  }));
  $("job-cancel").addEventListener("click", () => guarded(() => api("POST", `/api/jobs/${watched}/cancel`)));
  $("play").addEventListener("click", togglePlay);
  $("prev").addEventListener("click", () => playCue(Math.max(currentCue - 1, 0)));
  $("next").addEventListener("click", () => playCue(Math.min(currentCue + 1, current.cues.length - 1)));
  $("replay").addEventListener("click", () => playCue(Math.max(currentCue, 0)));
  $("undo").addEventListener("click", undo);
  $("in-training").addEventListener("change", (e) => guarded(async () => {
    await api("POST", `/api/recordings/${current.id}/training`, { include: e.target.checked });
    await refresh();
  }));
  $("train").addEventListener("click", () => guarded(async () => {
    $("train-result").hidden = true;
    $("epochs").replaceChildren();
    const job = await api("POST", "/api/train", { model: $("train-model").value, inputs: trainValues() });
    watch(job.id);
  }));
  $("compare").addEventListener("click", () => guarded(async () => {
    $("compare-result").replaceChildren();
    const job = await api("POST", "/api/compare", {
      recording: $("compare-recording").value,
      models: [$("compare-a").value, $("compare-b").value],
    });
    watch(job.id);
  }));
  const audio = $("audio");
  audio.addEventListener("timeupdate", onTime);
  document.addEventListener("keydown", onKey);
  // A smoother highlight than timeupdate's few events a second.
  const tick = () => {
    if (!audio.paused) onTime();
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  guarded(refresh);
}

start();
