// captioner page: upload photos, show captions, candidates and per-word attention heatmaps.
// No framework and no network beyond this server, so the page works offline.
"use strict";

const MAX_PARALLEL_UPLOADS = 4; // the server batches concurrent requests together
const limits = { max_upload_bytes: 10 * 1024 * 1024, max_beam_size: 10 };

const elements = {
  input: $("#file-input"),
  dropZone: $("#drop-zone"),
  beamSize: $("#beam-size"),
  nBest: $("#n-best"),
  results: $("#results"),
  empty: $("#empty"),
  status: $("#status"),
  clear: $("#clear-results"),
  modelInfo: $("#model-info"),
  limitBytes: $("#limit-bytes"),
  template: $("#card-template"),
};

// --- small helpers -----------------------------------------------------------------------------
function announce(message) {
  announceIn(elements.status, message);
}

function formatBytes(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(bytes % (1024 * 1024) ? 1 : 0)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${bytes} bytes`;
}

function scoreText(candidate) {
  // the candidates are ranked by score (log-probability, length-normalised and reranked as the run decodes),
  // so that is the number to show first; the raw log-probability beside it can differ in either direction
  if (candidate.score == null || candidate.log_probability == null) return "built from what the encoder recognised";
  return `score ${candidate.score.toFixed(2)} · log p ${candidate.log_probability.toFixed(2)}`;
}

function confidenceText(data) {
  // a doubtful caption says so in words, with the reasons: a blind reader must not take it on trust
  if (data.confidence == null) return null;
  const percent = Math.round(data.confidence * 100);
  const said = data.source === "fallback" ? " The model's own captions conflicted with what it recognised, so this one says less." : "";
  const reasons = data.doubts && data.doubts.length ? ` (${data.doubts.join("; ")})` : "";
  if (data.doubtful) return `Doubtful: confidence ${percent}%. Check it before using it as alt text.${said}${reasons}`;
  return `Confidence ${percent}%.${said}${reasons}`;
}

function clampInput(input, low, high) {
  const value = Math.round(Number(input.value));
  const clamped = Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : low;
  input.value = String(clamped);
  return clamped;
}

function whereItLooked(map) {
  // where the model looked, in words, for people who cannot see the heatmap:
  // the third of the photo (3 x 3) with the highest mean weight, unless nothing stands out
  const size = map.length;
  const third = (index) => Math.min(2, Math.floor((index * 3) / size));
  const sums = Array(9).fill(0), counts = Array(9).fill(0);
  map.forEach((cells, r) => cells.forEach((value, c) => {
    const region = third(r) * 3 + third(c);
    sums[region] += value;
    counts[region] += 1;
  }));
  const means = sums.map((sum, region) => (counts[region] ? sum / counts[region] : 0));
  const overall = sums.reduce((a, b) => a + b, 0) / (size * size);
  const best = means.indexOf(Math.max(...means));
  if (means[best] < 1.3 * overall) return "all over the photo";
  const vertical = ["top", "middle", "bottom"][Math.floor(best / 3)];
  const horizontal = ["left", "centre", "right"][best % 3];
  if (vertical === "middle" && horizontal === "centre") return "mostly at the centre of the photo";
  if (vertical === "middle") return `mostly at the ${horizontal} of the photo`;
  if (horizontal === "centre") return `mostly at the ${vertical} of the photo`;
  return `mostly at the ${vertical} ${horizontal} of the photo`;
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const scratch = document.createElement("textarea"); // fallback for plain-http hosts
  scratch.value = text;
  scratch.setAttribute("readonly", "");
  scratch.className = "visually-hidden";
  document.body.append(scratch);
  scratch.select();
  const copied = document.execCommand("copy");
  scratch.remove();
  if (!copied) throw new Error("copy refused");
}

// --- heatmap ---------------------------------------------------------------------------------------
function drawHeatmap(canvas, image, map) {
  const width = image.clientWidth, height = image.clientHeight;
  const scale = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const size = map.length;
  const peak = Math.max(...map.flat(), 1e-9);
  // one pixel per attention cell, then scaled up smoothly over the photo
  const cells = document.createElement("canvas");
  cells.width = cells.height = size;
  const cellContext = cells.getContext("2d");
  const pixels = cellContext.createImageData(size, size);
  map.forEach((row, r) => row.forEach((value, c) => {
    const strength = value / peak; // 0..1
    const offset = (r * size + c) * 4;
    // a dark veil where it did not look, a light warm tint where it did
    pixels.data[offset] = Math.round(255 * strength);
    pixels.data[offset + 1] = Math.round(170 * strength);
    pixels.data[offset + 2] = 0;
    pixels.data[offset + 3] = Math.round(255 * (0.72 * (1 - strength) + 0.15 * strength));
  }));
  cellContext.putImageData(pixels, 0, 0);
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(cells, 0, 0, canvas.width, canvas.height);
  canvas.dataset.showing = "true";
  canvas.redraw = () => drawHeatmap(canvas, image, map); // after a resize
}

function clearHeatmap(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.showing = "false";
}

// --- cards -----------------------------------------------------------------------------------------
function createCard(file) {
  const card = elements.template.content.firstElementChild.cloneNode(true);
  const headingId = `card-${crypto.randomUUID ? crypto.randomUUID() : Date.now() + Math.random()}`;
  const heading = $(".filename", card);
  heading.textContent = file.name || "pasted image";
  heading.id = headingId;
  card.setAttribute("aria-labelledby", headingId);
  const image = $(".preview", card);
  image.alt = `Preview of ${file.name || "pasted image"}`;
  image.src = URL.createObjectURL(file);
  image.addEventListener("error", () => {
    // formats the browser cannot show (TIFF) or broken files: the server still decides
    image.hidden = true;
    $(".no-preview", card).hidden = false;
  });
  return card;
}

function renderCaption(card, data) {
  card.dataset.state = "done";
  $(".pending", card).hidden = true;
  const result = $(".result", card);
  const image = $(".preview", card);
  const canvas = $(".heatmap", card);
  const where = $(".where", card);
  const captionElement = $(".caption", card);
  image.alt = asAltText(data.caption);
  where.id = `${card.getAttribute("aria-labelledby")}-where`;
  captionElement.replaceChildren();

  const words = data.tokens.map((token, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "word";
    button.textContent = token;
    button.dataset.index = String(index);
    button.setAttribute("aria-describedby", where.id);
    return button;
  });
  words.forEach((button, index) => {
    if (index) captionElement.append(" ");
    captionElement.append(button);
  });

  const show = (button) => {
    const index = Number(button.dataset.index);
    const map = data.attention && data.attention[index];
    if (!map || image.hidden) return;
    words.forEach((other) => other.classList.toggle("active", other === button));
    drawHeatmap(canvas, image, map);
    where.textContent = `“${data.tokens[index]}”: the model looked ${whereItLooked(map)}.`;
  };
  const hide = () => {
    // runs after the event that left a word: another word may be hovered or focused by now
    const keep = captionElement.querySelector(".word:hover") || words.find((word) => word === document.activeElement);
    if (keep) {
      show(keep);
      return;
    }
    words.forEach((other) => other.classList.remove("active"));
    clearHeatmap(canvas);
    where.textContent = "Hover over or focus a word to see where the model looked.";
  };
  words.forEach((button, index) => {
    button.addEventListener("mouseenter", () => show(button));
    button.addEventListener("focus", () => show(button));
    button.addEventListener("click", () => show(button)); // touch screens: Safari does not focus tapped buttons
    button.addEventListener("mouseleave", () => window.setTimeout(hide, 0));
    button.addEventListener("blur", () => window.setTimeout(hide, 0));
    button.addEventListener("keydown", (event) => {
      // arrow keys walk along the sentence
      const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
      if (step === undefined) return;
      const next = words[index + step];
      if (next) { event.preventDefault(); next.focus(); }
    });
  });

  const confidence = $(".confidence", card);
  const note = confidenceText(data);
  confidence.hidden = note === null;
  confidence.textContent = note || "";
  card.dataset.doubtful = String(Boolean(data.doubtful));
  if (!data.attention || !data.attention.length) where.textContent = data.source === "fallback"
    ? "Built from what the encoder recognised: no attention map." : where.textContent;

  const altText = asAltText(data.caption);
  $(".score", card).textContent = scoreText(data);
  $(".copy", card).addEventListener("click", async () => {
    try {
      await copyText(altText);
      announce(`Copied alt text: ${altText}`);
    } catch {
      announce("Could not copy; select the caption text and copy it by hand.");
    }
  });

  const alternatives = $(".alternatives", card);
  const list = $("ol", alternatives);
  list.replaceChildren();
  for (const candidate of data.alternatives || []) {
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.className = "candidate";
    text.lang = "en";
    text.textContent = candidate.caption;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = scoreText(candidate);
    item.append(text, " ", score);
    list.append(item);
  }
  alternatives.hidden = list.children.length === 0;
  result.hidden = false;
}

function renderError(card, message) {
  card.dataset.state = "error";
  $(".pending", card).hidden = true;
  const error = $(".error", card);
  error.textContent = `Rejected. ${message}`;
  error.hidden = false;
}

// --- uploading -------------------------------------------------------------------------------------
async function captionFile(file, card, options) {
  if (file.size > limits.max_upload_bytes) {
    return { ok: false, message: `${file.name}: ${formatBytes(file.size)}, over the ${formatBytes(limits.max_upload_bytes)} limit` };
  }
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  form.append("beam_size", String(options.beamSize));
  form.append("n_best", String(options.nBest));
  form.append("attention", "true");
  let response;
  try {
    response = await fetch("/api/caption", { method: "POST", body: form });
  } catch {
    return { ok: false, message: "could not reach the captioner server; is it still running?" };
  }
  let body = null;
  try { body = await response.json(); } catch { /* a proxy's HTML error page */ }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : `server answered ${response.status}`;
    return { ok: false, message: detail };
  }
  return { ok: true, data: body };
}

async function handleFiles(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  const nBest = clampInput(elements.nBest, 1, limits.max_beam_size);
  const beamSize = Math.max(clampInput(elements.beamSize, 1, limits.max_beam_size), nBest);
  elements.beamSize.value = String(beamSize);
  const options = { beamSize, nBest };

  const cards = files.map(createCard);
  const batch = document.createDocumentFragment();
  cards.forEach((card) => batch.append(card));
  elements.results.prepend(batch); // newest first; earlier results stay below
  elements.empty.hidden = true;
  elements.clear.hidden = false;
  announce(files.length === 1 ? `Captioning ${files[0].name}…` : `Captioning ${files.length} photos…`);

  let captioned = 0, rejected = 0, next = 0;
  async function worker() {
    while (next < files.length) {
      const index = next++;
      const outcome = await captionFile(files[index], cards[index], options);
      if (outcome.ok) {
        captioned += 1;
        renderCaption(cards[index], outcome.data);
        if (files.length === 1) {
          // a screen reader hears the doubt too, not only sighted users who see the mark
          const doubt = outcome.data.doubtful ? " Doubtful caption: check it before use." : "";
          announce(`${files[index].name}: ${asAltText(outcome.data.caption)}${doubt}`);
        }
      } else {
        rejected += 1;
        renderError(cards[index], outcome.message);
        if (files.length === 1) announce(`Rejected. ${outcome.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(MAX_PARALLEL_UPLOADS, files.length) }, worker));
  if (files.length > 1) {
    announce(`Done: ${captioned} captioned${rejected ? `, ${rejected} rejected` : ""}.`);
  }
}

// --- wiring ------------------------------------------------------------------------------------------
async function loadModelInfo() {
  try {
    const response = await fetch("/api/model");
    const model = await response.json();
    Object.assign(limits, model.limits);
    elements.limitBytes.textContent = formatBytes(limits.max_upload_bytes);
    elements.beamSize.max = elements.nBest.max = String(limits.max_beam_size);
    // start from the run's own beam width; more candidates than beams would make the upload widen the beam
    elements.beamSize.value = String(model.decode.beam_size);
    const beamSize = clampInput(elements.beamSize, 1, limits.max_beam_size);
    elements.nBest.value = String(Math.min(clampInput(elements.nBest, 1, limits.max_beam_size), beamSize));
    const parts = [`Model ${model.run}`, model.encoder, `${model.vocabulary_size} words`];
    if (model.test_scores && typeof model.test_scores.CIDEr === "number") {
      parts.push(`test CIDEr ${model.test_scores.CIDEr.toFixed(3)}`);
    }
    if (model.test_scores && typeof model.test_scores["BLEU-4"] === "number") {
      parts.push(`BLEU-4 ${model.test_scores["BLEU-4"].toFixed(3)}`);
    }
    elements.modelInfo.textContent = parts.join(" · ");
  } catch {
    elements.modelInfo.textContent = "Model details unavailable.";
  }
}

async function showLibraryLink() {
  // the library page is linked only when this server has a library to search
  try {
    const response = await fetch("/api/library");
    $("#library-link").hidden = !response.ok;
  } catch { /* no server, no link */ }
}

function setUpDropping() {
  const zone = elements.dropZone;
  const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
  // a file dropped anywhere on the page is an upload, never a navigation away from it
  window.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.classList.add("dragging");
  });
  window.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) zone.classList.remove("dragging");
  });
  window.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.classList.remove("dragging");
    handleFiles(event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    const files = Array.from(event.clipboardData ? event.clipboardData.files : []);
    if (files.length) { event.preventDefault(); handleFiles(files); }
  });
}

elements.input.addEventListener("change", () => {
  const files = Array.from(elements.input.files);
  elements.input.value = ""; // choosing the same file again still fires change
  handleFiles(files);
});

elements.clear.addEventListener("click", () => {
  for (const image of elements.results.querySelectorAll("img.preview")) URL.revokeObjectURL(image.src);
  elements.results.replaceChildren();
  elements.empty.hidden = false;
  elements.clear.hidden = true;
  announce("Results cleared.");
  elements.input.focus();
});

window.addEventListener("resize", () => {
  // the canvas is sized in device pixels: redraw a shown heatmap at the new size
  for (const canvas of elements.results.querySelectorAll("canvas.heatmap[data-showing='true']")) canvas.redraw();
});

setUpDropping();
loadModelInfo();
showLibraryLink();
