"""Audio I/O on real files: speech from espeak-ng and numpy signals, converted by FFmpeg to every format
we read (wav, flac, ogg vorbis / opus, mp3, AAC in mp4 / m4a / mov, opus / vorbis in webm / mkv)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
import torch

from mediadiff.audio import io as aio
from mediadiff.audio.io import (
    AUDIO_READ_EXTENSIONS,
    AUDIO_WRITE_FORMATS,
    AudioError,
    AudioInfo,
    probe,
    read_audio,
    resample,
    write_audio,
)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
ESPEAK = shutil.which("espeak-ng")
SR = 44100
SECONDS = 1.5
SPEECH_TEXT = "The quick brown fox jumps over the lazy dog, then sleeps in the warm sun."

# name -> (ffmpeg output options, decoded sample rate (None: the source's), probe codec, min SNR in dB
# against the source); measured on the chirp and the speech: 23 to 37 dB (a read one sample off the
# right place drops below 18 dB)
FORMATS = {
    "flac": ("-c:a flac", None, "flac", 200.0),  # lossless: exact (checked separately)
    "ogg": ("-c:a libvorbis -q:a 5", None, "vorbis", 18.0),
    "opus": ("-c:a libopus -b:a 96k -ar 48000", 48000, "opus", 18.0),
    "mp3": ("-c:a libmp3lame -b:a 192k", None, "mp3", 18.0),
    "m4a": ("-c:a aac -b:a 160k", None, "aac", 18.0),
    "mp4": ("-c:a aac -b:a 160k", None, "aac", 18.0),
    "mov": ("-c:a aac -b:a 160k", None, "aac", 18.0),
    "webm": ("-c:a libopus -b:a 96k", 48000, "opus", 18.0),
    "mkv": ("-c:a libopus -b:a 96k", 48000, "opus", 18.0),
    "vorbis.mkv": ("-c:a libvorbis -q:a 5", None, "vorbis", 18.0),
}
SOUNDFILE_READS = {"wav", "flac", "ogg", "opus", "mp3"}  # libsndfile reads these; FFmpeg the rest
MATROSKA = {"webm", "mkv", "vorbis.mkv"}  # millisecond timestamps: windows placed within 0.5 ms


def ffmpeg(*args: str | Path) -> None:
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", *map(str, args)], check=True)


def chirp(sample_rate: int = SR, seconds: float = SECONDS) -> np.ndarray:
    """Stereo float32 ``[2 t]``: a rising chirp (left) and a falling one under a tremolo (right); neither
    repeats, so a window read from the wrong place does not match."""
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    left = 0.5 * np.sin(2 * np.pi * (200 * t + 900 * t**2)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    right = 0.4 * np.sin(2 * np.pi * (3000 * t - 800 * t**2)) * (0.7 + 0.3 * np.cos(2 * np.pi * 5 * t))
    return np.stack([left, right]).astype(np.float32)


def tone(freq: float, sample_rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    """Mono float32 ``[1 t]`` sine."""
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t))[None].astype(np.float32)


def peak_hz(x: torch.Tensor | np.ndarray, sample_rate: int) -> float:
    """Frequency of the strongest FFT bin of a ``[c t]`` signal's first channel."""
    x = np.asarray(x)[0]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sample_rate)[spectrum.argmax()])


def snr_db(x: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10((ref**2).sum() / max(((x - ref) ** 2).sum(), 1e-30)))


def make_sources(folder: Path) -> dict[str, tuple[Path, int]]:
    """16-bit PCM wav sources (written by libsndfile, not by write_audio): the stereo chirp and, when
    espeak-ng is installed, speech (mono, 22.05 kHz)."""
    sources = {}
    path = folder / "chirp.wav"
    sf.write(path, chirp().T, SR, subtype="PCM_16")
    sources["chirp"] = (path, SR)
    if ESPEAK:
        path = folder / "speech.wav"
        subprocess.run([ESPEAK, "-w", str(path), SPEECH_TEXT], check=True, capture_output=True)
        sources["speech"] = (path, sf.info(path).samplerate)
    return sources


def make_formats(source: Path, folder: Path) -> dict[str, Path]:
    """``source`` in every format of :data:`FORMATS` (``name -> path``), plus ``"wav"`` itself."""
    out = {"wav": source}
    for name, (options, _, _, _) in FORMATS.items():
        path = folder / f"{source.stem}.{name}"
        ffmpeg("-i", source, *options.split(), path)
        out[name] = path
    return out


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    return make_sources(tmp_path_factory.mktemp("audio_sources"))


@pytest.fixture(scope="session")
def encoded(sources, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """``source name -> format name -> file``."""
    folder = tmp_path_factory.mktemp("audio_encoded")
    return {name: make_formats(path, folder) for name, (path, _) in sources.items()}


def source_names() -> list:
    speech = pytest.param("speech", marks=pytest.mark.skipif(not ESPEAK, reason="espeak-ng is not installed"))
    return ["chirp", speech]


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """Sizes of the frames FFmpeg decodes from now on (every decoded frame goes through _frame_array)."""
    log, original = [], aio._frame_array

    def counting(frame):
        x = original(frame)
        log.append(x.shape[1])
        return x

    monkeypatch.setattr(aio, "_frame_array", counting)
    return log


# --- reading every format -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", *FORMATS])
@pytest.mark.parametrize("source", source_names())
def test_read_every_format(sources, encoded, source, fmt):
    path, rate = sources[source]
    ref, ref_rate = read_audio(path)
    assert ref_rate == rate and ref.dtype == torch.float32
    x, sr = read_audio(encoded[source][fmt])
    _, expect_rate, _, min_snr = FORMATS.get(fmt, (None, None, None, 200.0))
    assert sr == (expect_rate or rate)
    if sr != rate:
        ref = resample(ref, rate, sr)  # [c t * sr / rate]
    assert x.shape == ref.shape  # encoder delay and padding removed: the original length, to the sample
    assert x.abs().max() <= 1
    if fmt in ("wav", "flac"):
        assert torch.equal(x, ref)  # lossless
    else:
        assert snr_db(x, ref) > min_snr, snr_db(x, ref)


def test_read_the_audio_track_of_a_video(sources, tmp_path):
    path, _ = sources["chirp"]
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=64x48:rate=10:duration={SECONDS}", "-i", path,
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", clip)  # fmt: skip
    ref, _ = read_audio(path)
    x, sr = read_audio(clip)
    assert sr == SR and x.shape == ref.shape and snr_db(x, ref) > 18
    info = probe(clip)
    assert (info.codec, info.channels, info.sample_rate) == ("aac", 2, SR)


@pytest.mark.parametrize("fmt", ["wav", *FORMATS])
def test_probe_reads_metadata(sources, encoded, fmt):
    _, rate = sources["chirp"]
    info = probe(encoded["chirp"][fmt])
    _, expect_rate, codec, _ = FORMATS.get(fmt, (None, None, "pcm_16", None))
    assert isinstance(info, AudioInfo) and info.path == str(encoded["chirp"][fmt])
    assert (info.codec, info.channels, info.sample_rate) == (codec, 2, expect_rate or rate)
    assert info.exact == (fmt in SOUNDFILE_READS)
    true_frames = round(SECONDS * info.sample_rate)
    if info.exact:
        assert info.num_frames == true_frames
    else:  # from the container's duration: within 10 ms
        assert abs(info.num_frames - true_frames) <= 0.01 * info.sample_rate, info
    assert info.duration == pytest.approx(info.num_frames / info.sample_rate)
    assert info.shape == (2, info.num_frames)
    assert {"wav": "wav", "flac": "flac", "mp3": "mp3", "mp4": "mov,mp4,m4a,3gp,3g2,mj2"}.get(
        fmt, info.format
    ) == info.format


def test_probe_reads_headers_only(sources, tmp_path, decoded):
    """A file whose audio data is garbage after intact headers probes fine and fails to read."""
    path, _ = sources["chirp"]
    good = tmp_path / "good.flac"
    ffmpeg("-i", path, "-c:a", "flac", good)
    data = bytearray(good.read_bytes())
    data[4096:] = np.random.default_rng(0).integers(0, 256, len(data) - 4096, dtype=np.uint8).tobytes()
    bad = tmp_path / "garbled.flac"
    bad.write_bytes(bytes(data))
    assert probe(bad) == AudioInfo(str(bad), "flac", "flac", SR, 2, round(SR * SECONDS), SECONDS, True)
    with pytest.raises(AudioError, match=r"garbled\.flac: corrupt FLAC data"):
        read_audio(bad)
    # an mp4 with its index first and half its samples gone: probe states the length, reading finds out
    cut = tmp_path / "cut.mp4"
    ffmpeg("-i", path, "-c:a", "aac", "-movflags", "+faststart", cut)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    decoded.clear()
    assert probe(cut).num_frames == round(SR * SECONDS) and decoded == []  # nothing decoded
    with pytest.raises(
        AudioError,
        match=r"cut\.mp4: (truncated: the file states 1\.500 s|corrupt audio, decoding failed after 0\.)",
    ):
        read_audio(cut)


# --- windows --------------------------------------------------------------------------------------

WINDOWS = [(0.0, 0.4), (0.3, 0.25), (0.61, 0.5), (1.0, 0.5), (0.9, None)]


@pytest.mark.parametrize("fmt", ["wav", *FORMATS])
def test_window_equals_the_same_samples_of_the_whole_file(encoded, fmt):
    path = encoded["chirp"][fmt]
    whole, sr = read_audio(path)
    for start, duration in WINDOWS:
        window, rate = read_audio(path, start=start, duration=duration)
        assert rate == sr
        first = round(start * sr)
        stop = whole.shape[1] if duration is None else round((start + duration) * sr)
        expected = whole[:, first:stop]
        if fmt in ("wav", "flac"):
            assert torch.equal(window, expected), (start, duration)
        elif fmt not in MATROSKA:  # placed to the sample (one sample off would be ~10 dB); AAC's noise
            assert window.shape == expected.shape  # substitution draws other noise after a seek
            assert snr_db(window, expected) > 45, (start, duration, snr_db(window, expected))
        else:  # millisecond timestamps: the window sits within 0.5 ms of its place, and ends with the audio
            half_ms = round(0.0005 * sr) + 1
            assert abs(window.shape[1] - expected.shape[1]) <= half_ms
            errors = {
                lag: float(
                    (window[:, 200:2000] - whole[:, first + lag + 200 : first + lag + 2000]).abs().max()
                )
                for lag in range(-half_ms, half_ms + 1)
            }
            assert min(errors.values()) < 2e-3, (start, duration)


@pytest.mark.parametrize("fmt", ["mp4", "webm", "mp3"])
def test_window_is_read_by_seeking(tmp_path, decoded, fmt):
    """A 0.5 s window at the end of a 20 s file decodes ~1 s of it (the pre-roll), not 20 s."""
    path = tmp_path / f"long.{fmt}"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=20:sample_rate=48000",
        *FORMATS[fmt][0].split(),
        path,
    )
    window, sr = read_audio(path, start=19.2, duration=0.5)
    assert window.shape == (1, round(0.5 * sr))
    if fmt == "mp3":  # libsndfile seeks in mp3 itself: FFmpeg decodes nothing
        assert decoded == []
        return
    assert 0.5 * sr <= sum(decoded) <= 1.0 * sr
    assert peak_hz(window, sr) == pytest.approx(440, abs=3)


def test_window_arguments(encoded):
    path = encoded["chirp"]["wav"]
    for kwargs, message in [
        ({"start": -0.1}, r"start must be >= 0"),
        ({"duration": 0}, r"duration must be > 0"),
        ({"start": 1.5}, r"start=1.5 s is at or past the end of .*chirp\.wav \(1\.5 s\)"),
        ({"start": 1.2, "duration": 0.5}, r"start=1.2 s \+ duration=0.5 s runs past the end of .*chirp\.wav"),
        ({"sample_rate": 0}, r"sample_rate must be a positive int"),
        ({"channels": 0}, r"channels must be a positive int"),
    ]:
        with pytest.raises(ValueError, match=message) as info:
            read_audio(path, **kwargs)
        assert type(info.value) is ValueError  # an argument error, not a bad file
    with pytest.raises(ValueError, match=r"runs past the end of .*chirp\.mp4"):
        read_audio(encoded["chirp"]["mp4"], start=1.0, duration=1.0)


# --- resampling and channels ----------------------------------------------------------------------


@pytest.mark.parametrize(("orig", "new"), [(44100, 16000), (16000, 48000), (48000, 22050)])
def test_resampled_tone_keeps_its_pitch(tmp_path, orig, new):
    path = write_audio(tmp_path / "tone.flac", tone(440, orig), orig)
    x, sr = read_audio(path, sample_rate=new)
    assert sr == new and x.shape == (1, new)
    assert peak_hz(x, new) == pytest.approx(440, abs=1.5)
    assert peak_hz(
        read_audio(write_audio(tmp_path / "t.wav", tone(3000, orig), orig))[0], orig
    ) == pytest.approx(3000, abs=1.5)
    assert x.abs().max() == pytest.approx(0.5, abs=0.02)  # the amplitude is kept


def test_resample_function():
    x = torch.from_numpy(tone(1000, 32000))  # [1 32000]
    assert resample(x, 32000, 32000) is x
    y = resample(x, 32000, 8000)  # [1 8000]
    assert y.shape == (1, 8000) and peak_hz(y, 8000) == pytest.approx(1000, abs=1.5)
    batch = torch.stack([x, x])  # [2 1 32000]
    assert resample(batch, 32000, 16000).shape == (2, 1, 16000)
    with pytest.raises(ValueError, match="new_sr must be a positive int"):
        resample(x, 32000, 0)


@pytest.mark.parametrize("fmt", ["wav", "mp4"])
def test_resampled_window_matches_the_resampled_file(encoded, fmt):
    path = encoded["chirp"][fmt]
    whole, _ = read_audio(path, sample_rate=16000)
    for start, duration in [(0.3, 0.25), (0.0, 0.5), (1.0, 0.5), (0.7, None)]:
        window, sr = read_audio(path, sample_rate=16000, start=start, duration=duration)
        first = round(start * 16000)
        expected = whole[:, first : first + window.shape[1]]
        assert sr == 16000 and window.shape == expected.shape
        if duration is not None:
            assert window.shape[1] == round((start + duration) * 16000) - first
        if fmt == "wav":
            assert (window - expected).abs().max() < 1e-5, (start, duration)
        else:
            assert snr_db(window, expected) > 45, (start, duration)


def test_channels(tmp_path, encoded):
    stereo, _ = read_audio(encoded["chirp"]["wav"])
    mono, _ = read_audio(encoded["chirp"]["wav"], channels=1)
    assert mono.shape == (1, stereo.shape[1]) and torch.allclose(mono, stereo.mean(0, keepdim=True))
    assert torch.equal(read_audio(encoded["chirp"]["wav"], channels=2)[0], stereo)
    one = write_audio(tmp_path / "one.wav", tone(440, 16000), 16000)
    dup, _ = read_audio(one, channels=2)
    assert dup.shape == (2, 16000) and torch.equal(dup[0], dup[1])
    assert torch.equal(dup[:1], read_audio(one)[0])
    # six channels, through libsndfile (flac) and FFmpeg (AAC 5.1 in mp4)
    six = np.stack([tone(220 * (k + 1), 48000, amplitude=0.15)[0] for k in range(6)])  # [6 48000]
    for path in (write_audio(tmp_path / "six.flac", six, 48000), tmp_path / "six.mp4"):
        if path.suffix == ".mp4":
            ffmpeg("-i", tmp_path / "six.flac", "-c:a", "aac", "-b:a", "384k", path)
        x, _ = read_audio(path)
        assert x.shape == (6, 48000)
        if path.suffix == ".flac":
            assert np.abs(x.numpy() - six).max() < 1e-4
        assert probe(path).channels == 6
        assert read_audio(path, channels=1)[0].shape == (1, 48000)
        with pytest.raises(AudioError, match=rf"{path.name}: has 6 channels; channels=2"):
            read_audio(path, channels=2)


# --- writing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "min_snr"), [(".wav", 75.0), (".flac", 75.0), (".ogg", 20.0), (".mp3", 20.0)]
)
@pytest.mark.parametrize("channels", [1, 2])
def test_write_read_round_trip(tmp_path, ext, min_snr, channels):
    x = chirp(22050, 1.0)[:channels]  # [c 22050]
    path = write_audio(tmp_path / f"out{ext}", torch.from_numpy(x), 22050)
    y, sr = read_audio(path)
    assert sr == 22050 and y.shape == x.shape  # mp3 is gapless: its LAME tag records the encoder delay
    assert snr_db(y, x) > min_snr, snr_db(y, x)
    info = probe(path)
    assert (info.channels, info.sample_rate, info.num_frames) == (channels, 22050, 22050)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{ext}"]  # no temporary file left


def test_write_inputs_and_options(tmp_path):
    x = tone(440, 16000)[0]  # [t] numpy: mono
    y, _ = read_audio(write_audio(tmp_path / "a.wav", x, 16000))
    assert y.shape == (1, 16000) and np.abs(y.numpy()[0] - x).max() <= 1 / 2**15
    y24, _ = read_audio(write_audio(tmp_path / "b.wav", x, 16000, bits=24))
    assert np.abs(y24.numpy()[0] - x).max() <= 1 / 2**23
    y32, _ = read_audio(write_audio(tmp_path / "c.wav", x, 16000, bits=32))
    assert np.array_equal(y32.numpy()[0], x)  # float wav: exact
    assert probe(tmp_path / "c.wav").codec == "float"
    loud = np.array([[-3.0, -1.0, 0.5, 1.0, 2.0]], np.float32)
    y, _ = read_audio(write_audio(tmp_path / "loud.flac", loud, 8000))
    assert np.allclose(y.numpy(), np.clip(loud, -1, 1), atol=1 / 2**15)  # clipped, not wrapped around
    assert probe(write_audio(tmp_path / "raw.bin", x, 16000, format="flac")).format == "flac"
    small = write_audio(tmp_path / "small.ogg", chirp(22050, 1.0), 22050, quality=0.1)
    big = write_audio(tmp_path / "big.ogg", chirp(22050, 1.0), 22050, quality=0.9)
    assert small.stat().st_size < big.stat().st_size
    low = write_audio(tmp_path / "low.mp3", chirp(22050, 1.0), 22050, bitrate=32_000)
    assert (
        low.stat().st_size < 0.5 * write_audio(tmp_path / "high.mp3", chirp(22050, 1.0), 22050).stat().st_size
    )


def test_write_errors(tmp_path):
    x = tone(440, 16000)
    for kwargs, message in [
        (
            {"path": tmp_path / "a.aiff"},
            r"a\.aiff: cannot write \.aiff; supported: \.wav, \.flac, \.ogg, \.mp3",
        ),
        ({"path": tmp_path / "noext"}, "cannot write files without an extension"),
        ({"format": "opus"}, r"cannot write format='opus'"),
        ({"waveform": x.astype(np.int16)}, r"expects a float waveform \[c t\] or \[t\], got int16"),
        ({"waveform": x.T}, r"16000 channels \(a \[t c\] array\?\)"),
        ({"waveform": np.full((1, 10), np.nan, np.float32)}, "NaN or infinite"),
        ({"sample_rate": 0}, "sample_rate must be a positive int"),
        ({"bits": 8}, "bits must be 16 or 24"),
        ({"path": tmp_path / "a.flac", "bits": 32}, "bits must be 16 or 24"),
        (
            {"path": tmp_path / "a.mp3", "waveform": np.zeros((3, 100), np.float32)},
            "MP3 holds 1 or 2 channels",
        ),
        ({"path": tmp_path / "a.mp3", "sample_rate": 96000}, r"MP3 takes sample rates .* got 96000"),
    ]:
        args = {"path": tmp_path / "a.wav", "waveform": x, "sample_rate": 16000, **kwargs}
        path, waveform, sample_rate = args.pop("path"), args.pop("waveform"), args.pop("sample_rate")
        with pytest.raises(ValueError, match=message):
            write_audio(path, waveform, sample_rate, **args)
    assert list(tmp_path.iterdir()) == []
    assert set(AUDIO_WRITE_FORMATS) == {".wav", ".flac", ".ogg", ".mp3"}


@pytest.mark.parametrize(("ext", "writer"), [(".flac", "_write_sf"), (".mp3", "_write_mp3")])
def test_write_is_atomic(tmp_path, monkeypatch, ext, writer):
    path = write_audio(tmp_path / f"a{ext}", tone(440, 16000), 16000)
    before = path.read_bytes()

    def broken(tmp, *args):
        tmp.write_bytes(b"partial")
        raise RuntimeError("encoder died")

    monkeypatch.setattr(aio, writer, broken)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_audio(path, tone(880, 16000), 16000)
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == [f"a{ext}"]  # and the partial file is gone
    monkeypatch.undo()
    write_audio(tmp_path / "sub" / f"b{ext}", tone(440, 16000), 16000)  # missing folders are created
    assert probe(tmp_path / "sub" / f"b{ext}").num_frames == 16000


# --- bad files ------------------------------------------------------------------------------------


def make_bad_files(folder: Path, sources: dict[str, tuple[Path, int]]) -> dict[str, Path]:
    """Files that are not readable audio, each named for what is wrong with it."""
    folder.mkdir(parents=True, exist_ok=True)
    src, _ = sources["chirp"]
    bad = {}

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        bad[name] = folder / name

    put("empty.wav", b"")
    put("random.wav", np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    put("text.mp3", b"not audio at all\n" * 200)
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=32x32:rate=5:duration=1", "-frames:v", "1", folder / "image.png"
    )
    put("image.wav", (folder / "image.png").read_bytes())  # wrong extension: a picture
    (folder / "image.png").unlink()
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=32x32:rate=5:duration=1", "-c:v", "libx264", folder / "video.mp4"
    )
    bad["video.mp4"] = folder / "video.mp4"  # a video without sound
    for fmt, options in [("wav", ""), ("flac", "-c:a flac"), ("ogg", "-c:a libvorbis"), ("mp3", "-c:a libmp3lame"),
                         ("mp4", "-c:a aac"), ("webm", "-c:a libopus")]:  # fmt: skip
        whole = folder / f"whole.{fmt}"
        ffmpeg("-i", src, *options.split(), whole)
        put(f"truncated.{fmt}", whole.read_bytes()[: whole.stat().st_size // 2])
        whole.unlink()
    return bad


@pytest.fixture(scope="session")
def bad_files(sources, tmp_path_factory) -> dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("bad_audio"), sources)


BAD_READS = {
    "empty.wav": r"empty\.wav: empty file \(0 bytes\)",
    "random.wav": r"random\.wav: not a readable audio file",
    "text.mp3": r"text\.mp3: not a readable audio file",
    "image.wav": r"image\.wav: no audio stream \(streams found: video\)",
    "video.mp4": r"video\.mp4: no audio stream \(streams found: video\)",
    "truncated.wav": r"truncated\.wav: truncated WAV: the header promises 264600 bytes",
    "truncated.flac": r"truncated\.flac: corrupt FLAC data",
    "truncated.ogg": r"truncated\.ogg: truncated OGG file",
    "truncated.mp3": r"truncated\.mp3: truncated: the header states 66150 samples",
    "truncated.mp4": r"truncated\.mp4: not a readable audio file",  # the index (moov) sits at the end
    "truncated.webm": r"truncated\.webm: truncated: the file states 1\.5\d+ s of audio, decoding ended at 0\.",
}


@pytest.mark.parametrize("name", sorted(BAD_READS))
def test_bad_files_raise_audio_errors_that_name_them(bad_files, name):
    with pytest.raises(AudioError, match=BAD_READS[name]):
        read_audio(bad_files[name])
    if name.startswith("truncated.") and name not in ("truncated.wav", "truncated.ogg", "truncated.mp4"):
        probe(bad_files[name])  # only decoding finds these out: the headers are intact
    else:
        with pytest.raises(AudioError, match=name.replace(".", r"\.")):
            probe(bad_files[name])


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: no such audio file"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match=r"nope\.flac: no such audio file"):
        probe(tmp_path / "nope.flac")
    with pytest.raises(AudioError, match="is a directory"):
        read_audio(tmp_path)
    assert issubclass(AudioError, ValueError)


def test_content_decides_not_the_extension(encoded, tmp_path):
    """A flac named .mp3 and an mp4 named .wav read as what they are."""
    named = tmp_path / "really_flac.mp3"
    shutil.copy(encoded["chirp"]["flac"], named)
    assert torch.equal(read_audio(named)[0], read_audio(encoded["chirp"]["wav"])[0])
    named = tmp_path / "really_mp4.wav"
    shutil.copy(encoded["chirp"]["mp4"], named)
    assert probe(named).codec == "aac" and read_audio(named)[0].shape == (2, round(SR * SECONDS))


def test_read_extensions_cover_the_formats():
    assert {f".{name.split('.')[-1]}" for name in FORMATS} | {".wav"} <= AUDIO_READ_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_READ_EXTENSIONS)
