"""Video files in and out, on PyAV: read clips, probe metadata, write mp4 / webm / gif.

The edge format is ``uint8 [f h w 3]`` (RGB, numpy or torch); models see ``float [c f h w]`` in
``[-1, 1]``. :func:`to_model` and :func:`to_uint8` convert between the two, once, at the edge.

Reading (:func:`read_video`) selects frames by count (``num_frames``), step (``stride``) or a target
frame rate (``fps``, resampled in time), from a start that is a frame index, a time in seconds, the
centre of the file, or a random place; then resizes the short side and crops (centre or random) to
``size``. Decoding seeks to the first wanted frame and stops after the last one, so a clip from a
long file costs about as much as the clip. Frames are matched to wanted indices by their
timestamps, so variable-frame-rate files (GIFs with uneven delays, phone videos) give the frame
shown at each wanted time.

Writing (:func:`write_video`) picks the container and codec from the extension: ``.mp4`` / ``.mov``
/ ``.mkv`` H.264 (yuv420p, plays everywhere), ``.webm`` VP9 (VP8 where the PyAV build lacks VP9),
``.gif`` with a per-frame palette; the file appears atomically (temporary file, fsync, rename).

:func:`probe` reads fps, frame count, size, duration and codec from container metadata and decodes
the first frame only (for the display rotation, which FFmpeg hands over with decoded frames, and to
know that the stream decodes at all); where the container stores no frame count (webm, mkv) it counts
packets, which reads the file but decodes nothing more.

What a file gives (both :func:`read_video` and :func:`probe`): frames as they are displayed. A
rotation in the file's display matrix (phone videos; ``ffmpeg -display_rotation``) is applied, by
quarter turns, as FFmpeg's player does (mirroring and angles that are not a multiple of 90 degrees are
ignored), so the width and height are the displayed ones. Alpha is dropped (the stored colour, not
composited). Grayscale comes as R = G = B; 10-, 12- and 16-bit files are converted to 8 bits. A stream
whose frame size changes part-way is scaled to its first frame's size.

Errors are :class:`VideoError` (a ``ValueError``) or ``FileNotFoundError`` and name the file.
"""

from __future__ import annotations

import errno
import functools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
from einops import rearrange

from mediadiff.utils import atomic_path

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_FORMATS",
    "VideoError",
    "VideoInfo",
    "clip_indices",
    "probe",
    "read_video",
    "resize_crop_plan",
    "to_model",
    "to_uint8",
    "video_info",
    "write_video",
]

READ_EXTENSIONS = (".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi", ".gif")
"""File extensions treated as videos when a folder is scanned (any format FFmpeg reads works in
:func:`read_video`)."""

WRITE_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "libopenh264", "mpeg4")),
    ".mov": ("mov", ("libx264", "libopenh264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "libopenh264", "libvpx-vp9", "mpeg4")),
    ".webm": ("webm", ("libvpx-vp9", "libvpx")),
    ".gif": ("gif", ("gif",)),
}
"""Extension -> (FFmpeg muxer, encoders in order of preference; the first one this PyAV build has wins)."""

Size = int | tuple[int, int]
Crop = Literal["center", "random"] | None
Start = int | Literal["center", "random"]


class VideoError(ValueError):
    """A video file that cannot be read as asked: not a video, no video stream, corrupt, too short."""


# --- metadata -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns from a file's headers (and, where needed, its packet count)."""

    path: str
    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "gif"
    codec: str  # decoder name, e.g. "h264", "vp9", "mpeg4", "mjpeg", "gif"
    width: int
    height: int
    fps: float  # average frame rate (FFmpeg's guess: r_frame_rate, else avg_frame_rate)
    num_frames: int
    duration: float  # seconds
    pix_fmt: str | None
    counted: bool  # True when num_frames came from counting packets, not from the header
    rotation: int = 0  # degrees counterclockwise (0, 90, 180, 270) applied on read; width and height
    # are the displayed ones (swapped from the coded ones for 90 and 270)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(f, h, w, 3)``: the shape :func:`read_video` returns for the whole file at full size."""
        return (self.num_frames, self.height, self.width, 3)


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    """Open ``path`` for reading; errors name the file and say whether it is missing or not a video."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "no such video file", str(p))
    if p.is_dir():
        raise VideoError(f"{p}: is a directory, expected a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: empty file (0 bytes), expected a video")
    try:
        return av.open(str(p), mode="r", metadata_errors="replace")  # tags not in UTF-8
    except av.FFmpegError as e:
        raise VideoError(f"{p}: not a readable video file ({_reason(e)})") from e


def _reason(e: Exception) -> str:
    """FFmpeg's message without the errno prefix and the file name PyAV appends."""
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).strip()


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike) -> av.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        raise VideoError(f"{path}: no video stream (streams found: {kinds})")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # a codec id FFmpeg has no decoder for
        raise VideoError(f"{path}: not a readable video file (FFmpeg has no decoder for its video stream)")
    return stream


def _stream_fps(stream: av.VideoStream) -> float | None:
    """FFmpeg's guess of the frame rate (``r_frame_rate``), else the average rate. Where the guess is
    just the time base's tick rate (the demuxer saw too few frames to measure: a 2-frame GIF at 10 fps
    has ticks of 1/100 s and "100 fps") and the average rate is lower, the average rate."""
    guessed, average, tb = stream.guessed_rate, stream.average_rate, stream.time_base
    if guessed and average and tb and guessed == 1 / tb and 0 < average < guessed:
        return float(average)
    for rate in (guessed, average, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counterclockwise quarter turns (0..3) that display ``frame`` upright, from its display matrix;
    0 where there is none or its angle is not within 2 degrees of a multiple of 90 (as FFmpeg's player)."""
    angle = float(frame.rotation or 0)
    turns = round(angle / 90)
    return turns % 4 if abs(angle - 90 * turns) <= 2 else 0


def _first_frame(
    container: av.container.InputContainer, stream: av.VideoStream, count: bool
) -> tuple[av.VideoFrame | None, int]:
    """``(first decoded frame or None, packets demuxed)``: decodes until the first frame and, with
    ``count``, demuxes the rest without decoding (one packet per frame for every common codec).

    A packet that does not decode is passed over (a damaged first GOP; the decoder starts again at
    the next key frame); errors of the demuxer propagate."""
    first, packets = None, 0
    for packet in container.demux(stream):
        if packet.size > 0:
            packets += 1
        if first is None:
            try:
                first = next(iter(packet.decode()), None)  # the last, empty packet flushes the decoder
            except av.FFmpegError:
                pass
        if first is not None and not count:
            break
    return first, packets


def probe(path: str | os.PathLike, *, count_frames: bool = False) -> VideoInfo:
    """Metadata of the first video stream of ``path``, decoding its first frame only.

    Args:
        path: a video file in any container FFmpeg reads.
        count_frames: count packets even when the header states a frame count (catches truncated
            files whose header promises more frames than they hold). When the header has no count
            (webm, mkv, some avi), packets are always counted: this reads the file but decodes nothing
            after the first frame.

    The first frame is decoded for its display rotation (see the module docstring) and its size:
    ``width`` and ``height`` are the displayed ones, as :func:`read_video` returns them, even where the
    container's header states another size than the bitstream decodes to (a damaged file).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoError: not a video, no video stream, no frame rate / frame count / frame size can be
            found, or no frame decodes.
    """
    with _open(path) as container:
        stream = _video_stream(container, path)
        fps = _stream_fps(stream)
        if fps is None:
            raise VideoError(f"{path}: video stream has no frame rate")
        num_frames = int(stream.frames or 0)
        counted = num_frames <= 0 or count_frames
        try:
            first, packets = _first_frame(container, stream, counted)
        except av.FFmpegError as e:
            raise VideoError(f"{path}: corrupt video, demuxing failed ({_reason(e)})") from e
        if counted:
            num_frames = packets
        if first is None:
            raise VideoError(f"{path}: corrupt video: none of its packets decodes to a frame")
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = num_frames / fps
        if num_frames <= 0:
            raise VideoError(f"{path}: video stream holds no frames")
        ctx = stream.codec_context
        # the decoded frame's size, which read_video returns: a header can disagree with the bitstream
        # (a damaged SPS decodes to another size than the container's track header states)
        width, height = first.width, first.height
        turns = _quarter_turns(first)
        if turns % 2:
            width, height = height, width
        return VideoInfo(
            path=str(path),
            container=container.format.name,
            codec=ctx.name,
            width=width,
            height=height,
            fps=fps,
            num_frames=num_frames,
            duration=duration,
            pix_fmt=ctx.pix_fmt or first.format.name,
            counted=counted,
            rotation=90 * turns,
        )


video_info = probe
"""Alias of :func:`probe`."""


# --- frame selection ----------------------------------------------------------------------------


def _offsets(num_frames: int, stride: int, fps: float | None, src_fps: float) -> list[int]:
    """Frame offsets from the clip start: ``k * stride``, or ``floor(k * src_fps / fps)`` (the frame
    on screen at time ``k / fps``; frames repeat when ``fps > src_fps``)."""
    if fps is None:
        return [k * stride for k in range(num_frames)]
    ratio = src_fps / fps
    return [math.floor(k * ratio + 1e-6) for k in range(num_frames)]


def _check_selection(num_frames: int | None, stride: int, fps: float | None) -> None:
    if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
        raise ValueError(f"num_frames must be a positive int or None, got {num_frames!r}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if fps is not None:
        if stride != 1:
            raise ValueError(f"give either stride ({stride}) or fps ({fps}), not both")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")


def clip_indices(
    total: int,
    num_frames: int,
    *,
    src_fps: float,
    stride: int = 1,
    fps: float | None = None,
    start: Start = 0,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Source frame indices of a clip of ``num_frames`` from a file of ``total`` frames.

    Args:
        total: frames in the file.
        num_frames: frames in the clip.
        src_fps: the file's frame rate (used when ``fps`` is given).
        stride: take every ``stride``-th frame. Exclusive with ``fps``.
        fps: resample to this frame rate: clip frame ``k`` is the source frame on screen at time
            ``k / fps`` after the start.
        start: first source frame: an index, ``"center"`` (the clip sits in the middle of the file)
            or ``"random"`` (uniform over the places the clip fits, drawn from ``generator``).
        generator: randomness for ``start="random"``.

    Raises:
        VideoError: the clip needs more frames than ``total`` (the message gives both numbers).
    """
    _check_selection(num_frames, stride, fps)
    offsets = _offsets(num_frames, stride, fps, src_fps)
    span = offsets[-1] + 1  # source frames the clip covers
    slack = total - span
    if isinstance(start, str):
        if slack < 0:
            raise VideoError(_too_few(None, total, num_frames, stride, fps, span, start))
        if start == "center":
            first = slack // 2
        elif start == "random":
            first = int(torch.randint(0, slack + 1, (1,), generator=generator))
        else:
            raise ValueError(f"start must be a frame index, 'center' or 'random', got {start!r}")
    else:
        first = int(start)
        if first < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if first + span > total:
            raise VideoError(_too_few(None, total, num_frames, stride, fps, span, first))
    return [first + o for o in offsets]


def _too_few(path, total, num_frames, stride, fps, span, start) -> str:
    step = f"fps={fps:g}" if fps is not None else f"stride={stride}"
    where = f"{path}: " if path is not None else ""
    return (
        f"{where}too few frames: num_frames={num_frames} with {step} from start={start!r} needs "
        f"{span} source frames, the video has {total}"
    )


# --- resize and crop ----------------------------------------------------------------------------


def _as_hw(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return h, w


def resize_crop_plan(
    src_hw: tuple[int, int],
    size: Size,
    crop: Crop = "center",
    generator: torch.Generator | None = None,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where to resize and crop a ``src_hw`` frame to ``size``: ``((rh, rw), (top, left))``.

    With ``crop`` set, the frame is scaled (aspect kept) until it covers ``size`` (for a square size:
    its short side equals the size), then cropped at the centre or at a place drawn from
    ``generator``. With ``crop=None`` it is resized to ``size`` exactly (aspect not kept).
    """
    th, tw = _as_hw(size)
    sh, sw = src_hw
    if crop is None:
        return (th, tw), (0, 0)
    scale = max(th / sh, tw / sw)
    rh, rw = max(th, round(sh * scale)), max(tw, round(sw * scale))
    if crop == "center":
        return (rh, rw), ((rh - th) // 2, (rw - tw) // 2)
    if crop == "random":
        top = int(torch.randint(0, rh - th + 1, (1,), generator=generator))
        left = int(torch.randint(0, rw - tw + 1, (1,), generator=generator))
        return (rh, rw), (top, left)
    raise ValueError(f"crop must be 'center', 'random' or None, got {crop!r}")


class _Converter:
    """Turns decoded frames into uint8 RGB ``[h w 3]`` at the target size, as displayed.

    Colour conversion comes first, at full size, then swscale resizes the RGB frame: resizing
    during the YUV -> RGB conversion treats subsampled chroma coarsely (4x the error on sharp
    colour edges, measured against FFmpeg's RGB test pattern). The first frame fixes the rotation,
    the resize and the crop for the whole clip; a later frame of another coded size (a stream whose
    resolution changes) is scaled to the first one's. Resizing happens before the rotation (to the
    rotated plan's size, transposed), so the turn is a cheap ``np.rot90`` of the small frame.
    """

    def __init__(self, size: Size | None, crop: Crop, generator: torch.Generator | None, path=None):
        self.size, self.crop, self.generator, self.path = size, crop, generator, path
        self.plan = None  # ((rh, rw), (top, left)) of the displayed frame, with size
        self.coded = None  # (h, w) each frame is scaled to before its rotation
        self.turns = 0  # counterclockwise quarter turns
        self.last = (None, None)  # (frame, array): a frame emitted twice is converted once

    def _setup(self, frame: av.VideoFrame) -> None:
        self.turns = _quarter_turns(frame)
        h, w = frame.height, frame.width
        shown = (w, h) if self.turns % 2 else (h, w)  # [h w] as displayed
        if self.size is None:
            self.coded = (h, w)
            return
        # drawn once per clip, on the first frame: the same crop for all
        self.plan = resize_crop_plan(shown, self.size, self.crop, self.generator)
        rh, rw = self.plan[0]
        self.coded = (rw, rh) if self.turns % 2 else (rh, rw)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.last[0] is frame:
            return self.last[1]
        if self.coded is None:
            self._setup(frame)
        kwargs = {"format": "rgb24"}
        if frame.color_range:  # only when tagged: swscale assumes limited range otherwise
            kwargs["src_color_range"] = frame.color_range
        h, w = frame.height, frame.width
        ch, cw = self.coded
        try:
            if (ch, cw) == (h, w):
                array = frame.to_ndarray(**kwargs)  # [h w 3]
            else:
                interpolation = "AREA" if ch <= h and cw <= w else "BICUBIC"
                rgb = frame.reformat(**kwargs)  # [h w 3]
                array = rgb.reformat(
                    width=cw, height=ch, interpolation=interpolation
                ).to_ndarray()  # [ch cw 3]
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(
                f"{self.path}: cannot convert a {w}x{h} {frame.format.name} frame to RGB ({_reason(e)})"
            ) from e
        if self.turns:
            array = np.rot90(array, self.turns)  # [rh rw 3]: counterclockwise, as displayed
        if self.plan is not None:
            (_, _), (top, left) = self.plan
            th, tw = _as_hw(self.size)
            array = array[top : top + th, left : left + tw]  # [th tw 3]
        self.last = (frame, array)
        return array


# --- reading ------------------------------------------------------------------------------------


_DISCONTINUITY = 10.0  # seconds: a larger timestamp jump in MPEG-TS and the like is a discontinuity


class _Overshoot(Exception):
    """A seek landed after the first wanted frame; decode from the beginning instead."""


def _decode(
    container: av.container.InputContainer, stream: av.VideoStream, path, seek_to: int | None
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield ``(position, frame)``: position in source frames since the stream start, from timestamps.

    Frames without a timestamp take the previous position + 1. In containers whose timestamps may
    jump (MPEG-TS and the others FFmpeg flags ``TS_DISCONT``: broadcast captures, concatenated
    files, corrupt packets), a jump of more than :data:`_DISCONTINUITY` seconds either way is a
    discontinuity, as for FFmpeg's ``-dts_delta_threshold``: the timeline continues one frame after
    the previous frame instead of holding that frame for the whole jump (hours of copies).
    """
    src_fps = _stream_fps(stream)
    tb = stream.time_base
    t0 = float(stream.start_time * tb) if (seek_to is not None and stream.start_time is not None) else None
    jumps = bool(container.format.flags & av.format.Flags.ts_discont.value)
    if seek_to is not None:
        container.seek(seek_to, stream=stream, backward=True, any_frame=False)
    position, shift = -1.0, 0.0
    try:
        for frame in container.decode(stream):
            if frame.pts is None or tb is None:
                position += 1.0
            else:
                t = float(frame.pts * tb)
                if t0 is None:
                    t0 = t
                at = (t - t0) * src_fps + shift
                if jumps and position >= 0 and abs(at - position) > _DISCONTINUITY * src_fps:
                    shift += position + 1.0 - at
                    at = position + 1.0
                position = at
            yield position, frame
    except av.FFmpegError as e:
        raise VideoError(f"{path}: corrupt video, decoding failed ({_reason(e)})") from e


def _select(frames: Iterator[tuple[float, av.VideoFrame]], targets: Sequence[int], convert: _Converter):
    """Match decoded frames to wanted indices: target ``i`` gets the frame at position ``[i-½, i+½)``,
    or, where a variable-rate file has none there, the frame on screen (the last one before).
    Stops as soon as the last target is served. Returns the arrays and the last position seen."""
    out, k, prev, position = [], 0, None, -1.0
    for position, frame in frames:
        while k < len(targets) and position >= targets[k] + 0.5:  # frame is past target k: hold prev
            if prev is None:
                raise _Overshoot
            out.append(convert(prev))
            k += 1
        while k < len(targets) and position >= targets[k] - 0.5:  # frame is target k
            out.append(convert(frame))
            k += 1
        if k == len(targets):
            break
        prev = frame
    return out, position


def _select_all(frames: Iterator[tuple[float, av.VideoFrame]], step, convert: _Converter) -> list[np.ndarray]:
    """Open-ended selection (no ``num_frames``): targets ``start, start+step(1), ...`` until the file ends."""
    out, k, prev = [], 0, None
    target = step(0)
    for position, frame in frames:
        while position >= target + 0.5:
            if prev is None:
                raise _Overshoot
            out.append(convert(prev))
            k += 1
            target = step(k)
        while position >= target - 0.5:
            out.append(convert(frame))
            k += 1
            target = step(k)
        prev = frame
    return out


def read_video(
    path: str | os.PathLike,
    num_frames: int | None = None,
    *,
    stride: int = 1,
    fps: float | None = None,
    start: Start = 0,
    start_sec: float | None = None,
    size: Size | None = None,
    crop: Crop = "center",
    generator: torch.Generator | None = None,
    output: Literal["numpy", "torch"] = "numpy",
    seek: bool = True,
) -> np.ndarray | torch.Tensor:
    """Decode a clip of ``path`` as uint8 RGB ``[f h w 3]``.

    Args:
        path: any video FFmpeg reads (mp4, webm, mov, mkv, avi, gif, ...).
        num_frames: frames to return; ``None`` reads to the end of the file.
        stride: take every ``stride``-th source frame.
        fps: resample in time to this frame rate instead (frame ``k`` is the one on screen at
            ``k / fps`` seconds after the start; frames repeat when ``fps`` exceeds the file's rate).
        start: first source frame: an index, ``"center"`` or ``"random"`` (the last two need
            ``num_frames``; see :func:`clip_indices`).
        start_sec: start at this time in seconds instead of ``start`` (rounded to the nearest frame).
        size: output ``(h, w)`` or an int for a square; ``None`` keeps the file's size.
        crop: with ``size``: ``"center"`` or ``"random"`` crop after scaling the short side (aspect
            kept), or ``None`` to resize to ``size`` exactly (aspect not kept).
        generator: randomness for ``start="random"`` and ``crop="random"`` (start drawn first);
            ``None`` draws from torch's global generator.
        output: ``"numpy"`` array or ``"torch"`` tensor.
        seek: seek to the first wanted frame (to the key frame before it) instead of decoding from
            the beginning. A seek that lands past the frame, or after which the clip is not found
            (timestamps that jump, data that does not decode), falls back to decoding from the start.

    Frames come as displayed (see the module docstring): the display rotation applied, alpha dropped,
    grayscale and high-bit-depth files as RGB uint8, a stream whose size changes scaled to its first
    frame's size.

    Frame ``i`` is the frame on screen at ``i / rate`` seconds after the first frame, where ``rate``
    is :attr:`VideoInfo.fps`; frames are matched by their timestamps (within half a frame). For a
    constant-rate file that is simply the ``i``-th decoded frame. For a variable-rate file (a GIF
    that pauses, a phone video) a held frame repeats, so reading the whole file can return more
    frames than :func:`probe` counts; clip bounds are checked against that count.

    Returns:
        uint8 ``[f h w 3]``.

    Raises:
        FileNotFoundError: missing file.
        VideoError: not a video, no video stream, corrupt data, or fewer frames than the request needs.
    """
    _check_selection(num_frames, stride, fps)
    if size is not None:
        _as_hw(size)
    if output not in ("numpy", "torch"):
        raise ValueError(f"output must be 'numpy' or 'torch', got {output!r}")
    if start_sec is not None:
        if start != 0:
            raise ValueError("give either start or start_sec, not both")
        if start_sec < 0:
            raise ValueError(f"start_sec must be >= 0, got {start_sec}")

    with _open(path) as container:
        stream = _video_stream(container, path)
        src_fps = _stream_fps(stream)
        if src_fps is None:
            raise VideoError(f"{path}: video stream has no frame rate")
        if start_sec is not None:
            start = round(start_sec * src_fps)
        if isinstance(start, str) and num_frames is None:
            raise ValueError(f"start={start!r} needs num_frames")
        if not isinstance(start, str) and start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        total = int(stream.frames or 0)
        can_seek = seek and stream.start_time is not None and stream.time_base is not None
        seek_from = (float(stream.start_time * stream.time_base), stream.time_base) if can_seek else None
    if isinstance(start, str) and total <= 0:  # the header has no count: count packets
        total = probe(path).num_frames

    if num_frames is None:  # open-ended: from start to the end of the file
        ratio = src_fps / fps if fps is not None else stride
        targets = None
        first = int(start)
    elif total > 0:  # the header knows the length: check the clip fits before decoding
        try:
            targets = clip_indices(
                total, num_frames, src_fps=src_fps, stride=stride, fps=fps, start=start, generator=generator
            )
        except VideoError as e:
            raise VideoError(f"{path}: {e}") from None
        first = targets[0]
    else:  # unknown length, a fixed start: decoding finds out whether the clip fits
        targets = [int(start) + o for o in _offsets(num_frames, stride, fps, src_fps)]
        first = targets[0]

    convert = _Converter(size, crop, generator, path)

    def run(seek_to: int | None) -> tuple[list[np.ndarray], float]:
        with _open(path) as container:
            frames = _decode(container, _video_stream(container, path), path, seek_to)
            if targets is None:
                return _select_all(frames, lambda k: first + math.floor(k * ratio + 1e-6), convert), math.nan
            return _select(frames, targets, convert)

    seek_to = None
    if seek_from is not None and first > 0:  # to the key frame at or before the first wanted frame
        t0, time_base = seek_from
        seek_to = max(0, math.floor((t0 + (first - 0.5) / src_fps) / time_base))
    try:
        out, last = run(seek_to)
        if seek_to is not None and targets is not None and len(out) < num_frames:
            raise _Overshoot  # after the seek the timestamps never reached the clip (corrupt, jumping)
    except (_Overshoot, av.FFmpegError, VideoError):
        if seek_to is None:
            raise
        out, last = run(None)  # the seek misbehaved: decode from the beginning

    if targets is None and not out:
        raise VideoError(f"{path}: no frames at or after start={first}")
    if targets is not None and len(out) < num_frames:
        have = max(round(last) + 1, 0)
        step = f"fps={fps:g}" if fps is not None else f"stride={stride}"
        raise VideoError(
            f"{path}: too few frames: num_frames={num_frames} with {step} needs source frames "
            f"{targets[0]}..{targets[-1]}, decoding ended after {have} frames"
        )
    video = np.stack(out)  # [f h w 3]
    return torch.from_numpy(video) if output == "torch" else video


# --- model format -------------------------------------------------------------------------------


def to_model(
    video: np.ndarray | torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """uint8 ``[f h w 3]`` (or batched ``[b f h w 3]``) -> float ``[c f h w]`` (``[b c f h w]``) in [-1, 1]."""
    if isinstance(video, np.ndarray) and not video.flags.writeable:
        video = video.copy()  # torch warns on read-only arrays (e.g. from np.broadcast_to)
    x = torch.as_tensor(video)
    if x.dtype != torch.uint8 or x.ndim not in (4, 5) or x.shape[-1] != 3:
        raise ValueError(f"to_model expects uint8 [f h w 3] or [b f h w 3], got {x.dtype} {tuple(x.shape)}")
    x = x.to(device=device, dtype=dtype) / 127.5 - 1.0
    return rearrange(x, "... f h w c -> ... c f h w")  # [(b) 3 f h w]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float ``[c f h w]`` (or ``[b c f h w]``) in [-1, 1] -> uint8 ``[f h w c]`` (``[b f h w c]``) on CPU.

    Values outside [-1, 1] are clipped; the mapping ``(x + 1) * 127.5`` rounds to nearest, so
    ``to_uint8(to_model(v)) == v`` exactly.
    """
    if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim not in (4, 5):
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"to_uint8 expects a float tensor [c f h w] or [b c f h w], got {shape}")
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(x, "... c f h w -> ... f h w c").contiguous().cpu()  # [(b) f h w c]


# --- writing ------------------------------------------------------------------------------------


def _pick_codec(ext: str, codec: str | None) -> tuple[str, str]:
    fmt, choices = WRITE_FORMATS[ext]
    if codec is not None:
        if codec not in av.codecs_available:
            have = [c for c in choices if c in av.codecs_available]
            raise ValueError(f"codec {codec!r} is not in this PyAV build; for {ext} it has {have}")
        return fmt, codec
    for name in choices:
        if name in av.codecs_available:
            return fmt, name
    raise ValueError(f"this PyAV build has no encoder for {ext} (tried {list(choices)})")


@functools.lru_cache(maxsize=1)
def _x264_asm() -> str | None:
    """The SIMD level to cap libx264 at, or None for its own choice.

    x264's kernels up to AVX2 give the bits of its C code (``asm=0``; checked on an AMD EPYC, and
    ``tests/test_video_io.py`` checks it wherever it runs). Its AVX-512 ones did not on that EPYC:
    other bytes than the C code for every clip tried, and other bytes again from one process to the
    next, for the same frames (gone with ``mbtree=0``). On a CPU with AVX-512 it is capped at AVX2,
    which that CPU has.
    """
    from mediadiff.utils import cpuinfo

    return "AVX2" if "avx512f" in cpuinfo() else None


def _encoder_options(codec: str, crf: int | None) -> dict[str, str]:
    if codec == "libx264":
        options = {"crf": str(18 if crf is None else crf), "preset": "medium"}
        asm = _x264_asm()
        return options if asm is None else {**options, "x264-params": f"asm={asm}"}
    if codec in ("libvpx-vp9", "libvpx"):  # constant-quality mode needs bitrate 0
        return {
            "crf": str(24 if crf is None else crf),
            "b": "0",
            "deadline": "good",
            "cpu-used": "4",
            "row-mt": "1",
        }
    if codec == "mpeg4":
        return {"qscale": "2"}
    return {}


def write_video(
    path: str | os.PathLike,
    video: np.ndarray | torch.Tensor,
    fps: float,
    *,
    codec: str | None = None,
    crf: int | None = None,
) -> Path:
    """Write uint8 RGB ``[f h w 3]`` to ``path``; the extension picks container and codec.

    - ``.mp4``, ``.mov``, ``.mkv``: H.264 (libx264, ``crf`` 18 by default: visually lossless),
      yuv420p. Odd heights or widths are padded by one repeated edge row / column (4:2:0 needs
      even sizes), so the file is up to one pixel larger than ``video``. The same frames give the
      same bytes in every process, those of x264's C code (its SIMD capped at AVX2 on a CPU with
      AVX-512: :func:`_x264_asm`).
    - ``.webm``: VP9 (VP8 if the PyAV build lacks VP9) in constant-quality mode (``crf`` 24), yuv420p,
      padded like mp4.
    - ``.gif``: 256 colours per frame (FFmpeg's palettegen / paletteuse, ordered dither), looping.
      GIF stores delays in 1/100 s, so frame times are rounded to 10 ms (the mean rate is kept).

    The file is written to a temporary name in the same folder, fsynced and renamed, so a reader
    never sees a partial file. Missing parent folders are created.

    Args:
        path: output file; its extension is one of :data:`WRITE_FORMATS`.
        video: uint8 ``[f h w 3]`` numpy array or tensor (use :func:`to_uint8` on model output).
        fps: frames per second (float; 29.97 and the like are stored as fractions).
        codec: an encoder name to use instead of the default for the extension.
        crf: quality for libx264 / libvpx (lower is better).

    Returns:
        the path written.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITE_FORMATS:
        what = ext or "files without an extension"
        raise ValueError(f"{path}: cannot write {what}; supported: {', '.join(WRITE_FORMATS)}")
    if torch.is_tensor(video):
        video = video.detach().cpu().numpy()
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < 1:
        raise ValueError(
            f"{path}: write_video expects uint8 [f h w 3] with f >= 1, got {video.dtype} {video.shape}"
            " (convert a model tensor [c f h w] with to_uint8)"
        )
    if not (isinstance(fps, (int, float, Fraction)) and fps > 0):
        raise ValueError(f"{path}: fps must be > 0, got {fps!r}")
    fmt, codec = _pick_codec(ext, codec)
    rate = Fraction(fps).limit_denominator(1001)

    with atomic_path(path) as tmp:
        if codec == "gif":
            _write_gif(tmp, video, rate)
        else:
            _write_encoded(tmp, video, rate, fmt, codec, _encoder_options(codec, crf))
    return path


def _write_encoded(tmp: Path, video: np.ndarray, rate: Fraction, fmt: str, codec: str, options: dict) -> None:
    h, w = video.shape[1:3]
    if h % 2 or w % 2:  # 4:2:0 chroma needs even sizes: repeat the last row / column
        video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # [f h+h%2 w+w%2 3]
    container_options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
    with av.open(str(tmp), mode="w", format=fmt, options=container_options) as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        for i, rgb in enumerate(video):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
                format="yuv420p"
            )
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))  # flush the encoder


def _write_gif(tmp: Path, video: np.ndarray, rate: Fraction) -> None:
    h, w = video.shape[1:3]
    time_base = 1 / rate
    graph = av.filter.Graph()
    src = graph.add_buffer(width=w, height=h, format="rgb24", time_base=time_base)
    split = graph.add("split")
    palettegen = graph.add("palettegen", "stats_mode=single")  # a palette per frame
    paletteuse = graph.add("paletteuse", "dither=bayer:bayer_scale=3:new=1")
    sink = graph.add("buffersink")
    src.link_to(split)
    split.link_to(paletteuse, 0, 0)
    split.link_to(palettegen, 1, 0)
    palettegen.link_to(paletteuse, 0, 1)
    paletteuse.link_to(sink)
    graph.configure()

    with av.open(str(tmp), mode="w", format="gif", options={"loop": "0"}) as out:
        stream = out.add_stream("gif", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "pal8"

        def drain() -> None:
            while True:
                try:
                    frame = graph.pull()  # pal8
                except (av.error.BlockingIOError, av.error.EOFError):
                    return
                out.mux(stream.encode(frame))

        for i, rgb in enumerate(video):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, time_base
            graph.push(frame)
            drain()
        graph.push(None)  # end of stream: the filters flush what they hold
        drain()
        out.mux(stream.encode(None))
