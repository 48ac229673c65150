// Two versions side by side, step by step: each step (by id) added, removed, changed, moved or
// the same, with the two versions' settings next to each other where they differ.

import { h } from "./form.js";
import { pointerOf, walk } from "./model.js";

function own(step) {
  // A step's own settings: nested steps are compared as steps of their own.
  const copy = {};
  for (const [key, value] of Object.entries(step)) {
    const nested = Array.isArray(value) && value.every((v) => (v && typeof v === "object" && v.type) || Array.isArray(v));
    copy[key] = nested && value.length ? "(" + value.length + " nested)" : value;
  }
  return copy;
}

export function renderDiff(host, model, left, right) {
  host.textContent = "";
  const before = new Map(walk(model, left.definition).map((s) => [s.step.id, s]));
  const after = new Map(walk(model, right.definition).map((s) => [s.step.id, s]));
  const ids = [...after.keys()].concat([...before.keys()].filter((id) => !after.has(id)));
  const table = h("table", { class: "table diff" },
    h("caption", { text: `Version ${left.version} (left) and version ${right.version} (right), step by step` }),
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Step" }), h("th", { scope: "col", text: "Change" }), h("th", { scope: "col", text: "v" + left.version }), h("th", { scope: "col", text: "v" + right.version }))));
  const body = h("tbody");
  const triggerSame = JSON.stringify(left.definition.trigger) === JSON.stringify(right.definition.trigger);
  body.appendChild(row("trigger", triggerSame ? "same" : "changed", left.definition.trigger, right.definition.trigger));
  let changes = triggerSame ? 0 : 1;
  for (const id of ids) {
    const a = before.get(id), b = after.get(id);
    let change;
    if (!a) change = "added";
    else if (!b) change = "removed";
    else if (JSON.stringify(own(a.step)) !== JSON.stringify(own(b.step))) change = "changed";
    else if (pointerOf(a.path) !== pointerOf(b.path)) change = "moved";
    else change = "same";
    if (change !== "same") changes += 1;
    const label = change === "moved" ? `moved ${pointerOf(a.path)} → ${pointerOf(b.path)}` : change;
    body.appendChild(row(id, label, a && own(a.step), b && own(b.step), change));
  }
  table.appendChild(body);
  host.appendChild(h("p", { class: "muted", text: changes ? changes + " difference" + (changes > 1 ? "s" : "") + "." : "The two versions are the same." }));
  host.appendChild(table);
}

function row(id, label, a, b, change) {
  const kind = (change || label).split(" ")[0];
  const cell = (value) => h("td", {}, value === undefined ? h("span", { class: "muted", text: "—" }) : kind === "same" ? h("span", { class: "muted", text: "same" }) : h("pre", { class: "cell", text: JSON.stringify(value, null, 2) }));
  return h("tr", { class: "diff-" + kind }, h("th", { scope: "row" }, h("code", { text: id })), h("td", {}, h("span", { class: "change change-" + kind, text: label })), cell(a), cell(b));
}
