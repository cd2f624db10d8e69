// Starts Swagger UI on the API docs page (a file of its own: the CSP allows no inline script).
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  if (!root || typeof window.SwaggerUIBundle !== "function") return;
  window.ui = window.SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    domNode: root,
    deepLinking: true,
    validatorUrl: null, // no badge fetched from another site
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
