"""Bad media, both modalities (issue 17): one corpus of faulty and unusual files, made with FFmpeg (the
binary imageio-ffmpeg ships), PyAV and soundfile, each tried in a direct call and in a dataset.

Direct calls (``read_video`` / ``probe``, ``read_audio`` / ``probe``): a good-but-unusual file gives the
right content (pixel values of a known colour pattern, the pitch of a known tone) and ``probe().shape``
equals what is read; a bad file raises the module's error (a ``ValueError``) naming the file and saying
what was expected. Datasets (``VideoFolder`` / ``AudioFolder``) over a folder of the whole corpus, bad files
next to good ones: the bad ones are skipped, counted and named, the epoch goes on, also with two
DataLoader workers (their skips are counted in the main process), and after ``scan()`` an epoch yields
exactly the good items.

Cases and their outcomes (the module docstrings of ``mediadiff.video.io`` and ``mediadiff.audio.io`` say
the same):

- rotation metadata (display matrix): applied on read, as FFmpeg's player does; ``probe`` reports the
  displayed size and the rotation. Alpha: dropped (the stored colour, not composited). Grayscale: R = G = B
  (the BT.601 luma). 10- and 12-bit: converted to 8 bits. Odd sizes, 1 x 1: read as they are. A stream
  whose size changes part-way: scaled to its first frame's size. Shorter than the clip: skipped, never
  padded (``VideoFolder``).
- audio NaN / inf: an ``AudioError`` naming the file and the first bad sample (the dataset skips the
  file). Float samples beyond full scale and hard-clipped PCM: load, clipped to [-1, 1], not skipped.
  8 to 32 channels, 8 / 44.101 / 96 / 192 kHz: read, resampled with the pitch kept. A FLAC written to a
  pipe (no stated length): read through FFmpeg. A 30 min file: a window is read without decoding the file.
- wrong extension: the content decides (an mp4 named .webm or .wav, a wav named .mp4); a text file, a
  picture or a video without sound named as audio: a clear error.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import tracemalloc
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from mediadiff.audio.datasets import AudioFolder
from mediadiff.audio.io import AudioError, read_audio, write_audio
from mediadiff.audio.io import probe as probe_audio
from mediadiff.utils.captions import WORKER_SKIPPED
from mediadiff.video.datasets import VideoFolder
from mediadiff.video.io import VideoError, probe, read_video, resize_crop_plan, to_model, write_video
from tests.test_audio_io import ffmpeg as ffmpeg_cli
from tests.test_audio_io import peak_hz, tone
from tests.test_video_io import COUNTER, FFMPEG, frame_ids
from tests.test_video_io import ffmpeg as ffmpeg_lavfi

# --- a known colour pattern -------------------------------------------------------------------------

PH, PW, PF = 64, 96, 6  # pattern frames: 2 x 3 blocks of 32 x 32 (x265 needs 64 rows for 10 bits)
COLOURS = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200), (128, 128, 128), (240, 220, 30), (20, 20, 20)],
                   np.uint8)  # fmt: skip
LUMA = COLOURS @ np.array([0.299, 0.587, 0.114])  # BT.601: what a gray pix_fmt stores


def pattern(h: int = PH, w: int = PW, f: int = PF) -> np.ndarray:
    """uint8 ``[f h w 3]``: the six colours of :data:`COLOURS` in 2 rows x 3 columns of blocks."""
    img = np.zeros((h, w, 3), np.uint8)
    bh, bw = max(h // 2, 1), max(w // 3, 1)
    for i, colour in enumerate(COLOURS):
        img[(i // 3) * bh : (i // 3 + 1) * bh, (i % 3) * bw : (i % 3 + 1) * bw] = colour
    return np.repeat(img[None], f, 0)


def block_colours(video: np.ndarray) -> np.ndarray:
    """``[6 3]`` mean colour of the middle half of each block of a :func:`pattern` clip (codec edges left out)."""
    h, w = video.shape[1:3]
    bh, bw = h // 2, w // 3
    means = []
    for i in range(6):
        y, x = (i // 3) * bh, (i % 3) * bw
        means.append(
            video[:, y + bh // 4 : y + 3 * bh // 4, x + bw // 4 : x + 3 * bw // 4].reshape(-1, 3).mean(0)
        )
    return np.array(means)


def encode(frames: np.ndarray, out: Path, options: str, pix_in: str = "rgb24", before: str = "") -> Path:
    """``frames`` (uint8 ``[f h w c]``, ``pix_in`` layout) through FFmpeg's rawvideo input at 10 fps."""
    h, w = frames.shape[1:3]
    cmd = [FFMPEG, "-y", "-v", "error", *before.split(), "-f", "rawvideo", "-pix_fmt", pix_in, "-s", f"{w}x{h}",
           "-r", "10", "-i", "pipe:", *options.split(), str(out)]  # fmt: skip
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    return out


def ffmpeg_rgb(path: Path) -> np.ndarray:
    """The FFmpeg binary's own decode of ``path`` as rgb24 bytes (it applies the display rotation)."""
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
                         check=True, capture_output=True).stdout  # fmt: skip
    return np.frombuffer(out, np.uint8)


def vfr_mkv(path: Path) -> Path:
    """Six solid frames at 10 fps of which the fourth stays on screen for 0.5 s (PyAV, H.264 in mkv)."""
    time_base = Fraction(1, 100)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.codec_context.time_base = time_base
        for k, pts in enumerate([0, 10, 20, 30, 80, 90]):
            rgb = np.full((24, 32, 3), 40 * k, np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = pts, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# --- the video corpus --------------------------------------------------------------------------------

# good, unusual files: name -> (how made, frames, displayed (h, w), expected block colours or None, tolerance)
TEN_BIT = {
    "h264_10bit.mp4": "-c:v libx264 -pix_fmt yuv420p10le",
    "hevc_10bit.mp4": "-c:v libx265 -pix_fmt yuv420p10le -x265-params log-level=error",
    "vp9_10bit.webm": "-c:v libvpx-vp9 -pix_fmt yuv420p10le",
    "ffv1_10bit.mkv": "-c:v ffv1 -pix_fmt yuv420p10le",
}
ALPHA = {  # RGBA in, the left half transparent
    "alpha_vp9.webm": "-c:v libvpx-vp9 -pix_fmt yuva420p",
    "alpha_png.mov": "-c:v png -pix_fmt rgba",
    "alpha_qtrle.mov": "-c:v qtrle -pix_fmt argb",
    "alpha_prores4444.mov": "-c:v prores_ks -profile:v 4444 -pix_fmt yuva444p10le",
}
GRAY = {
    "gray_ffv1.mkv": "-c:v ffv1 -pix_fmt gray",
    "gray_h264.mp4": "-c:v libx264 -pix_fmt gray",
    "gray10_ffv1.mkv": "-c:v ffv1 -pix_fmt gray10le",
}
ODD = {  # name -> (h, w, options)
    "odd_33x47_444.mkv": (33, 47, "-c:v ffv1 -pix_fmt yuv444p"),
    "odd_33x47_420.mkv": (33, 47, "-c:v ffv1 -pix_fmt yuv420p"),
    "odd_33x47_h264.mp4": (33, 47, "-c:v libx264 -pix_fmt yuv444p"),
    "tiny_1x1.mkv": (1, 1, "-c:v ffv1 -pix_fmt yuv444p"),
}
ROTATED = {"rot90.mp4": 90, "rot180.mp4": 180, "rot270.mp4": -90, "rot90.mkv": 90}  # -display_rotation

# bad files: name -> (read_video error, probe error or None where probe succeeds, dropped by scan())
BAD_VIDEOS = {
    "empty.mp4": (r"empty file \(0 bytes\), expected a video", r"empty file", True),
    "random.mp4": (r"not a readable video file", r"not a readable video file", True),
    "text.mp4": (r"not a readable video file", r"not a readable video file", True),
    "truncated_moov_at_end.mp4": (r"not a readable video file", r"not a readable video file", True),
    "truncated_first_frame.mp4": (r"corrupt video", r"corrupt video: none of its packets decodes", True),
    "garbled_data.mp4": (r"corrupt video", r"corrupt video: none of its packets decodes", True),
    "no_frames.mp4": (r"no video stream \(streams found: none\)", r"no video stream", True),
    "wav_named.mp4": (r"no video stream \(streams found: audio\)", r"no video stream", True),
    "png_named.mp4": (r"too few frames: num_frames=6 .*decoding ended after 1 frames", None, True),  # a still
    "short.mp4": (r"too few frames: num_frames=6 with stride=1 .* the video has 5", None, True),
    "truncated.webm": (r"too few frames: num_frames=6 .*decoding ended after [0-5] frames", None, True),
    "unknown_codec.mp4": (
        r"not a readable video file \(FFmpeg has no decoder",
        r"not a readable video file \(FFmpeg has no decoder",
        True,
    ),
}


def make_video_corpus(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(good, bad)``: name -> path of every unusual-but-good and every bad video file."""
    folder.mkdir(parents=True, exist_ok=True)
    good: dict[str, Path] = {}
    video = pattern()
    good["count.mp4"] = ffmpeg_lavfi(COUNTER, folder / "count.mp4", "-c:v libx264 -pix_fmt yuv420p -g 5")
    for name, options in {**TEN_BIT, **GRAY}.items():
        good[name] = encode(video, folder / name, options)
    rgba = np.concatenate([video, np.full((*video.shape[:3], 1), 255, np.uint8)], -1)  # [f h w 4]
    rgba[:, :, : PW // 2, 3] = 0  # the left half fully transparent
    for name, options in ALPHA.items():
        good[name] = encode(rgba, folder / name, options, pix_in="rgba")
    for name, (h, w, options) in ODD.items():
        good[name] = encode(pattern(h, w), folder / name, options)
    upright = encode(video, folder / "upright.mp4", "-c:v libx264 -pix_fmt yuv420p")
    for name, angle in ROTATED.items():  # the same coded frames, a display matrix added
        ffmpeg_cli("-display_rotation", str(angle), "-i", upright, "-c", "copy", folder / name)
        good[name] = folder / name
    good["upright.mp4"] = upright
    shutil.copy(good["count.mp4"], folder / "mp4_named.webm")  # wrong extension: the content decides
    good["mp4_named.webm"] = folder / "mp4_named.webm"
    good["vfr.mkv"] = vfr_mkv(folder / "vfr.mkv")
    # the frame size changes part-way: 10 red frames at 64x48, then 10 blue ones at 32x24 (MPEG-TS
    # concatenates byte-wise; the second part's timestamps continue the first's)
    red = ffmpeg_lavfi("color=c=red:s=64x48:r=10:d=1", folder / "red.ts", "-c:v libx264 -pix_fmt yuv420p")
    blue = ffmpeg_lavfi("color=c=blue:s=32x24:r=10:d=1", folder / "blue.ts",
                        "-c:v libx264 -pix_fmt yuv420p -output_ts_offset 1.2")  # fmt: skip
    (folder / "size_change.ts").write_bytes(red.read_bytes() + blue.read_bytes())
    good["size_change.ts"] = folder / "size_change.ts"
    # timestamps that jump an hour (an MPEG-TS discontinuity: the fuzzer's case was a day)
    later = ffmpeg_lavfi("color=c=blue:s=64x48:r=10:d=1", folder / "later.ts",
                         "-c:v libx264 -pix_fmt yuv420p -output_ts_offset 3600")  # fmt: skip
    (folder / "ts_jump.ts").write_bytes(red.read_bytes() + later.read_bytes())
    good["ts_jump.ts"] = folder / "ts_jump.ts"
    for part in (red, blue, later):
        part.unlink()
    data = good["count.mp4"].read_bytes()  # the encoder tag ("Lavf...") made not UTF-8
    assert data.count(b"Lavf") == 1
    (folder / "tags_not_utf8.mp4").write_bytes(data.replace(b"Lavf", b"\xff\xfe\xfd\xfc"))
    good["tags_not_utf8.mp4"] = folder / "tags_not_utf8.mp4"

    bad: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        bad[name] = folder / name

    put("empty.mp4", b"")
    put("random.mp4", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    put("text.mp4", b"this is a text file, not a video\n" * 20)
    data = good["count.mp4"].read_bytes()  # moov (the index) at the end: half the file has none
    put("truncated_moov_at_end.mp4", data[: len(data) // 2])
    faststart = ffmpeg_lavfi("testsrc=size=64x48:rate=10:duration=3", folder / "fs.mp4",
                             "-c:v libx264 -pix_fmt yuv420p -movflags +faststart")  # fmt: skip
    data = faststart.read_bytes()  # index first, the cut falls inside the one key frame
    put("truncated_first_frame.mp4", data[: len(data) // 2])
    garbled = bytearray(data)  # index intact, every byte of the frames random
    at = garbled.find(b"mdat") + 4
    garbled[at:] = np.random.default_rng(1).integers(0, 256, len(garbled) - at, dtype=np.uint8).tobytes()
    put("garbled_data.mp4", bytes(garbled))
    faststart.unlink()
    ffmpeg_lavfi("testsrc2=s=64x48:r=10:d=1", folder / "no_frames.mp4", "-frames:v 0 -c:v libx264")
    bad["no_frames.mp4"] = folder / "no_frames.mp4"
    ffmpeg_lavfi("sine=duration=0.5", folder / "wav_named.mp4", "-f wav")
    bad["wav_named.mp4"] = folder / "wav_named.mp4"
    ffmpeg_lavfi("testsrc2=s=64x48:r=10:d=1", folder / "png_named.mp4", "-frames:v 1 -f image2 -c:v png")
    bad["png_named.mp4"] = folder / "png_named.mp4"
    ffmpeg_lavfi(COUNTER, folder / "short.mp4", "-frames:v 5 -c:v libx264 -pix_fmt yuv420p")
    bad["short.mp4"] = folder / "short.mp4"
    webm = ffmpeg_lavfi(COUNTER, folder / "whole.webm", "-c:v libvpx-vp9 -pix_fmt yuv420p -g 5")
    data = webm.read_bytes()
    put("truncated.webm", data[: len(data) * 2 // 5])  # the header and the first few frames
    webm.unlink()
    data = good["count.mp4"].read_bytes()  # the codec's four-character code made unknown
    assert data.count(b"avc1") == 2  # the sample entry and the compatible brand
    put("unknown_codec.mp4", data.replace(b"avc1", b"zzzz"))
    assert set(bad) == set(BAD_VIDEOS)
    return good, bad


@pytest.fixture(scope="session")
def video_corpus(tmp_path_factory) -> tuple[dict[str, Path], dict[str, Path]]:
    return make_video_corpus(tmp_path_factory.mktemp("video_corpus"))


# --- video: direct calls -----------------------------------------------------------------------------


def test_every_good_video_reads_as_probe_says(video_corpus):
    good, _ = video_corpus
    for name, path in good.items():
        info = probe(path)
        video = read_video(path)
        assert video.dtype == np.uint8 and video.ndim == 4 and video.shape[-1] == 3, name
        assert video.shape[1:] == info.shape[1:], (
            name,
            video.shape,
            info,
        )  # displayed size, rotation included
        if name != "vfr.mkv":  # a variable-rate file repeats the held frame
            assert len(video) == info.num_frames, (name, len(video), info)


@pytest.mark.parametrize("name", list(TEN_BIT))
def test_ten_bit_reads_as_rgb_uint8(video_corpus, name):
    path = video_corpus[0][name]
    info = probe(path)
    assert info.pix_fmt == "yuv420p10le" and (info.height, info.width) == (PH, PW)
    video = read_video(path)
    assert video.shape == (PF, PH, PW, 3) and video.dtype == np.uint8
    assert np.abs(block_colours(video) - COLOURS).max() < 4  # 10-bit 4:2:0 and back, dithered to 8 bits


@pytest.mark.parametrize("name", list(ALPHA))
def test_alpha_is_dropped_not_composited(video_corpus, name):
    """The left half is fully transparent: its colours come back as stored (composited over black they
    would be 0)."""
    video = read_video(video_corpus[0][name])
    assert video.shape == (PF, PH, PW, 3)
    tolerance = 4 if name.endswith(".webm") else 1  # vp9 is lossy; png, qtrle and ProRes 4444 near exact
    assert np.abs(block_colours(video) - COLOURS).max() <= tolerance, block_colours(video)


@pytest.mark.parametrize("name", list(GRAY))
def test_grayscale_reads_as_equal_rgb_channels(video_corpus, name):
    video = read_video(video_corpus[0][name])
    assert video.shape == (PF, PH, PW, 3)
    assert np.array_equal(video[..., 0], video[..., 1]) and np.array_equal(video[..., 1], video[..., 2])
    assert np.abs(block_colours(video)[:, 0] - LUMA).max() < 2.5, block_colours(video)[:, 0]


@pytest.mark.parametrize("name", list(ODD))
def test_odd_sizes_read_as_they_are(video_corpus, name):
    h, w, _ = ODD[name]
    path = video_corpus[0][name]
    assert (probe(path).height, probe(path).width) == (h, w)
    video = read_video(path)
    assert video.shape == (PF, h, w, 3)
    if h > 1:  # ffv1 is lossless (the RGB -> YUV rounding is left), H.264 at its default quality is not
        assert np.abs(block_colours(video) - COLOURS).max() <= (8 if name.endswith(".mp4") else 2)
    else:  # 1 x 1: the first block's colour; scaled up it stays that colour
        assert np.abs(video.astype(int) - COLOURS[0]).max() < 4
        up = read_video(path, 2, size=(5, 8))
        assert up.shape == (2, 5, 8, 3) and np.abs(up.astype(int) - COLOURS[0]).max() < 4
    assert read_video(path, 3, size=16, crop="random").shape == (3, 16, 16, 3)


@pytest.mark.parametrize("name", list(ROTATED))
def test_rotation_is_applied_as_ffmpeg_displays_it(video_corpus, name):
    good = video_corpus[0]
    path, angle = good[name], ROTATED[name] % 360
    info = probe(path)
    turns = angle // 90
    assert info.rotation == angle
    assert (info.height, info.width) == ((PW, PH) if turns % 2 else (PH, PW))
    video = read_video(path)
    assert video.shape == info.shape
    assert np.array_equal(video.reshape(-1), ffmpeg_rgb(path))  # the FFmpeg binary's autorotated decode
    upright = read_video(good["upright.mp4"])  # the same coded frames without the display matrix
    assert np.array_equal(video, np.rot90(upright, turns, axes=(1, 2)))
    # resize and crop happen on the displayed frame: the upright file's frames resized, turned, then
    # cropped at the centre of what is displayed
    size = (20, 40)
    small = read_video(path, 4, size=size, crop="center")
    assert small.shape == (4, *size, 3)
    (rh, rw), (top, left) = resize_crop_plan(info.shape[1:3], size, "center")
    resized = read_video(good["upright.mp4"], 4, size=(rw, rh) if turns % 2 else (rh, rw), crop=None)
    expected = np.rot90(resized, turns, axes=(1, 2))[:, top : top + size[0], left : left + size[1]]
    assert np.array_equal(small, expected)


def test_size_change_is_scaled_to_the_first_frame(video_corpus):
    path = video_corpus[0]["size_change.ts"]
    video = read_video(path)
    assert video.shape == (20, 48, 64, 3)  # every frame at the first frame's size
    means = video.reshape(20, -1, 3).mean(1)  # [20 3]
    assert (means[:10, 0] > 240).all() and (means[:10, 2] < 10).all()  # red
    assert (means[10:, 2] > 240).all() and (means[10:, 0] < 10).all()  # blue, scaled up
    assert read_video(path, 20, size=(12, 20)).shape == (20, 12, 20, 3)


def test_what_the_fuzzer_found_reads(video_corpus, tmp_path):
    """Files like those the fuzzer (test_fuzz_media.py) damaged into failures, now read."""
    good = video_corpus[0]
    jump = read_video(good["ts_jump.ts"])  # 20 frames, not 36,000 copies of the tenth
    assert jump.shape == (20, 48, 64, 3) and probe(good["ts_jump.ts"]).num_frames == 20
    assert (jump[:10, ..., 0] > 240).all() and (jump[10:, ..., 2] > 240).all()  # red, then blue
    assert np.array_equal(read_video(good["tags_not_utf8.mp4"]), read_video(good["count.mp4"]))
    gif = write_video(tmp_path / "two_frames.gif", pattern(f=2)[:, :24, :32], 10)
    info = probe(gif)  # FFmpeg's rate guess for 2 frames is the 1/100 s tick: "100 fps", 20 copies
    assert info.fps == 10 and info.num_frames == 2 and len(read_video(gif)) == 2


def test_wrong_extension_and_vfr_read_by_content(video_corpus):
    good = video_corpus[0]
    assert np.array_equal(read_video(good["mp4_named.webm"]), read_video(good["count.mp4"]))
    assert probe(good["mp4_named.webm"]).codec == "h264"
    assert frame_ids(read_video(good["mp4_named.webm"], 3, start=10)) == [10, 11, 12]
    levels = read_video(good["vfr.mkv"]).reshape(10, -1).mean(1) / 40  # the fourth frame held 0.5 s
    assert np.rint(levels).astype(int).tolist() == [0, 1, 2, 3, 3, 3, 3, 3, 4, 5]


@pytest.mark.parametrize("name", list(BAD_VIDEOS))
def test_bad_video_raises_a_clear_error(video_corpus, name):
    path = video_corpus[1][name]
    read_error, probe_error, _ = BAD_VIDEOS[name]
    with pytest.raises(VideoError, match=rf"^{path}: {read_error}"):
        read_video(path, 6)  # the clip the dataset below asks for
    if probe_error is None:  # a readable file that is too short for the clip
        assert probe(path).num_frames < 6 or probe(path, count_frames=True).num_frames < 6
    else:
        with pytest.raises(VideoError, match=rf"^{path}: {probe_error}"):
            probe(path)
    assert issubclass(VideoError, ValueError)


def test_truncated_webm_gives_the_frames_it_holds(video_corpus):
    path = video_corpus[1]["truncated.webm"]
    have = probe(path).num_frames  # counted: webm states no frame count
    video = read_video(path)
    assert 0 < have < 6 and frame_ids(video) == list(range(have))  # what is there is right


# --- video: the dataset ------------------------------------------------------------------------------


def corpus_folder(root: Path, good: dict[str, Path], bad: dict[str, Path]) -> Path:
    """Every file of the corpus in one folder, bad ones interleaved with good ones by name."""
    root.mkdir()
    for name, path in {**good, **bad}.items():
        shutil.copy(path, root / name)
    return root


def names(paths) -> list[str]:
    return [Path(p).name for p in paths]


VIDEO_KW = {"num_frames": 6, "size": 16, "clip": "start", "crop": "center", "default_caption": "a clip"}


def test_video_folder_skips_counts_and_names_every_bad_file(video_corpus, tmp_path):
    good, bad = video_corpus
    root = corpus_folder(tmp_path / "corpus", good, bad)
    (root / "upright.mp4").unlink()  # .ts is not a video extension: a table lists it
    (root / "metadata.jsonl").write_text(
        '{"file_name": "size_change.ts", "text": "red then blue"}\n{"file_name": "ts_jump.ts", "text": "a jump"}\n'
    )
    ds = VideoFolder(root, **VIDEO_KW)
    assert len(ds) == len(good) - 1 + len(bad)
    with pytest.warns(RuntimeWarning) as record:
        items = [ds[i] for i in range(len(ds))]  # the epoch goes on
    assert sorted(names(ds.skipped_files)) == sorted(bad) and ds.skipped == len(bad)
    warned = sorted(Path(str(w.message).split("skipping ")[1].split(":")[0]).name for w in record)
    assert warned == sorted(bad)  # one warning per bad file, naming it
    for path, reason in ds.skipped_files.items():
        assert reason.startswith(path), reason  # the reason names the file too
    assert set(names(item["path"] for item in items)) == set(good) - {"upright.mp4"}
    for item in items:
        assert item["video"].shape == (3, 6, 16, 16) and item["video"].dtype == torch.float32
        expected = read_video(item["path"], 6, size=16, crop="center")
        assert torch.equal(item["video"], to_model(expected)), item["path"]


def test_video_folder_with_two_workers_counts_the_workers_skips(video_corpus, tmp_path):
    good, bad = video_corpus
    good = {n: p for n, p in good.items() if not n.endswith(".ts")}
    root = corpus_folder(tmp_path / "corpus", good, bad)
    ds = VideoFolder(root, **VIDEO_KW)
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the workers warn in their own processes
        batches = list(loader)
    paths = [p for b in batches for p in b["path"]]
    assert len(paths) == len(ds) and set(names(paths)) == set(good)  # the epoch went on, good items only
    # the workers' skips are counted in the main process, which read nothing itself
    assert sorted(names(ds.skipped_files)) == sorted(bad)
    assert set(ds.skipped_files.values()) == {WORKER_SKIPPED}
    # the same items as one process gives: the bad files' substitutes are deterministic
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and files the workers skipped are not read again here
        sequential = [ds[i] for i in range(len(ds))]
    assert names(paths) == names(item["path"] for item in sequential)
    assert torch.equal(
        torch.cat([b["video"] for b in batches]), torch.stack([i["video"] for i in sequential])
    )


def test_video_folder_scan_leaves_exactly_the_good_items(video_corpus, tmp_path):
    good, bad = video_corpus
    good = {n: p for n, p in good.items() if not n.endswith(".ts")}
    root = corpus_folder(tmp_path / "corpus", good, bad)
    with pytest.warns(RuntimeWarning):
        ds = VideoFolder(root, validate=True, **VIDEO_KW)
    assert sorted(names(ds.skipped_files)) == sorted(
        n for n, (_, _, dropped) in BAD_VIDEOS.items() if dropped
    )
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to skip
        paths = [p for b in loader for p in b["path"]]
    assert sorted(names(paths)) == sorted(good)  # each good file once, no bad one


# --- the audio corpus --------------------------------------------------------------------------------

RATE = 16000
CHANNEL_HZ = [200 + 150 * k for k in range(32)]  # channel k of a many-channel file holds this tone


def channels_tone(channels: int, sample_rate: int = RATE, seconds: float = 0.5) -> np.ndarray:
    """float32 ``[c t]``: channel ``k`` a 0.4-amplitude sine at ``CHANNEL_HZ[k]``."""
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    return np.stack([0.4 * np.sin(2 * np.pi * CHANNEL_HZ[k] * t) for k in range(channels)]).astype(np.float32)


# rate files: name -> (sample rate, tone Hz)
RATES = {
    "r8k.wav": (8000, 1000),
    "r96k.flac": (96000, 3000),
    "r44101.wav": (44101, 440),
    "r192k.wav": (192000, 5000),
}
# bad files: name -> (read_audio error, probe error or None where the headers are fine, dropped by scan())
BAD_AUDIO = {
    "empty.wav": (r"empty file \(0 bytes\), expected audio", r"empty file", True),
    "zero_frames.wav": (r"holds no audio samples", r"holds no audio samples", True),
    "zero_frames.flac": (r"no audio decoded", r"audio stream states no length and holds no packets", True),
    "zero_frames.m4a": (r"no audio stream \(streams found: none\)", r"no audio stream", True),
    "nan.wav": (r"1 NaN or infinite sample\(s\) .*the first at 0\.1 s \(channel 1\)", None, False),
    "inf.wav": (r"2 NaN or infinite sample\(s\) .*the first at 0\.05 s \(channel 0\)", None, False),
    "nan_f32.mkv": (r"1 NaN or infinite sample\(s\) .*the first at 0\.1 s", None, False),  # through FFmpeg
    "random.wav": (r"not a readable audio file", r"not a readable audio file", True),
    "text.wav": (r"not a readable audio file", r"not a readable audio file", True),
    "text.mp4": (r"not a readable audio file", r"not a readable audio file", True),
    "png_named.wav": (r"no audio stream \(streams found: video\)", r"no audio stream", True),
    "video_named.wav": (r"no audio stream \(streams found: video\)", r"no audio stream", True),
    "truncated.wav": (r"truncated WAV: the header promises 32000 bytes", r"truncated WAV", True),
    "huge_length.flac": (r"(corrupt FLAC data|truncated)", None, False),  # probe states the header's length
    "unknown_codec.mkv": (
        r"not a readable audio file \(FFmpeg has no decoder",
        r"not a readable audio file \(FFmpeg has no decoder",
        True,
    ),
}


def make_audio_corpus(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(good, bad)``: name -> path of every unusual-but-good and every bad audio file."""
    folder.mkdir(parents=True, exist_ok=True)
    good: dict[str, Path] = {}

    def write(name: str, x: np.ndarray, sample_rate: int, **kwargs) -> Path:  # x: [c t]
        sf.write(folder / name, x.T, sample_rate, **kwargs)
        return folder / name

    good["tone.wav"] = write("tone.wav", tone(440, RATE), RATE, subtype="PCM_16")
    write("tenth.flac", tone(440, RATE, seconds=0.1), RATE, subtype="PCM_16")  # a source, not in the corpus
    loud = 3 * tone(440, RATE, amplitude=0.5)  # peaks at 1.5: a third of the samples beyond full scale
    good["loud_float.wav"] = write("loud_float.wav", loud, RATE, subtype="FLOAT")
    good["clipped_pcm16.wav"] = write("clipped_pcm16.wav", np.clip(loud, -1, 1), RATE, subtype="PCM_16")
    good["ch8.flac"] = write("ch8.flac", channels_tone(8), RATE, subtype="PCM_16")
    good["ch32.wav"] = write("ch32.wav", channels_tone(32), RATE, subtype="PCM_16")
    ffmpeg_cli("-i", folder / "ch8.flac", "-c:a", "pcm_s16le", folder / "ch8_pcm.mkv")  # through FFmpeg
    good["ch8_pcm.mkv"] = folder / "ch8_pcm.mkv"
    for name, (sample_rate, hz) in RATES.items():
        good[name] = write(name, tone(hz, sample_rate), sample_rate, subtype="PCM_24")
    shutil.copy(good["tone.wav"], folder / "wav_named.mp4")
    good["wav_named.mp4"] = folder / "wav_named.mp4"
    ffmpeg_cli("-i", good["tone.wav"], "-c:a", "aac", "-f", "mp4", folder / "mp4_named.wav")
    good["mp4_named.wav"] = folder / "mp4_named.wav"
    with open(folder / "piped.flac", "wb") as out:  # a FLAC written to a pipe states no length
        subprocess.run([FFMPEG, "-v", "error", "-i", str(good["tone.wav"]), "-c:a", "flac", "-f", "flac", "pipe:"],
                       stdout=out, check=True)  # fmt: skip
    good["piped.flac"] = folder / "piped.flac"

    bad: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        bad[name] = folder / name

    put("empty.wav", b"")
    bad["zero_frames.wav"] = write("zero_frames.wav", np.zeros((1, 0), np.float32), RATE, subtype="PCM_16")
    ffmpeg_cli(
        "-f",
        "lavfi",
        "-i",
        f"anullsrc=r={RATE}:cl=mono",
        "-t",
        "0",
        "-c:a",
        "flac",
        folder / "zero_frames.flac",
    )
    bad["zero_frames.flac"] = folder / "zero_frames.flac"
    ffmpeg_cli(
        "-f",
        "lavfi",
        "-i",
        f"anullsrc=r={RATE}:cl=mono",
        "-t",
        "0",
        "-c:a",
        "aac",
        folder / "zero_frames.m4a",
    )
    bad["zero_frames.m4a"] = folder / "zero_frames.m4a"
    x = channels_tone(2)
    x[1, round(0.1 * RATE)] = np.nan  # inside the dataset's window (the first 0.25 s)
    bad["nan.wav"] = write("nan.wav", x, RATE, subtype="FLOAT")
    ffmpeg_cli("-i", bad["nan.wav"], "-c:a", "pcm_f32le", folder / "nan_f32.mkv")
    bad["nan_f32.mkv"] = folder / "nan_f32.mkv"
    x = channels_tone(1)
    x[0, round(0.05 * RATE)], x[0, round(0.2 * RATE)] = np.inf, -np.inf
    bad["inf.wav"] = write("inf.wav", x, RATE, subtype="FLOAT")
    put("random.wav", np.random.default_rng(2).integers(0, 256, 8000, dtype=np.uint8).tobytes())
    put("text.wav", b"RIFF? no, just text\n" * 50)
    put("text.mp4", b"not audio at all\n" * 50)
    ffmpeg_cli("-f", "lavfi", "-i", "testsrc2=s=32x32:r=5:d=1", "-frames:v", "1", "-f", "image2", "-c:v", "png",
               folder / "png_named.wav")  # fmt: skip
    bad["png_named.wav"] = folder / "png_named.wav"
    ffmpeg_cli("-f", "lavfi", "-i", "testsrc2=s=32x32:r=5:d=1", "-c:v", "libx264", "-f", "mp4",
               folder / "video_named.wav")  # fmt: skip
    bad["video_named.wav"] = folder / "video_named.wav"
    data = good["tone.wav"].read_bytes()
    put("truncated.wav", data[: len(data) // 2])
    flac = bytearray((folder / "tenth.flac").read_bytes())
    info = flac.index(b"fLaC") + 8  # STREAMINFO: its 36-bit sample count in bytes 13 (low half) to 17
    flac[info + 13] |= 0x0F
    flac[info + 14 : info + 18] = b"\xff\xff\xff\xff"
    put("huge_length.flac", bytes(flac))  # states 2^36 - 1 samples (a 275 GB read), holds 1,600
    (folder / "tenth.flac").unlink()
    ffmpeg_cli("-i", good["tone.wav"], "-c:a", "pcm_s16le", folder / "pcm.mkv")
    data = (folder / "pcm.mkv").read_bytes()
    assert data.count(b"A_PCM/INT/LIT") == 1
    put("unknown_codec.mkv", data.replace(b"A_PCM/INT/LIT", b"A_ZZZ/INT/LIT"))  # a codec FFmpeg lacks
    (folder / "pcm.mkv").unlink()
    assert set(bad) == set(BAD_AUDIO)
    return good, bad


@pytest.fixture(scope="session")
def audio_corpus(tmp_path_factory) -> tuple[dict[str, Path], dict[str, Path]]:
    return make_audio_corpus(tmp_path_factory.mktemp("audio_corpus"))


@pytest.fixture(scope="session")
def long_audio(tmp_path_factory) -> dict[str, Path]:
    """30 minutes of a 440 Hz tone at 8 kHz, mono: FLAC (read by libsndfile) and FLAC in Matroska (FFmpeg)."""
    folder = tmp_path_factory.mktemp("long_audio")
    out = {}
    for ext in ("flac", "mka"):
        out[ext] = folder / f"long.{ext}"
        ffmpeg_cli(
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=1800", "-c:a", "flac", out[ext]
        )
    return out


# --- audio: direct calls -----------------------------------------------------------------------------


def test_every_good_audio_file_reads_as_probe_says(audio_corpus):
    good, _ = audio_corpus
    for name, path in good.items():
        info = probe_audio(path)
        x, sr = read_audio(path)
        assert sr == info.sample_rate and x.dtype == torch.float32 and x.shape[0] == info.channels, name
        assert x.shape[1] == info.num_frames if info.exact else abs(x.shape[1] - info.num_frames) < 0.01 * sr
        assert torch.isfinite(x).all() and x.abs().max() <= 1, name


def test_clipping_loads_clipped_to_full_scale(audio_corpus):
    good = audio_corpus[0]
    source = 3 * tone(440, RATE, amplitude=0.5)[0]  # [t], peaks at 1.5
    over = np.abs(source) > 1
    x, _ = read_audio(good["loud_float.wav"])
    assert over.mean() > 0.3 and np.array_equal(x[0].numpy()[~over], source[~over])  # float wav: exact
    assert np.array_equal(x[0].numpy()[over], np.sign(source[over]))  # beyond full scale: clipped to +-1
    pcm, _ = read_audio(good["clipped_pcm16.wav"])  # hard-clipped 16-bit PCM: the codes of +-full scale
    assert float(pcm.max()) == 32767 / 32768 and float(pcm.min()) == -1.0
    assert int((pcm.abs() >= 32767 / 32768).sum()) == int(over.sum())
    up, _ = read_audio(good["loud_float.wav"], sample_rate=44100)  # resampling rings past 1: clipped too
    assert up.abs().max() == 1.0 and peak_hz(up, 44100) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("name", ["ch8.flac", "ch32.wav", "ch8_pcm.mkv"])
def test_many_channels(audio_corpus, name):
    path = audio_corpus[0][name]
    c = int(name[2:].split("_")[0].split(".")[0])
    x, sr = read_audio(path)
    assert x.shape == (c, RATE // 2) and probe_audio(path).channels == c
    assert np.abs(x.numpy() - channels_tone(c)).max() <= 1 / 2**15  # 16-bit PCM, every channel in place
    assert [round(peak_hz(x[k : k + 1], sr)) for k in range(c)] == pytest.approx(CHANNEL_HZ[:c], abs=2)
    mono, _ = read_audio(path, channels=1)
    assert torch.allclose(mono, x.mean(0, keepdim=True))
    with pytest.raises(AudioError, match=rf"{name}: has {c} channels; channels=2"):
        read_audio(path, channels=2)


@pytest.mark.parametrize("name", list(RATES))
@pytest.mark.parametrize("target", [16000, 44100])
def test_unusual_sample_rates_resample_with_the_pitch_kept(audio_corpus, name, target):
    rate, hz = RATES[name]
    path = audio_corpus[0][name]
    assert probe_audio(path).sample_rate == rate
    x, sr = read_audio(path, sample_rate=target)
    assert sr == target and x.shape == (1, target)  # one second
    expect = hz if hz < 0.45 * target else None
    if expect is not None:
        assert peak_hz(x, target) == pytest.approx(expect, abs=2)
        assert float(x[:, 200:-200].abs().max()) == pytest.approx(0.5, abs=0.03)  # the amplitude kept
    else:  # above the new Nyquist frequency: filtered out, not aliased
        assert float(x[:, 200:-200].abs().max()) < 0.01
    window, _ = read_audio(path, sample_rate=target, start=0.25, duration=0.5)  # a window, resampled
    first = round(0.25 * target)
    assert (
        window.shape == (1, target // 2) and (window - x[:, first : first + target // 2]).abs().max() < 1e-4
    )


def test_wrong_extension_and_unstated_length_read_by_content(audio_corpus):
    good = audio_corpus[0]
    ref, _ = read_audio(good["tone.wav"])
    assert torch.equal(read_audio(good["wav_named.mp4"])[0], ref)  # libsndfile reads it as the wav it is
    aac, sr = read_audio(good["mp4_named.wav"])
    assert probe_audio(good["mp4_named.wav"]).codec == "aac" and aac.shape == ref.shape
    assert peak_hz(aac, sr) == pytest.approx(440, abs=2)
    info = probe_audio(good["piped.flac"])  # no stated length: FFmpeg counts the packets
    assert (info.codec, info.num_frames, info.exact) == ("flac", RATE, False)
    assert torch.equal(read_audio(good["piped.flac"])[0], ref)  # lossless, every sample


@pytest.mark.parametrize("name", list(BAD_AUDIO))
def test_bad_audio_raises_a_clear_error(audio_corpus, name):
    path = audio_corpus[1][name]
    read_error, probe_error, _ = BAD_AUDIO[name]
    with pytest.raises(AudioError, match=rf"^{path}: {read_error}"):
        read_audio(path)
    if probe_error is None:  # headers intact: only reading the samples finds it
        assert probe_audio(path).num_frames > 0
    else:
        with pytest.raises(AudioError, match=rf"^{path}: {probe_error}"):
            probe_audio(path)


def test_a_header_stating_billions_of_samples_costs_what_the_file_holds(audio_corpus):
    path = audio_corpus[1]["huge_length.flac"]
    assert probe_audio(path).num_frames == 2**36 - 1
    tracemalloc.start()
    with pytest.raises(AudioError, match=rf"^{path}: "):
        read_audio(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4e6, peak  # a block of the 1,600 samples there are, not 2^36 floats


def test_writers_refuse_what_the_format_cannot_hold(tmp_path):
    for path, x, rate, message in [
        (tmp_path / "nine.flac", np.zeros((9, 100), np.float32), RATE, r"cannot write \.flac with 9 channel"),
        (tmp_path / "fast.flac", np.zeros((1, 100), np.float32), 1_000_000, r"at 1000000 Hz"),
        (tmp_path / "none.wav", np.zeros((0, 100), np.float32), RATE, r"expects a float waveform"),
    ]:
        with pytest.raises(ValueError, match=rf"^{path}: .*{message}"):
            write_audio(path, x, rate)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left


def test_nan_outside_the_window_reads(audio_corpus):
    path = audio_corpus[1]["nan.wav"]  # the NaN sits at 0.1 s
    x, _ = read_audio(path, start=0.11, duration=0.1)
    assert x.shape == (2, RATE // 10) and torch.isfinite(x).all()
    with pytest.raises(AudioError, match=r"the first at 0\.1 s"):
        read_audio(path, start=0.05, duration=0.1, sample_rate=22050)  # resampled windows are checked too


@pytest.mark.parametrize("ext", ["flac", "mka"])
def test_very_long_file_is_read_by_window(long_audio, ext):
    """A 2 s window at 29:50 of a 30 min file costs time and memory of the window, not of the file
    (the whole file is 14.4 M samples, 58 MB as float32)."""
    path = long_audio[ext]
    info = probe_audio(path)
    assert info.num_frames == 1800 * 8000 and info.duration == 1800
    read_audio(path, start=10.0, duration=0.1, sample_rate=RATE)  # warm up: the resampler's filter
    tracemalloc.start()
    began = time.perf_counter()
    x, sr = read_audio(path, start=1790.0, duration=2.0, sample_rate=RATE)
    elapsed = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert x.shape == (1, 2 * RATE) and peak_hz(x, sr) == pytest.approx(440, abs=1)
    assert peak < 4e6, peak  # numpy buffers of about the window (FLAC frames, the context)
    assert elapsed < 1.0, elapsed  # measured 0.01-0.04 s
    ds = AudioFolder(path.parent, sample_rate=RATE, duration=1.0, default_caption="", extensions=[f".{ext}"])
    began = time.perf_counter()
    item = ds[0]
    assert item["audio"].shape == (1, RATE) and time.perf_counter() - began < 1.0
    assert ds.window(0)[0] > 60  # a random place in the half hour, not the start


# --- audio: the dataset ------------------------------------------------------------------------------

AUDIO_KW = {
    "sample_rate": RATE,
    "duration": 0.25,
    "channels": 1,
    "crop": "start",
    "default_caption": "a sound",
}


def test_audio_folder_skips_counts_and_names_every_bad_file(audio_corpus, tmp_path):
    good, bad = audio_corpus
    root = corpus_folder(tmp_path / "corpus", good, bad)
    ds = AudioFolder(root, **AUDIO_KW)
    assert len(ds) == len(good) + len(bad)
    with pytest.warns(RuntimeWarning) as record:
        items = [ds[i] for i in range(len(ds))]
    assert sorted(names(ds.skipped_files)) == sorted(bad) and ds.skipped == len(bad)
    warned = sorted(Path(str(w.message).split("skipping ")[1].split(":")[0]).name for w in record)
    assert warned == sorted(bad)
    reasons = {Path(p).name: r for p, r in ds.skipped_files.items()}
    assert "NaN or infinite" in reasons["nan.wav"] and "NaN or infinite" in reasons["nan_f32.mkv"]
    assert set(names(item["path"] for item in items)) == set(good)
    for item in items:
        audio = item["audio"]
        assert audio.shape == (1, RATE // 4) and torch.isfinite(audio).all() and audio.abs().max() <= 1
    by_name = {Path(item["path"]).name: item["audio"] for item in items}
    assert by_name["loud_float.wav"].abs().max() == 1.0  # clipped, kept
    for name, (_, hz) in RATES.items():
        if hz < 0.45 * RATE:
            assert peak_hz(by_name[name], RATE) == pytest.approx(hz, abs=8), name  # 4 Hz bins in 0.25 s


def test_audio_folder_many_channels_to_stereo_are_skipped(audio_corpus, tmp_path):
    good = {n: p for n, p in audio_corpus[0].items() if n.startswith(("ch", "tone"))}
    root = corpus_folder(tmp_path / "corpus", good, {})
    ds = AudioFolder(root, **{**AUDIO_KW, "channels": 2})
    with pytest.warns(RuntimeWarning, match="cannot make 2"):
        items = [ds[i] for i in range(len(ds))]
    assert sorted(names(ds.skipped_files)) == ["ch32.wav", "ch8.flac", "ch8_pcm.mkv"]
    assert all(item["audio"].shape == (2, RATE // 4) for item in items)


def test_audio_folder_with_two_workers_counts_the_workers_skips(audio_corpus, tmp_path):
    good, bad = audio_corpus
    root = corpus_folder(tmp_path / "corpus", good, bad)
    ds = AudioFolder(root, **AUDIO_KW)
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    paths = [p for b in batches for p in b["path"]]
    assert len(paths) == len(ds) and set(names(paths)) == set(good)
    assert sorted(names(ds.skipped_files)) == sorted(bad) and ds.skipped == len(bad)
    assert set(ds.skipped_files.values()) == {WORKER_SKIPPED}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sequential = [ds[i] for i in range(len(ds))]
    assert names(paths) == names(item["path"] for item in sequential)
    assert torch.equal(
        torch.cat([b["audio"] for b in batches]), torch.stack([i["audio"] for i in sequential])
    )


def test_audio_folder_scan_then_workers_leave_exactly_the_good_items(audio_corpus, tmp_path):
    good, bad = audio_corpus
    root = corpus_folder(tmp_path / "corpus", good, bad)
    with pytest.warns(RuntimeWarning):
        ds = AudioFolder(root, validate=True, **AUDIO_KW)
    scanned = sorted(n for n, (_, _, dropped) in BAD_AUDIO.items() if dropped)
    assert sorted(names(ds.skipped_files)) == scanned
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = [p for b in loader for p in b["path"]]
    # the NaN files only reading finds: skipped by the workers, counted here with the scanned ones
    assert sorted(names(ds.skipped_files)) == sorted(bad)
    assert set(names(paths)) == set(good) and len(paths) == len(ds)
