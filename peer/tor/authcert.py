"""Directory authority key certificates (dir-spec §3.1 "Creating key certificates").

Each v3 authority has a long-term RSA identity key (its v3 identity fingerprint, "v3ident", is the
SHA-1 of the DER PKCS#1 encoding) and a medium-term signing key that signs consensuses.  A key
certificate binds the two::

    dir-key-certificate-version 3
    [dir-address IP:PORT]
    fingerprint <40 hex>                 (= SHA-1 of dir-identity-key)
    dir-key-published YYYY-MM-DD HH:MM:SS
    dir-key-expires   YYYY-MM-DD HH:MM:SS
    dir-identity-key   <RSA PUBLIC KEY>
    dir-signing-key    <RSA PUBLIC KEY>
    dir-key-crosscert  <ID SIGNATURE>     signing key over SHA-1(DER identity key)
    dir-key-certification <SIGNATURE>     identity key over SHA-1 of the text from the start of
                                          "dir-key-certificate-version" through "dir-key-certification\\n"

Signatures are tor-style RSA PKCS#1 v1.5 of the bare digest (no DigestInfo).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from peer.tor.certs import rsa_verify_tor
from peer.tor.docparse import DocumentError, hex_decode, items, parse_time
from peer.tor.errors import AuthorityCertError


@dataclass(frozen=True, slots=True)
class AuthorityKeyCert:
    """A verified authority key certificate."""

    v3ident: bytes  # 20 bytes: SHA-1 of the identity key
    signing_key_digest: bytes  # 20 bytes: SHA-1 of the DER signing key (named by directory-signature)
    signing_key: rsa.RSAPublicKey
    published: float
    expires: float
    text: str  # the certificate as served (for the cache)

    def __repr__(self) -> str:
        return f"AuthorityKeyCert({self.v3ident.hex()[:8]}…)"


def _rsa_key(der: bytes, what: str) -> rsa.RSAPublicKey:
    try:
        key = load_der_public_key(der)  # accepts DER PKCS#1 RSAPublicKey
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AuthorityCertError(f"{what}: not an RSA public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthorityCertError(f"{what}: not an RSA public key")
    return key


def parse_rsa_pkcs1(der: bytes, what: str) -> rsa.RSAPublicKey:
    """An RSA public key from its DER PKCS#1 encoding (as in tor documents)."""
    return _rsa_key(der, what)


def _split(text: str) -> list[str]:
    """Split concatenated certificates at each ``dir-key-certificate-version`` line."""
    marker = "dir-key-certificate-version"
    starts = [i for i in range(len(text)) if text.startswith(marker, i) and (i == 0 or text[i - 1] == "\n")]
    if not starts or starts[0] != 0:
        raise AuthorityCertError("no authority key certificate in the document")
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def parse_key_cert(text: str, now: float) -> AuthorityKeyCert:
    """Parse and verify one key certificate (signatures, fingerprint, validity at ``now``)."""
    if not text.isascii():
        raise AuthorityCertError("authority key certificate is not ASCII")
    fields: dict[str, tuple[tuple[str, ...], str | None, bytes | None]] = {}
    certification_end = -1
    certification: bytes | None = None
    try:
        for item in items(text):
            if item.keyword == "dir-key-certification":
                if item.obj_tag != "SIGNATURE" or item.obj is None:
                    raise AuthorityCertError("dir-key-certification lacks its SIGNATURE object")
                certification = item.obj
                certification_end = item.start + len("dir-key-certification\n")
                if item.end != len(text):
                    raise AuthorityCertError("data after dir-key-certification")
                break
            if item.keyword in fields:
                raise AuthorityCertError(f"duplicate {item.keyword}")
            fields[item.keyword] = (item.args, item.obj_tag, item.obj)
        first = next(items(text))
    except DocumentError as exc:
        raise AuthorityCertError(f"authority key certificate: {exc}") from exc
    if first.keyword != "dir-key-certificate-version" or first.args[:1] != ("3",):
        raise AuthorityCertError("not a version 3 authority key certificate")
    if certification is None:
        raise AuthorityCertError("authority key certificate is not signed")
    for needed in (
        "fingerprint",
        "dir-key-published",
        "dir-key-expires",
        "dir-identity-key",
        "dir-signing-key",
    ):
        if needed not in fields:
            raise AuthorityCertError(f"authority key certificate lacks {needed}")
    if "dir-key-crosscert" not in fields:
        raise AuthorityCertError("authority key certificate lacks dir-key-crosscert")
    try:
        fingerprint = hex_decode(
            fields["fingerprint"][0][0] if fields["fingerprint"][0] else "", 20, "fingerprint"
        )
        published = parse_time(*_two(fields["dir-key-published"][0]), "dir-key-published")
        expires = parse_time(*_two(fields["dir-key-expires"][0]), "dir-key-expires")
    except DocumentError as exc:
        raise AuthorityCertError(f"authority key certificate: {exc}") from exc
    id_der = _object(fields["dir-identity-key"], "RSA PUBLIC KEY", "dir-identity-key")
    sk_der = _object(fields["dir-signing-key"], "RSA PUBLIC KEY", "dir-signing-key")
    crosscert = fields["dir-key-crosscert"]
    if crosscert[1] not in ("ID SIGNATURE", "SIGNATURE") or crosscert[2] is None:
        raise AuthorityCertError("dir-key-crosscert lacks its signature object")
    identity_key = _rsa_key(id_der, "dir-identity-key")
    signing_key = _rsa_key(sk_der, "dir-signing-key")
    id_digest = hashlib.sha1(id_der).digest()
    if id_digest != fingerprint:
        raise AuthorityCertError("fingerprint is not the digest of dir-identity-key")
    if not rsa_verify_tor(signing_key, id_digest, crosscert[2]):
        raise AuthorityCertError("dir-key-crosscert does not verify")
    signed = text[:certification_end].encode("ascii")
    if not rsa_verify_tor(identity_key, hashlib.sha1(signed).digest(), certification):
        raise AuthorityCertError("dir-key-certification does not verify")
    if now >= expires:
        raise AuthorityCertError(f"authority key certificate {fingerprint.hex()[:8]}… expired")
    return AuthorityKeyCert(fingerprint, hashlib.sha1(sk_der).digest(), signing_key, published, expires, text)


def _two(args: tuple[str, ...]) -> tuple[str, str]:
    if len(args) < 2:
        raise DocumentError("expected a date and a time")
    return args[0], args[1]


def _object(field: tuple[tuple[str, ...], str | None, bytes | None], tag: str, what: str) -> bytes:
    if field[1] != tag or field[2] is None:
        raise AuthorityCertError(f"{what}: expected a {tag} object")
    return field[2]


def parse_key_certs(text: str, now: float, trusted: Iterable[bytes] | None = None) -> list[AuthorityKeyCert]:
    """Every certificate of a ``/tor/keys/...`` response, verified; those of untrusted authorities
    (when ``trusted`` is given) are dropped."""
    wanted = set(trusted) if trusted is not None else None
    out = []
    for part in _split(text):
        cert = parse_key_cert(part, now)
        if wanted is None or cert.v3ident in wanted:
            out.append(cert)
    return out
