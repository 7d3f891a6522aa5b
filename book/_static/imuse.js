// Loaded in <head>: marks the page as having JavaScript, so that the stylesheet shows the live
// plotly figures on screen and their static PNGs only when printing (or when JavaScript is off).
document.documentElement.classList.add("imuse-js");
