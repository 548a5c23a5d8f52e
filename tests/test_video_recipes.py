"""The video recipes run end to end for a few steps: checkpoints, periodic evaluation, bad files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from mediadiff import VideoPipeline
from mediadiff.video import Shapes, write_video

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / "video" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


COMMON = ["--max-steps", "2", "--batch-size", "2", "--eval-num", "2", "--warmup-steps", "0"]
TINY_DIT = [*COMMON, "--items", "4", "--width", "32", "--depth", "1", "--heads", "2"]


def test_shapes_dit_trains_and_logs_prompt_following(tmp_path):
    recipe = load_recipe("shapes_dit")
    cache = recipe.main([*COMMON, "--items", "3", "--output-dir", str(tmp_path / "c"), "--cache-only"])
    assert len(cache) == 3 and cache.has_text  # the input of align_text.py; nothing trained
    assert not (tmp_path / "c" / "checkpoints").exists()
    argv = [*TINY_DIT, "--output-dir", str(tmp_path)]
    recipe.main(argv)
    samples = [e for e in events(tmp_path) if e.get("event") == "samples"]
    assert samples and {"colour_acc", "shape_acc", "direction_acc", "all_acc"} <= samples[-1].keys()
    assert all(0.0 <= samples[-1][k] <= 1.0 for k in ("colour_acc", "direction_acc"))
    assert (tmp_path / "samples" / "step-00000002" / "grid.gif").is_file()
    assert (tmp_path / "cache").is_dir()  # latents + MiniLM tokens encoded once
    assert (tmp_path / "checkpoints" / "step-00000002").is_dir()

    # --export: the newest checkpoint's EMA weights become a pipeline folder that generates
    folder = recipe.main([*argv, "--export", str(tmp_path / "pipe")])
    pipe = VideoPipeline.from_pretrained(folder)
    assert pipe.info["steps"] == 2 and pipe.info["recipe"] == "recipes/video/shapes_dit.py"
    assert pipe.info["periodic_eval"][-1]["step"] == 2
    assert (pipe.defaults["num_frames"], pipe.defaults["height"]) == (17, 64)
    assert pipe.info["weights"] == "ema.safetensors"
    clip = pipe("a red square moving left", steps=2, seed=0)
    assert clip.frames.shape == (1, 17, 64, 64, 3)


def test_shapes_recipes_refuse_the_evaluation_stream(tmp_path):
    for name in ("shapes_dit", "shapes_unet3d"):
        with pytest.raises(SystemExit, match="12345 is the evaluation stream"):
            load_recipe(name).main(["--data-seed", "12345", "--output-dir", str(tmp_path)])


def test_shapes_unet3d_trains_in_pixel_space(tmp_path):
    recipe = load_recipe("shapes_unet3d")
    argv = [*COMMON, "--channels", "32", "--channel-mult", "1", "2", "--output-dir", str(tmp_path)]
    recipe.main(argv)
    samples = [e for e in events(tmp_path) if e.get("event") == "samples"]
    assert samples and "direction_acc" in samples[-1]
    losses = [e["loss"] for e in events(tmp_path) if "loss" in e and "event" not in e]
    assert losses and all(np.isfinite(losses))


def test_folder_recipe_on_real_files_skips_a_corrupt_one(tmp_path, capsys):
    data = tmp_path / "videos"
    data.mkdir()
    clips = Shapes(num_frames=17, size=64, seed=3)
    rows = []
    for i in range(3):
        item = clips[i]
        frames = ((item["video"].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0)  # [f h w 3]
        write_video(data / f"clip{i}.mp4", frames.numpy(), fps=8)
        rows.append({"file_name": f"clip{i}.mp4", "text": item["text"]})
    (data / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    rows.append({"file_name": "broken.mp4", "text": "a red square moving left"})
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    import torch
    from safetensors.torch import load_file, save_file

    from mediadiff.nn import TokenAdapter

    adapter = TokenAdapter(384, 16).state_dict()  # stands in for one from align_text.py
    save_file(adapter, str(tmp_path / "adapter.safetensors"))
    save_file(TokenAdapter(96, 16).state_dict(), str(tmp_path / "narrow.safetensors"))

    recipe = load_recipe("folder")
    out = tmp_path / "run"
    argv = ["--data", str(data), "--max-steps", "3", "--batch-size", "2", "--warmup-steps", "0"]
    argv += ["--width", "32", "--depth", "1", "--heads", "2", "--output-dir", str(out)]
    with pytest.raises(SystemExit, match="96-wide tokens"):
        recipe.main([*argv, "--text-adapter", str(tmp_path / "narrow.safetensors")])
    recipe.main([*argv, "--text-adapter", str(tmp_path / "adapter.safetensors")])
    assert (out / "checkpoints" / "step-00000003").is_dir()
    trained = load_file(str(out / "checkpoints" / "step-00000003" / "model.safetensors"))
    for k, v in adapter.items():  # frozen: three steps later the adapter is unchanged
        assert torch.equal(trained[f"context_adapter.{k}"], v)
    grid = out / "samples" / "step-00000003" / "grid.gif"
    assert grid.is_file()
    prompts = (grid.parent / "prompts.txt").read_text().splitlines()
    assert set(prompts) == {r["text"] for r in rows}  # default prompts: the folder's own captions
    log = capsys.readouterr().out
    assert "skipped 1 unreadable file(s)" in log and "broken.mp4" in log
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["extra"]["data"] == str(data.resolve())


def test_align_text_raises_the_direction_share_and_the_dit_uses_it_frozen(tmp_path):
    import torch
    from safetensors.torch import load_file

    from mediadiff.nn import TokenAdapter
    from mediadiff.text import load_text_encoder
    from mediadiff.train.cache import LatentCache

    data = Shapes(length=160, num_frames=4, size=16, seed=0)
    LatentCache.build(
        tmp_path / "cache", data, autoencoder=None, text_encoder=load_text_encoder(), data_key="video",
        progress=False,
    )  # fmt: skip
    out = tmp_path / "adapter.safetensors"
    argv = ["--cache", str(tmp_path / "cache"), "-o", str(out), "--holdout", "48"]
    summary = load_recipe("align_text").main([*argv, "--steps", "60", "--batch-size", "64", "--hidden", "64"])
    first, last = summary["report"][0], summary["report"][-1]
    assert summary["last_loss"] < summary["first_loss"] - 0.5  # InfoNCE of 64 pairs starts near log 64
    # the adapter learns from the clips which text features tell them apart: the words' classes
    # explain more of the pooled text than in MiniLM's own vectors (the direction share needs the
    # full Shapes cache and a few hundred steps; measured in the README)
    shares = ("colour", "shape", "direction")
    raw = sum(first[f"raw_{k}_share"] for k in shares)
    assert sum(first[f"aligned_{k}_share"] for k in shares) == pytest.approx(raw, abs=0.03)  # near identity
    assert sum(last[f"aligned_{k}_share"] for k in shares) > raw + 0.1
    adapter = TokenAdapter(384, 64)
    adapter.load_state_dict(load_file(str(out)))

    recipe = load_recipe("shapes_dit")
    run = tmp_path / "run"
    small = [*TINY_DIT, "--output-dir", str(run)]
    recipe.main([*small, "--text-adapter", str(out), "--sample-every", "0"])
    folder = recipe.main([*small, "--text-adapter", str(out), "--export", str(tmp_path / "pipe")])
    pipe = VideoPipeline.from_pretrained(folder)
    trained = pipe.backbone.context_adapter.state_dict()
    for k, v in adapter.state_dict().items():  # frozen through training, saved with the backbone
        torch.testing.assert_close(trained[k].float(), v, atol=1e-3, rtol=1e-3)
    with pytest.raises(SystemExit, match="no file"):
        recipe.main([*COMMON, "--output-dir", str(run), "--text-adapter", str(tmp_path / "nope")])


def test_align_text_runs_on_any_latent_cache_here_one_of_1d_signals(tmp_path):
    from mediadiff.train.cache import LatentCache
    from mediadiff.train.testing import Bumps, HashTextEncoder

    data = Bumps(96, channels=2, length=32)  # [c l] items, six captions ("a high narrow bump")
    LatentCache.build(tmp_path / "cache", data, autoencoder=None, text_encoder=HashTextEncoder(dim=16),
                      progress=False)  # fmt: skip
    argv = [
        "--cache",
        str(tmp_path / "cache"),
        "-o",
        str(tmp_path / "adapter.safetensors"),
        "--holdout",
        "24",
    ]
    argv += ["--steps", "40", "--batch-size", "32", "--hidden", "32", "--embed-dim", "16", "--threads", "1"]
    summary = load_recipe("align_text").main(argv)
    # InfoNCE of 32 pairs starts near log 32 = 3.47; six captions put its floor near log(32 / 6) = 1.67
    assert summary["last_loss"] < summary["first_loss"] - 1.0  # measured: 3.43 -> 1.89 in 40 steps
    report = summary["report"][-1]
    assert set(report) == {"tag", "retrieval_top1"}  # no Shapes labels: no class shares
    # 24 held-out signals, four per caption: a caption finds its own signal 1 time in 4 at best, 1 in 24 by chance
    assert report["retrieval_top1"] > 0.15
    assert (tmp_path / "adapter.safetensors").is_file() and (tmp_path / "adapter.json").is_file()
