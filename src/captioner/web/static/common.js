// Helpers both pages share (index.html and library.html load this first).
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
