"""Share links (DESIGN §7; docs/formats.md §1).

    peersm:v1:<hash_name>[?name=<percent-encoded UTF-8>][#k=<key>]

hash_name is 64 lowercase hex digits; the key of an encrypted share is 32 bytes
in base64url without padding (43 characters) and travels only in the fragment.
Parsing is strict: one form per link, anything else raises LinkError (an unknown
``vN`` raises UnknownVersion).  Sans-I/O.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from peer.errors import UnknownVersion
from storage.errors import LinkError

SCHEME = "peersm:"
VERSION = "v1"
HASH_HEX_LEN = 64
KEY_LEN = 32
MAX_NAME_BYTES = 1024
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdef")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding: the canonical encoding only."""
    if not text.isascii() or "=" in text or len(text) % 4 == 1:
        raise LinkError("bad base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise LinkError("bad base64url") from exc
    if b64url_encode(raw) != text:
        raise LinkError("non-canonical base64url")
    return raw


def hash_name_to_text(hash_name: bytes) -> str:
    return hash_name.hex()


def hash_name_from_text(text: str) -> bytes:
    """Parse a hash_name written as 64 lowercase hex digits."""
    if len(text) != HASH_HEX_LEN or not set(text) <= _HEX:
        raise LinkError("a hash_name is 64 lowercase hex digits")
    return bytes.fromhex(text)


def _pct_encode(text: str) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8"))


def _pct_decode(text: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            hx = text[i + 1 : i + 3]
            if len(hx) != 2 or not set(hx) <= set("0123456789ABCDEF"):
                raise LinkError("bad percent escape in link (upper-case hex required)")
            b = int(hx, 16)
            if b in _UNRESERVED:
                raise LinkError("needless percent escape in link")
            out.append(b)
            i += 3
        elif ord(c) < 128 and ord(c) in _UNRESERVED:
            out.append(ord(c))
            i += 1
        else:
            raise LinkError(f"character {c!r} must be percent-encoded in a link")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LinkError("link name is not UTF-8") from exc


@dataclass(frozen=True, slots=True)
class ShareLink:
    """What a user shares: the hash_name, a display name, and the key of an encrypted share."""

    hash_name: bytes
    name: str | None = None
    key: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.hash_name) != 32:
            raise LinkError("a hash_name is 32 bytes")
        if self.key is not None and len(self.key) != KEY_LEN:
            raise LinkError("a share key is 32 bytes")
        if self.name is not None:
            try:
                n = len(self.name.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise LinkError("link name is not valid Unicode") from exc
            if not 0 < n <= MAX_NAME_BYTES:
                raise LinkError(f"link name must be 1..{MAX_NAME_BYTES} bytes")

    def format(self) -> str:
        text = f"{SCHEME}{VERSION}:{self.hash_name.hex()}"
        if self.name is not None:
            text += "?name=" + _pct_encode(self.name)
        if self.key is not None:
            text += "#k=" + b64url_encode(self.key)
        return text

    def __str__(self) -> str:  # keys must not reach logs by accident
        return f"ShareLink({self.hash_name.hex()[:8]}…{', key' if self.key else ''})"

    __repr__ = __str__

    @classmethod
    def parse(cls, text: str) -> ShareLink:
        """Parse a link (surrounding whitespace is ignored); LinkError/UnknownVersion on anything else."""
        text = text.strip()
        if not text.startswith(SCHEME):
            raise LinkError("not a peersm: link")
        rest = text[len(SCHEME) :]
        version, sep, rest = rest.partition(":")
        if not sep:
            raise LinkError("link has no version")
        if version != VERSION:
            if len(version) >= 2 and version[0] == "v" and version[1:].isdigit():
                raise UnknownVersion(f"share link version {version} is unknown")
            raise LinkError("bad link version")
        rest, hsep, fragment = rest.partition("#")
        body, qsep, query = rest.partition("?")
        hash_name = hash_name_from_text(body)
        name = None
        if qsep:
            if not query.startswith("name="):
                raise LinkError("the only link parameter is name")
            name = _pct_decode(query[len("name=") :])
            if not name:
                raise LinkError("empty link name")
        key = None
        if hsep:
            if not fragment.startswith("k="):
                raise LinkError("the only link fragment is k=<key>")
            key = b64url_decode(fragment[2:])
            if len(key) != KEY_LEN:
                raise LinkError("a share key is 32 bytes")
        return cls(hash_name, name, key)
