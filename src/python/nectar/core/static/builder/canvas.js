// The canvas: the workflow drawn as a graph in SVG. A workflow is nested lists of steps, so its
// layout is a tree: a list is a column, a step with step lists (condition branches, loop body,
// parallel branches, error handlers) opens lanes side by side below it that join again. Between
// any two steps, and in every lane, a "+" slot adds a step (or takes a dragged or pasted one).
// Nodes and slots are focusable buttons: arrow keys walk them, Enter opens, Delete removes.

import { listsOf, pointerOf, samePath, summary } from "./model.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 220, NODE_H = 62, SLOT_H = 40, GAP = 28, PAD = 14, LABEL_H = 24, JOIN = 22;

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

// The drawing is built as one string of markup and set at once: for a 200-step flow that is
// several times faster than creating thousands of elements one by one.
const escape = (value) => String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const attrs = (values) => Object.entries(values).map(([k, v]) => (v === undefined || v === null ? "" : ` ${k}="${escape(v)}"`)).join("");
const tag = (name, values, inner) => `<${name}${attrs(values)}>${inner === undefined ? "" : inner}</${name}>`;
const label = (x, y, content, cls) => tag("text", { x, y, class: cls }, escape(content));

const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

export class Canvas {
  constructor(host, model, handlers) {
    this.host = host;
    this.model = model;
    this.on = handlers; // select(path), addAt(listPath, index, anchor), move(from, listPath, index), remove(path), key(event)
    this.view = { x: 0, y: 0, scale: 1 };
    this.svg = el("svg", { class: "canvas-svg", role: "group", "aria-label": "Workflow canvas: steps and where to add them" }, host);
    this.viewport = el("g", {}, this.svg);
    this.focusables = [];
    this.bindPanZoom();
    // One listener each for every node and slot (delegation): drawing stays cheap.
    const target = (event) => event.target.closest && event.target.closest(".node, .slot");
    this.viewport.addEventListener("click", (event) => {
      const found = target(event);
      if (!found) return;
      if (found.classList.contains("slot")) this.on.addAt(JSON.parse(found.dataset.list), Number(found.dataset.index), found);
      else this.on.select(found.dataset.path ? JSON.parse(found.dataset.path) : null);
    });
    this.viewport.addEventListener("pointerdown", (event) => {
      const found = target(event);
      if (found && found.dataset.path) this.startDrag(event, JSON.parse(found.dataset.path), found);
    });
    this.viewport.addEventListener("keydown", (event) => {
      const found = target(event);
      if (!found) return;
      if (found.classList.contains("slot")) this.keydown(event, found, null, "slot", JSON.parse(found.dataset.list), Number(found.dataset.index));
      else this.keydown(event, found, found.dataset.path ? JSON.parse(found.dataset.path) : null, "node");
    });
    this.viewport.addEventListener("focusin", (event) => { const found = target(event); if (found) this.reveal(found); });
  }

  // Measures a list: the width and height of its column.
  measureList(steps, path) {
    let w = NODE_W, h = SLOT_H;
    steps.forEach((step, i) => {
      const size = this.measureStep(step, path.concat([i]));
      w = Math.max(w, size.w);
      h += size.h + SLOT_H;
    });
    return { w, h };
  }

  measureStep(step, path) {
    const key = path.join("/");
    if (this.sizes && this.sizes.has(key)) return this.sizes.get(key);
    const size = this.measureStepFresh(step, path);
    if (this.sizes) this.sizes.set(key, size);
    return size;
  }

  measureStepFresh(step, path) {
    const lanes = step && typeof step === "object" ? listsOf(this.model, step, path) : [];
    if (!lanes.length) return { w: NODE_W, h: NODE_H, lanes };
    let lanesW = 0, lanesH = 0;
    const sizes = lanes.map((lane) => {
      const size = this.measureList(lane.steps, lane.path);
      lanesW += size.w + PAD * 2;
      lanesH = Math.max(lanesH, size.h + LABEL_H + PAD);
      return size;
    });
    lanesW += GAP * (lanes.length - 1);
    return { w: Math.max(NODE_W, lanesW), h: NODE_H + JOIN + lanesH + JOIN, lanes, sizes, lanesW, lanesH };
  }

  render(doc, state) {
    this.doc = doc;
    this.state = state; // {selected, problems: Map(pointer prefix -> count), run: Map(stepId -> record), dragging}
    const focused = document.activeElement && this.svg.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    this.parts = [];
    this.edges = { edge: [], "edge edge-error": [] };
    this.sizes = new Map();
    const steps = Array.isArray(doc.steps) ? doc.steps : [];
    const size = this.measureList(steps, ["steps"]);
    const width = Math.max(size.w + 80, 320);
    const cx = width / 2;
    // The trigger, then the top-level list.
    const trigger = doc.trigger || {};
    this.drawNode(cx, 16, { id: "trigger", type: (trigger.type || "?") + " trigger" }, null, trigger.cron || "");
    const bottom = this.drawList(steps, ["steps"], cx, 16 + NODE_H, size.w);
    // Every edge of a kind is one path: far fewer elements for the browser to lay out.
    const edges = Object.entries(this.edges).map(([cls, d]) => (d.length ? tag("path", { d: d.join(""), class: cls }) : "")).join("");
    this.viewport.innerHTML = edges + this.parts.join("");
    this.parts = this.edges = null;
    this.focusables = Array.from(this.viewport.querySelectorAll(".node, .slot"));
    this.contentSize = { w: width, h: bottom + 24 };
    // As tall as the flow needs (pan for the rest), between a usable minimum and most of the screen.
    const wanted = Math.max(360, Math.min(this.contentSize.h * this.view.scale + 32, window.innerHeight * 0.72));
    this.host.style.height = Math.round(wanted) + "px";
    this.applyView();
    if (focused) {
      const again = this.focusables.find((node) => node.dataset.key === focused);
      if (again) again.focus({ preventScroll: true });
    }
  }

  drawList(steps, listPath, cx, y, laneW) {
    let cursor = y;
    const slot = (index, name) => {
      this.drawEdge(cx, cursor, cx, cursor + SLOT_H);
      this.drawSlot(cx, cursor + SLOT_H / 2, listPath, index, name);
      cursor += SLOT_H;
    };
    const where = listPath.length > 1 ? " in " + listPath[listPath.length - 1] + " of " + (this.stepAt(listPath.slice(0, -1)) || {}).id : "";
    slot(0, steps.length ? "Add a step before " + steps[0].id + where : "Add a step" + where);
    steps.forEach((step, i) => {
      const path = listPath.concat([i]);
      const size = this.measureStep(step, path);
      this.drawStep(step, path, cx, cursor, size);
      cursor += size.h;
      slot(i + 1, "Add a step after " + (step && step.id) + where);
    });
    return cursor;
  }

  stepAt(path) {
    let value = this.doc;
    for (const key of path) value = value == null ? undefined : value[key];
    return value;
  }

  drawStep(step, path, cx, y, size) {
    if (!step || typeof step !== "object") return;
    this.drawNode(cx, y, step, path, summary(step));
    if (!size.lanes.length) return;
    const top = y + NODE_H + JOIN, joinY = top + size.lanesH + JOIN / 2;
    let x = cx - size.lanesW / 2;
    size.lanes.forEach((lane, i) => {
      const laneW = size.sizes[i].w + PAD * 2;
      const laneCx = x + laneW / 2;
      const kind = lane.name === "on_error" ? "error" : lane.name === "on_timeout" ? "timeout" : step.type === "for_each" ? "loop" : "branch";
      this.parts.push(tag("rect", { x, y: top, width: laneW, height: size.lanesH, rx: 10, class: "lane lane-" + kind }));
      this.parts.push(label(x + 10, top + 16, (kind === "loop" ? "↻ each item · " : "") + lane.label, "lane-label"));
      this.drawEdge(cx, y + NODE_H, laneCx, top + LABEL_H, kind === "error" ? "edge edge-error" : "edge");
      const end = this.drawList(lane.steps, lane.path, laneCx, top + LABEL_H, size.sizes[i].w);
      this.drawEdge(laneCx, end, laneCx, joinY, "edge");
      this.drawEdge(laneCx, joinY, cx, joinY, "edge");
      x += laneW + GAP;
    });
    this.drawEdge(cx, joinY, cx, y + size.h, "edge");
  }

  drawNode(cx, y, step, path, detail) {
    const x = cx - NODE_W / 2;
    const key = path ? pointerOf(path) : "trigger";
    const selected = path && this.state.selected && samePath(path, this.state.selected);
    const problems = path ? this.state.problems(key) : this.state.problems("/trigger");
    const record = path ? this.state.run.get(step.id) : null;
    let inner = tag("rect", { x, y, width: NODE_W, height: NODE_H, rx: 10, class: "node-box" }) +
      tag("rect", { x, y, width: 6, height: NODE_H, rx: 3, class: "node-stripe" }) +
      label(x + 16, y + 20, clip(step.id || "(no id)", 24), "node-title") +
      label(x + 16, y + 37, clip(step.type + (detail ? " · " + detail : ""), 32), "node-detail");
    if (record) {
      const shown = record.status === "failed" ? record.error : JSON.stringify(record.output);
      inner += label(x + 16, y + 54, clip((record.status === "succeeded" ? "✓ " : record.status === "failed" ? "✗ " : "… ") + (shown === undefined ? "" : shown), 34), "node-run");
    }
    if (problems) {
      inner += tag("circle", { cx: x + NODE_W - 14, cy: y + 14, r: 9, class: "node-problem" }) + label(x + NODE_W - 17.5, y + 18.5, "!", "node-problem-mark");
    }
    this.parts.push(tag("g", {
      class: "node node-" + String(step.type).split(" ")[0] + (selected ? " selected" : "") + (problems ? " invalid" : "") + (record ? " ran-" + record.status : ""),
      tabindex: "0",
      role: "button",
      "data-key": key,
      "data-path": path ? JSON.stringify(path) : undefined,
      "aria-label": (path ? "Step " + step.id + ", " + step.type : "Trigger: " + step.type) + (detail ? ": " + detail : "") +
        (problems ? ", " + problems + " problem" + (problems > 1 ? "s" : "") : "") + (record ? ", last test " + record.status : "") + (selected ? ", selected" : ""),
      "aria-pressed": selected ? "true" : "false",
    }, inner));
  }

  drawSlot(cx, cy, listPath, index, text) {
    this.parts.push(tag("g", { class: "slot", tabindex: "0", role: "button", "aria-label": text, "data-key": "slot:" + pointerOf(listPath) + ":" + index, "data-list": JSON.stringify(listPath), "data-index": index },
      tag("circle", { cx, cy, r: 11, class: "slot-circle" }) + label(cx - 4.5, cy + 5, "+", "slot-plus")));
  }

  drawEdge(x1, y1, x2, y2, cls) {
    this.edges[cls || "edge"].push(`M${x1} ${y1}L${x2} ${y2}`);
  }

  keydown(event, group, path, kind, listPath, index) {
    const at = this.focusables.indexOf(group);
    const move = (delta) => {
      const next = this.focusables[at + delta];
      if (next) { next.focus(); this.reveal(next); }
    };
    if (event.key === "ArrowDown" && !event.altKey) { event.preventDefault(); move(1); return; }
    if (event.key === "ArrowUp" && !event.altKey) { event.preventDefault(); move(-1); return; }
    if (event.key === "Home") { event.preventDefault(); this.focusables[0].focus(); return; }
    if (event.key === "End") { event.preventDefault(); this.focusables[this.focusables.length - 1].focus(); return; }
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      if (kind === "slot") this.on.addAt(listPath, index, group);
      else this.on.select(path, true);
      return;
    }
    this.on.key(event, { kind, path, listPath, index });
  }

  focusKey(key) {
    const node = this.focusables.find((n) => n.dataset.key === key);
    if (node) { node.focus({ preventScroll: true }); this.reveal(node); }
    return node;
  }

  // Pan and zoom: drag the background, the wheel pans (with Ctrl it zooms), buttons and keys too.
  bindPanZoom() {
    let pan = null;
    this.svg.addEventListener("pointerdown", (event) => {
      if (event.target.closest(".node, .slot")) return;
      pan = { x: event.clientX, y: event.clientY, vx: this.view.x, vy: this.view.y };
      this.svg.setPointerCapture(event.pointerId);
      this.svg.classList.add("panning");
    });
    this.svg.addEventListener("pointermove", (event) => {
      if (!pan) return;
      this.view.x = pan.vx + (event.clientX - pan.x);
      this.view.y = pan.vy + (event.clientY - pan.y);
      this.applyView();
    });
    const end = () => { pan = null; this.svg.classList.remove("panning"); };
    this.svg.addEventListener("pointerup", end);
    this.svg.addEventListener("pointercancel", end);
    this.svg.addEventListener("wheel", (event) => {
      event.preventDefault();
      if (event.ctrlKey || event.metaKey) {
        const box = this.svg.getBoundingClientRect();
        this.zoom(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - box.left, event.clientY - box.top);
      } else {
        this.view.x -= event.deltaX;
        this.view.y -= event.deltaY;
        this.applyView();
      }
    }, { passive: false });
  }

  zoom(factor, px, py) {
    const box = this.svg.getBoundingClientRect();
    px = px === undefined ? box.width / 2 : px;
    py = py === undefined ? box.height / 2 : py;
    const scale = Math.min(2.5, Math.max(0.2, this.view.scale * factor));
    const real = scale / this.view.scale;
    this.view.x = px - (px - this.view.x) * real;
    this.view.y = py - (py - this.view.y) * real;
    this.view.scale = scale;
    this.applyView();
  }

  fit() {
    const box = this.svg.getBoundingClientRect();
    if (!this.contentSize || !box.width) return;
    const scale = Math.min(1, box.width / this.contentSize.w, Math.max(box.height / this.contentSize.h, 0.45));
    this.view.scale = Math.max(0.2, scale);
    this.view.x = (box.width - this.contentSize.w * this.view.scale) / 2;
    this.view.y = 8;
    this.applyView();
  }

  applyView() {
    this.viewport.setAttribute("transform", `translate(${this.view.x} ${this.view.y}) scale(${this.view.scale})`);
  }

  // Keeps a focused node in sight (keyboard users walk the graph past the visible part).
  reveal(node) {
    const box = this.svg.getBoundingClientRect();
    const r = node.getBoundingClientRect();
    let dx = 0, dy = 0;
    if (r.top < box.top + 10) dy = box.top + 10 - r.top;
    else if (r.bottom > box.bottom - 10) dy = box.bottom - 10 - r.bottom;
    if (r.left < box.left + 10) dx = box.left + 10 - r.left;
    else if (r.right > box.right - 10) dx = box.right - 10 - r.right;
    if (dx || dy) { this.view.x += dx; this.view.y += dy; this.applyView(); }
  }

  // Drag a node onto a "+" slot to move it there.
  startDrag(event, path, group) {
    if (event.button !== 0) return;
    const start = { x: event.clientX, y: event.clientY };
    let dragging = false, target = null, ghost = null;
    const move = (e) => {
      if (!dragging && Math.hypot(e.clientX - start.x, e.clientY - start.y) < 6) return;
      if (!dragging) {
        dragging = true;
        this.svg.classList.add("dragging");
        group.classList.add("drag-source");
        ghost = document.createElement("div");
        ghost.className = "drag-ghost";
        ghost.textContent = "Move " + (this.stepAt(path) || {}).id;
        document.body.appendChild(ghost);
      }
      ghost.style.left = e.clientX + 12 + "px";
      ghost.style.top = e.clientY + 12 + "px";
      const under = document.elementFromPoint(e.clientX, e.clientY);
      const slot = under && under.closest && under.closest(".slot");
      if (target && target !== slot) target.classList.remove("drop-target");
      target = slot || null;
      if (target) target.classList.add("drop-target");
    };
    const up = () => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      if (!dragging) return;
      this.svg.classList.remove("dragging");
      group.classList.remove("drag-source");
      if (ghost) ghost.remove();
      if (target) this.on.move(path, JSON.parse(target.dataset.list), Number(target.dataset.index));
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }
}
