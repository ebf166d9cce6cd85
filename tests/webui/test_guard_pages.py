"""The guard with the web UI (issue 11, "Login and protections"): what the session cookie opens,
foreign Hosts, Origins and sites, form posts, the pages' CSP and headers, and how /ui/ and
/static/ map to webui/static/.

A real ApiServer on 127.0.0.1 with test routes (tests/webui/loginkit.py); every refused request
is followed by a look at the state it must not have changed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from peer.errors import UsageError
from tests.api.rawhttp import RawResponse
from tests.webui.loginkit import TOKEN, Ui, started, ui
from webui import auth
from webui.pages import STATIC_DIR
from webui.server import ApiServer

__all__ = ["ui"]  # the fixture

#: Written out here (not imported) so that a change in the server fails the test.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
STREAM_CSP = "sandbox; default-src 'none'"
API_CSP = "default-src 'self'; frame-ancestors 'none'"
NAV_PAGES = ("share", "downloads", "library", "network")
JSON_CT = ("Content-Type", "application/json")
OCTETS = ("Content-Type", "application/octet-stream")


def foreign_hosts(port: int) -> list[str]:
    """Host values that must not reach the UI: none is 127.0.0.1, localhost or [::1] with this port."""
    other = port + 1 if port < 65535 else port - 1
    dns = ["evil.test", "attacker.example", "127.0.0.1.nip.io", "localhost.evil.test", "sub.localhost"]
    dns += ["localhost.localdomain", "xn--lcalhost-0ya", "1ocalhost", "locaIhost", "7f000001.rbndr.us"]
    dots = ["localhost.", "LOCALHOST.", "127.0.0.1.", "localhost..", "[::1]."]
    numeric = ["0x7f.1", "0x7f000001", "2130706433", "127.1", "127.0.1", "0177.0.0.1", "017700000001"]
    numeric += ["127.000.000.001", "127.0.0.01", "0.0.0.0", "0", "127.0.0.2", "127.255.255.254"]
    ipv6 = ["[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::1%25lo]", "[::1%lo]"]
    ipv6 += ["[0::1]", "[::01]", "[::]", "[::1]]", "[[::1]]", "::1", "[::2]"]
    userinfo = ["user@127.0.0.1", "user:pw@localhost", "evil.test@localhost", "localhost@evil.test"]
    tricks = ["LOCAL HOST", "local\thost", "localhost\t", "localhost ", "127.0.0.1 ", "http://localhost"]
    hosts = [f"{name}:{port}" for name in dns + dots + numeric + ipv6 + userinfo + tricks]
    for name in ("127.0.0.1", "localhost", "[::1]", "LocalHost"):
        hosts += [
            f"{name}:{other}",
            name,
            f"{name}:",
            f"{name}:0{port}",
            f"{name}:+{port}",
            f"{name}:{port}0",
        ]
    hosts += [f"localhost:{port}:{port}", f"localhost:{port}/", f"localhost:{port}#", f"localhost:{port}?x"]
    hosts += [f"localhost:{port},evil.test", f"evil.test,localhost:{port}", f"localhost:{port} evil.test"]
    hosts += [f"127.0.0.1: {port}", f"127.0.0.1 :{port}", f"localhost:{port}@evil.test", "", f":{port}"]
    return list(dict.fromkeys(hosts))


def allowed(port: int) -> set[str]:
    return {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}


def refused(r: RawResponse) -> bool:
    """Refused before any handler: the guard's 403, or aiohttp's parser's 400 for a malformed value."""
    return r.status == 400 or (r.status == 403 and "forbidden" in r.json()["error"])


# -- the session cookie opens stream and event GETs only ---------------------------------------------


async def test_the_cookie_opens_stream_and_event_gets(ui: Ui) -> None:
    secret = await ui.session()
    r = await ui.request("GET", "/stream/abcd", [ui.host(), ui.cookie(secret)])
    assert (r.status, r.body, ui.watched.streamed) == (200, b"media bytes", 1)
    r = await ui.request("GET", "/api/test/events", [ui.host(), ui.cookie(secret)])
    assert r.status == 200 and r.header("Content-Type").startswith("text/event-stream")
    assert ui.watched.evented == 1
    # the token alone opens them too (the command line has no cookie)
    assert (await ui.request("GET", "/stream/abcd", [ui.host(), ui.token()])).status == 200
    # a cookie another local server planted under our name does not hide ours
    jar = ("Cookie", f"peersm_{ui.port}=planted; peersm_{ui.port}={secret}")
    assert (await ui.request("GET", "/stream/abcd", [ui.host(), jar])).status == 200


async def test_the_cookie_opens_nothing_else(ui: Ui) -> None:
    secret = await ui.session()
    cookie = ui.cookie(secret)
    cases = [
        ("GET", "/api/status", [ui.host(), cookie]),
        ("GET", "/api/test/counter", [ui.host(), cookie]),
        ("GET", "/api/test/eventsx", [ui.host(), cookie]),
        ("GET", "/api/nothing/events", [ui.host(), cookie]),
        ("POST", "/api/test/events", [ui.host(), cookie, JSON_CT]),
        ("POST", "/api/test/counter", [ui.host(), cookie, JSON_CT]),
        ("POST", "/api/ui/code", [ui.host(), cookie, JSON_CT]),
        ("POST", "/stream/abcd", [ui.host(), cookie, JSON_CT]),
        ("HEAD", "/stream/abcd", [ui.host(), cookie]),
        ("DELETE", "/stream/abcd", [ui.host(), cookie, JSON_CT]),
    ]
    for method, path, headers in cases:
        r = await ui.request(method, path, headers, b"{}" if method != "GET" and method != "HEAD" else b"")
        assert r.status == 401, (method, path, r.status)
    assert (ui.watched.count, ui.watched.streamed, ui.watched.evented) == (0, 0, 0)
    assert len(ui.server.login_codes) == 0


async def test_a_wrong_missing_or_expired_cookie_is_refused(ui: Ui) -> None:
    secret = await ui.session()
    other_port = ui.port + 1 if ui.port < 65535 else ui.port - 1
    wrong = [
        [],
        [("Cookie", f"peersm_{other_port}={secret}")],  # another local peer's cookie name
        [("Cookie", f"peersm={secret}")],
        [("Cookie", f"peersm_{ui.port}={secret[:-1]}")],
        [("Cookie", f"peersm_{ui.port}={secret}x")],
        [("Cookie", f"peersm_{ui.port}={TOKEN}")],  # the token is not a session
        [("Authorization", f"Bearer {secret}")],  # the session is not a token
        [("X-Peersm-Token", secret)],
    ]
    for extra in wrong:
        for path in ("/stream/abcd", "/api/test/events", f"/stream/abcd?peersm_{ui.port}={secret}"):
            r = await ui.request("GET", path, [ui.host(), *extra])
            assert r.status == 401, (path, extra)
            assert "peersm ui" in r.json()["error"] and secret not in r.body.decode()
    ui.clock.now += auth.SESSION_TTL - 1
    assert (await ui.request("GET", "/stream/abcd", [ui.host(), ui.cookie(secret)])).status == 200
    ui.clock.now += 1
    for path in ("/stream/abcd", "/api/test/events"):
        assert (await ui.request("GET", path, [ui.host(), ui.cookie(secret)])).status == 401
    assert (ui.watched.streamed, ui.watched.evented) == (1, 0)


async def test_the_cookie_is_checked_after_host_origin_and_site(ui: Ui) -> None:
    secret = await ui.session()
    for extra in (
        [("Origin", "http://evil.test")],
        [("Origin", f"http://127.0.0.1:{ui.port + 1}")],
        [("Origin", "null")],
        [("Sec-Fetch-Site", "cross-site")],
        [("Sec-Fetch-Site", "same-site")],
    ):
        for path in ("/stream/abcd", "/api/test/events"):
            r = await ui.request("GET", path, [ui.host(), ui.cookie(secret), *extra])
            assert r.status == 403, (path, extra)
    assert (ui.watched.streamed, ui.watched.evented) == (0, 0)


# -- foreign Hosts, Origins, sites and form posts ------------------------------------------------------


async def test_fifty_foreign_host_spellings_are_refused_without_effect(ui: Ui) -> None:
    hosts = foreign_hosts(ui.port)
    assert len(hosts) >= 50
    assert not {h.lower().strip() for h in hosts} & allowed(ui.port)
    secret = await ui.session()
    login = await ui.new_code_path()
    codes_before = len(ui.server.login_codes)
    for host in hosts:
        h = ("Host", host)
        attempts = [
            ("GET", "/ui/downloads", [h]),
            ("GET", "/static/common.js", [h]),
            ("GET", login, [h, ("Sec-Fetch-Site", "none")]),
            ("POST", "/api/ui/code", [h, ui.token(), JSON_CT]),
            ("GET", "/stream/abcd", [h, ui.cookie(secret)]),
            ("GET", "/api/test/events", [h, ui.cookie(secret)]),
            ("POST", "/api/test/counter", [h, ui.token(), JSON_CT]),
            ("POST", "/api/test/upload", [h, ui.token(), OCTETS]),
        ]
        for method, path, headers in attempts:
            r = await ui.request(method, path, headers, b"{}" if method == "POST" else b"")
            assert refused(r), (host, method, path, r.status)
            assert "set-cookie" not in r.headers
            assert TOKEN.encode() not in r.body
    assert sum(r.status == 403 for r in ui.responses) >= 50 * 8, "most must reach the guard, not the parser"
    assert (ui.watched.count, ui.watched.streamed, ui.watched.evented, ui.watched.uploaded) == (0, 0, 0, [])
    assert len(ui.server.login_codes) == codes_before and len(ui.server.sessions) == 1
    assert (await ui.login(login)).status == 200, "the code survived every refused attempt"


async def test_foreign_origins_and_sites_are_refused_on_pages_and_login(ui: Ui) -> None:
    login = await ui.new_code_path()
    bad = [
        ("Origin", "http://evil.test"),
        ("Origin", "null"),
        ("Origin", f"http://127.0.0.1:{ui.port + 1}"),
        ("Origin", f"https://127.0.0.1:{ui.port}"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ]
    for header in bad:
        for path in ("/ui/downloads", "/ui/", "/static/common.js", login):
            r = await ui.request("GET", path, [ui.host(), ("Sec-Fetch-Site", "none"), header])
            if header[0] == "Sec-Fetch-Site":  # replace, not add, the navigation's own value
                r = await ui.request("GET", path, [ui.host(), header])
            assert r.status == 403 and "set-cookie" not in r.headers, (path, header)
            if header[0] == "Sec-Fetch-Site":
                assert "peersm ui" in r.json()["error"], "a refused page says how to open the UI"
    assert len(ui.server.sessions) == 0
    assert (await ui.login(login)).status == 200


async def test_form_and_text_posts_are_refused_without_effect(ui: Ui) -> None:
    secret = await ui.session()
    codes_before = len(ui.server.login_codes)
    for ctype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain",
        "text/plain; charset=utf-8",
        "",
    ):
        for path in ("/api/ui/code", "/api/test/counter"):
            r = await ui.request("POST", path, [ui.host(), ui.token(), ("Content-Type", ctype)], b"a=1")
            assert r.status == 415, (path, ctype)
            r = await ui.request(
                "POST", path, [ui.host(), ui.cookie(secret), ("Content-Type", ctype)], b"a=1"
            )
            assert r.status == 401, (path, ctype)
    assert ui.watched.count == 0 and len(ui.server.login_codes) == codes_before


async def test_an_upload_route_takes_octets_with_the_token_only(ui: Ui) -> None:
    secret = await ui.session()
    big = bytes(range(256)) * (3 << 12)  # 3 MiB: more than a JSON body may be
    cases = [
        ([ui.host(), ui.cookie(secret), OCTETS], 401),
        ([ui.host(), OCTETS], 401),
        ([ui.host(), ui.token(), JSON_CT], 415),
        ([ui.host(), ui.token(), ("Content-Type", "text/plain")], 415),
        ([ui.host(), ui.token(), ("Content-Type", "multipart/form-data; boundary=x")], 415),
        ([ui.host(), ui.token(), ("Content-Type", "application/x-www-form-urlencoded")], 415),
        ([ui.host(), ui.token()], 415),
        ([ui.host(), ui.token(), ("Content-Type", "")], 415),  # aiohttp reads both as octet-stream
        ([ui.host(), ui.token(), OCTETS, OCTETS], 400),  # aiohttp's parser refuses two
        ([ui.host(), ui.token(), OCTETS, ("Origin", "http://evil.test")], 403),
        ([ui.host(), ui.token(), OCTETS, ("Sec-Fetch-Site", "cross-site")], 403),
    ]
    for headers, status in cases:
        r = await ui.request("POST", "/api/test/upload", headers, b"data")
        assert r.status == status, headers
    assert ui.watched.uploaded == []
    # octets are for upload routes only
    r = await ui.request("POST", "/api/test/counter", [ui.host(), ui.token(), OCTETS], b"{}")
    assert r.status == 415 and ui.watched.count == 0
    r = await ui.request("POST", "/api/test/upload", [ui.host(), ui.token(), OCTETS], big)
    assert r.status == 200 and r.json() == {"size": len(big)} and ui.watched.uploaded == [len(big)]


# -- pages: no credential, strict CSP, no inline code --------------------------------------------------


async def test_pages_load_without_a_credential_and_carry_the_page_csp(ui: Ui) -> None:
    login = await ui.new_code_path()
    responses = {
        **{f"/ui/{name}": await ui.request("GET", f"/ui/{name}", [ui.host()]) for name in NAV_PAGES},
        "/ui/": await ui.request("GET", "/ui/", [ui.host()]),
        "/ui/nope": await ui.request("GET", "/ui/nope", [ui.host()]),
        "login": await ui.login(login),
        "login again": await ui.login(login),
        **{
            f"/static/{f}": await ui.request("GET", f"/static/{f}", [ui.host()])
            for f in ("common.js", "app.css", "login.js")
        },
    }
    for name, r in responses.items():
        assert r.status == {"/ui/": 302, "/ui/nope": 404, "login again": 403}.get(name, 200), name
        csp = r.header("Content-Security-Policy")
        assert csp == PAGE_CSP and "unsafe-inline" not in csp and "unsafe-eval" not in csp, name
        assert r.header("X-Frame-Options") == "DENY", name
        assert r.header("X-Content-Type-Options") == "nosniff", name
        assert r.header("Referrer-Policy") == "no-referrer", name
        assert r.header("Cross-Origin-Opener-Policy") == "same-origin", name
    assert responses["/ui/"].header("Location") == "/ui/downloads"
    assert responses["/static/app.css"].header("Content-Type").startswith("text/css")
    assert responses["/static/common.js"].header("Content-Type").startswith("text/javascript")
    # the API keeps its own headers and its token
    r = await ui.request("GET", "/api/status", [ui.host()])
    assert r.status == 401 and r.header("Content-Security-Policy") == API_CSP


def assert_no_inline_code(html: str, where: str) -> None:
    for tag in re.findall(r"<script\b[^>]*>", html, flags=re.I):
        assert re.search(r'\bsrc="/static/[\w.-]+\.js"', tag), (where, tag)
    bodies = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.I | re.S)
    assert len(bodies) == html.lower().count("<script") and not "".join(bodies).strip(), where
    assert not re.search(r"<style\b", html, flags=re.I), where
    assert not re.search(r"\sstyle\s*=", html, flags=re.I), where
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I), where
    assert "javascript:" not in html.lower(), where


async def test_pages_have_the_nav_and_no_inline_code(ui: Ui) -> None:
    for name in NAV_PAGES:
        html = (await ui.request("GET", f"/ui/{name}", [ui.host()])).body.decode()
        assert_no_inline_code(html, name)
        nav = re.findall(r'<a href="/ui/(\w+)"( aria-current="page")?>', html)
        assert [n for n, _ in nav] == list(NAV_PAGES)
        assert [n for n, current in nav if current] == [name]
        assert '<script src="/static/common.js" defer></script>' in html
        assert 'id="notice"' in html and 'id="main"' in html
    login = await ui.login(await ui.new_code_path())
    assert_no_inline_code(login.body.decode(), "login")


async def test_static_scripts_use_no_eval_or_html_sinks() -> None:
    for script in STATIC_DIR.glob("*.js"):
        text = re.sub(r"/\*.*?\*/|//[^\n]*", "", script.read_text(), flags=re.S)  # comments may name them
        for sink in (
            "eval(",
            "new Function",
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ):
            assert sink not in text, (script.name, sink)


async def test_common_js_sends_the_token_header_and_uses_eventsource() -> None:
    text = (STATIC_DIR / "common.js").read_text()
    assert "function api(method, path, body)" in text and "function events(path, onmessage" in text
    assert '"X-Peersm-Token": token' in text and "sessionStorage.getItem(PEERSM_TOKEN_KEY)" in text
    assert 'const PEERSM_TOKEN_KEY = "peersm-token";' in text
    assert "new EventSource(path)" in text


# -- how /ui/<name> and /static/<file> map to the folder ---------------------------------------------


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    d = tmp_path / "static"
    d.mkdir()
    for name in ("common.js", "app.css", "login.js"):
        shutil.copy(STATIC_DIR / name, d / name)
    (d / "share.html").write_text('<section id="share-body">Pick a file</section>\n')
    (d / "share.js").write_text("// share\n")
    (d / "player.html").write_text('<video id="player"></video>\n')
    (d / "full.html").write_text("<!DOCTYPE html>\n<html><body><p>whole document</p></body></html>\n")
    (tmp_path / "secret.js").write_text("// outside the folder\n")
    (d / "link.js").symlink_to(tmp_path / "secret.js")
    (d / ".hidden.js").write_text("// hidden\n")
    (d / "notes.txt").write_text("not an asset type\n")
    return d


async def test_ui_names_map_to_html_files_or_the_shell(static_dir: Path) -> None:
    async with started(static_dir) as u:

        async def get(path: str) -> RawResponse:
            return await u.request("GET", path, [u.host()])

        share = (await get("/ui/share")).body.decode()
        assert '<main id="main" data-page="share">\n<section id="share-body">Pick a file</section>' in share
        assert '<script src="/static/share.js" defer></script>' in share
        # deferred scripts run in document order: common.js, the fragment's, then the page's
        assert share.index("/static/common.js") < share.index("</main>") < share.index("/static/share.js")
        player = await get("/ui/player")  # not in the nav, but written
        assert player.status == 200 and '<video id="player"></video>' in player.body.decode()
        assert "/static/player.js" not in player.body.decode()
        full = await get("/ui/full")
        assert full.body.decode().startswith("<!DOCTYPE html>") and "<nav" not in full.body.decode()
        library = (await get("/ui/library")).body.decode()
        assert "not built yet" in library and "/static/library.js" not in library
        for path in ("/ui/unknown", "/ui/Share", "/ui/share.html", "/ui/" + "a" * 40):
            assert (await get(path)).status == 404, path
        assert (await get("/static/share.js")).body == b"// share\n"
        for path in (
            "/static/share.html",
            "/static/link.js",
            "/static/.hidden.js",
            "/static/notes.txt",
            "/static/..%2Fsecret.js",
            "/static/missing.js",
        ):
            r = await get(path)
            assert r.status == 404 and b"outside" not in r.body, path
        for path in ("/static/../secret.js", "/static/sub/x.js", "/ui/a/b"):
            assert (await get(path)).status in (401, 404), path  # no page route: the token guard


def test_pages_and_stream_routes_stay_in_their_prefixes() -> None:
    server = ApiServer()

    async def handler(request: object) -> dict[str, object]:
        return {}

    for path in ("/", "/api/x", "/uix", "/stream/x", "/index.html"):
        with pytest.raises(UsageError):
            server.add_page(path, handler)  # type: ignore[arg-type]
    for path in ("/api/stream/x", "/ui/x", "/streamx"):
        with pytest.raises(UsageError):
            server.add_stream_route(path, handler)  # type: ignore[arg-type]


async def test_stream_responses_are_sandboxed_and_events_keep_the_api_headers(ui: Ui) -> None:
    secret = await ui.session()
    stream = await ui.request("GET", "/stream/abcd", [ui.host(), ui.cookie(secret)])
    assert stream.header("Content-Security-Policy") == STREAM_CSP
    assert stream.header("X-Content-Type-Options") == "nosniff"
    refused_stream = await ui.request("GET", "/stream/abcd", [ui.host()])
    assert refused_stream.status == 401 and refused_stream.header("Content-Security-Policy") == STREAM_CSP
    events = await ui.request("GET", "/api/test/events", [ui.host(), ui.cookie(secret)])
    assert events.header("Content-Security-Policy") == API_CSP
    assert events.header("Cache-Control") == "no-store"


@pytest.mark.parametrize(
    ("own", "kept"),
    [
        ("sandbox; default-src 'none'", True),
        ("sandbox;  default-src  'none'; img-src data:", True),
        ("default-src 'none'; sandbox", False),  # sandbox must come first and bare
        ("sandbox allow-scripts; default-src 'none'", False),
        ("sandbox", False),
        ("sandbox; default-src 'self'", False),
        ("default-src *", False),
        ("", False),
    ],
)
async def test_a_handler_may_only_tighten_the_csp(ui: Ui, own: str, kept: bool) -> None:
    r = await ui.request("GET", f"/api/test/csp?csp={quote(own)}", [ui.host(), ui.token()])
    assert r.status == 200
    assert r.header("Content-Security-Policy") == (own if kept else API_CSP)
