// Starts Swagger UI on /docs. The page has no inline script (so a strict
// Content-Security-Policy holds): its settings are data attributes of #swagger-ui.
"use strict";

(function () {
  var root = document.getElementById("swagger-ui");
  // The page's own URL is the base: under a path prefix the document is beside the page.
  var specUrl = new URL(root.dataset.spec, document.baseURI).href;
  window.ui = SwaggerUIBundle({
    url: specUrl,
    domNode: root,
    deepLinking: true,
    displayOperationId: true,
    displayRequestDuration: true,
    // Keep the token given under "Authorize" across reloads (in local storage).
    persistAuthorization: root.dataset.persistAuthorization === "true",
    // The default sends the document to a public validator service: never.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
