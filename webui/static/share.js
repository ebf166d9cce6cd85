/* peersm web UI: the Share page. A file goes to POST /api/uploads as the raw request body
 * (XMLHttpRequest: it reports upload progress, and the browser streams the file from disk);
 * a local path goes to POST /api/shares. The link is shown with a copy button and a QR code
 * (GET /api/qr, an SVG turned into a data: URL: the page's CSP allows data: images, not blob:).
 */
"use strict";

function shareOptions() {
  return {
    encrypt: document.getElementById("encrypt").checked,
    seed: document.getElementById("seed").checked,
  };
}

function setStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error small" : "muted small";
}

async function showQr(link) {
  const img = document.getElementById("qr");
  img.hidden = true;
  const token = sessionStorage.getItem(PEERSM_TOKEN_KEY);
  try {
    const response = await fetch("/api/qr?text=" + encodeURIComponent(link), {
      headers: { "X-Peersm-Token": token || "" },
      cache: "no-store",
    });
    if (!response.ok || response.headers.get("Content-Type").split(";")[0] !== "image/svg+xml") return;
    const blob = await response.blob();
    const reader = new FileReader();
    reader.onload = () => {
      img.src = reader.result;  // data:image/svg+xml;base64,... shown as an image: no script runs in an <img>
      img.hidden = false;
    };
    reader.readAsDataURL(blob);
  } catch (e) {
    /* the link is there to copy; the QR code is a convenience */
  }
}

function showResult(doc, name) {
  document.getElementById("result").hidden = false;
  document.getElementById("result-name").textContent = name || "";
  document.getElementById("link").value = doc.link;
  showQr(doc.link);
}

function uploadFile(file) {
  const token = sessionStorage.getItem(PEERSM_TOKEN_KEY);
  if (!token) {
    notice(LOGIN_HINT);
    return;
  }
  const opts = shareOptions();
  const progress = document.getElementById("progress");
  progress.hidden = false;
  progress.value = 0;
  document.getElementById("result").hidden = true;
  setStatus("Sending " + file.name + " (" + fmtBytes(file.size) + ") to the peer…", false);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/uploads");
  xhr.setRequestHeader("X-Peersm-Token", token);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.setRequestHeader("X-Peersm-Filename", encodeURIComponent(file.name));
  xhr.setRequestHeader("X-Peersm-Encrypt", opts.encrypt ? "1" : "0");
  xhr.setRequestHeader("X-Peersm-Seed", opts.seed ? "1" : "0");
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      progress.value = Math.floor((100 * e.loaded) / e.total);
      setStatus("Sent " + fmtBytes(e.loaded) + " of " + fmtBytes(e.total) + "…", false);
    }
  };
  xhr.upload.onload = () => setStatus("Sent; the peer is hashing and storing it…", false);
  xhr.onload = () => {
    let doc = null;
    try {
      doc = JSON.parse(xhr.responseText);
    } catch (e) {
      doc = null;
    }
    progress.hidden = true;
    if (xhr.status === 200 && doc && doc.link) {
      setStatus("Shared " + doc.name + " (" + fmtBytes(doc.size) + ").", false);
      showResult(doc, doc.name);
    } else {
      setStatus("The upload failed: " + (doc && doc.error ? doc.error : "HTTP " + xhr.status), true);
    }
  };
  xhr.onerror = () => {
    progress.hidden = true;
    setStatus("The peer does not answer: is `peersm up` still running?", true);
  };
  xhr.send(file);
}

async function sharePath() {
  const path = document.getElementById("path").value.trim();
  if (!path) {
    setStatus("Give the file's absolute path.", true);
    return;
  }
  const button = document.getElementById("share-path");
  button.disabled = true;
  setStatus("Hashing and storing " + path + "…", false);
  try {
    const opts = shareOptions();
    const doc = await api("POST", "/api/shares", { path: path, encrypt: opts.encrypt, seed: opts.seed });
    setStatus("Shared.", false);
    showResult(doc, path.split("/").pop());
  } catch (e) {
    setStatus("Sharing failed: " + e.message, true);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = document.getElementById("drop");
  const input = document.getElementById("file");
  input.addEventListener("change", () => {
    if (input.files.length) uploadFile(input.files[0]);
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) uploadFile(e.dataTransfer.files[0]);
  });
  document.getElementById("share-path").addEventListener("click", sharePath);
  document.getElementById("path").addEventListener("keydown", (e) => {
    if (e.key === "Enter") sharePath();
  });
  document.getElementById("copy").addEventListener("click", async () => {
    const input = document.getElementById("link");
    const ok = await copyText(input.value, input);
    document.getElementById("copy").textContent = ok ? "Copied" : "Press Ctrl+C";
    setTimeout(() => (document.getElementById("copy").textContent = "Copy"), 2000);
  });
});
