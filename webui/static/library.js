/* peersm web UI: the Library page (GET /api/library every 10 s and after each action).
 * Names, types and links are remote strings: they go in as text or as input values.
 */
"use strict";

async function act(method, path, body) {
  try {
    await api(method, path, body);
  } catch (e) {
    notice(e.message);
  }
  load();
}

function shareRow(s) {
  const id = s.hash_name;
  const seeding = el("input", { type: "checkbox", "aria-label": "Seeding" });
  seeding.checked = s.seeding;
  seeding.disabled = !id;
  seeding.addEventListener("change", () => act("POST", "/api/library/" + id + "/seeding", { seeding: seeding.checked }));
  const actions = [];
  const add = (label, fn) => actions.push(el("button", { type: "button", onclick: fn }, label));
  if (s.link) {
    add("Copy link", async () => {
      const ok = await copyText(s.link, null);
      notice(ok ? "Link copied." : "The browser refused the clipboard: open Share to copy it.");
    });
  }
  if (id && s.have === s.total && s.total > 0) add("Export", () => exportShare("/api/library/" + id + "/export", s.name || ""));
  if (id && playable(s.type)) add("Play", () => play(id, s.name, s.type));
  if (id && !s.downloading) {
    add("Remove", () => {
      if (window.confirm("Remove this share and its pieces from the store?")) act("POST", "/api/library/" + id + "/remove");
    });
  }
  const state = s.state === "complete" ? "complete" : s.state + " (" + s.have + "/" + s.total + " pieces)";
  return el(
    "tr",
    {},
    el("td", { class: "name" }, s.name || "(encrypted: no key)", s.encrypted ? el("span", { class: "muted small" }, " · encrypted") : null),
    el("td", { class: "num" }, fmtBytes(s.size)),
    el("td", { class: "small" }, s.type || "–"),
    el("td", { class: "small state-" + s.state }, state),
    el("td", {}, seeding),
    el("td", { class: "num" }, String(s.served)),
    el("td", { class: "actions" }, ...actions),
  );
}

async function load() {
  let doc;
  try {
    doc = await api("GET", "/api/library");
  } catch (e) {
    return;
  }
  fill(document.getElementById("rows"), ...doc.shares.map(shareRow));
  document.getElementById("empty").hidden = doc.shares.length > 0;
}

document.addEventListener("DOMContentLoaded", () => {
  load();
  setInterval(load, 10000);
});
