"""peersm: anonymous peer-to-peer file sharing over Tor-protocol onion circuits.

Layers (imports point down only; see docs/architecture.md):
  webui/, peer/app/cli.py            UI and composition root
  peer/ (runtime), peer/transport
  peer/wire, peer/crypto, peer/proto   sans-I/O protocol core
  storage/, dht/                 siblings of the core
"""

__version__ = "0.1.0"
