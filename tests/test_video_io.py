"""Video I/O on real files that FFmpeg's lavfi sources make, in every container and codec we read."""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mediadiff.video import io as vio
from mediadiff.video.io import (
    VideoError,
    clip_indices,
    probe,
    read_video,
    resize_crop_plan,
    to_model,
    to_uint8,
    video_info,
    write_video,
)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
H, W, FPS, FRAMES = 48, 64, 10, 30
# frame n has luma 16 + 7 n: a frame counter any codec keeps (gray RGB level = 7 n * 255 / 219)
COUNTER = f"color=c=black:s={W}x{H}:r={FPS}:d={FRAMES / FPS},geq=lum='16+N*7':cb=128:cr=128"
LEVEL = 7 * 255 / 219

# name -> (lavfi source, ffmpeg output options, decoder name reported by probe)
COUNTER_CLIPS = {
    "count.mp4": (COUNTER, "-c:v libx264 -pix_fmt yuv420p -g 5", "h264"),
    "count.mov": (COUNTER, "-c:v libx264 -pix_fmt yuv420p -g 5", "h264"),
    "count.mkv": (COUNTER, "-c:v libx264 -pix_fmt yuv420p -g 5", "h264"),
    "count.webm": (COUNTER, "-c:v libvpx-vp9 -pix_fmt yuv420p -g 5", "vp9"),
    "count_vp8.webm": (COUNTER, "-c:v libvpx -pix_fmt yuv420p -g 5", "vp8"),
    "count.avi": (COUNTER, "-c:v mpeg4 -q:v 2 -g 5", "mpeg4"),
    "count_mjpeg.avi": (COUNTER, "-c:v mjpeg -q:v 2", "mjpeg"),
    "count.gif": (COUNTER, "", "gif"),
}
OTHER_CLIPS = {
    "testsrc.mp4": (f"testsrc=size={W}x{H}:rate=12:duration=2", "-c:v libx264 -pix_fmt yuv420p", "h264"),
    "mandelbrot.mkv": (
        f"mandelbrot=size={W}x{H}:rate=10",
        "-frames:v 12 -c:v libx264 -pix_fmt yuv420p",
        "h264",
    ),
    "life.webm": (
        f"life=size={W}x{H}:rate=10:ratio=0.5:seed=1",
        "-frames:v 20 -c:v libvpx -pix_fmt yuv420p",
        "vp8",
    ),
    # index first, then a busy picture so that half of the file holds some (not all) frames
    "faststart.mp4": (
        f"testsrc=size={W}x{H}:rate={FPS}:duration=3",
        "-c:v libx264 -pix_fmt yuv420p -movflags +faststart",
        "h264",
    ),
    "tone.wav": ("sine=duration=0.5", "", None),
}


def ffmpeg(source: str, out: Path, options: str = "") -> Path:
    """Render a lavfi ``source`` to ``out`` with the FFmpeg binary imageio-ffmpeg ships."""
    cmd = [FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", source, *options.split(), str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def make_test_videos(folder: Path) -> dict[str, Path]:
    """Every clip of this module in ``folder``, plus broken files: ``truncated.mp4`` (first half of an
    mp4 whose index sits at the end), ``truncated_faststart.mp4`` (index first, half the frames),
    ``random.mp4`` (random bytes), ``text.mp4`` (a text file), ``empty.mp4`` (zero bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        name: ffmpeg(src, folder / name, opts)
        for name, (src, opts, _) in {**COUNTER_CLIPS, **OTHER_CLIPS}.items()
    }
    data = paths["count.mp4"].read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    data = paths["faststart.mp4"].read_bytes()
    (folder / "truncated_faststart.mp4").write_bytes(data[: len(data) // 2])
    (folder / "random.mp4").write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    )
    (folder / "text.mp4").write_text("this is a text file, not a video\n")
    (folder / "empty.mp4").write_bytes(b"")
    for name in ("truncated.mp4", "truncated_faststart.mp4", "random.mp4", "text.mp4", "empty.mp4"):
        paths[name] = folder / name
    return paths


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    return make_test_videos(tmp_path_factory.mktemp("videos"))


def frame_ids(video: np.ndarray) -> list[int]:
    """The counter value of each frame of a counter clip."""
    means = video.reshape(len(video), -1).mean(1)
    return np.rint(means / LEVEL).astype(int).tolist()


def smooth_clip(f: int = 16, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth moving colour pattern, uint8 [f h w 3]: what lossy codecs keep well."""
    t, y, x = np.meshgrid(np.arange(f), np.arange(h), np.arange(w), indexing="ij")
    r = 128 + 100 * np.sin(x / 10 + t / 3)
    g = 128 + 100 * np.cos(y / 8 - t / 4)
    b = 128 + 60 * np.sin((x + y) / 15)
    return np.stack([r, g, b], -1).round().astype(np.uint8)  # [f h w 3]


# --- metadata -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*COUNTER_CLIPS, "testsrc.mp4", "mandelbrot.mkv", "life.webm"])
def test_probe_reads_metadata(videos, name):
    info = probe(videos[name])
    expected_frames, expected_fps, codec = {"testsrc.mp4": (24, 12, "h264"), "mandelbrot.mkv": (12, 10, "h264"),
                                            "life.webm": (20, 10, "vp8")}.get(name, (FRAMES, FPS, None))  # fmt: skip
    assert info.num_frames == expected_frames
    assert info.fps == pytest.approx(expected_fps, rel=1e-3)
    assert (info.height, info.width) == (H, W)
    assert info.codec == (codec or COUNTER_CLIPS[name][2])
    assert info.duration == pytest.approx(expected_frames / expected_fps, abs=0.06)
    assert info.shape == (expected_frames, H, W, 3)
    # matroska / webm headers carry no frame count: the packets are counted instead
    assert info.counted == name.endswith((".webm", ".mkv"))
    assert video_info(videos[name]) == info


def test_probe_count_frames_catches_truncated_file(videos, tmp_path):
    """Half of a faststart mp4 (index first) with a key frame every 5 frames: the first frames decode."""
    whole = ffmpeg(f"testsrc=size={W}x{H}:rate={FPS}:duration=3", tmp_path / "fs.mp4",
                   "-c:v libx264 -pix_fmt yuv420p -movflags +faststart -g 5")  # fmt: skip
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    header = probe(cut)
    counted = probe(cut, count_frames=True)
    assert header.num_frames == FRAMES and not header.counted  # the header still promises 30
    assert counted.counted and 0 < counted.num_frames < FRAMES
    # where the cut falls inside the first frame, probe decodes nothing and says so
    with pytest.raises(VideoError, match=r"truncated_faststart\.mp4: corrupt video: none of its packets"):
        probe(videos["truncated_faststart.mp4"])


# --- frame selection ----------------------------------------------------------------------------


def test_clip_indices():
    assert clip_indices(30, 5, src_fps=10, stride=2, start=7) == [7, 9, 11, 13, 15]
    # fps resampling: the frame on screen at k / fps; 10 -> 4 fps steps 2.5 frames
    assert clip_indices(30, 6, src_fps=10, fps=4, start=3) == [3, 5, 8, 10, 13, 15]
    assert clip_indices(30, 5, src_fps=10, fps=25) == [0, 0, 0, 1, 1]  # upsampling repeats frames
    assert clip_indices(30, 4, src_fps=10, stride=3, start="center") == [10, 13, 16, 19]  # span 10, slack 20
    assert clip_indices(10, 10, src_fps=10, start="random") == list(range(10))  # only one place fits
    starts = {clip_indices(30, 4, src_fps=10, start="random", generator=torch.Generator().manual_seed(s))[0]
              for s in range(200)}  # fmt: skip
    assert starts == set(range(27))  # uniform over every place the clip fits
    with pytest.raises(VideoError, match="needs 11 source frames, the video has 10"):
        clip_indices(10, 6, src_fps=10, stride=2)
    with pytest.raises(VideoError, match="too few frames"):
        clip_indices(10, 4, src_fps=10, stride=4, start="random")
    with pytest.raises(ValueError, match="either stride"):
        clip_indices(30, 4, src_fps=10, stride=2, fps=5)


@pytest.mark.parametrize("name", list(COUNTER_CLIPS))
def test_read_selects_the_right_frames(videos, name):
    path = videos[name]
    full = read_video(path)
    assert full.shape == (FRAMES, H, W, 3) and full.dtype == np.uint8
    assert frame_ids(full) == list(range(FRAMES))
    assert frame_ids(read_video(path, 4)) == [0, 1, 2, 3]
    assert frame_ids(read_video(path, 5, stride=2, start=7)) == [7, 9, 11, 13, 15]
    assert frame_ids(read_video(path, 6, fps=4, start=3)) == [3, 5, 8, 10, 13, 15]
    assert frame_ids(read_video(path, 6, fps=25, start=21)) == [21, 21, 21, 22, 22, 23]
    assert frame_ids(read_video(path, 3, start_sec=2.0)) == [20, 21, 22]
    assert frame_ids(read_video(path, 4, stride=3, start="center")) == [10, 13, 16, 19]
    assert frame_ids(read_video(path, stride=3, start=20)) == [20, 23, 26, 29]  # open-ended: to the end
    assert frame_ids(read_video(path, fps=2.5, start=18)) == [18, 22, 26]
    assert frame_ids(read_video(path, 2, start=FRAMES - 2)) == [28, 29]  # the very last frames
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    clip = read_video(path, 4, stride=2, start="random", generator=g1)
    ids = frame_ids(clip)
    assert ids == [ids[0] + 2 * k for k in range(4)] and 0 <= ids[0] <= FRAMES - 7
    assert np.array_equal(clip, read_video(path, 4, stride=2, start="random", generator=g2))
    # seeking to the first wanted frame gives exactly what decoding from the start gives
    for kwargs in ({"start": 17}, {"start": 23, "stride": 2}, {"start_sec": 1.3, "fps": 5}):
        assert np.array_equal(read_video(path, 3, **kwargs), read_video(path, 3, seek=False, **kwargs)), (
            kwargs
        )


@pytest.fixture
def decoded(monkeypatch) -> list[float]:
    """Positions of the frames the decoder produces, from now on (read_video decodes through _decode)."""
    log, original = [], vio._decode

    def counting(*args, **kwargs):
        for position, frame in original(*args, **kwargs):
            log.append(position)
            yield position, frame

    monkeypatch.setattr(vio, "_decode", counting)
    return log


@pytest.mark.parametrize("name", ["count.mp4", "count.webm", "count.avi"])
def test_decoding_stops_early_and_seeks(videos, name, decoded):
    assert frame_ids(read_video(videos[name], 4)) == [0, 1, 2, 3]
    assert len(decoded) == 4  # the first four frames, not the whole file
    decoded.clear()
    assert frame_ids(read_video(videos[name], 2, start=22)) == [22, 23]
    assert len(decoded) <= 5 + 2  # from the key frame at or before 22 (one every 5 frames)
    assert min(decoded) >= 20 - 0.5
    decoded.clear()
    read_video(videos[name], 2, start=22, seek=False)
    assert len(decoded) == 24


def test_read_other_sources_and_torch_output(videos):
    clip = read_video(videos["mandelbrot.mkv"], 8, output="torch")
    assert isinstance(clip, torch.Tensor) and clip.shape == (8, H, W, 3) and clip.dtype == torch.uint8
    life = read_video(videos["life.webm"], stride=4)
    assert life.shape == (5, H, W, 3)
    assert len({frame.tobytes() for frame in life}) == 5  # the game of life moves: five distinct frames
    testsrc = read_video(videos["testsrc.mp4"], fps=6)
    assert testsrc.shape == (12, H, W, 3)  # 24 frames at 12 fps -> 12 frames at 6 fps
    assert np.array_equal(testsrc, read_video(videos["testsrc.mp4"])[::2])


@pytest.mark.parametrize(("ext", "codec", "pix_fmt"), [("gif", "gif", "rgb8"), ("mkv", "libx264", "yuv420p")])
def test_variable_frame_rate_holds_the_frame_on_screen(tmp_path, ext, codec, pix_fmt):
    """Six frames at 10 fps, but the fourth stays on screen for 0.5 s: frames follow the timestamps."""
    colours = np.array(
        [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)], np.uint8
    )
    time_base = Fraction(1, 100)
    path = tmp_path / f"vfr.{ext}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, pix_fmt
        stream.codec_context.time_base = time_base
        for colour, pts in zip(colours, [0, 10, 20, 30, 80, 90]):
            frame = av.VideoFrame.from_ndarray(np.tile(colour, (24, 32, 1)), format="rgb24").reformat(
                format=pix_fmt
            )
            frame.pts, frame.time_base = pts, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    def ids(video):
        means = video.reshape(len(video), -1, 3).mean(1)  # [f 3]
        return np.abs(means[:, None] - colours[None]).sum(-1).argmin(1).tolist()

    assert probe(path).num_frames == 6
    assert ids(read_video(path)) == [0, 1, 2, 3, 3, 3, 3, 3, 4, 5]
    assert ids(read_video(path, 4, start=2)) == [2, 3, 3, 3]
    assert ids(read_video(path, 3, fps=5)) == [0, 2, 3]
    assert ids(read_video(path, 3, start=2, seek=False)) == ids(read_video(path, 3, start=2))


# --- resize and crop ----------------------------------------------------------------------------


def test_crop_without_resize_is_exact(videos):
    full = read_video(videos["testsrc.mp4"], 6)
    centre = read_video(videos["testsrc.mp4"], 6, size=H)  # 48x64 -> 48x48: no resize, crop width
    assert np.array_equal(centre, full[:, :, 8:56])
    lefts = set()
    for seed in range(12):
        clip = read_video(
            videos["testsrc.mp4"],
            6,
            size=(H, 40),
            crop="random",
            generator=torch.Generator().manual_seed(seed),
        )
        matches = [x for x in range(W - 40 + 1) if np.array_equal(clip, full[:, :, x : x + 40])]
        assert len(matches) == 1  # some window of the full frames, the same for every frame
        lefts.add(matches[0])
    assert len(lefts) > 3  # different seeds, different crops


@pytest.mark.parametrize("size", [24, (24, 40), (20, 16), (96, 96)])
def test_resize_then_crop_matches_torch(videos, size):
    full = read_video(videos["testsrc.mp4"], 4)  # [4 48 64 3]
    clip = read_video(videos["testsrc.mp4"], 4, size=size)
    th, tw = (size, size) if isinstance(size, int) else size
    assert clip.shape == (4, th, tw, 3)
    (rh, rw), (top, left) = resize_crop_plan((H, W), size, "center")
    assert min(rh / H, rw / W) == pytest.approx(max(th / H, tw / W), abs=0.02)  # aspect kept, covers size
    x = torch.from_numpy(full).float().permute(0, 3, 1, 2)  # [4 3 48 64]
    mode = "area" if rh < H else "bicubic"
    ref = F.interpolate(x, size=(rh, rw), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    ref = ref.clamp(0, 255).permute(0, 2, 3, 1)  # [4 rh rw 3]
    clip = torch.from_numpy(clip).float()

    def err(dy: int, dx: int) -> float:
        y, x = top + dy, left + dx
        if not (0 <= y <= rh - th and 0 <= x <= rw - tw):
            return math.inf
        return float((clip - ref[:, y : y + th, x : x + tw]).abs().mean())

    assert err(0, 0) < 5  # swscale and torch resample alike ...
    assert err(0, 0) < min(
        err(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)
    )  # ... here


def test_stretch_and_plan():
    assert resize_crop_plan((48, 64), (30, 30), None) == ((30, 30), (0, 0))
    assert resize_crop_plan((48, 64), 24, "center") == ((24, 32), (0, 4))
    assert resize_crop_plan((48, 64), (48, 16), "center") == ((48, 64), (0, 24))
    with pytest.raises(ValueError, match="size must be"):
        resize_crop_plan((48, 64), (0, 3))
    with pytest.raises(ValueError, match="crop must be"):
        resize_crop_plan((48, 64), 8, "middle")


def test_stretch_read(videos):
    clip = read_video(videos["count.mp4"], 2, size=(30, 30), crop=None)
    assert clip.shape == (2, 30, 30, 3)


# --- model format -------------------------------------------------------------------------------


def test_to_model_and_back_is_exact():
    video = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    x = to_model(video)
    assert x.shape == (3, 5, 6, 7) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x[1, 2, 3, 4] == pytest.approx(video[2, 3, 4, 1] / 127.5 - 1)  # channel from the last axis
    assert torch.equal(to_uint8(x), torch.from_numpy(video))
    batch = to_model(torch.from_numpy(np.stack([video, video[::-1]])), dtype=torch.float64)
    assert batch.shape == (2, 3, 5, 6, 7) and batch.dtype == torch.float64
    assert torch.equal(to_uint8(batch)[1], torch.from_numpy(video[::-1].copy()))
    assert torch.equal(
        to_uint8(torch.full((3, 1, 1, 1), 5.0)), torch.full((1, 1, 1, 3), 255, dtype=torch.uint8)
    )
    with pytest.raises(ValueError, match="uint8"):
        to_model(video.astype(np.float32))
    with pytest.raises(ValueError, match="float tensor"):
        to_uint8(torch.from_numpy(video))


# --- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "codec", "fps", "bound"),
    [
        ("mp4", "h264", 12, 5),
        ("webm", "vp9", 12, 5),
        ("gif", "gif", 10, 8),
        ("mov", "h264", 29.97, 5),
        ("mkv", "h264", 8, 5),
    ],
)
def test_write_read_round_trip(tmp_path, ext, codec, fps, bound):
    video = smooth_clip()
    path = write_video(tmp_path / f"clip.{ext}", torch.from_numpy(video), fps)
    info = probe(path)
    assert info.codec == codec and info.num_frames == 16 and (info.height, info.width) == (48, 64)
    assert info.fps == pytest.approx(fps, rel=0.01 if ext != "gif" else 0.02)  # gif: 1/100 s delays
    back = read_video(path)
    assert back.shape == video.shape
    err = np.abs(back.astype(int) - video).mean()
    assert err < bound, err
    # the frames come back in order: each frame is closest to its own source
    dist = np.abs(back[:, None].astype(int) - video[None]).mean(axis=(2, 3, 4))  # [16 16]
    assert (dist.argmin(1) == np.arange(16)).all()
    assert [p.name for p in tmp_path.iterdir()] == [f"clip.{ext}"]  # no temporary file left


def test_write_odd_size_pads_to_even(tmp_path):
    video = smooth_clip(6, 47, 63)
    back = read_video(write_video(tmp_path / "odd.mp4", video, 8))
    assert back.shape == (6, 48, 64, 3)
    assert np.abs(back[:, :47, :63].astype(int) - video).mean() < 5
    assert np.abs(back[:, 47, :63].astype(int) - video[:, 46]).mean() < 8  # the padding repeats the edge
    assert np.abs(back[:, :47, 63].astype(int) - video[:, :, 62]).mean() < 8
    gif = read_video(write_video(tmp_path / "odd.gif", video, 8))
    assert gif.shape == video.shape  # gif has no 4:2:0 constraint


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_video(tmp_path / "a.mp4", smooth_clip(4), 8)
    before = path.read_bytes()

    def broken(tmp, *args):
        tmp.write_bytes(b"partial")
        raise RuntimeError("encoder died")

    monkeypatch.setattr(vio, "_write_encoded", broken)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_video(path, smooth_clip(8), 8)
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # and the partial file is gone
    monkeypatch.undo()
    write_video(tmp_path / "sub" / "b.webm", smooth_clip(3), 8)  # missing folders are created
    assert probe(tmp_path / "sub" / "b.webm").num_frames == 3


def test_write_errors(tmp_path):
    video = smooth_clip(2)
    with pytest.raises(ValueError, match=r"clip\.avi.*cannot write \.avi; supported: \.mp4"):
        write_video(tmp_path / "clip.avi", video, 8)
    with pytest.raises(ValueError, match=r"uint8 \[f h w 3\].*to_uint8"):
        write_video(tmp_path / "clip.mp4", to_model(video), 8)
    with pytest.raises(ValueError, match="fps must be > 0"):
        write_video(tmp_path / "clip.mp4", video, 0)
    with pytest.raises(ValueError, match="not in this PyAV build"):
        write_video(tmp_path / "clip.mp4", video, 8, codec="no-such-codec")
    assert list(tmp_path.iterdir()) == []


# --- errors -------------------------------------------------------------------------------------


def test_read_errors_name_the_file(videos, tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        read_video(missing)
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        probe(missing)
    for name in ("text.mp4", "random.mp4", "truncated.mp4"):
        with pytest.raises(VideoError, match=rf"{name}: not a readable video file"):
            read_video(videos[name])
        with pytest.raises(VideoError, match=name):
            probe(videos[name])
    with pytest.raises(VideoError, match=r"empty.mp4: empty file \(0 bytes\)"):
        read_video(videos["empty.mp4"])
    with pytest.raises(VideoError, match=r"tone.wav: no video stream \(streams found: audio\)"):
        read_video(videos["tone.wav"])
    with pytest.raises(VideoError, match="is a directory"):
        read_video(tmp_path)
    # too few frames: from the header before decoding, or found while decoding
    with pytest.raises(VideoError, match=r"count.mp4: too few frames: num_frames=20 with stride=2"):
        read_video(videos["count.mp4"], 20, stride=2)
    with pytest.raises(VideoError, match=r"count.webm: too few frames"):
        read_video(videos["count.webm"], 5, start=28)
    with pytest.raises(VideoError, match=r"truncated_faststart.mp4: (too few frames|corrupt video)"):
        read_video(videos["truncated_faststart.mp4"], FRAMES)
    with pytest.raises(ValueError, match="num_frames must be a positive int"):
        read_video(videos["count.mp4"], 0)
    with pytest.raises(ValueError, match="needs num_frames"):
        read_video(videos["count.mp4"], start="random")


def test_long_clip_reads_the_tail_by_seeking(tmp_path, decoded):
    """A 60 s clip at 25 fps, a key frame every 2 s: its last 8 frames cost one GOP, not 1,500 decodes."""
    path = ffmpeg(
        f"testsrc=size={W}x{H}:rate=25:duration=60",
        tmp_path / "long.mp4",
        "-c:v libx264 -pix_fmt yuv420p -g 50",
    )
    tail = read_video(path, 8, start=1492)
    assert len(decoded) <= 50 + 8
    decoded.clear()
    assert np.array_equal(tail, read_video(path, 8, start=1492, seek=False))
    assert len(decoded) == 1500
    assert math.isclose(probe(path).duration, 60, abs_tol=0.05)


def test_probe_reports_the_size_read_video_returns_when_the_header_disagrees():
    """A damaged h264 mkv (found by test_fuzz_media's soak: 11 bytes changed, 9 of them in the SPS) whose
    header states 12x16 while its frames decode to 16x16: probe reports the decoded size, the one read_video
    returns (it used to report the header's)."""
    path = Path(__file__).resolve().parent / "data" / "damaged_sps_h264.mkv"
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        header = (ctx.height, ctx.width)
    info = probe(path)
    for video in (read_video(path), read_video(path, num_frames=3, start=2)):
        assert header != video.shape[1:3]  # the file is the case: its header disagrees with its frames
        assert (info.height, info.width) == video.shape[1:3] == (16, 16)


def test_mp4_is_the_bytes_of_x264s_c_code(tmp_path, monkeypatch):
    """An mp4 holds what x264's C code (``asm=0``) encodes for the frames, on any CPU: x264's own SIMD
    kernels are bit-exact with it up to AVX2, but its AVX-512 ones were not on an AMD EPYC with
    AVX-512 (other bytes, and other bytes from one process to the next), so write_video caps them."""
    frames = smooth_clip(17, 64, 64)  # [f 64 64 3]
    ours = vio.write_video(tmp_path / "ours.mp4", frames, 8).read_bytes()
    options = vio._encoder_options
    monkeypatch.setattr(vio, "_encoder_options", lambda c, crf: {**options(c, crf), "x264-params": "asm=0"})
    reference = vio.write_video(tmp_path / "c.mp4", frames, 8).read_bytes()
    assert ours == reference
