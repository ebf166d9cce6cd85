/* peersm web UI: the Player page. What to play comes from sessionStorage (set by Play on the
 * Downloads or Library page; no hash_name in the URL). The media element reads /stream/{id}
 * (the session cookie authenticates it). A buffering indicator follows the element's
 * waiting/playing events; the bar under it shows the byte ranges held (GET .../ranges, each 1 s).
 */
"use strict";

let media = null;
let held = { size: 0, ranges: [] };

function drawHave() {
  const { ctx, width, height, colour } = canvas2d("have");
  ctx.fillStyle = colour("--line", "#ccc");
  ctx.fillRect(0, 0, width, height);
  if (!held.size) return;
  ctx.fillStyle = colour("--accent", "#2b6cb0");
  for (const [start, end] of held.ranges) {
    ctx.fillRect((start / held.size) * width, 0, Math.max(1, ((end - start) / held.size) * width), height);
  }
  if (media && media.duration > 0 && isFinite(media.duration)) {  // the playhead
    ctx.fillStyle = colour("--fg", "#000");
    ctx.fillRect((media.currentTime / media.duration) * width - 1, 0, 2, height);
  }
}

async function pollRanges(id) {
  try {
    held = await api("GET", "/api/downloads/" + id + "/ranges");
  } catch (e) {
    return;
  }
  const have = held.ranges.reduce((n, [a, b]) => n + (b - a), 0);
  document.getElementById("held").textContent = held.size
    ? fmtBytes(have) + " of " + fmtBytes(held.size) + " downloaded (" + ((100 * have) / held.size).toFixed(1) + "%)"
    : "waiting for the share's manifest…";
  drawHave();
}

function buffering(on) {
  document.getElementById("buffering").hidden = !on;
}

document.addEventListener("DOMContentLoaded", () => {
  let item = null;
  try {
    item = JSON.parse(sessionStorage.getItem(PLAY_KEY) || "null");
  } catch (e) {
    item = null;
  }
  if (!item || typeof item.id !== "string" || !/^[0-9a-f]{64}$/.test(item.id)) {
    document.getElementById("none").hidden = false;
    document.querySelector(".player").hidden = true;
    return;
  }
  document.getElementById("title").textContent = item.name || item.id.slice(0, 16) + "…";
  const kind = typeof item.type === "string" && item.type.startsWith("audio/") ? "audio" : "video";
  media = el(kind, { controls: true, preload: "auto" });
  for (const name of ["waiting", "stalled", "seeking", "loadstart"]) media.addEventListener(name, () => buffering(true));
  for (const name of ["playing", "canplay", "pause", "seeked"]) media.addEventListener(name, () => buffering(media.readyState < 3 && !media.paused));
  media.addEventListener("playing", () => buffering(false));
  media.addEventListener("timeupdate", drawHave);
  media.addEventListener("error", () => {
    buffering(false);
    notice("The browser cannot play this file (type " + (item.type || "unknown") + "): export it from Downloads instead.");
  });
  media.src = "/stream/" + item.id;
  document.getElementById("media").append(media);
  media.play().catch(() => {
    buffering(false);  // the browser wants a click before playing sound: the controls are there
  });
  pollRanges(item.id);
  setInterval(() => pollRanges(item.id), 1000);
  window.addEventListener("resize", drawHave);
});
