// The endpoint test console: sends a real request and shows the response and the run's steps.
const consoleForm = document.getElementById("console");
consoleForm.onsubmit = async (event) => {
  event.preventDefault();
  const key = document.getElementById("console-key").value.trim();
  const headers = { "Content-Type": "application/json" };
  if (key) headers.Authorization = "Bearer " + key;
  const method = consoleForm.dataset.method;
  const response = await fetch(consoleForm.dataset.base + document.getElementById("console-path").value, {
    method, headers, credentials: "omit",
    body: method === "GET" || method === "DELETE" ? undefined : document.getElementById("console-body").value,
  });
  const text = await response.text();
  document.getElementById("console-response").textContent = response.status + " " + response.statusText + "\n\n" + text;
  const run = response.headers.get("X-Nectar-Run-Id");
  const trace = document.getElementById("console-trace");
  if (!run) { trace.textContent = "No run (the call was refused before the workflow started)."; return; }
  // Runs are written just after the answer: another server process may not have it for a moment.
  let result = await nectarApi("GET", "/api/v1/runs/" + run);
  for (let tries = 0; result.status === 404 && tries < 20; tries++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    result = await nectarApi("GET", "/api/v1/runs/" + run);
  }
  if (result.status !== 200) { trace.textContent = "The run's steps could not be read (" + result.status + ")."; return; }
  trace.textContent = "";
  const pre = document.createElement("pre");
  pre.className = "token";
  pre.textContent = result.data.steps.map((s) => s.position + " " + s.step_id + " (" + s.type + ") " + s.status + " → " + JSON.stringify(s.error || s.output)).join("\n");
  trace.appendChild(pre);
};
