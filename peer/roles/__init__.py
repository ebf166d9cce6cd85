"""The roles a peer plays on top of its circuits: ORDB, holder, requester (fetch and downloads),
and bridge server.  Scheduling and pairing decisions are sans-I/O classes; the asyncio parts pump them."""
