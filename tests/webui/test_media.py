"""The test media (tests/webui/media.py): each variant has its container, codecs, duration,
bitrate and index position (the MP4 ``moov`` before or after ``mdat``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webui.media import MediaSpec, Variant, index_at_front, mp4_boxes, probe, write_media

SPEC = MediaSpec(seconds=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[Variant, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        v: write_media(d / f"clip{v.suffix}", v, SPEC)
        if v is not Variant.MP4_FASTSTART
        else write_media(d / f"front{v.suffix}", v, SPEC)
        for v in Variant
    }


@pytest.mark.parametrize(
    ("variant", "container", "video", "audio"),
    [
        (Variant.MP4_FASTSTART, "mp4", "h264", "aac"),
        (Variant.MP4_INDEX_END, "mp4", "h264", "aac"),
        (Variant.WEBM, "webm", "vp8", "opus"),
    ],
)
def test_container_codecs_duration_bitrate(
    files: dict[Variant, Path], variant: Variant, container: str, video: str, audio: str
) -> None:
    p = probe(files[variant])
    assert container in p.format_name.split(",")
    assert (p.video_codec, p.audio_codec) == (video, audio)
    assert p.duration == pytest.approx(SPEC.seconds, abs=0.05)
    assert p.video_duration == pytest.approx(SPEC.seconds, abs=0.05)
    assert 2_000_000 <= p.bit_rate <= 5_000_000


def test_mp4_index_position(files: dict[Variant, Path]) -> None:
    assert index_at_front(files[Variant.MP4_FASTSTART])
    assert not index_at_front(files[Variant.MP4_INDEX_END])
    for v in (Variant.MP4_FASTSTART, Variant.MP4_INDEX_END):
        boxes = mp4_boxes(files[v])
        assert boxes[0][0] == "ftyp"
        assert sum(size for _, _, size in boxes) == files[v].stat().st_size  # boxes tile the file


def test_webm_is_matroska_not_mp4(files: dict[Variant, Path]) -> None:
    assert files[Variant.WEBM].read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # the EBML magic


def test_variant_names_and_types() -> None:
    assert {v.mime for v in Variant} == {"video/mp4", "video/webm"}
    assert Variant.WEBM.suffix == ".webm" and Variant.MP4_INDEX_END.suffix == ".mp4"
