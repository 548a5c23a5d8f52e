"""FSDP2 through accelerate on two CPU processes over gloo: sharded state, sharded EMA, exact resume, = DDP.

The slow test launches the committed ``recipes/accelerate/fsdp.yaml`` (the config the README gives for
GPUs and several nodes) on the Shapes DiT recipe at a tiny size, and the same recipe under DDP
(``accelerate launch --multi_gpu``). The fast tests check the sharded EMA's arithmetic in one process.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "accelerate" / "fsdp.yaml"

WORKER = textwrap.dedent(
    """
    import importlib.util, json, sys
    import torch
    from torch.distributed.tensor import DTensor
    from mediadiff.train.fsdp import local_numel

    spec = importlib.util.spec_from_file_location("shapes_dit", "recipes/video/shapes_dit.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)

    def run(out, cache, until=None, resume=False):
        argv = ["--output-dir", out, "--cache", cache, "--items", "16", "--width", "32", "--depth", "2",
                "--heads", "2", "--batch-size", "2", "--max-steps", "4", "--lr", "1e-3", "--warmup-steps", "1",
                "--lr-schedule", "cosine", "--ema-decay", "0.9", "--no-ema-warmup", "--log-every", "1",
                "--checkpoint-every", "2", "--mixed-precision", "no", "--eval-num", "2"]
        args = recipe.RECIPE.parser().parse_args(argv + (["--resume"] if resume else []))
        torch.manual_seed(args.seed)
        trainer = recipe.RECIPE.trainer(args, recipe.RECIPE.build(args))
        trainer.fit(until)
        return trainer

    out, mode = sys.argv[1], sys.argv[2]
    straight = run(f"{out}/{mode}-straight", f"{out}/cache")
    model = straight.unwrapped_model
    result = {
        "rank": straight.rank, "world_size": straight.world_size,
        "distributed": str(straight.accelerator.distributed_type), "backend": str(straight.accelerator.state.backend),
        "params": sum(p.numel() for p in model.parameters()), "local_params": local_numel(model.parameters()),
        "dtensor_params": all(isinstance(p, DTensor) for p in model.parameters()),
        "local_optim": local_numel(
            v for s in straight.optimizer.optimizer.state.values() for k, v in s.items() if k != "step"
        ),
        "flops_per_step": straight.flops_per_step,
    }
    if mode == "fsdp":
        result["local_ema"] = local_numel(straight.ema.parameters())
        # one more backward (after the checkpoints were written): the gradients are shards too
        x0, cond = straight.prepare_batch(straight.next_batch())
        straight.accelerator.backward(straight.loss(x0, cond).mean())
        result["local_grads"] = local_numel(p.grad for p in model.parameters())
        run(f"{out}/fsdp-resumed", f"{out}/cache", until=2)
        run(f"{out}/fsdp-resumed", f"{out}/cache", resume=True)
    with open(f"{out}/{mode}-rank-{straight.rank}.json", "w") as f:
        json.dump(result, f)
    straight.accelerator.end_training()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: Path, out: Path, mode: str) -> None:
    how = ["--config_file", str(CONFIG)] if mode == "fsdp" else ["--multi_gpu"]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", *how, "--num_processes", "2",
        "--main_process_port", str(_free_port()), str(script), str(out), mode,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _checkpoint(run: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "checkpoints" / f"step-{step:08d}" / name)


def _losses(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [e["loss"] for e in lines if "loss" in e and "event" not in e]


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_shards_keeps_an_ema_resumes_exactly_and_matches_ddp(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    _launch(script, out, "fsdp")
    _launch(script, out, "ddp")
    fsdp = [json.loads((out / f"fsdp-rank-{r}.json").read_text()) for r in range(2)]
    ddp = [json.loads((out / f"ddp-rank-{r}.json").read_text()) for r in range(2)]
    assert [r["distributed"] for r in fsdp] == ["DistributedType.FSDP"] * 2 and fsdp[0]["backend"] == "gloo"
    assert ddp[0]["distributed"].endswith("MULTI_CPU")
    # sharded: each process holds half of the parameters, gradients, AdamW moments (2 per weight) and EMA
    for r in fsdp:
        n, local = r["params"], r["local_params"]
        assert r["dtensor_params"] and abs(local - n / 2) <= 64, r  # dim-0 shards, uneven by a row at most
        assert r["local_grads"] == local and r["local_optim"] == 2 * local and r["local_ema"] == local
    assert fsdp[0]["local_params"] + fsdp[1]["local_params"] == fsdp[0]["params"]
    for r in ddp:  # DDP replicates everything
        assert r["local_params"] == r["params"] and r["local_optim"] == 2 * r["params"]
    # model FLOPs per step are the same count whatever the sharding
    assert fsdp[0]["flops_per_step"] == ddp[0]["flops_per_step"] > 0

    straight, resumed = out / "fsdp-straight", out / "fsdp-resumed"
    # 2 steps, stop, resume, 2 steps == 4 steps straight: losses, weights and EMA bit for bit
    assert _losses(resumed) == _losses(straight) and len(_losses(straight)) == 4
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = _checkpoint(straight, 4, name), _checkpoint(resumed, 4, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # the checkpoint holds the full (gathered) weights and EMA, under the plain model's keys
    model, ema = _checkpoint(straight, 4, "model.safetensors"), _checkpoint(straight, 4, "ema.safetensors")
    assert sum(v.numel() for v in model.values()) >= fsdp[0]["params"] and ema.keys() == model.keys()
    assert not any("_fsdp" in k or "_orig_mod" in k for k in model)
    first = _checkpoint(straight, 2, "model.safetensors")
    assert any(not torch.equal(first[k], model[k]) for k in model)  # it trained
    assert any(not torch.equal(ema[k], model[k]) for k in model)  # the EMA is an average, not a copy
    # FSDP == DDP up to the order of the gradient reductions (reduce-scatter of shards vs all-reduce)
    ddp_model, ddp_ema = (
        _checkpoint(out / "ddp-straight", 4, "model.safetensors"),
        _checkpoint(out / "ddp-straight", 4, "ema.safetensors"),
    )
    for k in model:
        torch.testing.assert_close(model[k], ddp_model[k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ema[k], ddp_ema[k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_losses(straight), _losses(out / "ddp-straight"), rtol=1e-4, atol=1e-5)
    # the end-of-run evaluation sampled from the gathered EMA under FSDP too
    events = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [e for e in events if e.get("event") == "samples" and "all_acc" in e]


def test_sharded_ema_matches_averaged_model_bit_for_bit():
    """One process, plain tensors: ShardedEMA does AveragedModel's arithmetic (copy, then foreach lerp)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from mediadiff.train.fsdp import ShardedEMA
    from mediadiff.train.testing import TinyBackbone

    torch.manual_seed(0)
    model = TinyBackbone(channels=4, width=16, depth=1, context_dim=8)
    model.register_buffer("running", torch.zeros(3))
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ema = ShardedEMA(model, get_ema_multi_avg_fn(0.9), list(model.state_dict()))
    for step in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.running.add_(1.0)
        decay = 0.5 + 0.1 * step  # a changing decay, as the warm-up gives
        reference.multi_avg_fn = ema.multi_avg_fn = get_ema_multi_avg_fn(decay)
        reference.update_parameters(model)
        ema.update_parameters(model)
    full = ema.full_state_dict()
    assert full.keys() == reference.module.state_dict().keys()
    assert all(torch.equal(full[k], v) for k, v in reference.module.state_dict().items())
    assert int(ema.n_averaged) == int(reference.n_averaged) == 4
    # a round trip through a full state
    other = ShardedEMA(model, get_ema_multi_avg_fn(0.9), list(model.state_dict()))
    other.load_full_state_dict(full)
    assert all(torch.equal(other.full_state_dict()[k], v) for k, v in full.items())
    with pytest.raises(ValueError, match="1 missing"):
        other.load_full_state_dict({k: v for k, v in list(full.items())[1:]})


def test_fsdp_config_is_the_documented_one_and_fsdp2():
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_version"] == 2
    assert config["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "AdaLNZeroBlock"
    readme = (ROOT / "README.md").read_text()
    assert "--config_file recipes/accelerate/fsdp.yaml" in readme
