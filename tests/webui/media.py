"""Test media made with PyAV (which aiortc installs): a video of N seconds at about 3 Mbit/s in
the three shapes a player meets.

- ``MP4_FASTSTART``: H.264 + AAC in MP4 with the index (``moov``) before the data (``mdat``);
- ``MP4_INDEX_END``: the same with the index after the data (what a plain MP4 writer does): a
  player must fetch the file's end before it can play;
- ``WEBM``: VP8 + Opus in WebM.

Each frame is a moving colour ramp over a band of fresh noise, so the encoder has to spend its
whole bit budget (the bitrate stays near the target) and playback visibly moves.
"""

from __future__ import annotations

import enum
import math
import os
import struct
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av


class Variant(enum.Enum):
    MP4_FASTSTART = "mp4-faststart"
    MP4_INDEX_END = "mp4-index-end"
    WEBM = "webm"

    @property
    def suffix(self) -> str:
        return ".webm" if self is Variant.WEBM else ".mp4"

    @property
    def mime(self) -> str:
        return "video/webm" if self is Variant.WEBM else "video/mp4"


@dataclass(frozen=True)
class MediaSpec:
    seconds: float = 60.0
    width: int = 640
    height: int = 360
    fps: int = 25
    bitrate: int = 3_000_000  # video bits per second (the audio adds about 64 kbit/s)
    audio: bool = True


AUDIO_RATE = 48_000
_AUDIO_CHUNK = 960  # samples per frame handed to the encoder (it regroups them as it needs)


def write_media(path: Path, variant: Variant, spec: MediaSpec = MediaSpec()) -> Path:
    """Write ``spec`` as ``variant`` to ``path``; returns ``path``."""
    options = {"movflags": "faststart"} if variant is Variant.MP4_FASTSTART else {}
    fmt = "webm" if variant is Variant.WEBM else "mp4"
    with av.open(str(path), mode="w", format=fmt, options=options) as out:
        if variant is Variant.WEBM:
            video = out.add_stream("libvpx", rate=spec.fps)
            # realtime speed; a fixed target rate so the file is the size asked for
            video.options = {"deadline": "realtime", "cpu-used": "16", "threads": "2", "static-thresh": "0"}
        else:
            video = out.add_stream("libx264", rate=spec.fps)
            video.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "maxrate": str(spec.bitrate),
                "bufsize": str(spec.bitrate),
            }
            video.profile = "Constrained Baseline"
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        video.bit_rate = spec.bitrate
        video.gop_size = spec.fps  # a keyframe every second: seeks land close to where asked
        audio = None
        if spec.audio:
            audio = out.add_stream("libopus" if variant is Variant.WEBM else "aac", rate=AUDIO_RATE)
            audio.layout = "mono"
            audio.bit_rate = 64_000
        # audio and video in time order, so the container interleaves them as real files do (a
        # player reads both from about the same offset: a stream of the playhead is one window)
        frames = round(spec.seconds * spec.fps)
        total = round(spec.seconds * AUDIO_RATE)
        sample = 0
        for i in range(frames):
            out.mux(video.encode(_video_frame(spec, i)))
            until = min(total, (i + 1) * AUDIO_RATE // spec.fps)
            while audio is not None and sample < until:
                n = min(_AUDIO_CHUNK, total - sample)
                out.mux(audio.encode(_audio_frame(sample, n)))
                sample += n
        out.mux(video.encode(None))
        if audio is not None:
            while sample < total:
                n = min(_AUDIO_CHUNK, total - sample)
                out.mux(audio.encode(_audio_frame(sample, n)))
                sample += n
            out.mux(audio.encode(None))
    return path


def write_all(directory: Path, spec: MediaSpec = MediaSpec(), stem: str = "clip") -> dict[Variant, Path]:
    """Every variant of ``spec`` under ``directory``: ``{variant: path}``."""
    directory.mkdir(parents=True, exist_ok=True)
    return {v: write_media(directory / f"{stem}-{v.value}{v.suffix}", v, spec) for v in Variant}


def _video_frame(spec: MediaSpec, i: int) -> av.VideoFrame:
    w, h = spec.width, spec.height
    frame = av.VideoFrame(w, h, "yuv420p")
    ramp = bytes((x * 255 // (2 * w)) & 0xFF for x in range(2 * w))
    shift = (i * 8) % w
    top = h * 2 // 3  # the ramp moves across the top two thirds; fresh noise fills the rest
    luma = ramp[shift : shift + w] * top + os.urandom(w * (h - top))
    _fill(frame.planes[0], luma, w, h)
    cw, ch = w // 2, h // 2
    hue = int(128 + 100 * math.sin(2 * math.pi * i / (spec.fps * 4)))
    _fill(frame.planes[1], bytes([hue]) * (cw * ch), cw, ch)
    _fill(frame.planes[2], bytes([255 - hue]) * (cw * ch), cw, ch)
    frame.pts = i
    frame.time_base = Fraction(1, spec.fps)
    return frame


def _fill(plane: av.video.plane.VideoPlane, data: bytes, width: int, height: int) -> None:
    if plane.line_size != width:  # rows padded to the plane's alignment
        pad = bytes(plane.line_size - width)
        data = b"".join(data[r * width : (r + 1) * width] + pad for r in range(height))
    plane.update(data)


def _audio_frame(start: int, n: int) -> av.AudioFrame:
    samples = array(
        "h", (int(8000 * math.sin(2 * math.pi * 440 * (start + k) / AUDIO_RATE)) for k in range(n))
    )
    frame = av.AudioFrame(format="s16", layout="mono", samples=n)
    frame.planes[0].update(samples.tobytes())
    frame.sample_rate = AUDIO_RATE
    frame.pts = start
    frame.time_base = Fraction(1, AUDIO_RATE)
    return frame


# ---- reading back (the fast test, and the benchmark's sanity checks) ------------------------------


def mp4_boxes(path: Path) -> list[tuple[str, int, int]]:
    """The top-level boxes of an MP4 file: ``(type, offset, size)`` in file order."""
    boxes = []
    size_total = path.stat().st_size
    with path.open("rb") as f:
        off = 0
        while off + 8 <= size_total:
            f.seek(off)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:  # a 64-bit size follows
                (size,) = struct.unpack(">Q", f.read(8))
            elif size == 0:  # to the end of the file
                size = size_total - off
            if size < 8:
                raise ValueError(f"{path}: a box of {size} bytes at {off}")
            boxes.append((kind.decode("latin-1"), off, size))
            off += size
    return boxes


def index_at_front(path: Path) -> bool:
    """True when the MP4's ``moov`` (its index) comes before its ``mdat``."""
    order = [kind for kind, _, _ in mp4_boxes(path)]
    return order.index("moov") < order.index("mdat")


@dataclass(frozen=True)
class Probe:
    format_name: str
    duration: float  # seconds (the container's: the longest stream)
    video_duration: float  # seconds of the video stream
    bit_rate: float  # bits per second over the whole file
    video_codec: str
    audio_codec: str | None


def probe(path: Path) -> Probe:
    with av.open(str(path)) as f:
        duration = (f.duration or 0) / av.time_base
        vs = f.streams.video[0]
        tb = vs.time_base or Fraction(1, 1)
        if vs.duration is not None:
            video_duration = float(vs.duration * tb)
        else:  # Matroska keeps no per-stream duration: the last frame's end
            last = max(p.pts + (p.duration or 0) for p in f.demux(vs) if p.pts is not None)
            video_duration = float(last * tb)
        a = f.streams.audio[0].codec_context.name if f.streams.audio else None
        rate = path.stat().st_size * 8 / duration
        return Probe(f.format.name, duration, video_duration, rate, vs.codec_context.name, a)


def keyframe_at(path: Path, seconds: float) -> tuple[float, int]:
    """The video keyframe a player seeking to ``seconds`` starts from: ``(its time, its byte offset
    in the file)``, the offset being where the player's read after the seek begins."""
    with av.open(str(path)) as f:
        vs = f.streams.video[0]
        tb = vs.time_base or Fraction(1, 1)
        f.seek(int(seconds / tb), stream=vs, backward=True, any_frame=False)
        for packet in f.demux(vs):
            if packet.pts is not None and packet.pos is not None and packet.pos >= 0 and packet.is_keyframe:
                return float(packet.pts * tb), int(packet.pos)
    raise ValueError(f"{path}: no keyframe at or before {seconds} s")
