// Loaded in <head>: marks the page as having JavaScript, so that the stylesheet shows the live
// plotly figures on screen and their static PNGs only when printing (or when JavaScript is off).
document.documentElement.classList.add("imuse-js");

// pydata-sphinx-theme reads the reader's saved light/dark choice and logs a console error on a
// first visit, when there is none yet ("Got invalid theme mode"): start from "auto" instead.
if (!document.documentElement.dataset.mode) {
  document.documentElement.dataset.mode = "auto";
}

// On a phone, a results table wider than the column is shown stacked: one block per row, each
// cell on its own line after its column's heading, so that every column and every digit is read
// without scrolling sideways. Wider screens keep the table as it is.
const IMUSE_PHONE_PX = 600;
function imuseStackWideTables() {
  if (window.innerWidth > IMUSE_PHONE_PX) return;
  for (const table of document.querySelectorAll(".bd-article table")) {
    const box = table.parentElement;
    if (table.classList.contains("imuse-stacked") || !box || table.scrollWidth <= box.clientWidth + 1) continue;
    const heads = Array.from(table.querySelectorAll("thead tr:last-child th")).map((th) => th.textContent.trim());
    if (heads.length === 0) continue;
    for (const row of table.querySelectorAll("tbody tr")) {
      const cells = Array.from(row.children);
      const offset = heads.length - cells.length;  // a row heading cell has no column heading of its own
      cells.forEach((cell, i) => { cell.dataset.label = heads[i + offset] || ""; });
    }
    table.classList.add("imuse-stacked");
  }
}
document.addEventListener("DOMContentLoaded", imuseStackWideTables);
