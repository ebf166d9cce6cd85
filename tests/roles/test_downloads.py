"""The peer's downloads (peer.roles.downloads): start or attach by link, DATA/downloads.json, resume.

The fetch itself is a fake (tests/roles/fakedownload.py) that the test finishes or fails;
what is under test is the bookkeeping around it: one task per link, the state file, the
restart rule (unfinished downloads resume, finished ones never restart), export and errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peer.errors import PathError, StorageError
from peer.roles.downloads import DOWNLOADS_FILE, Downloads, DownloadTask
from storage.sharelink import ShareLink
from tests.roles.fakedownload import Factories, FakeDownload, link

#: Safety net so a broken rule fails the test instead of hanging it (not a speed assertion).
WAIT = 20.0


def new_downloads(data_dir: Path, f: Factories) -> Downloads:
    return Downloads(data_dir, f.make, f.export, f.seed)  # type: ignore[arg-type]


@pytest.fixture
def factories() -> Factories:
    return Factories()


@pytest.fixture
async def downloads(tmp_path: Path, factories: Factories) -> AsyncIterator[Downloads]:
    d = new_downloads(tmp_path, factories)
    yield d
    await d.close()


def fake(dt: DownloadTask) -> FakeDownload:
    assert isinstance(dt.download, FakeDownload)
    return dt.download


async def settle(dt: DownloadTask) -> None:
    """Wait until the download's task has ended (however it ended)."""
    await asyncio.wait_for(asyncio.wait({dt.task}), WAIT)


async def started(dt: DownloadTask) -> None:
    """Wait until the download's fetch is running."""
    await asyncio.wait_for(fake(dt).running.wait(), WAIT)


def saved(data_dir: Path) -> list[dict[str, object]]:
    doc = json.loads((data_dir / DOWNLOADS_FILE).read_text())
    assert isinstance(doc, list)
    return doc


# ---- start and attach --------------------------------------------------------------------------


async def test_same_link_attaches_to_the_running_download(
    downloads: Downloads, factories: Factories, tmp_path: Path
) -> None:
    a = link(1)
    first = downloads.start(a, tmp_path / "one")
    again = downloads.start(a)
    assert again is first
    assert len(factories.made) == 1
    assert first.output == tmp_path / "one"  # attaching without an output keeps the first one
    newer = downloads.start(a, tmp_path / "two")
    assert newer is first and first.output == tmp_path / "two"  # a new output path wins
    assert downloads.get(a.hash_name) is first and a.hash_name in downloads


async def test_different_links_are_different_downloads(downloads: Downloads, factories: Factories) -> None:
    a, b = downloads.start(link(1)), downloads.start(link(2))
    assert a is not b
    assert [fake(a).link, fake(b).link] == [link(1), link(2)]
    assert set(downloads.values()) == {a, b}
    assert downloads.get(link(3).hash_name) is None and link(3).hash_name not in downloads


async def test_a_finished_download_is_not_attached_to(downloads: Downloads, factories: Factories) -> None:
    first = downloads.start(link(1))
    fake(first).finish()
    await settle(first)
    second = downloads.start(link(1))
    assert second is not first and len(factories.made) == 2
    assert downloads.get(link(1).hash_name) is second


# ---- outcomes ----------------------------------------------------------------------------------


async def test_completion_exports_seeds_and_reports(
    downloads: Downloads, factories: Factories, tmp_path: Path
) -> None:
    a = link(1, name="file.txt")
    out = tmp_path / "out" / "file.txt"
    out.parent.mkdir()
    dt = downloads.start(a, out)
    states: list[str] = []
    fake(dt).listeners.append(lambda p: states.append(p.state))
    await started(dt)
    fake(dt).step(3, 4)
    assert dt.summary()["state"] == "downloading" and dt.summary()["have"] == 3
    fake(dt).finish()
    await settle(dt)
    assert factories.exported == [(a, out)]
    assert out.read_bytes() == b"exported " + a.hash_name
    assert factories.seeded == [a.hash_name]
    s = dt.summary()
    assert s["id"] == a.hash_name.hex()
    assert s["state"] == "complete" and s["exported"] == str(out) and s["error"] is None
    assert s["have"] == s["total"] == 4
    assert states[-1] == "complete"  # listeners hear the final state
    assert saved(tmp_path) == [{"link": a.format(), "output": str(out), "done": True}]


async def test_completion_without_output_exports_nothing(
    downloads: Downloads, factories: Factories, tmp_path: Path
) -> None:
    dt = downloads.start(link(1))
    fake(dt).finish()
    await settle(dt)
    assert dt.summary()["state"] == "complete" and dt.summary()["exported"] is None
    assert factories.exported == [] and factories.seeded == [link(1).hash_name]
    assert saved(tmp_path) == [{"link": link(1).format(), "output": None, "done": True}]


async def test_a_failed_download_reports_its_error(
    downloads: Downloads, factories: Factories, tmp_path: Path
) -> None:
    dt = downloads.start(link(1), tmp_path / "never")
    fake(dt).fail(PathError("no ORDB holds this share"))
    await settle(dt)
    s = dt.summary()
    assert s["state"] == "failed" and s["error"] == "no ORDB holds this share"
    assert factories.exported == [] and factories.seeded == []
    assert not (tmp_path / "never").exists()
    assert saved(tmp_path)[0]["done"] is False  # a failed download is retried after a restart


async def test_a_failed_export_reports_its_error(
    downloads: Downloads, factories: Factories, tmp_path: Path
) -> None:
    factories.export_error = StorageError("disk full")
    dt = downloads.start(link(1), tmp_path / "out")
    fake(dt).finish()
    await settle(dt)
    assert dt.summary()["state"] == "failed" and dt.summary()["error"] == "disk full"
    assert factories.seeded == [] and saved(tmp_path)[0]["done"] is False


# ---- DATA/downloads.json -----------------------------------------------------------------------


async def test_state_file_is_private_complete_and_written_whole(downloads: Downloads, tmp_path: Path) -> None:
    keyed = link(1, key=True, name="secret")
    downloads.start(keyed, tmp_path / "a")
    downloads.start(link(2))
    path = tmp_path / DOWNLOADS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the keys
    assert saved(tmp_path) == [
        {"link": keyed.format(), "output": str(tmp_path / "a"), "done": False},
        {"link": link(2).format(), "output": None, "done": False},
    ]
    assert ShareLink.parse(str(saved(tmp_path)[0]["link"])) == keyed  # the key survives
    assert sorted(p.name for p in tmp_path.iterdir()) == [DOWNLOADS_FILE]  # no temporary file left


async def test_close_keeps_unfinished_downloads_for_the_next_start(
    tmp_path: Path, factories: Factories
) -> None:
    d = new_downloads(tmp_path, factories)
    dt = d.start(link(1))
    await d.close()
    assert dt.task.cancelled()
    assert saved(tmp_path) == [{"link": link(1).format(), "output": None, "done": False}]


async def test_restart_resumes_unfinished_and_never_restarts_finished(tmp_path: Path) -> None:
    before = Factories()
    d = new_downloads(tmp_path, before)
    done, running, failed = link(1), link(2, key=True), link(3, name="n")
    finished = d.start(done, tmp_path / "done.bin")
    d.start(running, tmp_path / "running.bin")
    broken = d.start(failed)
    fake(finished).finish()
    fake(broken).fail(PathError("no circuit"))
    await settle(finished)
    await settle(broken)
    await d.close()  # the peer stops while `running` is still fetching

    after = Factories()
    again = new_downloads(tmp_path, after)
    try:
        await again.resume(delay=0)
        assert [f.link for f in after.made] == [running, failed]  # keys and names intact
        assert again.get(done.hash_name) is None
        resumed = again.get(running.hash_name)
        assert resumed is not None and resumed.output == tmp_path / "running.bin"
        fake(resumed).finish()
        await settle(resumed)
        assert after.exported == [(running, tmp_path / "running.bin")]
    finally:
        await again.close()


async def test_resume_attaches_to_a_download_already_asked_for(tmp_path: Path) -> None:
    first = Factories()
    d = new_downloads(tmp_path, first)
    d.start(link(1))
    await d.close()
    second = Factories()
    again = new_downloads(tmp_path, second)
    try:
        asked = again.start(link(1), tmp_path / "x")  # `peersm get` before the resume ran
        await again.resume(delay=0)
        assert again.get(link(1).hash_name) is asked and len(second.made) == 1
    finally:
        await again.close()


async def test_resume_without_a_state_file_starts_nothing(
    tmp_path: Path, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    d = new_downloads(tmp_path, factories)
    with caplog.at_level(logging.WARNING):
        await d.resume(delay=0)
    assert factories.made == [] and d.values() == []
    assert caplog.records == []  # a first start is not an error


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b"",
        b'{"link": "peersm:v1:00"}',
        b"42",
    ],
    ids=["syntax", "not-utf8", "empty", "object", "number"],
)
async def test_an_unusable_state_file_is_reported_not_fatal(
    tmp_path: Path, factories: Factories, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    (tmp_path / DOWNLOADS_FILE).write_bytes(content)
    d = new_downloads(tmp_path, factories)
    with caplog.at_level(logging.WARNING, logger="peer.roles.downloads"):
        await d.resume(delay=0)
    assert factories.made == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and DOWNLOADS_FILE in warnings[0]
    dt = d.start(link(1))  # the peer goes on working
    assert saved(tmp_path)[0]["link"] == link(1).format()
    fake(dt).finish()
    await d.close()


async def test_bad_entries_are_skipped_and_the_good_ones_resumed(
    tmp_path: Path, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    good = link(7, key=True)
    entries: list[object] = [
        1,
        "peersm:v1:" + "00" * 32,
        None,
        {"output": None, "done": False},
        {"link": 5, "done": False},
        {"link": "peersm:v1:zz", "done": False},
        {"link": "peersm:v9:" + "00" * 32, "done": False},
        {"link": link(8).format(), "output": 3, "done": False},
        {"link": good.format(), "output": str(tmp_path / "g"), "done": False},
    ]
    (tmp_path / DOWNLOADS_FILE).write_text(json.dumps(entries))
    d = new_downloads(tmp_path, factories)
    try:
        with caplog.at_level(logging.WARNING, logger="peer.roles.downloads"):
            await d.resume(delay=0)
        assert [f.link for f in factories.made] == [good]
        resumed = d.get(good.hash_name)
        assert resumed is not None and resumed.output == tmp_path / "g"
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == len(entries) - 1
        assert all(DOWNLOADS_FILE in w for w in warnings)
        assert not any("#k=" in w for w in warnings)  # keys never reach the log
    finally:
        await d.close()
