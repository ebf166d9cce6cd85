"""Web UI login (issue 11, "Login and protections"): one-time codes, sessions, the login page, `peersm ui`.

The code/session tables are tested alone (webui/auth.py, fed ``now``), then over a real
ApiServer on 127.0.0.1 with a fake clock (tests/webui/loginkit.py).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.app import cli
from peer.app.up import print_ui_link
from tests.webui.loginkit import TOKEN, Ui, session_secret, ui
from webui import auth
from webui.auth import LoginCodes, Sessions, cookie_values
from webui.server import write_api_json

__all__ = ["ui"]  # the fixture

T0 = 5000.0


def counting_bytes() -> tuple[list[int], Callable[[int], bytes]]:
    """A randbytes source that records the sizes asked for and never repeats."""
    asked: list[int] = []

    def randbytes(n: int) -> bytes:
        asked.append(n)
        return len(asked).to_bytes(4, "big").rjust(n, b"\x01")

    return asked, randbytes


# -- the tables alone --------------------------------------------------------------------------------


def test_codes_carry_128_bits_and_are_distinct() -> None:
    asked, randbytes = counting_bytes()
    codes = LoginCodes(randbytes)
    code = codes.issue(T0)
    assert asked == [16]
    assert len(base64.urlsafe_b64decode(code + "==")) == 16
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", code)
    real = LoginCodes(os.urandom)
    assert len({real.issue(T0) for _ in range(10)}) == 10
    with pytest.raises(ValueError):
        LoginCodes(lambda n: b"\x00" * (n - 1)).issue(T0)


def test_a_code_works_once() -> None:
    codes = LoginCodes(counting_bytes()[1])
    code = codes.issue(T0)
    assert codes.redeem(code, T0 + 1)
    assert not codes.redeem(code, T0 + 1)
    assert len(codes) == 0


def test_a_code_expires_after_two_minutes() -> None:
    codes = LoginCodes(counting_bytes()[1])
    early, late = codes.issue(T0), codes.issue(T0)
    assert codes.redeem(early, T0 + 119.999)
    assert not codes.redeem(late, T0 + 120.0)
    assert not codes.redeem(late, T0 + 500.0)
    assert auth.CODE_TTL == 120.0


def test_a_wrong_or_expired_code_changes_nothing() -> None:
    codes = LoginCodes(counting_bytes()[1])
    good = codes.issue(T0)
    for bad in ("", good[:-1], good + "A", good.upper(), "x" * 300, good.replace(good[0], "-")):
        if bad != good:
            assert not codes.redeem(bad, T0)
    assert len(codes) == 1 and codes.redeem(good, T0)


def test_outstanding_codes_are_bounded_oldest_first() -> None:
    codes = LoginCodes(counting_bytes()[1])
    issued = [codes.issue(T0) for _ in range(auth.MAX_CODES + 1)]
    assert len(codes) == auth.MAX_CODES
    assert not codes.redeem(issued[0], T0)
    assert codes.redeem(issued[1], T0) and codes.redeem(issued[-1], T0)


def test_sessions_are_256_bit_and_expire() -> None:
    asked, randbytes = counting_bytes()
    sessions = Sessions(randbytes)
    secret = sessions.open(T0)
    assert asked == [32] and len(secret) == 43
    assert sessions.valid(secret, T0 + auth.SESSION_TTL - 1)
    assert sessions.valid(secret, T0 + 1), "checking a session does not use it up"
    assert not sessions.valid(secret, T0 + auth.SESSION_TTL)
    assert not sessions.valid(secret[:-1], T0)
    assert not sessions.valid("", T0)
    many = [sessions.open(T0) for _ in range(auth.MAX_SESSIONS)]
    assert not sessions.valid(secret, T0), "the oldest session goes first"
    assert all(sessions.valid(s, T0) for s in many)


def test_nothing_secret_in_reprs() -> None:
    codes, sessions = LoginCodes(counting_bytes()[1]), Sessions(counting_bytes()[1])
    code, secret = codes.issue(T0), sessions.open(T0)
    assert code not in repr(codes) and secret not in repr(sessions)


# -- the Cookie header parser ---------------------------------------------------------------------------

_name = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
_value = st.text("ABCDEFabcdef0123456789-_.", max_size=50)


@given(st.lists(st.tuples(_name, _value), max_size=8), st.sampled_from(["; ", ";", " ;  "]))
def test_cookie_values_finds_exactly_the_named_ones(jar: list[tuple[str, str]], sep: str) -> None:
    header = sep.join(f"{k}={v}" for k, v in jar)
    for name in {k for k, _ in jar} | {"peersm_1"}:
        assert list(cookie_values([header], name)) == [v for k, v in jar if k == name]


@given(st.lists(st.text(max_size=80), max_size=4), _name)
def test_cookie_values_never_raises(headers: list[str], name: str) -> None:
    for value in cookie_values(headers, name):
        assert isinstance(value, str)


def test_cookie_values_examples() -> None:
    headers = ['a=1; peersm_80="q"; peersm_8=x', "peersm_80=second", "peersm_80"]
    assert list(cookie_values(headers, "peersm_80")) == ["q", "second"]
    assert list(cookie_values(headers, "peersm_8")) == ["x"]
    assert list(cookie_values(headers, "peersm_800")) == []


# -- the login over HTTP ------------------------------------------------------------------------------


async def test_login_sets_the_port_cookie_and_hands_over_the_token(ui: Ui) -> None:
    path = await ui.new_code_path()
    code = path.split("code=", 1)[1]
    r = await ui.login(path)
    assert r.status == 200
    (cookie,) = r.headers["set-cookie"]
    _, *attributes = (a.strip().lower() for a in cookie.split(";"))
    # no Max-Age/Expires (gone with the browser), no Domain (this host only)
    assert sorted(attributes) == ["httponly", "path=/", "samesite=strict"]
    secret = session_secret(r, ui.port)
    assert len(secret) == 43 and ui.server.sessions.valid(secret, ui.clock.now)
    assert r.header("Cache-Control") == "no-store"
    body = r.body.decode()
    assert f'<meta name="peersm-token" content="{TOKEN}">' in body
    assert '<script src="/static/login.js" defer></script>' in body
    assert code not in body and code not in str(r.headers)
    assert "code=" not in body


async def test_login_js_stores_the_token_and_leaves_the_url(ui: Ui) -> None:
    r = await ui.request("GET", "/static/login.js", [ui.host()])
    script = r.body.decode()
    assert r.status == 200 and r.header("Content-Type").startswith("text/javascript")
    assert 'sessionStorage.setItem("peersm-token", meta.content)' in script
    assert 'location.replace("/ui/")' in script
    assert 'history.replaceState(null, "", location.pathname)' in script


@pytest.mark.parametrize(
    "fetch_site",
    [[], [("Sec-Fetch-Site", "same-origin")], [("Sec-Fetch-Site", "none"), ("Sec-Fetch-Site", "none")]],
    ids=["missing", "same-origin", "twice"],
)
async def test_login_needs_a_top_level_navigation(ui: Ui, fetch_site: list[tuple[str, str]]) -> None:
    path = await ui.new_code_path()
    r = await ui.request("GET", path, [ui.host(), *fetch_site])
    assert r.status == 403
    assert "set-cookie" not in r.headers and len(ui.server.sessions) == 0
    assert "address bar" in r.body.decode() and "peersm ui" in r.body.decode()
    assert TOKEN not in r.body.decode()
    # nothing changed: the same code still logs in from the address bar
    assert (await ui.login(path)).status == 200


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_login_from_another_site_is_refused_by_the_guard(ui: Ui, site: str) -> None:
    path = await ui.new_code_path()
    r = await ui.request("GET", path, [ui.host(), ("Sec-Fetch-Site", site)])
    assert r.status == 403 and "set-cookie" not in r.headers and len(ui.server.sessions) == 0
    assert (await ui.login(path)).status == 200


async def test_a_replayed_code_is_refused_with_a_clear_page(ui: Ui) -> None:
    path = await ui.new_code_path()
    first = await ui.login(path)
    assert first.status == 200 and len(ui.server.sessions) == 1
    again = await ui.login(path)
    assert again.status == 403
    assert "set-cookie" not in again.headers and len(ui.server.sessions) == 1
    page = again.body.decode()
    assert "peersm ui" in page and "used already" in page
    assert TOKEN not in page and again.header("Cache-Control") == "no-store"
    assert '<script src="/static/login.js" defer></script>' in page  # drops the dead code from the URL


async def test_a_code_expires_at_two_minutes(ui: Ui) -> None:
    early, late = await ui.new_code_path(), await ui.new_code_path()
    ui.clock.now += 119.9
    assert (await ui.login(early)).status == 200
    ui.clock.now += 0.1
    r = await ui.login(late)
    assert r.status == 403 and "set-cookie" not in r.headers and "expired" in r.body.decode()
    assert len(ui.server.sessions) == 1


async def test_a_made_up_or_missing_code_is_refused(ui: Ui) -> None:
    real = await ui.new_code_path()
    for path in (
        "/ui/login",
        "/ui/login?code=",
        "/ui/login?code=AAAAAAAAAAAAAAAAAAAAAA",
        f"{real}x",
        f"{real}&code=x",
        f"/ui/login?code=x&{real.split('?', 1)[1]}",
        f"/ui/login?{real.split('?', 1)[1]}&{real.split('?', 1)[1]}",
    ):
        r = await ui.login(path)
        assert r.status == 403 and "set-cookie" not in r.headers, path
    assert len(ui.server.sessions) == 0 and len(ui.server.login_codes) == 1
    assert (await ui.login(real)).status == 200


async def test_the_code_endpoint_needs_the_token_and_json(ui: Ui) -> None:
    json_ct = ("Content-Type", "application/json")
    cases = [
        ("POST", [ui.host(), json_ct], 401),
        ("POST", [ui.host(), ("X-Peersm-Token", TOKEN[:-1] + "x"), json_ct], 401),
        ("POST", [ui.host(), ui.token(), ("Content-Type", "text/plain")], 415),
        ("POST", [ui.host(), ui.token(), ("Content-Type", "application/x-www-form-urlencoded")], 415),
        ("POST", [ui.host(), ui.token(), json_ct, ("Origin", "http://evil.test")], 403),
        ("POST", [ui.host(), ui.token(), json_ct, ("Sec-Fetch-Site", "cross-site")], 403),
        ("GET", [ui.host(), ui.token()], 405),
    ]
    for method, headers, status in cases:
        r = await ui.request(method, "/api/ui/code", headers, b"{}")
        assert r.status == status, headers
        assert b"code=" not in r.body
    assert len(ui.server.login_codes) == 0
    secret = await ui.session()
    r = await ui.request("POST", "/api/ui/code", [ui.host(), ui.cookie(secret), json_ct], b"{}")
    assert r.status == 401 and len(ui.server.login_codes) == 0, "the cookie must not make codes"
    r = await ui.request("POST", "/api/ui/code", [ui.host(), ui.token(), json_ct], b"{}")
    assert r.status == 200 and r.json()["expires_in"] == 120 and len(ui.server.login_codes) == 1


async def test_the_code_never_reaches_a_log(ui: Ui, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    paths = [await ui.new_code_path() for _ in range(4)]
    codes = [p.split("code=", 1)[1] for p in paths]
    await ui.login(paths[0])  # good
    await ui.login(paths[0])  # replayed
    await ui.request("GET", paths[1], [ui.host()])  # no Sec-Fetch-Site
    await ui.request("GET", paths[1], [ui.host(), ("Sec-Fetch-Site", "cross-site")])
    await ui.request("GET", paths[2], [("Host", "evil.test")])
    await ui.request("GET", paths[3] + "\x01", [ui.host(), ("Sec-Fetch-Site", "none")])  # parser error
    ui.clock.now += 121
    await ui.login(paths[2])  # expired
    assert caplog.records, "the access log at DEBUG should have recorded the requests"
    for code in codes:
        assert code not in caplog.text
    assert TOKEN not in caplog.text
    # every login answer, good or not (but aiohttp's 400 for the malformed line, which quotes it to its sender)
    answers = [r for i, r in enumerate(ui.responses[4:]) if i != 5]
    assert [r.status for r in answers] == [200, 403, 403, 403, 403, 403]
    for r in answers:
        assert not any(code.encode() in r.body for code in codes)
        assert not any(code in v for code in codes for vs in r.headers.values() for v in vs)


# -- the command line ------------------------------------------------------------------------------------


async def test_peersm_ui_prints_a_link_that_logs_in(
    ui: Ui, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_api_json(tmp_path, ui.server.url, TOKEN)
    assert await asyncio.to_thread(cli.main, ["ui", "--data", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    url = out.strip()
    assert url.startswith(f"http://127.0.0.1:{ui.port}/ui/login?code=") and "once" in err
    r = await ui.login(url.split(str(ui.port), 1)[1])
    assert r.status == 200 and "set-cookie" in r.headers


async def test_peersm_ui_open_hands_the_link_to_the_browser(
    ui: Ui, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    write_api_json(tmp_path, ui.server.url, TOKEN)
    assert await asyncio.to_thread(cli.main, ["ui", "--open", "--data", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert len(opened) == 1 and "/ui/login?code=" in opened[0] and opened[0] not in out
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    assert await asyncio.to_thread(cli.main, ["ui", "--open", "--data", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "/ui/login?code=" in out and "open this link yourself" in err


def test_peersm_ui_without_a_peer_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ui", "--data", str(tmp_path)]) == 1
    assert "peersm up --data" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_peersm_up_prints_the_link_on_a_terminal_only(ui: Ui) -> None:
    pipe, tty = io.StringIO(), Terminal()
    assert not print_ui_link(ui.server, pipe)
    assert pipe.getvalue() == "" and len(ui.server.login_codes) == 0
    assert print_ui_link(ui.server, tty)
    (link,) = re.findall(r"http://\S+", tty.getvalue())
    assert link.startswith(f"{ui.server.url}/ui/login?code=")
    assert (await ui.login(link.split(str(ui.port), 1)[1])).status == 200
