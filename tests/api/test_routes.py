"""The runtime's REST routes (webui.routes) on a real ApiServer, in-process.

The peer is a stand-in with the interface the routes use (``share``, ``get``, ``store``,
``downloads``): a real chunk store for the shares, the real ``Downloads`` bookkeeping with
a fake fetch (tests/roles/fakedownload.py) for the downloads.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from peer.roles.downloads import Downloads, DownloadTask
from storage.chunkstore import ChunkStore
from storage.sharelink import ShareLink
from tests.api.conftest import TOKEN, Api, Counter
from tests.api.rawhttp import RawResponse
from tests.api.test_api_sse import parse_sse
from tests.roles.fakedownload import Factories, FakeDownload, link
from webui.routes import add_routes
from webui.server import ApiServer

#: Safety net against a hang (not a speed assertion).
WAIT = 20.0


@dataclass
class FakePeer:
    """What webui.routes needs of ``peer.node.Peer``, recording the shares it was asked for."""

    store: ChunkStore
    downloads: Downloads
    shared: list[tuple[Path, bool, bool]] = field(default_factory=list)

    async def share(self, path: Path, *, encrypt: bool = False, seed: bool = True) -> str:
        self.shared.append((path, encrypt, seed))
        result = await self.store.import_file(path, encrypt=encrypt, randbytes=os.urandom)
        if not seed:
            await self.store.set_seeding(result.hash_name, False)
        return result.link.format()

    def get(self, link: ShareLink, output: Path | None = None) -> DownloadTask:
        return self.downloads.start(link, output)


@dataclass
class Routes:
    api: Api
    peer: FakePeer
    factories: Factories

    async def post(self, path: str, doc: object, **headers: str) -> RawResponse:
        hs = self.api.good_headers(Content_Type="application/json", **headers)
        return await self.api.request("POST", path, hs, json.dumps(doc).encode())

    async def get(self, path: str) -> RawResponse:
        return await self.api.get(path)

    def task(self, n: int) -> DownloadTask:
        t = self.peer.downloads.get(link(n).hash_name)
        assert t is not None
        return t

    def fake(self, n: int) -> FakeDownload:
        d = self.task(n).download
        assert isinstance(d, FakeDownload)
        return d


@pytest.fixture
async def routes(store: ChunkStore, tmp_path: Path) -> AsyncIterator[Routes]:
    factories = Factories()
    data = tmp_path / "data"
    downloads = Downloads(data, factories.make, factories.export, factories.seed)  # type: ignore[arg-type]
    peer = FakePeer(store, downloads)
    server = ApiServer(token=TOKEN)
    add_routes(server, peer)  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    try:
        yield Routes(Api(server, Counter()), peer, factories)
    finally:
        await server.stop()
        await downloads.close()


def a_file(tmp_path: Path, name: str = "notes.txt", size: int = 70_000) -> Path:
    p = tmp_path / name
    p.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    return p


def error_of(r: RawResponse) -> str:
    doc = r.json()
    assert set(doc) == {"error"}
    return str(doc["error"])


# ---- shares ------------------------------------------------------------------------------------


async def test_share_a_file_then_list_it(routes: Routes, tmp_path: Path) -> None:
    path = a_file(tmp_path)
    r = await routes.post("/api/shares", {"path": str(path)})
    assert r.status == 200
    doc = r.json()
    assert set(doc) == {"hash_name", "link"}
    parsed = ShareLink.parse(doc["link"])
    assert parsed.hash_name.hex() == doc["hash_name"] and parsed.key is None
    assert routes.peer.shared == [(path, False, True)]  # defaults: plain, seeded

    r = await routes.get("/api/shares")
    assert r.status == 200
    (share,) = r.json()["shares"]
    assert share == {
        "hash_name": doc["hash_name"],
        "name": "notes.txt",
        "size": 70_000,
        "have": share["total"],
        "total": share["total"],
        "state": "complete",
        "seeding": True,
    }
    assert share["total"] >= 1


async def test_share_options_reach_the_peer(routes: Routes, tmp_path: Path) -> None:
    path = a_file(tmp_path, "secret.bin", 1000)
    r = await routes.post("/api/shares", {"path": str(path), "encrypt": True, "seed": False})
    assert r.status == 200
    assert ShareLink.parse(r.json()["link"]).key is not None  # an encrypted share's link has its key
    assert routes.peer.shared == [(path, True, False)]
    (share,) = (await routes.get("/api/shares")).json()["shares"]
    assert share["seeding"] is False and share["name"] == "secret.bin"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"path": ""}, 400),
        ({"path": 5}, 400),
        ({"path": "relative/notes.txt"}, 400),
        ({"path": "/nonexistent/peersm/notes.txt"}, 404),
        ([], 400),
    ],
    ids=["no-path", "empty", "not-a-string", "relative", "missing", "not-an-object"],
)
async def test_share_refusals(routes: Routes, body: object, status: int) -> None:
    r = await routes.post("/api/shares", body)
    assert r.status == status
    assert error_of(r)
    assert routes.peer.shared == []


async def test_sharing_a_directory_or_garbage_is_refused(routes: Routes, tmp_path: Path) -> None:
    r = await routes.post("/api/shares", {"path": str(tmp_path)})
    assert r.status == 404 and error_of(r) == "no such file"
    headers = routes.api.good_headers(Content_Type="application/json")
    r = await routes.api.request("POST", "/api/shares", headers, b"{not json")
    assert r.status == 400 and "JSON" in error_of(r)
    assert routes.peer.shared == []


async def test_changing_state_needs_the_token_json_and_post(routes: Routes, tmp_path: Path) -> None:
    path = a_file(tmp_path)
    body = json.dumps({"path": str(path)}).encode()
    no_token = [("Host", routes.api.host()), ("Content-Type", "application/json")]
    r = await routes.api.request("POST", "/api/shares", no_token, body)
    assert r.status == 401
    wrong = [*no_token, ("Authorization", "Bearer " + "W" * 43)]
    assert (await routes.api.request("POST", "/api/shares", wrong, body)).status == 401
    form = routes.api.good_headers(Content_Type="application/x-www-form-urlencoded")
    assert (await routes.api.request("POST", "/api/shares", form, body)).status == 415
    r = await routes.api.request("GET", "/api/shares", routes.api.good_headers(), body)
    assert r.status == 200 and r.json() == {"shares": []}  # a GET lists, never shares
    put = routes.api.good_headers(Content_Type="application/json")
    assert (await routes.api.request("PUT", "/api/shares", put, body)).status == 405
    assert routes.peer.shared == []

    download = json.dumps({"link": link(1).format()}).encode()
    assert (await routes.api.request("POST", "/api/downloads", no_token, download)).status == 401
    assert (
        await routes.api.request("GET", "/api/downloads", routes.api.good_headers(), download)
    ).json() == {"downloads": []}
    assert routes.factories.made == []


# ---- downloads ---------------------------------------------------------------------------------


async def test_start_a_download_then_attach_to_it(routes: Routes, tmp_path: Path) -> None:
    text = link(1, key=True, name="film.mkv").format()
    r = await routes.post("/api/downloads", {"link": text})
    assert r.status == 200
    first = r.json()
    assert first["id"] == link(1).hash_name.hex()
    assert first["state"] in ("starting", "downloading") and first["error"] is None
    r = await routes.post("/api/downloads", {"link": f"  {text}\n", "output": str(tmp_path / "film.mkv")})
    assert r.status == 200 and r.json()["id"] == first["id"]
    assert len(routes.factories.made) == 1  # attached, not started twice
    assert routes.factories.made[0].link == link(1, key=True, name="film.mkv")  # the key reached the fetch
    assert routes.task(1).output == tmp_path / "film.mkv"

    await routes.post("/api/downloads", {"link": link(2).format()})
    listed = (await routes.get("/api/downloads")).json()["downloads"]
    assert [d["id"] for d in listed] == [link(1).hash_name.hex(), link(2).hash_name.hex()]
    routes.fake(2).step(2, 5)
    one = (await routes.get(f"/api/downloads/{link(2).hash_name.hex()}")).json()
    assert one == routes.task(2).summary() and one["have"] == 2 and one["total"] == 5


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "give a link"),
        ({"link": 5}, "give a link"),
        ({"link": "http://example.invalid/file"}, "bad link"),
        ({"link": "peersm:v1:zz"}, "bad link"),
        ({"link": "peersm:v9:" + "00" * 32}, "bad link"),
        ({"link": link(1).format(), "output": "relative/out"}, "absolute"),
        ({"link": link(1).format(), "output": 7}, "absolute"),
    ],
    ids=["no-link", "not-a-string", "not-peersm", "bad-hash", "unknown-version", "relative-out", "bad-out"],
)
async def test_download_refusals(routes: Routes, body: dict[str, Any], needle: str) -> None:
    r = await routes.post("/api/downloads", body)
    assert r.status == 400
    assert needle in error_of(r)
    assert routes.factories.made == [] and routes.peer.downloads.values() == []


@pytest.mark.parametrize(
    "ident",
    ["00" * 32, "zz", "abc", link(1).hash_name.hex()[:-2]],
    ids=["unknown", "not-hex", "odd", "short"],
)
async def test_unknown_downloads_are_404(routes: Routes, ident: str) -> None:
    await routes.post("/api/downloads", {"link": link(1).format()})
    for path in (f"/api/downloads/{ident}", f"/api/downloads/{ident}/events"):
        r = await routes.get(path)
        assert r.status == 404 and error_of(r) == "no such download"


# ---- progress events ---------------------------------------------------------------------------


async def wait_listening(d: FakeDownload) -> None:
    """Wait until the event stream has subscribed to the download."""

    async def poll() -> None:
        while not d.listeners:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT)


async def follow(routes: Routes, n: int) -> asyncio.Task[RawResponse]:
    task = asyncio.create_task(routes.get(f"/api/downloads/{link(n).hash_name.hex()}/events"))
    await wait_listening(routes.fake(n))
    return task


async def test_events_follow_a_download_until_it_completes(routes: Routes) -> None:
    await routes.post("/api/downloads", {"link": link(1).format()})
    stream = await follow(routes, 1)
    routes.fake(1).step(1, 2)
    routes.fake(1).finish()
    r = await asyncio.wait_for(stream, WAIT)
    assert r.status == 200 and r.header("Content-Type").startswith("text/event-stream")
    events = parse_sse(r.body.decode())
    assert events[-1] == ("end", {})
    messages = [data for kind, data in events[:-1]]
    assert all(kind == "message" for kind, _ in events[:-1])
    assert messages[-1]["state"] == "complete" and messages[-1]["have"] == 2
    assert all(m["id"] == link(1).hash_name.hex() for m in messages)
    assert routes.fake(1).listeners == []  # the stream unsubscribed


async def test_events_end_when_a_download_fails(routes: Routes) -> None:
    from peer.errors import PathError

    await routes.post("/api/downloads", {"link": link(1).format()})
    stream = await follow(routes, 1)
    routes.fake(1).fail(PathError("no ORDB holds this share"))
    events = parse_sse((await asyncio.wait_for(stream, WAIT)).body.decode())
    assert events[-1] == ("end", {})
    last = events[-2][1]
    assert last["state"] == "failed" and last["error"] == "no ORDB holds this share"
    assert routes.fake(1).listeners == []


async def test_events_of_a_finished_download_end_at_once(routes: Routes) -> None:
    await routes.post("/api/downloads", {"link": link(1).format()})
    routes.fake(1).finish()
    await asyncio.wait_for(asyncio.wait({routes.task(1).task}), WAIT)
    r = await routes.get(f"/api/downloads/{link(1).hash_name.hex()}/events")
    events = parse_sse(r.body.decode())
    assert [kind for kind, _ in events] == ["message", "end"]
    assert events[0][1]["state"] == "complete"
