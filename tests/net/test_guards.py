"""Our guards (peer.net.guards, DESIGN §5): stable peers only, the ones we are linked to first,
kept while they stay usable, filled with unlinked stable peers, and kept in DATA/guards.json
(0600) across restarts; a damaged file is ignored, never fatal."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from peer.net.guards import GUARDS_FILE, Guards


def nid(n: int) -> bytes:
    return bytes([n]) * 20


A, B, C, D, E = (nid(n) for n in (1, 2, 3, 4, 5))


def on_disk(data_dir: Path) -> list[bytes]:
    return [bytes.fromhex(h) for h in json.loads((data_dir / GUARDS_FILE).read_text())["guards"]]


def test_linked_stable_peers_come_first(tmp_path: Path) -> None:
    g = Guards(tmp_path)
    # E is linked but not stable: never a guard; D and C are linked and stable
    assert g.choose({A, B, C, D}, [E, D, C]) is True
    assert g.ids == [D, C]
    assert E not in g and D in g and C in g


def test_unlinked_stable_peers_fill_in_when_too_few_are_linked(tmp_path: Path) -> None:
    g = Guards(tmp_path, count=3)
    assert g.choose({A, B, C, D}, [C]) is True
    assert g.ids == [C, A, B]  # the linked one, then the others in a stable order


def test_guards_are_kept_while_linked_and_stable(tmp_path: Path) -> None:
    g = Guards(tmp_path)
    g.choose({A, B, C, D}, [B, A])
    assert g.ids == [B, A]
    # more linked stable peers show up, listed first: the guards we have stay, in their order
    assert g.choose({A, B, C, D}, [C, D, A, B]) is False
    assert g.ids == [B, A]


def test_an_unlinked_guard_gives_way_to_a_linked_stable_peer(tmp_path: Path) -> None:
    g = Guards(tmp_path)
    g.choose({A, B, C}, [])  # nothing linked yet: A and B fill in
    assert g.ids == [A, B]
    assert g.choose({A, B, C}, [C, B]) is True
    assert g.ids == [B, C]


def test_an_unlinked_guard_is_kept_before_other_unlinked_peers(tmp_path: Path) -> None:
    g = Guards(tmp_path)
    g.choose({C, D, E}, [E, D])
    assert g.ids == [E, D]
    # both links went away: E and D stay (the link manager keeps trying them), not A and B
    assert g.choose({A, B, C, D, E}, []) is False
    assert g.ids == [E, D]


def test_a_guard_that_is_no_longer_stable_is_replaced(tmp_path: Path) -> None:
    g = Guards(tmp_path)
    g.choose({A, B, C}, [A, B])
    assert g.choose({B, C}, [A, B]) is True
    assert g.ids == [B, C]


def test_guards_are_saved_privately_and_read_back(tmp_path: Path) -> None:
    g = Guards(tmp_path)
    g.choose({A, B, C}, [C, A])
    path = tmp_path / GUARDS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert on_disk(tmp_path) == [C, A]
    again = Guards(tmp_path)
    assert again.ids == [C, A]
    # after a restart, the saved guards are kept while they are usable
    assert again.choose({A, B, C, D}, [D, A, C]) is False and again.ids == [C, A]


def test_an_unchanged_choice_writes_nothing(tmp_path: Path) -> None:
    g = Guards(tmp_path)
    g.choose({A, B}, [A, B])
    (tmp_path / GUARDS_FILE).unlink()
    assert g.choose({A, B}, [A, B]) is False
    assert not (tmp_path / GUARDS_FILE).exists()


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'{"other": []}', b'{"guards": ["zz"]}', b'{"guards": [7]}', b"\xff\xfe"],
    ids=["not-json", "a-list", "no-guards-key", "bad-hex", "not-a-string", "not-utf8"],
)
def test_a_damaged_guards_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    (tmp_path / GUARDS_FILE).write_bytes(content)
    g = Guards(tmp_path)
    assert g.ids == []
    assert g.choose({A, B}, [B]) is True
    assert on_disk(tmp_path) == [B, A]  # the damaged file is replaced by a good one


def test_no_file_means_no_guards_yet(tmp_path: Path) -> None:
    g = Guards(tmp_path / "missing")
    assert g.ids == [] and A not in g
