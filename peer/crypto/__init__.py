"""Cryptography for peersm (DESIGN §3-5): identity, ntor, KDFs, tor1 relay crypto, the peer certificate.

Sans-I/O: randomness and time are passed in.  See each module's docstring for its spec section.
"""
