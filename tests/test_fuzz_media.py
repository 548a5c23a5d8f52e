"""Fuzzing the media loaders (issue 17): hypothesis feeds random bytes, damaged real files, random shapes
and random arguments to the video and audio loaders and writers.

Every outcome is a result of the promised type, shape and (where the input is known) content, or a clear
error: the module's own error (:class:`VideoError` / :class:`AudioError`, both ``ValueError``) whose
message starts with the file's path, or a ``ValueError`` that names the file or the argument. Never another
exception type, a crash or a hang.

Guards, so that a bad outcome fails the test instead of the machine: every example runs under a watchdog
(``faulthandler.dump_traceback_later(..., exit=True)``: a hang ends the run with every thread's stack
rather than stalling CI) and under an address-space limit a few GB above what the process holds (a damaged
header that makes a loader allocate gigabytes is a ``MemoryError``, "another exception type", not an
out-of-memory kill). A crash (segfault) ends pytest with faulthandler's traceback.

Damaged files are real ones (made by FFmpeg, PyAV's writers and soundfile: h264 / hevc / vp8 / vp9 / ffv1 /
mpeg4 / mjpeg / png / gif in mp4 / mov / mkv / webm / avi / ts; pcm / float / flac / vorbis / opus / mp3 /
aac in wav / aiff / flac / ogg / opus / mp3 / m4a / webm / mkv / ts) with bytes changed, cut, repeated or
dropped at places hypothesis draws: far more of the parsers' code is reached than by random bytes alone.
Bugs these tests found and that are fixed: PyAV's UnicodeDecodeError on tags that are not UTF-8, an
AttributeError on an audio stream of an unknown codec, a 30 GB allocation for an FLAC / MP3 header stating
billions of samples, 865,523 copies of a frame (2 GB) for an MPEG-TS timestamp that jumps a day.

``MEDIA_FUZZ_SCALE=N`` multiplies every test's examples (the slow soak test runs the damaged-file tests with
50 times the examples).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import resource
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediadiff.audio.io import AUDIO_READ_EXTENSIONS, AUDIO_WRITE_FORMATS, AudioError, read_audio, write_audio
from mediadiff.audio.io import probe as probe_audio
from mediadiff.video.io import (
    READ_EXTENSIONS,
    WRITE_FORMATS,
    VideoError,
    clip_indices,
    probe,
    read_video,
    write_video,
)
from tests.test_audio_io import ffmpeg as ffmpeg_cli
from tests.test_video_io import COUNTER, frame_ids
from tests.test_video_io import ffmpeg as ffmpeg_lavfi

SCALE = int(os.environ.get("MEDIA_FUZZ_SCALE", "1"))
WATCHDOG_S = 30  # seconds one example may take (a few milliseconds each is typical)
HEADROOM = 4 << 30  # bytes of address space an example may add


def fuzz_settings(examples: int) -> settings:
    """Deterministic (derandomize) and quick; ``examples`` times :data:`SCALE`."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def fresh(tmp_path: Path) -> Path:
    """A new empty folder for one example (``tmp_path`` is shared by all examples of a test)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


@contextlib.contextmanager
def guarded():
    """The watchdog of one example (see the module docstring)."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module", autouse=True)
def memory_limit():
    """An address-space limit :data:`HEADROOM` above what the process maps now, for this module only."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as fh:
        mapped = int(fh.read().split()[0]) * resource.getpagesize()
    limit = mapped + HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --- seeds: small real files ------------------------------------------------------------------------

VIDEO_SEEDS = {  # name -> (lavfi source, FFmpeg options)
    "h264.mp4": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v libx264 -pix_fmt yuv420p -g 4"),
    "faststart.mp4": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v libx264 -pix_fmt yuv420p -movflags +faststart"),
    "hevc.mp4": ("testsrc2=s=64x64:r=10:d=0.4", "-c:v libx265 -pix_fmt yuv420p -x265-params log-level=error"),
    "vp9.webm": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v libvpx-vp9 -g 4"),
    "vp8.webm": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v libvpx"),
    "h264.mkv": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v libx264 -pix_fmt yuv420p"),
    "ffv1.mkv": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v ffv1"),
    "anim.gif": ("testsrc2=s=32x24:r=10:d=0.8", ""),
    "mpeg4.avi": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v mpeg4"),
    "mjpeg.avi": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v mjpeg"),
    "png.mov": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v png"),
    "h264.ts": ("testsrc2=s=32x24:r=10:d=0.8", "-c:v libx264 -pix_fmt yuv420p"),
}
AUDIO_SEEDS = {  # name -> FFmpeg options from the 0.1 s, 8 kHz pcm16.wav (None: written by soundfile)
    "pcm16.wav": None,
    "float.wav": None,
    "flac.flac": None,
    "pcm.aiff": None,
    "vorbis.ogg": "-c:a libvorbis",
    "opus.opus": "-c:a libopus",
    "mp3.mp3": "-c:a libmp3lame",
    "aac.m4a": "-c:a aac",
    "opus.webm": "-c:a libopus",
    "pcm.mkv": "-c:a pcm_s16le",
    "aac.ts": "-c:a aac",
}


class Seeds(dict):
    """name -> bytes; its repr is short, since hypothesis prints a failing example's arguments."""

    def __repr__(self) -> str:
        return f"<{len(self)} seed files>"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    """name -> bytes of every seed file, video and audio."""
    folder = tmp_path_factory.mktemp("fuzz_seeds")
    paths = {name: ffmpeg_lavfi(src, folder / name, options) for name, (src, options) in VIDEO_SEEDS.items()}
    x = (0.5 * np.sin(np.arange(800) / 3)).astype(np.float32)  # [t]
    sf.write(folder / "pcm16.wav", x, 8000, subtype="PCM_16")
    sf.write(folder / "float.wav", np.stack([x, -x], 1), 8000, subtype="FLOAT")
    sf.write(folder / "flac.flac", x, 8000)
    sf.write(folder / "pcm.aiff", x, 8000)
    for name, options in AUDIO_SEEDS.items():
        if options is not None:
            ffmpeg_cli("-i", folder / "pcm16.wav", *options.split(), folder / name)
        paths[name] = folder / name
    return Seeds({name: path.read_bytes() for name, path in paths.items()})


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` with edits: bytes overwritten, the end cut, a stretch repeated or dropped. Up to two edits
    are drawn by hypothesis (which favours small offsets: the headers), one to three by a NumPy generator
    seeded from a drawn integer (offsets uniform over the file; an overwrite changes 1 to 8 bytes
    scattered over the file)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 2))):
        op, n = draw(st.sampled_from(["set", "cut", "repeat", "drop"])), len(out)
        at, length = draw(st.integers(0, max(n - 1, 0))), draw(st.integers(1, 256))
        if op == "set" and n:
            out[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[at:]
        elif op == "repeat":
            out[at:at] = out[at : at + length]
        else:
            del out[at : at + length]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for _ in range(int(rng.integers(1, 4))):
        op, n = rng.choice(["set", "set", "cut", "repeat", "drop"], p=[0.25, 0.25, 0.2, 0.15, 0.15]), len(out)
        if op == "set" and n:
            for at in rng.integers(0, n, int(rng.integers(1, 9))):
                out[at] = int(rng.integers(0, 256))
        elif op == "cut":
            del out[int(rng.integers(0, n + 1)) :]
        elif op == "repeat" and n:
            at, source = int(rng.integers(0, n + 1)), int(rng.integers(0, n))
            out[at:at] = out[source : source + int(rng.integers(1, 65))]
        elif op == "drop":
            at = int(rng.integers(0, n + 1))
            del out[at : at + int(rng.integers(1, 65))]
    return bytes(out)


# --- outcomes ----------------------------------------------------------------------------------------


def check_video_file(path: Path) -> None:
    """probe and three reads of ``path``: results of the promised shape, or VideoError naming the file."""

    def clear(call):
        try:
            return call()
        except VideoError as e:
            assert str(e).startswith(f"{path}: "), e
            return None

    info = clear(lambda: probe(path))
    if info is not None:
        assert info.width > 0 and info.height > 0 and info.num_frames > 0 and info.fps > 0, info
    for kwargs in ({"num_frames": 3, "size": 8, "crop": "random", "start": "random"}, {"num_frames": 2}, {}):
        video = clear(lambda kw=kwargs: read_video(path, generator=torch.Generator().manual_seed(0), **kw))
        if video is not None:
            assert video.dtype == np.uint8 and video.ndim == 4 and video.shape[-1] == 3 and len(video) >= 1
            if "num_frames" in kwargs:
                assert len(video) == kwargs["num_frames"]
            if "size" in kwargs:
                assert video.shape[1:3] == (8, 8)
            elif info is not None:
                assert video.shape[1:3] == (info.height, info.width)


def check_audio_file(path: Path) -> None:
    """probe and three reads of ``path``: results of the promised shape, or AudioError naming the file (a
    window past the end: a ValueError naming it)."""

    def clear(call):
        try:
            return call()
        except ValueError as e:  # AudioError, or the window argument against the file's length
            assert str(e).startswith(f"{path}: ") or f" of {path} (" in str(e), e
            return None

    info = clear(lambda: probe_audio(path))
    if info is not None:
        assert info.sample_rate > 0 and info.channels > 0 and info.num_frames > 0, info
    for kwargs in (
        {},
        {"sample_rate": 16000, "channels": 1, "start": 0.02, "duration": 0.03},
        {"channels": 2},
    ):
        out = clear(lambda kw=kwargs: read_audio(path, **kw))
        if out is not None:
            x, sr = out
            assert x.dtype == torch.float32 and x.ndim == 2 and sr == kwargs.get("sample_rate", sr) > 0
            assert torch.isfinite(x).all() and x.abs().max() <= 1 if x.numel() else True
            if "channels" in kwargs:
                assert x.shape[0] == kwargs["channels"]
            if "duration" in kwargs:
                assert x.shape[1] <= round(0.05 * 16000) - round(0.02 * 16000)


# --- random bytes and damaged files -------------------------------------------------------------------


@fuzz_settings(120)
@given(data=st.binary(max_size=2048), ext=st.sampled_from([*READ_EXTENSIONS, ".ts", ".bin", ""]))
def test_random_bytes_video(tmp_path, data, ext):
    path = fresh(tmp_path) / f"random{ext}"
    path.write_bytes(data)
    with guarded():
        check_video_file(path)


@fuzz_settings(200)
@given(st.data())
def test_damaged_videos(tmp_path, seeds, data):
    name = data.draw(st.sampled_from(sorted(VIDEO_SEEDS)))
    path = fresh(tmp_path) / f"damaged_{name}"
    path.write_bytes(data.draw(damaged(seeds[name])))
    with guarded():
        check_video_file(path)


@fuzz_settings(150)
@given(data=st.binary(max_size=2048), ext=st.sampled_from(sorted(AUDIO_READ_EXTENSIONS | {".bin", ""})))
def test_random_bytes_audio(tmp_path, data, ext):
    path = fresh(tmp_path) / f"random{ext}"
    path.write_bytes(data)
    with guarded():
        check_audio_file(path)


@fuzz_settings(300)
@given(st.data())
def test_damaged_audio(tmp_path, seeds, data):
    name = data.draw(st.sampled_from(sorted(AUDIO_SEEDS)))
    path = fresh(tmp_path) / f"damaged_{name}"
    path.write_bytes(data.draw(damaged(seeds[name])))
    with guarded():
        check_audio_file(path)


@pytest.mark.slow
def test_soak_damaged_files(tmp_path, seeds):
    """The damaged-file tests with 50 times the examples (10,000 video and 15,000 audio files)."""
    for test in (test_damaged_videos, test_damaged_audio):
        inner = test.hypothesis.inner_test
        run = fuzz_settings(50 * (200 if test is test_damaged_videos else 300))(given(st.data())(inner))
        run(tmp_path, seeds)


# --- random shapes ------------------------------------------------------------------------------------


@fuzz_settings(60)
@given(
    shape=st.tuples(
        st.integers(0, 4), st.integers(1, 19), st.integers(1, 19), st.sampled_from([3] * 6 + [1, 4])
    ),
    dtype=st.sampled_from([np.uint8] * 6 + [np.float32, np.int16]),
    ext=st.sampled_from(sorted(WRITE_FORMATS)),
    fps=st.one_of(st.sampled_from([1, 8, 10, 24, 29.97, 30, 60]), st.floats(0.5, 120)),
    seed=st.integers(0, 2**16),
)
def test_random_video_shapes(tmp_path, shape, dtype, ext, fps, seed):
    """write_video takes uint8 [f h w 3] of any size (odd ones padded to even for 4:2:0 codecs) and the
    file reads back with as many frames; anything else is a ValueError naming the file."""
    f, h, w, c = shape
    video = np.random.default_rng(seed).integers(0, 256, (f, h, w, c)).astype(dtype)
    path = fresh(tmp_path) / f"clip{ext}"
    with guarded():
        if f == 0 or c != 3 or dtype is not np.uint8:
            with pytest.raises(ValueError, match=rf"^{path}: write_video expects uint8 \[f h w 3\]"):
                write_video(path, video, fps)
            assert not path.exists()
            return
        write_video(path, video, fps)
        back = read_video(path)
        pad = 0 if ext == ".gif" else 1  # 4:2:0 needs even sizes
        assert back.shape == (f, h + pad * (h % 2), w + pad * (w % 2), 3)
        info = probe(path)
        assert info.num_frames == f and info.shape == back.shape
        if ext in (".mp4", ".mov") and f > 1:  # mkv / webm keep millisecond timestamps, gif 1/100 s
            assert info.fps == pytest.approx(fps, rel=2e-3)


@fuzz_settings(80)
@given(
    channels=st.sampled_from([1, 1, 2, 2, 3, 6, 8, 9, 16, 65]),
    length=st.integers(0, 3000),
    rate=st.one_of(
        st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000]), st.integers(1000, 200_000)
    ),
    fmt=st.sampled_from(sorted(AUDIO_WRITE_FORMATS)),
    bits=st.sampled_from([16, 24, 32]),
    layout=st.sampled_from(["ct", "ct", "t", "tc"]),
    seed=st.integers(0, 2**16),
)
def test_random_audio_shapes(tmp_path, channels, length, rate, fmt, bits, layout, seed):
    """write_audio takes float [c t] or [t] at any rate its format holds and the file reads back with the
    same channels, rate and (lossless formats) samples; anything else is a ValueError naming the file or
    the argument."""
    x = np.random.default_rng(seed).uniform(-1.2, 1.2, (channels, length)).astype(np.float32)
    x = {"ct": x, "t": x[0], "tc": x.T}[layout]  # "tc": a [t c] array, which write_audio sees as [c t]
    seen = x[None] if x.ndim == 1 else x  # [c t] as write_audio reads its argument
    c, t = seen.shape
    path = fresh(tmp_path) / f"sound{fmt}"
    with guarded():
        try:
            write_audio(path, x, rate, bits=bits)
        except ValueError as e:
            assert str(e).startswith(f"{path}: ") or "bits must be" in str(e) or "quality" in str(e), e
            assert not path.exists()
            return
        assert t > 0 and c <= 64  # what write_audio refuses: empty, and [t c] with more than 64 channels
        y, sr = read_audio(path)
        assert sr == rate and y.shape[0] == c and torch.isfinite(y).all() and y.abs().max() <= 1
        if fmt in (".wav", ".flac"):  # lossless: the samples, clipped to [-1, 1] and quantised
            assert y.shape[1] == t
            step = {16: 2.0**-15, 24: 2.0**-23, 32: 0.0}[bits]
            assert np.abs(y.numpy() - np.clip(seen, -1, 1)).max() <= step + 1e-7


# --- random reading arguments -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def counter(tmp_path_factory) -> Path:
    """30 frames at 10 fps, 48 x 64, frame n a gray level that says n (test_video_io's counter)."""
    return ffmpeg_lavfi(COUNTER, tmp_path_factory.mktemp("fuzz_counter") / "count.mp4", "-c:v libx264 -g 5")


@fuzz_settings(150)
@given(
    num_frames=st.one_of(st.none(), st.integers(-1, 36)),
    step=st.one_of(st.tuples(st.just("stride"), st.integers(0, 5)), st.tuples(st.just("fps"), st.sampled_from([0, 2.5, 4, 5, 7.5, 10, 12.5, 25]))),
    start=st.one_of(st.integers(-1, 34), st.sampled_from(["center", "random"]), st.floats(0, 3.5).map(lambda s: ("sec", s))),
    size=st.one_of(st.none(), st.integers(0, 70), st.tuples(st.integers(1, 50), st.integers(1, 90))),
    crop=st.sampled_from(["center", "random", None]),
    seed=st.integers(0, 1000),
)  # fmt: skip
def test_random_video_arguments(counter, num_frames, step, start, size, crop, seed):
    """Any arguments give the frames clip_indices names (checked by the gray level of each frame) at the
    size asked, or a VideoError (the clip does not fit) / ValueError (a bad argument) that says so."""
    kwargs = {"stride": step[1]} if step[0] == "stride" else {"fps": step[1]}
    where = {"start_sec": start[1]} if isinstance(start, tuple) else {"start": start}
    args = {"num_frames": num_frames, **kwargs, **where, "size": size, "crop": crop}
    with guarded():
        try:
            video = read_video(counter, generator=torch.Generator().manual_seed(seed), **args)
        except VideoError as e:
            assert str(e).startswith(f"{counter}: ") and (
                "too few frames" in str(e) or "no frames at" in str(e)
            ), e
            return
        except ValueError as e:
            assert type(e) is ValueError and any(
                k in str(e) for k in ("num_frames", "stride", "fps", "start", "size", "crop")
            ), e
            return
    first = round(start[1] * 10) if isinstance(start, tuple) else start
    fps = kwargs.get("fps")
    if num_frames is None:
        ratio = 10 / fps if fps else kwargs["stride"]
        ids = [first + int(np.floor(k * ratio + 1e-6)) for k in range(100)]
        ids = [i for i in ids if i < 30]
    else:
        ids = clip_indices(30, num_frames, src_fps=10, stride=kwargs.get("stride", 1), fps=fps, start=first,
                           generator=torch.Generator().manual_seed(seed))  # fmt: skip
    assert frame_ids(video) == ids, args
    th, tw = (48, 64) if size is None else (size, size) if isinstance(size, int) else size
    assert video.shape == (len(ids), th, tw, 3), args


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> dict[str, Path]:
    """1 s of stereo tones at 22.05 kHz: 16-bit wav (libsndfile) and AAC in m4a (FFmpeg)."""
    folder = tmp_path_factory.mktemp("fuzz_tones")
    t = np.arange(22050) / 22050
    x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    sf.write(folder / "tone.wav", x.T, 22050, subtype="PCM_16")
    ffmpeg_cli("-i", folder / "tone.wav", "-c:a", "aac", folder / "tone.m4a")
    return {"wav": folder / "tone.wav", "m4a": folder / "tone.m4a"}


@fuzz_settings(120)
@given(
    fmt=st.sampled_from(["wav", "m4a"]),
    start=st.one_of(st.floats(-0.1, 1.2), st.sampled_from([0.0, 0.5, 0.999])),
    duration=st.one_of(st.none(), st.floats(-0.1, 1.2), st.sampled_from([1e-6, 0.001, 0.25])),
    sample_rate=st.one_of(st.none(), st.sampled_from([0, 8000, 16000, 22050, 44100, 48000]), st.integers(2000, 60000)),
    channels=st.one_of(st.none(), st.integers(0, 3)),
)  # fmt: skip
def test_random_audio_arguments(tones, fmt, start, duration, sample_rate, channels):
    """Any window, rate and channel count gives ``[c n]`` with ``n`` the window's samples at the rate asked,
    or a ValueError naming the bad argument / the file, or an AudioError for channels it cannot make."""
    path = tones[fmt]
    with guarded():
        try:
            x, sr = read_audio(
                path, start=start, duration=duration, sample_rate=sample_rate, channels=channels
            )
        except AudioError as e:
            assert str(e).startswith(f"{path}: has 2 channels; channels=3"), e
            return
        except ValueError as e:
            assert any(k in str(e) for k in ("start", "duration", "sample_rate", "channels")), e
            return
    assert sr == (sample_rate or 22050) and x.shape[0] == (channels or 2)
    assert torch.isfinite(x).all() and (x.numel() == 0 or x.abs().max() <= 1)
    if duration is not None:
        expected = round((start + duration) * sr) - round(start * sr)
    else:
        expected = round((1.0 - start) * sr)
    slack = 2 if fmt == "wav" else round(0.01 * sr)  # m4a: the stated length is an estimate
    assert abs(x.shape[1] - expected) <= slack, (x.shape, expected)
