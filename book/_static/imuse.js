// Loaded in <head>: marks the page as having JavaScript, so that the stylesheet shows the live
// plotly figures on screen and their static PNGs only when printing (or when JavaScript is off).
document.documentElement.classList.add("imuse-js");

// pydata-sphinx-theme reads the reader's saved light/dark choice and logs a console error on a
// first visit, when there is none yet ("Got invalid theme mode"): start from "auto" instead.
if (!document.documentElement.dataset.mode) {
  document.documentElement.dataset.mode = "auto";
}
