"""The local API's guard (webui/server.py; anchors-reliability W2, W3, W4, W7) and server lifecycle."""

from __future__ import annotations

import logging
import socket

import pytest
from aiohttp import web

import webui.server
from peer import __version__
from peer.errors import UsageError
from tests.api.conftest import TOKEN, Api
from tests.api.rawhttp import RawResponse, raw_request
from webui.server import ApiServer, allowed_hosts, new_token


def refused_hosts(port: int) -> list[str]:
    """Host values an attacker's page or a confused client may send; none may pass (W2)."""
    p, q = port, port + 1 if port < 65535 else port - 1
    return [
        # DNS rebinding: attacker-controlled names that resolve to 127.0.0.1
        f"evil.test:{p}",
        "evil.test",
        f"attacker.example.com:{p}",
        f"127.0.0.1.nip.io:{p}",
        f"localtest.me:{p}",
        f"localhost.evil.test:{p}",
        f"evil.localhost:{p}",
        f"sub.localhost:{p}",
        f"localhost.localdomain:{p}",
        f"xn--localhost:{p}",
        f"locaIhost:{p}",
        f"1ocalhost:{p}",
        f"7f000001.rbndr.us:{p}",
        f"127-0-0-1.sslip.io:{p}",
        # no port or another port
        "127.0.0.1",
        "localhost",
        "[::1]",
        f"127.0.0.1:{q}",
        f"localhost:{q}",
        f"[::1]:{q}",
        "127.0.0.1:0",
        "localhost:80",
        "[::1]:443",
        f"127.0.0.1:0{p}",
        f"localhost:+{p}",
        f"127.0.0.1:{p}0",
        f"127.0.0.1:{p}:{p}",
        f"localhost:{p}:",
        "localhost:",
        # trailing dots
        f"localhost.:{p}",
        f"LOCALHOST.:{p}",
        f"127.0.0.1.:{p}",
        f"[::1].:{p}",
        f"localhost..:{p}",
        # other spellings of loopback
        f"127.1:{p}",
        f"127.0.1:{p}",
        f"2130706433:{p}",
        f"0x7f000001:{p}",
        f"0177.0.0.1:{p}",
        f"127.000.000.001:{p}",
        f"0.0.0.0:{p}",
        f"0:{p}",
        f"127.0.0.2:{p}",
        f"127.255.255.254:{p}",
        # IPv6 forms
        f"[0:0:0:0:0:0:0:1]:{p}",
        f"[::ffff:127.0.0.1]:{p}",
        f"[::1%lo]:{p}",
        f"[::1%25lo]:{p}",
        f"::1:{p}",
        f"[::]:{p}",
        f"[::01]:{p}",
        f"[0::1]:{p}",
        f"[::1]]:{p}",
        f"[[::1]]:{p}",
        # empty, userinfo, URL pieces
        "",
        " ",
        f"user@127.0.0.1:{p}",
        f"user:pass@localhost:{p}",
        f"evil.test@127.0.0.1:{p}",
        f"127.0.0.1:{p}@evil.test",
        f"127.0.0.1:{p}.evil.test",
        f"localhost:{p}/",
        f"localhost:{p}#x",
        f"localhost:{p}?x",
        f"http://127.0.0.1:{p}",
        f"127.0.0.1: {p}",
        f"127.0.0.1 :{p}",
        f"localhost:{p},evil.test",
        f"evil.test,localhost:{p}",
        f"localhost:{p} evil.test",
    ]


def allowed_variants(port: int) -> list[str]:
    return [
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        f"[::1]:{port}",
        f"LOCALHOST:{port}",
        f"LocalHost:{port}",
    ]


# -- W2: Host ----------------------------------------------------------------------------------------


async def test_w2_only_the_three_loopback_hosts_pass(api: Api) -> None:
    refused = refused_hosts(api.port)
    assert len(refused) >= 50
    for host in refused:
        r = await api.request("GET", "/api/status", [("Host", host), ("Authorization", f"Bearer {TOKEN}")])
        assert r.status == 403, host
        assert "forbidden Host" in r.json()["error"]
    for host in allowed_variants(api.port):
        r = await api.request("GET", "/api/status", [("Host", host), ("Authorization", f"Bearer {TOKEN}")])
        assert r.status == 200, host
        assert r.json()["version"] == __version__


async def test_w2_missing_or_duplicated_host_is_refused(api: Api) -> None:
    auth = ("Authorization", f"Bearer {TOKEN}")
    # HTTP/1.1 without Host: aiohttp's parser answers 400 before the app runs (browsers always send Host)
    assert (await api.request("GET", "/api/status", [auth])).status == 400
    r = await api.request("POST", "/api/test/counter", [auth, ("Content-Type", "application/json")], b"{}")
    assert r.status == 400 and api.counter.count == 0
    # HTTP/1.0 may omit Host; the middleware refuses it
    r = await raw_request("127.0.0.1", api.port, "GET", "/api/status", [auth], version="HTTP/1.0")
    assert r.status == 403 and "forbidden Host" in r.json()["error"]
    # duplicated Host: refused by the parser too (400); the middleware would refuse it with 403 anyway
    two_good = [("Host", api.host()), ("Host", api.host()), auth]
    assert (await api.request("GET", "/api/status", two_good)).status == 400
    good_and_bad = [("Host", api.host()), ("Host", f"evil.test:{api.port}"), auth]
    assert (await api.request("GET", "/api/status", good_and_bad)).status == 400


async def test_w2_host_is_checked_on_unknown_paths_and_before_the_token(api: Api) -> None:
    for path in ("/api/nothing", "/", "/index.html", "/api/test/counter"):
        r = await api.request("GET", path, [("Host", f"evil.test:{api.port}")])
        assert r.status == 403, path


async def test_w2_a_server_bound_to_another_loopback_address_accepts_that_literal() -> None:
    server = ApiServer(token=TOKEN)
    url = await server.start("127.0.0.2", 0)
    try:
        assert url == f"http://127.0.0.2:{server.port}"
        assert f"127.0.0.2:{server.port}" in allowed_hosts(server.port, "127.0.0.2")
        auth = ("Authorization", f"Bearer {TOKEN}")
        for host, status in (("127.0.0.2", 200), ("127.0.0.1", 200), ("127.0.0.3", 403), ("evil.test", 403)):
            r = await raw_request(
                "127.0.0.2", server.port, "GET", "/api/status", [("Host", f"{host}:{server.port}"), auth]
            )
            assert r.status == status, host
    finally:
        await server.stop()


# -- W3: Origin, CSRF, content type --------------------------------------------------------------------


async def test_w3_cross_site_state_changes_are_refused_without_effect(api: Api) -> None:
    p = api.port
    json_ct = ("Content-Type", "application/json")
    body = b"{}"
    cases: list[tuple[str, list[tuple[str, str]], bytes, int]] = []
    for origin in (
        "http://evil.test",
        "null",
        f"http://127.0.0.1:{p + 1}",
        f"https://127.0.0.1:{p}",
        f"http://localhost.:{p}",
        f"http://evil.test:{p}",
        f"http://127.0.0.1:{p}.evil.test",
        "file://",
        "",
        f"http://127.0.0.1:{p}/",
    ):
        cases.append(("POST", [*api.good_headers(), ("Origin", origin), json_ct], body, 403))
    cases.append(
        (
            "POST",
            [
                *api.good_headers(),
                ("Origin", f"http://127.0.0.1:{p}"),
                ("Origin", "http://evil.test"),
                json_ct,
            ],
            body,
            403,
        )
    )
    for site in ("cross-site", "same-site"):
        cases.append(("POST", [*api.good_headers(), ("Sec-Fetch-Site", site), json_ct], body, 403))
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for ctype in (
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
            "text/plain; charset=utf-8",
            "application/jsonx",
            "application/json-patch+json",
            "",
        ):
            cases.append((method, [*api.good_headers(), ("Content-Type", ctype)], b"a=1", 415))
        cases.append((method, api.good_headers(), b"", 415))  # no Content-Type at all
    for method in ("POST", "DELETE"):
        cases.append((method, [("Host", api.host()), json_ct], body, 401))
        cases.append(
            (method, [("Host", api.host()), ("Authorization", "Bearer " + "x" * 43), json_ct], body, 401)
        )
        cases.append((method, [("Host", api.host()), ("Origin", "http://evil.test"), json_ct], body, 403))
    for method, headers, payload, expected in cases:
        r = await api.request(method, "/api/test/counter", headers, payload)
        assert (r.status, method, headers) == (expected, method, headers)
        assert "error" in r.json()
    assert api.counter.count == 0
    assert (await api.get("/api/test/counter")).json() == {"count": 0}
    # the positive controls: the same call, done right, does change state
    ok = await api.request("POST", "/api/test/counter", [*api.good_headers(), json_ct], body)
    assert ok.status == 200 and ok.json() == {"count": 1}
    same_origin = [
        *api.good_headers(),
        json_ct,
        ("Origin", f"http://localhost:{p}"),
        ("Sec-Fetch-Site", "same-origin"),
    ]
    ok = await api.request("PUT", "/api/test/counter", same_origin, body)
    assert ok.status == 200 and api.counter.count == 2
    ok = await api.request(
        "DELETE",
        "/api/test/counter",
        [*api.good_headers(), ("Content-Type", "Application/JSON; charset=utf-8")],
    )
    assert ok.status == 200 and api.counter.count == 3


async def test_w3_origin_is_checked_on_reads_too(api: Api) -> None:
    r = await api.get("/api/status", Origin="http://evil.test")
    assert r.status == 403
    r = await api.get("/api/status", Origin=f"http://[::1]:{api.port}")
    assert r.status == 200


# -- W4: the token -------------------------------------------------------------------------------------


async def test_w4_missing_or_wrong_token_is_401(api: Api) -> None:
    host = ("Host", api.host())
    wrong = TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B")
    cases: list[list[tuple[str, str]]] = [
        [host],
        [host, ("Authorization", f"Bearer {wrong}")],
        [host, ("Authorization", "Bearer")],
        [host, ("Authorization", "Bearer ")],
        [host, ("Authorization", TOKEN)],
        [host, ("Authorization", f"Basic {TOKEN}")],
        [host, ("Authorization", f"Bearer {TOKEN}x")],
        [host, ("Authorization", f"Bearer {TOKEN[:-1]}")],
        [host, ("X-Peersm-Token", wrong)],
        [host, ("X-Peersm-Token", "")],
        [host, ("Authorization", f"Bearer {TOKEN}"), ("X-Peersm-Token", wrong)],
        [host, ("Authorization", f"Bearer {wrong}"), ("X-Peersm-Token", TOKEN)],
        [host, ("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {wrong}")],
        [host, ("Cookie", f"token={TOKEN}")],
    ]
    for headers in cases:
        for path in ("/api/status", "/api/nothing"):
            r = await api.request("GET", path, headers)
            assert r.status == 401, headers
            assert "API token" in r.json()["error"]
    for headers in (
        [host, ("Authorization", f"Bearer {TOKEN}")],
        [host, ("Authorization", f"bearer  {TOKEN}")],
        [host, ("X-Peersm-Token", TOKEN)],
        [host, ("Authorization", f"Bearer {TOKEN}"), ("X-Peersm-Token", TOKEN)],
    ):
        assert (await api.request("GET", "/api/status", headers)).status == 200, headers


async def test_w4_token_in_the_query_is_not_accepted(api: Api) -> None:
    for query in (
        f"token={TOKEN}",
        f"access_token={TOKEN}",
        f"api_key={TOKEN}",
        f"Authorization=Bearer%20{TOKEN}",
    ):
        r = await api.request("GET", f"/api/status?{query}", [("Host", api.host())])
        assert r.status == 401, query
        assert TOKEN.encode() not in r.body


async def test_w4_token_compared_in_constant_time(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = webui.server.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webui.server.hmac, "compare_digest", spy)
    assert (await api.get("/api/status")).status == 200
    wrong = [("Host", api.host()), ("X-Peersm-Token", "nope")]
    assert (await api.request("GET", "/api/status", wrong)).status == 401
    assert compared == [(TOKEN.encode(), TOKEN.encode()), (b"nope", TOKEN.encode())]


async def test_w4_token_never_in_logs_or_responses(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses: list[RawResponse] = []
    host = ("Host", api.host())
    responses.append(await api.get("/api/status"))
    responses.append(await api.get("/api/nothing"))
    responses.append(await api.get("/api/test/boom"))
    responses.append(await api.get("/api/test/events"))
    responses.append(await api.request("GET", f"/api/status?token={TOKEN}", [host]))
    responses.append(await api.request("GET", f"/api/test/counter/{TOKEN}", [host]))
    responses.append(await api.request("POST", "/api/test/counter", api.good_headers(), b"x"))
    responses.append(
        await api.request(
            "POST", "/api/test/echo", [*api.good_headers(), ("Content-Type", "application/json")], b"{bad"
        )
    )
    responses.append(
        await api.request(
            "GET", "/api/status", [("Host", f"{TOKEN}:{api.port}"), ("Authorization", f"Bearer {TOKEN}")]
        )
    )
    responses.append(await api.request("GET", "/api/status", [host, ("Origin", f"http://{TOKEN}")]))
    assert [r.status for r in responses] == [200, 404, 500, 200, 401, 401, 415, 400, 403, 403]
    for r in responses:
        assert TOKEN.encode() not in r.body
        assert all(TOKEN not in v for values in r.headers.values() for v in values)
    assert caplog.records, "the access log at DEBUG should have recorded the requests"
    assert TOKEN not in caplog.text
    assert "an internal detail" not in responses[2].body.decode()
    assert TOKEN not in repr(api.server)


async def test_w4_malformed_requests_do_not_log_the_token(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for bad in ("\x01", "\x7f", "\x00"):
        headers = [("Host", api.host()), ("Authorization", f"Bearer {TOKEN}{bad}")]
        r = await api.request("GET", "/api/status", headers)
        assert r.status == 400  # aiohttp's parser; its message quotes the line back to the sender only
    assert any(rec.name == "webui.server.http" for rec in caplog.records)
    assert all(
        rec.levelno == logging.DEBUG and rec.exc_info is None
        for rec in caplog.records
        if rec.name == "webui.server.http"
    )
    assert TOKEN not in caplog.text
    assert api.counter.count == 0


def test_w4_generated_tokens_are_256_bit_base64url() -> None:
    seen = {new_token() for _ in range(50)}
    assert len(seen) == 50
    for token in seen:
        assert len(token) == 43 and set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    assert ApiServer(randbytes=lambda n: b"\xff" * n).token == "_" * 42 + "8"
    with pytest.raises(UsageError):
        ApiServer(randbytes=lambda n: b"\x00" * (n - 1))
    for bad in ("", "short", "has space in the token!!", "x" * 513, "tök" * 10):
        with pytest.raises(UsageError):
            ApiServer(token=bad)


# -- W7: security headers ------------------------------------------------------------------------------

#: Written out here (not taken from webui.server) so that dropping one from the server fails the test.
EXPECTED_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def test_w7_security_headers_on_every_response(api: Api) -> None:
    host = ("Host", api.host())
    json_ct = ("Content-Type", "application/json")
    responses = {
        "200": await api.get("/api/status"),
        "404 /api": await api.get("/api/nothing"),
        "404 /": await api.get("/"),
        "404 page": await api.get("/index.html"),
        "405": await api.request("POST", "/api/status", [*api.good_headers(), json_ct], b"{}"),
        "401": await api.request("GET", "/api/status", [host]),
        "403 host": await api.request("GET", "/", [("Host", "evil.test")]),
        "403 origin": await api.get("/api/status", Origin="null"),
        "415": await api.request("POST", "/api/test/counter", api.good_headers(), b"a"),
        "400": await api.request("POST", "/api/test/echo", [*api.good_headers(), json_ct], b"[1]"),
        "500": await api.get("/api/test/boom"),
        "500 peer": await api.get("/api/test/refuse"),
        "302": await api.get("/api/test/moved"),
        "sse": await api.get("/api/test/events"),
    }
    for name, r in responses.items():
        for header, value in EXPECTED_HEADERS.items():
            assert r.header(header) == value, (name, header)
        path_is_api = name not in ("404 /", "404 page", "403 host")
        assert (r.header("Cache-Control") == "no-store") == path_is_api, name
    assert responses["405"].status == 405 and "GET" in (responses["405"].header("Allow") or "")
    assert responses["302"].status == 302 and responses["302"].header("Location") == "/api/test/counter"
    assert responses["sse"].header("Content-Type").startswith("text/event-stream")
    for name, r in responses.items():
        if name != "sse" and r.status != 200:
            assert r.header("Content-Type").startswith("application/json"), name
            assert isinstance(r.json()["error"], str) and "Traceback" not in r.json()["error"]


# -- routes, errors, status ----------------------------------------------------------------------------


async def test_status_provider_default_sync_and_async(api: Api) -> None:
    assert (await api.get("/api/status")).json() == {"version": __version__}
    api.server.set_status_provider(lambda: {"links": 3, "peers": ["a"]})
    assert (await api.get("/api/status")).json() == {"version": __version__, "links": 3, "peers": ["a"]}

    async def provider() -> dict[str, object]:
        return {"circuits": 2}

    api.server.set_status_provider(provider)
    assert (await api.get("/api/status")).json() == {"version": __version__, "circuits": 2}


async def test_json_body_and_error_mapping(api: Api) -> None:
    json_ct = ("Content-Type", "application/json")
    r = await api.request("POST", "/api/test/echo", [*api.good_headers(), json_ct], b'{"a": [1, "b"]}')
    assert r.status == 200 and r.json() == {"echo": {"a": [1, "b"]}}
    for bad, message in ((b"{bad", "not valid JSON"), (b"[1]", "JSON object"), (b"\xff", "not valid JSON")):
        r = await api.request("POST", "/api/test/echo", [*api.good_headers(), json_ct], bad)
        assert r.status == 400 and message in r.json()["error"]
    r = await api.request(
        "POST", "/api/test/echo", [*api.good_headers(), json_ct], b"1" * (webui.server.MAX_BODY + 1)
    )
    assert r.status == 413
    r = await api.get("/api/test/refuse")
    assert r.status == 500 and r.json() == {"error": "internal: a peer error"}
    r = await api.get("/api/test/boom")
    assert r.status == 500 and r.json() == {"error": "internal error (see the peer's log)"}


def test_add_route_outside_api_is_refused() -> None:
    server = ApiServer()

    async def handler(request: web.Request) -> dict[str, object]:
        return {}

    with pytest.raises(UsageError):
        server.add_route("GET", "/status", handler)


# -- binding ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "fd00::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "example.com",
        "",
        "127.0.0.1.",
        "fe80::1",
    ],
)
async def test_refuses_non_loopback_before_binding(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_bind(*args: object, **kwargs: object) -> None:
        raise AssertionError("TCPSite must not be built for a non-loopback host")

    monkeypatch.setattr(webui.server.web, "TCPSite", no_bind)
    server = ApiServer()
    with pytest.raises(UsageError):
        await server.start(host, 0)
    with pytest.raises(UsageError):
        _ = server.url


async def test_lifecycle_url_port_and_errors() -> None:
    server = ApiServer()
    with pytest.raises(UsageError):
        _ = server.port
    url = await server.start()
    try:
        assert url == server.url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        with pytest.raises(UsageError):
            await server.start()
        other = ApiServer()
        with pytest.raises(UsageError, match="cannot listen"):
            await other.start("127.0.0.1", server.port)
        with pytest.raises(UsageError):
            await ApiServer().start("127.0.0.1", 70000)
    finally:
        await server.stop()
    await server.stop()  # idempotent
    with pytest.raises(UsageError, match="starts once"):
        await server.start()
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))


async def test_ipv6_loopback_and_localhost() -> None:
    server = ApiServer(token=TOKEN)
    url = await server.start("::1", 0)
    try:
        assert url == f"http://[::1]:{server.port}"
        r = await raw_request(
            "::1",
            server.port,
            "GET",
            "/api/status",
            [("Host", f"[::1]:{server.port}"), ("Authorization", f"Bearer {TOKEN}")],
        )
        assert r.status == 200
    finally:
        await server.stop()
    server = ApiServer()
    assert (await server.start("localhost", 0)).startswith("http://127.0.0.1:")
    await server.stop()
