/* peersm web UI: number formatting and small helpers shared by the page scripts (share, downloads,
 * library, network, player). Loaded by each page's fragment; page scripts use these from their
 * DOMContentLoaded handler, after every deferred script has run. No HTML is built from strings.
 */
"use strict";

const PLAY_KEY = "peersm-play";  // sessionStorage: what the player page plays (never in a URL)

function fmtBytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return (i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 1 : 0)) + " " + units[i];
}

function fmtRate(bps) {
  return bps > 0 ? fmtBytes(bps) + "/s" : "–";
}

function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function playable(type) {
  return typeof type === "string" && (type.startsWith("audio/") || type.startsWith("video/"));
}

function play(id, name, type) {
  sessionStorage.setItem(PLAY_KEY, JSON.stringify({ id: id, name: name || "", type: type || "" }));
  location.assign("/ui/player");
}

/* Copy `text` to the clipboard; falls back to selecting `input` so the user can press Ctrl+C. */
async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    if (input) {
      input.focus();
      input.select();
    }
    return false;
  }
}

/* Ask for a file name and export a share into the peer's downloads folder. */
async function exportShare(path, suggested) {
  const name = window.prompt("Save a copy in the peer's downloads folder as:", suggested || "");
  if (!name) return;
  try {
    const doc = await api("POST", path, { name: name });
    notice("Saved as " + doc.path);
  } catch (e) {
    notice("Export failed: " + e.message);
  }
}

/* Replace the children of `node` with `children` (nodes or text). */
function fill(node, ...children) {
  node.replaceChildren(...children.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
}
