"""TLS links over TCP, client and server (DESIGN §4 "TLS over TCP"; tor-spec §2 "Connections").

Tor relays present self-signed certificates with random names, so the client does no CA or
hostname check: identity is proven inside the protocol (CERTS, tor-spec §4.2), which binds the
SHA-256 of the peer's DER certificate (:attr:`TlsLink.peer_cert_fingerprint`).  The server side
makes an ephemeral self-signed certificate (random CN, fresh key) when it starts, and sends no
certificate request.  A TLS link is a byte stream: ``framed`` is False and ``recv`` returns
whatever bytes arrived; the channel layer reassembles cells.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import os
import secrets
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peer.errors import LinkClosed, TransportError

READ_SIZE = 64 * 1024
CERT_LIFETIME = datetime.timedelta(days=30)


class TlsConnectError(TransportError):
    """The TCP connection or the TLS handshake failed or timed out."""

    kind = "tls-connect"


class TlsLink:
    """One TLS connection; implements :class:`peer.transport.base.Link` (``framed = False``)."""

    framed = False
    server_cert_only = True

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, initiator: bool
    ) -> None:
        self.initiator = initiator
        self._reader = reader
        self._writer = writer
        self._closed = False
        ssl_obj = writer.get_extra_info("ssl_object")
        peer_der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
        self._peer_fp = hashlib.sha256(peer_der).digest() if peer_der else None
        self._local_fp: bytes | None = None
        peer = writer.get_extra_info("peername")
        self._remote = (str(peer[0]), int(peer[1])) if peer else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer_cert_fingerprint(self) -> bytes | None:
        return self._peer_fp

    @property
    def local_cert_fingerprint(self) -> bytes | None:
        return self._local_fp

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self._remote

    async def send(self, data: bytes) -> None:
        if self._closed or self._writer.is_closing():
            raise LinkClosed("TLS link closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError, RuntimeError) as exc:
            self._closed = True
            raise LinkClosed(f"TLS link closed: {type(exc).__name__}") from exc

    async def recv(self) -> bytes:
        if self._closed:
            raise LinkClosed("TLS link closed")
        try:
            data = await self._reader.read(READ_SIZE)
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            self._closed = True
            raise LinkClosed(f"TLS link closed: {type(exc).__name__}") from exc
        if not data:
            self._closed = True
            raise LinkClosed("TLS link closed by peer")
        return data

    async def close(self) -> None:
        if self._closed and self._writer.is_closing():
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), timeout=2.0)


def client_context() -> ssl.SSLContext:
    """A client context that accepts any certificate (identity is checked in-protocol)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def connect_tls(host: str, port: int, *, timeout: float = 30.0) -> TlsLink:
    """Open a TLS link to ``host:port`` as the initiator (no CA or hostname check)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=client_context(), server_hostname=None, limit=READ_SIZE),
            timeout,
        )
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        raise TlsConnectError(f"TLS connection failed: {type(exc).__name__}") from exc
    return TlsLink(reader, writer, initiator=True)


@dataclass(frozen=True, slots=True)
class SelfSignedCert:
    cert_pem: bytes
    key_pem: bytes
    der: bytes

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.der).digest()


def make_self_signed(now: datetime.datetime | None = None) -> SelfSignedCert:
    """An ephemeral P-256 key and a self-signed certificate with a random CN."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"www.{secrets.token_hex(8)}.net")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + CERT_LIFETIME)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SelfSignedCert(
        cert.public_bytes(serialization.Encoding.PEM), key_pem, cert.public_bytes(serialization.Encoding.DER)
    )


def server_context(cert: SelfSignedCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl only loads keys from files: write them to a private temporary directory, then delete it.
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.key_pem)
        with open(cert_path, "wb") as f:
            f.write(cert.cert_pem)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


class TlsServer:
    """A listening TLS server; each accepted connection is handed to ``on_link`` as a TlsLink."""

    def __init__(self, server: asyncio.Server, cert: SelfSignedCert) -> None:
        self._server = server
        self.cert = cert

    @property
    def address(self) -> tuple[str, int]:
        sock = self._server.sockets[0]
        host, port = sock.getsockname()[:2]
        return (str(host), int(port))

    @property
    def local_cert_fingerprint(self) -> bytes:
        return self.cert.fingerprint

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)


async def serve_tls(
    host: str,
    port: int,
    on_link: Callable[[TlsLink], Awaitable[None]],
    *,
    handshake_timeout: float = 30.0,
) -> TlsServer:
    """Listen on ``host:port`` (0 = any free port) with a fresh self-signed certificate."""
    cert = make_self_signed()
    ctx = server_context(cert)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = TlsLink(reader, writer, initiator=False)
        link._local_fp = cert.fingerprint
        try:
            await on_link(link)  # may keep the link and return at once: the link is the callee's now
        except BaseException:
            await link.close()
            raise

    server = await asyncio.start_server(
        handle, host, port, ssl=ctx, ssl_handshake_timeout=handshake_timeout, limit=READ_SIZE
    )
    return TlsServer(server, cert)
