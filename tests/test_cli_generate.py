"""`mediadiff generate video` and `mediadiff eval video` wiring, on a tiny saved pipeline folder."""

import argparse
import types

import pytest
import torch

from mediadiff.cli import main
from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import VideoPipeline
from mediadiff.pipelines.video import parse_size
from mediadiff.text import load_text_encoder
from mediadiff.video import CausalVideoVAE, DiT
from tests.test_pipeline import randomize
from tests.test_text import tiny_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny latent pipeline: DiT on a causal VAE (1 + 4k frames, multiples of 8 pixels), tiny BERT."""
    root = tmp_path_factory.mktemp("cli")
    text = load_text_encoder(tiny_folder(root, "bert"))
    vae = randomize(CausalVideoVAE(latent_channels=4, channels=(8, 8)), 1, std=0.3)
    dit = randomize(DiT(in_channels=4, width=32, depth=1, heads=2, context_dim=16), 2)
    defaults = {"num_frames": 5, "height": 16, "width": 16, "steps": 2, "fps": 5}
    return VideoPipeline(dit, vae, text, FlowSchedule(), defaults=defaults).save_pretrained(root / "pipe")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_a_valid_mp4(model_dir, tmp_path, capsys):
    from mediadiff.video.io import probe, read_video

    target = tmp_path / "out" / "clip.mp4"
    code, out, err = run(
        capsys, "generate", "video", "a red ball", "-o", str(target), "--model", str(model_dir), "--seed", "3",
        "--steps", "3", "--sampler", "euler", "--cfg", "2", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    info = probe(target, count_frames=True)
    assert (info.num_frames, info.height, info.width, info.codec) == (5, 16, 16, "h264")
    assert info.fps == pytest.approx(5)
    assert f"wrote {target}" in out and "seed 3" in out and "euler 3 steps" in out
    assert "euler" in err and "3/3" in err  # the tqdm bar over the sampling steps

    # the same seed through the API gives the same clip that went into the file
    pipe = VideoPipeline.from_pretrained(model_dir)
    frames = pipe("a red ball", seed=3, steps=3, sampler="euler", guidance_scale=2.0).frames
    gif = tmp_path / "clip.gif"
    assert main(["generate", "video", "a red ball", "-o", str(gif), "--model", str(model_dir), "--seed", "3",
                 "--steps", "3", "--sampler", "euler", "--cfg", "2"]) == 0  # fmt: skip
    back = read_video(gif)
    assert back.shape == frames.shape[1:]
    assert abs(back.astype(float) - frames[0].astype(float)).mean() < 20  # GIF's 256-colour palette


def test_generate_several_clips_sizes_and_negative(model_dir, tmp_path, capsys):
    from mediadiff.video.io import probe

    code, out, err = run(
        capsys, "generate", "video", "a blue square", "-o", str(tmp_path / "c.webm"), "--model", str(model_dir),
        "--num", "2", "--seed", "7", "--size", "8x24", "--num-frames", "9", "--negative", "red",
        "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, err
    for i in range(2):
        info = probe(tmp_path / f"c-{i}.webm", count_frames=True)
        assert (info.num_frames, info.height, info.width) == (9, 8, 24)
        assert f"c-{i}.webm  (seed {7 + i}" in out
    code, out, err = run(capsys, "generate", "video", "a blue square", "-o", str(tmp_path / "grid.png"),
                         "--model", str(model_dir), "--num", "3", "--seed", "1")  # fmt: skip
    assert code == 0, err
    assert (
        out
        == f"wrote {tmp_path / 'grid.png'}  (3 clips, seeds 1..3, 5 frames 16x16 at 5 fps, dpmpp_2m 2 steps, cfg 4)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sampler", "nope"], "unknown --sampler 'nope'; choose from ddim, ddpm, dpmpp_2m"),
        (["--size", "64by64"], "--size must be HEIGHTxWIDTH"),
        (["--size", "0x8"], "--size must be HEIGHTxWIDTH"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
        (["--num-frames", "6"], "video needs 1 + k * 4 frames (1, 5, 9, ...)"),
        (["--size", "12x16"], "height=12 gives 3 latent height, but the DiT needs a positive multiple of 2"),
        (["--cfg", "-1"], "--cfg must be >= 0"),
        (
            ["--decode-chunk", "0"],
            "--decode-chunk: VideoPipeline: decode_chunk must be a positive number of latent",
        ),
        (["--cfg-rescale", "2"], "--cfg-rescale must be in [0, 1]"),
        (["--cfg-interval", "0.9", "0.1"], "--cfg-interval must be LO HI with 0 <= LO <= HI <= 1"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--model", "no/such/folder"], "model 'no/such/folder' not found"),
        (["--model", "shapes-nope"], "model 'shapes-nope' not found"),
        (["-o", "clip.avi"], "unsupported extension .avi; choose from .mp4, .mov, .mkv, .webm, .gif, .png"),
        (["-o", "clip"], "unsupported extension (none)"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(model_dir, tmp_path, capsys, args, message):
    argv = ["generate", "video", "a red ball", "-o", str(tmp_path / "x.mp4"), "--model", str(model_dir)]
    code, out, err = run(capsys, *argv, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mediadiff generate video: error: "), err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_decode_chunk_reaches_the_vae(model_dir, tmp_path, capsys, monkeypatch):
    """--decode-chunk N is the VAE decode's chunk_size (the numbers: tests/test_pipeline.py)."""
    from mediadiff.video.io import probe

    seen = []
    decode = CausalVideoVAE.decode
    monkeypatch.setattr(
        CausalVideoVAE,
        "decode",
        lambda self, z, chunk_size=None: seen.append(chunk_size) or decode(self, z, chunk_size),
    )
    for chunk in (None, 2):
        target = tmp_path / f"chunk{chunk}.mp4"
        extra = [] if chunk is None else ["--decode-chunk", str(chunk)]
        argv = ["generate", "video", "a red ball", "-o", str(target), "--model", str(model_dir), "--seed", "3",
                "--num-frames", "9", *extra]  # fmt: skip
        code, _, err = run(capsys, *argv)
        assert code == 0, err
        assert probe(target, count_frames=True).num_frames == 9
    assert seen == [None, 2]


def test_missing_prompt_and_modality(capsys):
    code, _, err = run(capsys, "generate", "video", "-o", "x.mp4")
    assert code == 2 and err.count("\n") == 1 and "required: prompt" in err
    code, _, err = run(capsys, "generate")
    assert code == 2 and err.count("\n") == 1 and "MODALITY" in err
    code, _, err = run(capsys, "generate", "video", "  ", "-o", "x.mp4")
    assert code == 2 and err.count("\n") == 1 and "the prompt is empty" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generate_on_cuda(model_dir, tmp_path, capsys):
    code, _, err = run(capsys, "generate", "video", "a red ball", "-o", str(tmp_path / "c.mp4"),
                       "--model", str(model_dir), "--device", "cuda", "--seed", "0")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "c.mp4").stat().st_size > 0


def test_guidance_rescale_and_interval_flags(model_dir, tmp_path, capsys):
    target = tmp_path / "r.mp4"
    code, out, err = run(capsys, "generate", "video", "a red ball", "-o", str(target), "--model", str(model_dir),
                         "--seed", "4", "--cfg-rescale", "0.7", "--cfg-interval", "0.2", "0.9")  # fmt: skip
    assert code == 0, err
    assert "cfg 4 (rescale 0.7) (t in [0.2, 0.9])" in out
    from mediadiff.video.io import read_video

    pipe = VideoPipeline.from_pretrained(model_dir)
    frames = pipe("a red ball", seed=4, guidance_rescale=0.7, guidance_interval=(0.2, 0.9)).frames[0]
    plain = pipe("a red ball", seed=4).frames[0]
    back = read_video(target).astype(float)
    assert abs(back - frames).mean() < abs(back - plain).mean()  # the file holds the rescaled clip


def test_parse_size():
    assert (
        parse_size("64x32") == (64, 32) and parse_size("48") == (48, 48) and parse_size(" 8 X 16 ") == (8, 16)
    )


def test_eval_video_hands_its_arguments_to_the_evaluation_module(monkeypatch, capsys):
    seen = {}

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", default=None)
        parser.add_argument("--num", type=int, default=200)

    def run_eval(args: argparse.Namespace, load) -> int:
        seen.update(vars(args), load=load)
        return 0

    fake = types.ModuleType("mediadiff.video.evaluate")
    fake.add_arguments, fake.run = add_arguments, run_eval
    monkeypatch.setitem(__import__("sys").modules, "mediadiff.video.evaluate", fake)
    assert main(["eval", "video", "--num", "3", "--model", "m"]) == 0
    assert seen == {"model": "m", "num": 3, "load": VideoPipeline.from_pretrained}
    code, _, err = run(capsys, "eval", "video", "--bogus")
    assert code == 2 and err.count("\n") == 1 and "unrecognized arguments: --bogus" in err

    monkeypatch.setitem(__import__("sys").modules, "mediadiff.video.evaluate", None)  # not installed
    code, _, err = run(capsys, "eval", "video", "--num", "3")
    assert code == 2 and err.count("\n") == 1 and "mediadiff.video.evaluate" in err
