"""File names that are safe to create (DESIGN §9: exported names are sanitised; docs/storage.md "Export").

A share's name comes from a stranger.  Before it names a file on disk it loses any
directory part, control and bidirectional-override characters, characters that
Windows forbids, leading dots and trailing dots or spaces; device names such as
``CON`` or ``LPT1`` are prefixed; the result is NFC and at most 255 UTF-8 bytes,
keeping the extension when it can.  Sans-I/O.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_BYTES = 255
_FORBIDDEN = set('<>:"/\\|?*')
_BIDI = {chr(c) for c in (0x200E, 0x200F, 0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


def truncate_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form fits in ``limit`` bytes."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def sanitize_name(name: str, fallback: str) -> str:
    """A single, harmless path component derived from ``name`` (``fallback`` if nothing is left)."""
    name = unicodedata.normalize("NFC", name.encode("utf-8", "replace").decode("utf-8"))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    out = []
    for c in name:
        if c in _BIDI or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            continue
        out.append("_" if c in _FORBIDDEN else c)
    name = "".join(out).strip().lstrip(".").rstrip(". ")
    if not name:
        name = fallback
    stem, dot, ext = name.rpartition(".")
    if stem.split(".")[0].upper() in _DEVICES or (not dot and name.upper() in _DEVICES):
        name = "_" + name
        stem, dot, ext = name.rpartition(".")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        if dot and 0 < len(ext.encode("utf-8")) <= 16:
            name = truncate_utf8(stem, MAX_NAME_BYTES - 1 - len(ext.encode("utf-8"))) + "." + ext
        else:
            name = truncate_utf8(name, MAX_NAME_BYTES)
    return name
