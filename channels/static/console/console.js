// The console's behaviour beyond htmx: keep the chat scrolled to its newest line, clear the chat
// box after a message is sent, and show a failed request's reason instead of failing silently.
(function () {
  "use strict";
  function scrollChat() {
    var transcript = document.getElementById("transcript");
    if (transcript) { transcript.scrollTop = transcript.scrollHeight; }
  }
  document.addEventListener("DOMContentLoaded", scrollChat);
  document.body.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "transcript") { scrollChat(); }
  });
  document.body.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (form && form.matches && form.matches("form.chat") && event.detail.successful) { form.reset(); }
  });
  document.body.addEventListener("htmx:responseError", function (event) {
    var box = document.getElementById("flash");
    if (box) {
      box.innerHTML = "";
      var line = document.createElement("div");
      line.className = "flash error";
      line.setAttribute("role", "alert");
      line.textContent = event.detail.xhr.responseText || ("The request failed (" + event.detail.xhr.status + ").");
      box.appendChild(line);
    }
  });
})();
