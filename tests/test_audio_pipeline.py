"""AudioPipeline on tiny random parts: save/load round trip, seeds, batching, lengths, files, errors; the
mel autoencoder; the shared CLI's ``generate audio`` on a tiny folder."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from mediadiff.audio import (
    TONES_VOCODER_DIR,
    DiT1D,
    MelAutoencoder,
    UNet1D,
    UNet2D,
    Vocoder,
    WaveformVAE,
    load_autoencoder,
    read_audio,
)
from mediadiff.cli import main as cli_main
from mediadiff.diffusion import FlowSchedule, VPSchedule
from mediadiff.pipelines import AudioOutput, AudioPipeline
from mediadiff.text import load_text_encoder
from tests.test_pipeline import randomize
from tests.test_text import tiny_folder

pytestmark = pytest.mark.usefixtures("one_thread")

DIT_DEFAULTS = {"num_samples": 2048, "steps": 3, "guidance_scale": 3.0, "sample_rate": 8000}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("text"), "bert")


@pytest.fixture(scope="module")
def dit_pipe(bert_dir):
    """DiT1D (patch 2) on a tiny waveform VAE (16x ratio: 2048 samples -> 4x128 latents)."""
    text = load_text_encoder(bert_dir)
    mel = {"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "n_mels": 32}
    vae = randomize(
        WaveformVAE(latent_channels=4, patch=4, strides=(4,), channels=(8, 8), mel=mel), 1, std=0.3
    ).eval()
    dit = randomize(DiT1D(in_channels=4, patch=(2,), width=32, depth=1, heads=2, context_dim=16), 2).eval()
    pipe = AudioPipeline(dit, vae, text, FlowSchedule(), defaults=DIT_DEFAULTS, info={"recipe": "test"})
    pipe.autocast = False  # exact comparisons below
    return pipe


@pytest.fixture(scope="module")
def unet_pipe(bert_dir):
    """UNet1D on the same kind of VAE, v prediction on a VP schedule, 16 kHz."""
    text = load_text_encoder(bert_dir)
    vae = randomize(WaveformVAE(latent_channels=4, patch=4, strides=(4,), channels=(8, 8)), 4, std=0.3).eval()
    unet = randomize(
        UNet1D.from_preset("tiny", in_channels=4, patch=1, context_dim=16, head_dim=8), 5, std=0.1
    ).eval()
    pipe = AudioPipeline(
        unet, vae, text, VPSchedule("cosine"), prediction="v", defaults={"num_samples": 1024, "steps": 2}
    )
    pipe.autocast = False
    return pipe


def test_save_load_round_trip_is_bit_identical(dit_pipe, tmp_path):
    out = dit_pipe("a sine tone at C4", seed=5)
    assert isinstance(out, AudioOutput) and out.audio.dtype == np.float32 and out.audio.shape == (1, 1, 2048)
    assert out.sample_rate == 8000 and out.seeds == [5] and out.prompts == ["a sine tone at C4"]
    assert out.audio.std() > 1e-3 and np.abs(out.audio).max() <= 1  # a signal, in range

    folder = dit_pipe.save_pretrained(tmp_path / "pipe")
    spec = json.loads((folder / "pipeline.json").read_text())
    assert spec["type"] == "AudioPipeline" and spec["defaults"]["num_samples"] == 2048
    assert spec["defaults"]["sample_rate"] == 8000 and spec["info"] == {"recipe": "test"}
    assert json.loads((folder / "autoencoder/config.json").read_text())["type"] == "WaveformVAE"
    loaded = AudioPipeline.from_pretrained(folder)
    assert isinstance(loaded.backbone, DiT1D) and isinstance(loaded.autoencoder, WaveformVAE)
    loaded.autocast = False
    np.testing.assert_array_equal(loaded("a sine tone at C4", seed=5).audio, out.audio)


def assert_same_clip(a: np.ndarray, b: np.ndarray) -> None:
    """Bit-identical: on a CPU each item runs alone through the backbone and the autoencoder (``micro_batch``)."""
    np.testing.assert_array_equal(a, b)


def test_decode_chunk_decodes_overlapping_windows_equal_to_one_pass(dit_pipe, monkeypatch):
    """decode_chunk=N: the waveform VAE decodes N latent frames per window (with its receptive field as overlap),
    and the clip is the one-pass decode's up to float rounding."""
    windows = []
    vae_decode = dit_pipe.autoencoder._decode
    monkeypatch.setattr(
        dit_pipe.autoencoder, "_decode", lambda z, *a: windows.append(z.shape[-1]) or vae_decode(z, *a)
    )
    whole = dit_pipe("a sine tone at C4", seed=5).audio
    assert windows == [128]
    try:
        for chunk, count in ((16, 8), (50, 3)):  # 128 latent frames
            windows.clear()
            dit_pipe.decode_chunk = chunk
            chunked = dit_pipe("a sine tone at C4", seed=5).audio
            assert len(windows) == count  # one decode per window, each with its overlap
            assert chunked.shape == whole.shape
            np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)
    finally:
        dit_pipe.decode_chunk = None


@pytest.mark.parametrize("which", ["dit", "unet"])
def test_batch_equals_single_for_the_same_seeds(which, dit_pipe, unet_pipe):
    pipe = dit_pipe if which == "dit" else unet_pipe
    prompts = ["a sine tone", "a falling square wave from E4"]
    batch = pipe(prompts, num_clips=2, seed=10)
    assert batch.audio.shape[0] == 4 and batch.seeds == [10, 11, 12, 13]
    assert batch.prompts == [prompts[0], prompts[0], prompts[1], prompts[1]]
    for i in range(4):
        assert_same_clip(batch.audio[i], pipe(batch.prompts[i], seed=10 + i).audio[0])
        if i:  # different seeds give different clips
            assert np.abs(batch.audio[i] - batch.audio[i - 1]).mean() > 1e-3
    neg = pipe(prompts, negative_prompt="noise", seed=3)
    assert_same_clip(neg.audio[1], pipe(prompts[1], negative_prompt="noise", seed=4).audio[0])
    assert not np.array_equal(neg.audio[0], pipe(prompts[0], seed=3).audio[0])


def test_seeds_reproduce_and_differ(dit_pipe):
    a = dit_pipe("a sine tone", seed=7)
    np.testing.assert_array_equal(a.audio, dit_pipe("a sine tone", seed=7).audio)
    assert not np.array_equal(a.audio, dit_pipe("a sine tone", seed=8).audio)
    assert not np.array_equal(a.audio, dit_pipe("a square wave", seed=7).audio)  # the prompt matters
    drawn = dit_pipe("a sine tone")
    assert len(drawn.seeds) == 1 and drawn.seeds[0] >= 0
    np.testing.assert_array_equal(drawn.audio, dit_pipe("a sine tone", seed=drawn.seeds[0]).audio)


def test_any_length_rounds_the_latent_up_and_cuts_the_audio(dit_pipe):
    # 16 samples per latent frame and patch 2: lengths go to 32-sample multiples, then back
    for seconds, samples, frames in ((0.1, 800, 50), (0.5, 4000, 250), (1 / 8000, 1, 2)):
        assert dit_pipe.latent_shape(dit_pipe.resolve(seconds=seconds)) == (4, frames)
        out = dit_pipe("a tone", seed=0, seconds=seconds)
        assert out.audio.shape == (1, 1, samples) and out.seconds == pytest.approx(samples / 8000)
    assert dit_pipe("a tone", seed=0, num_samples=100).audio.shape == (1, 1, 100)
    assert dit_pipe.describe(dit_pipe.resolve(seconds=0.5)) == "0.50 s at 8000 Hz"


def test_save_writes_every_format(dit_pipe, tmp_path):
    out = dit_pipe(["a tone", "a saw"], seed=0)
    paths = out.save(tmp_path / "clip.wav")
    assert [p.name for p in paths] == ["clip-0.wav", "clip-1.wav"]
    data, rate = sf.read(paths[1], dtype="float32")
    assert rate == 8000 and data.shape == (2048,)
    np.testing.assert_allclose(data, out.audio[1, 0], atol=1 / 32767 + 1e-6)  # 16-bit PCM of the clip
    for ext in (".flac", ".ogg", ".mp3"):
        (single,) = dit_pipe("a tone", seed=0).save(tmp_path / f"one{ext}")
        audio, rate = read_audio(single)
        assert (
            rate == 8000
            and audio.shape[0] == 1
            and abs(audio.shape[1] - 2048) <= (1152 if ext == ".mp3" else 0)
        )
    (png,) = out.save(tmp_path / "spec.png")
    import imageio.v3 as iio

    picture = iio.imread(png)
    assert picture.ndim == 3 and picture.shape[0] > 200 and picture.std() > 10  # two panels, not blank
    with pytest.raises(ValueError, match=r"cannot write \.mp4; supported: \.wav"):
        out.save(tmp_path / "clip.mp4")
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []  # nothing half-written


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seconds": 0}, "seconds must be a positive number"),
        ({"seconds": float("nan")}, "seconds must be a positive number"),
        ({"num_samples": -3}, "num_samples must be a positive integer"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"sampler": "nope"}, "unknown sampler"),
        ({"num_clips": 0}, "num_clips must be a positive integer"),
        ({"guidance_scale": -1.0}, "guidance_scale must be a finite number >= 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(dit_pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        dit_pipe("a tone", seed=0, **kwargs)


def test_construction_checks_the_sample_rate(dit_pipe):
    with pytest.raises(ValueError, match="is 16000 but the autoencoder works at 8000 Hz"):
        AudioPipeline(
            dit_pipe.backbone, dit_pipe.autoencoder, dit_pipe.text_encoder, FlowSchedule(),
            defaults={"sample_rate": 16000},
        )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="neither a shipped model"):
        AudioPipeline.from_pretrained("no-such-model")


def test_mel_autoencoder_round_trips_through_the_shipped_vocoder(tmp_path):
    from mediadiff.audio import Tones
    from mediadiff.audio.detect import read_tone

    vocoder = Vocoder.from_pretrained(TONES_VOCODER_DIR)
    mel = MelAutoencoder.from_vocoder(vocoder).eval().requires_grad_(False)
    item = Tones(length=1, seed=3)[0]
    z = mel.encode(item["audio"][None])  # [1 1 128 64]
    assert z.shape == (1, 1, 128, 64) and mel.latent_shape((1, 1, 16384)) == (1, 1, 128, 64)
    with torch.no_grad():
        audio = mel.decode(z)
        torch.testing.assert_close(audio, vocoder(vocoder.mel_of(item["audio"][None])).clamp(-1, 1))
    assert abs(read_tone(audio[0]).midi - item["midi"]) < 0.5  # the note survives
    mel.set_latent_stats(torch.tensor([0.3]), torch.tensor([2.0]))
    torch.testing.assert_close(mel.encode(item["audio"][None]), (z - 0.3) * 2.0)
    mel.save_pretrained(tmp_path / "mel")
    loaded = load_autoencoder(tmp_path / "mel")
    assert isinstance(loaded, MelAutoencoder) and loaded.config.latent_scale == [2.0]
    torch.testing.assert_close(loaded.encode(item["audio"][None]), mel.encode(item["audio"][None]))
    with pytest.raises(ValueError, match="multiple of the mel hop"):
        mel.encode(torch.zeros(1, 1, 1000))
    gl = MelAutoencoder(renderer="griffin_lim")
    assert gl.vocoder is None and gl.decode(z).shape == (1, 1, 16384)
    with pytest.raises(ValueError, match="renderer='vocoder' needs a vocoder config"):
        MelAutoencoder(renderer="vocoder")


def test_mel_pipeline_samples_any_length(bert_dir):
    text = load_text_encoder(bert_dir)
    mel = MelAutoencoder(renderer="griffin_lim", griffin_lim_iterations=2)
    unet = randomize(UNet2D.from_preset("tiny", context_dim=16), 3, std=0.1).eval()
    pipe = AudioPipeline(unet, mel, text, FlowSchedule(), defaults={"num_samples": 4096, "steps": 2})
    pipe.autocast = False
    assert pipe.latent_shape(pipe.resolve()) == (1, 128, 16)
    assert pipe.latent_shape(pipe.resolve(seconds=0.3)) == (1, 128, 20)  # 4800 -> 19 frames -> 20 (x2)
    assert pipe("a tone", seed=0, seconds=0.3).audio.shape == (1, 1, 4800)


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def model_dir(dit_pipe, tmp_path_factory):
    return dit_pipe.save_pretrained(tmp_path_factory.mktemp("audio") / "pipe")


def run(capsys, *argv):
    code = cli_main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_audio_writes_files(model_dir, tmp_path, capsys):
    out = tmp_path / "tone.wav"
    code, stdout, err = run(
        capsys, "generate", "audio", "a sine tone", "-o", str(out), "--model", str(model_dir),
        "--seed", "3", "--seconds", "0.2", "--steps", "2", "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, err
    data, rate = sf.read(out, dtype="float32")
    assert rate == 8000 and data.shape == (1600,)
    assert f"wrote {out}  (seed 3, 0.20 s at 8000 Hz, dpmpp_2m 2 steps, cfg 3)" in stdout
    pipe = AudioPipeline.from_pretrained(model_dir)
    pipe.autocast = False
    expected = pipe("a sine tone", seed=3, seconds=0.2, steps=2).audio[0, 0]
    np.testing.assert_allclose(data, expected, atol=2 / 32767)  # the file is the pipeline's clip
    code, stdout, err = run(
        capsys, "generate", "audio", "a tone", "-o", str(tmp_path / "many.flac"), "--model", str(model_dir),
        "--num", "2", "--seed", "0", "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("many-*.flac")) == ["many-0.flac", "many-1.flac"]
    code, stdout, err = run(
        capsys, "generate", "audio", "a tone", "-o", str(tmp_path / "s.png"), "--model", str(model_dir),
        "--num", "2", "--seed", "0",
    )  # fmt: skip
    assert (
        code == 0 and "wrote" in stdout and "2 clips, seeds 0..1" in stdout and (tmp_path / "s.png").is_file()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x.mp4"], "unsupported extension .mp4; choose from .wav, .flac, .ogg, .mp3, .png"),
        (["-o", "x.wav", "--seconds", "0"], "--seconds must be > 0"),
        (["-o", "x.wav", "--seconds", "-1"], "--seconds must be > 0"),
        (["-o", "x.wav", "--steps", "0"], "--steps must be >= 1"),
        (["-o", "x.wav", "--sampler", "nope"], "unknown --sampler 'nope'"),
        (["-o", "x.wav", "--model", "no-such"], "--model: model 'no-such' not found"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(tmp_path, capsys, args, message):
    args = [a if a != "x.wav" and a != "x.mp4" else str(tmp_path / a) for a in args]
    code, _, err = run(capsys, "generate", "audio", "a tone", *args)
    assert code == 2
    assert err.count("\n") == 1 and message in err and err.startswith("mediadiff generate audio: error:")
    assert not list(tmp_path.iterdir())  # nothing written


def test_generate_audio_help_lists_its_flags():
    result = subprocess.run(
        [sys.executable, "-m", "mediadiff.cli", "generate", "audio", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for flag in ("--seconds", "--steps", "--sampler", "--cfg", "--seed", "--num", "--model"):
        assert flag in result.stdout
