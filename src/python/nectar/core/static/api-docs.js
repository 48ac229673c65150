// Starts the vendored Swagger UI on /api/v1/docs over this deployment's OpenAPI document (a file of
// its own: the CSP allows no inline script). "Try it out" sends requests with the API key given
// under Authorize, or with the signed-in session: then an unsafe request must carry the page's
// CSRF token, as the web app's own requests do (sent to this origin only).
window.addEventListener("DOMContentLoaded", function () {
  const root = document.getElementById("api-docs");
  const csrf = document.querySelector('meta[name="csrf-token"]');
  window.SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    deepLinking: true,
    requestInterceptor: function (request) {
      const method = (request.method || "GET").toUpperCase();
      const sameOrigin = new URL(request.url, window.location.href).origin === window.location.origin;
      if (csrf && sameOrigin && !["GET", "HEAD", "OPTIONS"].includes(method)) {
        request.headers["X-CSRFToken"] = csrf.content;
      }
      return request;
    },
  });
});
