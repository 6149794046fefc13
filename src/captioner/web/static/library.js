// captioner library page: search the served photo library's captions, show the matches as a grid of thumbnails.
// No framework and no network beyond this server, so the page works offline; no inline script (the CSP forbids it).
"use strict";

const RESULT_LIMIT = 40;

const elements = {
  form: $("#search-form"),
  input: $("#search-input"),
  button: $("#search-button"),
  info: $("#library-info"),
  status: $("#library-status"),
  results: $("#library-results"),
  template: $("#photo-template"),
};

// --- small helpers -----------------------------------------------------------------------------
function announce(message) {
  announceIn(elements.status, message);
}

// --- results -----------------------------------------------------------------------------------------
function renderPhoto(photo) {
  const item = elements.template.content.firstElementChild.cloneNode(true);
  const caption = photo.caption ? asAltText(photo.caption) : `Photo ${photo.path}, not captioned yet.`;
  const link = $(".photo-link", item);
  const image = $(".thumbnail", item);
  const missing = $(".no-thumbnail", item);
  item.dataset.doubtful = String(Boolean(photo.doubtful));
  image.alt = caption;
  if (photo.photo_url && photo.thumbnail_url) {
    link.href = photo.photo_url;
    image.addEventListener("load", () => { item.dataset.thumbnail = "loaded"; });
    image.addEventListener("error", () => {
      // the file is gone or unreadable: say so, and keep the caption in the link's name (the hidden image had it)
      item.dataset.thumbnail = "missing";
      image.hidden = true;
      missing.hidden = false;
      link.setAttribute("aria-label", `Full photo, no thumbnail: ${caption}`);
    });
    image.src = photo.thumbnail_url;
  } else {
    item.dataset.thumbnail = "missing"; // a name this server cannot address (not UTF-8)
    image.hidden = true;
    missing.hidden = false;
  }
  $(".library-caption", item).textContent = caption;
  const confidence = $(".photo-confidence", item);
  if (typeof photo.confidence === "number") {
    confidence.textContent = `Confidence ${Math.round(photo.confidence * 100)}%`;
    confidence.hidden = false;
  }
  // who stands behind a caption, and a doubtful one no person has checked, are marked in words, not only by colour:
  // a blind reader must not take a doubtful caption on trust
  const mark = $(".review-mark", item);
  mark.textContent = reviewMark(photo);
  mark.hidden = !mark.textContent;
  item.dataset.review = photo.needs_review ? "needs-review" : photo.review || "machine";
  $(".doubt-note", item).hidden = !photo.needs_review;
  $(".fallback-note", item).hidden = photo.source !== "fallback" || photo.review !== "machine";
  $(".photo-path", item).textContent = photo.path;
  if (photo.photo_url && photo.caption) {
    const review = $(".review-photo-link", item);
    review.href = `/library/review?${new URLSearchParams({ path: photo.path })}`;
    review.setAttribute("aria-label", `Review this caption: ${caption}`);
    review.hidden = false;
  }
  return item;
}

function summary(text, count) {
  if (!count) return `No photo matches “${text}”. Try other words.`;
  const doubtful = elements.results.querySelectorAll("[data-review='needs-review']").length;
  const more = count >= RESULT_LIMIT ? ` (the best ${RESULT_LIMIT}; add words to narrow the search)` : "";
  const doubts = doubtful ? `, ${doubtful} of them with a doubtful caption that needs review` : "";
  return `${plural(count, "photo")} match “${text}”${more}${doubts}.`;
}

// --- searching -----------------------------------------------------------------------------------------
let latest = 0;
let controller = null;

function remember(text) {
  // the query goes in the address, so reload, back and a shared link show the same results
  const url = new URL(window.location.href);
  if (text) url.searchParams.set("q", text); else url.searchParams.delete("q");
  window.history.replaceState(null, "", url);
}

async function runSearch(query) {
  const text = query.trim();
  remember(text);
  if (controller) controller.abort(); // only the newest search may fill the grid
  const ticket = ++latest;
  if (!text) {
    elements.results.replaceChildren();
    announce("Type one or more words, then press Enter.");
    return;
  }
  controller = new AbortController();
  elements.results.setAttribute("aria-busy", "true");
  announce(`Searching for “${text}”…`);
  const params = new URLSearchParams({ q: text, limit: String(RESULT_LIMIT) });
  let response, body;
  try {
    response = await fetch(`/api/library/search?${params}`, { signal: controller.signal });
    body = await readJson(response);
  } catch (error) {
    if (error.name === "AbortError") return;
    response = null;
  }
  if (ticket !== latest) return;
  elements.results.removeAttribute("aria-busy");
  if (!response) {
    announce("Could not reach the captioner server; is it still running?");
    return;
  }
  if (!response.ok || !body || !Array.isArray(body.results)) {
    elements.results.replaceChildren();
    announce(`Search failed: ${response.ok ? "unexpected answer" : errorText(response, body)}`);
    return;
  }
  elements.results.replaceChildren(...body.results.map(renderPhoto));
  announce(summary(text, body.results.length));
}

// --- wiring ------------------------------------------------------------------------------------------
async function loadLibraryInfo() {
  let response, body;
  try {
    response = await fetch("/api/library");
    body = await readJson(response);
  } catch {
    elements.info.textContent = "Library details unavailable: could not reach the server.";
    return false;
  }
  if (!response.ok) {
    // no library is served: say how to serve one, and keep the form from pretending to work
    elements.info.textContent = response.status === 404 ? "This server has no photo library. Start it with "
      + "captioner serve RUN --library FILE (made by captioner index PHOTOS_DIR)." : `Library unavailable: ${errorText(response, body)}`;
    elements.input.disabled = elements.button.disabled = true;
    announce(elements.info.textContent);
    return false;
  }
  elements.info.textContent = `Library of the folder “${body.name}”: ${plural(body.photos, "photo")}.`;
  return true;
}

elements.form.addEventListener("submit", (event) => {
  event.preventDefault();
  runSearch(elements.input.value);
});

(async () => {
  const query = new URL(window.location.href).searchParams.get("q") || "";
  elements.input.value = query;
  if (await loadLibraryInfo() && query.trim()) runSearch(query);
})();
