"""VideoFolder on real files: caption conventions, bad files, determinism, DataLoader workers."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mediadiff.video.datasets import VideoFolder
from mediadiff.video.io import read_video, to_model
from tests.test_video_io import COUNTER, LEVEL, H, W, ffmpeg, make_test_videos


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Source files to copy into dataset folders (made once)."""
    folder = tmp_path_factory.mktemp("dataset_sources")
    paths = make_test_videos(folder)
    paths["short.mp4"] = ffmpeg(COUNTER, folder / "short.mp4", "-frames:v 5 -c:v libx264 -pix_fmt yuv420p")
    return paths


def build(root: Path, clips: dict[str, Path], layout: dict[str, str]) -> Path:
    """Copy ``clips[source]`` to ``root / target`` for each ``target: source``."""
    for target, source in layout.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clips[source], root / target)
    return root


@pytest.fixture
def folder(tmp_path, clips) -> Path:
    """All three caption conventions: a root jsonl (with a subfolder path), a csv in a subfolder, sidecars."""
    root = build(
        tmp_path / "data",
        clips,
        {
            "a.mp4": "count.mp4",
            "sub/b.webm": "count.webm",
            "csv/c.mov": "count.mov",
            "csv/d.mkv": "count.mkv",
            "side/e.avi": "count.avi",
            "side/deeper/f.gif": "count.gif",
        },
    )
    rows = [{"file_name": "a.mp4", "text": "clip a"}, {"file_name": "sub/b.webm", "text": "clip b"}]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "csv" / "metadata.csv").write_text('file_name,text\nc.mov,"clip c, with a comma"\nd.mkv,clip d\n')
    (root / "side" / "e.txt").write_text("clip e\n")
    (root / "side" / "deeper" / "f.txt").write_text("  clip f  ")
    return root


def names(dataset: VideoFolder) -> list[str]:
    return [Path(path).name for path, _ in dataset.items]


def test_three_caption_conventions(folder):
    ds = VideoFolder(folder, num_frames=4, size=32, stride=2, clip="start", crop="center")
    assert len(ds) == 6 and ds.skipped == 0
    captions = {Path(path).name: text for path, text in ds.items}
    assert captions == {
        "a.mp4": "clip a",
        "b.webm": "clip b",
        "c.mov": "clip c, with a comma",
        "d.mkv": "clip d",
        "e.avi": "clip e",
        "f.gif": "clip f",
    }
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"video", "text", "path"}
        video = item["video"]
        assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32
        assert -1 <= video.min() and video.max() <= 1
        # clip="start", stride=2: frames 0, 2, 4, 6 of the counter
        levels = ((video + 1) * 127.5).mean(dim=(0, 2, 3)) / LEVEL
        assert torch.allclose(levels, torch.tensor([0.0, 2.0, 4.0, 6.0]), atol=0.3), (item["path"], levels)
        assert item["text"] == captions[Path(item["path"]).name]


def test_metadata_wins_over_sidecar_and_lists_extra_files(folder):
    (folder / "a.txt").write_text("sidecar a")  # metadata.jsonl also captions a.mp4: the table wins
    shutil.copy(folder / "a.mp4", folder / "g.video")  # not a video extension, but the table names it
    with open(folder / "metadata.jsonl", "a") as fh:
        fh.write(json.dumps({"file_name": "g.video", "text": "clip g"}) + "\n")
    (folder / "link.mp4").symlink_to(folder / "sub" / "b.webm")  # a linked video keeps its own sidecar
    (folder / "link.txt").write_text("linked clip")
    ds = VideoFolder(folder, num_frames=2, size=16)
    captions = {Path(path).name: text for path, text in ds.items}
    assert captions["a.mp4"] == "clip a" and captions["g.video"] == "clip g" and len(ds) == 8
    assert captions["link.mp4"] == "linked clip" and captions["b.webm"] == "clip b"
    assert ds[names(ds).index("link.mp4")]["video"].shape == (3, 2, 16, 16)


def test_missing_caption_is_an_error_or_default(folder):
    (folder / "side" / "e.txt").unlink()
    with pytest.raises(ValueError, match=r"1 video\(s\) have no caption: side/e.avi.*default_caption"):
        VideoFolder(folder, num_frames=2, size=16)
    ds = VideoFolder(folder, num_frames=2, size=16, default_caption="")
    assert dict((Path(p).name, t) for p, t in ds.items)["e.avi"] == ""


def test_bad_tables_and_roots(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        VideoFolder(tmp_path / "missing", num_frames=2, size=16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable videos found"):
        VideoFolder(tmp_path / "empty", num_frames=2, size=16)
    (folder / "metadata.jsonl").write_text(
        '{"file_name": "a.mp4", "text": "ok"}\n{"file_name": "sub/b.webm"\n'
    )
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: not valid JSON"):
        VideoFolder(folder, num_frames=2, size=16)
    (folder / "metadata.jsonl").write_text('{"file_name": "a.mp4", "caption": "wrong column"}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: expected string fields 'file_name' and 'text'"):
        VideoFolder(folder, num_frames=2, size=16)
    (folder / "metadata.jsonl").unlink()
    (folder / "csv" / "metadata.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"both metadata\.jsonl and metadata\.csv"):
        VideoFolder(folder, num_frames=2, size=16)
    with pytest.raises(ValueError, match="clip must be"):
        VideoFolder(folder, num_frames=2, size=16, clip="middle")
    with pytest.raises(ValueError, match="either stride"):
        VideoFolder(folder, num_frames=2, size=16, stride=2, fps=5)


BAD = {
    "bad/random.mp4": "random.mp4",
    "bad/truncated.mp4": "truncated.mp4",
    "bad/truncated_faststart.mp4": "truncated_faststart.mp4",
    "bad/empty.webm": "empty.mp4",
    "bad/short.mp4": "short.mp4",
}


@pytest.fixture
def mixed(tmp_path, clips) -> Path:
    """Three good videos and five bad ones (random bytes, half an mp4 either way, zero bytes, too short)."""
    return build(tmp_path / "mixed", clips, {"good/a.mp4": "count.mp4", "good/b.webm": "count.webm",
                                             "good/c.avi": "count.avi", **BAD})  # fmt: skip


def test_bad_files_are_skipped_counted_and_warned_once(mixed):
    ds = VideoFolder(mixed, num_frames=12, size=16, stride=2, default_caption="x", seed=1)
    assert len(ds) == 8 and names(ds)[:5] == ["empty.webm", "random.mp4", "short.mp4", "truncated.mp4",
                                               "truncated_faststart.mp4"]  # fmt: skip
    with pytest.warns(RuntimeWarning) as record:
        items = [ds[i] for i in range(len(ds))]
    warned = sorted(Path(str(w.message).split("skipping ")[1].split(":")[0]).name for w in record)
    assert warned == sorted(Path(p).name for p in BAD)  # one warning per bad file
    assert ds.skipped == 5 and sorted(Path(p).name for p in ds.skipped_files) == warned
    assert "too few frames" in ds.skipped_files[str((mixed / "bad/short.mp4").resolve())]
    assert "empty file" in ds.skipped_files[str((mixed / "bad/empty.webm").resolve())]
    # every bad index gets the next good item: the first good one, a.mp4, for all five
    assert [Path(item["path"]).name for item in items] == ["a.mp4"] * 6 + ["b.webm", "c.avi"]
    assert all(item["video"].shape == (3, 12, 16, 16) for item in items)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known bad file is not read (or warned about) again
        again = ds[3]
    assert torch.equal(again["video"], items[3]["video"])
    assert torch.equal(ds[0]["video"], ds.load(5)["video"])  # the substitute is item 5 itself


def test_all_bad_raises(tmp_path, clips):
    root = build(tmp_path / "bad", clips, BAD)
    ds = VideoFolder(root, num_frames=12, size=16, stride=2, default_caption="x")
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="all 5 videos are unreadable"):
        ds[2]


def test_scan_drops_bad_files_up_front(mixed):
    with pytest.warns(RuntimeWarning, match="skipping"):
        ds = VideoFolder(mixed, num_frames=12, size=16, stride=2, default_caption="x", validate=True)
    assert names(ds) == ["a.mp4", "b.webm", "c.avi"]
    assert ds.skipped == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [Path(ds[i]["path"]).name for i in range(3)] == ["a.mp4", "b.webm", "c.avi"]
    # the clip length decides what is too short: 5 frames are enough for 4 frames at stride 1
    with pytest.warns(RuntimeWarning):
        dropped = VideoFolder(mixed, num_frames=4, size=16, default_caption="x", validate=True).scan()
    assert dropped == {}  # the first scan (validate=True) already dropped the bad ones
    ds = VideoFolder(mixed, num_frames=4, size=16, default_caption="x")
    with pytest.warns(RuntimeWarning):
        dropped = ds.scan()
    assert sorted(Path(p).name for p in dropped) == ["empty.webm", "random.mp4", "truncated.mp4",
                                                     "truncated_faststart.mp4"]  # fmt: skip
    assert "short.mp4" in names(ds)


def test_missing_listed_file_is_skipped(folder):
    with open(folder / "metadata.jsonl", "a") as fh:
        fh.write(json.dumps({"file_name": "gone.mp4", "text": "deleted"}) + "\n")
    with pytest.warns(RuntimeWarning, match=r"gone.mp4: listed in a metadata table but missing"):
        ds = VideoFolder(folder, num_frames=2, size=16)
    assert len(ds) == 6 and ds.skipped == 1


def test_determinism_by_seed_and_epoch(folder):
    def clips_of(ds):
        return torch.stack([ds[i]["video"] for i in range(len(ds))])

    kwargs = {"num_frames": 3, "size": (24, 24), "stride": 2}
    a = clips_of(VideoFolder(folder, seed=7, **kwargs))
    b = clips_of(VideoFolder(folder, seed=7, **kwargs))
    c = clips_of(VideoFolder(folder, seed=8, **kwargs))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    ds = VideoFolder(folder, seed=7, **kwargs)
    ds.set_epoch(1)
    e1 = clips_of(ds)
    assert not torch.equal(a, e1)
    ds.set_epoch(0)
    assert torch.equal(clips_of(ds), a)
    # the random clip start and crop are the ones read_video draws from the item's generator
    path, _ = ds.items[2]
    expected = read_video(
        path, 3, stride=2, start="random", size=(24, 24), crop="random", generator=ds.generator(2)
    )
    assert torch.equal(a[2], to_model(expected))
    # clip starts cover the file: over a few epochs the first frames differ
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        starts.add(round(float(((ds[0]["video"][:, 0] + 1) * 127.5).mean()) / LEVEL))
    assert len(starts) >= 3


def test_centered_clip_and_fps(folder):
    ds = VideoFolder(folder, num_frames=4, size=(H // 2, W // 2), fps=5, clip="center", crop="center")
    item = ds[0]  # a.mp4: 30 frames at 10 fps -> 4 frames at 5 fps span 7 source frames, centred at 11
    assert item["video"].shape == (3, 4, H // 2, W // 2)
    levels = ((item["video"] + 1) * 127.5).mean(dim=(0, 2, 3)) / LEVEL
    assert torch.allclose(levels, torch.tensor([11.0, 13.0, 15.0, 17.0]), atol=0.3), levels


def test_dataloader_with_two_workers(mixed):
    ds = VideoFolder(mixed, num_frames=4, size=16, stride=2, default_caption="a clip", seed=3)
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the workers warn about the bad files in their own processes
        batches = list(loader)
        expected = [ds[i] for i in range(len(ds))]
    assert [b["video"].shape for b in batches] == [(4, 3, 4, 16, 16)] * 2
    assert batches[0]["text"] == ["a clip"] * 4
    videos = torch.cat([b["video"] for b in batches])
    assert torch.equal(videos, torch.stack([e["video"] for e in expected]))  # same items in workers
    assert [Path(p).name for b in batches for p in b["path"]] == [Path(e["path"]).name for e in expected]
    assert "skipped=" in repr(ds)
