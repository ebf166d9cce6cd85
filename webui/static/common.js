/* peersm web UI: helpers for every page (the shell loads this before the page's own script).
 *
 *   api(method, path, body) -> Promise<object>
 *     Calls the local API with the token of this tab (X-Peersm-Token, from sessionStorage),
 *     sending `body` as JSON (`{}` for a POST/PUT/PATCH/DELETE without one). Resolves to the
 *     JSON answer; rejects with an Error whose message is the server's {"error"} text and
 *     whose `status` is the HTTP status (0: no answer).
 *   events(path, onmessage, onerror) -> EventSource
 *     Opens a server-sent event stream (authenticated by the session cookie: EventSource
 *     cannot send headers). Calls onmessage(object) for each event, closes on the server's
 *     "end" event, and calls onerror(message) (default: notice) when the server reports an
 *     error or the stream is refused. Call .close() on the result to stop.
 *   notice(message)  shows `message` in the banner at the top ("" hides it).
 *   canvas2d(id) -> {ctx, width, height, colour(name, fallback)}
 *     Sizes the canvas `id` to its box at the screen's pixel ratio and returns its 2D context
 *     in CSS pixels, with colour() reading a CSS custom property of the page.
 *   el(tag, attrs, ...children) -> Element
 *     Builds an element: attrs {class, on<event>: function, other: attribute}; children are
 *     nodes or strings (added as text).
 *
 * Rules for page scripts: remote strings (share names, types, errors) go in as text
 * (el(), textContent), never innerHTML; no inline scripts or style attributes (the CSP
 * refuses them): set element.style properties or classes from script instead.
 */
"use strict";

const PEERSM_TOKEN_KEY = "peersm-token";
const LOGIN_HINT = "Not logged in in this tab: run `peersm ui` in a terminal and open the link it prints.";

function notice(message) {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = message;
  box.hidden = !message;
}

function canvas2d(id) {
  const canvas = document.getElementById(id);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.max(1, Math.floor(width * ratio));
  canvas.height = Math.max(1, Math.floor(height * ratio));
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const style = getComputedStyle(document.documentElement);
  const colour = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return { ctx, width, height, colour };
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function apiError(message, status) {
  const error = new Error(message);
  error.status = status;
  return error;
}

async function api(method, path, body) {
  const token = sessionStorage.getItem(PEERSM_TOKEN_KEY);
  if (!token) {
    notice(LOGIN_HINT);
    throw apiError(LOGIN_HINT, 401);
  }
  method = method.toUpperCase();
  const init = { method, headers: { "X-Peersm-Token": token, Accept: "application/json" }, cache: "no-store" };
  if (body === undefined && method !== "GET" && method !== "HEAD") body = {};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    const message = "The peer does not answer: is `peersm up` still running?";
    notice(message);
    throw apiError(message, 0);
  }
  let doc = null;
  try {
    doc = await response.json();
  } catch (e) {
    doc = null;
  }
  if (!response.ok) {
    const message = doc && typeof doc.error === "string" ? doc.error : "HTTP " + response.status;
    if (response.status === 401) notice("This tab's login is no longer valid (did the peer restart?): run `peersm ui` and open the link it prints.");
    throw apiError(message, response.status);
  }
  return doc;
}

function events(path, onmessage, onerror) {
  const report = onerror || notice;
  const source = new EventSource(path);
  source.onmessage = (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    onmessage(data);
  };
  source.addEventListener("end", () => source.close());
  source.addEventListener("error", (event) => {
    if (event.data) {  // the server's own "error" event
      source.close();
      let message = "the peer reported an error";
      try {
        message = JSON.parse(event.data).error || message;
      } catch (e) { /* keep the default */ }
      report(message);
    } else if (source.readyState === EventSource.CLOSED) {  // refused (logged out) or the peer stopped
      report("Live updates stopped: the peer stopped or this tab is logged out (run `peersm ui` again).");
    }
  });
  return source;
}

document.addEventListener("DOMContentLoaded", () => {
  if (!sessionStorage.getItem(PEERSM_TOKEN_KEY)) notice(LOGIN_HINT);
});
