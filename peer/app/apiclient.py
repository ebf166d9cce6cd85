"""The ``peersm`` command's client for a running peer's local API (DESIGN §10; docs/api.md).

Synchronous (``urllib.request``), so the command needs no event loop.  It reads the URL
and token from DIR/api.json, sends the token in ``Authorization: Bearer``, and turns
every failure into one of three errors the command can print as is:

- :class:`ApiError` ``(status, message)``: the peer answered with an HTTP error; the
  message is the server's ``{"error": ...}`` text (``status`` is 0 when there was no
  HTTP answer: a timeout, an unreadable answer, an event stream cut short).
- :class:`webui.server.PeerNotRunning`: no api.json, or nothing listens at its URL.
- :class:`webui.server.ApiFileError`: api.json is unreadable or points off loopback.

Proxies from the environment (``http_proxy``) and redirects are never followed, so the
token only ever goes to the loopback URL in api.json.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from peer.errors import PeerError
from webui.server import PeerNotRunning, read_api_json

#: Seconds to wait for a JSON answer.
DEFAULT_TIMEOUT = 30.0
#: Seconds an event stream may stay silent (the server sends a keep-alive every 15 s).
STREAM_IDLE_TIMEOUT = 60.0


class ApiError(PeerError):
    """The peer's API refused or failed a call; ``message`` is the server's own."""

    kind = "api"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status
        self.message = message


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx then surfaces as an HTTPError


class ApiClient:
    """Calls to one peer's API.  ``ApiClient.from_data_dir(DIR)`` is the usual way in."""

    def __init__(self, url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._data_dir: Path | None = None

    def __repr__(self) -> str:
        return f"ApiClient(url={self.url!r})"

    @classmethod
    def from_data_dir(cls, data_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> ApiClient:
        info = read_api_json(Path(data_dir))
        client = cls(info.url, info.token, timeout=timeout)
        client._data_dir = Path(data_dir)
        return client

    def get(self, path: str) -> dict[str, Any]:
        """``GET path`` and its JSON object answer."""
        return self._call("GET", path, None)

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST path`` with a JSON object body, and its JSON object answer."""
        return self._call("POST", path, dict(body))

    def stream_events(self, path: str) -> Iterator[dict[str, Any]]:
        """The events of a server-sent event stream, until the server ends it.

        The request is made at once (so a refusal raises here); iterating raises :class:`ApiError` when the server reports an error in the stream or the
        stream stops without its ``end`` event.
        """
        response = self._open(
            self._request("GET", path, None, accept="text/event-stream"), STREAM_IDLE_TIMEOUT
        )
        return self._events(response)

    def _events(self, response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
        with response:
            event_type, data = "message", []
            while True:
                try:
                    raw = response.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise ApiError(0, f"the event stream from {self.url} was cut: {exc}") from None
                if not raw:
                    raise ApiError(0, f"the event stream from {self.url} ended before its end event")
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        event_type = value
                    elif name == "data":
                        data.append(value)
                    continue  # comments (":") and unknown fields are ignored, as the SSE spec says
                if not data and event_type == "message":
                    continue
                payload = _decode_event("\n".join(data))
                if event_type == "end":
                    return
                if event_type == "error":
                    raise ApiError(0, str(payload.get("error", "the peer reported an error in the stream")))
                yield payload
                event_type, data = "message", []

    # -- plumbing --------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, accept: str
    ) -> urllib.request.Request:
        if not path.startswith("/"):
            path = "/" + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_unredirected_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", accept)
        if method != "GET":
            request.add_header("Content-Type", "application/json")
        return request

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        with self._open(
            self._request(method, path, body, accept="application/json"), self.timeout
        ) as response:
            try:
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise ApiError(0, f"the answer from {self.url} was cut: {exc}") from None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ApiError(response.status, f"the peer at {self.url} did not answer with JSON") from None
        if not isinstance(doc, dict):
            raise ApiError(response.status, f"the peer at {self.url} did not answer with a JSON object")
        return doc

    def _open(self, request: urllib.request.Request, timeout: float) -> http.client.HTTPResponse:
        try:
            response: http.client.HTTPResponse = self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise ApiError(exc.code, _error_message(exc)) from None
        except urllib.error.URLError as exc:
            self._unreachable(exc.reason)
        except (OSError, http.client.HTTPException) as exc:
            self._unreachable(exc)
        return response

    def _unreachable(self, reason: object) -> NoReturn:
        if isinstance(reason, ConnectionRefusedError):
            where = f" (is {self._data_dir / 'api.json'} stale?)" if self._data_dir else ""
            start = f": start one with `peersm up --data {self._data_dir}`" if self._data_dir else ""
            raise PeerNotRunning(f"no peer is running at {self.url}{where}{start}") from None
        if isinstance(reason, TimeoutError):
            raise ApiError(0, f"the peer at {self.url} did not answer in time") from None
        raise ApiError(0, f"cannot reach the peer at {self.url}: {reason}") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(exc.read())
    except (OSError, ValueError, http.client.HTTPException):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return str(exc.reason or f"HTTP error {exc.code}")


def _decode_event(data: str) -> dict[str, Any]:
    try:
        doc = json.loads(data) if data else {}
    except ValueError:
        raise ApiError(0, "the peer sent an event that is not JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(0, "the peer sent an event that is not a JSON object")
    return doc
