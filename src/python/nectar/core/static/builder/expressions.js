// Expression fields: completion of what is in scope where the field is (the server says: the
// trigger, earlier steps, vars, item/index in loops, error in on_error, filled with the last test
// run's data), and a live preview of the value, computed by the server's own engine (POST
// /api/v1/workflows/{id}/preview), with a parse error marked at its character.

import { h } from "./form.js";

const FUNCTIONS = ["abs", "avg", "ceil", "contains", "ends_with", "floor", "join", "keys", "length", "map", "max", "max_by", "merge", "min", "min_by", "not_null", "reverse", "sort", "sort_by", "starts_with", "sum", "to_array", "to_number", "to_string", "type", "values"];

export class Expressions {
  constructor(workflowId, getDoc, getRunId) {
    this.workflowId = workflowId;
    this.getDoc = getDoc;
    this.getRunId = getRunId;
    this.sequence = 0;
    this.contexts = new Map(); // pointer -> context from the server
    this.timings = [];
  }

  attach(input, options) {
    const listId = "complete-" + Math.random().toString(36).slice(2);
    const previewId = listId + "-preview";
    const list = h("ul", { id: listId, role: "listbox", class: "completions", hidden: true, "aria-label": "Suggestions" });
    const preview = h("div", { id: previewId, class: "preview", "aria-live": "polite" });
    const container = h("div", { class: "expr" }, input, list, preview);
    input.wrapper = container;
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("aria-controls", listId);
    input.setAttribute("aria-describedby", [input.getAttribute("aria-describedby"), previewId].filter(Boolean).join(" "));
    input.dataset.expression = options.bare ? "jmespath" : "template";
    const state = { input, list, preview, options, items: [], active: -1, token: null };
    input.addEventListener("focus", () => this.refresh(state, true));
    input.addEventListener("input", () => this.refresh(state, false));
    input.addEventListener("click", () => this.suggest(state));
    input.addEventListener("keydown", (event) => this.keydown(event, state));
    input.addEventListener("blur", () => setTimeout(() => this.close(state), 150));
    return container;
  }

  // Is there an expression at the caret? Bare fields always; templates inside {{ }}.
  expressionAt(state) {
    const text = state.input.value, caret = state.input.selectionStart || 0;
    if (state.options.bare) return { start: 0, before: text.slice(0, caret) };
    const open = text.lastIndexOf("{{", caret - 1 >= 0 ? caret - 1 : 0);
    if (open === -1 || open + 2 > caret) return null;
    const close = text.indexOf("}}", open + 2);
    if (close !== -1 && close < caret) return null;
    return { start: open + 2, before: text.slice(open + 2, caret) };
  }

  async refresh(state, withContext) {
    const text = state.input.value;
    const showPreview = state.options.bare || text.includes("{{");
    if (!showPreview && !withContext) { state.preview.textContent = ""; this.suggest(state); return; }
    const sequence = ++this.sequence;
    const started = performance.now();
    const pointer = state.options.pointer;
    const body = {
      definition: this.getDoc(), pointer, text: showPreview ? text : "`null`", bare: state.options.bare || !showPreview,
      run_id: this.getRunId() || undefined, with_context: withContext || !this.contexts.has(pointer),
    };
    const result = await nectarApi("POST", "/api/v1/workflows/" + this.workflowId + "/preview", body);
    if (result.status !== 200) {
      if (sequence === this.sequence) state.preview.textContent = result.status === 429 ? "Preview paused: too many at once." : "";
      return;
    }
    if (result.data.context) this.contexts.set(pointer, result.data.context);
    if (sequence !== this.sequence && state.input.value !== text) return; // a newer keystroke's answer follows
    if (showPreview) this.showPreview(state, result.data, text);
    else state.preview.textContent = "";
    this.timings.push(performance.now() - started);
    state.input.dispatchEvent(new CustomEvent("preview-shown", { bubbles: true }));
    if (document.activeElement === state.input) this.suggest(state);
  }

  showPreview(state, data, text) {
    state.preview.textContent = "";
    state.preview.className = "preview";
    const source = data.run_id ? "with the last test run's data" : "with empty sample data (test the draft to use real data)";
    if (data.error !== undefined && data.error !== null) {
      state.preview.classList.add("preview-error");
      state.input.setAttribute("aria-invalid", "true");
      state.preview.appendChild(h("span", { text: "✗ " + data.error }));
      if (typeof data.position === "number") {
        const at = Math.min(data.position, text.length);
        state.preview.appendChild(h("code", { class: "marked" }, text.slice(0, at), h("mark", { text: text.slice(at, at + 1) || " " }), text.slice(at + 1)));
      }
      return;
    }
    state.input.removeAttribute("aria-invalid");
    let shown = JSON.stringify(data.value);
    if (shown === undefined) shown = "null";
    if (shown.length > 400) shown = shown.slice(0, 400) + "…";
    state.preview.appendChild(h("span", { class: "preview-label", text: "= " }));
    state.preview.appendChild(h("code", { class: "preview-value", text: shown }));
    state.preview.appendChild(h("span", { class: "muted small", text: " " + source }));
  }

  // Suggestions for the path being typed before the caret, from the context in scope.
  suggest(state) {
    const at = this.expressionAt(state);
    const context = this.contexts.get(state.options.pointer);
    if (!at || !context) return this.close(state);
    const match = /([A-Za-z_@][A-Za-z0-9_]*(?:\[[^\]]*\])*(?:\.[A-Za-z0-9_]*(?:\[[^\]]*\])*)*)$/.exec(at.before);
    const typed = match ? match[1] : "";
    const prevChar = at.before.slice(0, at.before.length - typed.length).slice(-1);
    if (prevChar === "&" || prevChar === "`" || prevChar === "'" || prevChar === '"') return this.close(state);
    // Nothing typed yet: names only where one can start (not right after `)` or a value).
    if (!typed && prevChar && !/[\s(,[{:|!=<>]/.test(prevChar)) return this.close(state);
    const parts = typed.split(".");
    const partial = parts.pop();
    let value = context;
    for (const part of parts) {
      const name = part.replace(/\[.*$/, "");
      value = value && typeof value === "object" && !Array.isArray(value) ? value[name] : undefined;
      const indexes = part.match(/\[(\d+)\]/g) || [];
      for (const index of indexes) value = Array.isArray(value) ? value[Number(index.slice(1, -1))] : undefined;
      if (/\[\*\]|\[\]/.test(part) && Array.isArray(value)) value = value[0];
    }
    let names = [];
    if (value && typeof value === "object" && !Array.isArray(value)) names = Object.keys(value);
    if (!parts.length) names = names.concat(FUNCTIONS.map((f) => f + "("));
    const items = names.filter((n) => n.startsWith(partial) && n !== partial).slice(0, 12);
    if (!items.length) return this.close(state);
    state.items = items;
    state.token = { start: at.start + at.before.length - partial.length, end: at.start + at.before.length, parent: parts.length ? value : context };
    state.active = 0;
    this.renderList(state);
  }

  renderList(state) {
    state.list.textContent = "";
    state.items.forEach((name, i) => {
      const id = state.list.id + "-" + i;
      const sample = state.token.parent && !name.endsWith("(") ? state.token.parent[name] : undefined;
      const hint = sample === undefined ? (name.endsWith("(") ? "function" : "") : clipJson(sample);
      const option = h("li", { id, role: "option", class: i === state.active ? "active" : "", "aria-selected": i === state.active ? "true" : "false" },
        h("span", { class: "completion-name", text: name }), hint ? h("span", { class: "completion-hint", text: hint }) : null);
      option.addEventListener("mousedown", (event) => { event.preventDefault(); state.active = i; this.accept(state); });
      state.list.appendChild(option);
    });
    state.list.hidden = false;
    state.input.setAttribute("aria-expanded", "true");
    state.input.setAttribute("aria-activedescendant", state.list.id + "-" + state.active);
  }

  close(state) {
    state.items = [];
    state.list.hidden = true;
    state.input.setAttribute("aria-expanded", "false");
    state.input.removeAttribute("aria-activedescendant");
  }

  accept(state) {
    const name = state.items[state.active];
    if (name === undefined) return;
    const input = state.input;
    const value = input.value;
    input.value = value.slice(0, state.token.start) + name + value.slice(state.token.end);
    const caret = state.token.start + name.length;
    input.setSelectionRange(caret, caret);
    this.close(state);
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  keydown(event, state) {
    if (state.list.hidden) {
      if (event.key === " " && event.ctrlKey) { event.preventDefault(); this.suggest(state); }
      return;
    }
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      state.active = (state.active + (event.key === "ArrowDown" ? 1 : -1) + state.items.length) % state.items.length;
      this.renderList(state);
    } else if (event.key === "Enter" || (event.key === "Tab" && !event.shiftKey)) {
      event.preventDefault();
      this.accept(state);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      this.close(state);
    }
  }
}

function clipJson(value) {
  let text = JSON.stringify(value);
  if (text === undefined) return "";
  return text.length > 40 ? text.slice(0, 39) + "…" : text;
}
