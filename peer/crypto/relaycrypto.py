"""tor1 relay-cell crypto for one hop (tor-spec §6.1 "Relay cells", §5.5 routing; prop 289 SENDME v1).

Each hop shares with the OP two AES-128-CTR keystreams (Kf forward, Kb backward;
all-zero IV, one keystream per direction for the circuit's life) and two running
SHA-1 digests seeded with Df and Db.  Relay payloads are 509 bytes::

    Command[1] Recognized[2] StreamID[2] Digest[4] Length[2] Data[498]

* The OP sending to hop N *seals* the plaintext for hop N (Recognized = Digest = 0;
  the forward digest absorbs all 509 bytes; its first 4 bytes go into Digest),
  then *encrypts* with hop N's, N-1's ... 1's forward keystream.
* Each OR *decrypts* with its forward keystream and tries to *recognize* the cell:
  Recognized == 0 and the Digest matches a copy of its running digest extended
  with the cell (Digest zeroed).  Only then is the digest update committed.
* Backward it is the mirror image with Kb/Db: the originating OR seals and
  encrypts, other ORs encrypt, and the OP decrypts hop by hop, trying to recognize
  the cell after each layer.

One :class:`RelayCrypto` serves both sides; the OP keeps one per hop.  The full
20-byte running digests (:meth:`RelayCrypto.forward_digest`,
:meth:`RelayCrypto.backward_digest`) are what authenticated SENDME v1 carries.

This is the hot path: the encrypt/decrypt attributes are the AES contexts' own
``update`` methods, and recognizing costs one SHA-1 copy and one update.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from peer.crypto.kdf import KeyMaterial
from peer.errors import UsageError

if TYPE_CHECKING:
    from hashlib import _Hash

RELAY_PAYLOAD_LEN = 509
RECOGNIZED = slice(1, 3)
DIGEST = slice(5, 9)
SENDME_DIGEST_LEN = 20
_ZERO2 = b"\0\0"
_ZERO4 = b"\0\0\0\0"
_ZERO_IV = bytes(16)


def _aes_ctr(key: bytes) -> Callable[[bytes], bytes]:
    # CTR is its own inverse: the same `update` encrypts and decrypts.
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor().update


def _seal(digest: _Hash, plain: bytes) -> bytes:
    if len(plain) != RELAY_PAYLOAD_LEN or plain[RECOGNIZED] != _ZERO2 or plain[DIGEST] != _ZERO4:
        raise UsageError("seal: a 509-byte relay payload with Recognized and Digest zeroed")
    digest.update(plain)
    return plain[:5] + digest.digest()[:4] + plain[9:]


def _recognize(digest: _Hash, plain: bytes) -> _Hash | None:
    """The digest state after ``plain`` if the cell is ours, else None (``digest`` untouched)."""
    if plain[RECOGNIZED] != _ZERO2:
        return None
    trial = digest.copy()
    trial.update(plain[:5] + _ZERO4 + plain[9:])
    if hmac.compare_digest(trial.digest()[:4], plain[DIGEST]):
        return trial
    return None


class RelayCrypto:
    """Forward and backward tor1 state shared by the OP and one hop.

    ``encrypt_forward``/``decrypt_forward`` (the same AES-CTR operation on the
    forward keystream: the OP encrypts, the OR decrypts) and
    ``encrypt_backward``/``decrypt_backward`` take and return 509-byte payloads.
    """

    __slots__ = (
        "_bwd_digest",
        "_fwd_digest",
        "decrypt_backward",
        "decrypt_forward",
        "encrypt_backward",
        "encrypt_forward",
    )

    encrypt_forward: Callable[[bytes], bytes]
    decrypt_forward: Callable[[bytes], bytes]
    encrypt_backward: Callable[[bytes], bytes]
    decrypt_backward: Callable[[bytes], bytes]

    def __init__(self, keys: KeyMaterial) -> None:
        fwd = _aes_ctr(keys.kf)
        bwd = _aes_ctr(keys.kb)
        self.encrypt_forward = self.decrypt_forward = fwd
        self.encrypt_backward = self.decrypt_backward = bwd
        self._fwd_digest = hashlib.sha1(keys.df)
        self._bwd_digest = hashlib.sha1(keys.db)

    def seal_forward(self, plain: bytes) -> bytes:
        """OP originating a cell to this hop: commit it to the forward digest and fill in Digest."""
        return _seal(self._fwd_digest, plain)

    def seal_backward(self, plain: bytes) -> bytes:
        """This hop originating a cell toward the OP: the same with the backward digest."""
        return _seal(self._bwd_digest, plain)

    def recognize_forward(self, plain: bytes) -> bool:
        """OR side, after decrypt_forward: is the cell for this hop?  Commits the digest only if so."""
        trial = _recognize(self._fwd_digest, plain)
        if trial is None:
            return False
        self._fwd_digest = trial
        return True

    def recognize_backward(self, plain: bytes) -> bool:
        """OP side, after decrypt_backward: did this hop originate the cell?  Commits only if so."""
        trial = _recognize(self._bwd_digest, plain)
        if trial is None:
            return False
        self._bwd_digest = trial
        return True

    def forward_digest(self) -> bytes:
        """The 20-byte forward running digest after the last committed cell (SENDME v1)."""
        return self._fwd_digest.digest()

    def backward_digest(self) -> bytes:
        """The 20-byte backward running digest after the last committed cell (SENDME v1)."""
        return self._bwd_digest.digest()

    def __repr__(self) -> str:  # never print key material
        return "RelayCrypto(<redacted>)"


def originate_forward(path: Sequence[RelayCrypto], plain: bytes) -> bytes:
    """OP: seal ``plain`` for the last hop of ``path`` and add every hop's layer (last to first).

    To address an earlier hop, pass ``path[: hop + 1]``.
    """
    if not path:
        raise UsageError("originate_forward needs at least one hop")
    cell = path[-1].seal_forward(plain)
    for hop in reversed(path):
        cell = hop.encrypt_forward(cell)
    return cell


def receive_backward(path: Sequence[RelayCrypto], cell: bytes) -> tuple[int, bytes] | None:
    """OP: peel layers from the first hop on; return (index of the originating hop, plaintext).

    None if no hop recognizes the cell (tor-spec: the circuit must then be closed).
    """
    for index, hop in enumerate(path):
        cell = hop.decrypt_backward(cell)
        if hop.recognize_backward(cell):
            return index, cell
    return None


def sendme_v1_digest_matches(expected: bytes, got: bytes) -> bool:
    """Constant-time check of a SENDME v1 DIGEST against the one we remembered (prop 289)."""
    return len(expected) == SENDME_DIGEST_LEN and hmac.compare_digest(expected, got)
