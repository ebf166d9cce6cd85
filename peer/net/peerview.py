"""The peers this node knows, from signed records it verified itself (DESIGN §5).

Records come in bulk (DHT random walks, a bridge's DB_FOUND_PEER), never by looking up the
hop about to be used.  Only the newest valid record per NodeID is kept; expired ones go.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from dht.records import PeerRecord, validate
from peer.errors import PeerError


def record_hosts(record: PeerRecord) -> set[str]:
    """The IP addresses a record's route names (for the /16 rule): ``host:port``, ``[v6]:port`` or bare."""
    hosts: set[str] = set()
    for _transport, address in record.route.endpoints:
        if address.startswith("["):  # [v6]:port, as the TLS dialer reads it
            host = address[1:].partition("]")[0]
        else:
            host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
        try:
            hosts.add(str(ipaddress.ip_address(host)))
        except ValueError:
            continue
    return hosts


def subnet16(host: str) -> str:
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return str(ipaddress.ip_network(f"{host}/16", strict=False))
    return str(ipaddress.ip_network(f"{host}/32", strict=False))  # IPv6: the /32 plays the /16's part


class PeerView:
    def __init__(self, own_node_id: bytes) -> None:
        self._own = own_node_id
        self._records: dict[bytes, PeerRecord] = {}

    def add(self, record: PeerRecord, now: float) -> bool:
        """Validate and keep a record (newest expiry wins); False if refused."""
        if record.node_id == self._own:
            return False
        try:
            validate(record, now)
        except PeerError:
            return False
        old = self._records.get(record.node_id)
        if old is None or record.expiry >= old.expiry:
            self._records[record.node_id] = record
        return True

    def add_all(self, records: Iterable[PeerRecord], now: float) -> int:
        return sum(self.add(r, now) for r in records)

    def get(self, node_id: bytes) -> PeerRecord | None:
        return self._records.get(node_id)

    def expire(self, now: float) -> None:
        for nid, rec in list(self._records.items()):
            if rec.expiry <= now:
                del self._records[nid]

    def forget(self, node_id: bytes) -> None:
        self._records.pop(node_id, None)

    def all(self) -> list[PeerRecord]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)
