"""Issue 11: the web UI's security rules, checked in Debian's Chromium against real peer processes.

A testnet of 2 ``peersm up`` peers (peer.app.testnet, linked over WebRTC on 127.N.0.1); the
browser tests use peer 0's UI, logged in as a user would (tests/webui/uikit.py).

- remote strings are text: shares whose names are HTML/script payloads (imported from files of
  those names) on the Library page, downloads started from links whose names are payloads on the
  Downloads page (before any manifest: nobody serves those hash_names), and a payload name and
  type on the Player page render as the raw strings, with no element made of them, no script
  run (``window.__pwned``), no dialog and no Content-Security-Policy violation (CSP is a second
  wall here, not the one that holds);
- shares typed text/html, application/xhtml+xml and image/svg+xml with scripts in them, opened
  through ``/stream/<hash_name>`` with the session cookie, come as ``application/octet-stream``
  attachments with ``Content-Security-Policy: sandbox; default-src 'none'`` (a download of the
  exact bytes, not a document), also when a UI page puts them in an iframe, object or img: no
  script of theirs runs, no dialog, no request of theirs reaches the peer;
- a page of another origin in the same browser, after the login (the session cookie exists),
  both same-site (127.0.0.1, another port: the cookie is sent) and cross-site (127.0.0.2), can
  neither read the API nor change anything (fetch with credentials, text/plain and form posts),
  nor load a share's stream in ``<video>``, nor frame a UI page, nor open an event stream; every
  answer the browser got from the peer for that page is a 403, and the peer's downloads and
  library are unchanged (checked with the token);
- every TCP listener and every UDP socket of each peer process is bound to 127.0.0.0/8 or ::1
  (read from /proc: the API, SOCKS, the DHT and the WebRTC ICE sockets).

CI runs it inside ``unshare -n`` (.ci/run).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Download,
    Page,
    Request,
    Response,
    WebError,
)
from playwright.async_api import Error as PlaywrightError

from peer.app.testnet import NetSpec
from storage.sharelink import ShareLink
from tests.webui.media import MediaSpec, Variant, write_media
from tests.webui.uikit import Peer, login, peer, running_testnet

pytestmark = [pytest.mark.e2e, pytest.mark.needs_tool("chromium")]

UI = 0  # the peer whose UI the browser tests use

# Payloads that can be file names (no "/"): the Library shows the imported file's name.
FILE_NAMES = (
    '<img src=x onerror="window.__pwned=1;alert(1)">',
    '"><svg onload="window.__pwned=2">',
    '\'><details open ontoggle="window.__pwned=3">x',
    '<iframe srcdoc="&lt;script&gt;parent.__pwned=4&lt;&#47;script&gt;">',
    "<tr><td><img src=x onerror=window.__pwned=5>&lt;b&gt;",
)
# Link names and player titles can carry anything, "/" included.
LINK_NAMES = (
    "<script>window.__pwned=6;alert(6)</script>",
    '<img src=x onerror="window.__pwned=7">',
    '"><svg/onload=window.__pwned=8>',
    '<iframe src="javascript:parent.__pwned=9"></iframe>',
)

HTML_DOC = b"""<!doctype html><title>evil</title>
<script>
window.__pwned = "html"; try { top.__pwned = "html-top"; } catch (e) {}
fetch("/api/pwned-html"); alert("pwned html");
</script><img src=x onerror="window.__pwned='html-img';fetch('/api/pwned-html-img')">
"""
XHTML_DOC = b"""<?xml version="1.0"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>evil</title></head><body>
<script>window.__pwned = "xhtml"; fetch("/api/pwned-xhtml"); alert("pwned xhtml");</script>
</body></html>
"""
SVG_DOC = b"""<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"
 onload="window.__pwned='svg-onload';fetch('/api/pwned-svg-onload')">
<script>window.__pwned = "svg"; try { top.__pwned = "svg-top"; } catch (e) {}
fetch("/api/pwned-svg"); alert("pwned svg");</script>
<rect width="40" height="40" fill="red"/></svg>
"""
ACTIVE = {"evil.html": ("text/html", HTML_DOC), "evil.xhtml": ("application/xhtml+xml", XHTML_DOC)}
ACTIVE["evil.svg"] = ("image/svg+xml", SVG_DOC)
VIDEO = "clip.webm"

# Records every CSP violation a document reports (Playwright's init scripts are not subject to CSP).
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "") + " " + (e.sample || ""));
});
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    spec = NetSpec(peers=2, dir=tmp_path_factory.mktemp("secnet"), links=1, exits=0, stable=True)
    with running_testnet(spec) as state:
        yield state


@pytest.fixture(scope="module")
def shares(net: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Files imported on the UI peer, by file name: the payload-named ones, the active documents
    and a short WebM video.  Each value is the share's Library entry plus its ``path``."""
    d = tmp_path_factory.mktemp("shares")
    for i, name in enumerate(FILE_NAMES):
        (d / name).write_text(f"payload {i}\n")
    for name, (_, body) in ACTIVE.items():
        (d / name).write_bytes(body)
    write_media(d / VIDEO, Variant.WEBM, MediaSpec(seconds=2, width=160, height=90, bitrate=200_000))
    client = peer(net, UI).client()
    names = [*FILE_NAMES, *ACTIVE, VIDEO]
    for name in names:
        client.post("/api/shares", {"path": str(d / name), "seed": False})
    library = {s["name"]: s for s in client.get("/api/library")["shares"]}
    return {name: {**library[name], "path": d / name} for name in names}


@dataclass
class Watch:
    """What the browser did that a test must not see: dialogs, CSP reports, page errors; and the
    URLs it requested."""

    dialogs: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


def watch(ctx: BrowserContext) -> Watch:
    w = Watch()

    async def on_dialog(d: Dialog) -> None:
        w.dialogs.append(f"{d.type}: {d.message}")
        await d.dismiss()

    def on_console(m: ConsoleMessage) -> None:
        if "Content Security Policy" in m.text or "Content-Security-Policy" in m.text:
            w.csp.append(m.text)

    def on_error(e: WebError) -> None:
        w.errors.append(str(e.error))

    def on_request(r: Request) -> None:
        w.requests.append(r.url)

    ctx.on("dialog", on_dialog)
    ctx.on("console", on_console)
    ctx.on("weberror", on_error)
    ctx.on("request", on_request)
    return w


async def assert_clean(page: Page, w: Watch) -> None:
    """No script of a payload ran in ``page`` or its frames, nothing was refused by CSP, no dialog."""
    await page.wait_for_timeout(500)  # an image's error event, an svg's load event, a toggle: all fire by now
    for frame in page.frames:
        with contextlib.suppress(PlaywrightError):  # a frame that went away meanwhile
            assert await frame.evaluate("() => typeof window.__pwned") == "undefined", frame.url
            assert await frame.evaluate("() => window.__csp || []") == [], frame.url
    assert w.dialogs == []
    assert w.csp == []
    assert w.errors == []
    assert [u for u in w.requests if "pwned" in u] == []


NAME_CELLS = """(selector) => [...document.querySelectorAll(selector)].map(
  (td) => [td.textContent, td.childElementCount])"""


async def rendered_as_text(page: Page, selector: str, names: tuple[str, ...], rows: int) -> None:
    """Every one of ``names`` shows as the whole text of one cell, which holds no element; ``rows``:
    how many cells the page shows once its list has loaded."""
    await page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[selector, rows], timeout=20_000
    )
    cells = [tuple(c) for c in await page.evaluate(NAME_CELLS, selector)]
    for name in names:
        assert (name, 0) in cells, (name, cells)


async def test_remote_strings_render_as_text(net: dict[str, Any], shares: dict[str, dict[str, Any]]) -> None:
    from tests.webui.browser import chromium

    p = peer(net, UI)
    started: list[str] = []
    try:
        async with chromium() as ctx:
            await ctx.add_init_script(CSP_WATCH)
            w = watch(ctx)
            page, origin = await login(ctx, p)

            # Library: shares named by their payload files
            await page.goto(f"{origin}/ui/library")
            await rendered_as_text(page, "#rows td.name", FILE_NAMES, len(shares))
            await assert_clean(page, w)

            # Downloads: links whose names are payloads, pasted into the page; nobody serves them,
            # so the row shows the link's name (no manifest will come)
            await page.goto(f"{origin}/ui/downloads")
            for name in LINK_NAMES:
                link = ShareLink(os.urandom(32), name)
                started.append(link.hash_name.hex())
                await page.fill("#link", link.format())
                await page.click("#start")
                await page.wait_for_function("() => document.getElementById('link').value === ''")
            await rendered_as_text(page, "#rows td.name", LINK_NAMES, len(LINK_NAMES))
            await assert_clean(page, w)
            await page.reload()  # the rows again, this time from the page's GET /api/downloads
            await rendered_as_text(page, "#rows td.name", LINK_NAMES, len(LINK_NAMES))
            await assert_clean(page, w)
            names = {d["id"]: d["name"] for d in (await p.get("/api/downloads"))["downloads"]}
            assert [names.get(h) for h in started] == list(LINK_NAMES)

            # Player: the title and the type come from sessionStorage (set by Play); a hash_name that
            # no download has, so the stream answers 404 and the page says the type it could not play
            for name, kind in zip(LINK_NAMES, reversed(LINK_NAMES), strict=True):
                item = {"id": os.urandom(32).hex(), "name": name, "type": "video/" + kind}
                await page.evaluate("(v) => sessionStorage.setItem('peersm-play', v)", json.dumps(item))
                await page.goto(f"{origin}/ui/player")
                await page.wait_for_function(
                    "() => !document.getElementById('notice').hidden", timeout=20_000
                )
                title, notice = await page.evaluate(
                    "() => ['title', 'notice'].map((id) => { const e = document.getElementById(id);"
                    " return [e.textContent, e.childElementCount]; })"
                )
                assert title == [name, 0]
                assert notice[1] == 0 and f"(type video/{kind})" in notice[0], notice
                await assert_clean(page, w)
    finally:
        for h in started:
            with contextlib.suppress(Exception):
                await p.post(f"/api/downloads/{h}/cancel", {})


async def navigate(page: Page, url: str) -> Response:
    """Open ``url`` as a top-level navigation in ``page``; its response (a download commits no document)."""
    async with page.expect_response(url) as answer:
        with contextlib.suppress(PlaywrightError):  # "Download is starting"
            await page.goto(url)
    return await answer.value


async def saved_bytes(downloads: list[Download], url: str) -> bytes:
    """The bytes of the download of ``url`` that the page started (waited for, 20 s at most)."""
    for _ in range(200):
        done = [d for d in downloads if d.url == url]
        if done:
            return Path(await done[0].path()).read_bytes()
        await asyncio.sleep(0.1)
    raise AssertionError(f"no download of {url}")


async def test_active_shares_never_run_from_the_stream(
    net: dict[str, Any], shares: dict[str, dict[str, Any]]
) -> None:
    from tests.webui.browser import chromium

    p = peer(net, UI)
    for name, (mime, _) in ACTIVE.items():
        assert shares[name]["type"] == mime  # the publisher's type is the dangerous one
    async with chromium() as ctx:
        await ctx.add_init_script(CSP_WATCH)
        w = watch(ctx)
        page, origin = await login(ctx, p)
        await page.goto(f"{origin}/ui/library")
        home = page.url

        # top-level navigations, the session cookie as the only credential
        downloads: list[Download] = []
        page.on("download", lambda d: downloads.append(d))
        for name, (_, body) in ACTIVE.items():
            url = f"{origin}/stream/{shares[name]['hash_name']}"
            response = await navigate(page, url)
            assert response.status == 200
            headers = await response.all_headers()
            assert headers["content-type"] == "application/octet-stream", name
            assert headers["content-disposition"].startswith("attachment"), name
            assert headers["content-security-policy"] == "sandbox; default-src 'none'", name
            assert headers["x-content-type-options"] == "nosniff"
            assert await saved_bytes(downloads, url) == body  # the share's exact bytes, as a file
            assert page.url == home  # no document of the share replaced the page
        assert w.csp == []
        await assert_clean(page, w)

        # embedded in a UI page: an iframe, an object and (the SVG) an img
        ids = {name: shares[name]["hash_name"] for name in ACTIVE}
        await page.evaluate(
            """(ids) => {
              for (const id of Object.values(ids)) {
                const f = document.createElement("iframe"); f.src = "/stream/" + id; document.body.append(f);
                const o = document.createElement("object"); o.data = "/stream/" + id; document.body.append(o);
              }
              const i = document.createElement("img"); i.id = "svgimg"; i.src = "/stream/" + ids["evil.svg"];
              document.body.append(i);
            }""",
            ids,
        )
        await page.wait_for_function(
            "() => { const i = document.getElementById('svgimg'); return i.complete; }", timeout=20_000
        )
        width = await page.evaluate("() => document.getElementById('svgimg').naturalWidth")
        assert width == 0  # not decoded as an image: the SVG came as application/octet-stream
        await page.wait_for_timeout(1500)  # the frames load or are refused
        # no frame shows a document of a share: each one's content is not the share's
        for frame in page.frames[1:]:
            with contextlib.suppress(PlaywrightError):
                text = await frame.evaluate("() => document.documentElement.outerHTML")
                assert "__pwned" not in text, frame.url
        await assert_clean(page, w)
        assert any("/stream/" in u for u in w.requests)


ATTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>another site</title>
<body><script>
const CFG = %s;
const P = CFG.peer;
window.results = {};
const R = window.results;
async function attempt(name, fn) {
  try { R[name] = await fn(); } catch (e) { R[name] = "refused: " + e.name; }
}
function submit(name, action, enctype, fields) {
  return new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.name = "t-" + name;
    document.body.append(frame);
    const form = document.createElement("form");
    form.method = "POST"; form.action = P + action; form.enctype = enctype; form.target = frame.name;
    for (const [k, v] of Object.entries(fields)) {
      const input = document.createElement("input");
      input.type = "hidden"; input.name = k; input.value = v; form.append(input);
    }
    document.body.append(form);
    frame.addEventListener("load", () => resolve("submitted"), { once: true });
    form.submit();
    setTimeout(() => resolve("no load event"), 3000);
  });
}
function jsonField(body) {  // a text/plain form whose body is JSON: name={"a":1,"x":" value="}
  const text = JSON.stringify({ ...body, x: "" });
  return { [text.slice(0, -2)]: '"}' };
}
async function run() {
  for (const path of ["/api/shares", "/api/status", "/api/library", "/api/downloads"]) {
    await attempt("read " + path, async () => {
      const r = await fetch(P + path, { credentials: "include" });
      return "READ " + r.status + " " + (await r.text()).slice(0, 100);
    });
  }
  const posts = { "/api/downloads": { link: CFG.link }, "/api/shares": { path: CFG.path } };
  for (const [path, body] of Object.entries(posts)) {
    for (const mode of ["no-cors", "cors"]) {
      await attempt("post " + mode + " " + path, async () => {
        const r = await fetch(P + path, { method: "POST", mode, credentials: "include",
          headers: { "Content-Type": "text/plain" }, body: JSON.stringify(body) });
        return mode === "cors" ? "READ " + r.status : "sent";
      });
    }
    R["form text " + path] = await submit("t" + path.length, path, "text/plain", jsonField(body));
    R["form urlencoded " + path] = await submit("u" + path.length, path,
      "application/x-www-form-urlencoded", Object.fromEntries(Object.entries(body)));
  }
  await attempt("video", () => new Promise((resolve) => {
    const v = document.createElement("video");
    v.muted = true; v.preload = "auto";
    const done = (how) => resolve({ how, error: v.error && v.error.code, readyState: v.readyState,
      networkState: v.networkState });
    v.addEventListener("loadedmetadata", () => done("loadedmetadata"));
    v.addEventListener("error", () => done("error"));
    setTimeout(() => done("timeout"), 8000);
    v.src = P + "/stream/" + CFG.video;
    document.body.append(v);
  }));
  await attempt("events", () => new Promise((resolve) => {
    const s = new EventSource(P + "/api/downloads/" + CFG.download + "/events", { withCredentials: true });
    s.onmessage = () => { s.close(); resolve("READ an event"); };
    s.onerror = () => { s.close(); resolve("error"); };
    setTimeout(() => { s.close(); resolve("timeout"); }, 5000);
  }));
  await attempt("frame", () => new Promise((resolve) => {
    const f = document.createElement("iframe");
    f.id = "ui";
    f.addEventListener("load", () => resolve("load event"), { once: true });
    setTimeout(() => resolve("no load event"), 5000);
    f.src = P + "/ui/library";
    document.body.append(f);
  }));
  window.done = true;
}
run();
</script>
"""


@pytest.fixture
async def attacker() -> AsyncIterator[dict[str, Any]]:
    """A tiny server of the attack page on two loopback origins: 127.0.0.1 (another port: the same
    site as the peer's UI) and 127.0.0.2 (another site).  Set ``cfg`` before a page loads."""
    state: dict[str, Any] = {"cfg": {}}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=ATTACK_PAGE % json.dumps(state["cfg"]), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        for host in ("127.0.0.1", "127.0.0.2"):
            await web.TCPSite(runner, host, 0).start()
        for host, port in runner.addresses:
            state[host] = f"http://{host}:{port}"
        yield state
    finally:
        await runner.cleanup()


@dataclass
class Wire:
    """One request as Chromium put it on the wire (DevTools' Network domain): URL, headers, status."""

    url: str = ""
    method: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == name), "")


async def wire_log(ctx: BrowserContext, page: Page) -> dict[str, Wire]:
    """Every request ``page`` makes from now on, with the headers sent (cookies included) and the
    status received, also for answers the page itself may not read (CORS, CORP)."""
    seen: dict[str, Wire] = {}
    cdp = await ctx.new_cdp_session(page)

    def sent(e: dict[str, Any]) -> None:
        wire = seen.setdefault(e["requestId"], Wire())
        wire.url, wire.method = e["request"]["url"], e["request"]["method"]

    def sent_headers(e: dict[str, Any]) -> None:
        seen.setdefault(e["requestId"], Wire()).headers = e["headers"]

    def answered(e: dict[str, Any]) -> None:
        seen.setdefault(e["requestId"], Wire()).status = e["statusCode"]

    cdp.on("Network.requestWillBeSent", sent)
    cdp.on("Network.requestWillBeSentExtraInfo", sent_headers)
    cdp.on("Network.responseReceivedExtraInfo", answered)
    await cdp.send("Network.enable")
    return seen


async def snapshot(p: Peer) -> tuple[set[str], set[tuple[str, str]]]:
    downloads = {d["id"] for d in (await p.get("/api/downloads"))["downloads"]}
    library = {(s["hash_name"], s["name"]) for s in (await p.get("/api/library"))["shares"]}
    return downloads, library


async def test_another_origin_reads_and_changes_nothing(
    net: dict[str, Any], shares: dict[str, dict[str, Any]], attacker: dict[str, Any], tmp_path: Path
) -> None:
    from tests.webui.browser import chromium

    p = peer(net, UI)
    target = tmp_path / "csrf-target.txt"  # a file no one imported: a forged share would add it
    target.write_text("not to be shared\n")
    video = shares[VIDEO]["hash_name"]
    running = ShareLink(os.urandom(32), "running")  # a download the event stream attack aims at
    await p.post("/api/downloads", {"link": running.format()})
    try:
        before = await snapshot(p)
        async with chromium() as ctx:
            w = watch(ctx)
            page, origin = await login(ctx, p)
            # control: in the UI's own origin the cookie loads this video
            meta = await page.evaluate(
                """(id) => new Promise((resolve) => {
                  const v = document.createElement("video");
                  v.muted = true; v.preload = "auto";
                  v.addEventListener("loadedmetadata", () => resolve(v.duration));
                  v.addEventListener("error", () => resolve(-1));
                  v.src = "/stream/" + id;
                  document.body.append(v);
                })""",
                video,
            )
            assert meta > 1.5
            port = origin.rsplit(":", 1)[1]
            cookies = {c["name"]: c for c in await ctx.cookies(origin)}
            assert cookies[f"peersm_{port}"]["sameSite"] == "Strict"  # sent to same-site requests too

            for site in ("127.0.0.1", "127.0.0.2"):
                forged = ShareLink(os.urandom(32), "forged")
                attacker["cfg"] = {
                    "peer": origin,
                    "link": forged.format(),
                    "path": str(target),
                    "video": video,
                    "download": running.hash_name.hex(),
                }
                evil = await ctx.new_page()
                seen = await wire_log(ctx, evil)
                await evil.goto(attacker[site] + "/")
                await evil.wait_for_function("() => window.done === true", timeout=45_000)
                results = await evil.evaluate("() => window.results")

                # nothing read: every fetch was refused by CORS, nothing came back readable
                for name, result in results.items():
                    assert "READ" not in json.dumps(result), (site, name, result)
                for path in ("/api/shares", "/api/status", "/api/library", "/api/downloads"):
                    assert results[f"read {path}"] == "refused: TypeError", (site, results)
                # the video did not load (the cookie alone is not enough from another origin)
                v = results["video"]
                assert v["how"] == "error" and v["readyState"] == 0 and v["error"] is not None, (site, v)
                assert results["events"] == "error", (site, results)
                # the UI page was not framed: the frame holds Chromium's error page, not the UI
                handle = await evil.query_selector("#ui")
                assert handle is not None
                frame = await handle.content_frame()
                assert frame is not None
                assert frame.url.startswith("chrome-error:"), (site, frame.url)
                # the browser did send them, and the peer answered each with 403: the guard refused
                # them, not only the browser (which also drops a cross-origin answer)
                to_peer = [x for x in seen.values() if x.url.startswith(origin)]
                paths = [(x.method, x.url.removeprefix(origin)) for x in to_peer]
                for path in (
                    "/api/shares",
                    "/api/status",
                    "/api/library",
                    "/api/downloads",
                    f"/stream/{video}",
                    f"/api/downloads/{running.hash_name.hex()}/events",
                    "/ui/library",
                ):
                    assert ("GET", path) in paths, (site, path, paths)
                for path in ("/api/downloads", "/api/shares"):  # two fetches and two forms each
                    assert paths.count(("POST", path)) == 4, (site, path, paths)
                assert {(x.url, x.status) for x in to_peer if x.status != 403} == set(), site
                # the same site gets the session cookie (SameSite=Strict ignores ports); another
                # site does not: either way, nothing passed
                (stream,) = [x for x in to_peer if x.url == f"{origin}/stream/{video}"]
                sent_cookie = f"peersm_{port}=" in stream.header("cookie")
                assert sent_cookie == (site == "127.0.0.1"), (site, stream.headers)
                assert stream.header("sec-fetch-site") == (
                    "same-site" if site == "127.0.0.1" else "cross-site"
                )
                # and nothing changed (asked with the token)
                assert await snapshot(p) == before, site
                assert not [s for s in (await p.get("/api/library"))["shares"] if s["name"] == target.name]
                await evil.close()
            assert w.dialogs == []
    finally:
        await p.post(f"/api/downloads/{running.hash_name.hex()}/cancel", {})


# ---- what the peer processes listen on ------------------------------------------------------------
def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address of /proc/net/{tcp,udp}{,6}: 32-bit words in host byte order."""
    words = [int(hex_addr[i : i + 8], 16) for i in range(0, len(hex_addr), 8)]
    raw = b"".join(struct.pack("=I", w) for w in words)
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return ipaddress.ip_address(socket.inet_ntop(family, raw))


def process_sockets(pid: int) -> list[tuple[str, str, int, str]]:
    """(protocol, local address, port, state) of every inet socket that process ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                addr, _, port = fields[1].partition(":")
                out.append((proto, str(_address(addr)), int(port, 16), fields[3]))
    return out


def on_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


TCP_LISTEN = "0A"


def test_nothing_listens_off_loopback(net: dict[str, Any]) -> None:
    for entry in net["peers"]:
        sockets = process_sockets(int(entry["pid"]))
        listeners = [s for s in sockets if s[0].startswith("tcp") and s[3] == TCP_LISTEN]
        udp = [s for s in sockets if s[0].startswith("udp")]
        api_port = int(entry["api"].rsplit(":", 1)[1])
        assert api_port in {port for _, _, port, _ in listeners}, listeners  # the API is among them
        assert len(udp) >= 2, sockets  # the DHT's, and the ICE socket of its WebRTC link
        assert [s for s in listeners if not on_loopback(s[1])] == [], entry["name"]
        assert [s for s in udp if not on_loopback(s[1])] == [], entry["name"]
