"""``--compile`` in training: the backbone compiled in place, the same keys, the same losses as eager.

The compiled-vs-eager comparison compiles a forward and backward with inductor (minutes on a loaded
CPU): it is marked slow. The fast checks need no compilation (``Module.compile`` is lazy).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mediadiff.diffusion import FlowSchedule
from mediadiff.train import TrainConfig, Trainer, config_from_args, recipe_parser
from mediadiff.train.testing import HashTextEncoder, MovingSquares, TinyAutoencoder, TinyBackbone

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def make_trainer(out, **overrides):
    torch.manual_seed(0)
    settings = dict(
        output_dir=str(out), max_steps=4, batch_size=4, lr=1e-3, warmup_steps=1, cond_dropout=0.5,
        mixed_precision="no", checkpoint_every=2, log_every=1, ema_decay=0.9,
    )  # fmt: skip
    settings.update(overrides)
    return Trainer(
        TinyBackbone(channels=4, width=16, depth=1, context_dim=8), FlowSchedule(),
        MovingSquares(16, num_frames=4, size=8), TrainConfig(**settings), prediction="flow",
        autoencoder=TinyAutoencoder(width=8), text_encoder=HashTextEncoder(dim=8),
    )  # fmt: skip


def test_compile_flag_and_plain_state_dict_keys(tmp_path):
    args = recipe_parser("x").parse_args(["--compile"])
    assert config_from_args(args).compile is True
    assert config_from_args(recipe_parser("x").parse_args([])).compile is False
    eager, compiled = make_trainer(tmp_path / "e"), make_trainer(tmp_path / "c", compile=True)
    # compiled in place: the trained module is the backbone itself, its keys without _orig_mod.
    assert compiled.unwrapped_model._compiled_call_impl is not None
    assert eager.unwrapped_model._compiled_call_impl is None
    assert list(compiled.unwrapped_model.state_dict()) == list(eager.unwrapped_model.state_dict())
    # the EMA copy (what samples come from) is made before compiling: it stays eager
    assert compiled.ema.module._compiled_call_impl is None
    assert list(compiled.ema.module.state_dict()) == list(eager.ema.module.state_dict())


def _losses(run: Path) -> list[float]:
    import json

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [e["loss"] for e in lines if "loss" in e and "event" not in e]


@pytest.mark.slow
def test_compiled_training_matches_eager_and_checkpoints_cross_over(tmp_path):
    eager = make_trainer(tmp_path / "eager")
    eager.fit()
    compiled = make_trainer(tmp_path / "compiled", compile=True)
    compiled.fit()
    # Tolerance: inductor fuses the element-wise work and may reorder reductions (GroupNorm, means),
    # so fp32 results differ by rounding (~1e-7 relative per op). Adam divides by sqrt(v): a weight
    # whose gradient is near 0 can move differently by up to about lr = 1e-3 per step, so weights are
    # compared to 1e-4 absolute after 4 steps; the losses (means over the batch) to 1e-5 relative.
    # Observed here: weights within 1.3e-6, losses within 7e-8 relative.
    torch.testing.assert_close(
        _losses(tmp_path / "compiled"), _losses(tmp_path / "eager"), rtol=1e-5, atol=1e-6
    )
    ck = "checkpoints/step-00000004"
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(tmp_path / "eager" / ck / name), load_file(tmp_path / "compiled" / ck / name)
        assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4)
    # a compiled run's checkpoint resumes in an eager run and vice versa (same files, same keys)
    half = make_trainer(tmp_path / "c2e", compile=True)
    half.fit(until=2)
    rest = make_trainer(tmp_path / "c2e", resume=True)
    assert rest.step == 2
    rest.fit()
    half = make_trainer(tmp_path / "e2c")
    half.fit(until=2)
    rest = make_trainer(tmp_path / "e2c", resume=True, compile=True)
    rest.fit()
    for run in ("c2e", "e2c"):
        torch.testing.assert_close(_losses(tmp_path / run), _losses(tmp_path / "eager"), rtol=1e-5, atol=1e-6)
        a, b = (
            load_file(tmp_path / "eager" / ck / "model.safetensors"),
            load_file(tmp_path / run / ck / "model.safetensors"),
        )
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4)


FSDP_WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from mediadiff.diffusion import FlowSchedule
    from mediadiff.train import TrainConfig, Trainer
    from mediadiff.train.testing import HashTextEncoder, MovingSquares, TinyAutoencoder
    from mediadiff.video import DiT

    def run(out, compile):
        torch.manual_seed(0)
        config = TrainConfig(output_dir=out, max_steps=3, batch_size=2, lr=1e-3, mixed_precision="no", log_every=1,
                             ema_decay=0.9, compile=compile, checkpoint_every=100)
        model = DiT(in_channels=4, patch=(1, 2, 2), width=32, depth=2, heads=2, context_dim=8)
        trainer = Trainer(model, FlowSchedule(), MovingSquares(8, num_frames=4, size=8), config, prediction="flow",
                          autoencoder=TinyAutoencoder(width=8), text_encoder=HashTextEncoder(dim=8))
        trainer.fit()
        return trainer

    eager, compiled = run(sys.argv[1] + "/eager", False), run(sys.argv[1] + "/compiled", True)
    with open(f"{sys.argv[1]}/rank-{eager.rank}.json", "w") as f:
        json.dump({"fsdp": [eager.fsdp, compiled.fsdp]}, f)
    compiled.accelerator.end_training()
    """
)


@pytest.mark.slow
def test_compiled_training_under_fsdp_matches_eager(tmp_path):
    import json

    script = tmp_path / "worker.py"
    script.write_text(FSDP_WORKER)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "recipes" / "accelerate" / "fsdp.yaml"), "--num_processes", "2", "--main_process_port", "0",
        str(script), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert json.loads((tmp_path / "rank-0.json").read_text())["fsdp"] == [True, True]
    # the tolerance of the one-process test above
    torch.testing.assert_close(
        _losses(tmp_path / "compiled"), _losses(tmp_path / "eager"), rtol=1e-5, atol=1e-6
    )
    a = load_file(tmp_path / "eager" / "checkpoints" / "step-00000003" / "model.safetensors")
    b = load_file(tmp_path / "compiled" / "checkpoints" / "step-00000003" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4)
