// lesionseg page: upload an image, show the mask overlay and the measurements, re-threshold in the page.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    drop: $("drop"), file: $("file"), model: $("model"), modelInfo: $("model-info"), pixelSize: $("pixel-size"),
    opacity: $("opacity"), opacityValue: $("opacity-value"), contour: $("contour"), threshold: $("threshold"),
    thresholdValue: $("threshold-value"), thresholdNote: $("threshold-note"), remeasure: $("remeasure"),
    downloadMask: $("download-mask"), downloadJson: $("download-json"), error: $("error"), status: $("status"),
    viewer: $("viewer"), imageCanvas: $("image-canvas"), overlayCanvas: $("overlay-canvas"), caption: $("caption"),
    table: $("measurements").querySelector("tbody"), timings: $("timings"), limits: $("limits"), trust: $("trust"),
  };
  const LESION = [255, 64, 0];
  const MAX_VIEW_SIDE = 2048; // the page works on at most this many pixels per side; the server on the full image

  // Rows of the measurements table: key, label, unit (pixels), unit (mm) and mm key.
  const ROWS = [
    ["area", "Area", "px²", "mm²", "area_mm2"],
    ["perimeter", "Perimeter", "px", "mm", "perimeter_mm"],
    ["equivalent_diameter", "Equivalent diameter", "px", "mm", "equivalent_diameter_mm"],
    ["max_feret_diameter", "Max Feret diameter", "px", "mm", "max_feret_diameter_mm"],
    ["asymmetry_major", "Asymmetry (major axis)", "", "", null],
    ["asymmetry_minor", "Asymmetry (minor axis)", "", "", null],
    ["asymmetric_axes", "Asymmetric axes", "of 2", "of 2", null],
    ["compactness", "Compactness (1 = disc)", "", "", null],
    ["components", "Components", "", "", null],
  ];

  const state = {
    models: [], limits: null, file: null, bitmap: null, result: null, serverMask: null, prob: null,
    mask: null, width: 0, height: 0, viewW: 0, viewH: 0, scale: 1, serverThreshold: 0.5, preview: false,
    busy: false, token: 0,
  };

  // ------------------------------------------------------------------------------------------- messages
  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = false;
  }
  function clearError() {
    els.error.hidden = true;
    els.error.textContent = "";
  }
  function setStatus(message, busy = false) {
    els.status.textContent = message;
    els.status.classList.toggle("busy", busy);
  }
  const mb = (bytes) => `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  const fmt = (v) => (Number.isInteger(v) ? v.toLocaleString("en-US") : Number(v).toLocaleString("en-US", { maximumFractionDigits: 3 }));

  // ------------------------------------------------------------------------------------------- models
  async function loadModels() {
    try {
      const res = await fetch("/api/models");
      const body = await res.json();
      if (!res.ok) throw new Error(body.message || res.statusText);
      state.models = body.models;
      state.limits = body.limits;
      els.model.replaceChildren(...body.models.map((m) => {
        const opt = document.createElement("option");
        opt.value = m.id;
        opt.textContent = m.title ? `${m.id} — ${m.title}` : m.id;
        return opt;
      }));
      els.model.value = body.default;
      els.model.disabled = false;
      els.limits.textContent = `up to ${mb(body.limits.max_upload_bytes)} and ${(body.limits.max_pixels / 1e6).toFixed(0)} megapixels`;
      describeModel();
    } catch (err) {
      showError(`Could not reach the server for its models: ${err.message}`);
    }
  }
  function describeModel() {
    const m = state.models.find((x) => x.id === els.model.value);
    if (!m) return;
    const dice = m.test_metrics && m.test_metrics.native && m.test_metrics.native.dice_per_image;
    const parts = [`${m.model}`, m.dataset && `trained on ${m.dataset}`, dice && `test Dice ${(100 * dice).toFixed(1)}%`];
    els.modelInfo.textContent = parts.filter(Boolean).join(" · ");
  }

  // ------------------------------------------------------------------------------------------- upload
  function checkFile(file) {
    if (!file) return "No file was given.";
    if (file.size === 0) return `${file.name}: the file is empty.`;
    if (state.limits && file.size > state.limits.max_upload_bytes) {
      return `${file.name}: ${mb(file.size)} is over the upload limit of ${mb(state.limits.max_upload_bytes)}.`;
    }
    if (file.type && !file.type.startsWith("image/")) {
      return `${file.name}: only image files are accepted (this one is ${file.type}).`;
    }
    return null;
  }

  async function chooseFile(file) {
    clearError();
    const problem = checkFile(file);
    if (problem) {
      showError(problem);
      clearResult();
      setStatus("Not segmented.");
      return;
    }
    state.file = file;
    state.bitmap = null;
    try {
      state.bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (_) {
      state.bitmap = null; // TIFF and the like: the server sends the decoded image back
    }
    await segment();
  }

  async function segment(threshold = null) {
    if (!state.file) return;
    const token = ++state.token;
    clearError();
    const form = new FormData();
    form.append("image", state.file, state.file.name);
    form.append("model", els.model.value);
    const px = parseFloat(els.pixelSize.value);
    if (els.pixelSize.value !== "" && !(px > 0)) {
      showError("Pixel size must be a positive number of millimetres per pixel.");
      clearResult();
      return;
    }
    if (px > 0) form.append("pixel_size", String(px));
    if (threshold !== null) form.append("threshold", String(threshold));
    if (!state.bitmap) form.append("include_image", "true");
    setStatus(`Segmenting ${state.file.name} with ${els.model.value}…`, true);
    if (els.viewer.dataset.state === "ready") els.viewer.dataset.state = "busy";
    let res, body;
    try {
      res = await fetch("/api/segment", { method: "POST", body: form });
      body = await res.json().catch(() => ({ message: `${res.status} ${res.statusText}` }));
    } catch (err) {
      if (token !== state.token) return;
      setStatus("Not segmented.");
      showError(`The server could not be reached: ${err.message}`);
      clearResult();
      return;
    }
    if (token !== state.token) return; // a newer request superseded this one
    if (!res.ok) {
      const prefix = res.status === 503 ? "The server is busy; try again in a moment. " : "Refused: ";
      showError(prefix + (body.message || `${res.status} ${res.statusText}`));
      setStatus(`Not segmented (${res.status}).`);
      clearResult();
      return;
    }
    await showResult(body);
  }

  // A request that failed leaves nothing of an earlier result on the page: its image and measurements would read as
  // the answer for the file or settings just refused.
  function clearResult() {
    Object.assign(state, { result: null, serverMask: null, prob: null, mask: null, preview: false });
    for (const c of [els.imageCanvas, els.overlayCanvas]) c.getContext("2d").clearRect(0, 0, c.width, c.height);
    els.viewer.dataset.state = "empty";
    els.caption.textContent = "";
    els.timings.textContent = "";
    const cell = document.createElement("td");
    cell.colSpan = 3;
    cell.className = "empty";
    cell.textContent = "No image yet.";
    const row = document.createElement("tr");
    row.append(cell);
    els.table.replaceChildren(row);
    els.threshold.disabled = true;
    els.thresholdValue.textContent = "–";
    els.remeasure.hidden = true;
    els.downloadMask.disabled = true;
    els.downloadJson.disabled = true;
  }

  // ------------------------------------------------------------------------------------------- result
  function decodePng(b64) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("could not decode an image sent by the server"));
      img.src = `data:image/png;base64,${b64}`;
    });
  }
  function decodeJpeg(b64) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("could not decode the image sent by the server"));
      img.src = `data:image/jpeg;base64,${b64}`;
    });
  }
  // The red channel of an image drawn at the view size (smoothing on: bilinear upsampling of the probability map).
  function channelAtViewSize(img, smooth) {
    const c = document.createElement("canvas");
    c.width = state.viewW;
    c.height = state.viewH;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.imageSmoothingEnabled = smooth;
    ctx.drawImage(img, 0, 0, state.viewW, state.viewH);
    const rgba = ctx.getImageData(0, 0, state.viewW, state.viewH).data;
    const out = new Uint8Array(state.viewW * state.viewH);
    for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
    return out;
  }

  async function showResult(result) {
    try {
      state.width = result.image.width;
      state.height = result.image.height;
      state.scale = Math.min(1, MAX_VIEW_SIDE / Math.max(state.width, state.height));
      state.viewW = Math.max(1, Math.round(state.width * state.scale));
      state.viewH = Math.max(1, Math.round(state.height * state.scale));
      const source = state.bitmap || (result.image_jpeg ? await decodeJpeg(result.image_jpeg) : null);
      const [maskImg, probImg] = await Promise.all([decodePng(result.mask_png), decodePng(result.probability.png)]);
      const mask = channelAtViewSize(maskImg, false);
      for (let i = 0; i < mask.length; i++) mask[i] = mask[i] > 127 ? 1 : 0;
      state.serverMask = mask;
      state.prob = channelAtViewSize(probImg, true);
      state.mask = mask;
      state.result = result;
      state.serverThreshold = result.threshold;
      state.preview = false;

      for (const c of [els.imageCanvas, els.overlayCanvas]) {
        c.width = state.viewW;
        c.height = state.viewH;
      }
      const ctx = els.imageCanvas.getContext("2d");
      ctx.clearRect(0, 0, state.viewW, state.viewH);
      if (source) ctx.drawImage(source, 0, 0, state.viewW, state.viewH);
      els.threshold.disabled = false;
      els.threshold.value = String(result.threshold);
      els.thresholdValue.textContent = result.threshold.toFixed(2);
      els.remeasure.hidden = true;
      drawOverlay();
      renderTable();
      renderTrust(result.trust || {});
      els.downloadMask.disabled = false;
      els.downloadJson.disabled = false;
      const t = result.timings_ms;
      els.timings.textContent = `Server time ${t.total.toFixed(0)} ms (decode ${t.decode.toFixed(0)}, model ${t.inference.toFixed(0)}, ` +
        `measure ${t.postprocess.toFixed(0)}, queue ${t.queue.toFixed(0)}).`;
      els.caption.textContent = `${result.image.name} · ${result.image.width} × ${result.image.height} px · model ${result.model}` +
        (result.postprocess.length ? ` · post-processing: ${result.postprocess.join(", ")}` : "");
      els.viewer.dataset.state = "ready";
      setStatus(`Segmented ${result.image.name}.`);
      // On a phone the result sits below the controls: bring it into view.
      if (window.matchMedia("(max-width: 800px)").matches) els.viewer.scrollIntoView({ block: "start" });
    } catch (err) {
      showError(`Could not show the result: ${err.message}`);
      clearResult();
    }
  }

  // What the model says about its own mask, in words: warnings first, then the quality estimate.
  function renderTrust(trust) {
    const parts = [];
    if (trust.out_of_distribution) {
      parts.push("This image is unlike the images this model was trained on: treat the mask with caution.");
    }
    if (trust.lesion_found === false) parts.push("No lesion found at this threshold.");
    else if (trust.low_confidence) parts.push("Low confidence: the model expects this mask to be poor.");
    if (trust.predicted_dice !== null && trust.predicted_dice !== undefined && trust.lesion_found !== false) {
      parts.push(`Estimated Dice of the mask: ${(100 * trust.predicted_dice).toFixed(0)} %.`);
    }
    els.trust.textContent = parts.join(" ");
    els.trust.hidden = parts.length === 0;
    const warned = Boolean(trust.out_of_distribution || trust.lesion_found === false || trust.low_confidence);
    els.trust.classList.toggle("ok", !warned);
  }

  // ------------------------------------------------------------------------------------------- drawing
  function drawOverlay() {
    if (!state.mask) return;
    const w = state.viewW, h = state.viewH, mask = state.mask;
    const ctx = els.overlayCanvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    const px = img.data;
    const fill = Math.round((Number(els.opacity.value) / 100) * 255);
    els.opacityValue.textContent = `${els.opacity.value}%`;
    const outline = els.contour.checked;
    const r = Math.max(1, Math.round(Math.min(w, h) / 250)); // outline half-width, as viz.overlay_mask draws it
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!mask[i]) continue;
        let edge = false;
        if (outline) {
          for (let dy = -r; dy <= r && !edge; dy++) {
            const yy = y + dy;
            for (let dx = -r; dx <= r; dx++) {
              const xx = x + dx;
              if (yy < 0 || yy >= h || xx < 0 || xx >= w || !mask[yy * w + xx]) { edge = true; break; }
            }
          }
        }
        const o = 4 * i;
        px[o] = LESION[0]; px[o + 1] = LESION[1]; px[o + 2] = LESION[2];
        px[o + 3] = edge ? 255 : fill;
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  function renderTable() {
    const result = state.result;
    if (!result) return;
    const m = result.measurements;
    const mm = result.pixel_size != null;
    let previewArea = null;
    if (state.preview) {
      let n = 0;
      for (let i = 0; i < state.mask.length; i++) n += state.mask[i];
      previewArea = n / (state.scale * state.scale);
    }
    const rows = ROWS.map(([key, label, unitPx, unitMm, mmKey]) => {
      const tr = document.createElement("tr");
      tr.dataset.key = key;
      const useMm = mm && mmKey && mmKey in m;
      const value = useMm ? m[mmKey] : m[key];
      const th = document.createElement("td");
      th.textContent = label;
      const td = document.createElement("td");
      td.id = `m-${key.replace(/_/g, "-")}`;
      td.dataset.value = String(value);
      td.textContent = fmt(value);
      const tu = document.createElement("td");
      tu.textContent = useMm ? unitMm : unitPx;
      if (state.preview) {
        if (key === "area") {
          const a = useMm ? previewArea * result.pixel_size ** 2 : previewArea;
          td.dataset.value = String(a);
          td.textContent = `≈ ${fmt(Math.round(a * 1000) / 1000)}`;
          const note = document.createElement("span");
          note.className = "preview";
          note.textContent = `at ${Number(els.threshold.value).toFixed(2)}`;
          td.append(note);
        } else {
          tr.className = "stale";
        }
      }
      tr.append(th, td, tu);
      return tr;
    });
    els.table.replaceChildren(...rows);
  }

  function onThreshold() {
    if (!state.result) return;
    const t = Number(els.threshold.value);
    els.thresholdValue.textContent = t.toFixed(2);
    if (Math.abs(t - state.serverThreshold) < 0.005) {
      state.mask = state.serverMask;
      state.preview = false;
      els.remeasure.hidden = true;
      els.thresholdNote.textContent = "Moving it re-cuts the probability map here in the page.";
    } else {
      const cut = t * 255;
      const mask = new Uint8Array(state.prob.length);
      for (let i = 0; i < mask.length; i++) mask[i] = state.prob[i] > cut ? 1 : 0;
      state.mask = mask;
      state.preview = true;
      els.remeasure.hidden = false;
      els.thresholdNote.textContent = "Preview from the probability map (no post-processing); other measurements are at the model's threshold until you measure again.";
    }
    drawOverlay();
    renderTable();
  }

  // ------------------------------------------------------------------------------------------- downloads
  function stem() {
    const name = state.result ? state.result.image.name : "image";
    return name.replace(/\.[^.]+$/, "") || "image";
  }
  function saveBlob(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
  function downloadMask() {
    if (!state.result) return;
    if (!state.preview) {
      const bytes = Uint8Array.from(atob(state.result.mask_png), (c) => c.charCodeAt(0));
      saveBlob(new Blob([bytes], { type: "image/png" }), `${stem()}_mask.png`);
      return;
    }
    const c = document.createElement("canvas");
    c.width = state.viewW;
    c.height = state.viewH;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(state.viewW, state.viewH);
    for (let i = 0; i < state.mask.length; i++) {
      const v = state.mask[i] ? 255 : 0;
      img.data[4 * i] = v; img.data[4 * i + 1] = v; img.data[4 * i + 2] = v; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const t = Number(els.threshold.value).toFixed(2);
    c.toBlob((blob) => saveBlob(blob, `${stem()}_mask_t${t}.png`), "image/png");
  }
  function downloadJson() {
    if (!state.result) return;
    const r = state.result;
    const out = {
      image: r.image, model: r.model, threshold: r.threshold, postprocess: r.postprocess,
      pixel_size: r.pixel_size, measurements: r.measurements, trust: r.trust,
    };
    saveBlob(new Blob([JSON.stringify(out, null, 1)], { type: "application/json" }), `${stem()}_measurements.json`);
  }

  // ------------------------------------------------------------------------------------------- wiring
  els.file.addEventListener("change", () => {
    if (els.file.files.length) chooseFile(els.file.files[0]);
    els.file.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (e) => {
      e.preventDefault();
      els.drop.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    document.addEventListener(type, (e) => {
      e.preventDefault();
      if (type === "drop" || e.relatedTarget === null) els.drop.classList.remove("dragging");
    });
  }
  document.addEventListener("drop", (e) => {
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) chooseFile(files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.files : [])][0];
    if (item) chooseFile(item);
  });
  els.model.addEventListener("change", () => {
    describeModel();
    segment();
  });
  els.pixelSize.addEventListener("change", () => segment());
  els.opacity.addEventListener("input", drawOverlay);
  els.contour.addEventListener("change", drawOverlay);
  els.threshold.addEventListener("input", onThreshold);
  els.remeasure.addEventListener("click", () => segment(Number(els.threshold.value)));
  els.downloadMask.addEventListener("click", downloadMask);
  els.downloadJson.addEventListener("click", downloadJson);

  loadModels();
})();
