"""File-name sanitising for exports (storage/names.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.names import sanitize_name


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("film.mkv", "film.mkv"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("..", "fallback"),
        ("", "fallback"),
        (".bashrc", "bashrc"),
        ("a\x00b\nc", "abc"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ('a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"),
        ("CON", "_CON"),
        ("lpt1.txt", "_lpt1.txt"),
        ("name. . ", "name"),
    ],
)
def test_cases(raw: str, safe: str) -> None:
    assert sanitize_name(raw, "fallback") == safe


def test_long_names_keep_the_extension() -> None:
    out = sanitize_name("é" * 300 + ".mkv", "f")
    assert out.endswith(".mkv") and len(out.encode()) <= 255


@given(st.text(max_size=400))
def test_always_one_harmless_component(raw: str) -> None:
    out = sanitize_name(raw, "fallback")
    assert out and "/" not in out and "\\" not in out and "\x00" not in out
    assert out not in (".", "..") and not out.startswith(".")
    assert len(out.encode("utf-8")) <= 255
