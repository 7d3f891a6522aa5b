/* IMUSE "Try it": the picture's preprocessing and the ranking, exactly as the Python side does them.
 *
 * resizeCrop(rgba, width, height, size, crop) is torchvision's evaluation view on a PIL RGB image
 * - Resize(size) (shorter side, PIL's antialiased bilinear filter) then CenterCrop(crop) -
 * reproduced bit for bit: the same output size (int() of size * long / short), the same crop
 * offsets (Python's round(), half to even), and PIL's two-pass resampler (libImaging/Resample.c: coefficients in double, turned into
 * 22-bit fixed point; horizontal pass first into 8-bit rows, then vertical). Only the pixels the
 * crop keeps are computed: each output pixel depends on its own coefficients alone.
 *
 * The sizes are not written here: the page passes those of songs.json ("resize", "crop"), which
 * the export writes from the one image-view spec (imuse_lib/image_view.py, page_spec()).
 *
 * rank() is ranking.rank_va: Eq. 1 (S = 1 - Euclidean distance in VA) in double precision on
 * the float32 VA values, best first, ties by position (the index is sorted by song id).
 *
 * vaWords() and quadrant() put a VA point into words as report.va_words and data.quadrant_of do,
 * with the words and limits songs.json carries ("va_words", written from report.va_words_spec).
 *
 * Plain functions with no DOM: the browser page uses window.imusePreprocess, the tests run the
 * same file under Node (module.exports) against PIL and numpy.
 */
(function (root, factory) {
  "use strict";
  const api = factory();
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  } else {
    root.imusePreprocess = api;
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const PRECISION_BITS = 22; // 32 - 8 - 2, as in Pillow
  const ONE = 1 << PRECISION_BITS;
  const HALF = 1 << (PRECISION_BITS - 1);

  /* torchvision _compute_resized_output_size for an int size: [newWidth, newHeight]. */
  function outputSize(width, height, size) {
    const short = Math.min(width, height);
    const long = Math.max(width, height);
    const newLong = Math.trunc((size * long) / short);
    return width <= height ? [size, newLong] : [newLong, size];
  }

  /* Python's round() of x (x >= 0): halves go to the even neighbour. */
  function roundHalfEven(x) {
    const f = Math.floor(x);
    const d = x - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return f % 2 === 0 ? f : f + 1;
  }

  /* torchvision center_crop offsets for an image of (width, height): [left, top]. */
  function cropOffsets(width, height, crop) {
    return [roundHalfEven((width - crop) / 2.0), roundHalfEven((height - crop) / 2.0)];
  }

  function bilinear(x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
  }

  /* Pillow's precompute_coeffs + normalize_coeffs_8bpc (bilinear filter, box = whole image), for
   * output positions first .. first + count - 1 only. */
  function coefficients(inSize, outSize, first, count) {
    const scale = inSize / outSize;
    const filterscale = scale < 1.0 ? 1.0 : scale;
    const support = 1.0 * filterscale;
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(count * 2);
    const kk = new Int32Array(count * ksize);
    const w = new Float64Array(ksize);
    const ss = 1.0 / filterscale;
    for (let i = 0; i < count; i++) {
      const center = (first + i + 0.5) * scale;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0.0;
      for (let x = 0; x < xmax; x++) {
        w[x] = bilinear((x + xmin - center + 0.5) * ss);
        ww += w[x];
      }
      for (let x = 0; x < xmax; x++) {
        const k = ww !== 0.0 ? w[x] / ww : w[x];
        kk[i * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
      }
      bounds[2 * i] = xmin;
      bounds[2 * i + 1] = xmax;
    }
    return { ksize, bounds, kk };
  }

  function clip8(ss) {
    const v = ss >> PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  /* rgba: pixels of an RGB picture (alpha ignored), row-major, width x height, 4 bytes each.
   * Returns {rgb: Uint8Array crop*crop*3 (HWC), chw: Float32Array 3*crop*crop in [0, 1],
   * resized: [w, h], offset: [left, top]}. */
  function resizeCrop(rgba, width, height, size, crop) {
    if (!(width > 0 && height > 0)) throw new Error("image has no pixels");
    const [rw, rh] = outputSize(width, height, size);
    if (rw < crop || rh < crop) throw new Error("resized image smaller than the crop");
    const [left, top] = cropOffsets(rw, rh, crop);
    const rgb = new Uint8Array(crop * crop * 3);
    if (rw === width && rh === height) {
      // torchvision returns the image unchanged when it already has the output size
      for (let y = 0; y < crop; y++) {
        for (let x = 0; x < crop; x++) {
          const s = ((y + top) * width + x + left) * 4;
          const d = (y * crop + x) * 3;
          rgb[d] = rgba[s];
          rgb[d + 1] = rgba[s + 1];
          rgb[d + 2] = rgba[s + 2];
        }
      }
    } else {
      const hc = coefficients(width, rw, left, crop);
      const vc = coefficients(height, rh, top, crop);
      // source rows the kept output rows read (Pillow's ybox_first .. ybox_last for them)
      const rowFirst = vc.bounds[0];
      const rowLast = vc.bounds[2 * (crop - 1)] + vc.bounds[2 * (crop - 1) + 1];
      const nrows = rowLast - rowFirst;
      const mid = new Uint8Array(nrows * crop * 3); // horizontal pass: 8-bit, like Pillow's temp image
      for (let r = 0; r < nrows; r++) {
        const rowStart = (r + rowFirst) * width * 4;
        for (let x = 0; x < crop; x++) {
          const xmin = hc.bounds[2 * x];
          const n = hc.bounds[2 * x + 1];
          const k0 = x * hc.ksize;
          let s0 = HALF, s1 = HALF, s2 = HALF;
          for (let i = 0; i < n; i++) {
            const p = rowStart + (xmin + i) * 4;
            const k = hc.kk[k0 + i];
            s0 += rgba[p] * k;
            s1 += rgba[p + 1] * k;
            s2 += rgba[p + 2] * k;
          }
          const d = (r * crop + x) * 3;
          mid[d] = clip8(s0);
          mid[d + 1] = clip8(s1);
          mid[d + 2] = clip8(s2);
        }
      }
      for (let y = 0; y < crop; y++) {
        const ymin = vc.bounds[2 * y] - rowFirst;
        const n = vc.bounds[2 * y + 1];
        const k0 = y * vc.ksize;
        for (let x = 0; x < crop; x++) {
          let s0 = HALF, s1 = HALF, s2 = HALF;
          for (let i = 0; i < n; i++) {
            const p = ((ymin + i) * crop + x) * 3;
            const k = vc.kk[k0 + i];
            s0 += mid[p] * k;
            s1 += mid[p + 1] * k;
            s2 += mid[p + 2] * k;
          }
          const d = (y * crop + x) * 3;
          rgb[d] = clip8(s0);
          rgb[d + 1] = clip8(s1);
          rgb[d + 2] = clip8(s2);
        }
      }
    }
    // ToTensor: channels first, divided by 255 (the Float32Array store rounds like float32 division)
    const plane = crop * crop;
    const chw = new Float32Array(3 * plane);
    for (let i = 0; i < plane; i++) {
      chw[i] = rgb[3 * i] / 255;
      chw[plane + i] = rgb[3 * i + 1] / 255;
      chw[2 * plane + i] = rgb[3 * i + 2] / 255;
    }
    return { rgb, chw, resized: [rw, rh], offset: [left, top] };
  }

  /* Eq. 1 between (qv, qa) and every song; va: [v0, a0, v1, a1, ...] (float32 values as doubles).
   * Returns the positions of the k best, best first (ties: lower position first), and all scores. */
  function rank(va, qv, qa, k) {
    const n = va.length / 2;
    const sim = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const dv = qv - va[2 * i];
      const da = qa - va[2 * i + 1];
      sim[i] = 1 - Math.sqrt(dv * dv + da * da);
    }
    const order = Array.from({ length: n }, (_, i) => i);
    order.sort((i, j) => (sim[j] - sim[i]) || (i - j));
    return { top: order.slice(0, Math.max(0, Math.min(k, n))), sim };
  }

  /* One axis in words: which side of the centre and how far (spec: songs.json's "va_words"). */
  function axisWords(spec, axis, value) {
    const [low, high] = spec.axes[axis];
    const d = value - spec.centre;
    const word = d >= 0 ? high : low;
    const [, phrase] = spec.degrees.find(([limit]) => limit === null || Math.abs(d) < limit);
    return phrase.replaceAll("{word}", word).replaceAll("{low}", low).replaceAll("{high}", high);
  }

  /* A VA point in words, e.g. "slightly pleasant and clearly calm". */
  function vaWords(spec, v, a) {
    return axisWords(spec, "valence", v) + " and " + axisWords(spec, "arousal", a);
  }

  /* Russell quadrant of a VA point: Q1 +V+A, Q2 -V+A, Q3 -V-A, Q4 +V-A (the centre on the + side). */
  function quadrant(spec, v, a) {
    const hv = v >= spec.centre, ha = a >= spec.centre;
    return ha ? (hv ? "Q1" : "Q2") : (hv ? "Q4" : "Q3");
  }

  return { outputSize, roundHalfEven, cropOffsets, coefficients, resizeCrop, rank, vaWords, quadrant };
});
