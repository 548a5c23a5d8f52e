"""The trainer: exact resume, checkpoints, non-finite losses, caption dropout, sampling, dry run, CLI."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mediadiff.cli import main as cli_main
from mediadiff.diffusion import FlowSchedule, VPSchedule
from mediadiff.text import pack_context
from mediadiff.train import (
    CheckpointError,
    NonFiniteLossError,
    ResumableSampler,
    TrainConfig,
    Trainer,
    config_from_args,
    latest_checkpoint,
    load_model_weights,
    recipe_parser,
)
from mediadiff.train.checkpoint import complete_checkpoints
from mediadiff.train.testing import HashTextEncoder, MovingSquares, TinyAutoencoder, TinyBackbone

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "examples" / "tiny_latent.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def parts(items=16, frames=4, size=8, seed=0):
    torch.manual_seed(seed)
    return {
        "dataset": MovingSquares(items, num_frames=frames, size=size),
        "autoencoder": TinyAutoencoder(width=8),
        "text_encoder": HashTextEncoder(dim=8),
        "model": TinyBackbone(channels=4, width=16, depth=1, context_dim=8),
    }


def make_trainer(out, *, p=None, schedule=None, prediction="flow", **overrides):
    p = p or parts()
    settings = dict(
        output_dir=str(out), max_steps=6, batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=2,
        lr_schedule="cosine", cond_dropout=0.5, mixed_precision="no", checkpoint_every=100, log_every=1,
        ema_decay=0.9,
    )  # fmt: skip
    kwargs = {k: overrides.pop(k) for k in ("cache_dir", "sample_fn", "cache_on_mismatch") if k in overrides}
    settings.update(overrides)
    return Trainer(
        p["model"], schedule or FlowSchedule(), p["dataset"], TrainConfig(**settings), prediction=prediction,
        autoencoder=p["autoencoder"], text_encoder=p["text_encoder"], **kwargs,
    )  # fmt: skip


def checkpoint_tensors(path):
    ck = latest_checkpoint(Path(path) / "checkpoints")
    out = {f"model.{k}": v for k, v in load_file(ck / "model.safetensors").items()}
    out.update({f"ema.{k}": v for k, v in load_file(ck / "ema.safetensors").items()})
    optim = torch.load(ck / "optimizer.pt", weights_only=True)
    for name, state in optim["state"].items():
        out.update({f"optim.{name}.{k}": v for k, v in state.items()})
    return ck, out


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, precision):
    # 2 steps per epoch (16 items, 4 x 2 micro-batches): the stop falls mid-epoch and both halves cross epochs
    straight = make_trainer(tmp_path / "a", mixed_precision=precision)
    straight.fit()

    first = make_trainer(tmp_path / "b", mixed_precision=precision)
    first.fit(until=3)
    assert first.step == 3 and (tmp_path / "b/checkpoints/step-00000003/state.json").is_file()
    second = make_trainer(tmp_path / "b", mixed_precision=precision, resume=True)
    assert (second.step, second.epoch, second.offset) == (3, 1, 8)
    second.fit()

    ck_a, a = checkpoint_tensors(tmp_path / "a")
    ck_b, b = checkpoint_tensors(tmp_path / "b")
    assert ck_a.name == ck_b.name == "step-00000006"
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the run changed the weights, and the EMA differs from them
    init = parts()["model"].state_dict()
    assert not torch.equal(a["model.conv_in.weight"], init["conv_in.weight"])
    assert not torch.equal(a["model.conv_in.weight"], a["ema.conv_in.weight"])
    # the same losses were logged after the resume point
    losses = [
        {
            r["step"]: r["loss"]
            for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
            if "loss" in r and "event" not in r
        }
        for d in (tmp_path / "a", tmp_path / "b")
    ]
    assert [losses[0][s] for s in (4, 5, 6)] == [losses[1][s] for s in (4, 5, 6)]


def test_bf16_autocast_keeps_fp32_master_weights(tmp_path):
    trainer = make_trainer(tmp_path, mixed_precision="bf16", max_steps=3)
    seen = []
    trainer.unwrapped_model.conv_in.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.fit()
    # every step, not only the first, runs the backbone under bf16 autocast (EMA updates, checkpoints and
    # sampling touch the unwrapped model; none may strip the autocast wrapper)
    assert trainer.mixed_precision == "bf16" and seen == [torch.bfloat16] * 6
    assert all(p.dtype == torch.float32 for p in trainer.unwrapped_model.parameters())
    assert all(p.dtype == torch.float32 for p in trainer.ema.module.parameters())


def test_checkpoints_are_atomic_pruned_and_loadable(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=5, checkpoint_every=1, keep_checkpoints=2, grad_accum=1)
    stale = tmp_path / "checkpoints" / ".tmp-step-00000099"
    stale.mkdir(parents=True)
    trainer.fit()
    assert [s for s, _ in complete_checkpoints(tmp_path / "checkpoints")] == [4, 5]
    assert not stale.exists()  # leftovers of an interrupted save are removed
    # a write that fails in the middle of a save is reported, and leaves neither a step-* folder nor a temporary one
    import mediadiff.train.trainer as trainer_module

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trainer_module, "save_torch", crash)
    trainer.step = 6
    with pytest.raises(CheckpointError, match=r"step 6 .*disk full.*step-00000005 is intact"):
        trainer.save_checkpoint()
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-00000005"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]
    monkeypatch.undo()
    # weights load into a fresh model: EMA by default, or the trained weights
    fresh = parts()["model"]
    assert load_model_weights(tmp_path, fresh).name == "ema.safetensors"
    assert torch.equal(fresh.conv_in.weight, trainer.ema.module.conv_in.weight)
    load_model_weights(tmp_path, fresh, ema=False)
    assert torch.equal(fresh.conv_in.weight, trainer.unwrapped_model.conv_in.weight)


class Poisoned(torch.nn.Module):
    """Wraps a backbone; forward calls listed in ``bad`` (0-based) return NaN."""

    def __init__(self, inner, bad):
        super().__init__()
        self.inner, self.bad, self.calls = inner, set(bad), 0

    def forward(self, x, t, **cond):
        out = self.inner(x, t, **cond)
        self.calls += 1
        return out * float("nan") if self.calls - 1 in self.bad else out


def test_a_non_finite_step_is_skipped_and_counted(tmp_path):
    p = parts()
    p["model"] = Poisoned(p["model"], bad={2})
    trainer = make_trainer(tmp_path, p=p, grad_accum=1, max_steps=4)
    weights = []
    trainer.fit(until=2)
    weights.append(trainer.unwrapped_model.inner.conv_out.weight.clone())
    trainer.fit(until=3)  # step 3 is poisoned
    weights.append(trainer.unwrapped_model.inner.conv_out.weight.clone())
    assert trainer.skipped == 1 and torch.equal(weights[0], weights[1])
    result = trainer.fit()
    assert result["skipped"] == 1 and result["step"] == 4
    assert not torch.equal(weights[1], trainer.unwrapped_model.inner.conv_out.weight)
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(e["step"], e["reason"]) for e in events if e.get("event") == "skipped"] == [
        (3, "non-finite loss")
    ]


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class GradBomb(Poisoned):
    """Forward calls listed in ``bad`` give a finite loss but an infinite gradient."""

    def forward(self, x, t, **cond):
        out = self.inner(x, t, **cond)
        self.calls += 1
        return _InfGrad.apply(out) if self.calls - 1 in self.bad else out


def test_a_non_finite_gradient_skips_the_step_too(tmp_path):
    p = parts()
    p["model"] = GradBomb(p["model"], bad={1})
    trainer = make_trainer(tmp_path, p=p, grad_accum=1, max_steps=3)
    trainer.fit(until=1)
    before = [q.clone() for q in trainer.unwrapped_model.parameters()]
    trainer.fit(until=2)
    assert trainer.skipped == 1 and all(
        torch.equal(a, b) for a, b in zip(before, trainer.unwrapped_model.parameters())
    )
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = [e for e in events if e.get("event") == "skipped"]
    assert skipped[0]["reason"] == "non-finite gradient" and skipped[0]["loss"] < 10
    trainer.fit()
    assert all(torch.isfinite(q).all() for q in trainer.unwrapped_model.parameters())


def test_k_non_finite_steps_in_a_row_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    p = parts()
    p["model"] = Poisoned(p["model"], bad=range(4, 100))  # steps 5, 6, 7 are bad
    trainer = make_trainer(tmp_path, p=p, grad_accum=1, max_steps=20, checkpoint_every=2, max_bad_steps=3)
    with pytest.raises(
        NonFiniteLossError,
        match=r"step 7: the loss \(or its gradient\) was NaN/inf for 3 steps in a row.*step-00000004",
    ):
        trainer.fit()
    assert [s for s, _ in complete_checkpoints(tmp_path / "checkpoints")] == [2, 4]  # no step-6 checkpoint
    good = load_file(tmp_path / "checkpoints/step-00000004/model.safetensors")
    assert all(torch.isfinite(v).all() for v in good.values())
    assert all(torch.isfinite(v).all() for v in trainer.unwrapped_model.state_dict().values())
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "stopped" and events[-1]["skipped"] == 3


def test_condition_dropout_replaces_captions_by_the_empty_prompt(tmp_path):
    trainer = make_trainer(tmp_path, cond_dropout=0.5)
    te = trainer.text_encoder
    items = [trainer.dataset[i % 16] for i in range(64)]
    batch = {"data": torch.stack([it["video"] for it in items]), "text": [it["text"] for it in items]}
    _, cond = trainer.prepare_batch(batch)
    empty_tokens, _ = pack_context(*te.encode([""]))
    full, full_mask = pack_context(*te.encode(batch["text"]))
    dropped = cond["context_mask"].sum(1) == 1  # the empty prompt is the start token alone
    assert 16 < dropped.sum() < 48  # about half of 64
    assert torch.equal(cond["context"][dropped][:, :1], empty_tokens.expand(int(dropped.sum()), 1, -1))
    assert torch.equal(cond["context"][~dropped], full[~dropped])
    trainer.config.cond_dropout = 0.0
    _, cond = trainer.prepare_batch(batch)
    assert torch.equal(cond["context_mask"], full_mask)


def test_sampling_writes_files_and_does_not_change_training(tmp_path):
    calls = []

    def sample_fn(ctx):
        calls.append((ctx.step, ctx.model.training))
        torch.randn(100)  # consumes the global RNG: the trainer must shield training from it
        path = ctx.out_dir / "sample.pt"
        torch.save(ctx.model(torch.zeros(1, 4, 4, 4, 4), torch.full((1,), 0.5)), path)
        return [path]

    with_samples = make_trainer(
        tmp_path / "s", sample_fn=sample_fn, sample_every=2, max_steps=4, grad_accum=1
    )
    with_samples.fit()
    plain = make_trainer(tmp_path / "p", max_steps=4, grad_accum=1)
    plain.fit()
    assert calls == [(2, False), (4, False)]
    assert (tmp_path / "s/samples/step-00000002/sample.pt").is_file()
    assert with_samples.unwrapped_model.training
    for a, b in zip(with_samples.unwrapped_model.parameters(), plain.unwrapped_model.parameters()):
        assert torch.equal(a, b)


def test_vp_schedule_and_eps_prediction_train_too(tmp_path):
    trainer = make_trainer(tmp_path, schedule=VPSchedule("scaled_linear"), prediction="eps", max_steps=2)
    result = trainer.fit()
    assert result["step"] == 2 and torch.isfinite(torch.tensor(result["loss"]))


def test_resumable_sampler_splits_ranks_and_continues_mid_epoch():
    n, b, world = 23, 3, 2
    samplers = [ResumableSampler(n, batch_size=b, rank=r, world_size=world, seed=5) for r in range(world)]
    full = [list(s) for s in samplers]
    assert len(full[0]) == len(full[1]) == 9  # 3 global batches of 6; 5 items dropped
    assert not set(full[0]) & set(full[1])
    perm = samplers[0].permutation(0).tolist()
    assert sorted(full[0] + full[1]) == sorted(perm[:18])
    for s in samplers:
        s.set_position(0, 6)
    assert [list(s) for s in samplers] == [f[3:] for f in full]
    samplers[0].set_position(1, 0)
    assert list(samplers[0]) != full[0]  # a new epoch reshuffles
    with pytest.raises(ValueError, match="multiple of the global batch"):
        samplers[0].set_position(0, 4)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableSampler(5, batch_size=3, world_size=2)


def test_pack_context_zeroes_and_trims_padding():
    tokens = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    tokens[0, 2:] = float("nan")  # padding can hold anything
    packed, packed_mask = pack_context(tokens, mask)
    assert packed.shape == (2, 3, 3) and packed_mask.tolist() == mask[:, :3].tolist()
    assert torch.equal(packed[0, 2], torch.zeros(3)) and torch.equal(packed[1], tokens[1, :3])


def test_dry_run_measures_activations_and_the_largest_batch(tmp_path):
    small = make_trainer(tmp_path / "a", mixed_precision="no")
    report = small.dry_run(memory_gb=0.01)
    assert report.trainable_params == sum(p.numel() for p in small.unwrapped_model.parameters())
    assert report.frozen_params == sum(p.numel() for p in small.autoencoder.parameters()) + sum(
        p.numel() for p in small.text_encoder.parameters()
    )
    act = report.activations.per_sample
    assert act > 0
    assert report.estimate(report.max_batch) <= report.memory_bytes < report.estimate(report.max_batch + 1)
    # twice the frames: about twice the activation memory per sample
    double = make_trainer(tmp_path / "b", p=parts(frames=8), mixed_precision="no").dry_run(memory_gb=0.01)
    assert 1.8 < double.activations.per_sample / act < 2.2
    # bf16 autocast saves half-size activations for the convolutions
    half = make_trainer(tmp_path / "c", mixed_precision="bf16").dry_run(memory_gb=0.01)
    assert half.activations.per_sample < 0.8 * act
    assert not (tmp_path / "a").exists()  # nothing written, nothing trained


def test_recipe_parser_shares_the_flags():
    parser = recipe_parser("test", max_steps=7, lr=0.5)
    args = parser.parse_args(
        "--output-dir x --batch-size 3 --resume --seed 9 --dry-run --max-grad-norm none --lr-schedule cosine".split()
    )
    config = config_from_args(args, frames=4)
    assert (config.max_steps, config.lr, config.output_dir, config.batch_size) == (7, 0.5, "x", 3)
    assert config.resume and config.seed == 9 and args.dry_run and config.max_grad_norm is None
    assert config.lr_schedule == "cosine" and config.extra == {"frames": 4}
    with pytest.raises(ValueError, match=r"cond_dropout=1\.5"):
        TrainConfig(cond_dropout=1.5)
    with pytest.raises(TypeError, match="unknown TrainConfig default"):
        recipe_parser("test", max_step=3)


def test_cli_runs_a_recipe_and_resumes(tmp_path, capsys):
    common = [
        "--output-dir",
        str(tmp_path),
        *"--items 8 --frames 3 --size 8 --batch-size 4 --width 8 --ae-width 8".split(),
    ]
    assert cli_main(["train", str(RECIPE), *common, "--max-steps", "2"]) == 0
    assert cli_main(["train", str(RECIPE), *common, "--max-steps", "3", "--resume"]) == 0
    out = capsys.readouterr()
    assert "resumed from" in out.out + out.err
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-00000003"
    assert len(list((tmp_path / "samples" / "step-00000003").glob("*.gif"))) == 2
    assert cli_main(["train", "examples/tiny_latent", *common, "--dry-run", "--memory-gb", "1"]) == 0
    out = capsys.readouterr()
    assert "largest batch that fits" in out.out + out.err
    assert cli_main(["train", str(tmp_path / "nope.py")]) == 2
    assert "nope.py" in capsys.readouterr().err


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_follows_the_warmup_decay(tmp_path, warmup):
    from mediadiff.train import ema_decay_at

    trainer = make_trainer(tmp_path, max_steps=4, grad_accum=1, ema_decay=0.99, ema_warmup=warmup)
    seen = []
    for step in range(1, 5):
        trainer.fit(until=step)
        seen.append(trainer.unwrapped_model.conv_in.weight.detach().clone())
    expected = seen[0]  # the first update copies the weights
    for n, weights in enumerate(seen[1:], start=1):
        d = ema_decay_at(n, 0.99, warmup)
        expected = d * expected + (1 - d) * weights
    torch.testing.assert_close(trainer.ema.module.conv_in.weight, expected)
    assert ema_decay_at(1, 0.99, warmup) == (2 / 11 if warmup else 0.99)
    assert ema_decay_at(10_000, 0.99) == 0.99


def test_the_recipe_skeleton_runs_any_modality_with_what_the_recipe_passes_in(tmp_path):
    """A 1-D recipe in a few lines: checks, seeded build, cache-only, training with a periodic
    evaluation through a pipeline of the EMA weights, and export, all from the Recipe."""
    from mediadiff.train import Parts, Recipe
    from mediadiff.train.testing import Bumps

    class Pipeline:  # what a modality's pipeline offers the skeleton: its constructor, autocast, a call
        def __init__(self, backbone, autoencoder, text_encoder, schedule, *, prediction, defaults):
            self.backbone, self.defaults, self.autocast = backbone, defaults, None

    calls = []

    def evaluate(pipeline, ctx):
        calls.append((pipeline.backbone.training, pipeline.autocast, pipeline.defaults, ctx.step))
        return {"paths": [], "metrics": {"probe_acc": 0.5}}

    def export(run_dir, folder, pipeline, *, info):
        weights = load_model_weights(run_dir, pipeline.backbone)  # the EMA weights
        return {"folder": folder, "info": info, "weights": weights.name}

    def add_args(g):
        g.add_argument("--items", type=int, default=8)
        g.add_argument("--length", type=int, default=16)

    def check(args):
        if args.length % 4:
            raise SystemExit("--length must be a multiple of 4")

    def build(args):
        return Parts(
            Bumps(args.items, length=args.length), TinyBackbone(channels=2, width=8, depth=1, dims=1),
            FlowSchedule(), "flow", text_encoder=HashTextEncoder(dim=16), pipeline_defaults={"length": args.length},
            evaluate=evaluate,
        )  # fmt: skip

    recipe = Recipe(
        "recipes/examples/bumps.py", "Tiny 1-D recipe.\n\nMore words.", defaults={"batch_size": 4, "lr": 1e-3},
        add_args=add_args, build=build, extra=lambda args: {"length": args.length}, check=check, cache=True,
        pipeline=Pipeline, export=export,
    )  # fmt: skip
    common = ["--output-dir", str(tmp_path / "run"), "--mixed-precision", "no", "--max-steps", "2"]
    with pytest.raises(SystemExit, match="multiple of 4"):
        recipe.main([*common, "--length", "18"])
    with pytest.raises(SystemExit, match="--cache-only needs --cache DIR"):
        recipe.main([*common, "--cache-only"])
    cache = recipe.main([*common, "--cache", str(tmp_path / "cache"), "--cache-only"])
    assert len(cache) == 8 and cache.meta["fingerprint"]["data_key"] == "signal"  # Bumps names its key
    result = recipe.main([*common, "--cache", str(tmp_path / "cache"), "--sample-every", "1"])
    assert result["step"] == 2 and [c[3] for c in calls] == [1, 2]
    training, autocast, defaults, _ = calls[-1]
    assert autocast is False and defaults == {"length": 16}  # a fp32 run samples in fp32
    assert not training  # the EMA weights, in eval mode while sampling
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_key"] == "signal" and config["train"]["extra"] == {"length": 16}
    assert config["train"]["batch_size"] == 4 and config["cache"] == str(tmp_path / "cache")
    events = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["probe_acc"] for e in events if e.get("event") == "samples"] == [0.5, 0.5]
    exported = recipe.main([*common, "--export", str(tmp_path / "pipe")])
    assert exported == {"folder": str(tmp_path / "pipe"), "info": {"recipe": "recipes/examples/bumps.py"},
                        "weights": "ema.safetensors"}  # fmt: skip
