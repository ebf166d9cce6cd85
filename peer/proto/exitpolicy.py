"""Exit policies: which TCP destinations an exit (the last hop) may connect to.

The default policy rejects everything (DESIGN §5: exits are opt-in).  A policy is a
list of rules tried in order: ``accept 127.0.0.1:*``, ``reject *:25``, ``accept *:80-443``.
Host names are matched literally ("*" matches any); the policy is checked before any
resolution, so a name is accepted only by a "*" host rule or an exact name rule.
"""

from __future__ import annotations

import ipaddress
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
            return ipaddress.ip_address(host.strip("[]")) in net
        except ValueError:
            return False


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
                elif "-" in ports:
                    a, b = ports.split("-", 1)
                    lo, hi = int(a), int(b)
                else:
                    lo = hi = int(ports)
                if not 1 <= lo <= hi <= 65535:
                    raise ValueError
            except ValueError:
                raise UsageError(
                    f"bad exit policy rule {item!r}: want 'accept|reject HOST:PORT[-PORT]|*'"
                ) from None
            rules.append(ExitRule(verb == "accept", host.strip("[]"), lo, hi))
        return cls(tuple(rules))

    def allows(self, host: str, port: int) -> bool:
        for rule in self.rules:
            if rule.matches(host, port):
                return rule.accept
        return False
