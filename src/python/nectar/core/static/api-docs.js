// Starts the vendored Swagger UI on /api/v1/docs over this deployment's OpenAPI document (a file of
// its own: the CSP allows no inline script). "Try it out" sends requests with the API key given
// under Authorize, or with the signed-in session.
window.addEventListener("DOMContentLoaded", function () {
  const root = document.getElementById("api-docs");
  window.SwaggerUIBundle({ url: root.dataset.spec, domNode: root, deepLinking: true });
});
