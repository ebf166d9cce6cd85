"""Peer keys on disk (DESIGN §3): stable identities persist, ephemeral ones never touch disk.

File ``DIR/peer.key`` (mode 0600, written atomically), version 1:
  version[1]=1  identity_seed[32]  ntor_private[32]  seal_private[32]
"""

from __future__ import annotations

import os
from pathlib import Path

from peer.crypto.identity import Identity, RandBytes, SigningKey
from peer.crypto.keys import X25519KeyPair
from peer.errors import StorageError, UnknownVersion, WireError
from peer.net.handshake import PeerKeys
from peer.wire.buffer import Reader

KEY_FILE = "peer.key"
VERSION = 1


def atomic_write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)  # it may hold a key
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def encode_keys(keys: PeerKeys) -> bytes:
    return bytes([VERSION]) + keys.identity.key.seed + keys.ntor.private + keys.seal.private


def decode_keys(data: bytes) -> PeerKeys:
    r = Reader(data)
    v = r.pull_u8()
    if v != VERSION:
        raise UnknownVersion(f"peer key file version {v}")
    ident = Identity(SigningKey(r.pull_bytes(32)))
    ntor = X25519KeyPair.from_private(r.pull_bytes(32))
    seal = X25519KeyPair.from_private(r.pull_bytes(32))
    r.expect_end("peer key file")
    return PeerKeys(ident, ntor, seal)


def load_or_create_keys(data_dir: Path, *, stable: bool, randbytes: RandBytes = os.urandom) -> PeerKeys:
    """A stable peer reuses ``DIR/peer.key`` (creating it once); an ephemeral one gets new keys."""
    if not stable:
        return PeerKeys.generate(randbytes)
    path = data_dir / KEY_FILE
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise StorageError(f"{path} is readable by others (mode {mode:o}): chmod 600 it")
        try:
            return decode_keys(path.read_bytes())
        except WireError as exc:
            raise StorageError(f"{path} is damaged: {exc}") from exc
    keys = PeerKeys.generate(randbytes)
    atomic_write_private(path, encode_keys(keys))
    return keys
