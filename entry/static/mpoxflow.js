// mpoxflow's only script, served from our origin (the Content-Security-Policy allows no inline script).
// The pages work without it; it only saves a click.
document.addEventListener("DOMContentLoaded", () => {
  // A filter that applies as soon as it is chosen (the <noscript> button does it without script).
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
  // "Back" goes back in the history when there is one; the link's own target (the worklist) otherwise.
  for (const link of document.querySelectorAll("a[data-back]")) {
    link.addEventListener("click", (event) => {
      if (window.history.length > 1) {
        event.preventDefault();
        window.history.back();
      }
    });
  }
});
