// The step panel: a form per step type generated from the workflow JSON Schema: a field per
// property (choices from enums, help from descriptions, defaults as placeholders, required
// marks), expression fields with completion and a live preview, and each problem the server's
// validation found shown under the field it concerns.

import { listDepth, pointerOf } from "./model.js";

let uid = 0;
const nextId = (base) => base + "-" + ++uid;

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  return node;
}
export { h };

const SKIP = new Set(["id", "type", "name"]);

function kindOf(prop) {
  if (!prop) return "json";
  if (prop.$ref === "#/$defs/retry") return "group";
  if (prop.enum) return "enum";
  if (prop.anyOf) return "text-or-number";
  if (prop.type === "boolean") return "boolean";
  if (prop.type === "integer" || prop.type === "number") return "number";
  if (prop.type === "string") {
    if (prop.format === "jmespath") return "expression";
    if (prop.contentMediaType) return "code";
    return (prop.maxLength || 0) > 400 ? "textarea" : "text";
  }
  if (prop.type === "object" && prop.additionalProperties && prop.additionalProperties.type === "string") return "pairs";
  if (prop.type === "object") return "pairs-loose";
  if (!prop.type && !prop.anyOf && !prop.oneOf) return "any";
  return "json";
}

// Renders the form of `step` (at `path`) into `host`. `ctx` gives: model, change(mutator, label,
// coalesce), problemsAt(pointer) -> [messages], expressions (the completion/preview helper),
// addList(name), removeList(name), addBranch(name), record (the last test run's step), types.
export function renderStepForm(host, step, path, ctx) {
  host.textContent = "";
  const info = ctx.model.byType[step.type];
  const pointer = pointerOf(path);
  const form = h("form", { class: "step-form", "aria-label": "Settings of step " + step.id, onsubmit: (e) => e.preventDefault() });
  host.appendChild(form);
  form.appendChild(h("h2", { class: "panel-title", text: step.id + " · " + step.type }));
  if (info && info.description) form.appendChild(h("p", { class: "muted help", text: info.description }));

  // Type, id and name first.
  form.appendChild(field(ctx, pointer + "/type", "Type", true, ctx.model.step.properties.type.description, (id, describedBy) => {
    const select = h("select", { id, "aria-describedby": describedBy, "data-field": "type" });
    for (const type of ctx.model.types) select.appendChild(h("option", { value: type, text: type, selected: type === step.type }));
    select.addEventListener("change", () => ctx.changeType(select.value));
    return select;
  }));
  for (const name of ["id", "name"]) {
    const prop = ctx.model.step.properties[name];
    form.appendChild(field(ctx, pointer + "/" + name, name === "id" ? "Id" : "Name", name === "id", prop.description, (id, describedBy) =>
      textInput(ctx, id, describedBy, step, name, prop, name === "id" ? "id" : "text", pointer)));
  }
  if (!info) return;

  for (const [name, prop] of Object.entries(info.properties)) {
    if (SKIP.has(name)) continue;
    const depth = listDepth(prop);
    if (depth) continue; // step lists are drawn and edited on the canvas, listed below
    const required = info.required.has(name);
    const label = name.replace(/_/g, " ");
    if (kindOf(prop) === "group") {
      form.appendChild(groupFields(ctx, step, name, ctx.model.retry, pointer, prop.description));
      continue;
    }
    form.appendChild(field(ctx, pointer + "/" + name, label, required, prop.description, (id, describedBy) =>
      control(ctx, id, describedBy, step, name, prop, pointer)));
    if (step.type === "http_request" && name === "operation" && ctx.operations.length) form.appendChild(operationPicker(ctx, step));
  }
  if (info.oneOf) form.appendChild(h("p", { class: "muted help", text: "Give exactly one of: " + info.oneOf.map((o) => (o.required || []).join(", ")).join(" or ") + "." }));

  // Nested step lists: what they hold, and buttons for the optional ones.
  const lists = info.lists;
  if (lists.length) {
    const box = h("div", { class: "lists" }, h("h3", { text: "Steps inside" }));
    for (const list of lists) {
      const value = step[list.name];
      const line = h("p", { class: "list-line" });
      if (list.depth === 1) {
        if (Array.isArray(value)) {
          line.appendChild(document.createTextNode(list.name.replace(/_/g, " ") + ": " + value.length + " step" + (value.length === 1 ? "" : "s") + " (on the canvas) "));
          if (!info.required.has(list.name) && !value.length) line.appendChild(h("button", { type: "button", class: "small secondary", text: "Remove " + list.name.replace(/_/g, " "), onclick: () => ctx.removeList(list.name) }));
        } else {
          line.appendChild(h("button", { type: "button", class: "small secondary", text: "Add " + list.name.replace(/_/g, " ") + " steps", onclick: () => ctx.addList(list.name) }));
        }
      } else {
        line.appendChild(document.createTextNode(list.name.replace(/_/g, " ") + ": " + (Array.isArray(value) ? value.length : 0) + " (on the canvas) "));
        line.appendChild(h("button", { type: "button", class: "small secondary", text: "Add a " + list.name.replace(/_/g, " ").replace(/es$/, ""), onclick: () => ctx.addBranch(list.name) }));
      }
      if (list.description) line.appendChild(h("span", { class: "muted help block", text: list.description }));
      box.appendChild(line);
    }
    form.appendChild(box);
  }

  // Problems of the step that no field shows (e.g. a oneOf at the step itself).
  const own = ctx.problemsAt(pointer, true);
  if (own.length) form.insertBefore(h("ul", { class: "problems", role: "alert" }, ...own.map((m) => h("li", { text: m }))), form.children[1]);

  // The last test run's data for this step.
  if (ctx.record) {
    const r = ctx.record;
    form.appendChild(h("div", { class: "step-run" },
      h("h3", { text: "Last test: " + r.status }),
      h("p", { class: "muted", text: "Input" }), h("pre", { class: "token", text: JSON.stringify(r.input, null, 2) }),
      h("p", { class: "muted", text: r.error ? "Error" : "Output" }), h("pre", { class: "token", text: r.error ? r.error : JSON.stringify(r.output, null, 2) })));
  }
}

// An http_request step's operation chosen from the imported connectors' operations (by
// operationId) instead of typed: it sets `operation` and `connector` (unless a connection names
// the connector) and drops `url` and `method`, which the operation decides.
function operationPicker(ctx, step) {
  const id = nextId("op");
  const select = h("select", { id, "data-field": "operation-picker" });
  select.appendChild(h("option", { value: "", text: "(choose one, or type operation and connector)" }));
  ctx.operations.forEach((op, index) => {
    const chosen = step.operation === op.operation_id && (step.connector === op.connector || (!step.connector && step.connection));
    const text = op.connector + " · " + op.operation_id + " — " + op.method + " " + op.path + (op.summary ? ": " + op.summary : "");
    select.appendChild(h("option", { value: String(index), text, selected: chosen }));
  });
  select.addEventListener("change", () => {
    if (select.value === "") return;
    const op = ctx.operations[Number(select.value)];
    ctx.change((s) => {
      s.operation = op.operation_id;
      if (!s.connection) s.connector = op.connector;
      delete s.url;
      delete s.method;
    }, "operation");
    ctx.redraw();
  });
  return h("div", { class: "field" }, h("label", { for: id }, "Imported operation"), select,
    h("p", { class: "muted help", text: "An operation of a connector imported on the Connectors page." }));
}

function field(ctx, pointer, label, required, description, make) {
  const id = nextId("f");
  const helpId = description ? id + "-help" : null;
  const errorId = id + "-error";
  const messages = ctx.problemsAt(pointer);
  const control = make(id, [helpId, messages.length ? errorId : null].filter(Boolean).join(" ") || undefined);
  if (messages.length) control.setAttribute("aria-invalid", "true");
  control.dataset.pointer = pointer;
  return h("div", { class: "field" + (messages.length ? " has-error" : ""), "data-pointer": pointer },
    h("label", { for: id }, label, required ? h("span", { class: "required", "aria-hidden": "true", text: " *" }) : null, required ? h("span", { class: "sr-only", text: " (required)" }) : null),
    control.wrapper || control,
    description ? h("p", { id: helpId, class: "muted help", text: description }) : null,
    messages.length ? h("p", { id: errorId, class: "field-error server", text: messages.join("; ") }) : null);
}

function groupFields(ctx, step, name, schema, pointer, description) {
  const value = step[name] || {};
  const box = h("fieldset", { class: "group" }, h("legend", { text: name.replace(/_/g, " ") }));
  if (description) box.appendChild(h("p", { class: "muted help", text: description }));
  for (const [key, prop] of Object.entries(schema.properties)) {
    box.appendChild(field(ctx, pointer + "/" + name + "/" + key, key.replace(/_/g, " "), false, prop.description, (id, describedBy) => {
      const input = h("input", { id, type: "number", class: "input", "aria-describedby": describedBy, min: prop.minimum, max: prop.maximum, step: "any", placeholder: prop.default !== undefined ? "default " + prop.default : "", value: value[key] === undefined ? "" : String(value[key]) });
      input.addEventListener("input", () => ctx.change((s) => {
        const group = Object.assign({}, s[name] || {});
        if (input.value === "") delete group[key]; else group[key] = Number(input.value);
        if (Object.keys(group).length) s[name] = group; else delete s[name];
      }, name + "." + key));
      return input;
    }));
  }
  return box;
}

function control(ctx, id, describedBy, step, name, prop, pointer) {
  const kind = kindOf(prop);
  const value = step[name];
  const placeholder = prop.default !== undefined ? "default: " + JSON.stringify(prop.default) : "";
  if (kind === "enum") {
    const select = h("select", { id, "aria-describedby": describedBy });
    select.appendChild(h("option", { value: "", text: prop.default !== undefined ? "(default: " + prop.default + ")" : "(not set)" }));
    for (const choice of prop.enum) select.appendChild(h("option", { value: JSON.stringify(choice), text: String(choice), selected: value === choice }));
    select.addEventListener("change", () => ctx.change((s) => { if (select.value === "") delete s[name]; else s[name] = JSON.parse(select.value); }, name));
    return select;
  }
  if (kind === "boolean") {
    const select = h("select", { id, "aria-describedby": describedBy });
    for (const [v, t] of [["", "(default)"], ["true", "yes"], ["false", "no"]]) select.appendChild(h("option", { value: v, text: t, selected: (value === undefined ? "" : String(value)) === v }));
    select.addEventListener("change", () => ctx.change((s) => { if (select.value === "") delete s[name]; else s[name] = select.value === "true"; }, name));
    return select;
  }
  if (kind === "number") {
    const input = h("input", { id, type: "number", class: "input", "aria-describedby": describedBy, min: prop.minimum, max: prop.maximum, step: prop.type === "integer" ? "1" : "any", placeholder, value: value === undefined ? "" : String(value) });
    input.addEventListener("input", () => ctx.change((s) => { if (input.value === "") delete s[name]; else s[name] = Number(input.value); }, name));
    return input;
  }
  if (kind === "pairs") return pairsEditor(ctx, id, describedBy, step, name, pointer, false);
  if (kind === "pairs-loose") return pairsEditor(ctx, id, describedBy, step, name, pointer, true);
  if (kind === "any") return anyEditor(ctx, id, describedBy, step, name, pointer, prop);
  if (kind === "json") return jsonEditor(ctx, id, describedBy, step, name, pointer, prop);
  return textInput(ctx, id, describedBy, step, name, prop, kind, pointer);
}

function textInput(ctx, id, describedBy, step, name, prop, kind, pointer) {
  const multiline = kind === "textarea" || kind === "code";
  const value = step[name];
  const input = h(multiline ? "textarea" : "input", {
    id, class: "input" + (kind === "expression" || kind === "code" ? " code" : ""), "aria-describedby": describedBy,
    rows: kind === "code" ? 10 : multiline ? 5 : undefined, spellcheck: kind === "expression" || kind === "code" ? "false" : undefined,
    autocomplete: "off", maxlength: prop && prop.maxLength, placeholder: prop && prop.default !== undefined ? "default: " + prop.default : undefined,
  });
  input.value = value === undefined || value === null ? "" : String(value);
  input.addEventListener("input", () => ctx.change((s) => {
    if (kind === "text-or-number" && /^\d+$/.test(input.value)) s[name] = Number(input.value);
    else if (input.value === "" && name !== "id") delete s[name];
    else s[name] = input.value;
  }, name, { field: name, input }));
  if (kind === "id") return input;
  if (kind === "code") return input;
  // Every text field may hold {{ }} templates; expression fields are one expression.
  ctx.expressions.attach(input, { bare: kind === "expression", pointer: pointer + "/" + name });
  return input;
}

// Text typed as a value: numbers, true/false/null and JSON objects or lists are kept as such
// (when `loose`); anything else is text, which may hold {{ }} templates.
function looseValue(text) {
  const trimmed = text.trim();
  if (/^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)$/.test(trimmed) || /^[[{]/.test(trimmed)) {
    try { return JSON.parse(trimmed); } catch (error) { return text; }
  }
  return text;
}

function pairsEditor(ctx, id, describedBy, step, name, pointer, loose) {
  const wrapper = h("div", { class: "pairs" });
  const value = step[name];
  const entries = value && typeof value === "object" && !Array.isArray(value) ? Object.entries(value) : [];
  const commit = () => ctx.change((s) => {
    const out = {};
    wrapper.querySelectorAll(".pair").forEach((row) => {
      const [k, v] = row.querySelectorAll("input");
      if (k.value) out[k.value] = loose ? looseValue(v.value) : v.value;
    });
    if (Object.keys(out).length) s[name] = out; else delete s[name];
  }, name);
  const addRow = (key, value, first) => {
    const keyInput = h("input", { class: "input", "aria-label": name + " name", value: key, id: first ? id : undefined, "aria-describedby": first ? describedBy : undefined, autocomplete: "off" });
    const valueInput = h("input", { class: "input", "aria-label": name + " value" + (key ? " of " + key : ""), autocomplete: "off" });
    valueInput.value = value;
    keyInput.value = key;
    keyInput.addEventListener("input", commit);
    valueInput.addEventListener("input", commit);
    const row = h("div", { class: "pair" }, keyInput, ctx.expressions.attach(valueInput, { bare: false, pointer: pointer + "/" + name + "/" + (key || "_") }),
      h("button", { type: "button", class: "small secondary", "aria-label": "Remove " + (key || "this row"), text: "✕", onclick: () => { row.remove(); commit(); } }));
    wrapper.insertBefore(row, wrapper.lastChild);
  };
  wrapper.appendChild(h("button", { type: "button", class: "small secondary", text: "Add " + name.replace(/_/g, " ").replace(/s$/, ""), onclick: () => { addRow("", "", false); wrapper.querySelectorAll(".pair input")[wrapper.querySelectorAll(".pair").length * 2 - 2].focus(); } }));
  if (!entries.length) addRow("", "", true);
  entries.forEach(([k, v], i) => addRow(k, typeof v === "string" ? v : JSON.stringify(v), i === 0));
  // The label points at the first name field.
  if (!wrapper.querySelector("#" + CSS.escape(id))) wrapper.querySelector(".pair input").id = id;
  wrapper.setAttribute("role", "group");
  wrapper.setAttribute("aria-label", name.replace(/_/g, " "));
  if (loose) wrapper.appendChild(h("p", { class: "muted help", text: "Numbers, true/false and JSON are kept as such; anything else is text, which may hold {{ }}." }));
  wrapper.wrapper = wrapper;
  return wrapper;
}

// A value of any JSON type (a request or answer body): as fields (an object), as text (which
// may be one {{ }} template giving any value), or as JSON; the choice follows the value.
function anyEditor(ctx, id, describedBy, step, name, pointer, prop) {
  const value = step[name];
  let mode = value === undefined || (value && typeof value === "object" && !Array.isArray(value)) ? "fields" : typeof value === "string" ? "text" : "json";
  const box = h("div", { class: "any-field" });
  const modes = h("div", { class: "modes", role: "group", "aria-label": "Show " + name.replace(/_/g, " ") + " as" });
  const holder = h("div");
  const labels = { fields: "Fields", text: "Text", json: "As JSON" };
  const draw = () => {
    holder.textContent = "";
    modes.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.mode === mode)));
    const current = { [name]: step[name] };
    if (mode === "fields") holder.appendChild(pairsEditor(ctx, id, describedBy, current, name, pointer, true));
    else if (mode === "text") {
      const input = textInput(ctx, id, describedBy, current, name, { type: "string" }, "textarea", pointer);
      holder.appendChild(input.wrapper || input);
    } else {
      const input = jsonEditor(ctx, id, describedBy, current, name, pointer, prop);
      holder.appendChild(input.wrapper);
    }
  };
  for (const key of ["fields", "text", "json"]) {
    modes.appendChild(h("button", { type: "button", class: "tool small", "data-mode": key, text: labels[key], onclick: () => {
      const now = step[name];
      if (key === "fields" && now !== undefined && (typeof now !== "object" || Array.isArray(now) || now === null)) {
        holder.prepend(h("p", { class: "field-error", role: "alert", text: "Only an object can be shown as fields; use Text or As JSON." }));
        return;
      }
      mode = key;
      draw();
    } }));
  }
  box.appendChild(modes);
  box.appendChild(holder);
  draw();
  box.wrapper = box;
  return box;
}

function jsonEditor(ctx, id, describedBy, step, name, pointer, prop) {
  const value = step[name];
  const errorId = id + "-json";
  const input = h("textarea", { id, class: "input code", rows: 5, spellcheck: "false", "aria-describedby": [describedBy, errorId].filter(Boolean).join(" "), placeholder: "JSON, e.g. {\"ok\": true}" });
  input.value = value === undefined ? "" : JSON.stringify(value, null, 2);
  const message = h("p", { id: errorId, class: "field-error", "aria-live": "polite" });
  input.addEventListener("input", () => {
    if (input.value.trim() === "") { message.textContent = ""; input.removeAttribute("aria-invalid"); ctx.change((s) => { delete s[name]; }, name); return; }
    let parsed;
    try { parsed = JSON.parse(input.value); } catch (error) {
      message.textContent = "Not valid JSON yet: " + error.message + ". The step keeps its last valid value.";
      input.setAttribute("aria-invalid", "true");
      return;
    }
    if (prop.type === "object" && (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))) {
      message.textContent = "This must be a JSON object, e.g. {\"name\": \"value\"}.";
      input.setAttribute("aria-invalid", "true");
      return;
    }
    message.textContent = "";
    input.removeAttribute("aria-invalid");
    ctx.change((s) => { s[name] = parsed; }, name);
  });
  const wrapped = ctx.expressions.attach(input, { bare: false, pointer: pointer + "/" + name, json: true });
  const wrapper = h("div", { class: "json-field" }, wrapped, message);
  input.wrapper = wrapper;
  return input;
}

// The trigger's form, from the schema's trigger object.
export function renderTriggerForm(host, doc, ctx) {
  host.textContent = "";
  const trigger = doc.trigger || {};
  const schema = ctx.model.trigger;
  const form = h("form", { class: "step-form", "aria-label": "Trigger settings", onsubmit: (e) => e.preventDefault() }, h("h2", { class: "panel-title", text: "Trigger" }));
  form.appendChild(h("p", { class: "muted help", text: "What starts a run of this workflow. Select a step on the canvas to edit it." }));
  // The type first; a schedule's settings only when it is one.
  const names = Object.keys(schema.properties).sort((a, b) => (a === "type" ? -1 : b === "type" ? 1 : 0));
  for (const name of names) {
    const prop = schema.properties[name];
    if (name !== "type" && trigger.type !== "schedule" && trigger[name] === undefined) continue;
    form.appendChild(field(ctx, "/trigger/" + name, name, (schema.required || []).includes(name), prop.description, (id, describedBy) => {
      if (prop.enum) {
        const select = h("select", { id, "aria-describedby": describedBy });
        for (const choice of prop.enum) select.appendChild(h("option", { value: choice, text: choice, selected: trigger[name] === choice }));
        select.addEventListener("change", () => { ctx.changeDoc((d) => { d.trigger = Object.assign({}, d.trigger, { [name]: select.value }); }, "trigger." + name); ctx.redraw(); });
        return select;
      }
      const input = h("input", { id, class: "input", "aria-describedby": describedBy, autocomplete: "off" });
      input.value = trigger[name] || "";
      input.addEventListener("input", () => ctx.changeDoc((d) => {
        d.trigger = Object.assign({}, d.trigger);
        if (input.value) d.trigger[name] = input.value; else delete d.trigger[name];
      }, "trigger." + name));
      return input;
    }));
  }
  host.appendChild(form);
}
