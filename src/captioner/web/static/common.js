// Helpers the pages share (index.html, library.html and review.html load this first).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);

function announceIn(region, message) {
  // clear first so a repeated message is announced again
  region.textContent = "";
  window.setTimeout(() => { region.textContent = message; }, 30);
}

function asAltText(caption) {
  // alt text reads as a sentence: capital first letter, final full stop
  const text = (caption || "").trim();
  if (!text) return text;
  const sentence = text[0].toUpperCase() + text.slice(1);
  return /[.!?]$/.test(sentence) ? sentence : `${sentence}.`;
}

async function readJson(response) {
  try { return await response.json(); } catch { return null; } // a proxy's HTML error page
}

function errorText(response, body) {
  return body && typeof body.detail === "string" ? body.detail : `the server answered ${response.status}`;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function reviewMark(photo) {
  // a library photo's review, in words (never only a colour): who stands behind its caption, or that it needs a look
  if (photo.review === "edited") return "Written by a person";
  if (photo.review === "approved") return "Approved by a person";
  if (photo.needs_review) return "Needs review";
  return "";
}
