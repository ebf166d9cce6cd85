"""Exit policies: which TCP destinations an exit (the last hop) may connect to.

The default policy rejects everything (DESIGN §5: exits are opt-in).  A policy is a
list of rules tried in order: ``accept 127.0.0.1:*``, ``reject *:25``, ``accept *:80-443``.
Host names are matched literally ("*" matches any) when a BEGIN arrives, before any
resolution: a name is accepted only by a "*" host rule or an exact name rule.  The exit then
resolves the name and checks every address it resolved to (:meth:`ExitPolicy.allows_address`)
before it connects to exactly the address checked: ``localhost``, ``2130706433`` or
``0x7f000001`` meet the rules for 127.0.0.1.  A loopback, private, link-local, unspecified,
multicast or reserved address needs an accept rule naming its address or network: ``*`` and
name rules never reach them.  A rule's
host is "*", an address or network (IPv6 in brackets, tor's ``[2001:db8::]/32`` too) or a
DNS name; anything else is a parse error, never a rule that silently matches nothing.  An
IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is matched as the IPv4 address it reaches.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from peer.errors import UsageError


@dataclass(frozen=True, slots=True)
class ExitRule:
    accept: bool
    host: str  # "*", a name, an address or a CIDR
    port_lo: int
    port_hi: int

    def matches(self, host: str, port: int) -> bool:
        if not self.port_lo <= port <= self.port_hi:
            return False
        if self.host == "*":
            return True
        try:
            net = ipaddress.ip_network(self.host, strict=False)
        except ValueError:
            return host.lower().rstrip(".") == self.host.lower().rstrip(".")
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return ip in net or (mapped is not None and mapped in net)


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")
_PORT = re.compile(r"[0-9]{1,5}")


def _rule_host(text: str) -> str:
    """A rule's host, checked: "*", an address or network, or a DNS name; else ValueError."""
    if text == "*":
        return text
    addr, slash, bits = text.partition("/")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    elif text.startswith("[") and text.endswith("]"):
        addr, slash, bits = text[1:-1].partition("/")
    host = addr + slash + bits
    try:
        ipaddress.ip_network(host, strict=False)
    except ValueError:
        if slash or not _NAME.fullmatch(host) or len(host) > 253:
            raise
    return host


@dataclass(frozen=True, slots=True)
class ExitPolicy:
    rules: tuple[ExitRule, ...] = ()

    @classmethod
    def reject_all(cls) -> ExitPolicy:
        return cls(())

    @classmethod
    def parse(cls, text: str) -> ExitPolicy:
        """Parse ``"accept 127.0.0.1:*, reject *:*"`` (comma or newline separated)."""
        rules: list[ExitRule] = []
        for raw in text.replace("\n", ",").split(","):
            item = raw.strip()
            if not item:
                continue
            try:
                verb, target = item.split(None, 1)
                host, _, ports = target.strip().rpartition(":")
                if verb not in ("accept", "reject") or not host:
                    raise ValueError
                if ports == "*":
                    lo, hi = 1, 65535
                else:
                    a, dash, b = ports.partition("-")
                    if not _PORT.fullmatch(a) or (dash and not _PORT.fullmatch(b)):
                        raise ValueError
                    lo = int(a)
                    hi = int(b) if dash else lo
                if not 1 <= lo <= hi <= 65535:
                    raise ValueError
                host = _rule_host(host)
            except ValueError:
                raise UsageError(
                    f"bad exit policy rule {item!r}: want 'accept|reject HOST:PORT[-PORT]|*'"
                ) from None
            rules.append(ExitRule(verb == "accept", host, lo, hi))
        return cls(tuple(rules))

    def allows(self, host: str, port: int) -> bool:
        for rule in self.rules:
            if rule.matches(host, port):
                return rule.accept
        return False

    def allows_address(self, name: str, address: str, port: int) -> bool:
        """After resolution: may the exit connect to ``address`` (what ``name`` resolved to)?

        Rules are tried in order, each matching the name as asked or the address; an address
        that is not public is reached only through a rule naming its address or network."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # e.g. a scoped IPv6 address: never connected to
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        local = _not_public(ip) or (mapped is not None and _not_public(mapped))
        for rule in self.rules:
            if not rule.port_lo <= port <= rule.port_hi:
                continue
            by_address = rule.host != "*" and rule.matches(str(ip), port)
            if not (by_address or rule.matches(name, port)):
                continue
            if rule.accept and local and not by_address:
                continue  # "*" or a name rule does not open a local network
            return rule.accept
        return False


def _not_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
    )
