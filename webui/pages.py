"""The web UI's pages (DESIGN §10): the login page, page shells under /ui/, and assets under /static/.

Pages hold no data, so they load without a credential (:meth:`ApiServer.add_page`); the
guard still checks Host, Origin and ``Sec-Fetch-Site`` and they carry the CSP of
:data:`webui.server.PAGE_CSP` (no inline script or style).  Their scripts read the API
token from ``sessionStorage`` and call the API with it (webui/static/common.js).

What the page authors write, in webui/static/:

- ``<name>.html`` is served at ``/ui/<name>``.  A file that starts with ``<!doctype html>``
  is sent as it is; anything else is a fragment placed in the shell's ``<main>``.
- ``<name>.js`` is loaded by the shell of ``/ui/<name>`` (``defer``, after ``<main>``, so after
  common.js and after any ``<script defer>`` the fragment holds).
- Without ``<name>.html``, the nav pages (:data:`NAV`) get the shell with a placeholder;
  other names are 404.
- ``/static/<file>`` serves the folder's scripts, styles, images and fonts (no HTML, no
  subfolders).

Login (``GET /ui/login?code=CODE``): :meth:`ApiServer.redeem_login` trades the code for a
session cookie.  The page's token reaches the tab in a ``<meta name="peersm-token">`` of that
one response (``Cache-Control: no-store``), read by webui/static/login.js, which stores it
in ``sessionStorage`` and calls ``location.replace('/ui/')`` so that the code's URL leaves the
history.  The other way, a script fetching the token from a cookie-authenticated endpoint,
would make the cookie worth as much as the token; this way the cookie keeps opening only
streams and event streams, and the token travels once, in a response body no URL points to
again (the code it came with is spent).
"""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path

from aiohttp import web

from webui.server import LOGIN_PATH, ApiServer

#: The folder of the UI's static files.
STATIC_DIR = Path(__file__).parent / "static"
#: The nav bar: (page name, label), in order.
NAV: tuple[tuple[str, str], ...] = (
    ("share", "Share"),
    ("downloads", "Downloads"),
    ("library", "Library"),
    ("network", "Network"),
)
#: Where /ui/ leads.
HOME = "downloads"
#: The sessionStorage key and <meta> name of the API token (login.js and common.js use it too).
TOKEN_META = "peersm-token"
#: Asset types served from /static/.
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
_PAGE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_ASSET_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")

_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · peersm</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
{extra}</head>
"""

_SHELL = (
    _HEAD
    + """<body>
<header class="top">
<a class="brand" href="/ui/">peersm</a>
<nav aria-label="Pages">
{nav}</nav>
</header>
<div id="notice" class="notice" role="alert" hidden></div>
<main id="main" data-page="{name}">
{body}
</main>
{script}</body>
</html>
"""
)


def add_pages(api: ApiServer, static_dir: Path = STATIC_DIR) -> None:
    """Register the login page, /ui/ and its pages, and /static/ assets on ``api``."""
    pages = _Pages(api, static_dir)
    api.add_page(LOGIN_PATH, pages.login)
    api.add_page("/ui", pages.home)
    api.add_page("/ui/", pages.home)
    api.add_page("/ui/{name}", pages.page)
    api.add_page("/static/{file}", pages.asset)


class _Pages:
    def __init__(self, api: ApiServer, static_dir: Path) -> None:
        self._api = api
        self._dir = static_dir

    async def login(self, request: web.Request) -> web.StreamResponse:
        result = self._api.redeem_login(request)
        if result.secret is None:
            body = (
                "<h1>This login link does not work</h1>\n"
                f"<p>{html.escape(result.problem)}.</p>\n"
                "<p>Run <kbd>peersm ui</kbd> in a terminal (with <kbd>--data DIR</kbd> if the peer uses one) "
                "and open the new link it prints, or run <kbd>peersm ui --open</kbd>. "
                "A link works once, for 2 minutes.</p>\n"
            )
            script = '<script src="/static/login.js" defer></script>\n'
            return _html(_document("Log in", body, extra=script), status=403, store=False)
        token = html.escape(self._api.token, quote=True)
        extra = (
            f'<meta name="{TOKEN_META}" content="{token}">\n<script src="/static/login.js" defer></script>\n'
        )
        body = "<p>Logging in…</p>\n<noscript><p>The web UI needs JavaScript.</p></noscript>\n"
        response = _html(_document("Log in", body, extra=extra), store=False)
        self._api.set_session_cookie(response, result.secret)
        return response

    async def home(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": f"/ui/{HOME}", "Cache-Control": "no-cache"})

    async def page(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not _PAGE_NAME.fullmatch(name):
            return _not_found()
        own = await _read(self._dir / f"{name}.html")
        if own is None and name not in dict(NAV):
            return _not_found()
        text = own.decode("utf-8", "replace") if own is not None else None
        if text is not None and text.lstrip()[:15].lower() == "<!doctype html>":
            return _html(text)
        has_script = await asyncio.to_thread((self._dir / f"{name}.js").is_file)
        script = f'<script src="/static/{name}.js" defer></script>\n' if has_script else ""
        label = dict(NAV).get(name, name.replace("-", " ").capitalize())
        body = (
            text
            if text is not None
            else f'<h1>{label}</h1>\n<p class="muted">This page is not built yet.</p>'
        )
        return _html(_shell(name, label, body, script))

    async def asset(self, request: web.Request) -> web.StreamResponse:
        file = request.match_info["file"]
        suffix = Path(file).suffix.lower()
        if not _ASSET_NAME.fullmatch(file) or suffix not in CONTENT_TYPES:
            return _not_found()
        data = await _read(self._dir / file, within=self._dir)
        if data is None:
            return _not_found()
        content_type = CONTENT_TYPES[suffix]
        charset = "utf-8" if content_type.startswith("text/") else None
        return web.Response(
            body=data, content_type=content_type, charset=charset, headers={"Cache-Control": "no-cache"}
        )


async def _read(path: Path, within: Path | None = None) -> bytes | None:
    """The file's bytes, or None when it is missing, not a regular file, or (symlinked) outside ``within``."""

    def read() -> bytes | None:
        try:
            if within is not None and path.resolve().parent != within.resolve():
                return None
            return path.read_bytes() if path.is_file() else None
        except OSError:
            return None

    return await asyncio.to_thread(read)


def _nav(current: str) -> str:
    links = []
    for name, label in NAV:
        mark = ' aria-current="page"' if name == current else ""
        links.append(f'<a href="/ui/{name}"{mark}>{label}</a>\n')
    return "".join(links)


def _shell(name: str, title: str, body: str, script: str = "") -> str:
    common = '<script src="/static/common.js" defer></script>\n'
    return _SHELL.format(
        title=html.escape(title), extra=common, nav=_nav(name), name=name, body=body, script=script
    )


def _document(title: str, body: str, extra: str) -> str:
    """A page without the nav (the login page)."""
    return (
        _HEAD.format(title=html.escape(title), extra=extra)
        + f'<body>\n<main id="main" class="login">\n{body}</main>\n</body>\n</html>\n'
    )


def _not_found() -> web.Response:
    body = '<h1>No such page</h1>\n<p><a href="/ui/">Back to the web UI</a></p>'
    return _html(_shell("", "Not found", body), status=404)


def _html(text: str, status: int = 200, store: bool = True) -> web.Response:
    """An HTML answer; ``store=False`` keeps it out of every cache (the login pages)."""
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache" if store else "no-store"},
    )
