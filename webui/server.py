"""The local API: aiohttp on a loopback address, guarded by a token, Host and Origin checks (DESIGN §10).

A running peer (``peersm up``) serves a small REST API under ``/api/``; the ``peersm``
command (``status``, later ``share`` and ``get``) and the web UI talk to the peer only
through it.  The runtime builds an :class:`ApiServer`, adds its routes and starts it;
DIR/api.json (mode 0600) tells local clients where it listens and which token to send.

Every request, unmatched paths included, passes the same checks, in this order
(docs/api.md; tests/api cover anchors-reliability rows W2-W4 and W7):

1. **Host** must be exactly ``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT`` or the
   bound address with its port, compared case-insensitively.  Anything else (a DNS name an
   attacker rebinds to 127.0.0.1, another port, a trailing dot, userinfo) gets 403.
2. **Origin**, when present, must be ``http://`` plus one of those hosts (``null`` is
   refused); ``Sec-Fetch-Site``, when present, must be ``same-origin`` or ``none``.  403.
3. **Token**: ``Authorization: Bearer TOKEN`` or ``X-Peersm-Token: TOKEN``, compared in
   constant time.  A token in the URL query is ignored.  401.  Two kinds of route differ:
   pages (:meth:`ApiServer.add_page`: HTML, scripts, styles; they hold no data) need no
   credential, and GET on a stream route (:meth:`ApiServer.add_stream_route`) or on an
   event stream (a GET route whose path ends in ``/events``) accepts the web UI's session
   cookie ``peersm_<port>`` instead of the token, since ``<video src>`` and ``EventSource``
   cannot send headers.  The cookie opens nothing else (webui/auth.py, docs/ui-auth.md).
4. **Content-Type**: POST, PUT, PATCH and DELETE need ``application/json``, so a
   cross-site HTML form or a ``text/plain`` fetch can never change state.  415.  An upload
   route (:meth:`ApiServer.add_upload_route`) takes ``application/octet-stream`` instead,
   which no form can send either and which a cross-site fetch cannot send without a CORS
   preflight that this server never approves.

Errors are JSON ``{"error": "..."}``: no stack trace, no token, no echo of the refused
header.  Every response carries the security headers of :data:`SECURITY_HEADERS`; pages
get the stricter :data:`PAGE_CSP` and stream routes :data:`STREAM_CSP`.
The access log goes to DEBUG with the route pattern, never the raw path or query.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hmac
import inspect
import ipaddress
import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from peer import __version__
from peer.errors import PeerError, Retry, TransportError, UsageError
from webui.auth import LoginCodes, Sessions, cookie_name, cookie_values

log = logging.getLogger(__name__)

#: Bytes of randomness in a generated token (256 bits), sent as unpadded base64url.
TOKEN_BYTES = 32
#: Largest request body accepted (the API takes small JSON documents only).
MAX_BODY = 1024 * 1024
#: Seconds between SSE keep-alive comments while no event is ready.
SSE_HEARTBEAT = 15.0
#: How long ``stop`` lets running handlers finish before cancelling them.
SHUTDOWN_TIMEOUT = 5.0
API_JSON = "api.json"
#: Headers on every response (W7); ``Cache-Control`` is added under /api/ only.
SECURITY_HEADERS: Mapping[str, str] = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: The CSP of pages (HTML, scripts, styles): own scripts and styles only, no inline code, no framing.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
#: The CSP of stream responses: a share's bytes never run in the UI's origin.
STREAM_CSP = "sandbox; default-src 'none'"
#: Where a one-time login code is opened (webui/pages.py serves it).
LOGIN_PATH = "/ui/login"
#: Added to a 403 for a page that a link on another site (or another local port) led to.
PAGE_SITE_HINT = "; open the web UI from the address bar: run `peersm ui` and paste the link it prints"
#: Added to a 401 where the session cookie would also do.
STREAM_LOGIN_HINT = "; in the web UI, the session expired: run `peersm ui` and open the link it prints"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_SHUTTING_DOWN = web.AppKey("peersm_api_shutting_down", asyncio.Event)

JsonObject = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse | Mapping[str, Any]]]
StatusProvider = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]


class ApiFileError(UsageError):
    """DIR/api.json is unreadable, malformed, or points somewhere that is not loopback."""

    kind = "api-file"


class PeerNotRunning(TransportError):
    """No peer answers for this data dir (no api.json, or nothing listens at its URL)."""

    kind = "peer-not-running"
    retry = Retry.LATER


class Access(enum.Enum):
    """What a route needs besides the Host, Origin and Sec-Fetch-Site checks."""

    TOKEN = "token"  # the API token in a header (every route unless said otherwise)
    PAGE = "page"  # nothing: a page or asset that holds no data
    STREAM = "stream"  # GET with the session cookie or the token: streams and event streams
    UPLOAD = "upload"  # POST with the token and an application/octet-stream body (a file)


@dataclass(frozen=True, slots=True)
class LoginResult:
    """The outcome of opening a login link: a new session's secret, or why not (``problem``)."""

    secret: str | None = field(default=None, repr=False)
    problem: str = ""


class RequestRefused(PeerError):
    """Raised by a route handler to answer ``{"error": message}`` with an HTTP status."""

    kind = "request-refused"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_token(randbytes: Callable[[int], bytes] = os.urandom) -> str:
    """A fresh 256-bit API token as unpadded base64url (43 characters)."""
    raw = randbytes(TOKEN_BYTES)
    if len(raw) != TOKEN_BYTES:
        raise UsageError(f"randbytes returned {len(raw)} bytes, expected {TOKEN_BYTES}")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _host_literal(address: str) -> str:
    """How an address appears in a Host header or URL: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def allowed_hosts(port: int, bound: str | None = None) -> frozenset[str]:
    """The Host header values accepted on ``port`` (lower case)."""
    names = set(_LOOPBACK_NAMES)
    if bound:
        names.add(_host_literal(bound).lower())
    return frozenset(f"{name}:{port}" for name in names)


def _check_loopback(host: str) -> str:
    """The address to bind for ``host``, or UsageError if it is not loopback."""
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise UsageError(f"the API binds to a loopback IP address such as 127.0.0.1, not {host!r}") from None
    if not ip.is_loopback:
        raise UsageError(f"the API only listens on loopback (127.0.0.0/8 or ::1), not {host}")
    return str(ip)


def _refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _route_name(request: web.BaseRequest) -> str:
    """The matched route pattern (never the raw path, which may carry a link or hash)."""
    try:
        match_info = request.match_info  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):  # a request the HTTP parser refused has none
        return "<unmatched>"
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "<unmatched>"


class _DemoteToDebug(logging.Filter):
    """For aiohttp's HTTP-layer errors (malformed requests): DEBUG, no traceback.

    The parser's messages quote the offending bytes, which may hold a token.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.msg} ({record.exc_info[0].__name__})"
        record.exc_info = record.exc_text = None
        return True


_http_log = logging.getLogger(__name__ + ".http")
_http_log.addFilter(_DemoteToDebug())


class _DebugAccessLogger(AbstractAccessLogger):
    """Access log at DEBUG: method, route pattern, status.  No path, query or headers."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "api %s %s -> %d (%.1f ms)", request.method, _route_name(request), response.status, time * 1e3
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


class ApiServer:
    """The peer's local HTTP API.  Build it, add routes, ``await start()``, ``await stop()``."""

    def __init__(
        self,
        token: str | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if token is None:
            token = new_token(randbytes)
        elif not _TOKEN_RE.fullmatch(token):
            raise UsageError("an API token is 16-512 characters of base64url/b64token alphabet")
        self._token = token
        self._token_bytes = token.encode("ascii")
        self._status_provider: StatusProvider = lambda: {}
        self._runner: web.AppRunner | None = None
        self._host: str | None = None
        self._port: int | None = None
        self._stopped = False
        self._clock = clock
        self.login_codes = LoginCodes(randbytes)
        self.sessions = Sessions(randbytes)
        self._access: dict[web.AbstractRoute, Access] = {}
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        self.app[_SHUTTING_DOWN] = asyncio.Event()
        self.app.on_response_prepare.append(self._add_security_headers)
        self.app.on_shutdown.append(_signal_shutdown)
        self.add_route("GET", "/api/status", self._status)
        self.add_route("POST", "/api/ui/code", self._new_code)

    def __repr__(self) -> str:
        return f"ApiServer(url={self._url_or_none()!r})"

    @property
    def token(self) -> str:
        return self._token

    @property
    def port(self) -> int:
        if self._port is None:
            raise UsageError("the API server is not started")
        return self._port

    @property
    def url(self) -> str:
        url = self._url_or_none()
        if url is None:
            raise UsageError("the API server is not started")
        return url

    def _url_or_none(self) -> str | None:
        if self._host is None or self._port is None:
            return None
        return f"http://{_host_literal(self._host)}:{self._port}"

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``handler`` for ``method path``; a returned mapping is sent as JSON.

        A GET route whose path ends in ``/events`` is an event stream: the session cookie
        opens it too.  Every other API route needs the token.
        """
        if not path.startswith("/api/"):
            raise UsageError(f"API routes live under /api/, not {path!r}")
        events = method.upper() == "GET" and path.endswith("/events")
        self._add(method, path, handler, Access.STREAM if events else Access.TOKEN)

    def add_stream_route(self, path: str, handler: Handler) -> None:
        """Serve GET ``path`` (under /stream/) to the session cookie or the token; CSP :data:`STREAM_CSP`."""
        if not path.startswith("/stream/"):
            raise UsageError(f"stream routes live under /stream/, not {path!r}")
        self._add("GET", path, handler, Access.STREAM)

    def add_upload_route(self, path: str, handler: Handler) -> None:
        """Serve POST ``path`` (under /api/) to the token, with an ``application/octet-stream`` body.

        The handler reads ``request.content`` as it arrives (the body is not size-capped like JSON's).
        """
        if not path.startswith("/api/"):
            raise UsageError(f"API routes live under /api/, not {path!r}")
        self._add("POST", path, handler, Access.UPLOAD)

    def add_page(self, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        """Serve GET ``path`` (under /ui/ or /static/) with no credential; CSP :data:`PAGE_CSP`.

        A page holds no data: its script reads the token from ``sessionStorage`` and calls the API.
        """
        if not path.startswith(("/ui/", "/static/")) and path != "/ui":
            raise UsageError(f"pages live under /ui/ or /static/, not {path!r}")
        self._add("GET", path, handler, Access.PAGE)

    def _add(self, method: str, path: str, handler: Handler, access: Access) -> None:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            result = await handler(request)
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response(dict(result))

        route = self.app.router.add_route(method, path, wrapped)
        self._access[route] = access

    # -- web UI login --------------------------------------------------------------------------

    def login_url(self) -> str:
        """A fresh one-time login link for this server (give it to the user, never to a log)."""
        code = self.login_codes.issue(self._clock())
        return f"{self.url}{LOGIN_PATH}?code={code}"

    def redeem_login(self, request: web.Request) -> LoginResult:
        """Trade the request's one-time code for a new session, if the request may.

        Only a top-level navigation the user made (``Sec-Fetch-Site: none``: typed, pasted,
        or opened by ``peersm ui``) may use a code; any other request leaves the code usable.
        """
        sites = request.headers.getall("Sec-Fetch-Site", [])
        if len(sites) != 1 or sites[0].strip().lower() != "none":
            return LoginResult(
                problem="Open the login link by pasting it into the address bar (or with `peersm ui --open`)"
            )
        codes = request.query.getall("code", [])
        if len(codes) != 1 or not self.login_codes.redeem(codes[0], self._clock()):
            return LoginResult(problem="This login link was used already, has expired, or is wrong")
        return LoginResult(secret=self.sessions.open(self._clock()))

    def set_session_cookie(self, response: web.StreamResponse, secret: str) -> None:
        """``peersm_<port>=SECRET; HttpOnly; SameSite=Strict; Path=/`` (a browser-session cookie)."""
        response.set_cookie(cookie_name(self.port), secret, path="/", httponly=True, samesite="Strict")

    async def _new_code(self, request: web.Request) -> JsonObject:
        return {"url": self.login_url(), "expires_in": int(self.login_codes.ttl)}

    def set_status_provider(self, provider: StatusProvider) -> None:
        """What ``GET /api/status`` reports (plus ``version``); may be sync or async."""
        self._status_provider = provider

    async def _status(self, request: web.Request) -> JsonObject:
        status = self._status_provider()
        if inspect.isawaitable(status):
            status = await status
        return {"version": __version__, **status}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (loopback only; port 0 picks one) and return the base URL."""
        if self._runner is not None or self._stopped:
            raise UsageError("an API server starts once (build a new one after stop)")
        address = _check_loopback(host)
        if not 0 <= port <= 65535:
            raise UsageError(f"port {port} is out of range")
        runner = web.AppRunner(
            self.app,
            access_log_class=_DebugAccessLogger,
            logger=_http_log,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handle_signals=False,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, address, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(f"cannot listen on {_host_literal(address)}:{port}: {exc.strerror}") from None
        self._runner = runner
        self._host = address
        self._port = int(runner.addresses[0][1])
        log.debug("API listening on port %d", self._port)
        return self.url

    async def stop(self) -> None:
        """Stop listening; open event streams end with a "shutting down" error event."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stopped = True
            await runner.cleanup()

    # -- the guard ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[..., Awaitable[Any]]
    ) -> web.StreamResponse:
        refused = self._check(request)
        if refused is not None:
            return refused
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            return _http_exception_as_json(exc)
        except RequestRefused as exc:
            return _refuse(exc.status, exc.message)
        except UsageError as exc:
            return _refuse(400, str(exc) or exc.kind)
        except PeerError as exc:
            status = 503 if exc.retry is not Retry.NEVER else 500
            return _refuse(status, f"{exc.kind}: {exc}" if str(exc) else exc.kind)
        except Exception:
            log.error("API handler for %s %s failed", request.method, _route_name(request), exc_info=True)
            return _refuse(500, "internal error (see the peer's log)")
        return response

    def _check(self, request: web.Request) -> web.Response | None:
        """The refusal for a request that fails Host, Origin, token or Content-Type, else None."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname:
            return _refuse(403, "connection closed")
        hosts = allowed_hosts(int(sockname[1]), str(sockname[0]))
        values = request.headers.getall("Host", [])
        if len(values) != 1 or values[0].lower() not in hosts:
            return _refuse(
                403,
                "forbidden Host header: the API answers only to 127.0.0.1, localhost or [::1] with its port",
            )
        origins = request.headers.getall("Origin", [])
        if origins and (len(origins) != 1 or origins[0].lower() not in {f"http://{h}" for h in hosts}):
            return _refuse(403, "forbidden Origin: cross-site requests are refused")
        access = self._access_of(request)
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
            hint = PAGE_SITE_HINT if access is Access.PAGE else ""
            return _refuse(403, "forbidden: cross-site requests are refused" + hint)
        if access is Access.STREAM and request.method == "GET" and self._session_ok(request, sockname[1]):
            return None
        if access is not Access.PAGE and not self._token_ok(request):
            return _refuse(
                401,
                "missing or wrong API token: send 'Authorization: Bearer TOKEN' (the token is in DIR/api.json)"
                + (STREAM_LOGIN_HINT if access is Access.STREAM else ""),
            )
        wanted = "application/octet-stream" if access is Access.UPLOAD else "application/json"
        if request.method in STATE_CHANGING and _media_type(request) != wanted:
            return _refuse(415, f"{request.method} requests need Content-Type: {wanted}")
        return None

    def _access_of(self, request: web.Request) -> Access:
        route = getattr(request.match_info, "route", None)
        return self._access.get(route, Access.TOKEN) if route is not None else Access.TOKEN

    def _session_ok(self, request: web.Request, port: int) -> bool:
        now = self._clock()
        values = cookie_values(request.headers.getall("Cookie", []), cookie_name(int(port)))
        return any(self.sessions.valid(value, now) for value in values)

    async def _add_security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """The headers of :data:`SECURITY_HEADERS`, with the CSP of the route's kind.

        A handler may set a stricter CSP of its own on a non-page route (a sandbox with
        ``default-src 'none'``, for bytes that must never run in the UI's origin); any other
        CSP it sets is replaced.
        """
        own = response.headers.get("Content-Security-Policy", "")
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        access = self._access_of(request)
        if access is Access.PAGE:
            response.headers["Content-Security-Policy"] = PAGE_CSP
        elif _is_sandbox(own):
            response.headers["Content-Security-Policy"] = own
        elif access is Access.STREAM and not request.path.startswith("/api/"):
            response.headers["Content-Security-Policy"] = STREAM_CSP
        if access in (Access.PAGE, Access.STREAM):
            response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
            response.headers["Cross-Origin-Resource-Policy"] = "same-origin"

    def _token_ok(self, request: web.Request) -> bool:
        presented: list[str] = []
        for auth in request.headers.getall("Authorization", []):
            scheme, _, credentials = auth.strip().partition(" ")
            presented.append(credentials.strip() if scheme.lower() == "bearer" else "")
        presented.extend(request.headers.getall("X-Peersm-Token", []))
        if not presented:
            return False
        ok = True
        for value in presented:  # every presented token must match; no short-circuit on the first
            ok &= hmac.compare_digest(value.encode("utf-8", "surrogateescape"), self._token_bytes)
        return ok


def _is_sandbox(csp: str) -> bool:
    """Whether ``csp`` starts with a bare ``sandbox`` (no allow-*) and has ``default-src 'none'``."""
    directives = [" ".join(d.split()).lower() for d in csp.split(";")]
    return bool(directives) and directives[0] == "sandbox" and "default-src 'none'" in directives


def _media_type(request: web.Request) -> str:
    """The Content-Type's media type, lower case; "" when absent or empty (aiohttp would say octet-stream)."""
    values = request.headers.getall("Content-Type", [])
    return values[0].partition(";")[0].strip().lower() if len(values) == 1 else ""


def _http_exception_as_json(exc: web.HTTPException) -> web.Response:
    default = f"{exc.status}: {exc.reason}"
    message = exc.text if exc.text and exc.text != default else exc.reason.lower()
    response = _refuse(exc.status, message or "error")
    for name, value in exc.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


async def _signal_shutdown(app: web.Application) -> None:
    app[_SHUTTING_DOWN].set()


async def json_body(request: web.Request) -> JsonObject:
    """The request's JSON object body, or a 400 with a clear message."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestRefused(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestRefused(400, "the request body must be a JSON object")
    return body


# -- server-sent events --------------------------------------------------------------------------


def _sse_frame(data: Mapping[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def sse_response(
    request: web.Request, events: AsyncIterator[Mapping[str, Any]], *, heartbeat: float = SSE_HEARTBEAT
) -> web.StreamResponse:
    """Stream ``events`` as server-sent events (one JSON ``data:`` line each).

    The stream ends with ``event: end`` when ``events`` is exhausted, or with
    ``event: error`` (``{"error": ...}``) when it raises or the peer shuts down, so a
    client can tell a finished stream from a cut one.  A ``: keepalive`` comment goes
    out after ``heartbeat`` idle seconds.  ``events`` is closed when the client leaves.
    """
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    shutting_down = request.app.get(_SHUTTING_DOWN)
    stop_task = asyncio.ensure_future(shutting_down.wait()) if shutting_down else None
    iterator = aiter(events)
    try:
        last = False
        while not last:
            frame, last = await _next_frame(request, response, iterator, stop_task, heartbeat)
            await response.write(frame)
        await response.write_eof()
    except ConnectionError:
        log.debug("API event stream for %s closed by the client", _route_name(request))
    finally:
        await cancel_and_wait(stop_task)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return response


async def _next_frame(
    request: web.Request,
    response: web.StreamResponse,
    iterator: AsyncIterator[Mapping[str, Any]],
    stop_task: asyncio.Future[Any] | None,
    heartbeat: float,
) -> tuple[bytes, bool]:
    """The next frame to send and whether it is the last, writing keep-alives meanwhile."""
    pending = asyncio.ensure_future(anext(iterator))
    try:
        waiting: set[asyncio.Future[Any]] = {pending} if stop_task is None else {pending, stop_task}
        while True:
            await asyncio.wait(waiting, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED)
            if pending.done():
                break
            if stop_task is not None and stop_task.done():
                return _sse_frame({"error": "the peer is shutting down"}, "error"), True
            await response.write(b": keepalive\n\n")
        try:
            return _sse_frame(pending.result()), False
        except StopAsyncIteration:
            return _sse_frame({}, "end"), True
        except PeerError as exc:
            return _sse_frame({"error": str(exc) or exc.kind}, "error"), True
        except Exception:
            log.error("API event stream for %s failed", _route_name(request), exc_info=True)
            return _sse_frame({"error": "internal error (see the peer's log)"}, "error"), True
    finally:
        await cancel_and_wait(pending)


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` and wait for it, without swallowing a cancellation of our own task."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        log.debug("an API event source failed while being cancelled", exc_info=True)


# -- DIR/api.json --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiInfo:
    """Where a running peer's API listens, read from DIR/api.json."""

    url: str
    token: str = field(repr=False)
    pid: int


def write_api_json(data_dir: Path, url: str, token: str) -> Path:
    """Write DIR/api.json atomically, mode 0600 from creation (temp file, fsync, rename)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = data_dir / API_JSON
    tmp = data_dir / f".{API_JSON}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    payload = json.dumps({"url": url, "token": token, "pid": os.getpid()}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed bits; never adds any
        os.write(fd, payload)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def read_api_json(data_dir: Path) -> ApiInfo:
    """The running peer's API URL and token; PeerNotRunning or ApiFileError if unusable."""
    path = Path(data_dir) / API_JSON
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PeerNotRunning(
            f"no peer is running with data dir {data_dir}: start one with `peersm up --data {data_dir}`"
        ) from None
    except OSError as exc:
        raise ApiFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
        url, token, pid = doc["url"], doc["token"], doc["pid"]
    except (ValueError, TypeError, KeyError):
        raise ApiFileError(
            f"{path} is not a valid api.json (url, token, pid): remove it and restart the peer"
        ) from None
    if not (isinstance(url, str) and isinstance(token, str) and isinstance(pid, int)):
        raise ApiFileError(f"{path} has fields of the wrong type: remove it and restart the peer")
    _check_api_url(url, path)
    return ApiInfo(url=url.rstrip("/"), token=token, pid=pid)


def _check_api_url(url: str, path: Path) -> None:
    """Refuse to send the token anywhere but plain HTTP on loopback."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if host is None or port is None or parts.scheme != "http" or parts.username or parts.password:
        raise ApiFileError(f"{path} holds an unusable API URL: remove it and restart the peer")
    try:
        _check_loopback(host)
    except UsageError:
        raise ApiFileError(
            f"{path} points the API at a non-loopback address: refusing to send the token"
        ) from None


def remove_api_json(data_dir: Path, pid: int | None = None) -> None:
    """Remove DIR/api.json on clean shutdown, if it is still ours (its pid is ``pid``, default ours)."""
    path = Path(data_dir) / API_JSON
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return
    if isinstance(doc, dict) and doc.get("pid") == (os.getpid() if pid is None else pid):
        path.unlink(missing_ok=True)
