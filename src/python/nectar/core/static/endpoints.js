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
