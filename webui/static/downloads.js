/* peersm web UI: the Downloads page. The list comes from GET /api/downloads (every 5 s, for
 * downloads started elsewhere); each running download's row is kept live by its event stream
 * (GET /api/downloads/{id}/events; at most MAX_STREAMS at once). Controls are POSTs; names and errors go in as text.
 */
"use strict";

const rows = new Map();  // id -> {tr, cells, bar, pct, source, last, controls}
// A browser keeps at most 6 connections to one host over HTTP/1.1: a few event streams at once,
// the other rows are refreshed by the 5 s poll, so API calls always find a free connection.
const MAX_STREAMS = 3;

function openStreams() {
  let n = 0;
  for (const row of rows.values()) if (row.source) n += 1;
  return n;
}

function statusText(d) {
  if (d.error) return d.state + ": " + d.error;
  if (d.waiting_for) return "waiting for " + d.waiting_for;
  if (d.state === "complete" && d.exported) return "complete, saved as " + d.exported;
  return d.state;
}

async function control(id, action) {
  try {
    const doc = await api("POST", "/api/downloads/" + id + "/" + action);
    if (action === "cancel" || action === "remove") dropRow(id);
    else update(doc);
  } catch (e) {
    notice(action + " failed: " + e.message);
  }
}

function buttons(d) {
  const out = [];
  const add = (label, fn) => out.push(el("button", { type: "button", onclick: fn }, label));
  if (d.running) add("Pause", () => control(d.id, "pause"));
  else if (d.state !== "complete") add("Resume", () => control(d.id, "resume"));
  if (d.state !== "complete") add("Cancel", () => {
    if (window.confirm("Cancel this download and delete what it fetched?")) control(d.id, "cancel");
  });
  if (!d.running) add("Remove", () => control(d.id, "remove"));
  if (d.state === "complete") add("Export", () => exportShare("/api/downloads/" + d.id + "/export", d.name || ""));
  if (playable(d.type)) add("Play", () => play(d.id, d.name, d.type));
  return out;
}

function makeRow(id) {
  const cells = {
    name: el("td", { class: "name" }),
    progress: el("td"),
    rate: el("td", { class: "num" }),
    eta: el("td", { class: "num" }),
    circuits: el("td", { class: "num" }),
    status: el("td", { class: "small" }),
    actions: el("td", { class: "actions" }),
  };
  const bar = el("progress", { max: 100, value: 0 });
  const pct = el("span", { class: "small muted" });
  cells.progress.append(bar, pct);
  const tr = el("tr", {}, ...Object.values(cells));
  document.getElementById("rows").append(tr);
  const row = { tr: tr, cells: cells, bar: bar, pct: pct, source: null, last: null, controls: null };
  rows.set(id, row);
  return row;
}

function update(d) {
  const row = rows.get(d.id) || makeRow(d.id);
  row.last = d;
  const c = row.cells;
  c.name.textContent = d.name || d.id.slice(0, 16) + "…";
  const fraction = d.total > 0 ? d.have / d.total : 0;
  row.bar.value = Math.floor(fraction * 100);
  row.pct.textContent = " " + (fraction * 100).toFixed(1) + "% (" + fmtBytes(d.bytes) + " of " + fmtBytes(d.size) + ")";
  c.rate.textContent = d.running ? fmtRate(d.rate) : "–";
  c.eta.textContent = fmtDuration(d.eta_s);
  c.circuits.textContent = d.circuits + " / " + d.ordbs;
  c.status.textContent = statusText(d);
  c.status.className = "small state-" + d.state;
  // rebuilt only when the set of controls changes: a button replaced under the pointer between
  // mousedown and mouseup (an event arrives several times a second) would swallow the click
  const controls = buttons(d);
  const key = controls.map((b) => b.textContent).join("|") + "|" + d.name + "|" + d.type;
  if (key !== row.controls) {
    row.controls = key;
    fill(c.actions, ...controls);
  }
  if (!d.running && row.source) {
    row.source.close();
    row.source = null;
  } else if (d.running && !row.source && openStreams() < MAX_STREAMS) {
    follow(d.id, row);
  }
  document.getElementById("empty").hidden = rows.size > 0;
}

function follow(id, row) {
  row.source = events("/api/downloads/" + id + "/events", update, (message) => {
    row.source = null;
    notice("Live updates of a download stopped: " + message);
  });
  row.source.addEventListener("end", () => {
    row.source = null;
    refresh();
  });
}

function dropRow(id) {
  const row = rows.get(id);
  if (!row) return;
  if (row.source) row.source.close();
  row.tr.remove();
  rows.delete(id);
  document.getElementById("empty").hidden = rows.size > 0;
}

async function refresh() {
  let doc;
  try {
    doc = await api("GET", "/api/downloads");
  } catch (e) {
    return;
  }
  const seen = new Set();
  for (const d of doc.downloads) {
    seen.add(d.id);
    update(d);
  }
  for (const id of [...rows.keys()]) if (!seen.has(id)) dropRow(id);
}

async function start() {
  const input = document.getElementById("link");
  const text = input.value.trim();
  const status = document.getElementById("status");
  if (!text) {
    status.textContent = "Paste a peersm link first.";
    return;
  }
  try {
    const d = await api("POST", "/api/downloads", { link: text });
    input.value = "";
    status.textContent = "";
    update(d);
  } catch (e) {
    status.textContent = "Cannot start: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("start").addEventListener("click", start);
  document.getElementById("link").addEventListener("keydown", (e) => {
    if (e.key === "Enter") start();
  });
  refresh();
  setInterval(refresh, 5000);
});
