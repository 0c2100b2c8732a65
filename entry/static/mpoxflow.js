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
  // Search as you type: the header's box shows the first results under it (POST /api/search: the text stays out of URLs), 250 ms after the
  // last key; Enter still submits the form for the whole results page. A person picker fills its <datalist>.
  const search = (text, done) => {
    fetch("/api/search", {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
                          body: JSON.stringify({q: text, limit: 10})})
      .then((response) => (response.ok ? response.json() : []))
      .then(done)
      .catch(() => done([]));
  };
  const debounced = (input, act) => {
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => act(input.value.trim()), 250);
    });
  };
  const box = document.getElementById("search-q");
  const list = document.getElementById("search-suggestions");
  if (box && list) {
    debounced(box, (text) => {
      if (text.length < 2) { list.hidden = true; list.replaceChildren(); return; }
      search(text, (results) => {
        list.replaceChildren(...results.map((r) => {
          const item = document.createElement("li");
          const link = document.createElement("a");
          link.href = "/objects/" + r.id;
          link.textContent = r.id + " · " + r.ref + (r.kind !== "person" && r.state ? " · " + r.state : "");
          item.append(link);
          return item;
        }));
        list.hidden = results.length === 0;
      });
    });
  }
  // The suggestions are also buttons under the field, the next Tab stops after it: a datalist's popup is not
  // reached by the keyboard everywhere (nor read by every screen reader). A button picks its person and gives
  // the focus back to the field.
  for (const picker of document.querySelectorAll("input[data-search=person]")) {
    const options = document.getElementById(picker.getAttribute("list"));
    const picks = document.getElementById(picker.getAttribute("aria-controls"));
    if (!options) continue;
    debounced(picker, (text) => {
      if (text.length < 2) {
        if (picks) { picks.hidden = true; picks.replaceChildren(); }
        return;
      }
      search(text, (results) => {
        const persons = results.filter((r) => r.kind === "person");
        options.replaceChildren(...persons.map((r) => {
          const option = document.createElement("option");
          option.value = r.id;
          option.label = r.ref;
          option.textContent = r.ref;
          return option;
        }));
        if (!picks) return;
        picks.replaceChildren(...persons.map((r) => {
          const item = document.createElement("li");
          const pick = document.createElement("button");
          pick.type = "button";
          pick.dataset.pick = r.id;
          pick.textContent = r.id + " · " + r.ref;
          pick.addEventListener("click", () => {
            picker.value = r.id;
            picks.hidden = true;
            picks.replaceChildren();
            picker.focus();
          });
          item.append(pick);
          return item;
        }));
        picks.hidden = persons.length === 0 || picker.value.trim() !== text;
      });
    });
  }
  // A final step asks first, with its consequence; the server asks again without the script (confirmed=1).
  for (const form of document.querySelectorAll("form[data-final]")) {
    form.addEventListener("submit", (event) => {
      if (event.submitter && event.submitter.name === "step") return;
      if (!window.confirm(form.dataset.final)) {
        event.preventDefault();
        return;
      }
      const confirmed = document.createElement("input");
      confirmed.type = "hidden";
      confirmed.name = "confirmed";
      confirmed.value = "1";
      form.append(confirmed);
    });
  }
});
