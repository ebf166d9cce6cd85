"""Command and reason numbers: the one table of every number that goes on the wire.

Sources (numbers were read in these texts, not recalled):

- Cell commands: tor-spec §3 "Cell Packet format" and C tor ``src/core/or/or.h``
  (``CELL_PADDING`` 0 ... ``CELL_AUTHORIZE`` 132).
- Relay commands: tor-spec §6.1 "Relay cells" (1-15, the reserved blocks 16-18 UDP/prop 339,
  19-22 conflux/prop 329, 32-40 onion services/rend-spec-v3, 41-42 circuit padding/padding-spec §3)
  and C tor ``src/core/or/or.h`` (``RELAY_COMMAND_*``), which also names 16-18 as in Arti's
  ``tor-cell`` ``RelayCmd`` (CONNECT_UDP, CONNECTED_UDP, DATAGRAM).
  XOFF/XON: C tor ``or.h`` has ``RELAY_COMMAND_XOFF 43`` and ``RELAY_COMMAND_XON 44`` (prop 324 §4);
  the 2023 ``tor-spec.txt`` table lists them the other way round, but relays run ``or.h``.
- DESTROY reasons: tor-spec §5.4 "Tearing down circuits" (``END_CIRC_REASON_*`` in ``or.h``).
- END reasons: tor-spec §6.3 "Closing streams" (``END_STREAM_REASON_*`` in ``or.h``).
- Link specifier types: tor-spec §5.1.2 "EXTEND and EXTENDED cells".

Private numbers (DESIGN §4-5): link-level cells 200-206 (docs/bridge.md) and relay commands 200-204, from
blocks tor leaves unassigned; link specifier type 0xC8 for "peer by NodeID" (tor relays
ignore unknown specifier types, tor-spec §5.1.2).

Decoders keep unknown numbers as plain ``int`` (tor says to drop unknown cells and
ignore unknown reasons); compare them with these enums, never convert blindly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TypeVar

from peer.errors import UsageError

__all__ = [
    "CellCommand",
    "DestroyReason",
    "EndReason",
    "LinkSpecType",
    "RelayCommand",
    "build_registry",
    "is_variable",
]


class CellCommand(enum.IntEnum):
    """Cell commands (tor-spec §3), plus our private link-level cells (DESIGN §4)."""

    # fixed-length cells
    PADDING = 0
    CREATE = 1
    CREATED = 2
    RELAY = 3
    DESTROY = 4
    CREATE_FAST = 5
    CREATED_FAST = 6
    VERSIONS = 7  # variable-length, despite its number
    NETINFO = 8
    RELAY_EARLY = 9
    CREATE2 = 10
    CREATED2 = 11
    PADDING_NEGOTIATE = 12
    # variable-length cells (command >= 128)
    VPADDING = 128
    CERTS = 129
    AUTH_CHALLENGE = 130
    AUTHENTICATE = 131
    AUTHORIZE = 132
    # private variable-length link cells (bridges and introducers, DESIGN §4)
    DB_FIND_PEER = 200
    DB_FOUND_PEER = 201
    DB_INTRODUCE = 202
    DB_INTRODUCED = 203
    DB_HELLO = 204
    DB_REGISTER = 205
    DB_REGISTERED = 206
    DB_LINK_CLOSING = 207
    DB_LINK_KEEP = 208


def is_variable(command: int) -> bool:
    """True for variable-length cells: VERSIONS (7) and every command >= 128 (tor-spec §3)."""
    return command == 7 or command >= 128


class RelayCommand(enum.IntEnum):
    """Relay commands (tor-spec §6.1; C tor ``or.h``), plus our private block from 200."""

    BEGIN = 1
    DATA = 2
    END = 3
    CONNECTED = 4
    SENDME = 5
    EXTEND = 6
    EXTENDED = 7
    TRUNCATE = 8
    TRUNCATED = 9
    DROP = 10
    RESOLVE = 11
    RESOLVED = 12
    BEGIN_DIR = 13
    EXTEND2 = 14
    EXTENDED2 = 15
    # 16-18: UDP, prop 339 (reserved, not in use by tor)
    CONNECT_UDP = 16
    CONNECTED_UDP = 17
    DATAGRAM = 18
    # 19-22: conflux, prop 329
    CONFLUX_LINK = 19
    CONFLUX_LINKED = 20
    CONFLUX_LINKED_ACK = 21
    CONFLUX_SWITCH = 22
    # 32-40: onion services, rend-spec-v3
    ESTABLISH_INTRO = 32
    ESTABLISH_RENDEZVOUS = 33
    INTRODUCE1 = 34
    INTRODUCE2 = 35
    RENDEZVOUS1 = 36
    RENDEZVOUS2 = 37
    INTRO_ESTABLISHED = 38
    RENDEZVOUS_ESTABLISHED = 39
    INTRODUCE_ACK = 40
    # 41-42: circuit padding, padding-spec §3
    PADDING_NEGOTIATE = 41
    PADDING_NEGOTIATED = 42
    # 43-44: stream flow control, prop 324 §4 (values as in C tor or.h)
    XOFF = 43
    XON = 44
    # private block (DESIGN §5, tor-protocol.md §8): ORDB protocol, bodies in docs/ordb-protocol.md
    DB_INFO = 200
    DB_QUERY = 201
    DB_CONNECTED = 202
    DB_DATA = 203
    DB_END = 204


class DestroyReason(enum.IntEnum):
    """DESTROY / RELAY_TRUNCATED reasons (tor-spec §5.4)."""

    NONE = 0
    PROTOCOL = 1
    INTERNAL = 2
    REQUESTED = 3
    HIBERNATING = 4
    RESOURCELIMIT = 5
    CONNECTFAILED = 6
    OR_IDENTITY = 7
    CHANNEL_CLOSED = 8
    FINISHED = 9
    TIMEOUT = 10
    DESTROYED = 11
    NOSUCHSERVICE = 12


class EndReason(enum.IntEnum):
    """RELAY_END reasons (tor-spec §6.3)."""

    MISC = 1
    RESOLVEFAILED = 2
    CONNECTREFUSED = 3
    EXITPOLICY = 4
    DESTROY = 5
    DONE = 6
    TIMEOUT = 7
    NOROUTE = 8
    HIBERNATING = 9
    INTERNAL = 10
    RESOURCELIMIT = 11
    CONNRESET = 12
    TORPROTOCOL = 13
    NOTDIRECTORY = 14


class LinkSpecType(enum.IntEnum):
    """EXTEND2 link specifier types (tor-spec §5.1.2), plus our private "peer by NodeID"."""

    IPV4 = 0
    IPV6 = 1
    LEGACY_ID = 2
    ED25519_ID = 3
    PEER_NODE_ID = 0xC8


_V = TypeVar("_V")


def build_registry(entries: Iterable[tuple[int, _V]], what: str) -> Mapping[int, _V]:
    """A read-only ``{number: value}`` table; a number given twice is a bug, refused at import."""
    table: dict[int, _V] = {}
    for number, value in entries:
        if number in table:
            raise UsageError(f"duplicate {what} number {number}")
        table[int(number)] = value
    return MappingProxyType(table)
