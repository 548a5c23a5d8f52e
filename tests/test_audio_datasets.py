"""AudioFolder on real files: caption conventions, crops, short files, bad files, determinism, workers."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mediadiff.audio.datasets import AudioFolder
from mediadiff.audio.io import read_audio, write_audio
from tests.test_audio_io import (
    ESPEAK,
    SECONDS,
    chirp,
    decoded,  # noqa: F401 (a fixture)
    ffmpeg,
    make_bad_files,
    peak_hz,
    tone,
)

RATE = 16000


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Source files to copy into dataset folders (made once): a 1.5 s stereo chirp in several formats,
    a 440 Hz mono tone, a 0.2 s tone, speech when espeak-ng is installed, and the bad files."""
    folder = tmp_path_factory.mktemp("audio_dataset_sources")
    paths = {"chirp.wav": write_audio(folder / "chirp.wav", chirp(), 44100)}
    for ext, options in [("flac", "-c:a flac"), ("mp3", "-c:a libmp3lame"), ("m4a", "-c:a aac"),
                         ("ogg", "-c:a libvorbis"), ("webm", "-c:a libopus")]:  # fmt: skip
        paths[f"chirp.{ext}"] = folder / f"chirp.{ext}"
        ffmpeg("-i", paths["chirp.wav"], *options.split(), paths[f"chirp.{ext}"])
    paths["tone.wav"] = write_audio(folder / "tone.wav", tone(440, 22050, seconds=1.0), 22050)
    paths["short.wav"] = write_audio(folder / "short.wav", tone(440, 16000, seconds=0.2), 16000)
    if ESPEAK:
        import subprocess

        subprocess.run(
            [ESPEAK, "-w", str(folder / "speech.wav"), "hello there"], check=True, capture_output=True
        )
        paths["speech.wav"] = folder / "speech.wav"
    sources = {"chirp": (paths["chirp.wav"], 44100)}
    paths.update(make_bad_files(folder / "bad", sources))
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
            "a.wav": "chirp.wav",
            "sub/b.flac": "chirp.flac",
            "csv/c.mp3": "chirp.mp3",
            "csv/d.m4a": "chirp.m4a",
            "side/e.ogg": "chirp.ogg",
            "side/deeper/f.webm": "chirp.webm",
        },
    )
    rows = [{"file_name": "a.wav", "text": "clip a"}, {"file_name": "sub/b.flac", "text": "clip b"}]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "csv" / "metadata.csv").write_text('file_name,text\nc.mp3,"clip c, with a comma"\nd.m4a,clip d\n')
    (root / "side" / "e.txt").write_text("clip e\n")
    (root / "side" / "deeper" / "f.txt").write_text("  clip f  ")
    return root


def names(dataset: AudioFolder) -> list[str]:
    return [Path(path).name for path, _ in dataset.items]


def test_three_caption_conventions(folder):
    ds = AudioFolder(folder, sample_rate=RATE, duration=0.5, crop="start")
    assert ds.data_key == "audio" and len(ds) == 6 and ds.skipped == 0
    captions = {Path(path).name: text for path, text in ds.items}
    assert captions == {
        "a.wav": "clip a",
        "b.flac": "clip b",
        "c.mp3": "clip c, with a comma",
        "d.m4a": "clip d",
        "e.ogg": "clip e",
        "f.webm": "clip f",
    }
    reference, _ = read_audio(folder / "a.wav", sample_rate=RATE, channels=1)  # [1 24000]
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"audio", "text", "path"} and item["text"] == captions[Path(item["path"]).name]
        audio = item["audio"]
        assert audio.shape == (1, RATE // 2) and audio.dtype == torch.float32 and audio.abs().max() <= 1
        # every format gives the first half second of the same chirp, mixed to mono, at 16 kHz
        error = float(
            (audio - reference[:, : RATE // 2]).pow(2).mean() / reference[:, : RATE // 2].pow(2).mean()
        )
        assert error < (1e-9 if item["path"].endswith((".wav", ".flac")) else 0.05), (item["path"], error)


def test_metadata_wins_over_sidecar_and_missing_captions(folder):
    (folder / "a.txt").write_text("sidecar a")  # metadata.jsonl also captions a.wav: the table wins
    (folder / "side" / "e.txt").unlink()
    with pytest.raises(ValueError, match=r"1 audio file\(s\) have no caption: side/e.ogg.*default_caption"):
        AudioFolder(folder)
    ds = AudioFolder(folder, default_caption="")
    captions = {Path(p).name: t for p, t in ds.items}
    assert captions["a.wav"] == "clip a" and captions["e.ogg"] == ""
    with open(folder / "metadata.jsonl", "a") as fh:
        fh.write(json.dumps({"file_name": "gone.wav", "text": "deleted"}) + "\n")
    with pytest.warns(
        RuntimeWarning, match=r"AudioFolder: skipping .*gone.wav: listed in a metadata table but missing"
    ):
        ds = AudioFolder(folder, default_caption="")
    assert len(ds) == 6 and ds.skipped == 1


def test_arguments_and_roots(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"AudioFolder root .* is not a folder"):
        AudioFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not audio")
    with pytest.raises(ValueError, match="no readable audio files found"):
        AudioFolder(tmp_path / "empty")
    for kwargs, message in [
        ({"duration": 1.0, "num_samples": 100}, "either duration"),
        ({"duration": 0}, "duration must be > 0"),
        ({"num_samples": 0}, "num_samples must be a positive int"),
        ({"crop": "middle"}, "crop must be"),
        ({"short": "drop"}, "short must be"),
        ({"sample_rate": 0}, "sample_rate must be a positive int"),
        ({"channels": 0}, "channels must be a positive int"),
    ]:
        with pytest.raises(ValueError, match=message):
            AudioFolder(folder, **kwargs)
    ds = AudioFolder(folder, num_samples=1234, sample_rate=8000)
    assert ds[0]["audio"].shape == (1, 1234) and ds.duration == 1234 / 8000


def test_crops_are_deterministic_per_seed_epoch_and_index(folder):
    def clips_of(ds):
        return torch.stack([ds[i]["audio"] for i in range(len(ds))])

    kwargs = {"sample_rate": RATE, "duration": 0.25}
    a = clips_of(AudioFolder(folder, seed=7, **kwargs))
    assert torch.equal(a, clips_of(AudioFolder(folder, seed=7, **kwargs)))
    assert not torch.equal(a, clips_of(AudioFolder(folder, seed=8, **kwargs)))
    ds = AudioFolder(folder, seed=7, **kwargs)
    ds.set_epoch(1)
    assert not torch.equal(a, clips_of(ds))
    ds.set_epoch(0)
    assert torch.equal(clips_of(ds), a)
    # the crop is the window it says it is: the same samples of the whole (resampled) file
    whole, _ = read_audio(folder / "a.wav", sample_rate=RATE, channels=1)
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        start, duration = ds.window(0)
        first = round(start * RATE)
        assert duration == 0.25 and 0 <= first <= whole.shape[1] - RATE // 4
        assert torch.allclose(ds[0]["audio"], whole[:, first : first + RATE // 4], atol=1e-5)
        starts.add(first)
    assert len(starts) == 6  # a new place every epoch (24000 - 4000 places to choose from)
    # and each index draws from its own generator: neighbouring items are cropped at different places
    assert len({ds.window(i)[0] for i in range(len(ds))}) == len(ds)


def test_start_and_center_crops(folder):
    n = RATE // 4
    start = AudioFolder(folder, sample_rate=RATE, num_samples=n, crop="start")
    center = AudioFolder(folder, sample_rate=RATE, num_samples=n, crop="center")
    total = round(SECONDS * RATE)
    assert start.window(0) == (0.0, n / RATE)
    assert center.window(0) == ((total - n) // 2 / RATE, n / RATE)
    whole, _ = read_audio(folder / "a.wav", sample_rate=RATE, channels=1)
    mid = (total - n) // 2
    assert torch.allclose(center[0]["audio"], whole[:, mid : mid + n], atol=1e-5)


def test_random_crops_read_only_the_window(tmp_path, decoded):  # noqa: F811
    """A quarter second of a 20 s AAC file decodes the window and its pre-roll, not the file."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=20:sample_rate=48000",
        "-c:a",
        "aac",
        tmp_path / "long.m4a",
    )
    ds = AudioFolder(tmp_path, sample_rate=RATE, duration=0.25, default_caption="", seed=3)
    decoded.clear()
    item = ds[0]
    assert item["audio"].shape == (1, RATE // 4) and ds.window(0)[0] > 1.0
    assert 0 < sum(decoded) <= 48000  # at most a second of the twenty
    assert peak_hz(item["audio"], RATE) == pytest.approx(440, abs=5)


def test_short_files_are_padded_or_skipped(tmp_path, clips):
    root = build(tmp_path / "short", clips, {"a_short.wav": "short.wav", "b_tone.wav": "tone.wav"})
    padded = AudioFolder(root, sample_rate=RATE, duration=0.5, default_caption="")
    item = padded[0]
    assert Path(item["path"]).name == "a_short.wav" and item["audio"].shape == (1, RATE // 2)
    original, _ = read_audio(root / "a_short.wav")  # [1 3200]
    assert torch.equal(item["audio"][:, :3200], original) and torch.equal(
        item["audio"][:, 3200:], torch.zeros(1, RATE // 2 - 3200)
    )  # zeros after the end
    skipping = AudioFolder(root, sample_rate=RATE, duration=0.5, short="skip", default_caption="")
    with pytest.warns(RuntimeWarning, match=r"skipping .*a_short.wav: .*too short: 0.200 s, clips are 0.5 s"):
        item = skipping[0]
    assert Path(item["path"]).name == "b_tone.wav" and skipping.skipped == 1  # the next item instead
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known bad file is not read (or warned about) again
        assert torch.equal(skipping[0]["audio"], skipping[1]["audio"])
    # a clip of 0.2 s fits both files
    assert AudioFolder(root, sample_rate=RATE, duration=0.2, short="skip", default_caption="").scan() == {}


def test_resampling_and_channels(tmp_path, clips):
    root = build(tmp_path / "tones", clips, {"tone.wav": "tone.wav", "chirp.wav": "chirp.wav"})
    ds = AudioFolder(root, sample_rate=RATE, default_caption="")  # whole files, mono
    tone_item = ds[names(ds).index("tone.wav")]
    assert tone_item["audio"].shape == (1, RATE) and peak_hz(tone_item["audio"], RATE) == pytest.approx(
        440, abs=1.5
    )
    assert ds[names(ds).index("chirp.wav")]["audio"].shape == (1, round(SECONDS * RATE))
    stereo = AudioFolder(root, sample_rate=RATE, channels=2, default_caption="")
    audio = stereo[names(stereo).index("tone.wav")]["audio"]
    assert audio.shape == (2, RATE) and torch.equal(audio[0], audio[1])  # mono made stereo
    kept = AudioFolder(root, sample_rate=RATE, channels=None, default_caption="")
    assert kept[names(kept).index("chirp.wav")]["audio"].shape[0] == 2


BAD = {
    "bad/empty.wav": "empty.wav",
    "bad/random.wav": "random.wav",
    "bad/image.wav": "image.wav",  # wrong extension: a picture
    "bad/text.mp3": "text.mp3",
    "bad/truncated.wav": "truncated.wav",
    "bad/truncated.mp3": "truncated.mp3",
    "bad/truncated.webm": "truncated.webm",
    "bad/video.mp4": "video.mp4",
}


@pytest.fixture
def mixed(tmp_path, clips) -> Path:
    """Three good files and eight bad ones (zero bytes, random bytes, a picture, text, three cut files,
    a video without sound)."""
    good = {"good/a.wav": "chirp.wav", "good/b.flac": "chirp.flac", "good/c.m4a": "chirp.m4a"}
    return build(tmp_path / "mixed", clips, {**good, **BAD})


def test_bad_files_are_skipped_counted_and_warned_once(mixed):
    ds = AudioFolder(mixed, sample_rate=RATE, duration=1.2, crop="center", default_caption="x", seed=1)
    assert len(ds) == 11 and names(ds)[:8] == sorted(Path(p).name for p in BAD)
    with pytest.warns(RuntimeWarning) as record:
        items = [ds[i] for i in range(len(ds))]
    warned = sorted(Path(str(w.message).split("skipping ")[1].split(":")[0]).name for w in record)
    assert warned == sorted(Path(p).name for p in BAD)  # one warning per bad file
    assert ds.skipped == 8 and sorted(Path(p).name for p in ds.skipped_files) == warned
    reasons = {Path(p).name: r for p, r in ds.skipped_files.items()}
    assert "empty file (0 bytes)" in reasons["empty.wav"]
    assert "no audio stream" in reasons["image.wav"] and "no audio stream" in reasons["video.mp4"]
    assert "truncated" in reasons["truncated.wav"] and "truncated" in reasons["truncated.webm"]
    assert "truncated" in reasons["truncated.mp3"]  # the header promises 1.5 s; decoding finds less
    # every bad index gets the next good item: the first good one, a.wav, for all eight
    assert [Path(item["path"]).name for item in items] == ["a.wav"] * 9 + ["b.flac", "c.m4a"]
    assert all(item["audio"].shape == (1, round(1.2 * RATE)) for item in items)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = ds[3]
    assert torch.equal(again["audio"], items[3]["audio"])
    assert torch.equal(ds[0]["audio"], ds.load(8)["audio"])  # the substitute is item 8 itself


def test_scan_drops_what_the_headers_show(mixed):
    with pytest.warns(RuntimeWarning, match="skipping"):
        ds = AudioFolder(mixed, duration=0.5, default_caption="x", validate=True)
    # probe reads headers only: the cut mp3 and webm state their full length and stay until read
    assert names(ds) == ["truncated.mp3", "truncated.webm", "a.wav", "b.flac", "c.m4a"]
    assert ds.skipped == 6
    with pytest.warns(RuntimeWarning, match="truncated"):
        got = [Path(ds[i]["path"]).name for i in range(len(ds))]
    assert got == [
        "a.wav",
        "a.wav",
        "a.wav",
        "b.flac",
        "c.m4a",
    ]  # the cut files give way to the next good one
    assert ds.skipped == 8


def test_all_bad_raises(tmp_path, clips):
    root = build(tmp_path / "bad", clips, BAD)
    ds = AudioFolder(root, default_caption="x")
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="all 8 audio files are unreadable"):
        ds[2]


@pytest.mark.skipif(not ESPEAK, reason="espeak-ng is not installed")
def test_speech_file(tmp_path, clips):
    root = build(tmp_path / "speech", clips, {"hello.wav": "speech.wav"})
    (root / "hello.txt").write_text("a voice says hello there")
    ds = AudioFolder(root, sample_rate=RATE, duration=0.5, crop="center")
    item = ds[0]
    assert item["text"] == "a voice says hello there" and item["audio"].shape == (1, RATE // 2)
    assert item["audio"].abs().max() > 0.05  # the middle of the phrase is not silence


def test_dataloader_with_two_workers(mixed):
    ds = AudioFolder(mixed, sample_rate=RATE, duration=0.25, default_caption="a sound", seed=3)
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the workers warn about the bad files in their own processes
        batches = list(loader)
        expected = [ds[i] for i in range(len(ds))]
    assert [b["audio"].shape for b in batches] == [(4, 1, RATE // 4)] * 2 + [(3, 1, RATE // 4)]
    assert batches[0]["text"] == ["a sound"] * 4
    audio = torch.cat([b["audio"] for b in batches])
    assert torch.equal(audio, torch.stack([e["audio"] for e in expected]))  # the same crops in workers
    assert "skipped=" in repr(ds)


def test_shared_caption_code_is_the_video_one():
    """Both folder datasets stand on the one shared home of the caption conventions."""
    from mediadiff.utils.captions import CaptionedFolder
    from mediadiff.video.datasets import VideoFolder

    assert issubclass(AudioFolder, CaptionedFolder) and issubclass(VideoFolder, CaptionedFolder)
    assert (AudioFolder.data_key, VideoFolder.data_key) == ("audio", "video")
