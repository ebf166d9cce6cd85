"""Web UI login state (DESIGN §10): one-time login codes and cookie sessions, sans-I/O.

The browser logs in once per tab with a one-time code printed by ``peersm up`` or
``peersm ui``; opening ``/ui/login?code=CODE`` trades the code for a session cookie
(``peersm_<port>``, HttpOnly, SameSite=Strict).  The cookie only ever authenticates GET
on the stream endpoint and on event streams (webui/server.py decides where); the pages
send the API token in a header for everything else.

Both tables hold SHA-256 digests, never the secrets themselves, so a look-up is a dict
probe on a digest (its timing says nothing about the secret) and a memory dump holds
nothing that can be replayed.  Callers pass ``now`` (a monotonic clock, in seconds) and a
``randbytes`` source; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator

#: A login code carries 128 bits of randomness.
CODE_BYTES = 16
#: Seconds a login code stays valid.
CODE_TTL = 120.0
#: Login codes outstanding at once; issuing more forgets the oldest.
MAX_CODES = 16
#: A session secret carries 256 bits of randomness.
SESSION_BYTES = 32
#: Seconds a session stays valid after its login (then run `peersm ui` again).
SESSION_TTL = 12 * 3600.0
#: Sessions held at once; opening more forgets the oldest.
MAX_SESSIONS = 32
#: Longest code or cookie value considered (longer ones are refused unread).
_MAX_PRESENTED = 256


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def _fresh(randbytes: Callable[[int], bytes], size: int) -> str:
    raw = randbytes(size)
    if len(raw) != size:
        raise ValueError(f"randbytes returned {len(raw)} bytes, expected {size}")
    return _b64(raw)


class _Expiring:
    """Digest -> expiry, oldest first, bounded."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._until: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def add(self, secret: str, until: float) -> None:
        self._until[_digest(secret)] = until
        while len(self._until) > self._limit:
            del self._until[next(iter(self._until))]

    def live(self, secret: str, now: float) -> bool:
        if not secret or len(secret) > _MAX_PRESENTED:
            return False
        until = self._until.get(_digest(secret))
        return until is not None and now < until

    def take(self, secret: str, now: float) -> bool:
        """True (and forget it) when ``secret`` is live; otherwise change nothing."""
        if not self.live(secret, now):
            return False
        del self._until[_digest(secret)]
        return True

    def prune(self, now: float) -> None:
        for key in [k for k, until in self._until.items() if now >= until]:
            del self._until[key]


class LoginCodes:
    """One-time login codes: 128 bits, single use, valid for :data:`CODE_TTL` seconds."""

    def __init__(self, randbytes: Callable[[int], bytes], ttl: float = CODE_TTL) -> None:
        self._randbytes = randbytes
        self.ttl = ttl
        self._codes = _Expiring(MAX_CODES)

    def __repr__(self) -> str:
        return f"LoginCodes(outstanding={len(self._codes)})"

    def __len__(self) -> int:
        return len(self._codes)

    def issue(self, now: float) -> str:
        """A fresh code (unpadded base64url, 22 characters)."""
        self._codes.prune(now)
        code = _fresh(self._randbytes, CODE_BYTES)
        self._codes.add(code, now + self.ttl)
        return code

    def redeem(self, code: str, now: float) -> bool:
        """True once for a code issued less than ``ttl`` ago; an unknown, used or expired code changes nothing."""
        return self._codes.take(code, now)


class Sessions:
    """Browser sessions opened by a login: 256-bit secrets valid for :data:`SESSION_TTL` seconds."""

    def __init__(self, randbytes: Callable[[int], bytes], ttl: float = SESSION_TTL) -> None:
        self._randbytes = randbytes
        self.ttl = ttl
        self._sessions = _Expiring(MAX_SESSIONS)

    def __repr__(self) -> str:
        return f"Sessions(open={len(self._sessions)})"

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, now: float) -> str:
        """A new session's secret (unpadded base64url, 43 characters): the cookie's value."""
        self._sessions.prune(now)
        secret = _fresh(self._randbytes, SESSION_BYTES)
        self._sessions.add(secret, now + self.ttl)
        return secret

    def valid(self, secret: str, now: float) -> bool:
        return self._sessions.live(secret, now)


def cookie_name(port: int) -> str:
    """The session cookie's name: per port, since cookies ignore ports (two local peers must not collide)."""
    return f"peersm_{port}"


def cookie_values(headers: list[str], name: str) -> Iterator[str]:
    """Every value of cookie ``name`` in these ``Cookie`` header values (RFC 6265 ``a=b; c=d``).

    A browser may send several cookies of one name (another local server on another port can
    set one, since cookies ignore ports); each is yielded so a planted one cannot hide ours.
    """
    for header in headers:
        for pair in header.split(";"):
            key, sep, value = pair.partition("=")
            if sep and key.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                yield value
