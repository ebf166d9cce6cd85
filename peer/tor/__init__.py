"""The Tor-network client side: relay certificates, the directory, path selection, guards.

See docs/tor.md.  ``peer.tor.certs`` validates a relay's CERTS cell (tor-spec §4.2),
``peer.tor.directory`` fetches and verifies the microdesc consensus (dir-spec §3-§5),
``peer.tor.path`` and ``peer.tor.guards`` choose circuits' relays (path-spec §2).
"""
