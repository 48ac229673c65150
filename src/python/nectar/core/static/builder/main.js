// The builder page: one document edited through the canvas, the step panel and the JSON view,
// with undo/redo, copy/paste, validation by the server (problems at their JSON Pointers), a test
// run of the draft, saving as a new version, and comparing or rolling back versions.

import { Canvas } from "./canvas.js";
import { Expressions } from "./expressions.js";
import { h, renderStepForm, renderTriggerForm } from "./form.js";
import { clone, get, insertStep, moveStep, newStep, pathOf, pointerOf, readSchema, removeStep, renumber, samePath, walk } from "./model.js";
import { renderDiff } from "./versions.js";

const data = JSON.parse(document.getElementById("builder-data").textContent);
const $ = (id) => document.getElementById(id);
const model = readSchema(data.schema);
const api = "/api/v1/workflows/" + data.workflow_id;

let doc = clone(data.definition);
let saved = JSON.stringify(doc);
let selected = null; // path of the selected step; null: the trigger
let clipboard = null;
let problems = []; // [{path, message}] from the server's validate()
let lastRun = null;
const undoStack = [], redoStack = [];
let lastChange = { label: null, at: 0 };

const expressions = new Expressions(data.workflow_id, () => doc, () => lastRun && lastRun.id);
window.nectarBuilder = { get doc() { return doc; }, expressions, timings: {}, redraw: () => drawCanvas() };

const canvas = new Canvas($("canvas"), model, {
  select: (path, focusPanel) => select(path, focusPanel),
  addAt: (listPath, index, anchor) => openPicker(listPath, index, anchor),
  move: (from, listPath, index) => edit("Move", (d) => { const to = moveStep(d, from, listPath, index); if (to) selected = to; return !!to; }),
  key: (event, target) => canvasKey(event, target),
});

// ---- state changes -------------------------------------------------------------------------

function snapshot() { return { doc: JSON.stringify(doc), selected: selected && selected.slice() }; }

function checkpoint(label, coalesce) {
  const now = Date.now();
  if (coalesce && lastChange.label === label && now - lastChange.at < 1500) { lastChange.at = now; return; }
  undoStack.push(snapshot());
  if (undoStack.length > 200) undoStack.shift();
  redoStack.length = 0;
  lastChange = { label, at: now };
}

// A structural edit: the canvas and the panel are drawn again.
function edit(label, mutate) {
  const before = snapshot();
  const working = clone(doc);
  const previousSelection = selected;
  if (mutate(working) === false) { selected = previousSelection; return; }
  undoStack.push(before);
  redoStack.length = 0;
  lastChange = { label, at: Date.now() };
  doc = working;
  announce(label + " done.");
  changed({ panel: true });
}

// A field edit of the selected step (or the document): the form stays as it is while typing,
// and the canvas is drawn again once typing pauses, so a keystroke's preview is not held up.
let redrawTimer = null;
function fieldEdit(mutate, label) {
  checkpoint(label, true);
  mutate();
  updateDirty();
  scheduleValidation();
  clearTimeout(redrawTimer);
  redrawTimer = setTimeout(drawCanvas, 150);
}

function changed({ panel }) {
  drawCanvas();
  if (panel) drawPanel();
  if (!$("json-view").hidden) $("json-editor").value = JSON.stringify(doc, null, 2);
  updateDirty();
  scheduleValidation();
}

function restore(state) {
  doc = JSON.parse(state.doc);
  selected = state.selected && get(doc, state.selected) ? state.selected : null;
  changed({ panel: true });
}

function undo() { if (!undoStack.length) return; redoStack.push(snapshot()); restore(undoStack.pop()); lastChange = { label: null, at: 0 }; announce("Undone."); }
function redo() { if (!redoStack.length) return; undoStack.push(snapshot()); restore(redoStack.pop()); lastChange = { label: null, at: 0 }; announce("Redone."); }

function announce(message) { $("announcer").textContent = message; }

function isDirty() { return JSON.stringify(doc) !== saved; }
function updateDirty() {
  const dirty = isDirty();
  $("dirty-status").textContent = dirty ? "Unsaved changes" : "Saved";
  $("dirty-status").className = "dirty-status " + (dirty ? "is-dirty" : "is-saved");
  $("undo").disabled = !undoStack.length;
  $("redo").disabled = !redoStack.length;
  const size = JSON.stringify(doc).length;
  const tooBig = size > data.max_document_chars;
  $("size-problem").textContent = tooBig ? `The document is ${Math.round(size / 1000)} kB, over the limit of ${Math.round(data.max_document_chars / 1000)} kB: remove steps or shorten values to save or test it.` : "";
  $("save").disabled = !data.editable || tooBig;
  $("test").disabled = !data.editable || tooBig;
}

window.addEventListener("beforeunload", (event) => {
  if (isDirty()) { event.preventDefault(); event.returnValue = ""; }
});

// ---- drawing -------------------------------------------------------------------------------

// Each problem marks the innermost step it is in (the trigger's mark the trigger).
function problemCount(pointer) {
  return problems.filter((p) => {
    const owner = stepOf(p.path);
    return owner ? pointerOf(owner) === pointer : pointer === "/trigger" && p.path.startsWith("/trigger");
  }).length;
}

function runRecords() {
  const records = new Map();
  if (lastRun && Array.isArray(lastRun.steps)) for (const record of lastRun.steps) if (!records.has(record.step_id)) records.set(record.step_id, record);
  return records;
}

function drawCanvas() {
  const started = performance.now();
  canvas.render(doc, { selected, problems: problemCount, run: runRecords() });
  window.nectarBuilder.timings.lastDraw = performance.now() - started;
}

// The problems of a field (those inside its value too, e.g. /steps/1/body/x, with where), or
// with `exact`, only those at the pointer itself.
function problemsAt(pointer, exact) {
  return problems
    .filter((p) => p.path === pointer || (!exact && p.path.startsWith(pointer + "/")))
    .map((p) => (p.path === pointer ? p.message : p.path.slice(pointer.length + 1) + ": " + p.message));
}

function drawPanel(focus) {
  const host = $("panel");
  const step = selected ? get(doc, selected) : null;
  const ctx = {
    model, expressions, problemsAt, record: step ? runRecords().get(step.id) : null,
    operations: data.operations || [],
    change: (mutate, label) => fieldEdit(() => mutate(get(doc, selected)), "field " + label),
    changeDoc: (mutate, label) => fieldEdit(() => mutate(doc), label),
    changeType: (type) => edit("Change type", (d) => {
      const old = get(d, selected);
      const fresh = newStep(model, d, type);
      fresh.id = old.id;
      for (const key of ["name", "retry", "on_error"]) if (old[key] !== undefined) fresh[key] = old[key];
      get(d, selected.slice(0, -1))[selected[selected.length - 1]] = fresh;
    }),
    redraw: () => drawPanel(),
    addList: (name) => edit("Add " + name, (d) => { get(d, selected)[name] = []; }),
    removeList: (name) => edit("Remove " + name, (d) => { delete get(d, selected)[name]; }),
    addBranch: (name) => edit("Add branch", (d) => { const s = get(d, selected); s[name] = (s[name] || []).concat([[]]); }),
  };
  if (step && typeof step === "object") renderStepForm(host, step, selected, ctx);
  else renderTriggerForm(host, doc, ctx);
  if (step && data.editable) {
    host.querySelector("form").appendChild(h("div", { class: "row panel-actions" },
      h("button", { type: "button", class: "small secondary", text: "Copy", onclick: copySelected }),
      h("button", { type: "button", class: "small danger", text: "Delete step", onclick: deleteSelected })));
  }
  if (!data.editable) host.querySelectorAll("input, select, textarea, button").forEach((n) => { n.disabled = true; });
  if (focus) { const first = host.querySelector("input, select, textarea"); if (first) first.focus(); }
}

function select(path, focusPanel) {
  selected = path;
  drawCanvas();
  drawPanel(focusPanel);
}

// ---- adding, moving, copying ---------------------------------------------------------------

function openPicker(listPath, index, anchor) {
  if (!data.editable) return;
  const host = $("panel");
  host.textContent = "";
  const box = h("div", { class: "picker", role: "group", "aria-labelledby": "picker-title" },
    h("h2", { id: "picker-title", class: "panel-title", text: anchor ? anchor.getAttribute("aria-label") : "Add a step" }),
    h("p", { class: "muted help", text: "Choose what the new step does. Esc goes back to the canvas." }));
  const list = h("div", { class: "picker-list" });
  const place = (step) => edit("Add " + step.type, (d) => { selected = insertStep(d, listPath, index, step.id ? step : step); });
  if (clipboard) {
    list.appendChild(h("button", { type: "button", class: "picker-item paste", onclick: () => { place(renumber(model, doc, clipboard)); focusSelected(); } },
      h("strong", { text: "Paste " + clipboard.id }), h("span", { class: "muted", text: " the copied " + clipboard.type + " step" })));
  }
  for (const type of model.types) {
    const description = model.byType[type].description;
    list.appendChild(h("button", { type: "button", class: "picker-item", "data-type": type, onclick: () => { place(newStep(model, doc, type)); focusSelected(); } },
      h("strong", { text: type }), description ? h("span", { class: "muted", text: " " + description.split(". ")[0].replace(/\.$/, "") + "." }) : null));
  }
  box.appendChild(list);
  box.appendChild(h("button", { type: "button", class: "small secondary", text: "Cancel", onclick: () => { drawPanel(); if (anchor) canvas.focusKey(anchor.dataset.key); } }));
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { event.preventDefault(); drawPanel(); if (anchor) canvas.focusKey(anchor.dataset.key); }
    const items = [...list.querySelectorAll("button")];
    const at = items.indexOf(document.activeElement);
    if (at !== -1 && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
      event.preventDefault();
      items[(at + (event.key === "ArrowDown" ? 1 : -1) + items.length) % items.length].focus();
    }
  });
  host.appendChild(box);
  list.querySelector("button").focus();
  if (window.matchMedia("(max-width: 900px)").matches) host.scrollIntoView({ block: "start" });
}

function focusSelected() { if (selected) canvas.focusKey(pointerOf(selected)); }

function copySelected() {
  if (!selected) return;
  clipboard = clone(get(doc, selected));
  announce("Copied " + clipboard.id + ". Paste it at a + on the canvas (Ctrl+V).");
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(JSON.stringify(clipboard, null, 2)).catch(() => {});
}

function deleteSelected() {
  if (!selected) return;
  const path = selected;
  const id = get(doc, path).id;
  edit("Delete " + id, (d) => {
    removeStep(d, path);
    const list = get(d, path.slice(0, -1));
    const index = path[path.length - 1];
    selected = list.length ? path.slice(0, -1).concat([Math.min(index, list.length - 1)]) : null;
  });
  if (selected) focusSelected(); else canvas.focusKey("trigger");
}

function pasteAt(listPath, index) {
  if (!clipboard) { announce("Nothing copied yet: select a step and press Ctrl+C."); return; }
  edit("Paste", (d) => { selected = insertStep(d, listPath, index, renumber(model, d, clipboard)); });
  focusSelected();
}

function moveBy(delta) {
  if (!selected) return;
  const index = selected[selected.length - 1];
  const listPath = selected.slice(0, -1);
  const list = get(doc, listPath);
  const to = index + delta;
  if (to < 0 || to >= list.length) return;
  edit("Move", (d) => { selected = moveStep(d, selected, listPath, delta > 0 ? to + 1 : to); });
  focusSelected();
}

function canvasKey(event, target) {
  const mod = event.ctrlKey || event.metaKey;
  if (target.kind === "node" && target.path && !samePath(target.path, selected)) { selected = target.path; drawPanel(); }
  if ((event.key === "Delete" || event.key === "Backspace") && target.kind === "node" && target.path && data.editable) { event.preventDefault(); deleteSelected(); }
  else if (mod && event.key.toLowerCase() === "c" && target.path) { event.preventDefault(); copySelected(); }
  else if (mod && event.key.toLowerCase() === "x" && target.path && data.editable) { event.preventDefault(); copySelected(); deleteSelected(); }
  else if (mod && event.key.toLowerCase() === "v" && data.editable) {
    event.preventDefault();
    if (target.kind === "slot") pasteAt(target.listPath, target.index);
    else if (target.path) pasteAt(target.path.slice(0, -1), target.path[target.path.length - 1] + 1);
  } else if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown") && target.path && data.editable) {
    event.preventDefault(); moveBy(event.key === "ArrowUp" ? -1 : 1);
  } else if (event.key === "+" || event.key === "=") { canvas.zoom(1.2); }
  else if (event.key === "-") { canvas.zoom(1 / 1.2); }
  else if (event.key === "0") { canvas.fit(); }
  else return;
  drawCanvas();
  if (selected && target.kind === "node") canvas.focusKey(pointerOf(selected));
}

document.addEventListener("keydown", (event) => {
  const mod = event.ctrlKey || event.metaKey;
  const typing = event.target.closest && event.target.closest("input, textarea, select");
  if (!mod || typing || !data.editable) return;
  const key = event.key.toLowerCase();
  if (key === "z" && !event.shiftKey) { event.preventDefault(); undo(); }
  else if ((key === "z" && event.shiftKey) || key === "y") { event.preventDefault(); redo(); }
});

// ---- validation ----------------------------------------------------------------------------

let validationTimer = null, validationSequence = 0;
function scheduleValidation() {
  clearTimeout(validationTimer);
  validationTimer = setTimeout(validateNow, 300);
}

async function validateNow() {
  const sequence = ++validationSequence;
  if (JSON.stringify(doc).length > data.max_document_chars) return;
  const result = await nectarApi("POST", "/api/v1/workflows/validate", { definition: doc });
  if (sequence !== validationSequence || result.status !== 200) return;
  problems = result.data.errors || [];
  showProblems();
}

function showProblems() {
  drawCanvas();
  const summary = $("problems-summary");
  summary.textContent = "";
  if (!problems.length) { summary.appendChild(h("p", { class: "valid", text: "✓ No problems found." })); updateFieldErrors(); return; }
  const list = h("ul", { class: "problems" });
  for (const problem of problems.slice(0, 20)) {
    list.appendChild(h("li", {}, h("button", { type: "button", class: "link", text: problem.path, onclick: () => goToProblem(problem.path) }), ": " + problem.message));
  }
  summary.appendChild(h("p", { class: "problems-title", text: problems.length + " problem" + (problems.length > 1 ? "s" : "") + " to fix before saving:" }));
  summary.appendChild(list);
  updateFieldErrors();
}

function stepOf(pointer) {
  const path = pathOf(pointer);
  for (let n = path.length; n > 0; n--) {
    const candidate = path.slice(0, n);
    const value = get(doc, candidate);
    if (typeof candidate[candidate.length - 1] === "number" && value && typeof value === "object" && !Array.isArray(value) && value.type) return candidate;
  }
  return null;
}

function goToProblem(pointer) {
  const path = stepOf(pointer);
  select(path);
  const target = $("panel").querySelector(`[data-pointer="${CSS.escape(pointer)}"] input, [data-pointer="${CSS.escape(pointer)}"] select, [data-pointer="${CSS.escape(pointer)}"] textarea`);
  if (target) target.focus(); else if (path) canvas.focusKey(pointerOf(path));
}

// Field errors are updated in place: the form is not drawn again while someone types in it.
function updateFieldErrors() {
  document.querySelectorAll("#panel .field[data-pointer]").forEach((field) => {
    const messages = problemsAt(field.dataset.pointer);
    let message = field.querySelector(":scope > .field-error.server");
    const control = field.querySelector("input, select, textarea");
    if (!messages.length) {
      if (message) message.remove();
      field.classList.remove("has-error");
      if (control && !control.closest(".expr, .json-field")) control.removeAttribute("aria-invalid");
      return;
    }
    if (!message) {
      message = h("p", { class: "field-error server", id: "err-" + Math.random().toString(36).slice(2) });
      field.appendChild(message);
      if (control) control.setAttribute("aria-describedby", [control.getAttribute("aria-describedby"), message.id].filter(Boolean).join(" "));
    }
    message.textContent = messages.join("; ");
    field.classList.add("has-error");
    if (control) control.setAttribute("aria-invalid", "true");
  });
}

// ---- the JSON view -------------------------------------------------------------------------

function showView(name) {
  const json = name === "json";
  $("canvas-view").hidden = json;
  $("json-view").hidden = !json;
  $("view-canvas").setAttribute("aria-pressed", String(!json));
  $("view-json").setAttribute("aria-pressed", String(json));
  if (json) { $("json-editor").value = JSON.stringify(doc, null, 2); $("json-error").textContent = ""; }
  else { drawCanvas(); drawPanel(); }
}
$("view-canvas").addEventListener("click", () => showView("canvas"));
$("view-json").addEventListener("click", () => showView("json"));

$("json-editor").addEventListener("input", () => {
  const text = $("json-editor").value;
  let parsed;
  try { parsed = JSON.parse(text); } catch (error) {
    const at = /position (\d+)/.exec(error.message);
    let where = "";
    if (at) { const before = text.slice(0, Number(at[1])); where = ` (line ${before.split("\n").length}, column ${before.length - before.lastIndexOf("\n")})`; }
    $("json-error").textContent = "Not valid JSON" + where + ": " + error.message + ". The canvas keeps the last valid document; nothing is lost.";
    $("json-editor").setAttribute("aria-invalid", "true");
    return;
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    $("json-error").textContent = "The document must be a JSON object with a trigger and steps.";
    $("json-editor").setAttribute("aria-invalid", "true");
    return;
  }
  $("json-error").textContent = "";
  $("json-editor").removeAttribute("aria-invalid");
  checkpoint("json", true);
  doc = parsed;
  if (selected && !get(doc, selected)) selected = null;
  drawCanvas();
  updateDirty();
  scheduleValidation();
});

// ---- toolbar -------------------------------------------------------------------------------

$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("zoom-in").addEventListener("click", () => canvas.zoom(1.2));
$("zoom-out").addEventListener("click", () => canvas.zoom(1 / 1.2));
$("zoom-fit").addEventListener("click", () => canvas.fit());

// ---- testing the draft ---------------------------------------------------------------------

const pinKey = "nectar.builder.input." + data.workflow_id;
const pinned = localStorage.getItem(pinKey);
if (pinned !== null) { $("test-input").value = pinned; $("pin-input").checked = true; }
$("pin-input").addEventListener("change", () => {
  if ($("pin-input").checked) localStorage.setItem(pinKey, $("test-input").value); else localStorage.removeItem(pinKey);
});
$("test-input").addEventListener("input", () => { if ($("pin-input").checked) localStorage.setItem(pinKey, $("test-input").value); });

$("test").addEventListener("click", async () => {
  const out = $("test-result");
  let input;
  try { input = JSON.parse($("test-input").value || "{}"); } catch (error) {
    $("test-input-error").textContent = "The sample input is not valid JSON: " + error.message;
    $("test-input").setAttribute("aria-invalid", "true");
    return;
  }
  $("test-input-error").textContent = "";
  $("test-input").removeAttribute("aria-invalid");
  out.textContent = "Starting a test run of the draft…";
  let result = await nectarApi("POST", api + "/test-runs", { definition: doc, input });
  if (result.status !== 202) {
    out.textContent = "";
    if (result.data && result.data.errors) { problems = result.data.errors; showProblems(); out.textContent = "The draft has problems (listed above); fix them and test again."; }
    else nectarShowProblems(out, result.data || { detail: "The test could not start (" + result.status + ")." });
    return;
  }
  out.textContent = "Test run queued; running…";
  for (let i = 0; i < 120 && ["queued", "running"].includes(result.data.status); i++) {
    await new Promise((resolve) => setTimeout(resolve, 400));
    result = await nectarApi("GET", "/api/v1/runs/" + result.data.id);
  }
  lastRun = result.data;
  expressions.contexts.clear();
  out.textContent = "";
  const status = lastRun.status;
  out.appendChild(h("p", { class: "test-status status-" + (status === "succeeded" ? "up" : status === "failed" ? "down" : "wait") },
    "Test run " + status + (lastRun.duration_ms != null ? " in " + lastRun.duration_ms + " ms" : "") + (lastRun.error ? ": " + lastRun.error : "") + ". ",
    h("a", { href: "/org/runs/" + lastRun.id, text: "Open its trace" })));
  drawCanvas();
  drawPanel();
});

// ---- saving and versions -------------------------------------------------------------------

$("save").addEventListener("click", async () => {
  const result = await nectarApi("POST", api + "/versions", { definition: doc, note: $("version-note").value });
  if (result.status === 201) {
    saved = JSON.stringify(doc);
    announce("Saved as version " + result.data.version + ".");
    window.location.reload();
    return;
  }
  if (result.status === 413) { $("save-problem").textContent = "The document is too large to save."; return; }
  if (result.data && result.data.errors) { problems = result.data.errors; showProblems(); $("save-problem").textContent = "Not saved: fix the problems listed above first. Nothing was lost."; }
  else nectarShowProblems($("save-problem"), result.data);
});

document.querySelectorAll(".rollback").forEach((button) => {
  button.addEventListener("click", async () => {
    if (isDirty()) { $("versions-problem").textContent = "You have unsaved changes: save them (or undo them) before rolling back."; return; }
    const result = await nectarApi("POST", api + "/rollback", { version: Number(button.dataset.version) });
    if (result.status === 201) window.location.reload(); else nectarShowProblems($("versions-problem"), result.data);
  });
});

$("compare").addEventListener("click", async () => {
  const left = document.querySelector("input[name=compare-left]:checked");
  const right = document.querySelector("input[name=compare-right]:checked");
  if (!left || !right || left.value === right.value) { $("versions-problem").textContent = "Choose two different versions to compare."; return; }
  $("versions-problem").textContent = "";
  const result = await nectarApi("GET", api + "/versions");
  const byNumber = new Map(result.data.items.map((v) => [v.version, v]));
  renderDiff($("diff"), model, byNumber.get(Number(left.value)), byNumber.get(Number(right.value)));
  $("diff").focus();
});

// ---- start ---------------------------------------------------------------------------------

if (!data.editable) ["save", "test"].forEach((id) => { $(id).disabled = true; });
const opened = performance.now();
drawCanvas();
canvas.fit();
drawPanel();
updateDirty();
// For the benchmark: the first drawing, and when it was done since navigation started.
window.nectarBuilder.timings.firstDraw = performance.now() - opened;
window.nectarBuilder.timings.drawnAt = performance.now();
scheduleValidation();
document.body.dataset.builderReady = "true";
