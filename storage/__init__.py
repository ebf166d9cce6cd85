"""Content store (DESIGN §7, §9): manifests, Merkle proofs, encrypted shares, share links, live pieces,
and the SQLite chunk store.  Byte layouts: docs/formats.md; store design: docs/storage.md."""
