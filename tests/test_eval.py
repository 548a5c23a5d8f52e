"""mediadiff.eval: Frechet distance and Wilson intervals against closed forms, accuracy reports over any
attributes, and the generate -> score -> report harness on a tiny synthetic task (no modality)."""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from scipy import stats

from mediadiff.eval import (
    Feature,
    accuracy_report,
    evaluate,
    feature_fd,
    format_table,
    frechet_distance,
    marginal_fd,
    pipeline_generator,
    publish,
    rate,
    run_settings,
    wilson_interval,
)

# --------------------------------------------------------------------------- Frechet distance


@pytest.mark.parametrize(
    "m1, s1, m2, s2", [(0.0, 1.0, 0.0, 1.0), (1.5, 0.5, -2.0, 3.0), (0.3, 0.0, 0.3, 2.0)]
)
def test_frechet_distance_of_two_1d_gaussians(m1, s1, m2, s2):
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2 (Dowson & Landau 1982)
    fd = frechet_distance(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
    assert fd == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, abs=1e-12)


def test_feature_fd_and_marginal_fd_in_units_of_the_reference_or_the_resolution():
    rng = np.random.default_rng(0)
    reference = np.stack([rng.normal(0, 4, 5000), np.zeros(5000)], axis=1)  # [n 2]: spread 4, then constant 0
    resolution = [0.1, 0.5]
    scale = reference[:, 0].std(ddof=1)
    # feature 0 shifted by 2 reference sds and twice as wide; feature 1 moved by 3 resolutions, spread 1 resolution
    a = np.stack([reference[:, 0] * 2 + 2 * scale, 1.5 + 0.5 * rng.standard_normal(5000)], axis=1)  # [n 2]
    one = marginal_fd(a, reference, reference, resolution, ["wide", "flat"])
    za = (a - reference.mean(0)) / np.array([scale, 0.5])  # [n 2] standardised by hand
    expected = (za.mean(0) - [0.0, 0.0]) ** 2 + (za.std(0, ddof=1) - [1.0, 0.0]) ** 2  # [2]
    assert one == {"wide": pytest.approx(expected[0], abs=1e-4), "flat": pytest.approx(expected[1], abs=1e-4)}
    assert one["wide"] == pytest.approx(4 + 1, rel=0.02) and one["flat"] == pytest.approx(9 + 1, rel=0.05)
    # the two features are independent, so the joint FD is about the sum of the 1-D ones
    assert feature_fd(a, reference, reference, resolution) == pytest.approx(sum(expected), rel=0.02)
    with pytest.raises(ValueError, match="resolutions"):
        feature_fd(a, reference, reference, [0.1])
    with pytest.raises(ValueError, match="2 names for 3"):
        marginal_fd(np.ones((4, 3)), np.eye(3), np.eye(3), [1, 1, 1], ["x", "y"])


# --------------------------------------------------------------------------- Wilson intervals and accuracy


def test_wilson_interval_matches_the_closed_form_and_scipy():
    # 8 of 10 at 95%: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) = (0.4902, 0.9433)
    assert wilson_interval(8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    for correct, total in [(0, 7), (3, 40), (199, 200)]:
        ci = stats.binomtest(correct, total).proportion_ci(method="wilson")
        assert wilson_interval(correct, total) == pytest.approx((ci.low, ci.high), abs=1e-7)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert rate(8, 10) == {"n": 10, "correct": 8, "accuracy": 0.8, "ci95": [0.4902, 0.9433]}
    assert np.isnan(rate(0, 0)["accuracy"])


def test_accuracy_report_over_custom_attributes():
    classes = {"pitch": ("C4", "E4", "G4"), "contour": ("rising", "falling")}
    labels = [
        {"pitch": "C4", "contour": "rising", "text": "a C4 rising"},
        {"pitch": "C4", "contour": "falling", "text": "a C4 falling"},
        {"pitch": "G4", "contour": "falling", "text": "a G4 falling"},
    ]
    readings = [
        {"pitch": "C4", "contour": "rising"},
        {"pitch": "E4", "contour": "falling"},
        {"pitch": "G4", "contour": "none"},
    ]
    rep = accuracy_report(readings, labels, classes)
    assert list(rep["accuracy"]) == ["pitch", "contour", "all"]
    assert [rep["accuracy"][k]["correct"] for k in ("pitch", "contour", "all")] == [2, 2, 1]
    assert rep["accuracy"]["all"] == rate(1, 3)
    per = rep["per_class"]["pitch"]
    assert list(per) == ["C4", "E4", "G4"] and (per["C4"], per["G4"]) == (rate(1, 2), rate(1, 1))
    assert per["E4"]["n"] == 0 and np.isnan(per["E4"]["accuracy"])  # a class no prompt asked for
    assert rep["confusion"]["pitch"] == {"C4": {"C4": 1, "E4": 1}, "E4": {}, "G4": {"G4": 1}}
    assert rep["confusion"]["contour"]["falling"] == {"falling": 1, "none": 1}
    with pytest.raises(ValueError, match="outside its classes"):
        accuracy_report(readings, [{**y, "pitch": "A4"} for y in labels], classes)
    with pytest.raises(ValueError, match="2 readings for 3 labels"):
        accuracy_report(readings[:2], labels, classes)


# --------------------------------------------------------------------------- the harness on a synthetic task

LEVELS, PARITIES = ("low", "high"), ("even", "odd")
PROMPT_SEED = 5


def label(i: int) -> dict[str, str]:
    """The labels of item ``i`` (the same in every split and every seed's real set)."""
    return {"level": LEVELS[int(i % 3 == 0)], "parity": PARITIES[i % 2]}


def make_clip(i: int, seed: int) -> np.ndarray:
    """uint8 ``[2 3]``: row 0 holds the level, row 1 the parity (in the top half of the range when high /
    odd), plus seeded noise."""
    y = label(i)
    rng = np.random.default_rng([seed, i])
    base = np.array([[128 * (y["level"] == "high")], [128 * (y["parity"] == "odd")]])  # [2 1]
    return (base + rng.integers(0, 120, (2, 3))).astype(np.uint8)  # [2 3]


@dataclass(frozen=True)
class Levels:
    """A task of tiny uint8 ``[2 3]`` clips whose row means carry two attributes."""

    name: ClassVar[str] = "levels"
    real_name: ClassVar[str] = "Levels"
    classes: ClassVar[dict[str, tuple[str, ...]]] = {"level": LEVELS, "parity": PARITIES}
    feature_table: ClassVar[tuple[Feature, ...]] = (
        Feature("row0", 0.01, "mean of row 0 / 255"),
        Feature("row1", 0.01, "mean of row 1 / 255"),
        Feature("spread", 0.05, "std of the clip / 255"),
    )
    splits: ClassVar[tuple[str, ...]] = ("plain", "fancy")
    row_names: ClassVar[dict[str, str]] = {"plain": "plain wording", "fancy": "fancy wording"}
    prompt_seed: ClassVar[int] = PROMPT_SEED
    real_seeds: ClassVar[tuple[int, int]] = (1, 2)
    clip_shape: ClassVar[tuple[int, ...]] = (2, 3)
    clip_dtype: ClassVar[Any] = np.uint8
    info: ClassVar[dict[str, Any]] = {"rows": 2}
    grid_suffix: ClassVar[str] = ".npy"

    def features(self, clips: np.ndarray) -> np.ndarray:
        x = clips.astype(np.float64) / 255  # [b 2 3]
        return np.stack([x[:, 0].mean(1), x[:, 1].mean(1), x.reshape(len(x), -1).std(1)], axis=1)  # [b 3]

    def read(self, clips: np.ndarray) -> list[dict[str, str]]:
        means = clips.astype(np.float64).mean(axis=2)  # [b 2]
        return [{"level": LEVELS[int(m[0] >= 128)], "parity": PARITIES[int(m[1] >= 128)]} for m in means]

    def items(self, num: int, split: str) -> list[dict[str, Any]]:
        return [
            {"text": f"{split}: {label(i)['level']} {label(i)['parity']}", **label(i)} for i in range(num)
        ]

    def real(self, num: int, seed: int, start: int = 0) -> np.ndarray:
        return np.stack([make_clip(i, seed) for i in range(start, start + num)])  # [num 2 3]

    def save_grid(self, clips: np.ndarray, path: Path) -> None:
        np.save(path, clips)


TASK = Levels()


def test_a_perfect_model_reaches_the_floor_in_batches(tmp_path):
    calls = []

    def generate(prompts, seeds):
        calls.append((list(prompts), list(seeds)))
        return TASK.real(len(seeds), PROMPT_SEED, seeds[0])  # the very real clips the prompts describe

    num = 7
    report = evaluate(TASK, generate, num=num, batch_size=3, grid=tmp_path / "g.npy", progress=False)
    assert [s for _, s in calls] == [[0, 1, 2], [3, 4, 5], [6]] * 2
    assert calls[3][0] == [it["text"] for it in TASK.items(3, "fancy")]
    assert list(report) == [
        "num",
        "rows",
        "floor_fd",
        "real_vs_real_fd",
        "features",
        "real",
        "splits",
        "timing",
    ]
    assert report["num"] == num and report["rows"] == 2 and report["features"] == ["row0", "row1", "spread"]

    # the floor and the chance FD, recomputed here from the task's own clips
    res = [ft.resolution for ft in TASK.feature_table]
    ref = TASK.features(TASK.real(num, 1))  # [num 3]
    floor = feature_fd(TASK.features(TASK.real(num, PROMPT_SEED)), ref, ref, res)
    assert report["floor_fd"] == round(floor, 4) > 0
    assert report["real_vs_real_fd"] == round(feature_fd(TASK.features(TASK.real(num, 2)), ref, ref, res), 4)

    for key in ("plain", "fancy"):
        row = report["splits"][key]
        assert {k: v["accuracy"] for k, v in row["accuracy"].items()} == {
            "level": 1.0,
            "parity": 1.0,
            "all": 1.0,
        }
        assert row["fd"] == report["floor_fd"] and row["fd_ratio"] == 1.0
        assert row["fd_marginal"] == report["real"]["fd_marginal"] and set(row["fd_marginal"]) == {
            "row0",
            "row1",
            "spread",
        }
        assert row["clips"][3] == {
            "index": 3,
            "text": f"{key}: high odd",
            "level": "high",
            "parity": "odd",
            "read": {"level": "high", "parity": "odd"},
        }
        assert np.array_equal(np.load(tmp_path / f"g-{key}.npy"), TASK.real(num, PROMPT_SEED))
        assert (tmp_path / f"g-{key}.txt").read_text().splitlines() == [
            it["text"] for it in TASK.items(num, key)
        ]
        assert row["grid"] == str(tmp_path / f"g-{key}.npy")
    assert report["real"]["accuracy"]["all"]["accuracy"] == 1.0 and report["real"]["fd_ratio"] == 1.0
    timing = report["timing"]
    assert set(timing) == {"generation_s", "seconds_per_clip", "autoencoder_round_trip_s", "eval_overhead_s"}
    assert timing["autoencoder_round_trip_s"] == 0.0 and min(timing.values()) >= 0
    json.loads(json.dumps(report))

    table = format_table(report, TASK.row_names).splitlines()
    assert table[0].split()[:5] == ["clips", "N", "level", "%", "parity"] and "all %" in table[0]
    assert len(table) == 5 and set(table[1]) == {"-", " "}
    assert [ln[:33].rstrip() for ln in table[2:]] == [
        "real clips of the prompts (floor)",
        "plain wording",
        "fancy wording",
    ]
    assert "100.0 (" in table[3] and table[3].rstrip().endswith("1.00")


def test_wrong_readings_noise_and_the_round_trip_show_in_their_rows():
    def flipped(prompts, seeds):  # level always wrong, parity right, real-looking clips
        clips = TASK.real(len(seeds), PROMPT_SEED, seeds[0]).astype(np.int64)  # [b 2 3]
        clips[:, 0] = (clips[:, 0] + 128) % 256
        return clips.astype(np.uint8)

    rounds = []

    def reconstruct(clips):
        rounds.append(len(clips))
        return clips

    report = evaluate(TASK, flipped, num=6, splits=("fancy",), reconstruct=reconstruct, progress=False)
    assert list(report["splits"]) == ["fancy"] and rounds == [6]
    row = report["splits"]["fancy"]
    assert {k: v["accuracy"] for k, v in row["accuracy"].items()} == {"level": 0.0, "parity": 1.0, "all": 0.0}
    assert row["confusion"]["level"] == {"low": {"high": 4}, "high": {"low": 2}}
    assert report["autoencoder"] == report["real"]  # an exact round trip scores like the real clips

    loud = evaluate(TASK, lambda p, s: np.full((len(s), 2, 3), 255, np.uint8), num=6, progress=False)
    assert loud["splits"]["plain"]["fd_ratio"] > 10
    assert min(loud["splits"]["plain"]["fd_marginal"].values()) > 1


def test_the_harness_names_bad_outputs_and_arguments():
    good = lambda p, s: TASK.real(len(s), PROMPT_SEED, s[0])  # noqa: E731
    with pytest.raises(ValueError, match=r"generate returned uint8 \(1, 2, 3\), expected uint8 \(3, 2, 3\)"):
        evaluate(TASK, lambda p, s: good(p, s)[:1], num=4, batch_size=3, progress=False)
    with pytest.raises(ValueError, match=r"generate returned float64 \(3, 2, 3\), expected uint8"):
        evaluate(TASK, lambda p, s: good(p, s).astype(float), num=4, batch_size=3, progress=False)
    with pytest.raises(ValueError, match="reconstruct returned"):
        evaluate(TASK, good, num=4, reconstruct=lambda c: c[:, :1], progress=False)
    with pytest.raises(ValueError, match=r"splits must be among \('plain', 'fancy'\)"):
        evaluate(TASK, good, num=4, splits=("train",), progress=False)
    with pytest.raises(ValueError, match="num must be >= 2"):
        evaluate(TASK, good, num=1, progress=False)
    with pytest.raises(ValueError, match="real_seeds must be two seeds other than 5"):
        evaluate(TASK, good, num=4, real_seeds=(5, 6), progress=False)
    with pytest.raises(ValueError, match=r"grid must be a \.npy path"):
        evaluate(TASK, good, num=4, grid="g.gif", progress=False)


def test_publish_prints_the_table_and_writes_the_json(tmp_path, capsys):
    report = evaluate(TASK, lambda p, s: TASK.real(len(s), PROMPT_SEED, s[0]), num=4, progress=False)
    resolved = {"sampler": "euler", "steps": 3, "guidance_scale": 2.5}
    settings = run_settings(
        TASK, model="tiny", resolved=resolved, num=4, batch_size=8, splits=TASK.splits, autocast_bf16=False
    )
    assert settings["prompts"] == "Levels seed 5 items 0..3, captions from each split's templates"
    assert (
        settings["real_seeds"] == {"reference": 1, "second_real_set": 2, "floor": 5} and settings["rows"] == 2
    )
    full = publish(TASK, report, settings, device="cpu", shape="2x3", json_path=tmp_path / "r.json")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model tiny: euler 3 steps, cfg 2.5, 2x3; ") and "on cpu (" in out[0]
    assert out[1:-2] == format_table(full, TASK.row_names).splitlines()
    assert out[-2] == f"two independent real sets (Levels seeds 1, 2): FD {report['real_vs_real_fd']:.2f}"
    assert out[-1] == f"wrote {tmp_path / 'r.json'}"
    written = json.loads((tmp_path / "r.json").read_text())
    assert list(written)[:2] == ["settings", "machine"] and written["machine"]["device"] == "cpu"
    assert written == json.loads(json.dumps(full))


def test_pipeline_generator_batches_consecutive_seeds():
    calls = []

    @dataclass
    class Out:
        audio: np.ndarray

    def pipe(prompts, *, seed, steps, sampler, guidance_scale):
        calls.append((list(prompts), seed, steps, sampler, guidance_scale))
        return Out(np.stack([np.full((2, 3), seed + i, np.uint8) for i in range(len(prompts))]))

    generate = pipeline_generator(pipe, output="audio", steps=4, sampler="heun", guidance_scale=1.5)
    assert generate(["a", "b", "c"], [3, 4, 5])[:, 0, 0].tolist() == [3, 4, 5]
    assert calls == [(["a", "b", "c"], 3, 4, "heun", 1.5)]
    assert generate(["a", "b"], [7, 2])[:, 0, 0].tolist() == [7, 2] and [c[1] for c in calls[1:]] == [7, 2]


def test_eval_imports_no_modality():
    code = (
        "import sys, mediadiff.eval; "
        "print(sorted(m for m in sys.modules if m.startswith(('mediadiff.video', 'mediadiff.audio', "
        "'mediadiff.train', 'mediadiff.pipelines'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    imports = [
        ln.split()[1]
        for path in Path(__import__("mediadiff.eval").eval.__file__).parent.glob("*.py")
        for ln in path.read_text().splitlines()
        if ln.lstrip().startswith(("import ", "from "))
    ]
    assert {m.split(".")[0] for m in imports} <= {
        "__future__",
        "argparse",
        "collections",
        "dataclasses",
        "json",
        "math",
        "pathlib",
        "sys",
        "time",
        "typing",
        "numpy",
        "torch",
        "tqdm",
        "mediadiff",
        "",
    }
    assert {m for m in imports if m.startswith("mediadiff")} <= {"mediadiff.utils", "mediadiff.diffusion"}
