"""DIR/api.json (webui.server.write_api_json / read_api_json / remove_api_json): mode 0600, atomic, clear errors."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import webui.server
from tests.api.conftest import TOKEN
from webui.server import ApiFileError, ApiInfo, PeerNotRunning, read_api_json, remove_api_json, write_api_json

URL = "http://127.0.0.1:45678"


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o277])
def test_w4_token_file_is_0600_whatever_the_umask(tmp_path: Path, mask: int, umask: None) -> None:
    os.umask(mask)
    path = write_api_json(tmp_path / "data", URL, TOKEN)
    assert path == tmp_path / "data" / "api.json"
    assert mode(path) == 0o600
    assert mode(tmp_path / "data") & 0o077 == 0  # a data dir we create is private too
    assert json.loads(path.read_text()) == {"url": URL, "token": TOKEN, "pid": os.getpid()}


def test_w4_file_is_private_from_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temp file is opened with mode 0600 (never created wider and narrowed later)."""
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(webui.server.os, "open", spy)
    write_api_json(tmp_path, URL, TOKEN)
    creates = [o for o in opened if o[1] & os.O_CREAT]
    assert len(creates) == 1
    name, flags, created_mode = creates[0]
    assert created_mode == 0o600 and flags & os.O_EXCL and flags & os.O_NOFOLLOW
    assert Path(name).parent == tmp_path and Path(name).name != "api.json"  # a temp file, then rename


def test_replaces_an_existing_file_atomically(tmp_path: Path) -> None:
    old = tmp_path / "api.json"
    old.write_text('{"url": "http://127.0.0.1:1", "token": "old", "pid": 1}')
    old.chmod(0o644)
    inode = old.stat().st_ino
    write_api_json(tmp_path, URL, TOKEN)
    assert mode(old) == 0o600 and old.stat().st_ino != inode
    assert read_api_json(tmp_path) == ApiInfo(url=URL, token=TOKEN, pid=os.getpid())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.json"]  # no temp file left


def test_round_trip_and_repr_hides_the_token(tmp_path: Path) -> None:
    write_api_json(tmp_path, URL + "/", TOKEN)
    info = read_api_json(tmp_path)
    assert (info.url, info.token, info.pid) == (URL, TOKEN, os.getpid())
    assert TOKEN not in repr(info)
    write_api_json(tmp_path, "http://[::1]:9", TOKEN)
    assert read_api_json(tmp_path).url == "http://[::1]:9"


def test_missing_file_says_how_to_start_a_peer(tmp_path: Path) -> None:
    with pytest.raises(PeerNotRunning) as err:
        read_api_json(tmp_path / "nope")
    message = str(err.value)
    assert f"no peer is running with data dir {tmp_path / 'nope'}" in message
    assert f"peersm up --data {tmp_path / 'nope'}" in message


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b"null",
        b'{"url": "http://127.0.0.1:1"}',
        b"\xff\xfe",
        b'{"url": 1, "token": "t", "pid": 1}',
        b'{"url": "http://127.0.0.1:1", "token": 5, "pid": 1}',
        b'{"url": "http://127.0.0.1:1", "token": "t", "pid": "1"}',
    ],
)
def test_unreadable_content_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "api.json").write_bytes(content)
    with pytest.raises(ApiFileError, match=r"api\.json"):
        read_api_json(tmp_path)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "api.json").mkdir()  # reading a directory fails even as root
    with pytest.raises(ApiFileError, match="cannot read"):
        read_api_json(tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        "http://[2001:db8::1]:80",
        "http://evil.test:80",
        "https://127.0.0.1:80",
        "http://127.0.0.1",
        "http://user:pw@127.0.0.1:80",
        "ftp://127.0.0.1:21",
        "http://0.0.0.0:80",
        "http://[::]:80",
        "http://127.0.0.1:99999",
        "127.0.0.1:80",
        "http://[::1:80",
    ],
)
def test_a_url_off_loopback_is_refused_so_the_token_stays_home(tmp_path: Path, url: str) -> None:
    (tmp_path / "api.json").write_text(json.dumps({"url": url, "token": TOKEN, "pid": 1}))
    with pytest.raises(ApiFileError):
        read_api_json(tmp_path)


def test_remove_only_our_own_file(tmp_path: Path) -> None:
    remove_api_json(tmp_path)  # nothing there: no error
    write_api_json(tmp_path, URL, TOKEN)
    remove_api_json(tmp_path, pid=os.getpid() + 1)  # another peer's file now: kept
    assert (tmp_path / "api.json").exists()
    remove_api_json(tmp_path)
    assert not (tmp_path / "api.json").exists()
