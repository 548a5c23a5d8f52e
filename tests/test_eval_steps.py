"""``mediadiff eval --steps A B ... --plot PATH.png``: a sweep over sampling steps on the harness's tiny
synthetic task (tests.test_eval's Levels) and a stand-in pipeline, so it runs in well under a second."""

import argparse
import json

import numpy as np
import pytest

from mediadiff.diffusion import nfe
from mediadiff.eval import (
    add_arguments,
    evaluate,
    format_steps_table,
    plot_steps,
    read_real_sets,
    run_command,
)
from tests.test_eval import PROMPT_SEED, TASK

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class StandIn:
    """What :func:`run_command` needs of a pipeline: ``resolve`` and ``use_bf16``."""

    def resolve(self, *, steps=None, sampler=None, guidance_scale=None):
        return {
            "steps": 4 if steps is None else steps,
            "sampler": sampler or "euler",
            "guidance_scale": 3.0 if guidance_scale is None else guidance_scale,
        }

    def use_bf16(self):
        return False


def generator(pipe, *, steps, sampler, guidance_scale):
    """The prompts' real clips, with the level of every clip whose seed is below ``4 - steps`` wrong: one
    step gets 3 clips wrong, two steps 2, four steps none (more steps, better clips)."""

    def generate(prompts, seeds):
        clips = TASK.real(len(seeds), PROMPT_SEED, seeds[0]).astype(np.int64)  # [b 2 3]
        wrong = np.array(seeds) < 4 - steps
        clips[wrong, 0] = (clips[wrong, 0] + 128) % 256
        return clips.astype(np.uint8)

    return generate


def parse(argv):
    parser = add_arguments(
        argparse.ArgumentParser(), splits=TASK.splits, splits_help="wordings", grid_help="NPY grid"
    )
    return parser.parse_args(argv)


def command(argv, loads=None):
    def load(model, device):
        if loads is not None:
            loads.append(model)
        return StandIn()

    return run_command(
        parse(argv),
        name="levels",
        load=load,
        task=lambda settings: (TASK, "2x3"),
        generator=generator,
        reconstructor=lambda pipe: lambda clips: clips,
    )


def test_two_step_counts_give_every_run_in_the_json_a_summary_and_a_plot(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "plots" / "steps.png"
    argv = ["--num", "8", "--batch-size", "3", "--sampler", "heun", "--device", "cpu"]
    assert command([*argv, "--steps", "1", "2", "--json", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sum(ln.startswith("model default: heun ") for ln in printed) == 2  # each run's usual table
    assert printed[-2] == f"wrote {out}" and printed[-1] == f"wrote {png}"

    report = json.loads(out.read_text())
    assert list(report) == ["settings", "machine", "runs", "summary", "timing"]
    assert report["settings"]["steps"] == [1, 2] and report["settings"]["sampler"] == "heun"
    assert report["settings"]["nfe"] == [nfe("heun", 1), nfe("heun", 2)] == [1, 3]
    runs = report["runs"]
    assert [(r["steps"], r["nfe"]) for r in runs] == [(1, 1), (2, 3)]
    for run, wrong in zip(runs, (3, 2)):  # paired: the same prompts and seeds at each step count
        assert set(run["splits"]) == {"plain", "fancy"} and run["real"] == runs[0]["real"]
        assert run["autoencoder"] == run["real"]  # the identity round trip, read once for both runs
        level = run["splits"]["fancy"]["accuracy"]["level"]
        assert (level["correct"], level["n"]) == (8 - wrong, 8) and len(level["ci95"]) == 2
        assert [c["index"] for c in run["splits"]["fancy"]["clips"]] == list(range(8))
    assert report["summary"][1] == {
        "steps": 2,
        "nfe": 3,
        "accuracy": {s: {"level": 0.75, "parity": 1.0, "all": 0.75} for s in ("plain", "fancy")},
        "fd": {s: runs[1]["splits"][s]["fd"] for s in ("plain", "fancy")},
        "seconds_per_clip": runs[1]["timing"]["seconds_per_clip"],
    }
    assert set(report["timing"]) == {"real_sets_s", "autoencoder_round_trip_s", "total_s"}

    table = format_steps_table(runs).splitlines()
    assert table[0].split()[:4] == ["steps", "NFE", "plain", "level"] and table[0].endswith("s/clip")
    assert [ln.split()[:3] for ln in table[2:]] == [["1", "1", "62.5"], ["2", "3", "75.0"]]
    assert "\n".join(table) in "\n".join(printed)

    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
        assert image.size[0] > image.size[1] > 100


def test_one_step_count_keeps_todays_report_and_still_draws(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "one.png"
    assert command(["--num", "4", "--steps", "2", "--json", str(out), "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["steps"] == 2 and "runs" not in report and "summary" not in report
    assert set(report["splits"]) == {"plain", "fancy"} and "autoencoder" in report
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "sampling steps against accuracy" not in capsys.readouterr().out


def test_a_bad_plot_path_or_step_list_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    loads = []
    for bad, message in [
        (["--plot", str(tmp_path / "steps.jpg")], "the picture is a .png"),
        (["--plot", str(tmp_path / "steps")], "the picture is a .png"),
        (["--steps", "5", "0"], "--steps must be >= 1, got 0"),
        (["--steps", "5", "5"], "--steps: each step count once, got 5 5"),
    ]:
        assert command(["--steps", "1", "2", *bad] if bad[0] == "--plot" else bad, loads) == 2
        assert message in capsys.readouterr().err
    assert loads == [] and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(type(TASK), "real", lambda *a, **k: pytest.fail("read real clips"))
    assert command(["--steps", "1", "2", "--grid", str(tmp_path / "g.gif")]) == 2  # before the real sets
    assert "grid must be a .npy path" in capsys.readouterr().err


def test_shared_real_sets_give_the_same_report():
    generate = generator(None, steps=2, sampler="euler", guidance_scale=1.0)
    alone = evaluate(TASK, generate, num=6, reconstruct=lambda c: c, progress=False)
    reals = read_real_sets(TASK, num=6, reconstruct=lambda c: c)
    shared = evaluate(TASK, generate, num=6, reals=reals, progress=False)
    assert {k: v for k, v in shared.items() if k != "timing"} == {
        k: v for k, v in alone.items() if k != "timing"
    }
    assert shared["timing"]["autoencoder_round_trip_s"] == 0.0  # counted once, by the sweep
    with pytest.raises(ValueError, match="read for num=6, not 5"):
        evaluate(TASK, generate, num=5, reals=reals, progress=False)


def test_plot_steps_needs_runs(tmp_path):
    with pytest.raises(ValueError, match="no runs"):
        plot_steps([], tmp_path / "x.png", title="nothing")


def test_the_cli_takes_several_steps_and_refuses_a_bad_plot_before_loading(tmp_path, capsys):
    from mediadiff.cli import main

    for modality in ("video", "audio"):
        argv = ["eval", modality, "--model", str(tmp_path / "nowhere"), "--steps", "5", "10"]
        assert main([*argv, "--plot", str(tmp_path / "steps.svg")]) == 2
        assert f"mediadiff eval {modality}: --plot " in capsys.readouterr().err  # not "not found"
    assert list(tmp_path.iterdir()) == []
