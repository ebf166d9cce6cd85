"""The number tables (tor-spec §3, §5.4, §6.1, §6.3, §5.1.2; C tor or.h)."""

from __future__ import annotations

import enum

import pytest

from peer.wire.commands import CellCommand, DestroyReason, EndReason, LinkSpecType, RelayCommand, is_variable


@pytest.mark.parametrize("table", [CellCommand, RelayCommand, DestroyReason, EndReason, LinkSpecType])
def test_no_number_is_used_twice(table: type[enum.IntEnum]) -> None:
    # an IntEnum silently turns a repeated value into an alias: catch that here
    assert len(table.__members__) == len({m.value for m in table.__members__.values()})
    assert all(0 <= m.value <= 0xFF for m in table)


def test_spot_checks_against_the_spec() -> None:
    assert (RelayCommand.EXTEND2, RelayCommand.EXTENDED2) == (14, 15)
    assert (RelayCommand.XOFF, RelayCommand.XON) == (43, 44)  # C tor or.h
    assert RelayCommand.INTRODUCE_ACK == 40 and RelayCommand.PADDING_NEGOTIATED == 42
    assert DestroyReason.NOSUCHSERVICE == 12 and EndReason.NOTDIRECTORY == 14
    assert CellCommand.AUTHORIZE == 132 and LinkSpecType.ED25519_ID == 3


def test_private_blocks_do_not_collide_with_tor() -> None:
    tor_relay = [c for c in RelayCommand if not c.name.startswith("DB_")]
    assert max(tor_relay) < 200 <= min(c for c in RelayCommand if c.name.startswith("DB_"))
    private_cells = [c for c in CellCommand if c.name.startswith("DB_")]
    assert all(c >= 200 and is_variable(c) for c in private_cells)
    assert LinkSpecType.PEER_NODE_ID not in (0, 1, 2, 3)


def test_is_variable() -> None:
    assert is_variable(7) and is_variable(128) and is_variable(255)
    assert not any(is_variable(c) for c in (0, 3, 6, 8, 9, 10, 11, 12, 127))
