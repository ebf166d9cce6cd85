"""The meta-format of Tor directory documents (dir-spec §1.2 "Document meta-format").

A document is a sequence of items; an item is a keyword line (``Keyword Arguments*``),
optionally followed by one object::

    -----BEGIN <TAG>-----
    base64 lines
    -----END <TAG>-----

:func:`items` yields :class:`Item` values with the byte offsets where each item starts and ends,
so signature checks can hash exact ranges of the original text.  Malformed input raises
:class:`DocumentError`, never anything else.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import time
from collections.abc import Iterator
from dataclasses import dataclass

from peer.errors import PeerError


class DocumentError(PeerError):
    """A directory document that does not parse (the message names the item)."""

    kind = "directory-document"


@dataclass(frozen=True, slots=True)
class Item:
    keyword: str
    args: tuple[str, ...]
    obj_tag: str | None  # e.g. "SIGNATURE", "RSA PUBLIC KEY"
    obj: bytes | None  # the decoded object
    start: int  # offset of the keyword line in the text
    end: int  # offset just after the item (after the object, if any)

    def arg(self, i: int) -> str:
        if i >= len(self.args):
            raise DocumentError(f"{self.keyword}: missing argument {i + 1}")
        return self.args[i]


def b64decode_loose(s: str, what: str) -> bytes:
    """Base64 with or without '=' padding (tor omits it in many places)."""
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DocumentError(f"{what}: bad base64") from exc


def hex_decode(s: str, length: int, what: str) -> bytes:
    if len(s) != 2 * length:
        raise DocumentError(f"{what}: expected {length} hex bytes")
    try:
        return bytes.fromhex(s)
    except ValueError as exc:
        raise DocumentError(f"{what}: bad hex") from exc


def parse_time(date: str, clock: str, what: str) -> float:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) to seconds since the epoch."""
    try:
        return float(calendar.timegm(time.strptime(f"{date} {clock}", "%Y-%m-%d %H:%M:%S")))
    except (ValueError, OverflowError) as exc:
        raise DocumentError(f"{what}: bad time") from exc


def parse_int(s: str, what: str, lo: int = 0, hi: int = 2**63) -> int:
    if not s.isascii() or not s.isdigit():
        raise DocumentError(f"{what}: not a number")
    v = int(s)
    if not lo <= v <= hi:
        raise DocumentError(f"{what}: {v} out of range")
    return v


def items(text: str) -> Iterator[Item]:
    """The items of ``text`` in order."""
    pos = 0
    n = len(text)
    while pos < n:
        nl = text.find("\n", pos)
        if nl < 0:
            raise DocumentError("document does not end with a newline")
        line = text[pos:nl]
        start = pos
        pos = nl + 1
        if not line.strip():
            raise DocumentError("empty line in document")
        if line.startswith("-----"):
            raise DocumentError("object without a keyword")
        parts = line.split()
        keyword, args = parts[0], tuple(parts[1:])
        tag: str | None = None
        obj: bytes | None = None
        if text.startswith("-----BEGIN ", pos):
            nl = text.find("\n", pos)
            if nl < 0:
                raise DocumentError(f"{keyword}: unterminated object")
            begin = text[pos:nl]
            if not begin.endswith("-----") or len(begin) <= 16:
                raise DocumentError(f"{keyword}: bad object header")
            tag = begin[11:-5]
            end_line = f"-----END {tag}-----\n"
            end = text.find(end_line, nl + 1)
            if end < 0:
                raise DocumentError(f"{keyword}: object {tag!r} not terminated")
            body = text[nl + 1 : end]
            if "-----" in body:
                raise DocumentError(f"{keyword}: malformed object body")
            obj = b64decode_loose("".join(body.split()), keyword)
            pos = end + len(end_line)
        yield Item(keyword, args, tag, obj, start, pos)


def pem_der(obj_tag: str | None, obj: bytes | None, what: str) -> bytes:
    """The DER bytes of an ``RSA PUBLIC KEY`` object."""
    if obj_tag != "RSA PUBLIC KEY" or obj is None:
        raise DocumentError(f"{what}: expected an RSA PUBLIC KEY object")
    return obj
