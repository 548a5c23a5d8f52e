"""Reproducibility (issue 17): on a CPU the same seed gives bit-identical output across runs, across batch
sizes and across ``--num`` splits, for both shipped models and for the stochastic samplers too.

What makes it hold: every item's noise comes from its own CPU generator (``seed + i``), each prompt is
encoded alone, and :meth:`DiffusionPipeline.generate` runs the backbone and the autoencoder on one item at
a time on a CPU (``micro_batch`` "auto"), with that item's own context length. On CUDA the default is
the whole batch at once, equal to the single item only up to float rounding; one item at a time there
is the same computation as the item alone (the last test, run where a GPU is present).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mediadiff.pipelines import AudioPipeline, VideoPipeline

pytestmark = pytest.mark.usefixtures("one_thread")

# different lengths in tokens, so a batch pads its contexts to the longest
VIDEO_PROMPTS = [
    "a red circle",
    "a blue square moving left",
    "a green triangle moving up fast",
    "a yellow circle",
]
AUDIO_PROMPTS = ["a sine tone", "a square wave playing E4, rising", "a sawtooth wave playing C5", "a tone"]
FAST = {"steps": 2}  # the shipped models at their trained sizes, few steps


@pytest.fixture(scope="module")
def video():
    pipe = VideoPipeline.from_pretrained("shapes-dit")
    pipe.autocast = False  # the same precision on every CPU (bf16 "auto" depends on the CPU)
    return pipe


@pytest.fixture(scope="module")
def audio():
    pipe = AudioPipeline.from_pretrained("tones-dit")
    pipe.autocast = False
    return pipe


def data(out) -> np.ndarray:
    """The output array of either modality: uint8 frames ``[b f h w 3]`` or float audio ``[b c t]``."""
    return out.frames if hasattr(out, "frames") else out.audio


def call(pipe, prompt, num: int = 1, **kwargs):
    """``pipe(prompt, ...)`` with the modality's own count argument."""
    count = "num_videos" if isinstance(pipe, VideoPipeline) else "num_clips"
    return pipe(prompt, **{count: num}, **FAST, **kwargs)


@pytest.fixture(params=["video", "audio"])
def pipe_and_prompts(request, video, audio):
    return (video, VIDEO_PROMPTS) if request.param == "video" else (audio, AUDIO_PROMPTS)


def test_micro_batch_defaults_to_one_item_on_a_cpu(video):
    assert video.micro_batch == "auto" and video.device.type == "cpu"
    assert video.micro_batch_size(4) == 1
    for value, size in ((None, 4), (2, 2), (1, 1)):
        video.micro_batch = value
        assert video.micro_batch_size(4) == size
    for bad in (0, -1, 1.5, True, "one"):
        video.micro_batch = bad
        with pytest.raises(ValueError, match="micro_batch must be a positive integer, None"):
            video.micro_batch_size(4)
    video.micro_batch = "auto"


def test_two_runs_are_bit_identical(pipe_and_prompts):
    pipe, prompts = pipe_and_prompts
    first = data(call(pipe, prompts[:2], seed=123))
    pipe.clear_cache()  # the text encoded again, not read back
    np.testing.assert_array_equal(data(call(pipe, prompts[:2], seed=123)), first)


@pytest.mark.parametrize(
    "modality, sampler",
    [
        ("video", "dpmpp_2m"),
        ("video", "ddpm"),
        ("audio", "dpmpp_2m"),
        ("audio", "euler_a"),
        ("audio", "ddpm"),
    ],
)
def test_a_batch_of_four_equals_four_singles(modality, sampler, video, audio):
    """Four prompts of different lengths in one batch == each prompt alone with its seed, bit for bit;
    the stochastic samplers (euler_a, ddpm: fresh noise at every step) too."""
    pipe, prompts = (video, VIDEO_PROMPTS) if modality == "video" else (audio, AUDIO_PROMPTS)
    batch = data(call(pipe, prompts, seed=40, sampler=sampler))
    for i, prompt in enumerate(prompts):
        np.testing.assert_array_equal(batch[i], data(call(pipe, prompt, seed=40 + i, sampler=sampler))[0])
    assert not np.array_equal(batch[0], batch[3])  # while the items do differ


def test_per_item_negative_prompts_batch_equals_single(pipe_and_prompts):
    pipe, prompts = pipe_and_prompts
    negatives = ["green", "a noisy loud hum"]
    batch = data(call(pipe, prompts[:2], seed=7, negative_prompt=negatives, sampler="euler_a"))
    for i in range(2):
        alone = call(pipe, prompts[i], seed=7 + i, negative_prompt=negatives[i], sampler="euler_a")
        np.testing.assert_array_equal(batch[i], data(alone)[0])


def test_num_splits_give_the_same_items(pipe_and_prompts):
    """``--num 4 --seed s`` == ``--num 2 --seed s`` then ``--num 2 --seed s+2`` (item i has seed s + i)."""
    pipe, prompts = pipe_and_prompts
    whole = call(pipe, prompts[1], num=4, seed=500)
    assert whole.seeds == [500, 501, 502, 503]
    halves = np.concatenate([data(call(pipe, prompts[1], num=2, seed=s)) for s in (500, 502)])
    np.testing.assert_array_equal(data(whole), halves)


def test_the_whole_batch_at_once_is_equal_only_to_rounding(audio):
    """``micro_batch=None`` (CUDA's default) runs the batch in one call: the same up to float rounding
    (batched products sum in another order), which is why a CPU runs one item at a time."""
    audio.micro_batch = None
    try:
        batch = data(call(audio, AUDIO_PROMPTS, seed=40))
    finally:
        audio.micro_batch = "auto"
    singles = np.concatenate([data(call(audio, p, seed=40 + i)) for i, p in enumerate(AUDIO_PROMPTS)])
    np.testing.assert_allclose(batch, singles, rtol=0, atol=5e-3)


GENERATE = ("--seed", "11", "--num", "2", "--steps", "3", "--sampler", "euler_a", "--device", "cpu")


def _generate(modality: str, prompt: str, path) -> subprocess.Popen:
    """Start ``mediadiff generate MODALITY PROMPT -o PATH`` with :data:`GENERATE` in a new process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "mediadiff.cli",
        "generate",
        modality,
        prompt,
        "-o",
        str(path),
        *GENERATE,
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(*procs: subprocess.Popen) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


def test_another_process_writes_the_same_wav_files(audio, tmp_path):
    """``mediadiff generate audio`` in its own process writes the very bytes this process writes for the
    same prompt, seed and settings (the CLI's "auto" precision is fp32 for audio on a CPU)."""
    from mediadiff.audio.io import read_audio

    prompt = "a square wave playing E4, rising"
    proc = _generate("audio", prompt, tmp_path / "cli" / "out.wav")
    here = audio(prompt, num_clips=2, seed=11, steps=3, sampler="euler_a").save(tmp_path / "api" / "out.wav")
    _finish(proc)
    there = sorted((tmp_path / "cli").iterdir())
    assert [p.name for p in here] == ["out-0.wav", "out-1.wav"] == [p.name for p in there]
    for a, b in zip(here, there):
        assert a.read_bytes() == b.read_bytes()
    x0, x1 = (read_audio(p)[0] for p in there)
    assert x0.abs().max() > 1e-3 and not torch.equal(x0, x1)  # sound, and the two seeds differ


@pytest.mark.slow
def test_two_processes_write_identical_mp4_files(tmp_path):
    """Two separate ``mediadiff generate video`` processes: the same bytes and decoded frames."""
    from mediadiff.video.io import read_video

    procs = [
        _generate("video", "a red circle moving right", tmp_path / f"run{k}" / "out.mp4") for k in range(2)
    ]
    _finish(*procs)
    first, second = (sorted((tmp_path / f"run{k}").iterdir()) for k in range(2))
    assert [p.name for p in first] == ["out-0.mp4", "out-1.mp4"] == [p.name for p in second]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(np.asarray(read_video(a)), np.asarray(read_video(b)))
        assert a.read_bytes() == b.read_bytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_one_item_at_a_time_equals_the_item_alone(tmp_path):
    """On CUDA: ``micro_batch=1`` gives each item exactly as alone on that GPU; the default (whole batch)
    and the CPU agree with it to float rounding only."""
    pipe = AudioPipeline.from_pretrained("tones-dit", device="cuda")
    pipe.autocast = False
    pipe.micro_batch = 1
    batch = data(call(pipe, AUDIO_PROMPTS, seed=40))
    singles = np.concatenate([data(call(pipe, p, seed=40 + i)) for i, p in enumerate(AUDIO_PROMPTS)])
    np.testing.assert_array_equal(batch, singles)
    pipe.micro_batch = "auto"
    np.testing.assert_allclose(data(call(pipe, AUDIO_PROMPTS, seed=40)), singles, rtol=0, atol=5e-3)
