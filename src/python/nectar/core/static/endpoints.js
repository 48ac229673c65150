// Adding an endpoint through the API; problems are shown with their paths.
const endpointForm = document.querySelector("[data-endpoint-form]");
if (endpointForm) {
  endpointForm.onsubmit = async (event) => {
    event.preventDefault();
    const fields = Object.fromEntries(new FormData(endpointForm).entries());
    const result = await nectarApi("POST", "/api/v1/endpoints", fields);
    if (result.status === 201) window.location.reload();
    else nectarShowProblems(document.getElementById("endpoint-problems"), result.data);
  };
}

// Copy buttons (the address, the curl example) and "Try it", which fills the console below.
document.querySelectorAll("button.copy").forEach((button) => {
  button.addEventListener("click", async () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    const status = document.getElementById("copy-status");
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = "Copied.";
    } catch (error) {
      // Without clipboard access (plain http), select the text so Ctrl+C copies it.
      const range = document.createRange();
      range.selectNodeContents(document.getElementById(button.dataset.copy));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      status.textContent = "Selected: press Ctrl+C to copy.";
    }
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = button.dataset.copy.startsWith("curl") ? "Copy curl" : "Copy"; }, 1500);
  });
});
const consoleEndpoint = document.getElementById("console-endpoint");
if (consoleEndpoint) {
  const choose = (method, path) => {
    document.getElementById("console").dataset.method = method;
    document.getElementById("console-path").value = path;
  };
  consoleEndpoint.addEventListener("change", () => {
    const option = consoleEndpoint.selectedOptions[0];
    choose(option.dataset.method, option.dataset.path);
  });
  document.querySelectorAll("button.try").forEach((button, index) => {
    button.addEventListener("click", () => {
      consoleEndpoint.value = String(index);
      choose(button.dataset.method, button.dataset.path);
      document.getElementById("console-path").focus();
      document.getElementById("console").scrollIntoView({ block: "start" });
    });
  });
}
