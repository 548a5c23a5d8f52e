"""``mediadiff eval audio``: the Tones feature space, perfect and wrong fake models on the shared harness,
and the command on a tiny pipeline folder."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mediadiff.audio import evaluate as ev
from mediadiff.audio.evaluate import FEATURES, TonesTask, clip_features, eval_items, real_clips
from mediadiff.audio.tones import HELDOUT_SEED, HELDOUT_TEMPLATES, Tones, synthesize_tone
from mediadiff.eval import evaluate

NAMES = [ft.name for ft in FEATURES]
NUM = 6


def test_docstring_table_lists_every_feature_with_its_resolution():
    rows = dict(re.findall(r"^(\w+(?: \.\. \w+)?)\s{2,}([0-9.]+)\s{2,}\S", ev.__doc__, flags=re.M))
    expanded = {}
    for key, value in rows.items():
        names = [f"h{k}_db" for k in range(2, 6)] if key.startswith("h2_db ..") else [key]
        expanded.update(dict.fromkeys(names, float(value)))
    assert expanded == {ft.name: ft.resolution for ft in FEATURES}


def test_features_of_real_notes_and_of_noise():
    data = Tones(length=4, seed=5)
    for i in range(4):
        item = data[i]
        f = dict(zip(NAMES, clip_features(item["audio"].numpy())))
        assert abs(f["start_midi"] - item["midi"]) < 0.3 and f["voiced"] > 0.8 and f["silence"] < 0.05
        glide = {"steady": 0.0, "rising": 7.0, "falling": -7.0}[item["contour"]]
        assert abs(f["glide"] - glide) < 0.5 and f["pitch_wobble"] < 0.2
        assert f["harmonic_share"] > 0.95 and f["decay_db_s"] < -2  # partials only, decaying
    sine = dict(zip(NAMES, clip_features(synthesize_tone("sine", 60)[None])))
    saw = dict(zip(NAMES, clip_features(synthesize_tone("sawtooth", 60)[None])))
    assert sine["h2_db"] == -40.0 and saw["h2_db"] == pytest.approx(-6.0, abs=1.0)  # 1/k: 20 log10(1/2)
    assert saw["centroid_hz"] > 2 * sine["centroid_hz"] and saw["flatness"] > sine["flatness"]
    noise = np.random.default_rng(0).normal(0, 0.1, (1, 16384)).astype(np.float32)
    n = dict(zip(NAMES, clip_features(noise)))
    assert n["flatness"] > 0.3 and n["flatness"] > 10 * sine["flatness"]
    silent = dict(zip(NAMES, clip_features(np.zeros((1, 16384), np.float32))))
    assert silent["voiced"] == 0.0 and silent["start_midi"] == 0.0 and silent["silence"] == 1.0


TRUTH = Tones(seed=HELDOUT_SEED)


def true_clips(prompts, seeds):
    """A perfect model: exactly the real note each prompt was written for."""
    return np.stack([TRUTH[s]["audio"].numpy() for s in seeds])  # [b 1 t]


def test_a_perfect_model_reaches_the_floor_and_a_wrong_one_is_caught(tmp_path):
    task = TonesTask()
    report = evaluate(task, true_clips, num=NUM, batch_size=4, grid=tmp_path / "g.png", progress=False)
    for row in (report["splits"]["train"], report["splits"]["heldout"], report["real"]):
        assert {k: v["accuracy"] for k, v in row["accuracy"].items()} == dict.fromkeys(
            ("pitch", "contour", "waveform", "all"), 1.0
        )
        assert row["fd"] == report["floor_fd"] and row["fd_ratio"] == 1.0
    assert report["num_samples"] == 16384 and report["sample_rate"] == 16000
    texts = [c["text"] for c in report["splits"]["heldout"]["clips"]]
    assert texts == [it["text"] for it in eval_items(NUM, "heldout")]
    assert any(
        t.startswith(tuple(h.split("{")[0] for h in HELDOUT_TEMPLATES if h.split("{")[0])) for t in texts
    )
    assert (tmp_path / "g-train.png").is_file() and (tmp_path / "g-heldout.txt").is_file()
    json.loads(json.dumps(report))

    def sharp(prompts, seeds):  # every note two semitones high, otherwise perfect
        return np.stack(
            [synthesize_tone(TRUTH.labels(s)["waveform"], TRUTH.labels(s)["midi"] + 2, TRUTH.labels(s)["contour"])[None]
             for s in seeds]
        )  # fmt: skip

    wrong = evaluate(task, sharp, num=NUM, splits=("train",), progress=False)["splits"]["train"]
    acc = {k: v["accuracy"] for k, v in wrong["accuracy"].items()}
    assert acc == {"pitch": 0.0, "contour": 1.0, "waveform": 1.0, "all": 0.0}


def test_real_clips_are_the_dataset_items():
    clips = real_clips(2, 4096, seed=3, start=1)
    data = Tones(num_samples=4096, seed=3)
    assert clips.shape == (2, 1, 4096) and clips.dtype == np.float32
    np.testing.assert_array_equal(clips[1], data[2]["audio"].numpy())


def test_eval_audio_on_a_pipeline_folder(tmp_path, capsys):
    import torch

    from mediadiff.audio import DiT1D, WaveformVAE
    from mediadiff.cli import main
    from mediadiff.diffusion import FlowSchedule
    from mediadiff.pipelines import AudioPipeline
    from mediadiff.text import load_text_encoder
    from tests.test_text import tiny_folder

    torch.manual_seed(0)
    text = load_text_encoder(tiny_folder(tmp_path / "text", "bert"))
    vae = WaveformVAE(latent_channels=4, patch=4, strides=(4,), channels=(8, 8)).eval()
    dit = DiT1D(in_channels=4, patch=(2,), width=32, depth=1, heads=2, context_dim=16).eval()
    folder = AudioPipeline(dit, vae, text, FlowSchedule(), defaults={"steps": 2}).save_pretrained(
        tmp_path / "p"
    )
    out = tmp_path / "report.json"
    argv = ["eval", "audio", "--model", str(folder), "--num", "2", "--seconds", "0.25", "--json", str(out)]
    assert main([*argv, "--splits", "heldout", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "0.25 s at 16000 Hz" in printed and "held-out-template prompts" in printed and "pitch %" in printed
    report = json.loads(out.read_text())
    assert report["num_samples"] == 4000 and list(report["splits"]) == ["heldout"]
    assert "autoencoder" in report and report["settings"]["steps"] == 2
    assert main(["eval", "audio", "--model", str(folder), "--seconds", "0"]) == 2
    assert "--seconds must be > 0" in capsys.readouterr().err
