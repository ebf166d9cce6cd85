"""Share links (storage/sharelink.py, docs/formats.md §1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import UnknownVersion, WireError
from storage.errors import LinkError
from storage.sharelink import ShareLink, b64url_decode, b64url_encode, hash_name_from_text

H = bytes(range(32))


def test_plain_and_encrypted_forms() -> None:
    plain = ShareLink(H, "My film (2024).mkv")
    text = plain.format()
    assert text == "peersm:v1:" + H.hex() + "?name=My%20film%20%282024%29.mkv"
    assert ShareLink.parse(text) == plain
    enc = ShareLink(H, None, b"\xff" * 32)
    assert enc.format() == "peersm:v1:" + H.hex() + "#k=" + "_" * 42 + "8"
    assert ShareLink.parse("  " + enc.format() + "\n") == enc


def test_keys_never_in_repr() -> None:
    link = ShareLink(H, "x", b"\x01" * 32)
    assert b64url_encode(b"\x01" * 32) not in repr(link)
    assert b64url_encode(b"\x01" * 32) not in str(link)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "peersm:",
        "magnet:?xt=urn:btih:abc",
        "peersm:v1:" + H.hex().upper(),
        "peersm:v1:" + H.hex()[:-1],
        "peersm:v1:" + H.hex() + "?name=",
        "peersm:v1:" + H.hex() + "?name=a b",
        "peersm:v1:" + H.hex() + "?name=%zz",
        "peersm:v1:" + H.hex() + "?name=%61",  # needless escape: not canonical
        "peersm:v1:" + H.hex() + "?name=%ff",  # lower-case hex
        "peersm:v1:" + H.hex() + "?name=%FF",  # not UTF-8
        "peersm:v1:" + H.hex() + "?x=1",
        "peersm:v1:" + H.hex() + "?name=a&x=1",
        "peersm:v1:" + H.hex() + "#k=abc",
        "peersm:v1:" + H.hex() + "#k=" + "A" * 42 + "B",  # non-canonical last char
        "peersm:v1:" + H.hex() + "#k=" + "A" * 43 + "=",
        "peersm:v1:" + H.hex() + "#key=" + "A" * 43,
        "peersm:vx:" + H.hex(),
    ],
)
def test_bad_links(text: str) -> None:
    with pytest.raises(LinkError):
        ShareLink.parse(text)


def test_unknown_version() -> None:
    with pytest.raises(UnknownVersion):
        ShareLink.parse("peersm:v2:" + H.hex())


def test_helpers() -> None:
    assert hash_name_from_text(H.hex()) == H
    assert b64url_decode(b64url_encode(b"abcde")) == b"abcde"
    with pytest.raises(LinkError):
        b64url_decode("ab+c")


links = st.builds(
    ShareLink,
    st.binary(min_size=32, max_size=32),
    st.none()
    | st.text(min_size=1, max_size=80).filter(lambda s: all(not 0xD800 <= ord(c) <= 0xDFFF for c in s)),
    st.none() | st.binary(min_size=32, max_size=32),
)


@given(links)
def test_link_round_trip(link: ShareLink) -> None:
    text = link.format()
    assert ShareLink.parse(text) == link
    assert ShareLink.parse(text).format() == text


@given(st.text(max_size=200) | st.text(max_size=100).map(lambda t: "peersm:v1:" + H.hex() + t))
def test_link_garbage_gives_typed_error(text: str) -> None:
    try:
        link = ShareLink.parse(text)
    except WireError:
        return
    assert link.format() == text.strip()
