"""The text-to-video models shipped inside the package: they load with nothing downloaded, the CLI
writes a real mp4 from the default one, and the clips show what the prompts ask for."""

from __future__ import annotations

import numpy as np
import pytest

from mediadiff import VideoPipeline
from mediadiff.cli import main
from mediadiff.video.detect import detect, detect_batch, score
from mediadiff.video.io import probe, read_video
from mediadiff.video.shapes_eval import eval_items

DEFAULT_MODEL, SHIPPED_MODELS = VideoPipeline.DEFAULT_MODEL, VideoPipeline.SHIPPED_MODELS
installed_models = VideoPipeline.installed_models

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_shipped_model_is_installed():
    assert sorted(installed_models()) == sorted(SHIPPED_MODELS)
    assert DEFAULT_MODEL in SHIPPED_MODELS


def test_cli_default_model_writes_the_prompted_clip(tmp_path, capsys):
    target = tmp_path / "x.mp4"
    assert main(["generate", "video", "a yellow triangle moving up", "-o", str(target), "--seed", "0"]) == 0
    assert "wrote" in capsys.readouterr().out
    info = probe(target)
    pipe_defaults = VideoPipeline.from_pretrained(None).defaults
    assert (info.height, info.width) == (pipe_defaults["height"], pipe_defaults["width"])
    frames = read_video(target)  # [f h w 3] uint8, decoded back from the H.264 file
    assert frames.shape[0] == pipe_defaults["num_frames"]
    reading = detect(frames)
    assert reading.colour == "yellow" and reading.present >= 0.75
    assert reading.direction == "up" and reading.shape == "triangle"


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_model_follows_colour_and_shape(name):
    pipe = VideoPipeline.from_pretrained(name)
    d = pipe.defaults
    items = eval_items(12, d["num_frames"], d["height"])
    out = pipe([it["text"] for it in items], seed=0, steps=10)
    acc = score(detect_batch(out.frames), items)
    assert acc["colour"] >= 11 / 12
    assert acc["shape"] >= 6 / 12  # chance is 4 / 12; the 200-clip eval measures the rest
    assert np.all(out.frames.reshape(len(items), -1).std(axis=1) > 5)  # not blank, not flat
    if name == DEFAULT_MODEL:  # the default follows the direction word too (100% over 200 clips)
        assert acc["direction"] >= 10 / 12
