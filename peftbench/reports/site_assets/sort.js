// Click a column header of a table.sortable to order its rows by that column; click again to reverse.
// Numbers sort numerically (first click: highest first), text alphabetically; empty cells stay last.
"use strict";

function cellValue(row, column) {
  const raw = row.children[column].dataset.value;
  if (raw === undefined || raw === "") return null;
  const number = Number(raw);
  return Number.isNaN(number) ? raw : number;
}

function sortTable(table, header) {
  const column = Number(header.dataset.column);
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const numeric = rows.some((row) => typeof cellValue(row, column) === "number");
  const current = header.getAttribute("aria-sort");
  const descending = current ? current === "ascending" : numeric;
  rows.sort((a, b) => {
    const x = cellValue(a, column);
    const y = cellValue(b, column);
    if (x === null || y === null) return (x === null) - (y === null);
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return descending ? -order : order;
  });
  rows.forEach((row) => body.appendChild(row));
  table.querySelectorAll("th[aria-sort]").forEach((th) => th.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", descending ? "descending" : "ascending");
}

document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("th[data-column]").forEach((header) => {
    header.addEventListener("click", () => sortTable(table, header));
  });
});
