"""Hypothesis strategies for every wire message class (shared by the tests in this folder)."""

from __future__ import annotations

from hypothesis import strategies as st

from peer.wire import cells, linkspec, relay
from peer.wire.commands import LinkSpecType, is_variable

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)


def fixed_bytes(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


# --------------------------------------------------------------------------- link specifiers

_KNOWN_LSTYPES = {int(t) for t in LinkSpecType}


def link_specs(max_unknown: int = 255) -> st.SearchStrategy[linkspec.LinkSpec]:
    return st.one_of(
        st.builds(linkspec.LinkSpecIPv4, fixed_bytes(4), u16),
        st.builds(linkspec.LinkSpecIPv6, fixed_bytes(16), u16),
        st.builds(linkspec.LinkSpecLegacyId, fixed_bytes(20)),
        st.builds(linkspec.LinkSpecEd25519, fixed_bytes(32)),
        st.builds(linkspec.LinkSpecPeerNodeId, fixed_bytes(20)),
        st.builds(
            linkspec.LinkSpecUnknown,
            u8.filter(lambda t: t not in _KNOWN_LSTYPES),
            st.binary(max_size=max_unknown),
        ),
    )


# small enough that an EXTEND2 always fits one relay cell (498 bytes)
link_spec_lists = st.lists(link_specs(max_unknown=40), max_size=4).map(tuple)

# --------------------------------------------------------------------------- cell messages

net_addresses = st.one_of(
    st.builds(cells.NetAddress, st.just(4), fixed_bytes(4)),
    st.builds(cells.NetAddress, st.just(6), fixed_bytes(16)),
    st.builds(cells.NetAddress, u8.filter(lambda t: t not in (4, 6)), st.binary(max_size=20)),
)

CELL_MESSAGES: dict[type, st.SearchStrategy[cells.CellMessage]] = {
    cells.Padding: st.just(cells.Padding()),
    cells.VPadding: st.builds(cells.VPadding, st.binary(max_size=600)),
    cells.Versions: st.builds(cells.Versions, st.lists(u16, max_size=40).map(tuple)),
    cells.Certs: st.builds(
        cells.Certs,
        st.lists(st.builds(cells.CertEntry, u8, st.binary(max_size=300)), max_size=6).map(tuple),
    ),
    cells.AuthChallenge: st.builds(
        cells.AuthChallenge, fixed_bytes(32), st.lists(u16, max_size=10).map(tuple)
    ),
    cells.Authenticate: st.builds(cells.Authenticate, u16, st.binary(max_size=400)),
    cells.Authorize: st.builds(cells.Authorize, st.binary(max_size=300)),
    cells.Netinfo: st.builds(
        cells.Netinfo, u32, net_addresses, st.lists(net_addresses, max_size=5).map(tuple)
    ),
    cells.PaddingNegotiate: st.builds(cells.PaddingNegotiate, u8, u8, u16, u16),
    cells.Create2: st.builds(cells.Create2, u16, st.binary(max_size=505)),
    cells.Created2: st.builds(cells.Created2, st.binary(max_size=507)),
    cells.CreateFast: st.builds(cells.CreateFast, fixed_bytes(20)),
    cells.CreatedFast: st.builds(cells.CreatedFast, fixed_bytes(20), fixed_bytes(20)),
    cells.Destroy: st.builds(cells.Destroy, u8),
    cells.Relay: st.builds(cells.Relay, fixed_bytes(509)),
    cells.RelayEarly: st.builds(cells.RelayEarly, fixed_bytes(509)),
    cells.FindPeer: st.builds(cells.FindPeer, fixed_bytes(20)),
    cells.FoundPeer: st.builds(cells.FoundPeer, st.lists(st.binary(max_size=200), max_size=8).map(tuple)),
    cells.Introduce: st.builds(cells.Introduce, fixed_bytes(20), st.binary(max_size=800)),
    cells.Introduced: st.builds(cells.Introduced, fixed_bytes(20), st.binary(max_size=800)),
}

# --------------------------------------------------------------------------- relay messages

_host_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="[]:")
hosts = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.text(_host_chars, min_size=1, max_size=30),
)

RELAY_MESSAGES: dict[type, st.SearchStrategy[relay.RelayMessage]] = {
    relay.Begin: st.builds(relay.Begin, hosts, st.integers(1, 0xFFFF), st.none() | u32),
    relay.BeginDir: st.just(relay.BeginDir()),
    relay.Data: st.builds(relay.Data, st.binary(max_size=498)),
    relay.End: st.one_of(
        st.builds(relay.End, u8),
        st.builds(
            relay.End,
            st.just(4),
            st.one_of(fixed_bytes(4), fixed_bytes(16)),
            st.none() | u32,
        ),
    ),
    relay.Connected: st.one_of(
        st.just(relay.Connected()),
        st.builds(relay.Connected, fixed_bytes(4).filter(lambda a: a != bytes(4)), st.none() | u32),
        st.builds(relay.Connected, fixed_bytes(16), u32),
    ),
    relay.Sendme: st.one_of(
        st.just(relay.Sendme()),
        st.builds(relay.Sendme.v1, fixed_bytes(20)),
        st.builds(relay.Sendme, u8.filter(lambda v: v != 1), st.binary(min_size=1, max_size=60)),
    ),
    relay.Extend2: st.builds(relay.Extend2, link_spec_lists, u16, st.binary(max_size=150)),
    relay.Extended2: st.builds(relay.Extended2, st.binary(max_size=300)),
    relay.Truncate: st.just(relay.Truncate()),
    relay.Truncated: st.builds(relay.Truncated, u8),
    relay.Drop: st.builds(relay.Drop, st.binary(max_size=498)),
}

# --------------------------------------------------------------------------- cells


def _cell_for(command: int, circid: int, data: bytes) -> cells.Cell:
    if is_variable(command):
        return cells.Cell(circid, command, data)
    return cells.Cell(circid, command, data[:509].ljust(509, b"\0"))


def canonical_cells(circid_len: int = 4) -> st.SearchStrategy[cells.Cell]:
    """Cells as pull_cell returns them (fixed payloads exactly 509 bytes)."""
    return st.builds(
        _cell_for,
        u8,
        st.integers(0, (1 << (8 * circid_len)) - 1),
        st.binary(max_size=700),
    )


# A fixed cell's payload as it arrives: a body then NULs, or 509 arbitrary bytes.
fixed_payloads = st.one_of(
    st.binary(max_size=509).map(lambda b: b.ljust(509, b"\0")),
    fixed_bytes(509),
)
