// Re-run, retry and cancel buttons on a run's page.
const runId = document.getElementById("rerun").dataset.run;
const problem = document.getElementById("run-action-problem");

async function act(path, body) {
  const result = await nectarApi("POST", "/api/v1/runs/" + runId + path, body);
  if (result.status === 202) window.location = "/org/runs/" + result.data.id;
  else if (result.status === 200) window.location.reload();
  else nectarShowProblems(problem, result.data);
}

document.querySelectorAll(".rerun").forEach((button) => {
  button.onclick = () => act("/rerun", button.dataset.version === "current" ? { version: "current" } : {});
});
document.querySelectorAll(".retry").forEach((button) => {
  button.onclick = () => act("/retry", { version: button.dataset.version });
});
const cancel = document.getElementById("cancel");
if (cancel) cancel.onclick = () => act("/cancel");
