// Suggested articles beside the ticket form, as the subject is typed (progressive
// enhancement: without JavaScript the suggestions appear after a first submit).
document.addEventListener("DOMContentLoaded", function () {
  var input = document.querySelector("[data-suggest]");
  if (!input) return;
  var box = document.getElementById(input.getAttribute("data-suggest"));
  var context = box.getAttribute("data-context") || "";
  var timer = null;
  var last = "";
  function render(hits) {
    box.textContent = "";
    if (!hits.length) {
      var p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No article matches yet; send the ticket and we will answer.";
      box.appendChild(p);
      return;
    }
    var h = document.createElement("h2");
    h.textContent = "These articles may answer it";
    box.appendChild(h);
    var ul = document.createElement("ul");
    hits.forEach(function (hit) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = "/help/articles/" + encodeURIComponent(hit.slug) + "?from=suggestion&ctx=" + encodeURIComponent(context);
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = hit.title;
      li.appendChild(a);
      if (hit.summary) {
        var s = document.createElement("span");
        s.className = "muted";
        s.textContent = hit.summary;
        li.appendChild(document.createElement("br"));
        li.appendChild(s);
      }
      ul.appendChild(li);
    });
    box.appendChild(ul);
  }
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      var text = input.value.trim();
      if (text.length < 3 || text === last) return;
      last = text;
      fetch("/api/v1/help/suggestions?limit=5&text=" + encodeURIComponent(text), {
        headers: { Accept: "application/json" },
      })
        .then(function (r) { return r.ok ? r.json() : { results: [] }; })
        .then(function (data) { render(data.results || []); })
        .catch(function () {});
    }, 250);
  });
});
