// Re-run buttons on a run's page.
document.querySelectorAll(".rerun").forEach((button) => {
  button.onclick = async () => {
    const run = document.getElementById("rerun").dataset.run;
    const body = button.dataset.version === "current" ? { version: "current" } : {};
    const result = await nectarApi("POST", "/api/v1/runs/" + run + "/rerun", body);
    if (result.status === 202) window.location = "/org/runs/" + result.data.id;
  };
});
