"""Training curves: read from metrics.jsonl (resumes, cut lines), drawn by every run and by ``mediadiff plot``."""

from __future__ import annotations

import json

import imageio.v3 as iio
import pytest

from mediadiff.cli import main as cli_main
from mediadiff.train.plot import plot_runs, read_curves, smooth
from tests.test_train import RECIPE


def write_metrics(run, records, tail=""):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_read_curves_keeps_the_last_record_of_each_step_and_skips_a_cut_line(tmp_path):
    records = [
        {"event": "start", "step": 0},
        *({"step": s, "loss": 1.0 / s, "lr": 1e-3, "grad_norm": 2.0} for s in (10, 20, 30)),
        {"event": "samples", "step": 30, "pitch_acc": 0.5, "contour_acc": 0.25, "paths": []},
        {"event": "start", "step": 20},  # resumed from the step-20 checkpoint: step 30 is logged again
        {"step": 30, "loss": 0.02, "lr": 1e-3, "grad_norm": 1.0},
        {"event": "samples", "step": 40, "pitch_acc": 0.75, "contour_acc": 0.5, "paths": []},
    ]
    write_metrics(tmp_path, records, tail='{"step": 50, "lo')  # the last line cut by a crash
    c = read_curves(tmp_path)
    assert c["steps"] == [10, 20, 30] and c["loss"] == [0.1, 0.05, 0.02] and c["grad_norm"][-1] == 1.0
    assert c["evals"] == {"contour_acc": ([30, 40], [0.25, 0.5]), "pitch_acc": ([30, 40], [0.5, 0.75])}
    with pytest.raises(FileNotFoundError, match=r"no metrics\.jsonl"):
        read_curves(tmp_path / "nope")


def test_smooth_is_a_bias_corrected_moving_average():
    assert smooth([2.0]) == [2.0]  # bias correction: the first value is itself, not 0.1 of it
    out = smooth([1.0, None, 3.0], weight=0.5)
    assert out[1] is None and out[2] == pytest.approx((0.5 * 1 * 0.5 + 0.5 * 3) / (0.5 * 0.5 + 0.5))


def test_every_run_leaves_curves_png_and_plot_draws_several(tmp_path, capsys):
    common = "--items 8 --frames 3 --size 8 --batch-size 4 --width 8 --ae-width 8 --log-every 1".split()
    for name in ("a", "b"):
        assert (
            cli_main(
                ["train", str(RECIPE), "--output-dir", str(tmp_path / name), *common, "--max-steps", "3"]
            )
            == 0
        )
        picture = iio.imread(tmp_path / name / "curves.png")
        assert picture.ndim == 3 and picture.std() > 10  # drawn, not blank
    out = tmp_path / "both.png"
    assert cli_main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)]) == 0
    assert f"wrote {out}  (2 runs)" in capsys.readouterr().out and iio.imread(out).shape[1] > 800
    assert cli_main(["plot", str(tmp_path / "missing"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no metrics.jsonl" in err
    assert cli_main(["plot", str(tmp_path / "a"), "-o", str(tmp_path / "x.jpg")]) == 2
    assert "the picture is a .png" in capsys.readouterr().err


def test_plot_runs_labels_the_runs(tmp_path):
    write_metrics(tmp_path / "r", [{"step": s, "loss": 1.0, "lr": 0.1, "grad_norm": None} for s in (1, 2)])
    path = plot_runs([tmp_path / "r"], tmp_path / "p.png", labels=["mine"])
    assert path.is_file() and iio.imread(path).std() > 10


def test_the_autoencoder_loop_leaves_curves_png_with_its_evaluation(tmp_path):
    from accelerate.state import AcceleratorState

    from tests.test_audio_recipes import COMMON, TINY_VOCODER, load_recipe

    AcceleratorState._reset_state(True)
    try:
        load_recipe("train_vocoder").main(
            ["--output-dir", str(tmp_path), "--max-steps", "2", *COMMON, *TINY_VOCODER]
        )
    finally:
        AcceleratorState._reset_state(True)
    assert (tmp_path / "curves.png").is_file()
    curves = read_curves(tmp_path)
    assert curves["steps"][-1] == 2 and "eval_mrstft" in curves["evals"]
