"""The shared autoencoder / vocoder loop (mediadiff.train.autoencoder) on a tiny 1-D conv autoencoder.

The model, its discriminator and the recipe live here, modality-free, on the 1-D ``Bumps`` signals of
mediadiff.train.testing; every run is a few dozen steps of a model of a few hundred weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from mediadiff.train import autoencoder as ae
from mediadiff.train.autoencoder import (
    AutoencoderRecipe,
    IndexStream,
    LossOutput,
    add_arguments,
    check_arguments,
    parse_and_check,
    train,
)
from mediadiff.train.testing import Bumps

HELDOUT_SEED = 777
CHANNELS, LENGTH = 2, 32


class TinyConvAE(nn.Module):
    """``[b c t] -> [b z t/2] -> [b c t]``; a little latent noise from the step's generator."""

    def __init__(self, channels: int = CHANNELS, width: int = 8, latent: int = 2):
        super().__init__()
        self.config = {"channels": channels, "width": width, "latent": latent}
        self.encoder = nn.Sequential(
            nn.Conv1d(channels, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv1d(width, latent, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose1d(latent, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv1d(width, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = self.encoder(x)  # [b z t/2]
        if generator is not None:
            z = z + 0.01 * torch.randn(z.shape, generator=generator, device=z.device)
        return self.decoder(z)  # [b c t]

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config))
        save_model(self, str(folder / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TinyConvAE:
        model = cls(**json.loads((Path(folder) / "config.json").read_text()))
        load_model(model, str(Path(folder) / "model.safetensors"))
        return model


def discriminator(args: argparse.Namespace) -> nn.Module:
    """Per-sample logits of "real": ``[b c t] -> [b 1 t]``."""
    return nn.Sequential(
        nn.Conv1d(CHANNELS, 8, 5, padding=2), nn.LeakyReLU(0.1), nn.Conv1d(8, 1, 3, padding=1)
    )


def data(args):
    train_set = Bumps(num_items=24, channels=CHANNELS, length=LENGTH, seed=args.seed)  # finite: epochs
    heldout = Bumps(num_items=args.eval_clips, channels=CHANNELS, length=LENGTH, seed=HELDOUT_SEED)
    return train_set, heldout, False


def collate(items):
    return torch.stack([item["signal"] for item in items])  # [b c t]


def loss(model, x, ctx):
    with ctx.accelerator.autocast():
        rec = model(x, generator=ctx.generator)  # [b c t]
    rec = rec.float()
    mse = (rec - x).pow(2).mean()
    total, logs = mse, {"mse": mse.detach()}
    if ctx.discriminator is not None:  # hinge generator loss
        with ctx.accelerator.autocast():
            score = ctx.discriminator(rec)  # [b 1 t]
        adv = (1 - score.float()).relu().mean()
        total, logs["adv"] = total + 0.1 * adv, adv.detach()
    return LossOutput(total, logs, real=x, fake=rec)


def discriminator_loss(disc, real, fake, ctx):
    with ctx.accelerator.autocast():
        d_real, d_fake = disc(real).float(), disc(fake).float()  # [b 1 t]
    total = (1 - d_real).relu().mean() + (1 + d_fake).relu().mean()
    return LossOutput(total, {"disc_real": d_real.mean().detach()})


def evaluate(model, heldout, args, accelerator):
    x = collate([heldout[i] for i in range(len(heldout))]).to(accelerator.device)
    return {"eval_mse": (model(x) - x).pow(2).mean().item()}


RECIPE = AutoencoderRecipe(
    script="tests/tiny_recipe.py",
    name="train tiny",
    build=lambda args: TinyConvAE(),
    load=TinyConvAE.from_pretrained,
    data=data,
    collate=collate,
    loss=loss,
    evaluate=evaluate,
    main_metric="eval_mse",
    higher_is_better=False,
    discriminator=discriminator,
    discriminator_loss=discriminator_loss,
    heldout_seed=lambda args: HELDOUT_SEED,
    summary=lambda args: {"data": "bumps"},
    progress={"mse": "{mse:.4f}"},
)
COMMON = [
    "--precision",
    "no",
    "--batch-size",
    "4",
    "--lr",
    "3e-3",
    "--warmup-steps",
    "1",
    "--eval-clips",
    "4",
]
COMMON += ["--log-every", "1", "--eval-every", "2", "--checkpoint-every", "2"]


def parse(argv, recipe=RECIPE):
    parser = argparse.ArgumentParser()
    add_arguments(parser, adversarial=True)
    return parse_and_check(parser, recipe, argv)


def run(out: Path, steps: int, *extra: str, recipe: AutoencoderRecipe = RECIPE) -> dict:
    argv = ["--output-dir", str(out), "--max-steps", str(steps), *COMMON, *extra]
    return train(parse(argv, recipe), recipe, argv=argv)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("adversarial_from", [None, 2, 4], ids=["plain", "adversarial-before-split", "after"])
def test_resume_is_exact(tmp_path, adversarial_from):
    """6 steps straight == 3 steps, then --resume to 6: bit-identical weights, optimizer states, logs.

    The lr is constant after warm-up here: the cosine is a function of --max-steps, which differs
    between the two halves (a resume with the same --max-steps is exact with the cosine too, see
    test_checkpoints_are_atomic_and_pruned).
    """
    extra = ["--min-lr-ratio", "1"]
    extra += [] if adversarial_from is None else ["--adversarial-from", str(adversarial_from)]
    a, b = tmp_path / "a", tmp_path / "b"
    summary = run(a, 6, *extra)  # crosses an epoch of the 24 training signals (6 steps of 4)
    run(b, 3, *extra)
    run(b, 6, *extra, "--resume")
    assert_same_tensors(
        load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    )
    ckpt_a, ckpt_b = a / "checkpoints" / "step_0000006", b / "checkpoints" / "step_0000006"
    for name in ("optimizer.pt", *(["disc_optimizer.pt"] if adversarial_from is not None else [])):
        sa, sb = (torch.load(c / name, weights_only=True)["state"] for c in (ckpt_a, ckpt_b))
        assert sa.keys() == sb.keys() and sa
        for k in sa:
            assert_same_tensors(sa[k], sb[k])
    if adversarial_from is not None:
        da, db = (load_file(c / "discriminator.safetensors") for c in (ckpt_a, ckpt_b))
        assert_same_tensors(da, db)
        assert summary["adversarial_from"] == adversarial_from
    else:
        assert not (ckpt_a / "discriminator.safetensors").exists()

    def steps(out):  # the training and eval records of steps 4..6, timing aside
        return [
            {k: v for k, v in r.items() if k != "train_seconds"}
            for r in records(out)
            if "event" not in r and r["step"] >= 4
        ]

    assert steps(a) == steps(b) and len(steps(a)) == 5  # logs at 4, 5, 6 and evals at 4, 6
    logged = [r for r in records(a) if "loss" in r and "event" not in r]
    adv_steps = [r["step"] for r in logged if "disc_loss" in r]
    assert adv_steps == ([] if adversarial_from is None else list(range(adversarial_from + 1, 7)))
    assert all(
        {"disc_real", "disc_grad_norm", "disc_lr", "adv"} <= r.keys() for r in logged if "disc_loss" in r
    )
    state = json.loads((ckpt_b / "state.json").read_text())
    assert state["step"] == 6 and state["best_eval_mse"] == min(
        r["eval_mse"] for r in records(a) if "eval_mse" in r
    )


def test_final_folder_and_summary(tmp_path):
    out = tmp_path / "run"
    summary = run(out, 2, "--final-dir", str(tmp_path / "model"))
    assert json.loads((tmp_path / "model" / "training.json").read_text()) == summary
    assert isinstance(TinyConvAE.from_pretrained(tmp_path / "model"), TinyConvAE)
    assert list(summary) == [
        "data", "train_seed", "steps", "batch_size", "train_seconds", "skipped_steps", "heldout_eval_mse",
        "precision", "torch_threads", "command",
    ]  # fmt: skip
    assert summary["steps"] == 2 and summary["precision"] == "no" and summary["torch_threads"] >= 1
    assert summary["command"].startswith("python tests/tiny_recipe.py --output-dir ")
    assert summary["heldout_eval_mse"] == pytest.approx(evaluate_final(tmp_path / "model"))
    events = [r.get("event") for r in records(out)]
    assert events[0] == "start" and events[-1] == "final"


def evaluate_final(folder: Path) -> float:
    model = TinyConvAE.from_pretrained(folder).eval()
    heldout = Bumps(num_items=4, channels=CHANNELS, length=LENGTH, seed=HELDOUT_SEED)
    x = collate([heldout[i] for i in range(4)])
    with torch.no_grad():
        return (model(x) - x).pow(2).mean().item()


def test_checkpoints_are_atomic_and_pruned(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(out, 5, "--checkpoint-every", "1", "--keep", "3")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_0000003",
        "step_0000004",
        "step_0000005",
    ]
    assert {p.name for p in (out / "checkpoints" / "step_0000005").iterdir()} == {
        "config.json", "model.safetensors", "optimizer.pt", "state.json",
    }  # fmt: skip

    # a crash while writing step 3's checkpoint leaves steps 1 and 2 whole and nothing half-written
    crashed = tmp_path / "crashed"
    save = TinyConvAE.save_pretrained

    def save_or_crash(self, folder):
        save(self, folder)
        if Path(folder).name.startswith(".tmp-step_0000003"):
            raise OSError("disk full")

    monkeypatch.setattr(TinyConvAE, "save_pretrained", save_or_crash)
    with pytest.raises(
        SystemExit, match=r"could not write the checkpoint of step 3 .*disk full.*step_0000002 is intact"
    ):
        run(crashed, 5, "--checkpoint-every", "1", "--keep", "3")
    assert sorted(p.name for p in (crashed / "checkpoints").iterdir()) == ["step_0000001", "step_0000002"]
    monkeypatch.setattr(TinyConvAE, "save_pretrained", save)
    run(crashed, 5, "--checkpoint-every", "1", "--keep", "3", "--resume")  # continues from step 2
    assert_same_tensors(
        load_file(out / "final" / "model.safetensors"), load_file(crashed / "final" / "model.safetensors")
    )


class FakeClock:
    """``time.perf_counter`` that moves ``tick`` seconds at each call."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_max_minutes_stops_cleanly_and_counts_across_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(ae, "time", types.SimpleNamespace(perf_counter=FakeClock(20.0).perf_counter))
    out = tmp_path / "run"
    summary = run(out, 100, "--max-minutes", "1", "--checkpoint-every", "1")  # 20 s a step
    assert summary["steps"] == 3 and summary["train_seconds"] == 60.0
    assert (out / "final" / "model.safetensors").is_file()
    assert (
        json.loads((out / "checkpoints" / "step_0000003" / "state.json").read_text())["train_seconds"] == 60.0
    )
    monkeypatch.setattr(ae, "time", types.SimpleNamespace(perf_counter=FakeClock(20.0).perf_counter))
    summary = run(out, 100, "--max-minutes", "2", "--checkpoint-every", "1", "--resume")  # 60 s more
    assert summary["steps"] == 6 and summary["train_seconds"] == 120.0
    assert run(tmp_path / "none", 100, "--max-minutes", "0")["steps"] == 0  # still writes final/
    assert (tmp_path / "none" / "final" / "training.json").is_file()


def nan_at(steps: set[int], *, where: str = "loss"):
    """A recipe whose loss (or only its gradient, or the discriminator's loss) is NaN at ``steps``."""

    def bad_loss(model, x, ctx):
        out = loss(model, x, ctx)
        if ctx.step in steps and where == "loss":
            out.loss = out.loss * float("nan")
        elif ctx.step in steps and where == "grad":  # finite value, NaN gradient: d sqrt(|p|) at p = 0
            out.loss = out.loss + (next(model.parameters()).sum() * 0).abs().sqrt()
        return out

    def bad_disc_loss(disc, real, fake, ctx):
        out = discriminator_loss(disc, real, fake, ctx)
        if ctx.step in steps and where == "disc":
            out.loss = out.loss * float("nan")
        return out

    return dataclasses.replace(RECIPE, loss=bad_loss, discriminator_loss=bad_disc_loss)


@pytest.mark.parametrize("where", ["loss", "grad", "disc"])
def test_non_finite_steps_are_skipped(tmp_path, where):
    out = tmp_path / "run"
    extra = ["--adversarial-from", "0"] if where == "disc" else []
    summary = run(out, 5, *extra, recipe=nan_at({1, 3}, where=where))
    assert summary["skipped_steps"] == 2 and math.isfinite(summary["heldout_eval_mse"])
    skipped = [r for r in records(out) if r.get("event") == "skipped"]
    assert [r["step"] for r in skipped] == [1, 3]
    assert all(("disc_loss" in r) == (where == "disc") for r in skipped)
    assert all(torch.isfinite(t).all() for t in load_file(out / "final" / "model.safetensors").values())


def test_twenty_bad_steps_in_a_row_give_up(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"20 non-finite steps in a row at step 19; lower --lr"):
        run(out, 50, "--checkpoint-every", "1", recipe=nan_at(set(range(50))))
    assert not (out / "checkpoints").exists() and not (out / "final").exists()


def test_bad_flags_are_refused(tmp_path):
    with pytest.raises(SystemExit):  # a usage error, exit status 2
        parse(["--output-dir", str(tmp_path), "--seed", str(HELDOUT_SEED)])
    args = parse(["--output-dir", str(tmp_path)])
    args.seed = HELDOUT_SEED
    with pytest.raises(ValueError, match="777 is the seed of the held-out set"):
        train(args, RECIPE)
    for flag, value, message in [
        ("keep", 0, "--keep must be >= 1"),
        ("adversarial_from", -1, "--adversarial-from must be >= 0"),
        ("disc_lr", 0.0, "--disc-lr must be > 0"),
    ]:
        bad = parse(["--output-dir", str(tmp_path), "--adversarial-from", "0"])
        setattr(bad, flag, value)
        with pytest.raises(ValueError, match=message):
            check_arguments(bad, RECIPE)
    with pytest.raises(ValueError, match="has no discriminator"):
        check_arguments(
            parse(["--output-dir", str(tmp_path), "--adversarial-from", "0"]),
            dataclasses.replace(RECIPE, discriminator=None),
        )
    with pytest.raises(ValueError, match="unknown defaults"):
        add_arguments(argparse.ArgumentParser(), defaults={"max_step": 10})
    plain = argparse.ArgumentParser()
    add_arguments(plain, defaults={"max_steps": 7})
    parsed = plain.parse_args(["--output-dir", "x"])
    assert parsed.max_steps == 7 and not hasattr(parsed, "adversarial_from")  # no GAN flags unless asked


def test_training_reduces_the_loss(tmp_path):
    out = tmp_path / "run"
    summary = run(out, 40, "--eval-every", "40", "--checkpoint-every", "40", "--lr", "1e-2")
    logged = [r["mse"] for r in records(out) if "mse" in r]
    first = records(out)[1]  # the first eval comes at step 40
    assert first["step"] == 1 and logged[-1] < 0.5 * logged[0]
    assert summary["heldout_eval_mse"] < 0.5 * logged[0]


def test_bf16_adversarial_run(tmp_path):
    summary = run(tmp_path / "run", 3, "--precision", "bf16", "--adversarial-from", "1")
    assert summary["precision"] == "bf16" and summary["skipped_steps"] == 0
    assert math.isfinite(summary["heldout_eval_mse"])


def test_index_stream_is_pure_in_the_position():
    finite = IndexStream(10, 0, seed=3)
    first = [finite.index(p) for p in range(30)]
    for epoch in range(3):
        assert sorted(first[epoch * 10 : (epoch + 1) * 10]) == list(range(10))  # each epoch a permutation
    assert first[:10] != first[10:20]
    resumed = IndexStream(10, 7, seed=3)
    assert [i for i, _ in zip(resumed, range(8))] == first[7:15]
    ranks = [IndexStream(10, 0, seed=3, rank=r, world=2) for r in (0, 1)]
    it0, it1 = iter(ranks[0]), iter(ranks[1])  # rank 0: positions 0, 2, 4, ...; rank 1: 1, 3, 5, ...
    assert [x for _ in range(5) for x in (next(it0), next(it1))] == first[:10]
    assert [i for i, _ in zip(IndexStream(None, 5, seed=0), range(3))] == [5, 6, 7]
