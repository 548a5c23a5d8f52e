"""``mediadiff eval video``: Frechet distance, Wilson intervals, the feature space, and the evaluation on fake models."""

import json
import re

import numpy as np
import pytest
import torch
from scipy import linalg

from mediadiff.eval import accuracy_report, feature_fd, format_table, frechet_distance, wilson_interval
from mediadiff.video import evaluate as ev
from mediadiff.video.evaluate import CLASSES, FEATURES, ShapesTask, clip_features, evaluate, real_clips
from mediadiff.video.io import to_uint8 as to_frames
from mediadiff.video.shapes import HELDOUT_TEMPLATES, TRAIN_TEMPLATES, Shapes, render
from mediadiff.video.shapes_eval import EVAL_SEED

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES, SIZE, NUM = 8, 32, 40
NAMES = [ft.name for ft in FEATURES]
RESOLUTION = [ft.resolution for ft in FEATURES]

# --------------------------------------------------------------------------- Frechet distance


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 2.0, 6), rng.uniform(0.1, 2.0, 6)  # standard deviations
    # W2^2 of diagonal Gaussians: |mu1 - mu2|^2 + sum (s1 - s2)^2
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, np.diag(s1**2), mu1, np.diag(s1**2)) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_full_and_singular_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T  # non-commuting SPD covariances
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)
    # a point mass against N(0, S) is Tr S; a rank-1 covariance stays finite and real
    assert frechet_distance(np.zeros(5), np.zeros((5, 5)), np.zeros(5), s2) == pytest.approx(np.trace(s2))
    v = rng.normal(size=(5, 1))
    rank1 = frechet_distance(mu1, v @ v.T, mu1, v @ v.T)
    assert np.isfinite(rank1) and rank1 == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(mu1, s1, mu2[:4], s2[:4, :4])


def test_feature_fd_standardises_by_the_reference():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(4000, len(FEATURES))) * 100.0  # large units everywhere
    shifted = reference.copy()
    shifted[:, 0] += reference[:, 0].std(ddof=1)  # one standard deviation along feature 0, same covariance
    assert feature_fd(shifted, reference, reference, RESOLUTION) == pytest.approx(1.0, rel=1e-6)
    # a constant real feature is scaled by its resolution: a shift of 3 resolutions counts 9
    flat = reference.copy()
    flat[:, 0] = 0.0
    moved = flat.copy()
    moved[:, 0] = 3 * FEATURES[0].resolution
    assert feature_fd(moved, flat, flat, RESOLUTION) == pytest.approx(9.0, rel=1e-6)


# --------------------------------------------------------------------------- accuracy


def test_wilson_interval_known_values():
    # Wilson (1927) score interval at 95%: 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634], 10/10 -> [0.7225, 1]
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)
    assert wilson_interval(196, 200)[0] > 0.94


def test_accuracy_report_counts_per_class_and_confusions():
    from mediadiff.video.detect import Detection

    def det(colour, shape, direction):
        return Detection(colour, shape, direction, 1.0, 0.5, 1.0, 0.5)

    labels = [
        {"colour": "red", "shape": "square", "direction": "left"},
        {"colour": "red", "shape": "circle", "direction": "up"},
        {"colour": "blue", "shape": "circle", "direction": "up"},
    ]
    found = [det("red", "square", "left"), det("green", "circle", "none"), det("blue", "triangle", "up")]
    rep = accuracy_report([d.as_dict() for d in found], labels, CLASSES)
    assert rep["accuracy"]["colour"]["correct"] == 2 and rep["accuracy"]["all"]["correct"] == 1
    assert rep["per_class"]["colour"]["red"] == {
        "n": 2,
        "correct": 1,
        "accuracy": 0.5,
        "ci95": pytest.approx([round(v, 4) for v in wilson_interval(1, 2)]),
    }
    assert rep["per_class"]["direction"]["down"]["n"] == 0
    assert rep["confusion"]["colour"]["red"] == {"red": 1, "green": 1}
    assert rep["confusion"]["direction"]["up"] == {"none": 1, "up": 1}
    assert rep["confusion"]["shape"]["circle"] == {"circle": 1, "triangle": 1}


# --------------------------------------------------------------------------- features


def test_docstring_table_lists_every_feature_with_its_resolution():
    rows = dict(re.findall(r"^(\w[\w/, ]*?)\s{2,}([0-9.]+)\s{2,}\S", ev.__doc__, flags=re.M))
    expanded = {}
    for key, value in rows.items():
        if key.startswith("colour_r/"):
            names = ["colour_r", "colour_g", "colour_b"]
        else:
            names = [k.strip() for k in key.split(",")]
        expanded.update(dict.fromkeys(names, float(value)))
    assert expanded == {ft.name: ft.resolution for ft in FEATURES}
    assert len(FEATURES) <= 32 and len(set(NAMES)) == len(NAMES)


def test_features_of_a_real_clip_and_of_broken_ones():
    real = real_clips(1, 17, 64, seed=5)[0]  # uint8 [f h w 3]
    item = Shapes(num_frames=17, size=64, seed=5)[0]
    f = dict(zip(NAMES, clip_features(real)))
    assert f["presence"] == 1.0 and f["components"] == 1.0 and f["stray_mass"] == 0.0
    assert f["background_rms"] == f["background_speckle"] == f["background_flicker"] == 0.0
    assert f["speed"] > 0.45 and f["drift"] < 0.01 and f["track_residual"] < 0.005
    assert 0.2 < f["sharpness"] <= 1.0 and abs(f["aspect"]) < 0.05
    axis = "vx" if item["direction"] in ("left", "right") else "vy"
    assert np.sign(f[axis]) == (1 if item["direction"] in ("right", "down") else -1)

    t = np.linspace(0.2, 0.8, 17)[:, None] * 64  # [f 1] x positions
    square = render("square", "red", np.concatenate([t, np.full_like(t, 16)], axis=1), 12.0, 64)  # [3 f h w]
    circle = render("circle", "red", np.concatenate([t, np.full_like(t, 48)], axis=1), 12.0, 64)  # [3 f h w]
    two = dict(zip(NAMES, clip_features(to_frames(torch.maximum(square, circle)[None])[0].numpy())))
    assert two["components"] == 2.0 and two["stray_mass"] == pytest.approx(
        np.pi / 4 / (1 + np.pi / 4), abs=0.02
    )
    noisy = np.clip(real + np.random.default_rng(0).normal(0, 8, real.shape), 0, 255).astype(np.uint8)
    n = dict(zip(NAMES, clip_features(noisy)))
    assert 0.02 < n["background_rms"] < 0.05 and n["background_flicker"] > n["background_rms"]
    blur = dict(
        zip(NAMES, clip_features(((real.astype(np.uint16) + np.roll(real, 1, axis=2)) // 2).astype(np.uint8)))
    )
    assert blur["sharpness"] < 0.8 * f["sharpness"]
    still = dict(zip(NAMES, clip_features(np.repeat(real[8:9], 17, axis=0))))
    assert still["speed"] == pytest.approx(0.0, abs=1e-9) and still["jitter"] == pytest.approx(0.0, abs=1e-9)
    blank = clip_features(np.zeros((4, 32, 32, 3), np.uint8))
    assert dict(zip(NAMES, blank))["presence"] == 0.0 and dict(zip(NAMES, blank))["x"] == 0.5
    with pytest.raises(ValueError, match="uint8"):
        clip_features(real.astype(np.float32))


# --------------------------------------------------------------------------- evaluation with fake models

TRUTH = Shapes(num_frames=FRAMES, size=SIZE, seed=EVAL_SEED)


def true_clips(prompts, seeds):
    """A perfect model that returns exactly the real clip each prompt was written for."""
    return np.stack([to_frames(TRUTH[s]["video"][None])[0].numpy() for s in seeds])  # [b f h w 3]


def fresh_clips():
    """A perfect model that draws a new real clip (new size, position, speed) with each prompt's labels."""
    other, pool, state = Shapes(num_frames=FRAMES, size=SIZE, seed=31337), {}, {"next": 0}

    def generate(prompts, seeds):
        out = []
        for s in seeds:
            key = tuple(TRUTH[s][k] for k in ("colour", "shape", "direction"))
            while not pool.get(key):
                x = other[state["next"]]
                pool.setdefault(tuple(x[k] for k in ("colour", "shape", "direction")), []).append(x["video"])
                state["next"] += 1
            out.append(to_frames(pool[key].pop()[None])[0].numpy())
        return np.stack(out)  # [b f h w 3]

    return generate


def test_a_perfect_model_reaches_the_floor_on_both_splits(tmp_path):
    seen = []

    def generate(prompts, seeds):
        seen.append((list(prompts), list(seeds)))
        return true_clips(prompts, seeds)

    report = evaluate(
        generate,
        num=NUM,
        num_frames=FRAMES,
        size=SIZE,
        batch_size=16,
        grid=tmp_path / "g.gif",
        progress=False,
    )
    assert [len(s) for _, s in seen] == [16, 16, 8] * 2 and seen[0][1] == list(range(16))
    train, heldout = report["splits"]["train"], report["splits"]["heldout"]
    for row in (train, heldout, report["real"]):
        assert {k: v["accuracy"] for k, v in row["accuracy"].items()} == dict.fromkeys(
            ("colour", "shape", "direction", "all"), 1.0
        )
        assert row["fd"] == report["floor_fd"] and row["fd_ratio"] == 1.0  # the very clips of the floor
    assert report["floor_fd"] > 0 and report["real_vs_real_fd"] > 0
    # same labels and noise seeds in both splits; only the wording differs, drawn from each template set
    assert [c["colour"] for c in train["clips"]] == [c["colour"] for c in heldout["clips"]]
    texts = {s: [c["text"] for c in report["splits"][s]["clips"]] for s in ("train", "heldout")}
    assert all(t1 != t2 for t1, t2 in zip(texts["train"], texts["heldout"]))
    marker = {"train": TRAIN_TEMPLATES[0].split("{")[0], "heldout": HELDOUT_TEMPLATES[1].split("{")[0]}
    assert any(t.startswith(marker["heldout"]) for t in texts["heldout"])
    assert (tmp_path / "g-train.gif").is_file() and (tmp_path / "g-heldout.txt").read_text().splitlines() == (
        texts["heldout"][:32]
    )
    json.loads(json.dumps(report))  # every number is JSON-able

    # a perfect model that draws new clips for the same prompts scores about the floor
    fresh = evaluate(fresh_clips(), num=NUM, num_frames=FRAMES, size=SIZE, splits=("train",), progress=False)
    assert fresh["splits"]["train"]["accuracy"]["all"]["accuracy"] == 1.0
    assert 0.6 < fresh["splits"]["train"]["fd_ratio"] < 1.5


def test_reversed_clips_get_every_direction_wrong():
    report = evaluate(
        lambda p, s: true_clips(p, s)[:, ::-1],
        num=NUM,
        num_frames=FRAMES,
        size=SIZE,
        splits=("heldout",),
        progress=False,
    )
    row = report["splits"]["heldout"]
    acc = {k: v["accuracy"] for k, v in row["accuracy"].items()}
    assert acc == {"colour": 1.0, "shape": 1.0, "direction": 0.0, "all": 0.0}
    assert row["confusion"]["direction"]["left"] == {
        "right": sum(c["direction"] == "left" for c in row["clips"])
    }
    assert row["fd_ratio"] < 1.5  # a reversed clip is still a real-looking clip: only accuracy catches it


@pytest.mark.parametrize("fault", ["noise", "two objects"])
def test_broken_clips_are_far_above_the_floor(fault):
    rng = np.random.default_rng(0)

    def generate(prompts, seeds):
        clips = true_clips(prompts, seeds)  # [b f h w 3]
        if fault == "noise":
            return np.clip(clips + rng.normal(0, 16, clips.shape), 0, 255).round().astype(np.uint8)
        return np.maximum(clips, np.roll(clips, (SIZE // 3, SIZE // 3), axis=(2, 3)))

    report = evaluate(generate, num=NUM, num_frames=FRAMES, size=SIZE, splits=("train",), progress=False)
    row = report["splits"]["train"]
    assert row["fd_ratio"] > 50
    worst = max(row["fd_marginal"], key=row["fd_marginal"].get)
    assert worst in (
        {"background_speckle", "background_rms", "background_flicker"}
        if fault == "noise"
        else {"components", "stray_mass"}
    )


def test_bad_generators_and_arguments_are_named():
    with pytest.raises(ValueError, match=r"generate returned uint8 \(2, 8, 32, 32, 3\), expected uint8 \(4"):
        evaluate(lambda p, s: true_clips(p, s)[:2], num=4, num_frames=FRAMES, size=SIZE, progress=False)
    with pytest.raises(ValueError, match="splits must be among"):
        evaluate(true_clips, num=4, num_frames=FRAMES, size=SIZE, splits=("test",), progress=False)
    with pytest.raises(ValueError, match="num must be >= 2"):
        evaluate(true_clips, num=1, num_frames=FRAMES, size=SIZE, progress=False)


# --------------------------------------------------------------------------- the command on a tiny pipeline


def test_run_writes_table_json_and_grid_for_a_pipeline_folder(tmp_path, capsys):
    from mediadiff.cli import main
    from mediadiff.diffusion import FlowSchedule
    from mediadiff.pipelines import VideoPipeline
    from mediadiff.text import load_text_encoder
    from mediadiff.video import CausalVideoVAE, DiT
    from tests.test_text import tiny_folder

    torch.manual_seed(0)
    text = load_text_encoder(tiny_folder(tmp_path / "text", "bert"))
    vae = CausalVideoVAE(latent_channels=4, channels=(8, 8)).eval()
    dit = DiT(in_channels=4, width=32, depth=1, heads=2, context_dim=16).eval()
    defaults = {"num_frames": 5, "height": 16, "width": 16, "steps": 2, "guidance_scale": 2.0}
    folder = VideoPipeline(dit, vae, text, FlowSchedule(), defaults=defaults).save_pretrained(
        tmp_path / "pipe"
    )

    argv = [
        "--model",
        str(folder),
        "--num",
        "3",
        "--batch-size",
        "2",
        "--sampler",
        "euler",
        "--json",
        str(tmp_path / "r.json"),
        "--grid",
        str(tmp_path / "g.gif"),
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    assert main(["eval", "video", *argv]) == 0  # the CLI hands run() VideoPipeline.from_pretrained
    out = capsys.readouterr().out
    assert (
        "train-template prompts" in out
        and "held-out-template prompts" in out
        and "autoencoder round trip" in out
    )
    report = json.loads((tmp_path / "r.json").read_text())
    s = report["settings"]
    assert s["model"] == str(folder) and s["splits"] == ["train", "heldout"]
    assert (s["sampler"], s["steps"], s["cfg"], s["num"], s["num_frames"], s["size"]) == (
        "euler",
        2,
        2.0,
        3,
        5,
        16,
    )
    assert s["real_seeds"] == {"reference": 777, "second_real_set": 778, "floor": EVAL_SEED}
    assert report["machine"]["torch_threads"] == 1 and report["timing"]["seconds_per_clip"] > 0
    assert set(report["splits"]) == {"train", "heldout"} and "autoencoder" in report
    assert len(report["splits"]["heldout"]["clips"]) == 3 and (tmp_path / "g-heldout.gif").is_file()
    assert (
        format_table(report, ShapesTask.row_names).count("\n") == 5
    )  # header, rule, real, autoencoder, two splits

    assert main(["eval", "video", "--model", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["eval", "video", "--model", str(folder), "--num", "1"]) == 2
    assert "--num must be >= 2" in capsys.readouterr().err
