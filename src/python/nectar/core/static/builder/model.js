// The workflow document as the builder edits it, read through the published JSON Schema: which
// step types exist, their fields, and which fields hold nested steps (any property whose items are
// "#/$defs/step", or lists of such lists), so a step type added to the schema is edited too.

export const STEP_REF = "#/$defs/step";

export function readSchema(schema) {
  const step = schema.$defs.step;
  const types = step.properties.type.enum;
  const byType = {};
  for (const type of types) {
    const rule = (step.allOf || []).find((r) => r.if && r.if.properties && r.if.properties.type && r.if.properties.type.const === type);
    const then = (rule && rule.then) || {};
    // The type's own fields first, then those every step has (retry, on_error).
    const properties = Object.assign({}, then.properties || {});
    for (const [name, prop] of Object.entries(step.properties)) if (!(name in properties)) properties[name] = prop;
    const lists = [];
    for (const [name, prop] of Object.entries(properties)) {
      const depth = listDepth(prop);
      if (depth) lists.push({ name, depth, description: prop.description || "" });
    }
    const required = new Set(then.required || []);
    byType[type] = { type, description: then.description || "", properties, required, lists, oneOf: then.oneOf || null };
  }
  return { types, byType, step, trigger: schema.properties.trigger, retry: schema.$defs.retry };
}

export function listDepth(prop) {
  if (!prop || !prop.items) return 0;
  if (prop.items.$ref === STEP_REF) return 1;
  if (prop.items.items && prop.items.items.$ref === STEP_REF) return 2;
  return 0;
}

export const clone = (value) => JSON.parse(JSON.stringify(value));

export function pointerOf(path) {
  return "/" + path.map((p) => String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("/");
}

export function pathOf(pointer) {
  if (!pointer || pointer === "/") return [];
  return pointer.slice(1).split("/").map((p) => (/^\d+$/.test(p) ? Number(p) : p.replace(/~1/g, "/").replace(/~0/g, "~")));
}

export function get(doc, path) {
  let value = doc;
  for (const key of path) {
    if (value == null) return undefined;
    value = value[key];
  }
  return value;
}

export const samePath = (a, b) => a && b && a.length === b.length && a.every((x, i) => x === b[i]);
export const isInside = (path, outer) => path.length > outer.length && outer.every((x, i) => path[i] === x);

// Each step list of a step: {path (of the list), name, label, steps}.
export function listsOf(model, step, stepPath) {
  const info = model.byType[step.type];
  const found = [];
  if (!info) return found;
  for (const list of info.lists) {
    const value = step[list.name];
    if (list.depth === 1) {
      // Lists the step has (or must have) are lanes; the panel offers to add the optional others.
      if (Array.isArray(value) || info.required.has(list.name)) {
        found.push({ path: stepPath.concat([list.name]), name: list.name, label: list.name.replace(/_/g, " "), steps: Array.isArray(value) ? value : [] });
      }
    } else {
      (Array.isArray(value) ? value : []).forEach((inner, i) => {
        found.push({ path: stepPath.concat([list.name, i]), name: list.name, label: list.name.replace(/_/g, " ").replace(/es$/, "") + " " + (i + 1), steps: Array.isArray(inner) ? inner : [] });
      });
    }
  }
  return found;
}

// Every step in document order: {path, step, depth}.
export function walk(model, doc) {
  const out = [];
  (function visit(steps, path, depth) {
    (steps || []).forEach((step, i) => {
      if (!step || typeof step !== "object") return;
      const stepPath = path.concat([i]);
      out.push({ path: stepPath, step, depth });
      for (const list of listsOf(model, step, stepPath)) visit(list.steps, list.path, depth + 1);
    });
  })(doc.steps, ["steps"], 0);
  return out;
}

export function uniqueId(model, doc, base) {
  const used = new Set(walk(model, doc).map((s) => s.step.id));
  base = String(base || "step").toLowerCase().replace(/[^a-z0-9_]/g, "_").replace(/^[^a-z]+/, "") || "step";
  base = base.slice(0, 56);
  if (!used.has(base)) return base;
  let n = 2;
  while (used.has(base + "_" + n)) n += 1;
  return base + "_" + n;
}

// Starting values that make a new step of a known type do something sensible; any other type
// gets its required fields from the schema (enums' first choice, empty text, empty step lists).
const STARTERS = {
  http_request: { method: "GET", url: "https://api.example.com/items" },
  transform: { expression: "trigger.body" },
  condition: { if: "trigger.body.ok", then: [], else: [] },
  for_each: { items: "trigger.body.items", steps: [] },
  set: { values: { name: "value" } },
  send_email: { to: "{{ trigger.body.email }}", subject: "Hello", body: "Hi there" },
  respond: { status: 200, body: { ok: true } },
  code: { source: "return ctx.trigger.body;" },
  wait: { seconds: 60 },
  delay: { seconds: 5 },
  parallel: { branches: [[], []] },
};

export function newStep(model, doc, type) {
  const info = model.byType[type];
  const step = { id: uniqueId(model, doc, type), type };
  if (STARTERS[type]) return Object.assign(step, clone(STARTERS[type]));
  for (const name of info.required) {
    if (name === "id" || name === "type") continue;
    const prop = info.properties[name] || {};
    const depth = listDepth(prop);
    if (depth === 1) step[name] = [];
    else if (depth === 2) step[name] = [[]];
    else if (prop.enum) step[name] = prop.enum[0];
    else if (prop.default !== undefined) step[name] = clone(prop.default);
    else if (prop.type === "object") step[name] = {};
    else if (prop.type === "number" || prop.type === "integer") step[name] = prop.minimum || 0;
    else if (prop.type === "boolean") step[name] = false;
    else step[name] = "";
  }
  return step;
}

// A list to insert into: created when a step's optional list (else, on_error) is not there yet.
export function ensureList(doc, listPath) {
  const parent = get(doc, listPath.slice(0, -1));
  const key = listPath[listPath.length - 1];
  if (!Array.isArray(parent[key])) parent[key] = [];
  return parent[key];
}

export function insertStep(doc, listPath, index, step) {
  const list = ensureList(doc, listPath);
  list.splice(Math.max(0, Math.min(index, list.length)), 0, step);
  return listPath.concat([Math.max(0, Math.min(index, list.length - 1))]);
}

export function removeStep(doc, path) {
  const list = get(doc, path.slice(0, -1));
  const [step] = list.splice(path[path.length - 1], 1);
  return step;
}

// Moves the step at `from` to position `index` of the list at `listPath`; returns its new path,
// or null when the place is inside the step itself.
export function moveStep(doc, from, listPath, index) {
  if (isInside(listPath, from) || samePath(listPath, from)) return null;
  const fromList = from.slice(0, -1);
  const fromIndex = from[from.length - 1];
  const step = removeStep(doc, from);
  // The target's path may shift when the step was before it in the same or an enclosing list.
  const target = listPath.slice();
  if (isInside(target, fromList) || samePath(target, fromList)) {
    const at = fromList.length;
    if (samePath(target, fromList)) {
      if (index > fromIndex) index -= 1;
    } else if (typeof target[at] === "number" && target[at] > fromIndex) {
      target[at] -= 1;
    }
  }
  return insertStep(doc, target, index, step);
}

// Ids made unique for a pasted copy (its nested steps too).
export function renumber(model, doc, step) {
  const copy = clone(step);
  const taken = new Set(walk(model, doc).map((s) => s.step.id));
  (function fix(s) {
    let id = s.id, n = 2;
    const base = String(id || s.type).replace(/_copy(_\d+)?$/, "") + "_copy";
    id = base;
    while (taken.has(id)) id = base + "_" + n++;
    s.id = id.slice(0, 64);
    taken.add(s.id);
    for (const list of listsOf(model, s, [])) list.steps.forEach(fix);
  })(copy);
  return copy;
}

export function summary(step) {
  const pick = step.url || step.expression || step.if || step.items || step.to || step.title || step.event || step.workflow ||
    (step.seconds !== undefined ? step.seconds + " s" : "") || step.until || (step.status !== undefined ? String(step.status) : "") || "";
  return String(pick);
}
