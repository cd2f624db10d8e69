// Small progressive enhancements only; every page works without this file.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (source && navigator.clipboard) {
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      button.textContent = "Copied";
    });
  }
});

// A form sent back with errors: move the focus to its error summary, so that keyboard and
// screen reader users start from the list of what to fix.
document.addEventListener("DOMContentLoaded", function () {
  var summary = document.querySelector("[data-error-summary]");
  if (summary) summary.focus();
});

// A link in the error summary moves the focus into its field (a group: its first control)
// and shows the field's label as well.
document.addEventListener("click", function (event) {
  var link = event.target.closest("[data-error-summary] a[href^='#']");
  if (!link) return;
  var target = document.getElementById(link.getAttribute("href").slice(1));
  if (!target) return;
  var control = target.matches("input, select, textarea, button")
    ? target
    : target.querySelector("input, select, textarea, button");
  if (!control) return;
  event.preventDefault();
  var around = target.closest(".field, fieldset") || target;
  around.scrollIntoView({ block: "start" });
  control.focus({ preventScroll: true });
});
