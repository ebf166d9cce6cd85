"""peer.app.apiclient.ApiClient against a real ApiServer on 127.0.0.1 (the CLI's side of DESIGN §10)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from peer import __version__
from peer.app.apiclient import ApiClient, ApiError
from tests.api.conftest import TOKEN, Api
from webui.server import ApiFileError, PeerNotRunning, write_api_json


def client_for(api: Api, tmp_path: Path, token: str = TOKEN) -> ApiClient:
    write_api_json(tmp_path, api.server.url, token)
    return ApiClient.from_data_dir(tmp_path)


async def test_status_round_trip(api: Api, tmp_path: Path) -> None:
    api.server.set_status_provider(lambda: {"links": 2})
    client = client_for(api, tmp_path)
    assert await asyncio.to_thread(client.get, "/api/status") == {"version": __version__, "links": 2}
    assert await asyncio.to_thread(client.get, "api/status") == {"version": __version__, "links": 2}
    assert TOKEN not in repr(client)


async def test_post_round_trip_changes_state(api: Api, tmp_path: Path) -> None:
    client = client_for(api, tmp_path)
    assert await asyncio.to_thread(client.post, "/api/test/echo", {"link": "x", "n": [1]}) == {
        "echo": {"link": "x", "n": [1]}
    }
    assert await asyncio.to_thread(client.post, "/api/test/counter", {}) == {"count": 1}
    assert api.counter.count == 1


async def test_api_error_carries_the_servers_message(api: Api, tmp_path: Path) -> None:
    wrong = client_for(api, tmp_path, token="W" * 43)
    with pytest.raises(ApiError) as err:
        await asyncio.to_thread(wrong.get, "/api/status")
    assert err.value.status == 401 and "missing or wrong API token" in err.value.message
    assert "W" * 43 not in str(err.value)
    client = client_for(api, tmp_path)
    with pytest.raises(ApiError) as err:
        await asyncio.to_thread(client.get, "/api/missing")
    assert (err.value.status, err.value.message) == (404, "not found")
    with pytest.raises(ApiError) as err:
        await asyncio.to_thread(client.get, "/api/test/boom")
    assert err.value.status == 500 and err.value.message == "internal error (see the peer's log)"
    with pytest.raises(ApiError) as err:
        await asyncio.to_thread(client.post, "/api/status", {})
    assert err.value.status == 405


async def test_redirects_are_not_followed(api: Api, tmp_path: Path) -> None:
    client = client_for(api, tmp_path)
    with pytest.raises(ApiError) as err:
        await asyncio.to_thread(client.get, "/api/test/moved")
    assert err.value.status == 302


async def test_proxy_settings_are_ignored(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: a proxy there would fail the call
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    client = client_for(api, tmp_path)
    assert (await asyncio.to_thread(client.get, "/api/status"))["version"] == __version__


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_peer_not_running_on_a_closed_port(tmp_path: Path) -> None:
    write_api_json(tmp_path, f"http://127.0.0.1:{closed_port()}", TOKEN)
    client = ApiClient.from_data_dir(tmp_path)
    with pytest.raises(PeerNotRunning) as err:
        client.get("/api/status")
    assert "no peer is running" in str(err.value) and f"peersm up --data {tmp_path}" in str(err.value)
    with pytest.raises(PeerNotRunning):
        client.post("/api/test/counter", {})
    with pytest.raises(PeerNotRunning):
        client.stream_events("/api/test/events")


def test_no_api_json_is_peer_not_running_and_bad_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PeerNotRunning, match="peersm up"):
        ApiClient.from_data_dir(tmp_path)
    write_api_json(tmp_path, "http://[2001:db8::1]:80", TOKEN)
    with pytest.raises(ApiFileError):
        ApiClient.from_data_dir(tmp_path)


async def test_stream_events(api: Api, tmp_path: Path) -> None:
    client = client_for(api, tmp_path)

    def collect(path: str) -> list[dict[str, object]]:
        return list(client.stream_events(path))

    assert await asyncio.to_thread(collect, "/api/test/events?n=3") == [
        {"i": i, "text": "line\nbreak"} for i in range(3)
    ]
    assert await asyncio.to_thread(collect, "/api/test/events?n=0") == []
    with pytest.raises(ApiError) as err:
        await asyncio.to_thread(collect, "/api/test/events?n=2&fail=peer")
    assert err.value.message == "download interrupted"


async def test_stream_refusal_raises_at_the_call(api: Api, tmp_path: Path) -> None:
    wrong = client_for(api, tmp_path, token="W" * 43)
    with pytest.raises(ApiError) as err:
        await asyncio.to_thread(wrong.stream_events, "/api/test/events")
    assert err.value.status == 401


async def test_stream_cut_before_its_end_is_an_error(tmp_path: Path) -> None:
    """A server that stops mid-stream (a crash) is an error, never a silent success."""
    seen: list[dict[str, object]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        writer.write(b': hello\n\ndata: {"i": 0}\n\nevent: progress\ndata: {"i": 1}\n\n')
        await writer.drain()
        writer.close()

    fake = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = fake.sockets[0].getsockname()[1]
    try:
        client = ApiClient(f"http://127.0.0.1:{port}", TOKEN)

        def consume() -> None:
            for event in client.stream_events("/api/x"):
                seen.append(event)

        with pytest.raises(ApiError, match="ended before its end event"):
            await asyncio.to_thread(consume)
    finally:
        fake.close()
        await fake.wait_closed()
    assert seen == [{"i": 0}, {"i": 1}]


async def test_ipv6_loopback(tmp_path: Path) -> None:
    from webui.server import ApiServer

    server = ApiServer()
    await server.start("::1", 0)
    try:
        write_api_json(tmp_path, server.url, server.token)
        client = ApiClient.from_data_dir(tmp_path)
        assert (await asyncio.to_thread(client.get, "/api/status"))["version"] == __version__
    finally:
        await server.stop()
