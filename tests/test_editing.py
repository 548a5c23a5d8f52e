"""Editing with the shipped models, through the pipelines and the CLI, judged by the detectors.

- SDEdit: strength 0 gives the input's round trip through the autoencoder; a small strength keeps the
  input's colour and direction (pitch and contour) under a prompt that asks for another direction
  (contour), which a large strength follows.
- Continuation and inpainting: the kept part is the autoencoder's round trip of the input (exactly
  where the decoder is causal: the video frames before the first regenerated one).
"""

import numpy as np
import pytest
import torch

from mediadiff import AudioPipeline, VideoPipeline
from mediadiff.audio.detect import read_tone
from mediadiff.audio.io import read_audio, write_audio
from mediadiff.audio.losses import spectral_convergence, stft_magnitude
from mediadiff.audio.tones import synthesize_tone
from mediadiff.cli import main
from mediadiff.video.detect import detect
from mediadiff.video.io import read_video, to_model, to_uint8, write_video
from mediadiff.video.shapes import render

RATE = 16000


@pytest.fixture(scope="module")
def video_pipe():
    torch.set_num_threads(2)
    return VideoPipeline.from_pretrained("shapes-dit")


@pytest.fixture(scope="module")
def audio_pipe():
    return AudioPipeline.from_pretrained("tones-dit")


def red_circle_right(num_frames: int = 17) -> np.ndarray:
    centres = np.stack([np.linspace(16, 48, num_frames), np.full(num_frames, 32.0)], 1)  # [f 2]
    return to_uint8(render("circle", "red", centres, 16, 64)).numpy()  # [f 64 64 3]


def round_trip(pipe, frames: np.ndarray) -> np.ndarray:
    """The input through the autoencoder as the pipeline runs it: encoded in float32, decoded in the
    pipeline's precision (bf16 autocast on a CPU with native bf16)."""
    with torch.inference_mode():
        z = pipe.autoencoder.encode(to_model(frames)[None])  # [1 c f h w]
        with pipe.autocast_context():
            return to_uint8(pipe.autoencoder.decode(z))[0].numpy()  # [f h w 3]


def audio_round_trip(pipe, wave: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        x = torch.as_tensor(wave)[None, None]  # [1 1 t]
        return pipe.autoencoder.decode(pipe.autoencoder.encode(x))[0, 0].numpy()  # [t]


def readings(frames) -> list[tuple[str, str]]:
    return [(d.colour, d.direction) for d in map(detect, frames)]


# ----------------------------------------------------------------------------------------- video


def test_video_strength_zero_is_the_round_trip(video_pipe):
    frames = red_circle_right()
    out = video_pipe("a blue square moving up", init=frames, strength=0.0, seed=0)
    assert np.array_equal(out.frames[0], round_trip(video_pipe, frames))


def test_video_sdedit_small_strength_keeps_large_strength_follows(video_pipe):
    frames = red_circle_right()
    prompt = "a red circle moving left"
    kept = video_pipe(prompt, init=frames, strength=0.3, seed=0, num_videos=2, steps=10)
    assert readings(kept.frames) == [("red", "right")] * 2
    changed = video_pipe(prompt, init=frames, strength=0.95, seed=0, num_videos=2, steps=20)
    assert readings(changed.frames) == [("red", "left")] * 2


def test_video_extend_keeps_the_given_frames_and_continues(video_pipe):
    given = red_circle_right(33)[:9]  # the first 9 frames of a slower rightward motion
    out = video_pipe("a red circle moving right", extend=given, seed=0, num_videos=2, steps=10)
    assert out.frames.shape == (2, 25, 64, 64, 3)  # 9 kept + the model's 17, cut to 1 + 4k frames
    expected = round_trip(video_pipe, given)
    for clip in out.frames:  # the causal decoder: the first 9 frames depend on the kept latents only
        assert np.abs(clip[:9].astype(int) - expected.astype(int)).max() <= 1
        new = detect(clip[9:])
        assert (new.colour, new.direction) == ("red", "right")


def test_video_inpaint_keeps_the_frames_outside_the_mask(video_pipe):
    frames = red_circle_right()
    out = video_pipe("a blue circle moving right", inpaint=frames, mask=(5, 13), seed=0, steps=10)
    clip, expected = out.frames[0].astype(int), round_trip(video_pipe, frames).astype(int)
    assert out.frames.shape == (1, 17, 64, 64, 3)
    assert np.abs(clip[:5] - expected[:5]).max() <= 1  # before the mask: exact (causal decoder)
    assert detect(out.frames[0, 5:13]).colour == "blue"  # the prompt's colour where regenerated
    # after the mask the causal decoder still remembers the new frames for a few frames, then the
    # kept latents decode to their round trip again (measured: 4.7, 2.1, 1.0 of 255 at frames 14-16)
    error = [np.abs(clip[i] - expected[i]).mean() for i in range(13, 17)]
    assert error[-1] < 2 and error == sorted(error, reverse=True), error


def test_video_edit_errors_name_the_input(video_pipe, tmp_path):
    frames = red_circle_right()
    with pytest.raises(ValueError, match="one of init, extend or inpaint"):
        video_pipe("x", init=frames, extend=frames)
    with pytest.raises(ValueError, match="strength goes with init"):
        video_pipe("x", strength=0.5)
    with pytest.raises(ValueError, match="mask must be frames"):
        video_pipe("x", inpaint=frames, mask=(10, 30))
    with pytest.raises(ValueError, match="already fills"):
        video_pipe("x", extend=frames, num_frames=17)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"bad\.mp4"):
        video_pipe("x", init=bad)


# ----------------------------------------------------------------------------------------- audio


def test_audio_strength_zero_is_the_round_trip(audio_pipe):
    wave = synthesize_tone("square", 64, "steady")
    out = audio_pipe("a sine tone at C3", init=wave, strength=0.0, seed=0)
    assert np.allclose(out.audio[0, 0], audio_round_trip(audio_pipe, wave), atol=1e-6)


def test_audio_sdedit_small_strength_keeps_large_strength_follows(audio_pipe):
    wave = synthesize_tone("square", 64, "steady")  # E4
    prompt = "a square wave playing E4, rising"
    kept = audio_pipe(prompt, init=wave, strength=0.3, seed=0, num_clips=2, steps=10)
    assert [(r.pitch, r.contour) for r in map(read_tone, kept.audio)] == [("E4", "steady")] * 2
    changed = audio_pipe(prompt, init=wave, strength=0.8, seed=0, num_clips=2, steps=10)
    assert [(r.pitch, r.contour) for r in map(read_tone, changed.audio)] == [("E4", "rising")] * 2


def spectral_error(x: np.ndarray, ref: np.ndarray) -> float:
    """Spectral convergence of the magnitudes (Yamamoto et al. 2020): the decoder draws phase for the
    whole clip at once, so kept audio is compared in magnitude, not sample by sample."""
    mag = [stft_magnitude(torch.as_tensor(v)[None, None], 1024, 256) for v in (x, ref)]  # [1 513 frames]
    return spectral_convergence(*mag).item()


def test_audio_extend_keeps_the_given_sound_and_continues(audio_pipe):
    wave = synthesize_tone("square", 64, "steady")  # E4
    given = wave[:8000]  # 0.5 s
    out = audio_pipe("a square wave playing E4", extend=given, seed=0, steps=10)
    kept = 8000 // 256 * 256  # whole latent frames
    assert out.audio.shape == (1, 1, kept + 16384)
    expected = audio_round_trip(audio_pipe, given[:kept])
    body = kept - 1024  # the last 4 latent frames also hear what follows (the decoder is not causal)
    # unchanged up to the round trip: closer to it than the round trip is to the input (measured 0.20
    # against 0.29; another tone is 1.4 away)
    assert spectral_error(out.audio[0, 0, :body], expected[:body]) < spectral_error(
        expected[:body], given[:body]
    )
    assert read_tone(out.audio[0, 0, kept:]).pitch == "E4"


def test_audio_inpaint_keeps_the_sound_outside_the_mask(audio_pipe):
    wave = synthesize_tone("square", 64, "steady")
    out = audio_pipe("a sine tone at C4", inpaint=wave, mask=(0.4, 0.7), seed=0, steps=10)
    expected, x = audio_round_trip(audio_pipe, wave), out.audio[0, 0]
    assert x.shape == wave.shape
    lo, hi = int(0.4 * RATE) - 1024, int(0.7 * RATE) + 1024  # 4 latent frames of decoder context
    for part in (slice(0, lo), slice(hi, None)):  # measured 0.21 and 0.27 against 0.32 and 0.30
        assert spectral_error(x[part], expected[part]) < spectral_error(expected[part], wave[part])
    inside = slice(int(0.45 * RATE), int(0.65 * RATE))
    assert spectral_error(x[inside], expected[inside]) > 0.6  # measured 0.90
    assert read_tone(x[inside]).waveform == "sine"  # the prompt's sine replaced the E4 square there


# ----------------------------------------------------------------------------------------- CLI


def test_cli_video_init_and_inpaint(tmp_path, capsys):
    src = write_video(tmp_path / "in.mp4", red_circle_right(), 8)
    out = tmp_path / "out.mp4"
    argv = ["generate", "video", "a red circle moving left", "-o", str(out), "--seed", "0"]
    assert main([*argv, "--init", str(src), "--strength", "0.3", "--steps", "10"]) == 0
    assert "strength 0.3" in capsys.readouterr().out
    assert readings([read_video(out)]) == [("red", "right")]
    assert main([*argv, "--inpaint", str(src), "--mask", "5:13", "--steps", "10"]) == 0
    assert read_video(out).shape == (17, 64, 64, 3)


def test_cli_audio_extend(tmp_path, capsys):
    src = write_audio(tmp_path / "in.wav", synthesize_tone("square", 64, "steady")[:8000], RATE)
    out = tmp_path / "out.wav"
    argv = ["generate", "audio", "a square wave playing E4", "-o", str(out), "--seed", "0"]
    assert main([*argv, "--extend", str(src), "--seconds", "1.0"]) == 0
    assert "extending" in capsys.readouterr().out
    audio, rate = read_audio(out)
    assert audio.shape == (1, RATE) and rate == RATE


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--strength", "0.5"], "--strength goes with --init"),
        (["--mask", "1:2"], "--inpaint FILE and --mask"),
        (["--init", "missing.wav"], "no such file"),
        (["--init", "{src}", "--extend", "{src}"], "one of --init, --extend, --inpaint"),
        (["--inpaint", "{src}", "--mask", "0.5"], "--mask must be START:END"),
        (["--init", "{src}", "--strength", "1.5"], "--strength must be in"),
        (["--inpaint", "{src}", "--mask", "0.9:3"], "mask must be seconds"),
    ],
)
def test_cli_edit_errors_are_one_line(tmp_path, capsys, extra, message):
    src = write_audio(tmp_path / "in.wav", synthesize_tone("sine", 60, "steady"), RATE)
    argv = ["generate", "audio", "a tone", "-o", str(tmp_path / "o.wav")]
    assert main([*argv, *(a.format(src=src) for a in extra)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
