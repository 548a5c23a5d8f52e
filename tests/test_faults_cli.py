"""Bad arguments for every command, sizes off the trained ones, and a full disk (issue 17, part B).

Every bad invocation of the table runs through :func:`mediadiff.cli.main` in-process and must end in
exit code 2, exactly one stderr line that names the flag and says what is valid, no traceback, and no
file left in the working folder. What can be checked without a model is checked before one is loaded,
so the table is cheap; the few sizes only the model can judge load the shipped default (about 1 s).
A few cases then go through the real ``mediadiff`` entry point in a subprocess (bytes that are not
UTF-8 on the command line, a recipe's bad flag, a disk that fills up while the output is written).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from mediadiff.cli import main
from mediadiff.pipelines import AudioPipeline, VideoPipeline
from mediadiff.pipelines.trained import UntrainedSizeWarning, trained_sizes, warn_if_untrained

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
MEDIADIFF = Path(sys.executable).with_name("mediadiff")
VIDEO = ["generate", "video", "a red circle moving right", "-o", "{out}.mp4"]
AUDIO = ["generate", "audio", "a square wave playing E4", "-o", "{out}.wav"]
TINY = ["train", "examples/tiny_latent"]
EVAL_V = ["eval", "video"]
EVAL_A = ["eval", "audio"]

# (argv, what the one line must hold: the flag (or the value) it names, and what is valid)
# {out}: a path in the working folder (nothing may appear there); {file}: a regular file;
# {dir}: an existing folder named like an output file
CASES: list[tuple[list[str], tuple[str, ...]]] = [
    # ------------------------------------------------------------------ generate video: prompts
    (["generate", "video", "", "-o", "{out}.mp4"], ("the prompt is empty", "e.g. 'a yellow triangle")),
    (["generate", "video", " \t\x00\x1b\x7f ", "-o", "{out}.mp4"], ("the prompt is empty", "e.g.")),
    (["generate", "video", "a red \udcff circle", "-o", "{out}.mp4"], ("prompt:", "byte 0xff", "UTF-8")),
    ([*VIDEO, "--negative", "\udcc3"], ("--negative:", "byte 0xc3", "UTF-8")),
    # ------------------------------------------------------------------ generate video: numbers
    ([*VIDEO, "--steps", "0"], ("--steps", ">= 1, got 0")),
    ([*VIDEO, "--steps", "-3"], ("--steps", ">= 1, got -3")),
    ([*VIDEO, "--steps", "many"], ("--steps", "invalid int value: 'many'")),
    ([*VIDEO, "--num", "0"], ("--num", ">= 1")),
    ([*VIDEO, "--num-frames", "0"], ("--num-frames", ">= 1")),
    ([*VIDEO, "--num-frames", "-4"], ("--num-frames", ">= 1")),
    ([*VIDEO, "--size", "0x64"], ("--size", "HEIGHTxWIDTH in pixels (e.g. 64x64)")),
    ([*VIDEO, "--size", "64x"], ("--size", "HEIGHTxWIDTH")),
    ([*VIDEO, "--size", "-64"], ("--size", "HEIGHTxWIDTH")),
    ([*VIDEO, "--cfg", "-1"], ("--cfg", ">= 0")),
    ([*VIDEO, "--cfg", "nan"], ("--cfg", ">= 0 (a finite number")),
    ([*VIDEO, "--cfg-rescale", "2"], ("--cfg-rescale", "in [0, 1]")),
    ([*VIDEO, "--cfg-interval", "0.9", "0.1"], ("--cfg-interval", "0 <= LO <= HI <= 1")),
    ([*VIDEO, "--seed", "-1"], ("--seed", "in 0..")),
    ([*VIDEO, "--seed", str(2**64)], ("--seed", "in 0..18446744073709551615")),
    ([*VIDEO, "--num", "2", "--seed", str(2**64 - 1)], ("--seed", "in 0..18446744073709551614")),
    # ------------------------------------------------------------------ generate video: names and files
    ([*VIDEO, "--sampler", "nope"], ("--sampler 'nope'", "choose from ddim, ddpm, dpmpp_2m")),
    ([*VIDEO, "--model", "nope"], ("--model", "shipped: ['shapes-dit', 'shapes-unet3d']")),
    ([*VIDEO, "--model", "tones-dit"], ("--model", "shipped: ['shapes-dit', 'shapes-unet3d']")),
    ([*VIDEO[:-1], "{out}.avi"], ("-o", ".avi", "choose from .mp4, .mov, .mkv, .webm, .gif, .png")),
    ([*VIDEO[:-1], "{out}"], ("-o", "(none)", "choose from .mp4")),
    ([*VIDEO[:-1], "{file}/clip.mp4"], ("-o", "is a file, not a folder")),
    ([*VIDEO[:-1], "/proc/clip.mp4"], ("-o", "cannot create files in /proc", "a folder you can write")),
    ([*VIDEO[:-1], "{dir}"], ("-o", "is a folder", "give a file name")),
    ([*VIDEO, "--lora", "nope"], ("--lora", "shapes-dit-colours")),
    ([*VIDEO, "--lora-scale", "0.5"], ("--lora-scale", "with --lora")),
    ([*VIDEO, "--device", "tpu"], ("--device", "choose from 'cpu', 'cuda'")),
    ([*VIDEO, "--precision", "fp8"], ("--precision", "'auto', 'fp32', 'bf16'")),
    ([*VIDEO, "--bogus", "1"], ("--bogus", "unrecognized arguments")),
    # ------------------------------------------------------------------ generate video: editing
    ([*VIDEO, "--strength", "0.5"], ("--strength", "with --init")),
    ([*VIDEO, "--init", "{file}", "--strength", "1.5"], ("--strength", "in [0, 1]")),
    ([*VIDEO, "--init", "{out}-missing.mp4"], ("--init", "no such file")),
    ([*VIDEO, "--init", "{file}", "--extend", "{file}"], ("--init", "--extend", "give one of")),
    ([*VIDEO, "--inpaint", "{file}"], ("--inpaint", "--mask START:END")),
    ([*VIDEO, "--inpaint", "{file}", "--mask", "4-12"], ("--mask", "START:END in whole frame numbers")),
    # ------------------------------------------------------------------ generate video: after the ~1 s load
    ([*VIDEO, "--num-frames", "16"], ("--num-frames 16", "1 + k * 4 frames (1, 5, 9, ...)")),
    ([*VIDEO, "--size", "63x64"], ("--size 63x64", "multiples of 4")),
    ([*VIDEO, "--size", "60x60"], ("--size 60x60", "a multiple of 8")),
    # ------------------------------------------------------------------ generate audio
    (["generate", "audio", "", "-o", "{out}.wav"], ("the prompt is empty", "e.g. 'a square wave")),
    ([*AUDIO, "--seconds", "0"], ("--seconds", "> 0")),
    ([*AUDIO, "--seconds", "-1"], ("--seconds", "> 0")),
    ([*AUDIO, "--seconds", "nan"], ("--seconds", "> 0")),
    ([*AUDIO, "--seconds", "inf"], ("--seconds", "> 0")),
    ([*AUDIO, "--seconds", "two"], ("--seconds", "invalid float value")),
    ([*AUDIO, "--steps", "0"], ("--steps", ">= 1")),
    ([*AUDIO, "--sampler", "euler_b"], ("--sampler 'euler_b'", "euler_a")),
    ([*AUDIO, "--model", "shapes-dit"], ("--model", "shipped: ['tones-dit']")),
    ([*AUDIO[:-1], "{out}.xyz"], ("-o", "choose from .wav, .flac, .ogg, .mp3, .png")),
    ([*AUDIO[:-1], "{file}/tone.wav"], ("-o", "is a file, not a folder")),
    ([*AUDIO, "--inpaint", "{file}", "--mask", "1"], ("--mask", "START:END in seconds (e.g. 0.5:1.0)")),
    ([*AUDIO, "--lora", "nope"], ("--lora", "tones-dit-pitches")),
    # ------------------------------------------------------------------ train
    (["train", "nope"], ("'nope'", "a name under recipes/ such as examples/tiny_latent")),
    ([*TINY, "--max-steps", "0"], ("--max-steps 0", "must be >= 1")),
    ([*TINY, "--max-steps", "-5"], ("--max-steps -5", "must be >= 1")),
    ([*TINY, "--max-steps", "many"], ("--max-steps", "invalid int value")),
    ([*TINY, "--batch-size", "0"], ("--batch-size 0", "must be >= 1")),
    ([*TINY, "--lr", "-1"], ("--lr -1.0", "a finite number > 0")),
    ([*TINY, "--lr", "nan"], ("--lr nan", "a finite number > 0")),
    ([*TINY, "--grad-accum", "0"], ("--grad-accum 0", ">= 1")),
    ([*TINY, "--cond-dropout", "1.5"], ("--cond-dropout 1.5", "in [0, 1]")),
    ([*TINY, "--ema-decay", "1"], ("--ema-decay 1.0", "in [0, 1)")),
    ([*TINY, "--num-workers", "-1"], ("--num-workers -1", ">= 0")),
    ([*TINY, "--checkpoint-every", "0"], ("--checkpoint-every 0", ">= 1")),
    ([*TINY, "--output-dir", "{file}"], ("--output-dir", "is a file, not a folder", "created if missing")),
    ([*TINY, "--output-dir", "{file}/run"], ("--output-dir", "is a file, not a folder")),
    ([*TINY, "--output-dir", "/proc/run"], ("--output-dir", "cannot create files in /proc")),
    ([*TINY, "--cache", "{file}"], ("--cache", "is a file, not a folder")),
    ([*TINY, "--cache-only"], ("--cache-only", "--cache DIR")),
    ([*TINY, "--lr-schedule", "nope"], ("--lr-schedule", "'constant', 'cosine'")),
    ([*TINY, "--mixed-precision", "fp8"], ("--mixed-precision", "'bf16'")),
    ([*TINY, "--bogus", "1"], ("--bogus", "unrecognized arguments")),
    ([*TINY, "--init-from", "shapes-dit"], ("--init-from", "names no pipeline class")),
    (["train", "video/shapes_dit", "--init-from", "nope"], ("--init-from nope", "shipped: ['shapes-dit'")),
    (["train", "audio/tones_latent", "--batch-size", "0"], ("--batch-size 0", "must be >= 1")),
    # the autoencoder recipes' own loop (mediadiff.train.autoencoder)
    (["train", "video/train_vae"], ("--output-dir", "the following arguments are required")),
    (["train", "video/train_vae", "--output-dir", "{file}"], ("--output-dir", "is a file, not a folder")),
    (
        ["train", "audio/train_vocoder", "--output-dir", "{out}-run", "--batch-size", "0"],
        ("--batch-size", ">= 1"),
    ),
    (["train", "audio/train_vae", "--output-dir", "{out}-run", "--bogus", "1"], ("--bogus", "unrecognized")),
    # ------------------------------------------------------------------ eval video / audio
    ([*EVAL_V, "--num", "1"], ("--num", ">= 2")),
    ([*EVAL_V, "--steps", "0"], ("--steps", ">= 1")),
    ([*EVAL_V, "--steps", "5", "5"], ("--steps", "each step count once")),
    ([*EVAL_V, "--batch-size", "0"], ("--batch-size", ">= 1")),
    ([*EVAL_V, "--threads", "0"], ("--threads", ">= 1")),
    ([*EVAL_V, "--cfg", "-1"], ("--cfg", ">= 0")),
    ([*EVAL_V, "--sampler", "nope"], ("--sampler 'nope'", "choose from ddim")),
    ([*EVAL_V, "--plot", "{out}.svg"], ("--plot", "a .png")),
    ([*EVAL_V, "--json", "{file}/report.json"], ("--json", "is a file, not a folder")),
    ([*EVAL_V, "--grid", "/proc/grid.gif"], ("--grid", "cannot create files in /proc")),
    ([*EVAL_V, "--splits", "nope"], ("--splits", "choose from 'train', 'heldout'")),
    ([*EVAL_V, "--model", "nope"], ("--model", "shipped: ['shapes-dit'")),
    ([*EVAL_V, "--device", "tpu"], ("--device", "'auto', 'cpu', 'cuda'")),
    ([*EVAL_A, "--seconds", "0"], ("--seconds", "> 0")),
    ([*EVAL_A, "--seconds", "inf"], ("--seconds", "> 0 (a finite number)")),
    ([*EVAL_A, "--num", "1"], ("--num", ">= 2")),
    ([*EVAL_A, "--model", "shapes-dit"], ("--model", "shipped: ['tones-dit']")),
    # ------------------------------------------------------------------ plot
    (["plot", "{dir}", "-o", "{out}.jpg"], ("-o", "a .png")),
    (["plot", "{out}-run", "-o", "{out}.png"], ("metrics.jsonl", "a run folder written by a recipe")),
    (["plot", "{dir}", "-o", "{file}/curves.png"], ("-o", "is a file, not a folder")),
    # ------------------------------------------------------------------ serve
    (["serve", "--port", "0"], ("--port", "in 1..65535")),
    (["serve", "--port", "70000"], ("--port", "in 1..65535")),
    (["serve", "--port", "-1"], ("--port", "in 1..65535")),
    (["serve", "--port", "http"], ("--port", "invalid int value")),
    (["serve", "--device", "tpu"], ("--device", "choose from 'cpu', 'cuda'")),
]


def _prefix(argv: list[str]) -> str:
    """How the one line starts: the command's name (a recipe's own parser names its script)."""
    if argv[0] in ("generate", "eval"):
        return f"mediadiff {argv[0]} {argv[1]}: "
    if argv[0] == "train" and argv[1] != "nope":
        return f"{Path(argv[1]).name}.py: error: "
    return f"mediadiff {argv[0]}: error: "


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize(("argv", "needs"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_a_bad_invocation_is_one_line_exit_2_and_writes_nothing(argv, needs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # defaults such as runs/... land here, if anywhere
    (tmp_path / "notes.txt").write_text("a regular file\n")
    (tmp_path / "taken.mp4").mkdir()
    before = _tree(tmp_path)
    fill = {
        "{out}": str(tmp_path / "out"),
        "{file}": str(tmp_path / "notes.txt"),
        "{dir}": str(tmp_path / "taken.mp4"),
    }
    args = []
    for arg in argv:
        for key, value in fill.items():
            arg = arg.replace(key, value)
        args.append(arg)
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == "" and err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(_prefix(argv)), err
    assert "Traceback" not in err
    for needed in needs:
        assert needed in err, err
    assert _tree(tmp_path) == before  # no output file, folder or temporary left behind


# ----------------------------------------------------------------------------------------- the real command


def _mediadiff(*argv: str | bytes, cwd: Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [str(MEDIADIFF), *argv], cwd=cwd, env=env, capture_output=True, timeout=timeout, **kwargs
    )


def test_the_entry_point_prints_one_line_and_no_traceback(tmp_path):
    """Bytes that are not UTF-8 in the prompt (a terminal in another encoding: Python decodes them to
    surrogates) and a recipe's bad flag run through ``runpy``: one line each, exit 2."""
    (tmp_path / "notes.txt").write_text("x")
    bad = _mediadiff("generate", "video", b"a red \xff circle", "-o", "clip.mp4", cwd=tmp_path)
    err = bad.stderr.decode()
    assert bad.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "prompt: 'a red \\udcff circle' is not valid text: byte 0xff" in err
    train = _mediadiff("train", "examples/tiny_latent", "--output-dir", "notes.txt", cwd=tmp_path)
    err = train.stderr.decode()
    assert train.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("tiny_latent.py: error: --output-dir notes.txt: is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


_FULL_DISK = """
import resource, signal, sys
from mediadiff.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))
sys.exit(main(sys.argv[1:]))
"""


def _full_disk(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc cut short either
    return subprocess.run(
        [sys.executable, "-c", _FULL_DISK, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "output",
    ["tone.wav", pytest.param("tone.flac", marks=pytest.mark.slow), pytest.param("tone.mp3", marks=pytest.mark.slow),
     pytest.param("tone.png", marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_disk_that_fills_up_while_writing_leaves_no_partial_file(tmp_path, output):
    """A file-size limit of 4000 bytes (a full disk, as the writer sees it): one line, exit 1, nothing left."""
    run = _full_disk(tmp_path, "generate", "audio", "a square wave playing E4", "-o", output, "--steps", "1")
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert last.startswith(f"mediadiff generate audio: error: cannot write -o {output}: ")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


@pytest.mark.slow
@pytest.mark.parametrize("output", ["clip.mp4", "clip.gif", "clip.png"])
def test_a_full_disk_under_a_video_leaves_no_partial_file(tmp_path, output):
    run = _full_disk(tmp_path, "generate", "video", "a red circle moving right", "-o", output, "--steps", "1")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"cannot write -o {output}: " in run.stderr.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------- trained sizes


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": warning: " in line]


def test_a_size_off_the_trained_one_runs_and_warns_once(tmp_path, capsys):
    """As a new user would: ``--size 128x128`` on the shipped 64x64 model, fewer frames, longer audio."""
    runs = [
        (["generate", "video", "a red circle moving right", "--size", "128x128"], "17 frames 128x128 at 8 fps",
         "(17 frames 64x64 at 8 fps)"),
        (["generate", "video", "a red circle moving right", "--num-frames", "9"], "9 frames 64x64", "(17 frames 64x64"),
        (["generate", "audio", "a square wave playing E4", "--seconds", "2"], "2.00 s at 16000 Hz", "(1.02 s at 16000 Hz)"),
    ]  # fmt: skip
    for i, (argv, asked, trained) in enumerate(runs):
        path = tmp_path / f"out{i}.{'mp4' if argv[1] == 'video' else 'wav'}"
        assert main([*argv, "-o", str(path), "--steps", "1", "--seed", "0"]) == 0
        out, err = capsys.readouterr()
        (line,) = _warnings(err)  # once, though the size is resolved twice
        assert (
            line.startswith(f"mediadiff {argv[0]} {argv[1]}: warning: ") and asked in line and trained in line
        )
        assert (
            "outside the size this model was trained on" in line and path.is_file() and f"wrote {path}" in out
        )
    for argv in (["video", "a red circle moving right"], ["audio", "a square wave", "--seconds", "1.024"]):
        path = tmp_path / f"plain.{'mp4' if argv[0] == 'video' else 'wav'}"
        assert main(["generate", *argv, "-o", str(path), "--steps", "1"]) == 0
        assert _warnings(capsys.readouterr().err) == []  # the trained size: no warning


def test_the_trained_sizes_come_from_the_saved_folder():
    """The shipped folders' training info, not their names: the size defaults of a folder exported from
    a run, which agree with the recipe's recorded training config."""
    for cls, name in (
        (VideoPipeline, "shapes-dit"),
        (VideoPipeline, "shapes-unet3d"),
        (AudioPipeline, "tones-dit"),
    ):
        pipe = cls.from_pretrained(name)
        sizes = trained_sizes(pipe)
        assert set(sizes) == set(cls.SIZE_DEFAULTS) and all(lo == hi for lo, hi in sizes.values())
        extra = pipe.info["config"]["train"]["extra"]
        if cls is VideoPipeline:
            assert sizes == {"num_frames": (extra["frames"],) * 2, "height": (extra["size"],) * 2,
                             "width": (extra["size"],) * 2}  # fmt: skip
        else:
            assert sizes == {"num_samples": (extra["num_samples"],) * 2}
    pipe = VideoPipeline.from_pretrained("shapes-unet3d")  # trained on 8 frames of 32x32
    with pytest.warns(
        UntrainedSizeWarning, match=r"8 frames 64x64 at 8 fps is outside .* \(8 frames 32x32 at 8 fps\)"
    ):
        pipe.resolve(height=64, width=64)
    with pytest.warns(UntrainedSizeWarning, match="16x16"):  # the Python API warns while generating too
        clip = pipe("a red circle moving right", height=16, width=16, steps=1, seed=0)
    assert clip.frames.shape == (1, 8, 16, 16, 3)  # and still runs


def test_a_trained_range_in_the_info_and_a_pipeline_that_says_nothing():
    pipe = VideoPipeline.from_pretrained("shapes-unet3d")
    pipe.info = {"trained_sizes": {"num_frames": [4, 12], "height": 32, "width": [32, 64]}}
    assert trained_sizes(pipe) == {"num_frames": (4, 12), "height": (32, 32), "width": (32, 64)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the range: no warning at all
        for settings in ({"num_frames": 4}, {"num_frames": 12, "width": 64}):
            assert warn_if_untrained(pipe, pipe.resolve(**settings)) is None
    with pytest.warns(UntrainedSizeWarning, match=r"\(4 frames 32x32 at 8 fps to 12 frames 32x64 at 8 fps\)"):
        pipe.resolve(num_frames=16)
    with pytest.warns(UntrainedSizeWarning, match="32x16"):
        pipe.resolve(width=16)
    pipe.info = {}  # built in code, not exported from a run: nothing known, nothing warned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.resolve(num_frames=24, height=96, width=96)
    for bad in ({"fps": [1, 2]}, {"height": [64, 32]}, {"width": [0, 8]}, [1, 2]):
        pipe.info = {"trained_sizes": bad}
        with pytest.raises(ValueError, match="trained_sizes"):
            trained_sizes(pipe)


def test_cuda_refused_in_one_line_when_there_is_none(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    assert main([*VIDEO[:-1], str(tmp_path / "x.mp4"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda: no CUDA device is available; use --device cpu" in err
    assert list(tmp_path.iterdir()) == []
