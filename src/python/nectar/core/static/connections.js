// Saving and testing connections through the API.
const connectionForm = document.getElementById("new-connection");
if (connectionForm) {
  connectionForm.onsubmit = async (event) => {
    event.preventDefault();
    const problems = document.getElementById("connection-problems");
    const fields = new FormData(connectionForm);
    let config, credentials;
    try { config = JSON.parse(fields.get("config")); credentials = JSON.parse(fields.get("credentials")); }
    catch (e) { problems.textContent = "Settings and credentials must be JSON: " + e.message; return; }
    const result = await nectarApi("POST", "/api/v1/connections", { service_key: fields.get("service_key"), name: fields.get("name"), config, credentials });
    if (result.status === 201) window.location.reload(); else nectarShowProblems(problems, result.data);
  };
}
document.querySelectorAll(".test-connection").forEach((button) => {
  button.onclick = async () => {
    button.disabled = true; button.textContent = "Testing…";
    const result = await nectarApi("POST", "/api/v1/connections/" + button.dataset.id + "/test");
    alert(result.data.ok ? "Connected: " + result.data.message : "Failed: " + result.data.message);
    window.location.reload();
  };
});
