"""The network layer: the asyncio driver of the onion core, neighbour links and their topology, the
peer-link handshake, the peer view, path selection and circuits, bridges as a client, SOCKS, and
the Tor-network client (``peer.tor``)."""
