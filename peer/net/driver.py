"""The asyncio driver: pumps an :class:`~peer.proto.node.OnionNode` over real ``Link``s.

This is the only place where the onion core meets asyncio.  Each link gets a reader
task (bytes in -> node) and a writer task (node's queued cells -> link, packed into
messages of whole cells).  Reading never waits on writing, so two busy neighbours
cannot deadlock; memory stays bounded because the SENDME windows bound what the
core queues.  Exit streams (BEGIN at this node) are served by TCP connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from peer.errors import LinkClosed, PeerError, Retry
from peer.net.recorder import Recorder
from peer.proto import events as ev
from peer.proto.channel import HandshakeConfig, LivenessConfig
from peer.proto.circuit import HopSpec
from peer.proto.node import OnionNode
from peer.proto.peerinfo import PeerInfo
from peer.transport.base import Link
from peer.wire.commands import EndReason

log = logging.getLogger(__name__)

#: Largest message the writer packs (whole cells only): 31 fixed cells.
PACK_BYTES = 31 * 514


class CircuitError(PeerError):
    kind = "circuit"
    retry = Retry.IMMEDIATE


class StreamError(PeerError):
    kind = "stream"
    retry = Retry.IMMEDIATE

    def __init__(self, message: str, end_reason: int | None = None) -> None:
        super().__init__(message)
        self.end_reason = end_reason


@dataclass(eq=False)
class _ChanState:
    link: Link
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # the writer has handed on everything
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    opened: asyncio.Future[PeerInfo] | None = None


class OnionStream:
    """A stream through a circuit, with asyncio read/write and back-pressure both ways."""

    def __init__(self, driver: NodeDriver, circ: int, stream_id: int) -> None:
        self._d = driver
        self.circ = circ
        self.stream_id = stream_id
        self._rx: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._buffer = b""
        self._writable = asyncio.Event()
        self._writable.set()
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: str | None = None
        self.end_reason: int | None = None
        self._eof = False

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all buffered with -1); b"" at a clean end; StreamError otherwise."""
        if not self._buffer:
            if self._eof:
                return self._end()
            item = await self._rx.get()
            if item is None:
                self._eof = True
                return self._end()
            self._buffer = item
            self._d.node.stream_consumed(self.circ, self.stream_id, 1)
            self._d.flush()
        if n < 0 or n >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def _end(self) -> bytes:
        if self.error:
            raise StreamError(self.error, self.end_reason)
        return b""

    async def readexactly(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n > 0:
            chunk = await self.read(n)
            if not chunk:
                raise StreamError("stream ended early")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    async def write(self, data: bytes) -> None:
        if self._eof:
            raise StreamError(self.error or "stream closed")
        await self._writable.wait()
        if self._eof:
            raise StreamError(self.error or "stream closed")
        try:
            ok = self._d.node.stream_send(self.circ, self.stream_id, data)
        except PeerError as exc:
            raise StreamError(str(exc)) from exc
        if not ok:
            self._writable.clear()
        self._d.flush()

    async def close(self) -> None:
        self._d.node.stream_close(self.circ, self.stream_id)
        self._d.flush()

    # called by the driver
    def _on_data(self, data: bytes) -> None:
        self._rx.put_nowait(data)

    def _on_end(self, error: str | None, reason: int | None = None) -> None:
        if self.error is None:
            self.error = error
            self.end_reason = reason
        self._rx.put_nowait(None)
        self._writable.set()
        if not self.connected.done():
            self.connected.set_exception(StreamError(error or "stream refused", reason))
            self.connected.exception()  # mark retrieved: nobody may be waiting any more


class NodeDriver:
    """Runs one :class:`OnionNode` on the event loop.

    ``recorder`` (test only, DESIGN §11) gets the neighbours this driver sees and the node's
    :class:`~peer.proto.events.Observed` records (the node emits them with ``NodeConfig.record``).
    """

    def __init__(
        self,
        node: OnionNode,
        *,
        clock: Callable[[], float] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.node = node
        self.recorder = recorder
        self._loop = asyncio.get_running_loop()
        self._clock = clock or self._loop.time
        self._chans: dict[int, _ChanState] = {}
        self._built: dict[int, asyncio.Future[int]] = {}
        self._streams: dict[tuple[int, int], OnionStream] = {}
        self._exit_tasks: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.bytes_in = 0  # link bytes received and sent, all channels (the UI's bandwidth chart)
        self.bytes_out = 0
        self.on_event: Callable[[ev.Event], None] | None = None
        # (name asked, address it resolved to, port): may the exit connect there?
        self.allow_exit_to: Callable[[str, str, int], bool] = _loopback_only

    def now(self) -> float:
        return self._clock()

    # ---- links ---------------------------------------------------------------------------
    def add_link(
        self, link: Link, handshake: HandshakeConfig, *, liveness: LivenessConfig | None = None
    ) -> int:
        chan = self.node.add_channel(
            initiator=link.initiator,
            handshake=handshake,
            now=self.now(),
            framed=link.framed,
            liveness=liveness,
        )
        st = _ChanState(link)
        st.opened = self._loop.create_future()
        self._chans[chan] = st
        st.tasks.append(self._loop.create_task(self._reader(chan, st)))
        st.tasks.append(self._loop.create_task(self._writer(chan, st)))
        self.flush()
        return chan

    async def close_channel_after_output(self, chan: int, reason: str, timeout: float = 2.0) -> None:
        """Close a channel once the cells queued on it (a last DB_LINK_CLOSING) are handed to
        its link, or after ``timeout`` seconds (a link that no longer drains)."""
        st = self._chans.get(chan)
        self.flush()
        if st is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while chan in self.node.channels and (
                        chan in self.node.channels_with_output() or not st.idle.is_set()
                    ):
                        await asyncio.sleep(0.01)
        self.node.close_channel(chan, reason)
        self.flush()

    async def wait_open(self, chan: int, timeout: float = 30.0) -> PeerInfo:
        st = self._chans.get(chan)
        if st is None or st.opened is None:
            raise CircuitError("no such channel")
        return await asyncio.wait_for(asyncio.shield(st.opened), timeout)

    async def _reader(self, chan: int, st: _ChanState) -> None:
        try:
            while True:
                data = await st.link.recv()
                self.bytes_in += len(data)
                self.node.channel_receive(chan, data, self.now())
                self.flush()
        except LinkClosed:
            self.node.channel_lost(chan, "link closed")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a transport failure closes only this channel
            log.warning("link reader failed: %s", type(exc).__name__)
            self.node.channel_lost(chan, f"link failed: {type(exc).__name__}")
        self.flush()

    async def _writer(self, chan: int, st: _ChanState) -> None:
        try:
            while True:
                st.idle.set()
                await st.wake.wait()
                st.idle.clear()
                st.wake.clear()
                for msg in self.node.pop_messages(chan, PACK_BYTES):
                    await st.link.send(msg)
                    self.bytes_out += len(msg)
        except LinkClosed:
            self.node.channel_lost(chan, "link closed")
            self.flush()
        except asyncio.CancelledError:
            raise

    # ---- the pump ------------------------------------------------------------------------------
    def flush(self) -> None:
        """Hand on what the node produced: dispatch its events, wake writers with output, re-arm
        the timer.  Call after driving the node directly (opening a stream, sending a message)."""
        for e in self.node.pop_events():
            self._dispatch(e)
        for chan in self.node.channels_with_output():
            st = self._chans.get(chan)
            if st is not None:
                st.wake.set()
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._closed:
            return
        when = self.node.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            delay = max(0.0, when - self.now())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.node.handle_timer(self.now())
        self.flush()

    def _dispatch(self, e: ev.Event) -> None:
        if isinstance(e, ev.ChannelOpened):
            st = self._chans.get(e.chan)
            if self.recorder is not None and st is not None:
                self.recorder(
                    {
                        "kind": "neighbour",
                        "chan": e.chan,
                        "node_id": e.peer.node_id,
                        "addr": st.link.remote_address,
                    }
                )
            if st is not None and st.opened is not None and not st.opened.done():
                st.opened.set_result(e.peer)
        elif isinstance(e, ev.ChannelClosed):
            st = self._chans.pop(e.chan, None)
            if st is not None:
                if st.opened is not None and not st.opened.done():
                    st.opened.set_exception(CircuitError(f"link handshake failed: {e.reason}"))
                for t in st.tasks:
                    t.cancel()
                closing = self._loop.create_task(st.link.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        elif isinstance(e, ev.CircuitBuilt):
            fut = self._built.pop(e.circ, None)
            if fut is not None and not fut.done():
                fut.set_result(e.circ)
        elif isinstance(e, ev.CircuitClosed):
            fut = self._built.pop(e.circ, None)
            if fut is not None and not fut.done():
                fut.set_exception(CircuitError(f"circuit failed: {e.message} (reason {e.reason})"))
        elif isinstance(e, ev.StreamConnected):
            s = self._streams.get((e.circ, e.stream_id))
            if s is not None and not s.connected.done():
                s.connected.set_result(None)
        elif isinstance(e, ev.StreamDataReceived):
            s = self._streams.get((e.circ, e.stream_id))
            if s is not None:
                s._on_data(e.data)
        elif isinstance(e, ev.StreamEnded):
            s = self._streams.pop((e.circ, e.stream_id), None)
            if s is not None:
                err = None if (e.remote and e.reason == EndReason.DONE) else _end_message(e)
                s._on_end(err, e.reason if e.remote else None)
            self._exit_tasks.pop((e.circ, e.stream_id), None)
        elif isinstance(e, ev.StreamWritable):
            s = self._streams.get((e.circ, e.stream_id))
            if s is not None:
                s._writable.set()
        elif isinstance(e, ev.ExitConnectRequested):
            key = (e.circ, e.stream_id)
            stream = OnionStream(self, e.circ, e.stream_id)
            self._streams[key] = stream
            self._exit_tasks[key] = self._loop.create_task(self._serve_exit(e, stream))
        elif isinstance(e, ev.Observed):
            if self.recorder is not None:
                self.recorder(e.record())
            return
        if self.on_event is not None:
            self.on_event(e)

    # ---- OP API -----------------------------------------------------------------------------
    async def build_circuit(self, chan: int, path: list[HopSpec], timeout: float = 30.0) -> int:
        handle = self.node.build_circuit(chan, path)
        fut: asyncio.Future[int] = self._loop.create_future()
        self._built[handle] = fut
        self.flush()
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.node.destroy_circuit(handle)
            self.flush()
            raise CircuitError(f"circuit build timed out after {timeout:.0f} s") from None

    def destroy_circuit(self, circ: int) -> None:
        self.node.destroy_circuit(circ)
        self.flush()

    async def open_stream(self, circ: int, host: str, port: int, timeout: float = 30.0) -> OnionStream:
        try:
            sid = self.node.open_stream(circ, host, port)
        except PeerError as exc:
            raise CircuitError(str(exc)) from exc
        s = OnionStream(self, circ, sid)
        self._streams[(circ, sid)] = s
        self.flush()
        try:
            await asyncio.wait_for(asyncio.shield(s.connected), timeout)
        except TimeoutError:
            await s.close()
            raise StreamError(f"stream to port {port} timed out after {timeout:.0f} s") from None
        return s

    # ---- exit side ----------------------------------------------------------------------------
    async def _serve_exit(self, e: ev.ExitConnectRequested, stream: OnionStream) -> None:
        """Connect to the destination a BEGIN asked for and pump bytes both ways."""
        try:
            address = await asyncio.wait_for(self._resolve_checked(e.host, e.port), 15)
        except (OSError, TimeoutError):
            address = ""
        if not address:
            self._streams.pop((e.circ, e.stream_id), None)
            reason = EndReason.RESOLVEFAILED if address == "" else EndReason.EXITPOLICY
            self.node.exit_failed(e.circ, e.stream_id, reason)
            self.flush()
            return
        try:  # exactly the address checked: no second resolution
            reader, writer = await asyncio.wait_for(asyncio.open_connection(address, e.port), 15)
        except (OSError, TimeoutError):
            self._streams.pop((e.circ, e.stream_id), None)
            self.node.exit_failed(e.circ, e.stream_id, EndReason.CONNECTREFUSED)
            self.flush()
            return
        try:
            addr: bytes | None = ipaddress.ip_address(writer.get_extra_info("peername")[0]).packed
        except (ValueError, TypeError, IndexError):
            addr = None
        self.node.exit_connected(e.circ, e.stream_id, addr if addr and len(addr) == 4 else None)
        self.flush()

        async def upstream() -> None:  # circuit -> TCP
            with contextlib.suppress(StreamError):  # an OP's END says MISC; or the circuit closed
                while data := await stream.read():
                    writer.write(data)
                    await writer.drain()
            writer.close()  # END closes a stream completely (docs/circuits.md): the connection too

        async def downstream() -> None:  # TCP -> circuit
            while True:
                data = await reader.read(64 * 1024)
                if not data:
                    break
                await stream.write(data)
            await stream.close()

        up = self._loop.create_task(upstream())
        try:
            await downstream()
            with contextlib.suppress(PeerError, OSError):
                await up
        except (PeerError, OSError):
            self.node.exit_failed(e.circ, e.stream_id, EndReason.CONNRESET)
            self.flush()
        finally:
            up.cancel()
            writer.close()

    async def _resolve_checked(self, host: str, port: int) -> str | None:
        """The address to connect to: ``host`` resolved, and every address it resolved to
        allowed by :attr:`allow_exit_to`; None if one is refused (a name that resolves to a
        public and a local address is refused whole); OSError if it does not resolve."""
        infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise OSError(f"{host!r} resolved to no address")
        if not all(self.allow_exit_to(host, a, port) for a in addresses):
            return None
        return addresses[0]

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for chan in list(self._chans):
            self.node.close_channel(chan, "shutting down")
        self.flush()
        for t in list(self._exit_tasks.values()):
            t.cancel()
        for st in list(self._chans.values()):
            for t in st.tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                await st.link.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _end_message(e: ev.StreamEnded) -> str:
    if not e.remote:
        return "circuit closed"
    try:
        name = EndReason(e.reason).name
    except ValueError:
        name = str(e.reason)
    return f"stream ended by the remote side: {name}"


def _loopback_only(name: str, address: str, port: int) -> bool:
    """The exit's guard by default (tests and demos): resolved loopback addresses only."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)
