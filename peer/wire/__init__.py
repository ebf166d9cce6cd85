"""The wire layer (layer 0, sans-I/O): bytes <-> frozen dataclasses for tor-spec cells.

- :mod:`peer.wire.commands`: every command, reason and link-specifier number (tor-spec §3, §5.4, §6.1, §6.3).
- :mod:`peer.wire.cells`: cell framing and cell messages (tor-spec §3-5), our private link cells.
- :mod:`peer.wire.relay`: relay cells and relay message bodies (tor-spec §5-7).
- :mod:`peer.wire.linkspec`: EXTEND2 link specifiers (tor-spec §5.1.2).
- :mod:`peer.wire.buffer`: the Reader/Writer every binary format uses.

Nothing here imports asyncio, socket, ssl or sqlite3.
"""
