"""Discovery: a Kademlia DHT built on the ``kademlia`` package (DESIGN §8; docs/dht.md).

Sans-I/O parts: :mod:`dht.keys`, :mod:`dht.records`, :mod:`dht.messages`,
:mod:`dht.recordstore`, :mod:`dht.lookup`, :mod:`dht.routing`, :mod:`dht.rtt`.
asyncio/UDP parts: :mod:`dht.protocol` and :mod:`dht.node` (``DhtNode``).
"""
