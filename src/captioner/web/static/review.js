// captioner review page: the served library's photos one at a time, each with its caption and the model's other
// captions; a person accepts one, or writes their own. Every control is a native button, radio group or text field,
// so Tab, Enter, Space and the arrow keys work as everywhere; what was saved is announced in a live region.
// No framework and no network beyond this server, so the page works offline; no inline script (the CSP forbids it).
"use strict";

const BATCH = 50; // photos asked for at a time; Next asks for more at the end of them
const PICTURE_SIZE = 512; // the largest thumbnail the server makes: enough to judge a caption by
const FILTERS = {
  "needs-review": {
    name: "photos that need review",
    empty: "No photo needs review: every caption the model doubts has been checked by a person. "
      + "Choose “All that no person has checked yet” to look at the others.",
  },
  unreviewed: { name: "photos no person has checked yet", empty: "Every caption of this library has been checked by a person." },
  all: { name: "captioned photos", empty: "This library has no captioned photo yet." },
};

const elements = {
  info: $("#library-info"),
  filterForm: $("#filter-form"),
  filter: $("#filter-select"),
  filterButton: $("#filter-button"),
  status: $("#review-status"),
  item: $("#review-item"),
  position: $("#review-position"),
  path: $("#review-path"),
  image: $("#review-image"),
  noImage: $("#review-no-image"),
  full: $("#review-full"),
  mark: $("#review-mark"),
  caption: $("#review-caption"),
  machine: $("#review-machine"),
  confidence: $("#review-confidence"),
  chooseForm: $("#choose-form"),
  choices: $("#choices"),
  editForm: $("#edit-form"),
  input: $("#caption-input"),
  previous: $("#previous-button"),
  next: $("#next-button"),
  empty: $("#review-empty"),
  template: $("#choice-template"),
};

// the photos met so far, in order (Previous and Next walk them), and where the server's list goes on
let queue = newQueue("needs-review");
let saving = false;

function newQueue(filter) {
  return {
    filter,
    items: [],
    index: -1,
    offset: 0, // where the next batch starts on the server
    remaining: 0, // how many the server had after the last batch
    counted: new Set(), // paths the server counted in `offset` that may leave its (unreviewed) filter
  };
}

// --- small helpers -----------------------------------------------------------------------------
function announce(message) {
  announceIn(elements.status, message);
}

function normalise(text) {
  return (text || "").replace(/\s+/g, " ").trim();
}

function photoUrlPath(path) {
  // each part percent-encoded: a \xNN byte escape becomes %5CxNN, which the server turns back into that byte
  return path.split("/").map(encodeURIComponent).join("/");
}

function current() {
  return queue.items[queue.index] || null;
}

function totalCount() {
  return queue.items.length + queue.remaining;
}

function markOf(photo) {
  return reviewMark(photo) || "Written by the model, not reviewed yet";
}

function describe(photo) {
  const caption = photo.caption ? asAltText(photo.caption) : "no caption yet.";
  return `Photo ${queue.index + 1} of ${totalCount()}, ${markOf(photo).toLowerCase()}: ${caption}`;
}

async function getJson(url, options) {
  try {
    const response = await fetch(url, options);
    return { response, body: await readJson(response) };
  } catch {
    return { response: null, body: null };
  }
}

// --- showing one photo -----------------------------------------------------------------------------
function choiceOptions(photo) {
  // the caption as it stands, the model's own when a person changed it, then the model's other captions
  const options = [];
  if (photo.caption) {
    options.push({ value: "caption", kind: photo.review === "machine" ? "The model’s caption" : "The caption now", text: photo.caption });
  }
  if (photo.machine_caption && photo.machine_caption !== photo.caption) {
    options.push({ value: "machine", kind: "The model’s own caption", text: photo.machine_caption });
  }
  const shown = new Set(options.map((option) => option.text));
  (photo.alternatives || []).forEach((alternative, number) => {
    if (shown.has(alternative.text)) return;
    shown.add(alternative.text);
    options.push({ value: String(number), kind: `The model’s alternative ${number + 1}`, text: alternative.text });
  });
  return options;
}

function renderChoices(photo) {
  const labels = choiceOptions(photo).map((option, number) => {
    const label = elements.template.content.firstElementChild.cloneNode(true);
    const radio = $("input", label);
    radio.value = option.value;
    radio.checked = number === 0;
    $(".choice-kind", label).textContent = `${option.kind}: `;
    $(".choice-text", label).textContent = asAltText(option.text);
    return label;
  });
  if (!labels.length) {
    const none = document.createElement("p");
    none.className = "hint";
    none.textContent = "The model wrote no caption for this photo: write one below.";
    labels.push(none);
  }
  elements.choices.replaceChildren(...labels);
}

function renderPicture(photo) {
  const caption = photo.caption ? asAltText(photo.caption) : `Photo ${photo.path}, not captioned yet.`;
  elements.image.alt = caption; // the caption is the picture's alt text, as it will be on a web page
  if (photo.thumbnail_url && photo.photo_url) {
    const source = photo.thumbnail_url.replace(/([?&])size=\d+/, `$1size=${PICTURE_SIZE}`);
    if (elements.image.getAttribute("src") !== source) {
      elements.item.dataset.image = "loading";
      elements.image.src = source;
    }
    elements.image.hidden = false;
    elements.noImage.hidden = true;
    elements.full.href = photo.photo_url;
    elements.full.hidden = false;
  } else {
    // a name this server cannot address: say so in words instead of a broken picture
    elements.item.dataset.image = "missing";
    elements.image.removeAttribute("src");
    elements.image.hidden = true;
    elements.noImage.hidden = false;
    elements.full.hidden = true;
  }
}

function render(photo) {
  elements.empty.hidden = true;
  elements.item.hidden = false;
  elements.item.dataset.review = photo.review === "machine" && photo.needs_review ? "needs-review" : photo.review;
  elements.position.textContent = `${queue.index + 1} of ${totalCount()}`;
  elements.path.textContent = photo.path;
  renderPicture(photo);
  elements.mark.textContent = markOf(photo);
  elements.caption.textContent = photo.caption ? asAltText(photo.caption) : "No caption yet.";
  const machine = photo.machine_caption && photo.machine_caption !== photo.caption;
  elements.machine.hidden = !machine;
  elements.machine.textContent = machine ? `The model wrote: “${asAltText(photo.machine_caption)}”` : "";
  const confidence = typeof photo.confidence === "number";
  elements.confidence.hidden = !confidence;
  elements.confidence.textContent = confidence ? `The model’s confidence in it: ${Math.round(photo.confidence * 100)}%` : "";
  renderChoices(photo);
  elements.input.value = photo.caption || "";
}

function show(index) {
  queue.index = index;
  render(queue.items[index]);
}

function showEmpty(message) {
  elements.item.hidden = true;
  elements.empty.hidden = false;
  elements.empty.textContent = message;
}

// --- the list of photos ----------------------------------------------------------------------------
async function fetchBatch() {
  // true when photos came, false at the end of the list, null on an error (announced)
  const params = new URLSearchParams({ filter: queue.filter, offset: String(queue.offset), limit: String(BATCH) });
  const asked = queue;
  const { response, body } = await getJson(`/api/library/review?${params}`);
  if (asked !== queue) return null; // another list was chosen meanwhile
  if (!response) {
    announce("Could not reach the captioner server; is it still running?");
    return null;
  }
  if (!response.ok || !body || !Array.isArray(body.photos)) {
    announce(`Could not load the photos: ${response.ok ? "unexpected answer" : errorText(response, body)}`);
    return null;
  }
  const known = new Set(queue.items.map((photo) => photo.path));
  for (const photo of body.photos) {
    // saving takes a photo out of an unreviewed list (one that cannot be saved, its name not addressable, never leaves)
    if (queue.filter !== "all" && photo.review_url) queue.counted.add(photo.path);
    if (!known.has(photo.path)) queue.items.push(photo);
  }
  queue.offset += body.photos.length;
  queue.remaining = Math.max(0, body.total - queue.offset);
  return body.photos.length > 0;
}

function remember(filter, path) {
  // the filter goes in the address, so reload and a shared link show the same list
  const url = new URL(window.location.href);
  url.searchParams.set("filter", filter);
  if (path) url.searchParams.set("path", path); else url.searchParams.delete("path");
  window.history.replaceState(null, "", url);
}

async function start(filter, path) {
  const mine = queue = newQueue(filter);
  remember(filter, path);
  elements.item.setAttribute("aria-busy", "true");
  announce(`Loading ${FILTERS[filter].name}…`);
  if (path) {
    // a photo named in the address (the search page links each result here) comes first
    const { response, body } = await getJson(`/api/library/review/${photoUrlPath(path)}`);
    if (mine !== queue) return;
    if (response && response.ok && body && typeof body.path === "string") queue.items.push(body);
  }
  const fetched = await fetchBatch();
  if (mine !== queue) return; // Show was pressed again meanwhile: the newer list wins
  elements.item.removeAttribute("aria-busy");
  if (fetched === null && !queue.items.length) { // the error is announced
    showEmpty("The photos could not be loaded. Press Show to try again.");
    return;
  }
  if (!queue.items.length) {
    showEmpty(FILTERS[filter].empty);
    announce(FILTERS[filter].empty);
    return;
  }
  show(0);
  announce(`${totalCount()} ${FILTERS[filter].name}. ${describe(current())}`);
}

async function move(step) {
  if (!current()) return;
  let target = queue.index + step;
  if (step > 0) {
    while (target >= queue.items.length && queue.remaining > 0) {
      const fetched = await fetchBatch();
      if (fetched === null) return; // the error is announced
      if (!fetched) break;
    }
  }
  if (target < 0) {
    announce(`This is the first photo of the list. ${describe(current())}`);
    return;
  }
  if (target >= queue.items.length) {
    announce(`This is the last photo of the list. ${describe(current())}`);
    return;
  }
  show(target);
  announce(describe(current()));
}

// --- saving a verdict ----------------------------------------------------------------------------------
async function save(verdict) {
  const photo = current();
  if (!photo || saving) return;
  if (!photo.review_url) {
    announce("Not saved: this photo’s file name cannot be named by the web page.");
    return;
  }
  saving = true;
  elements.item.setAttribute("aria-busy", "true");
  announce("Saving…");
  const { response, body } = await getJson(photo.review_url, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(verdict),
  });
  saving = false;
  elements.item.removeAttribute("aria-busy");
  if (!response) {
    announce("Not saved: could not reach the captioner server; is it still running?");
    return;
  }
  if (!response.ok || !body || typeof body.path !== "string") {
    announce(`Not saved: ${response.ok ? "unexpected answer" : errorText(response, body)}`);
    return;
  }
  if (queue.counted.delete(photo.path)) queue.offset -= 1; // it left the unreviewed list: the rest move up one
  const index = queue.items.indexOf(photo);
  if (index >= 0) queue.items[index] = body;
  if (current() === body) {
    // focus stays where it was; only the radios are rebuilt, so a focused radio hands it to the new checked one
    const onChoice = elements.choices.contains(document.activeElement);
    render(body);
    if (onChoice) $("input:checked", elements.choices)?.focus();
  }
  announce(`Saved, ${markOf(body).toLowerCase()}: ${asAltText(body.caption)}`);
}

elements.chooseForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const photo = current();
  const choice = elements.choices.querySelector("input:checked");
  if (!photo || !choice) {
    announce("Nothing to accept: this photo has no caption. Write one in the text field.");
    return;
  }
  if (choice.value === "caption") save({ accept: "caption" });
  else if (choice.value === "machine") save({ text: photo.machine_caption, edited: false });
  else save({ accept: Number(choice.value) });
});

elements.editForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const photo = current();
  if (!photo) return;
  const text = normalise(elements.input.value);
  if (!text) {
    announce("Not saved: the text field is empty. Write a caption first.");
    return;
  }
  // the same words as one of the model's captions is an approval; anything else the person wrote
  const offered = [photo.machine_caption, ...(photo.alternatives || []).map((alternative) => alternative.text)].map(normalise);
  save({ text, edited: !offered.includes(text) });
});

elements.previous.addEventListener("click", () => move(-1));
elements.next.addEventListener("click", () => move(1));

elements.image.addEventListener("load", () => { elements.item.dataset.image = "loaded"; });
elements.image.addEventListener("error", () => {
  if (!elements.image.getAttribute("src")) return;
  elements.item.dataset.image = "missing";
  elements.image.hidden = true;
  elements.noImage.hidden = false;
});

elements.filterForm.addEventListener("submit", (event) => {
  event.preventDefault();
  start(elements.filter.value, null);
});

// --- wiring ------------------------------------------------------------------------------------------
async function loadLibraryInfo() {
  const { response, body } = await getJson("/api/library");
  if (!response) {
    elements.info.textContent = "Library details unavailable: could not reach the server.";
    return false;
  }
  if (!response.ok) {
    elements.info.textContent = response.status === 404 ? "This server has no photo library. Start it with "
      + "captioner serve RUN --library FILE (made by captioner index PHOTOS_DIR)." : `Library unavailable: ${errorText(response, body)}`;
    elements.filter.disabled = elements.filterButton.disabled = true;
    showEmpty(elements.info.textContent);
    announce(elements.info.textContent);
    return false;
  }
  elements.info.textContent = `Library of the folder “${body.name}”: ${plural(body.photos, "photo")}.`;
  return true;
}

(async () => {
  const params = new URL(window.location.href).searchParams;
  const filter = Object.hasOwn(FILTERS, params.get("filter") || "") ? params.get("filter") : "needs-review";
  elements.filter.value = filter;
  if (await loadLibraryInfo()) start(filter, params.get("path"));
})();
