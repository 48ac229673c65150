// The visual builder: a list of steps to add, remove, reorder and configure, drawn as a graph.
(function () {
  const data = JSON.parse(document.getElementById("builder-data").textContent);
  const doc = JSON.parse(JSON.stringify(data.definition));
  let selected = 0;
  const $ = (id) => document.getElementById(id);

  const templates = {
    http_request: { method: "GET", url: "https://api.example.com/items" },
    transform: { expression: "trigger.body" },
    condition: { if: "trigger.body.ok", then: [], else: [] },
    for_each: { items: "trigger.body.items", steps: [] },
    set: { values: { key: "value" } },
    delay: { seconds: 5 },
    send_email: { to: "{{ trigger.body.email }}", subject: "Hello", body: "Hi there" },
    respond: { status: 200, body: { ok: true } },
    wait_for_event: { event: "payment.done", timeout_seconds: 86400, on_timeout: [] },
    approval: { title: "Approve {{ trigger.body.amount }}?", approver_role: "admin", timeout_seconds: 604800 },
  };

  function uniqueId(type) {
    const used = new Set();
    (function walk(steps) { for (const s of steps) { used.add(s.id); ["then", "else", "steps", "on_error", "on_timeout"].forEach((k) => Array.isArray(s[k]) && walk(s[k])); } })(doc.steps);
    let n = 1;
    while (used.has(type + "_" + n)) n += 1;
    return type + "_" + n;
  }

  function renderList() {
    const list = $("step-list");
    list.textContent = "";
    doc.steps.forEach((step, index) => {
      const item = document.createElement("li");
      item.className = index === selected ? "selected" : "";
      const label = document.createElement("button");
      label.type = "button"; label.className = "link";
      label.textContent = step.id + " · " + step.type;
      label.onclick = () => { selected = index; render(); };
      item.appendChild(label);
      if (data.editable) {
        for (const [text, action] of [["↑", -1], ["↓", 1], ["✕", 0]]) {
          const button = document.createElement("button");
          button.type = "button"; button.className = "small"; button.textContent = text;
          button.setAttribute("aria-label", { "-1": "Move up", "1": "Move down", "0": "Remove" }[action] + " " + step.id);
          button.onclick = () => move(index, action);
          item.appendChild(button);
        }
      }
      list.appendChild(item);
    });
    const step = doc.steps[selected];
    $("step-editor").value = step ? JSON.stringify(step, null, 2) : "";
    $("trigger-editor").value = JSON.stringify(doc.trigger);
  }

  function move(index, direction) {
    if (direction === 0) { doc.steps.splice(index, 1); selected = Math.max(0, Math.min(selected, doc.steps.length - 1)); }
    else {
      const target = index + direction;
      if (target < 0 || target >= doc.steps.length) return;
      [doc.steps[index], doc.steps[target]] = [doc.steps[target], doc.steps[index]];
      selected = target;
    }
    render();
  }

  // The graph: one box per step, top to bottom; branches and loops drawn as indented lanes.
  function renderGraph() {
    const svgNS = "http://www.w3.org/2000/svg";
    const boxes = [];
    (function lay(steps, depth, label) {
      steps.forEach((step) => {
        boxes.push({ step, depth, label });
        ["then", "else", "steps", "on_error", "on_timeout"].forEach((key) => { if (Array.isArray(step[key]) && step[key].length) lay(step[key], depth + 1, key); });
        label = null;
      });
    })([{ id: "trigger", type: doc.trigger.type + " trigger" }].concat(doc.steps), 0, null);
    const height = boxes.length * 56 + 20;
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", "0 0 460 " + height);
    svg.setAttribute("role", "img");
    boxes.forEach((box, i) => {
      const x = 10 + box.depth * 40, y = 10 + i * 56;
      if (i > 0) {
        const line = document.createElementNS(svgNS, "line");
        line.setAttribute("x1", 10 + boxes[i - 1].depth * 40 + 20); line.setAttribute("y1", y - 16);
        line.setAttribute("x2", x + 20); line.setAttribute("y2", y);
        line.setAttribute("class", "edge");
        svg.appendChild(line);
      }
      const rect = document.createElementNS(svgNS, "rect");
      rect.setAttribute("x", x); rect.setAttribute("y", y); rect.setAttribute("width", 300); rect.setAttribute("height", 40); rect.setAttribute("rx", 8);
      rect.setAttribute("class", "node node-" + box.step.type.split(" ")[0]);
      svg.appendChild(rect);
      const text = document.createElementNS(svgNS, "text");
      text.setAttribute("x", x + 12); text.setAttribute("y", y + 25);
      text.textContent = (box.label ? box.label + ": " : "") + box.step.id + " (" + box.step.type + ")";
      svg.appendChild(text);
    });
    $("graph").textContent = "";
    $("graph").appendChild(svg);
  }

  function render() { renderList(); renderGraph(); }

  function readEditors() {
    try {
      if (doc.steps[selected]) doc.steps[selected] = JSON.parse($("step-editor").value);
      doc.trigger = JSON.parse($("trigger-editor").value);
      return true;
    } catch (e) {
      $("problems").textContent = "The step or trigger is not valid JSON: " + e.message;
      return false;
    }
  }

  $("add-step").onclick = () => {
    const type = $("new-step-type").value;
    doc.steps.push(Object.assign({ id: uniqueId(type), type }, JSON.parse(JSON.stringify(templates[type]))));
    selected = doc.steps.length - 1;
    render();
  };
  $("apply-step").onclick = () => { if (readEditors()) { $("problems").textContent = ""; render(); } };
  $("validate").onclick = async () => {
    if (!readEditors()) return;
    const result = await nectarApi("POST", "/api/v1/workflows/validate", { definition: doc });
    if (result.data.valid) { $("problems").textContent = "Valid."; } else { nectarShowProblems($("problems"), result.data); }
    render();
  };
  $("save").onclick = async () => {
    if (!readEditors()) return;
    const result = await nectarApi("POST", "/api/v1/workflows/" + data.workflow_id + "/versions", { definition: doc, note: $("version-note").value });
    if (result.status === 201) { window.location.reload(); } else { nectarShowProblems($("problems"), result.data); }
  };
  document.querySelectorAll(".rollback").forEach((button) => {
    button.onclick = async () => {
      const result = await nectarApi("POST", "/api/v1/workflows/" + data.workflow_id + "/rollback", { version: Number(button.dataset.version) });
      if (result.status === 201) window.location.reload(); else nectarShowProblems($("problems"), result.data);
    };
  });
  $("run-now").onclick = async () => {
    let input;
    try { input = JSON.parse($("run-input").value); } catch (e) { $("run-result").textContent = "The input is not valid JSON."; return; }
    let result = await nectarApi("POST", "/api/v1/workflows/" + data.workflow_id + "/runs", { input });
    const out = $("run-result");
    out.textContent = "";
    if (result.status !== 202) { nectarShowProblems(out, result.data); return; }
    out.textContent = "Queued; the worker runs it…";
    // Manual runs go through the job queue: poll until the worker has finished it.
    for (let i = 0; i < 60 && ["queued", "running"].includes(result.data.status); i++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      result = await nectarApi("GET", "/api/v1/runs/" + result.data.id);
    }
    out.textContent = "";
    const link = document.createElement("a");
    link.href = "/org/runs/" + result.data.id;
    link.textContent = "Run " + result.data.status + " in " + result.data.duration_ms + " ms: open its trace";
    out.appendChild(link);
    const pre = document.createElement("pre");
    pre.className = "token";
    pre.textContent = result.data.steps.map((s) => s.position + " " + s.step_id + " " + s.status + (s.error ? ": " + s.error : "")).join("\n");
    out.appendChild(pre);
  };
  if (!data.editable) ["add-step", "apply-step", "save"].forEach((id) => { $(id).disabled = true; });
  render();
})();
