"""WebRTC data-channel links over aiortc (DESIGN §4 "Links"; issue 4).

The only module of the project that imports aiortc or aioice.  Each link is one
``RTCPeerConnection`` carrying exactly one reliable, ordered data channel
(negotiated out of band as stream 0, label ``peersm``: no ``maxRetransmits``, no
``maxPacketLifeTime``), because tor1 relay crypto cannot survive loss or reordering.

Signalling is left to the caller (the links issue seals and relays the SDP):

    offerer                                   answerer
    pending, offer = await create_offer(cfg)
                      ---- offer SDP ---->
                                              link, answer = await accept_offer(offer, cfg)
                      <--- answer SDP ----
    link = await pending.complete(answer, t)  await link.wait_open(t)

Behaviour the issue asks for, measured with aiortc 1.16:

* **Send back-pressure.**  ``RTCDataChannel.send`` queues without limit (1.27 GB in
  5 s), so :meth:`WebRtcLink.send` waits while ``bufferedAmount`` is above
  ``WebRtcConfig.send_buffer``, woken by the ``bufferedamountlow`` event.
* **Bounded receive queue.**  aiortc hands every message to us as soon as SCTP
  reassembles it and has no receive-side flow control.  We queue at most
  ``WebRtcConfig.recv_queue_limit`` unread bytes; one more message closes the link
  with :class:`ReceiveQueueOverflow` (the unread data is dropped, ``recv`` raises it,
  and the remote's ``send``/``recv`` raise LinkClosed).  A neighbour that stops
  reading therefore costs at most that much memory here and in the sender.
* **Candidate policy.**  aioice gathers host candidates for every interface address
  except 127.0.0.1; we replace the gathering step of each link's ICE connection so
  that it binds exactly :attr:`IcePolicy.bind` (see ``peer.transport.iceconfig``)
  and checks the resulting SDP before it is returned.  STUN/TURN only when configured.
* **UDP receive buffer.**  Each ICE socket gets ``WebRtcConfig.rcvbuf`` (4 MiB by
  default) through SO_RCVBUFFORCE/SO_RCVBUF, read back; a capped value is logged at
  WARNING and reported in :meth:`WebRtcLink.stats`.
* **Fingerprints.**  ``peer_cert_fingerprint`` is the SHA-256 of the certificate the
  remote presented in the DTLS handshake (read from the DTLS session), and it must
  equal the ``a=fingerprint:sha-256`` of the remote SDP that aiortc verified.

aiortc attributes that are not public API are touched only in the helpers marked
``aiortc internals`` below, and the tests exercise each of them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from cryptography.hazmat.primitives import hashes

from peer.errors import HandshakeError, LinkClosed, TransportError, UsageError
from peer.transport.iceconfig import (
    IcePolicy,
    RcvbufResult,
    WebRtcConfig,
    filter_remote_sdp,
    sdp_fingerprint_sha256,
    set_receive_buffer,
)

log = logging.getLogger(__name__)

#: Label and stream id of the one negotiated data channel of a link.
CHANNEL_LABEL = "peersm"
CHANNEL_ID = 0
#: Default time allowed for ICE + DTLS + SCTP to open a link.
DEFAULT_OPEN_TIMEOUT = 30.0
CLOSE_TIMEOUT = 5.0  # the longest a close waits for aiortc to shut the connection down


class WebRtcError(TransportError):
    """A WebRTC link could not be set up (ICE, DTLS or SCTP failed, or timed out)."""

    kind = "webrtc"


class SdpError(WebRtcError):
    """A remote offer/answer is malformed or not acceptable (wrong media, no fingerprint)."""

    kind = "sdp"


class ReceiveQueueOverflow(LinkClosed):
    """The link was closed because more than ``recv_queue_limit`` bytes were left unread."""

    kind = "recv-overflow"


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LinkStats:
    """A snapshot of one link's counters (no addresses: safe to log)."""

    state: LinkState
    initiator: bool
    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    send_buffered: int
    recv_queued: int
    rcvbuf_requested: int
    rcvbuf_effective: int | None
    rcvbuf_capped: bool
    close_reason: str | None


# ---------------------------------------------------------------------------------------------
# aiortc internals (aiortc 1.16 / aioice 0.13).  Each helper is covered by tests/transport.


def _dtls_transport(pc: RTCPeerConnection) -> Any:
    """The RTCDtlsTransport under the link's data channel."""
    sctp = pc.sctp
    if sctp is None:
        raise WebRtcError("the peer connection has no SCTP transport")
    return sctp.transport


def _ice_connection(pc: RTCPeerConnection) -> Any:
    """The aioice Connection under the link's only ICE transport."""
    return _dtls_transport(pc).transport._connection


def _install_ice_policy(pc: RTCPeerConnection, policy: IcePolicy, rcvbuf: int) -> list[RcvbufResult]:
    """Make the link's ICE gathering bind exactly ``policy.bind`` and size each socket's buffer.

    Replaces ``Connection.gather_candidates`` on this one connection (never the
    module-level aioice function, which other code in the process may rely on).  The
    replacement mirrors aioice's own: host candidates through the public
    ``get_component_candidates`` (which also asks the configured STUN/TURN server).
    """
    conn = _ice_connection(pc)
    results: list[RcvbufResult] = []

    async def gather_candidates() -> None:
        if conn._local_candidates_start:
            return
        conn._local_candidates_start = True
        candidates = await conn.get_component_candidates(component=1, addresses=list(policy.bind))
        for protocol in conn._protocols:
            sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
            if sock is not None and sock.type == socket.SOCK_DGRAM:
                results.append(set_receive_buffer(sock, rcvbuf))
        conn._local_candidates += candidates
        conn._local_candidates_end = True

    conn.gather_candidates = gather_candidates
    return results


def _dtls_peer_fingerprint(pc: RTCPeerConnection) -> bytes:
    """SHA-256 of the certificate the remote presented in this link's DTLS handshake."""
    ssl = _dtls_transport(pc)._ssl
    cert = ssl.get_peer_certificate(as_cryptography=True) if ssl is not None else None
    if cert is None:
        raise HandshakeError("DTLS session holds no peer certificate")
    return bytes(cert.fingerprint(hashes.SHA256()))


def _local_fingerprint(pc: RTCPeerConnection) -> bytes:
    for fp in _dtls_transport(pc).getLocalParameters().fingerprints:
        if fp.algorithm.lower() == "sha-256":
            return bytes.fromhex(fp.value.replace(":", ""))
    raise WebRtcError("aiortc offered no SHA-256 fingerprint for our DTLS certificate")


def _selected_remote_address(pc: RTCPeerConnection) -> tuple[str, int] | None:
    pair = _ice_connection(pc)._nominated.get(1)
    if pair is None:
        return None
    host, port = pair.remote_addr[:2]
    return (str(host), int(port))


# ---------------------------------------------------------------------------------------------


def _new_peer_connection(config: WebRtcConfig) -> RTCPeerConnection:
    # iceServers must be an explicit list: None would make aiortc use a public STUN server.
    servers = [
        RTCIceServer(urls=s.url, username=s.username, credential=s.credential) for s in config.ice_servers
    ]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


def _check_remote_sdp(sdp: str, expected_type: str, policy: IcePolicy) -> tuple[str, bytes]:
    """Validate a remote SDP: one data-channel m-section, a SHA-256 fingerprint. Returns (sdp, fp)."""
    if not isinstance(sdp, str) or len(sdp) > 65536:
        raise SdpError(f"remote {expected_type} is not an SDP text")
    media = [line.split()[0][2:] for line in sdp.splitlines() if line.startswith("m=")]
    if media != ["application"]:
        raise SdpError(f"remote {expected_type} must hold exactly one data-channel section, got {media}")
    if "webrtc-datachannel" not in sdp:
        raise SdpError(f"remote {expected_type} does not offer an SCTP data channel")
    try:
        fingerprint = sdp_fingerprint_sha256(sdp)
    except TransportError as exc:
        raise SdpError(str(exc)) from None
    if fingerprint is None:
        raise SdpError(f"remote {expected_type} carries no SHA-256 DTLS fingerprint")
    return filter_remote_sdp(sdp, policy), fingerprint


def _create_channel(pc: RTCPeerConnection) -> Any:
    return pc.createDataChannel(CHANNEL_LABEL, ordered=True, negotiated=True, id=CHANNEL_ID)


async def _set_local(pc: RTCPeerConnection, policy: IcePolicy, offer: bool) -> str:
    description = await (pc.createOffer() if offer else pc.createAnswer())
    await pc.setLocalDescription(description)
    sdp: str = pc.localDescription.sdp
    if "a=candidate:" not in sdp:
        raise WebRtcError("no ICE candidate could be gathered under the configured ice_allow")
    policy.check_local_sdp(sdp)
    return sdp


class WebRtcLink:
    """A :class:`peer.transport.base.Link` over one aiortc data channel (framed)."""

    framed = True
    server_cert_only = False

    def __init__(
        self,
        pc: RTCPeerConnection,
        channel: Any,
        *,
        initiator: bool,
        config: WebRtcConfig,
        rcvbuf: list[RcvbufResult],
    ) -> None:
        self.initiator = initiator
        self._pc = pc
        self._channel = channel
        self._config = config
        self._rcvbuf = rcvbuf
        self._state = LinkState.CONNECTING
        self._error: LinkClosed | None = None
        self._remote_sdp_fingerprint: bytes | None = None
        self._peer_fingerprint: bytes | None = None
        self._local_fingerprint = _local_fingerprint(pc)
        self._remote_address: tuple[str, int] | None = None
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._sent = [0, 0]  # messages, bytes
        self._received = [0, 0]
        self._settled = asyncio.Event()  # open or closed
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._shutdown_task: asyncio.Future[None] | None = None
        channel.bufferedAmountLowThreshold = config.send_buffer
        channel.on("open", self._on_open)
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._on_transport_closed("the data channel was closed"))
        channel.on("bufferedamountlow", self._writable.set)
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("datachannel", self._on_unexpected_channel)

    # -- Link interface ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state is LinkState.CLOSED

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def peer_cert_fingerprint(self) -> bytes | None:
        return self._peer_fingerprint

    @property
    def local_cert_fingerprint(self) -> bytes | None:
        return self._local_fingerprint

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self._remote_address

    async def send(self, data: bytes) -> None:
        """Send one message; waits while the link is opening or its send buffer is full."""
        if len(data) > self._config.max_message_size:
            raise UsageError(f"message of {len(data)} bytes exceeds {self._config.max_message_size}")
        while True:
            if self._state is LinkState.CLOSED:
                raise self._closed_error()
            if self._state is LinkState.CONNECTING:
                await self._settled.wait()
            elif self._channel.bufferedAmount > self._config.send_buffer:
                self._writable.clear()
                await self._writable.wait()
            else:
                break
        try:
            self._channel.send(bytes(data))
        except InvalidStateError:
            self._on_transport_closed("the data channel is not open")
            raise self._closed_error() from None
        except ValueError as exc:  # larger than the remote's a=max-message-size
            raise UsageError(str(exc)) from None
        self._sent[0] += 1
        self._sent[1] += len(data)

    async def recv(self) -> bytes:
        """The next whole message; after a remote close, queued messages come first."""
        while True:
            if self._queue:
                message = self._queue.popleft()
                self._queued -= len(message)
                return message
            if self._state is LinkState.CLOSED:
                raise self._closed_error()
            self._readable.clear()
            await self._readable.wait()

    async def close(self) -> None:
        """Close the link (idempotent); pending ``recv``/``send`` raise LinkClosed."""
        self._mark_closed(LinkClosed("the link was closed locally"), drop_queue=True)
        await self._wait_shutdown()

    async def _wait_shutdown(self) -> None:
        """Wait for aiortc to shut the connection down, at most CLOSE_TIMEOUT: its close can hang
        when the other end is gone, and a caller that is closing must never hang with it."""
        assert self._shutdown_task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._shutdown_task), CLOSE_TIMEOUT)
        except TimeoutError:
            log.debug("webrtc link: transport shutdown still running after %.0f s", CLOSE_TIMEOUT)

    # -- extras -----------------------------------------------------------------------------

    async def wait_open(self, timeout: float = DEFAULT_OPEN_TIMEOUT) -> None:
        """Wait until ICE, DTLS and SCTP are up; on failure or timeout close and raise WebRtcError."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            await self._abort("link setup timed out")
            raise WebRtcError(f"link setup timed out after {timeout:.1f} s") from None
        if self._state is not LinkState.OPEN and self._peer_fingerprint is None:  # never opened
            await self.close()
            reason = self._error
            if isinstance(reason, LinkClosed) and isinstance(reason.__cause__, HandshakeError):
                raise reason.__cause__
            raise WebRtcError(f"link setup failed: {reason}") from reason

    async def wait_closed(self) -> None:
        """Wait until the link is closed (by either side) and its transport is shut down."""
        while self._state is not LinkState.CLOSED:
            self._readable.clear()
            await self._readable.wait()
        if self._shutdown_task is not None:
            await self._wait_shutdown()

    def stats(self) -> LinkStats:
        capped = any(r.capped for r in self._rcvbuf)
        effective = min((r.effective for r in self._rcvbuf), default=None)
        return LinkStats(
            state=self._state,
            initiator=self.initiator,
            messages_sent=self._sent[0],
            bytes_sent=self._sent[1],
            messages_received=self._received[0],
            bytes_received=self._received[1],
            send_buffered=int(self._channel.bufferedAmount),
            recv_queued=self._queued,
            rcvbuf_requested=self._config.rcvbuf,
            rcvbuf_effective=effective,
            rcvbuf_capped=capped,
            close_reason=str(self._error) if self._error is not None else None,
        )

    # -- internals --------------------------------------------------------------------------

    def _set_remote_fingerprint(self, fingerprint: bytes) -> None:
        self._remote_sdp_fingerprint = fingerprint

    def _closed_error(self) -> LinkClosed:
        error = self._error or LinkClosed("the link is closed")
        # A fresh instance per raise keeps tracebacks from piling up on one object.
        fresh = type(error)(str(error))
        fresh.__cause__ = error.__cause__
        return fresh

    def _on_open(self) -> None:
        if self._state is not LinkState.CONNECTING:
            return
        try:
            seen = _dtls_peer_fingerprint(self._pc)
            if self._remote_sdp_fingerprint is None or seen != self._remote_sdp_fingerprint:
                raise HandshakeError("DTLS certificate does not match the remote SDP fingerprint")
        except HandshakeError as exc:
            error = LinkClosed(f"link refused: {exc}")
            error.__cause__ = exc
            self._mark_closed(error, drop_queue=True)
            return
        self._peer_fingerprint = seen
        self._remote_address = _selected_remote_address(self._pc)
        self._state = LinkState.OPEN
        self._settled.set()
        self._writable.set()
        log.debug("webrtc link open (initiator=%s)", self.initiator)

    def _on_message(self, data: bytes | str) -> None:
        if self._state is not LinkState.OPEN:
            return
        if not isinstance(data, bytes):
            self._mark_closed(LinkClosed("the remote sent a text message on a binary link"), drop_queue=True)
            return
        self._received[0] += 1
        self._received[1] += len(data)
        if len(data) > self._config.max_message_size:
            self._mark_closed(LinkClosed("the remote sent an oversized message"), drop_queue=True)
            return
        if self._queued + len(data) > self._config.recv_queue_limit:
            self._mark_closed(
                ReceiveQueueOverflow(
                    f"more than {self._config.recv_queue_limit} received bytes were left unread"
                ),
                drop_queue=True,
            )
            return
        self._queue.append(data)
        self._queued += len(data)
        self._readable.set()

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        if state in ("failed", "closed"):
            self._on_transport_closed(f"the peer connection is {state}")

    def _on_unexpected_channel(self, channel: Any) -> None:
        log.debug("webrtc link: the remote opened an extra data channel; closing it")
        channel.close()

    def _on_transport_closed(self, reason: str) -> None:
        self._mark_closed(LinkClosed(reason), drop_queue=False)

    def _mark_closed(self, error: LinkClosed, *, drop_queue: bool) -> None:
        if self._state is not LinkState.CLOSED:
            self._state = LinkState.CLOSED
            self._error = error
            log.debug("webrtc link closed: %s", error)
        if drop_queue:
            self._queue.clear()
            self._queued = 0
        self._settled.set()
        self._readable.set()
        self._writable.set()
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(self._pc.close())

    async def _abort(self, reason: str) -> None:
        self._mark_closed(LinkClosed(reason), drop_queue=True)
        await self._wait_shutdown()


class PendingOffer:
    """The offerer's half-built link, waiting for the answer."""

    def __init__(self, link: WebRtcLink, policy: IcePolicy) -> None:
        self._link = link
        self._policy = policy
        self._used = False

    async def complete(self, answer_sdp: str, timeout: float = DEFAULT_OPEN_TIMEOUT) -> WebRtcLink:
        """Apply the remote answer and wait for the link to open (WebRtcError/SdpError on failure)."""
        if self._used:
            raise UsageError("PendingOffer.complete may be called once")
        self._used = True
        try:
            sdp, fingerprint = _check_remote_sdp(answer_sdp, "answer", self._policy)
            self._link._set_remote_fingerprint(fingerprint)
            await self._link._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except SdpError:
            await self.cancel()
            raise
        except (ValueError, InvalidStateError) as exc:
            await self.cancel()
            raise SdpError(f"remote answer refused: {exc}") from None
        await self._link.wait_open(timeout)
        return self._link

    async def cancel(self) -> None:
        """Give up on this offer and release its sockets."""
        await self._link.close()


async def create_offer(config: WebRtcConfig) -> tuple[PendingOffer, str]:
    """Start a link as the offerer (initiator): return the pending link and the SDP offer.

    ICE gathering is complete when this returns; the offer holds only addresses the
    configuration allows.
    """
    policy = IcePolicy.from_config(config)
    pc = _new_peer_connection(config)
    try:
        channel = _create_channel(pc)
        rcvbuf = _install_ice_policy(pc, policy, config.rcvbuf)
        link = WebRtcLink(pc, channel, initiator=True, config=config, rcvbuf=rcvbuf)
        sdp = await _set_local(pc, policy, offer=True)
    except BaseException:
        await pc.close()
        raise
    return PendingOffer(link, policy), sdp


async def accept_offer(offer_sdp: str, config: WebRtcConfig) -> tuple[WebRtcLink, str]:
    """Answer a remote offer: return the (not yet open) link and the SDP answer.

    Call ``await link.wait_open(timeout)`` after the answer has been delivered.
    """
    policy = IcePolicy.from_config(config)
    sdp, fingerprint = _check_remote_sdp(offer_sdp, "offer", policy)
    pc = _new_peer_connection(config)
    try:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except (ValueError, InvalidStateError) as exc:
            raise SdpError(f"remote offer refused: {exc}") from None
        channel = _create_channel(pc)
        rcvbuf = _install_ice_policy(pc, policy, config.rcvbuf)
        # The link listens before ICE starts (setLocalDescription starts it).
        link = WebRtcLink(pc, channel, initiator=False, config=config, rcvbuf=rcvbuf)
        link._set_remote_fingerprint(fingerprint)
        answer = await _set_local(pc, policy, offer=False)
    except BaseException:
        await pc.close()
        raise
    return link, answer
