/* peersm web UI: the Network page (GET /api/network every 2 s). The bandwidth chart is drawn
 * on a <canvas> by this script: received and sent bytes per second over the samples kept.
 */
"use strict";

function facts(pairs) {
  const out = [];
  for (const [label, value] of pairs) out.push(el("dt", {}, label), el("dd", {}, String(value)));
  return out;
}

function drawChart(samples) {
  const { ctx, width, height, colour } = canvas2d("chart");
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = colour("--line", "#ccc");
  ctx.lineWidth = 1;
  ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
  if (samples.length < 2) {
    ctx.fillStyle = colour("--muted", "#888");
    ctx.fillText("collecting samples…", 8, 18);
    return;
  }
  const top = Math.max(1024, ...samples.map((s) => Math.max(s.in_bps, s.out_bps)));
  const t0 = samples[0].t;
  const span = Math.max(1, samples[samples.length - 1].t - t0);
  const x = (t) => 4 + ((t - t0) / span) * (width - 8);
  const y = (v) => height - 4 - (v / top) * (height - 24);
  for (const [key, name, fallback] of [["in_bps", "--accent", "#2b6cb0"], ["out_bps", "--ok", "#2f855a"]]) {
    ctx.strokeStyle = colour(name, fallback);
    ctx.lineWidth = 2;
    ctx.beginPath();
    samples.forEach((s, i) => (i ? ctx.lineTo(x(s.t), y(s[key])) : ctx.moveTo(x(s.t), y(s[key]))));
    ctx.stroke();
  }
  ctx.fillStyle = colour("--muted", "#888");
  ctx.fillText("max " + fmtRate(top), 8, 14);
}

function render(doc) {
  const h = doc.anonymity;
  fill(
    document.getElementById("health"),
    ...facts([
      ["Guards", h.guards],
      ["ORDBs in use now", h.ordbs_now],
      ["Distinct ORDBs used", h.ordbs_seen],
      ["Path rules relaxed", h.path_rules_relaxed ? "yes: " + h.relaxed.join("; ") : "no"],
      ["Peers in view", h.peer_view],
    ]),
  );
  fill(
    document.getElementById("roles"),
    ...facts([
      ["hash_names indexed (as ORDB)", doc.ordb.hash_names],
      ["Queries received", doc.ordb.queries],
      ["Queries served", doc.ordb.queries_served],
      ["Queries forwarded", doc.ordb.forwarded],
      ["DHT contacts", doc.dht.contacts],
      ["DHT records held", doc.dht.records],
    ]),
  );
  fill(
    document.getElementById("links"),
    ...doc.links.map((l) =>
      el(
        "tr",
        {},
        el("td", {}, el("code", {}, l.peer)),
        el("td", {}, l.transport),
        el("td", {}, l.guard ? "guard" : "–"),
        el("td", {}, l.initiator ? "outgoing" : "incoming"),
        el("td", { class: "num" }, fmtDuration(l.age_s)),
      ),
    ),
  );
  fill(
    document.getElementById("circuits"),
    ...doc.circuits.map((c) =>
      el("tr", {}, el("td", {}, c.kind), el("td", { class: "num" }, String(c.hops)), el("td", {}, el("code", {}, c.first_hop || "–"))),
    ),
  );
  document.getElementById("relayed").textContent = doc.relayed_circuits + " circuits of other peers pass through this one.";
  const samples = doc.bandwidth.samples;
  const last = samples[samples.length - 1];
  document.getElementById("bw-now").textContent = last ? "now: " + fmtRate(last.in_bps) + " in, " + fmtRate(last.out_bps) + " out" : "";
  drawChart(samples);
}

async function load() {
  try {
    render(await api("GET", "/api/network"));
  } catch (e) {
    /* api() already shows the problem in the banner */
  }
}

document.addEventListener("DOMContentLoaded", () => {
  load();
  setInterval(load, 2000);
});
