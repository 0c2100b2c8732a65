// mpoxflow's only script, served from our origin (the Content-Security-Policy allows no inline script).
// The pages work without it; it only saves a click or names a cell.
document.addEventListener("DOMContentLoaded", () => {
  // On a phone a table's rows are stacked (the stylesheet): each cell is shown under its column's name, taken
  // from the table's header row (its cells all <th>).
  for (const table of document.querySelectorAll("main table")) {
    const head = Array.from(table.rows).find((row) => row.cells.length > 1 &&
      Array.from(row.cells).every((cell) => cell.tagName === "TH"));
    if (!head) continue;
    const names = Array.from(head.cells).map((cell) => cell.textContent.trim());
    for (const row of table.rows) {
      if (row === head) continue;
      Array.from(row.cells).forEach((cell, i) => {
        if (cell.tagName === "TD" && names[i] && !cell.hasAttribute("data-label")) cell.dataset.label = names[i];
      });
    }
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
