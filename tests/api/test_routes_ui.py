"""The routes the web UI's pages use (webui.routes, webui.library, webui.network, webui.exports).

A real ApiServer and a real chunk store; the peer is a stand-in with the parts the routes read
(downloads with a fake fetch from tests/roles/fakedownload.py, a holder's counters, the
network's figures).  Also: the page scripts never build HTML from strings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from peer.roles.downloads import Downloads, DownloadTask
from storage.chunkstore import ChunkStore
from storage.sharelink import ShareLink
from tests.api.conftest import TOKEN, Api, Counter
from tests.api.rawhttp import RawResponse
from tests.roles.fakedownload import Factories, FakeDownload, link
from webui.library import receive_upload, upload_name
from webui.network import BandwidthMeter
from webui.routes import add_routes
from webui.server import ApiServer

WAIT = 20.0  # safety net against a hang, not a speed assertion
STATIC = Path(__file__).resolve().parents[2] / "webui" / "static"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass
class FakeHolder:
    served_queries: dict[bytes, int] = field(default_factory=dict)
    held: set[bytes] = field(default_factory=set)
    announced: list[bytes] = field(default_factory=list)
    circuits: dict[int, object] = field(default_factory=dict)

    def announce_soon(self, h: bytes) -> None:
        self.announced.append(h)

    def ordb_ids(self) -> set[bytes]:
        return {b"\x0a" * 20}


@dataclass
class FakePeer:
    store: ChunkStore
    downloads: Downloads
    data_dir: Path
    holder: FakeHolder = field(default_factory=FakeHolder)
    shared: list[tuple[Path, bool, bool, str]] = field(default_factory=list)  # path, encrypt, seed, sha256

    def __post_init__(self) -> None:
        self.config = SimpleNamespace(data_dir=self.data_dir, subnet_rule=True, one_hop_ordb=False, hops=3)
        self.downloads_dir = self.data_dir / "downloads"
        self.driver = SimpleNamespace(bytes_in=0, bytes_out=0)
        now = __import__("time").time()
        self.links = SimpleNamespace(
            neighbours={
                1: SimpleNamespace(
                    node_id=b"\x01" * 20, transport="webrtc", initiator=True, opened_at=now - 60
                ),
                2: SimpleNamespace(node_id=b"\x02" * 20, transport="tls", initiator=False, opened_at=now - 5),
            }
        )
        self.guards = [b"\x01" * 20]
        self.circuits = SimpleNamespace(
            paths={7: [b"\x01" * 20, b"\x03" * 20, b"\x04" * 20], 8: [b"\x01" * 20]}
        )
        self.node = SimpleNamespace(circuits={7: None, 9: None, 10: None})
        self.ordb = SimpleNamespace(
            status=lambda: {"hash_names": 4, "queries": 9, "answered": 6, "forwarded": 2}
        )
        self.dht = SimpleNamespace(stats=lambda: {"contacts": 12, "records": 3})
        self.view = [object()] * 17

    async def share(self, path: Path, *, encrypt: bool = False, seed: bool = True) -> str:
        result = await self.store.import_file(path, encrypt=encrypt, randbytes=os.urandom)
        self.shared.append((path, encrypt, seed, sha256_of(path)))
        if not seed:
            await self.store.set_seeding(result.hash_name, False)
        return result.link.format()

    def get(self, link: ShareLink, output: Path | None = None) -> DownloadTask:
        return self.downloads.start(link, output)


@dataclass
class Ui:
    api: Api
    peer: FakePeer
    factories: Factories

    async def post(self, path: str, doc: object = None) -> RawResponse:
        hs = self.api.good_headers(Content_Type="application/json")
        return await self.api.request("POST", path, hs, json.dumps({} if doc is None else doc).encode())

    async def get(self, path: str) -> RawResponse:
        return await self.api.get(path)

    def fake(self, ln: ShareLink) -> FakeDownload:
        t = self.peer.downloads.get(ln.hash_name)
        assert t is not None and isinstance(t.download, FakeDownload)
        return t.download


@pytest.fixture
async def ui(store: ChunkStore, tmp_path: Path) -> AsyncIterator[Ui]:
    factories = Factories()
    data = tmp_path / "data"
    data.mkdir()
    downloads = Downloads(data, factories.make, factories.export, factories.seed)  # type: ignore[arg-type]
    peer = FakePeer(store, downloads, data)
    server = ApiServer(token=TOKEN)
    add_routes(server, peer)  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    try:
        yield Ui(Api(server, Counter()), peer, factories)
    finally:
        await server.stop()
        await downloads.close()


def error_of(r: RawResponse) -> str:
    doc = r.json()
    assert set(doc) == {"error"}
    return str(doc["error"])


async def settle(t: DownloadTask) -> None:
    await asyncio.wait_for(asyncio.wait({t.task}), WAIT)


async def shared_file(ui: Ui, tmp_path: Path, name: str = "clip.txt", size: int = 100_000) -> ShareLink:
    src = tmp_path / name
    src.write_bytes(os.urandom(size))
    return ShareLink.parse(await ui.peer.share(src))


def snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ---- download controls ----------------------------------------------------------------------------


async def test_pause_resume_cancel_remove(ui: Ui) -> None:
    ln = link(1)
    await ui.post("/api/downloads", {"link": ln.format()})
    ident = ln.hash_name.hex()
    r = await ui.post(f"/api/downloads/{ident}/pause")
    assert r.status == 200 and r.json()["paused"] is True
    await settle(ui.peer.downloads.get(ln.hash_name))  # type: ignore[arg-type]
    doc = (await ui.get(f"/api/downloads/{ident}")).json()
    assert doc["state"] == "paused" and doc["running"] is False and doc["waiting_for"] is None
    assert (await ui.post(f"/api/downloads/{ident}/pause")).status == 409  # not running

    r = await ui.post(f"/api/downloads/{ident}/resume")
    assert r.status == 200 and r.json()["running"] is True and r.json()["paused"] is False
    assert len(ui.factories.made) == 2  # a new fetch, from the pieces already stored
    assert (await ui.post(f"/api/downloads/{ident}/resume")).status == 409  # already running
    assert (await ui.post(f"/api/downloads/{ident}/remove")).status == 409  # running: cancel first

    r = await ui.post(f"/api/downloads/{ident}/cancel")
    assert r.status == 200 and r.json() == {"cancelled": ident}
    assert ui.peer.downloads.get(ln.hash_name) is None
    assert (await ui.get("/api/downloads")).json() == {"downloads": []}


async def test_remove_forgets_a_finished_download(ui: Ui) -> None:
    ln = link(2)
    await ui.post("/api/downloads", {"link": ln.format()})
    ui.fake(ln).fail(__import__("peer.errors", fromlist=["PathError"]).PathError("no ORDB"))
    await settle(ui.peer.downloads.get(ln.hash_name))  # type: ignore[arg-type]
    r = await ui.post(f"/api/downloads/{ln.hash_name.hex()}/remove")
    assert r.status == 200 and ui.peer.downloads.values() == []


@pytest.mark.parametrize("action", ["pause", "resume", "cancel", "remove", "export"])
@pytest.mark.parametrize("ident", ["00" * 32, "zz", "ab", "00" * 31], ids=["unknown", "hex", "odd", "short"])
async def test_controls_of_unknown_downloads_are_404(ui: Ui, action: str, ident: str) -> None:
    await ui.post("/api/downloads", {"link": link(1).format()})
    r = await ui.post(f"/api/downloads/{ident}/{action}", {"name": "x.bin"})
    assert r.status == 404 and "no such download" in error_of(r)
    assert ui.peer.downloads.get(link(1).hash_name) is not None and len(ui.factories.made) == 1


@pytest.mark.parametrize("action", ["pause", "resume", "cancel", "remove", "export"])
async def test_get_never_changes_a_download(ui: Ui, action: str) -> None:
    await ui.post("/api/downloads", {"link": link(1).format()})
    t = ui.peer.downloads.get(link(1).hash_name)
    assert t is not None
    r = await ui.get(f"/api/downloads/{link(1).hash_name.hex()}/{action}")
    assert r.status in (404, 405)
    assert ui.peer.downloads.get(link(1).hash_name) is t and t.running and not t.paused
    assert not (ui.peer.data_dir / "downloads").exists()


async def test_controls_need_json(ui: Ui) -> None:
    await ui.post("/api/downloads", {"link": link(1).format()})
    hs = ui.api.good_headers(Content_Type="text/plain")
    r = await ui.api.request("POST", f"/api/downloads/{link(1).hash_name.hex()}/cancel", hs, b"{}")
    assert r.status == 415 and ui.peer.downloads.get(link(1).hash_name) is not None


async def test_summary_has_rate_eta_and_what_it_waits_for(ui: Ui) -> None:
    ln = link(3, name="song.ogg")
    await ui.post("/api/downloads", {"link": ln.format()})
    await asyncio.wait_for(ui.fake(ln).running.wait(), WAIT)
    doc = (await ui.get(f"/api/downloads/{ln.hash_name.hex()}")).json()
    assert doc["name"] == "song.ogg" and doc["waiting_for"] == "the share's manifest from an ORDB"
    p = ui.fake(ln).progress
    p.total, p.size, p.bytes_verified, p.rate, p.circuits, p.ordbs_used = 10, 1000, 0, 0.0, 3, 2
    doc = (await ui.get(f"/api/downloads/{ln.hash_name.hex()}")).json()
    assert doc["waiting_for"] == "the first piece from a holder" and doc["eta_s"] is None
    p.have, p.bytes_verified, p.bytes_held, p.rate = 4, 400, 400, 50.0
    doc = (await ui.get(f"/api/downloads/{ln.hash_name.hex()}")).json()
    assert doc["waiting_for"] is None and doc["eta_s"] == 12.0 and doc["rate"] == 50
    assert doc["circuits"] == 3 and doc["ordbs"] == 2


# ---- export -------------------------------------------------------------------------------------------


async def finished_download(ui: Ui, tmp_path: Path) -> tuple[ShareLink, str]:
    ln = await shared_file(ui, tmp_path)
    await ui.post("/api/downloads", {"link": ln.format()})
    ui.fake(ln).finish()
    await settle(ui.peer.downloads.get(ln.hash_name))  # type: ignore[arg-type]
    return ln, ui.peer.shared[-1][3]


async def test_export_writes_a_new_file_in_the_downloads_folder(ui: Ui, tmp_path: Path) -> None:
    ln, content = await finished_download(ui, tmp_path)
    r = await ui.post(f"/api/downloads/{ln.hash_name.hex()}/export", {"name": "mine.txt"})
    assert r.status == 200, r.body
    target = ui.peer.downloads_dir / "mine.txt"
    assert r.json() == {"path": str(target), "name": "mine.txt"}
    assert sha256_of(target) == content
    assert snapshot(ui.peer.downloads_dir) == ["mine.txt"]  # no temporary left


async def test_export_never_overwrites(ui: Ui, tmp_path: Path) -> None:
    ln, _ = await finished_download(ui, tmp_path)
    ui.peer.downloads_dir.mkdir()
    existing = ui.peer.downloads_dir / "keep.txt"
    existing.write_bytes(b"precious")
    for path in (f"/api/downloads/{ln.hash_name.hex()}/export", f"/api/library/{ln.hash_name.hex()}/export"):
        r = await ui.post(path, {"name": "keep.txt"})
        assert r.status == 409 and "already exists" in error_of(r)
    assert existing.read_bytes() == b"precious"
    assert snapshot(ui.peer.downloads_dir) == ["keep.txt"]


@pytest.mark.parametrize(
    "name",
    [
        "../escape.txt",
        "..",
        ".",
        "a/b.txt",
        "/etc/passwd",
        "..\\x.txt",
        "",
        5,
        None,
        ".hidden",
        "bad\x00name",
    ],
)
async def test_export_refuses_names_that_leave_the_folder(ui: Ui, tmp_path: Path, name: object) -> None:
    ln, _ = await finished_download(ui, tmp_path)
    r = await ui.post(f"/api/downloads/{ln.hash_name.hex()}/export", {"name": name})
    assert r.status == 400 and error_of(r)
    if isinstance(name, str) and ("/" in name or "\\" in name or name in (".", "..")):
        assert "no folders" in error_of(r)  # says why, not only that the name is odd
    assert snapshot(ui.peer.downloads_dir) == []
    assert not (tmp_path / "escape.txt").exists() and not (ui.peer.data_dir / "escape.txt").exists()


async def test_export_of_an_unfinished_download_is_refused(ui: Ui, tmp_path: Path, store: ChunkStore) -> None:
    await ui.post("/api/downloads", {"link": link(4).format()})  # nothing stored yet
    r = await ui.post(f"/api/downloads/{link(4).hash_name.hex()}/export", {"name": "x.bin"})
    assert r.status == 409 and "not complete" in error_of(r)
    ln = await shared_file(ui, tmp_path, size=300_000)  # a share with a piece missing
    await store._drop_piece(await store._share(ln.hash_name), 0)
    await ui.post("/api/downloads", {"link": ln.format()})
    for path in (f"/api/downloads/{ln.hash_name.hex()}/export", f"/api/library/{ln.hash_name.hex()}/export"):
        r = await ui.post(path, {"name": "x.bin"})
        assert r.status == 409 and "not complete" in error_of(r)
    assert snapshot(ui.peer.downloads_dir) == []


# ---- ranges ---------------------------------------------------------------------------------------------


async def test_ranges_are_the_byte_spans_held(ui: Ui, tmp_path: Path, store: ChunkStore) -> None:
    ln = await shared_file(ui, tmp_path, size=300_000)
    m = await store.manifest(ln.hash_name)
    r = (await ui.get(f"/api/downloads/{ln.hash_name.hex()}/ranges")).json()
    assert r == {"size": 300_000, "piece_size": m.piece_size, "ranges": [[0, 300_000]]}
    if m.piece_count >= 3:  # drop the middle piece: two spans around the hole
        share = await store._share(ln.hash_name)
        await store._drop_piece(share, 1)
        r = (await ui.get(f"/api/downloads/{ln.hash_name.hex()}/ranges")).json()
        assert r["ranges"] == [[0, m.piece_size], [2 * m.piece_size, 300_000]]
    assert (await ui.get(f"/api/downloads/{'11' * 32}/ranges")).status == 404
    await ui.post("/api/downloads", {"link": link(5).format()})  # no manifest yet
    assert (await ui.get(f"/api/downloads/{link(5).hash_name.hex()}/ranges")).json()["ranges"] == []


# ---- library --------------------------------------------------------------------------------------------


async def test_library_lists_every_share(ui: Ui, tmp_path: Path) -> None:
    ln = await shared_file(ui, tmp_path, name="<img src=x onerror=alert(1)>.txt")
    ui.peer.holder.served_queries[ln.hash_name] = 3
    (doc,) = (await ui.get("/api/library")).json()["shares"]
    assert doc["hash_name"] == ln.hash_name.hex() and doc["served"] == 3 and doc["seeding"] is True
    assert doc["size"] == 100_000 and doc["state"] == "complete" and doc["link"] == ln.format()
    assert doc["name"] == "<img src=x onerror=alert(1)>.txt"  # data, rendered as text by the page


async def test_seeding_off_and_on(ui: Ui, tmp_path: Path, store: ChunkStore) -> None:
    ln = await shared_file(ui, tmp_path)
    r = await ui.post(f"/api/library/{ln.hash_name.hex()}/seeding", {"seeding": False})
    assert r.status == 200 and r.json()["seeding"] is False
    assert (await store.get_download_state(ln.hash_name)).seeding is False
    assert ui.peer.holder.announced == []
    r = await ui.post(f"/api/library/{ln.hash_name.hex()}/seeding", {"seeding": True})
    assert r.json()["seeding"] is True and ui.peer.holder.announced == [ln.hash_name]
    for bad in ({}, {"seeding": "no"}, {"seeding": 1}):
        assert (await ui.post(f"/api/library/{ln.hash_name.hex()}/seeding", bad)).status == 400
    assert (await store.get_download_state(ln.hash_name)).seeding is True


async def test_remove_from_library(ui: Ui, tmp_path: Path, store: ChunkStore) -> None:
    a = await shared_file(ui, tmp_path, "a.txt")
    b = await shared_file(ui, tmp_path, "b.txt")
    assert (await ui.get(f"/api/library/{a.hash_name.hex()}/remove")).status == 405  # GET changes nothing
    assert len(await store.list()) == 2
    assert (await ui.post(f"/api/library/{a.hash_name.hex()}/remove")).json() == {
        "removed": a.hash_name.hex()
    }
    hs = ui.api.good_headers(Content_Type="application/json")
    r = await ui.api.request("DELETE", f"/api/library/{b.hash_name.hex()}", hs, b"")
    assert r.status == 200 and await store.list() == []
    assert (await ui.post(f"/api/library/{a.hash_name.hex()}/remove")).status == 404


async def test_library_refuses_while_downloading_and_bad_ids(
    ui: Ui, tmp_path: Path, store: ChunkStore
) -> None:
    ln = await shared_file(ui, tmp_path)
    await ui.post("/api/downloads", {"link": ln.format()})
    r = await ui.post(f"/api/library/{ln.hash_name.hex()}/remove")
    assert r.status == 409 and len(await store.list()) == 1
    for ident in ("zz", "00" * 31, "22" * 32):
        assert (await ui.post(f"/api/library/{ident}/seeding", {"seeding": False})).status == 404
        assert (await ui.post(f"/api/library/{ident}/remove")).status == 404


# ---- uploads ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("film.mkv", "film.mkv"),
        ("..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("%3Cimg%20src%3Dx%3E.txt", "_img src=x_.txt"),
        ("", "upload"),
        ("%2E%2E", "upload"),
        ("%C3%A9t%C3%A9.txt", "été.txt"),
    ],
)
def test_upload_names_are_sanitised(header: str, name: str) -> None:
    assert upload_name(header) == name


class _Body:
    """The request body as aiohttp hands it out: chunks pulled one at a time (made on demand here)."""

    def __init__(self, size: int, chunk: bytes) -> None:
        self.size, self.chunk, self.asked = size, chunk, 0

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        for _ in range(self.size // len(self.chunk)):
            self.asked += 1
            await asyncio.sleep(0)
            yield self.chunk[:n] + self.chunk[n:]  # a fresh bytes object per chunk, as off a socket


async def test_an_upload_streams_to_disk_without_holding_the_body(tmp_path: Path) -> None:
    size, chunk = 24 << 20, os.urandom(64 << 10)
    body = _Body(size, chunk)
    request = SimpleNamespace(content=body)
    tracemalloc.start()
    try:
        path, got = await receive_upload(request, tmp_path, "big.bin")  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == size and path.stat().st_size == size
    assert peak < size // 4, f"peak {peak} bytes while receiving {size}"
    with path.open("rb") as f:
        assert f.read(len(chunk)) == chunk


async def test_upload_refuses_json_and_needs_the_token(ui: Ui) -> None:
    r = await ui.post("/api/uploads", {"name": "x"})  # JSON is not an upload
    assert r.status == 415
    hs = [("Host", ui.api.host()), ("Content-Type", "application/octet-stream")]
    r = await ui.api.request("POST", "/api/uploads", hs, b"data")
    assert r.status == 401
    assert await ui.peer.store.list() == []


async def test_upload_shares_the_body(ui: Ui) -> None:
    body = os.urandom(3 << 20)
    hs = ui.api.good_headers(
        Content_Type="application/octet-stream", X_Peersm_Filename="a%20b.bin", X_Peersm_Encrypt="1"
    )
    r = await ui.api.request("POST", "/api/uploads", hs, body)
    assert r.status == 200, r.body
    doc = r.json()
    assert doc["name"] == "a b.bin" and doc["size"] == len(body)
    assert (
        ShareLink.parse(doc["link"]).key is not None
        and doc["hash_name"] == ShareLink.parse(doc["link"]).hash_name.hex()
    )
    path, encrypt, seed, digest = ui.peer.shared[-1]
    assert path.name == "a b.bin" and encrypt and seed and digest == hashlib.sha256(body).hexdigest()
    assert snapshot(ui.peer.data_dir / "uploads") == []  # the temporary file is gone


async def test_an_empty_upload_is_refused(ui: Ui) -> None:
    hs = ui.api.good_headers(Content_Type="application/octet-stream")
    r = await ui.api.request("POST", "/api/uploads", hs, b"")
    assert r.status == 400 and "empty" in error_of(r)
    assert ui.peer.shared == [] and snapshot(ui.peer.data_dir / "uploads") == []


async def test_a_large_chunked_upload_over_http_stays_out_of_memory(ui: Ui) -> None:
    size, chunk = 32 << 20, os.urandom(256 << 10)
    digest = hashlib.sha256(chunk * (size // len(chunk))).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(chunk)):
            yield chunk  # the same object each time: the client holds no copy of the body

    headers = {
        "X-Peersm-Token": TOKEN,
        "Content-Type": "application/octet-stream",
        "X-Peersm-Filename": "big.bin",
    }
    ui.peer.store.batch_bytes = 1 << 20  # the import after the upload holds two batches: keep them small
    tracemalloc.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{ui.api.port}/api/uploads", data=body(), headers=headers
            ) as response,
        ):
            status, doc = response.status, await response.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200, doc
    assert doc["size"] == size and ui.peer.shared[-1][3] == digest
    assert peak < size // 4, f"peak {peak} bytes while uploading {size}"


# ---- QR codes -------------------------------------------------------------------------------------------


async def test_qr_is_an_svg_and_needs_the_token(ui: Ui) -> None:
    r = await ui.get("/api/qr?text=peersm%3Av1%3Aabc")
    assert r.status == 200 and r.header("Content-Type").startswith("image/svg+xml")
    assert r.body.lstrip().startswith(b"<svg") and b"<script" not in r.body
    assert (await ui.get("/api/qr")).status == 400
    assert (await ui.get("/api/qr?text=" + "a" * 2000)).status == 400
    r = await ui.api.request("GET", "/api/qr?text=x", [("Host", ui.api.host())])
    assert r.status == 401


async def test_qr_carries_a_sandbox_csp(ui: Ui) -> None:
    r = await ui.get("/api/qr?text=x")
    assert r.status == 200 and r.header("Content-Security-Policy") == "sandbox; default-src 'none'"


# ---- network --------------------------------------------------------------------------------------------


async def test_network_reports_links_circuits_and_health(ui: Ui) -> None:
    doc = (await ui.get("/api/network")).json()
    links = {d["peer"]: d for d in doc["links"]}
    assert links[("01" * 8)]["guard"] is True and links[("02" * 8)]["guard"] is False
    assert links[("02" * 8)]["transport"] == "tls" and links[("01" * 8)]["age_s"] >= 60
    assert doc["circuits"] == [{"hops": 3, "kind": "exit", "first_hop": "01" * 8}]  # 8 is closed
    assert doc["relayed_circuits"] == 2
    assert doc["ordb"] == {"hash_names": 4, "queries": 9, "queries_served": 6, "forwarded": 2}
    assert doc["dht"] == {"contacts": 12, "records": 3}
    health = doc["anonymity"]
    assert health == {
        "guards": 1,
        "ordbs_now": 1,
        "ordbs_seen": 1,
        "path_rules_relaxed": False,
        "relaxed": [],
        "peer_view": 17,
    }
    await ui.post("/api/downloads", {"link": link(1).format()})  # a download with a circuit of its own
    fake = ui.fake(link(1))
    fake.ordb_ids = lambda: {b"\x0b" * 20}  # type: ignore[attr-defined]
    fake.sched = SimpleNamespace(circuits={9: None})  # type: ignore[attr-defined]
    ui.peer.circuits.paths[9] = [b"\x02" * 20, b"\x05" * 20, b"\x06" * 20]
    doc = (await ui.get("/api/network")).json()
    assert {"hops": 3, "kind": "download", "first_hop": "02" * 8} in doc["circuits"]
    assert doc["anonymity"]["ordbs_now"] == 2 and doc["anonymity"]["ordbs_seen"] == 2
    ui.peer.config.subnet_rule = False
    health = (await ui.get("/api/network")).json()["anonymity"]
    assert health["path_rules_relaxed"] is True and "subnet" in health["relaxed"][0]


def test_bandwidth_meter_rates() -> None:
    m = BandwidthMeter(keep=3)
    assert m.feed(10.0, 1000, 500) is None
    s = m.feed(12.0, 3000, 900)
    assert s is not None and (s.in_bps, s.out_bps) == (1000.0, 200.0)
    assert m.feed(12.0, 4000, 900) is None  # no time passed
    s = m.feed(13.0, 100, 1000)  # counters restarted: count from zero
    assert s is not None and s.in_bps == 100.0
    for t in range(14, 20):
        m.feed(float(t), 0, 0)
    assert len(m.samples) == 3


# ---- pages ------------------------------------------------------------------------------------------------

_HTML_SINKS = re.compile(
    r"\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\b"
)


def test_page_scripts_never_build_html_from_strings() -> None:
    scripts = sorted(STATIC.glob("*.js"))
    assert scripts, "no page scripts found"
    for js in scripts:
        for n, line in enumerate(js.read_text().splitlines(), 1):
            assert not _HTML_SINKS.search(line), f"{js.name}:{n}: {line.strip()}"


def test_pages_have_no_inline_script_or_style() -> None:
    pages = sorted(STATIC.glob("*.html"))
    assert pages, "no pages found"
    for page in pages:
        text = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), page.name
        assert not re.search(r"\son\w+\s*=", text), page.name  # no inline event handlers
        assert " style=" not in text and "<style" not in text, page.name
        assert "http://" not in text and "https://" not in text, page.name  # no CDN


def test_the_sink_check_catches_a_sink() -> None:
    assert _HTML_SINKS.search("row.innerHTML = name;") and _HTML_SINKS.search("el.insertAdjacentHTML('x', s)")
    assert not _HTML_SINKS.search("cell.textContent = name;")


# ---- the parts below the routes: the no-overwrite placement, the holder's seeding and counter ---------


def test_place_never_replaces_an_existing_file(tmp_path: Path) -> None:
    from webui.exports import _place
    from webui.server import RequestRefused

    tmp, target = tmp_path / "tmp", tmp_path / "target"
    tmp.write_bytes(b"new")
    target.write_bytes(b"old")
    with pytest.raises(RequestRefused) as refused:
        _place(tmp, target)
    assert refused.value.status == 409 and target.read_bytes() == b"old"
    other = tmp_path / "free"
    _place(tmp, other)
    assert other.read_bytes() == b"new"


class _QuietNode:
    """The onion core calls a holder makes while serving, all accepted."""

    def __init__(self) -> None:
        self.sent = 0

    def stream_send(self, circ: int, sid: int, data: bytes) -> bool:
        self.sent += len(data)
        return True

    def send_relay(self, *args: object) -> None:
        return None

    def db_end(self, *args: object) -> None:
        return None


async def test_the_holder_serves_only_seeded_shares_and_counts_per_share(
    store: ChunkStore, tmp_path: Path
) -> None:
    from peer.roles.holder import HolderService
    from peer.wire.ordb import DbQuery

    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(50_000))
    h = (await store.import_file(src, encrypt=False, randbytes=os.urandom)).hash_name
    node = _QuietNode()

    async def no_circuit(_: set[bytes]) -> tuple[int, bytes]:
        raise AssertionError("not used")

    holder = HolderService(node, store, kick=lambda: None, build_ordb_circuit=no_circuit)  # type: ignore[arg-type]
    q = DbQuery(h, 0, 1, 0)
    await holder.serve_here((1, 1), q)
    await holder.serve_here((1, 2), q)
    assert holder.served_queries == {h: 2} and node.sent > 0
    await store.set_seeding(h, False)
    sent = node.sent
    with pytest.raises(LookupError):
        await holder._plan(q)
    await holder.serve_here((1, 3), q)
    assert node.sent == sent and holder.served_queries == {h: 2}  # refused, not counted
    await holder.close()


async def test_a_paused_download_stays_paused_across_a_restart(tmp_path: Path) -> None:
    before = Factories()
    d = Downloads(tmp_path, before.make, before.export, before.seed)  # type: ignore[arg-type]
    d.start(link(1))
    d.start(link(2))
    await asyncio.wait_for(before.made[0].running.wait(), WAIT)
    d.pause(link(1).hash_name)
    await d.close()
    saved = json.loads((tmp_path / "downloads.json").read_text())
    assert [e.get("paused", False) for e in saved] == [True, False]

    after = Factories()
    again = Downloads(tmp_path, after.make, after.export, after.seed)  # type: ignore[arg-type]
    try:
        await again.resume(delay=0)
        paused, running = again.get(link(1).hash_name), again.get(link(2).hash_name)
        assert paused is not None and paused.paused and not paused.running
        assert paused.summary()["state"] == "paused"
        assert running is not None and running.running
        assert not after.made[0].running.is_set()  # the paused one's fetch never ran
        assert again.resume_one(link(1).hash_name).running
    finally:
        await again.close()


async def test_a_summary_names_the_share_and_its_type_once_the_manifest_is_known(
    ui: Ui, tmp_path: Path, store: ChunkStore
) -> None:
    src = tmp_path / "talk.webm"
    src.write_bytes(os.urandom(20_000))
    ln = ShareLink.parse(await ui.peer.share(src, encrypt=True))
    assert ln.key is not None and ln.name is None  # an encrypted share's link does not carry its name
    await ui.post("/api/downloads", {"link": ln.format()})
    ident = ln.hash_name.hex()
    doc = (await ui.get(f"/api/downloads/{ident}")).json()
    assert doc["name"] is None and doc["type"] is None
    ui.fake(ln).manifest = await store.manifest(ln.hash_name)  # type: ignore[attr-defined]
    doc = (await ui.get(f"/api/downloads/{ident}")).json()
    assert doc["name"] == "talk.webm" and doc["type"] == "video/webm"  # decrypted with the link's key


async def test_no_library_or_upload_route_acts_on_get(ui: Ui, tmp_path: Path, store: ChunkStore) -> None:
    ln = await shared_file(ui, tmp_path)
    ident = ln.hash_name.hex()
    paths = [
        f"/api/library/{ident}/seeding?seeding=false",
        f"/api/library/{ident}/remove",
        f"/api/library/{ident}/export?name=x.txt",
        "/api/uploads",
    ]
    for path in paths:
        assert (await ui.get(path)).status == 405, path
    assert (await store.get_download_state(ln.hash_name)).seeding is True
    assert len(await store.list()) == 1 and len(ui.peer.shared) == 1
    assert snapshot(ui.peer.downloads_dir) == [] and ui.peer.holder.announced == []


async def test_a_full_disk_during_an_upload_says_so(ui: Ui, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import webui.library

    async def full(*_: object) -> tuple[Path, int]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(webui.library, "receive_upload", full)
    hs = ui.api.good_headers(Content_Type="application/octet-stream")
    r = await ui.api.request("POST", "/api/uploads", hs, b"data")
    assert r.status == 507 and "no space" in error_of(r)
    assert ui.peer.shared == [] and snapshot(ui.peer.data_dir / "uploads") == []
