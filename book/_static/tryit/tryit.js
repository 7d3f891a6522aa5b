/* IMUSE "Try it": recommend songs for the reader's picture, entirely in this page.
 *
 * The picture is decoded by the browser, preprocessed by preprocess.js (PIL's resize and the
 * centre crop, bit for bit), and run through the exported model (model.<fingerprint>.onnx:
 * normalisation, backbone, image arm, VA head) with onnxruntime-web's WebAssembly backend on one
 * thread; the songs (songs.json, precomputed by `imuse export onnx`) are ranked by Eq. 1 as
 * `imuse recommend` ranks them. Nothing is sent anywhere: every file is read from this book.
 *
 * The song file (small) is read when the page opens: it carries the example pictures shown as
 * buttons, the note on the model's measured quality (from the build's table2.csv; left out when
 * the build had none) and the words the page uses for a VA point (report.va_words_spec).
 *
 * Paths are relative to this script, so the page works wherever the book is served. For the
 * tests, window.imuseTryit exposes the results and timings.
 */
(function () {
  "use strict";

  const TOP = 10;
  const script = document.currentScript;
  const base = new URL(".", script.src); // .../_static/tryit/
  const modelDir = new URL("model/", base);
  const runtimeDir = new URL("../vendor/onnxruntime-web/", base);
  const pp = window.imusePreprocess;

  const api = { results: [], errors: [], timings: { load_ms: null }, ready: false };
  window.imuseTryit = api;

  const root = document.getElementById("imuse-tryit");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const statusBox = $("tryit-status");
  const errorBox = $("tryit-error");
  const fileInput = $("tryit-file");
  const cameraInput = $("tryit-camera");
  const drop = $("tryit-drop");

  function say(text) {
    statusBox.textContent = text;
  }

  function fail(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
    say("");
    api.errors.push(text);
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  // Opened from a file: browsers refuse to load the model and the WebAssembly runtime from
  // file:// URLs, so say at once how to serve the page instead.
  if (location.protocol === "file:") {
    const note = $("tryit-file-protocol");
    note.hidden = false;
    fileInput.disabled = true;
    if (cameraInput) cameraInput.disabled = true;
    api.fileProtocol = true;
    return;
  }

  // The camera input only where a camera picker is likely (phones, tablets).
  if (cameraInput && window.matchMedia && window.matchMedia("(pointer: coarse)").matches) {
    $("tryit-camera-row").hidden = false;
  }

  // ------------------------------------------------------------------ loading (once, on first use)

  let songsLoading = null;
  let modelLoading = null;

  function loadScript(url) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = url;
      s.onload = resolve;
      s.onerror = () => reject(new Error("could not load " + url));
      document.head.appendChild(s);
    });
  }

  async function fetchJSON(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  // The song file (small): the songs, their VA and the page's constants.
  function loadSongs() {
    if (!songsLoading) {
      songsLoading = fetchJSON(new URL("songs.json", modelDir)).then((songs) => {
        const rows = songs.songs;
        const va = new Float64Array(rows.length * 2);
        rows.forEach((r, i) => {
          va[2 * i] = Math.fround(r[3]); // the index's float32 values, exactly
          va[2 * i + 1] = Math.fround(r[4]);
        });
        const rated = rows.filter((r) => r[6] !== songs.va_predicted).length;
        $("tryit-model").textContent = songs.model_label + "; " + rows.length + " songs.";
        const percent = Math.round((100 * rated) / rows.length); // 100% and 0% only when it is all or none
        $("tryit-rated-share").textContent = " In this collection " + rated + " of " + rows.length + " songs (" +
          (rated < rows.length ? Math.min(percent, 99) : 100) + "%) are placed by rated VA" +
          (rated === rows.length ? "." : ", the other " + (rows.length - rated) + " by VA predicted from their audio.");
        return { songs, rows, va };
      });
      songsLoading.catch(() => { songsLoading = null; }); // a later attempt may succeed
    }
    return songsLoading;
  }

  // The runtime's WebAssembly binary is served gzipped (a quarter of its size, whatever the web
  // server does); the browser inflates it and the runtime takes the bytes as they are.
  async function fetchGzipped(url) {
    if (typeof DecompressionStream === "undefined") {
      throw new Error("this browser cannot unpack the page's runtime (it needs DecompressionStream: " +
        "Chrome 80, Firefox 113, Safari 16.4 or later)");
    }
    const r = await fetch(url);
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    const inflated = r.body.pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(inflated).arrayBuffer());
  }

  // The runtime and the model (large): fetched on the first picture only.
  function loadModel() {
    if (!modelLoading) {
      modelLoading = (async () => {
        const t0 = performance.now();
        const [s, , wasmBinary] = await Promise.all([
          loadSongs(),
          window.ort ? Promise.resolve() : loadScript(new URL("ort.wasm.min.js", runtimeDir).href),
          fetchGzipped(new URL("ort-wasm-simd-threaded.wasm.gz", runtimeDir).href),
        ]);
        const ort = window.ort;
        ort.env.wasm.numThreads = 1; // no cross-origin isolation needed
        ort.env.wasm.proxy = false;
        ort.env.wasm.wasmPaths = runtimeDir.href; // the glue module (.mjs) is loaded from here
        ort.env.wasm.wasmBinary = wasmBinary;
        ort.env.logLevel = "error";
        const session = await ort.InferenceSession.create(new URL(s.songs.model_file, modelDir).href, {
          executionProviders: ["wasm"],
          graphOptimizationLevel: "all",
        });
        api.timings.load_ms = performance.now() - t0;
        return { ...s, ort, session };
      })();
      modelLoading.catch(() => { modelLoading = null; });
    }
    return modelLoading;
  }

  // ------------------------------------------------------------------ the picture

  function naturalSize(url) {
    // The <img> element reads the size from the header; the pixels are decoded only if drawn.
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve([img.naturalWidth, img.naturalHeight]);
      img.onerror = () => reject(new Error("undecodable"));
      img.src = url;
    });
  }

  function megapixels(n) {
    return (n / 1e6).toFixed(1) + " megapixels";
  }

  async function readPicture(file, maxPixels) {
    const url = URL.createObjectURL(file);
    let size;
    try {
      size = await naturalSize(url);
    } catch (e) {
      URL.revokeObjectURL(url);
      const kind = file.type ? " (" + file.type + ")" : "";
      throw new UserError("\u201c" + file.name + "\u201d" + kind + " is not a picture this browser can read. " +
        "Choose a JPEG, PNG, WebP, GIF or BMP image.");
    }
    const [w, h] = size;
    if (!(w > 0 && h > 0)) {
      URL.revokeObjectURL(url);
      throw new UserError("\u201c" + file.name + "\u201d has no pixels.");
    }
    if (w * h > maxPixels) {
      URL.revokeObjectURL(url);
      throw new UserError("\u201c" + file.name + "\u201d is " + w + " \u00d7 " + h + " pixels (" +
        megapixels(w * h) + "), more than the " + megapixels(maxPixels) + " this recommender accepts " +
        "(as `imuse recommend` does). Choose a smaller picture.");
    }
    // EXIF orientation applied, no colour management (PIL ignores ICC profiles), straight alpha.
    const bitmap = await createImageBitmap(file, {
      imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none",
    });
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.fillStyle = "#ffffff"; // transparent pixels on white, like media.to_rgb
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    return { url, width: canvas.width, height: canvas.height, data };
  }

  class UserError extends Error {}

  // ------------------------------------------------------------------ showing the result

  function fmt(x, d) {
    return Number(x).toFixed(d);
  }

  function showTable(items) {
    const body = $("tryit-table").querySelector("tbody");
    body.textContent = "";
    for (const it of items) {
      const tr = document.createElement("tr");
      for (const [text, cls] of [[it.rank, "num"], [it.title, ""], [it.artist, ""], [it.quadrant || "\u2013", ""],
        [fmt(it.similarity, 3), "num"], [fmt(it.valence, 2), "num"], [fmt(it.arousal, 2), "num"], [it.va_from, ""]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  const SVG = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The plane with its quadrants and axes in the page's words (songs.json "va_words").
  function showPlane(va, n, items, qv, qa, words) {
    const svg = $("tryit-plane");
    svg.textContent = "";
    const S = 300, M = 30; // plot size and margin in SVG units
    const X = (v) => M + v * S;
    const Y = (a) => M + (1 - a) * S;
    const c = words.centre;
    svg.setAttribute("viewBox", "0 0 " + (S + 2 * M) + " " + (S + 2 * M));
    svg.appendChild(el("rect", { x: M, y: M, width: S, height: S, class: "frame" }));
    svg.appendChild(el("line", { x1: X(c), y1: Y(0), x2: X(c), y2: Y(1), class: "mid" }));
    svg.appendChild(el("line", { x1: X(0), y1: Y(c), x2: X(1), y2: Y(c), class: "mid" }));
    for (const [q, v, a] of [["Q1", 0.98, 0.98], ["Q2", 0.02, 0.98], ["Q3", 0.02, 0.02], ["Q4", 0.98, 0.02]]) {
      svg.appendChild(el("text", { x: X(v), y: Y(a), class: "quad", "text-anchor": v > 0.5 ? "end" : "start",
        "dominant-baseline": a > 0.5 ? "hanging" : "auto" }, q + " " + words.quadrants[q]));
    }
    const [vLow, vHigh] = words.axes.valence, [aLow, aHigh] = words.axes.arousal;
    svg.appendChild(el("text", { x: X(0.5), y: S + 2 * M - 8, class: "axis", "text-anchor": "middle" },
      vLow + " \u2190 valence \u2192 " + vHigh));
    svg.appendChild(el("text", { x: 14, y: Y(0.5), class: "axis", "text-anchor": "middle",
      transform: "rotate(-90 14 " + Y(0.5) + ")" }, aLow + " \u2190 arousal \u2192 " + aHigh));
    for (let i = 0; i < n; i++) {
      svg.appendChild(el("circle", { cx: X(va[2 * i]), cy: Y(va[2 * i + 1]), r: 2.2, class: "song" }));
    }
    for (const it of items) {
      svg.appendChild(el("circle", { cx: X(it.valence), cy: Y(it.arousal), r: 4.5, class: "top" }));
    }
    svg.appendChild(el("circle", { cx: X(qv), cy: Y(qa), r: 7, class: "picture" }));
    svg.setAttribute("aria-label", "Valence-arousal plane: your picture at valence " + fmt(qv, 2) +
      ", arousal " + fmt(qa, 2) + " (ring) among " + n + " songs (grey); its top " + items.length +
      " songs in orange.");
  }

  // The picture's predicted VA in words (the rule of report.va_words), with the numbers; for an
  // example picture, where OASIS's raters placed it too.
  function vaSentence(words, qv, qa, example) {
    const q = pp.quadrant(words, qv, qa);
    let text = "Your picture reads as " + pp.vaWords(words, qv, qa) + ", in quadrant " + q + " (" +
      words.quadrants[q] + "): predicted valence " + fmt(qv, 2) + " and arousal " + fmt(qa, 2) +
      ", on a scale from 0 to 1 whose middle is " + words.centre + ".";
    if (example) {
      const rq = pp.quadrant(words, example.valence, example.arousal);
      text += " OASIS's raters placed this picture at valence " + fmt(example.valence, 2) + " and arousal " +
        fmt(example.arousal, 2) + ": " + pp.vaWords(words, example.valence, example.arousal) + ", " + rq +
        (rq === q ? ", the same quadrant." : ", another quadrant than the model's.");
    }
    return text;
  }

  // How well the model did on pictures and songs it never saw (the build's table2.csv), if known.
  function showQuality(q) {
    const box = $("tryit-quality");
    if (!q || q.value === null || q.value === undefined) return;
    box.textContent = "";
    const f3 = (x) => fmt(x, 3);
    box.append("How well it works: on " + q.n_images + " pictures and " + q.n_songs + " songs it never saw " +
      "(the " + q.split + " split), the ten songs this model puts first for a picture score ");
    const term = document.createElement("a");
    term.href = "glossary.html#term-NSG-10";
    term.textContent = "NSG@10";
    box.append(term, " " + f3(q.value) + (q.lo !== null && q.hi !== null ? " (95% interval " + f3(q.lo) + " to " +
      f3(q.hi) + ")" : "") + ", where songs drawn at random score 0 and the ten best-fitting songs 1.");
    if (q.image_agnostic !== null && q.image_agnostic !== undefined) {
      box.append(" One fixed list of songs for every picture, the picture ignored, scores " + f3(q.image_agnostic) +
        (q.image_agnostic >= q.value ? ": as much or more, so on average these songs fit a picture no better " +
          "than that fixed list does; take them as a suggestion." : ": less, so the picture helps."));
    }
    box.append(" (The " + q.profile + " profile of this build, " + q.source + ".)");
    box.hidden = false;
  }

  // The example pictures as buttons: a click recommends for the picture's original file.
  function showExamples(list) {
    const ul = $("tryit-example-list");
    if (!list || !list.length) return;
    ul.textContent = "";
    for (const ex of list) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "tryit-example";
      const img = document.createElement("img");
      img.src = new URL(ex.thumbnail, modelDir).href;
      img.width = ex.width;
      img.height = ex.height;
      img.alt = "OASIS picture \u201c" + ex.name + "\u201d";
      const label = document.createElement("span");
      label.textContent = ex.name + " (" + ex.quadrant + ")";
      button.append(img, label);
      button.setAttribute("aria-label", "Recommend songs for the OASIS picture " + ex.name + ", rated " + ex.quadrant);
      button.addEventListener("click", () => { handle(fetchExample(ex), ex); });
      const credit = document.createElement("small");
      credit.textContent = "source: " + ex.source;
      li.append(button, credit);
      ul.appendChild(li);
    }
    $("tryit-examples").hidden = false;
  }

  async function fetchExample(ex) {
    const r = await fetch(new URL(ex.file, modelDir));
    if (!r.ok) throw new Error(ex.file + ": HTTP " + r.status);
    const blob = await r.blob();
    const suffix = ex.file.slice(ex.file.lastIndexOf("."));
    return new File([blob], ex.name + suffix, { type: blob.type || (suffix === ".png" ? "image/png" : "image/jpeg") });
  }

  // ------------------------------------------------------------------ one picture

  let busy = Promise.resolve();

  // file: a File, or a promise of one (an example picture being fetched); example: its entry
  function handle(file, example) {
    busy = busy.then(() => recommendFor(file, example)).catch(() => {});
    return busy;
  }

  async function recommendFor(filePromise, example) {
    let file;
    try {
      file = await filePromise;
    } catch (e) {
      fail("Could not load the example picture: " + (e && e.message ? e.message : e));
      return;
    }
    if (!file) return;
    clearError();
    const t0 = performance.now();
    const first = !api.ready;
    say(first ? "Loading the model (only for the first picture) and reading your picture\u2026" : "Reading your picture\u2026");
    const model = loadModel(); // starts loading while the picture is read
    model.catch(() => {});
    let pic;
    try {
      pic = await readPicture(file, (await loadSongs()).songs.max_image_pixels);
      const m = await model;
      const prep = pp.resizeCrop(pic.data, pic.width, pic.height, m.songs.resize, m.songs.crop);
      const input = new m.ort.Tensor("float32", prep.chw, [1, 3, m.songs.crop, m.songs.crop]);
      const out = await m.session.run({ image: input });
      const vaOut = out.va.data;
      const qv = vaOut[0], qa = vaOut[1];
      const ranked = pp.rank(m.va, qv, qa, TOP);
      const items = ranked.top.map((pos, i) => ({
        rank: i + 1, song_id: m.rows[pos][0], artist: m.rows[pos][1], title: m.rows[pos][2],
        quadrant: m.rows[pos][5], similarity: ranked.sim[pos], valence: m.va[2 * pos], arousal: m.va[2 * pos + 1],
        va_from: m.songs.va_source[m.rows[pos][6]] || m.rows[pos][6], // rated (its source) or predicted from audio
      }));
      const ms = performance.now() - t0;
      api.ready = true;
      // what the reader sees
      $("tryit-picture").src = pic.url;
      $("tryit-picture").alt = "Your picture: " + file.name;
      const cropCanvas = $("tryit-crop");
      const img = new ImageData(m.songs.crop, m.songs.crop);
      for (let i = 0; i < m.songs.crop * m.songs.crop; i++) {
        img.data.set([prep.rgb[3 * i], prep.rgb[3 * i + 1], prep.rgb[3 * i + 2], 255], 4 * i);
      }
      cropCanvas.getContext("2d").putImageData(img, 0, 0);
      const words = vaSentence(m.songs.va_words, qv, qa, example);
      $("tryit-va").textContent = words;
      showPlane(m.va, m.rows.length, items, qv, qa, m.songs.va_words);
      showTable(items);
      $("tryit-result").hidden = false;
      say("Top " + items.length + " songs for \u201c" + file.name + "\u201d, computed in this browser in " +
        (ms / 1000).toFixed(2) + " s" + (first ? " (including loading the model)" : "") + ".");
      api.results.push({ name: file.name, va: [qv, qa], words, top: items.map((it) => it.song_id),
        similarity: items.map((it) => it.similarity), ms, first,
        rgbSum: prep.rgb.reduce((a, b) => a + b, 0) });
    } catch (e) {
      if (pic) URL.revokeObjectURL(pic.url);
      if (e instanceof UserError) {
        fail(e.message);
      } else {
        fail("Something went wrong while computing the recommendation: " + (e && e.message ? e.message : e));
      }
    }
  }

  fileInput.addEventListener("change", () => {
    handle(fileInput.files[0]);
  });
  if (cameraInput) {
    cameraInput.addEventListener("change", () => handle(cameraInput.files[0]));
  }
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("dragging");
    const f = ev.dataTransfer && ev.dataTransfer.files[0];
    if (f) handle(f);
  });

  // for the tests: the preprocessed crop of a file, as the page computes it
  api.crop = async (file) => {
    const m = await loadSongs();
    const pic = await readPicture(file, m.songs.max_image_pixels);
    URL.revokeObjectURL(pic.url);
    return Array.from(pp.resizeCrop(pic.data, pic.width, pic.height, m.songs.resize, m.songs.crop).rgb);
  };
  api.idle = () => busy;
  // the song file when the page opens: the examples and the quality note need it (a failure is
  // said when a picture is chosen)
  api.opened = loadSongs().then((s) => {
    showExamples(s.songs.examples);
    showQuality(s.songs.quality);
  }, () => {});
  root.classList.add("tryit-ready");
})();
