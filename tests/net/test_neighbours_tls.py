"""LinkManager over TLS, and how links end or are kept (peer/net/neighbours.py, DESIGN §4).

Real LinkManagers and drivers; TLS servers on 127.0.0.1 port 0.  TLS links need no signalling,
so they are also the quick way to link peers for the closing and keeping rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from peer.net.neighbours import CLOSE_TEXT, LinkRefused
from peer.transport.tls import connect_tls
from peer.wire.commands import CellCommand
from peer.wire.linkcells import LinkCloseCode, LinkClosing, LinkKeep
from tests.links.support import wait_for
from tests.net.neighbours_support import GUARD, Lab, LinkPeer, MakeRoom, Relay

HOST = "127.0.0.1"


async def tls_link(a: LinkPeer, b: LinkPeer) -> tuple[str, int]:
    """Link ``a`` to ``b`` over TLS (``b`` listens if it does not yet); ``b``'s TLS address."""
    addr = b.links.tls_server.address if b.links.tls_server else await b.links.listen_tls(HOST, 0)
    await a.links.connect(b.record(tls=addr), None)
    assert await wait_for(lambda: b.linked_to(a), GUARD)
    return addr


async def test_a_tls_link_needs_no_signalling() -> None:
    async with Lab() as lab:
        a, b = lab.peer(), lab.peer()
        addr = await b.links.listen_tls(HOST, 0)
        assert addr[0] == HOST and addr[1] > 0
        n = await a.links.connect(b.record(tls=addr), None)
        assert (n.node_id, n.transport, n.initiator) == (b.node_id, "tls", True)
        assert await wait_for(lambda: b.linked_to(a), GUARD)
        nb = b.links.neighbours[a.node_id]
        assert (nb.transport, nb.initiator) == ("tls", False)
        assert a.changes == [1] and b.changes == [1]


async def test_a_tls_endpoint_held_by_another_peer_is_refused_at_the_handshake() -> None:
    async with Lab() as lab:
        a, b, c = lab.peer(), lab.peer(), lab.peer()
        c_addr = await c.links.listen_tls(HOST, 0)
        with pytest.raises(LinkRefused, match="another identity"):
            await a.links.connect(b.record(tls=c_addr), None)  # b's record, c's address
        assert a.links.count == 0 and not a.links.may_try(b.node_id)
        assert await wait_for(lambda: c.links.count == 0, GUARD)  # c does not keep the link either


async def test_a_full_peer_says_so_over_tls_and_the_dialer_backs_off_briefly() -> None:
    async with Lab() as lab:
        a, c = lab.peer(full_backoff=5.0, failure_backoff=30.0), lab.peer()
        b = lab.peer(max_links=1)
        addr = await tls_link(c, b)
        b.links.make_room = room = MakeRoom(answer=False)
        await a.links.connect(b.record(tls=addr), None)
        # b tells a why (DB_LINK_CLOSING "full"), then closes the link
        assert await wait_for(lambda: a.links.count == 0, GUARD)
        assert a.links.refused == [CLOSE_TEXT[LinkCloseCode.FULL]]
        assert room.asked == [(a.node_id, 2, 0)]
        assert b.links.neighbour_ids() == [c.node_id]
        assert not a.links.may_try(b.node_id)
        a.clock.t += 5.5  # the short back-off of a full peer, not the failure one
        assert a.links.may_try(b.node_id)


async def test_a_full_tls_peer_takes_a_guard_or_a_peer_it_makes_room_for() -> None:
    async with Lab() as lab:
        a, c, d = lab.peer(), lab.peer(), lab.peer()
        b = lab.peer(max_links=1)
        await tls_link(c, b)
        b.links.set_guards({a.node_id})
        await tls_link(a, b)  # a guard: over K
        assert set(b.links.neighbour_ids()) == {a.node_id, c.node_id}
        b.links.make_room = MakeRoom(answer=True, then=lambda: b.links.drop(c.node_id, "room"))
        await tls_link(d, b)
        assert set(b.links.neighbour_ids()) == {a.node_id, d.node_id}
        assert await wait_for(lambda: c.links.count == 0, GUARD)


async def test_at_most_2k_tls_handshakes_run_at_once_and_a_failed_one_is_refused() -> None:
    async with Lab() as lab:
        a, b = lab.peer(), lab.peer(max_links=1)
        addr = await b.links.listen_tls(HOST, 0)
        silent = [await connect_tls(*addr) for _ in range(2)]  # TLS, then never a link handshake
        assert await wait_for(lambda: b.links._accepting_tls == 2, GUARD)  # both are b's now
        with pytest.raises(LinkRefused, match="handshake failed"):
            await a.links.connect(b.record(tls=addr), None)  # a third is closed at once
        assert b.links.count == 0 and b.links.refused == []
        for s in silent:
            await s.close()
        assert await wait_for(lambda: len(b.links.refused) == 2, GUARD)
        assert all(r.startswith("an inbound TLS link failed") for r in b.links.refused)
        a.clock.t += a.links.config.failure_backoff + 1
        await a.links.connect(b.record(tls=addr), None)  # the slots are free again
        assert await wait_for(lambda: b.linked_to(a), GUARD)


async def test_glare_over_tls_keeps_the_link_opened_by_the_lower_nodeid() -> None:
    async with Lab() as lab:
        lo, hi = sorted((lab.peer(), lab.peer()), key=lambda p: p.node_id)
        lo_addr, hi_addr = await lo.links.listen_tls(HOST, 0), await hi.links.listen_tls(HOST, 0)
        await asyncio.gather(
            lo.links.connect(hi.record(tls=hi_addr), None),
            hi.links.connect(lo.record(tls=lo_addr), None),
            return_exceptions=True,  # the losing attempt may fail when its link is closed early
        )

        def settled() -> bool:
            return (
                lo.linked_to(hi)
                and hi.linked_to(lo)
                and len(lo.node.channels) == 1
                and len(hi.node.channels) == 1
            )

        assert await wait_for(settled, GUARD)
        assert lo.links.neighbours[hi.node_id].initiator  # lo opened the link both keep
        assert not hi.links.neighbours[lo.node_id].initiator
        assert lo.links.count == hi.links.count == 1


async def test_drop_tells_the_neighbour_why_then_closes() -> None:
    async with Lab() as lab:
        a, b = lab.peer(), lab.peer()
        await tls_link(a, b)
        a.links.drop(b.node_id, "rotation: links are replaced slowly")
        assert a.links.neighbour_ids() == [] and a.links.chan_of(b.node_id) is None
        assert a.links.dropped == ["rotation: links are replaced slowly"] and a.changes == [1, 0]
        assert await wait_for(lambda: b.links.count == 0, GUARD)
        assert b.links.dropped == [CLOSE_TEXT[LinkCloseCode.ROTATED]]
        assert b.links.may_try(a.node_id)  # a rotation is no reason to wait
        assert b.changes == [1, 0]
        a.links.drop(b.node_id, "again")  # no link: nothing to do
        assert a.links.dropped == ["rotation: links are replaced slowly"]


async def test_drop_because_full_makes_the_neighbour_back_off_briefly() -> None:
    async with Lab() as lab:
        a, b = lab.peer(), lab.peer(full_backoff=5.0, failure_backoff=30.0)
        await tls_link(a, b)
        a.links.drop(b.node_id, "full", LinkCloseCode.FULL)
        assert await wait_for(lambda: b.links.count == 0, GUARD)
        assert b.links.refused == [CLOSE_TEXT[LinkCloseCode.FULL]] and b.links.dropped == []
        assert not b.links.may_try(a.node_id)
        b.clock.t += 5.5
        assert b.links.may_try(a.node_id)


async def test_a_closing_notice_with_an_unknown_code_is_noted_and_one_on_no_link_is_ignored() -> None:
    async with Lab() as lab:
        a, b = lab.peer(), lab.peer()
        await tls_link(a, b)
        chan = a.links.chan_of(b.node_id)
        assert chan is not None
        a.node.send_link_message(chan, CellCommand.DB_LINK_CLOSING, LinkClosing(99, "?").encode_payload())
        a.driver.flush()
        assert await wait_for(lambda: b.links.dropped, GUARD)
        assert b.links.dropped == ["closed by the peer"] and b.links.may_try(a.node_id)
        b.links.on_link_closing(12345, LinkClosing(LinkCloseCode.SHUTDOWN))  # no such link
        assert b.links.dropped == ["closed by the peer"] and b.links.backoff == {}
        assert b.linked_to(a)  # a notice alone closes nothing


async def said_after(sender: LinkPeer, to: LinkPeer) -> None:
    """Wait until ``to`` has read what ``sender`` sent it so far: ``sender`` says one more thing on the
    same link (a closing notice with an unknown code, which closes nothing) and ``to`` notes it."""
    chan = sender.links.chan_of(to.node_id)
    assert chan is not None
    before = list(to.links.dropped)
    sender.node.send_link_message(chan, CellCommand.DB_LINK_CLOSING, LinkClosing(99).encode_payload())
    sender.driver.flush()
    assert await wait_for(lambda: to.links.dropped != before, GUARD)


async def test_keep_requests_mark_guard_links_up_to_half_of_k() -> None:
    async with Lab() as lab:
        b = lab.peer(max_links=4)  # at most two links kept for peers whose guard b is
        a, c, d = lab.peer(), lab.peer(), lab.peer()
        for p in (a, c, d):
            await tls_link(p, b)
        a_chan = a.links.chan_of(b.node_id)
        assert a_chan is not None
        a.node.send_link_message(a_chan, CellCommand.DB_LINK_KEEP, LinkKeep(0).encode_payload())  # no flag
        await said_after(a, b)
        assert b.links.kept_ids() == set()
        for p in (a, c, d):
            p.links.set_guards({b.node_id})
            await said_after(p, b)
        assert b.links.kept_ids() == {a.node_id, c.node_id}  # half of K: d's request is not granted
        a.links.set_guards({b.node_id})  # unchanged guards: a says nothing new, and stays kept
        await said_after(a, b)
        assert b.links.kept_ids() == {a.node_id, c.node_id}
        b.links.on_link_keep(12345, LinkKeep())  # no such link: ignored
        assert b.links.kept_ids() == {a.node_id, c.node_id}
        assert a.links.guards == c.links.guards == d.links.guards == {b.node_id}


async def test_a_link_that_ends_leaves_the_table_and_is_recorded() -> None:
    async with Lab() as lab:
        a, b = lab.peer(), lab.peer()
        await tls_link(a, b)
        chan = a.links.chan_of(b.node_id)
        await b.links.neighbours[a.node_id].link.close()  # b's end goes away without a word
        assert await wait_for(lambda: a.links.count == 0 and b.links.count == 0, GUARD)
        assert a.changes == [1, 0] and a.links.dropped == []
        assert {"kind": "neighbour_closed", "chan": chan} in a.recorded
        a.links.channel_closed(12345)  # an unknown channel: nothing happens
        assert a.changes == [1, 0]


def unlinked(p: LinkPeer) -> Callable[[], bool]:
    return lambda: p.links.count == 0 and not p.links.ordb_links


async def test_close_says_shutdown_to_every_link_and_stops_listening() -> None:
    async with Lab() as lab:
        a, b = lab.peer(), lab.peer(full_backoff=5.0, failure_backoff=30.0)
        c = lab.peer("127.65.0.1", failure_backoff=30.0)
        a_addr = await a.links.listen_tls(HOST, 0)
        await tls_link(b, a)
        await a.links.connect(c.record(), Relay(a, c).via(a), purpose=1)  # an ORDB link, over WebRTC
        assert await wait_for(lambda: a.node_id in c.links.ordb_links, GUARD)
        await a.links.close()
        assert a.links.neighbours == {} and a.links.ordb_links == {}
        for p in (b, c):
            assert await wait_for(unlinked(p), GUARD)
            assert p.links.dropped == [CLOSE_TEXT[LinkCloseCode.SHUTDOWN]]
            assert not p.links.may_try(a.node_id)  # a stopping peer is not asked again soon
            p.clock.t += 31.0
            assert p.links.may_try(a.node_id)
        with pytest.raises(LinkRefused):
            await b.links.connect(a.record(tls=a_addr), None)  # nobody listens any more


async def test_an_async_on_change_hook_runs_for_each_change() -> None:
    async with Lab() as lab:
        a, b = lab.peer(), lab.peer()
        seen: list[list[bytes]] = []

        async def changed() -> None:  # as the runtime's hook is: it re-publishes our record
            seen.append(a.links.neighbour_ids())

        a.links.on_change = changed
        await tls_link(a, b)
        assert await wait_for(lambda: seen == [[b.node_id]], GUARD)
        a.links.drop(b.node_id, "rotation")
        assert await wait_for(lambda: seen == [[b.node_id], []], GUARD)
