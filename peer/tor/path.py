"""Path selection for Tor circuits (path-spec §2.2 "Path selection and constraints", simplified).

A path is ``guard, middle..., exit`` (default 3 hops, 2 to 5).  Rules:

* every hop is Running and Valid in the verified consensus, and has a microdescriptor;
* the guard comes from the persisted guard set (:mod:`peer.tor.guards`) and has the Guard flag;
* the exit has the Exit flag, not BadExit, and its policy summary accepts the target port;
* no relay twice; no two hops in the same IPv4 /16 (IPv6 /32) unless ``allow_same_subnet`` is set
  explicitly (private test networks where every relay is on 127.0.0.1); no two hops of one family
  (they list each other in their microdescriptors' family lines, or share a family id);
* each position is chosen at random weighted by the consensus bandwidth (uniformly if all
  weights are zero), with an injected ``random.Random``.

As in tor, the exit is chosen first, then the guard, then the middles.  When no relay fits a
position the :class:`NoSuitableRelay` error names the rule that could not be met.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Sequence

from peer.errors import UsageError
from peer.tor.directory import Relay
from peer.tor.errors import NoSuitableRelay

MIN_HOPS = 2
MAX_HOPS = 5


def subnet_of(address: str) -> str:
    """The /16 (IPv4) or /32 (IPv6) that two hops of one path must not share."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    prefix = 16 if ip.version == 4 else 32
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def usable(relay: Relay) -> bool:
    return "Running" in relay.flags and "Valid" in relay.flags


def weighted_choice(relays: Sequence[Relay], rng: random.Random) -> Relay:
    """One relay, with probability proportional to its bandwidth (uniform if all are zero)."""
    if not relays:
        raise UsageError("weighted_choice of nothing")
    total = sum(max(r.bandwidth, 0) for r in relays)
    if total <= 0:
        return relays[rng.randrange(len(relays))]
    point = rng.random() * total
    for r in relays:
        point -= max(r.bandwidth, 0)
        if point < 0:
            return r
    return relays[-1]


class PathBuilder:
    """Pick relays for one circuit under the rules above."""

    def __init__(
        self, relays: Sequence[Relay], rng: random.Random, *, allow_same_subnet: bool = False
    ) -> None:
        self.relays = [r for r in relays if usable(r)]
        self.rng = rng
        self.allow_same_subnet = allow_same_subnet

    def compatible(self, relay: Relay, chosen: Sequence[Relay]) -> bool:
        for other in chosen:
            if relay.rsa_id == other.rsa_id or relay.same_family(other):
                return False
            if not self.allow_same_subnet and subnet_of(relay.address) == subnet_of(other.address):
                return False
        return True

    def _pick(self, role: str, ok: Callable[[Relay], bool], chosen: Sequence[Relay]) -> Relay:
        fits = [r for r in self.relays if ok(r)]
        if not fits:
            raise NoSuitableRelay(f"no {role} in the consensus")
        candidates = [r for r in fits if self.compatible(r, chosen)]
        if not candidates:
            rule = (
                "is a distinct relay of another family"
                if self.allow_same_subnet
                else "is a distinct relay of another family outside the others' /16"
            )
            raise NoSuitableRelay(f"no {role} that {rule} ({len(fits)} {role} candidate(s) in all)")
        return weighted_choice(candidates, self.rng)

    def choose_exit(self, port: int, chosen: Sequence[Relay] = ()) -> Relay:
        return self._pick(f"exit accepting port {port}", lambda r: r.is_exit_for(port), chosen)

    def choose_guard(self, chosen: Sequence[Relay] = ()) -> Relay:
        return self._pick("guard", lambda r: "Guard" in r.flags, chosen)

    def choose_middle(self, chosen: Sequence[Relay]) -> Relay:
        return self._pick("middle relay", lambda r: True, chosen)

    def build(
        self, port: int, *, hops: int = 3, guard_chooser: Callable[[Sequence[Relay]], Relay] | None = None
    ) -> tuple[Relay, ...]:
        """``(guard, middles..., exit)`` for a stream to ``port``.

        ``guard_chooser(exclude)`` (normally :meth:`GuardSet.choose`) returns a guard compatible
        with the hops in ``exclude``; by default a Guard-flagged relay is drawn from the consensus.
        """
        if not MIN_HOPS <= hops <= MAX_HOPS:
            raise UsageError(f"a circuit has {MIN_HOPS} to {MAX_HOPS} hops, not {hops}")
        if not 1 <= port <= 65535:
            raise UsageError(f"bad port {port}")
        exit_relay = self.choose_exit(port)
        guard = guard_chooser([exit_relay]) if guard_chooser else self.choose_guard([exit_relay])
        if not self.compatible(guard, [exit_relay]):
            raise NoSuitableRelay("the guard conflicts with the chosen exit")
        middles: list[Relay] = []
        for _ in range(hops - 2):
            middles.append(self.choose_middle([guard, *middles, exit_relay]))
        return (guard, *middles, exit_relay)


def check_path(path: Sequence[Relay], port: int, *, allow_same_subnet: bool = False) -> None:
    """Raise :class:`NoSuitableRelay` if ``path`` breaks a rule (used by tests and callers)."""
    if len({r.rsa_id for r in path}) != len(path):
        raise NoSuitableRelay("a relay appears twice in the path")
    if not allow_same_subnet and len({subnet_of(r.address) for r in path}) != len(path):
        raise NoSuitableRelay("two hops share a /16")
    if any(a.same_family(b) for i, a in enumerate(path) for b in path[i + 1 :]):
        raise NoSuitableRelay("two hops are in one family")
    if not all(usable(r) for r in path):
        raise NoSuitableRelay("a hop is not Running and Valid")
    if "Guard" not in path[0].flags:
        raise NoSuitableRelay("the first hop has no Guard flag")
    if not path[-1].is_exit_for(port):
        raise NoSuitableRelay(f"the last hop does not exit to port {port}")
