"""Model FLOPs of a training step (mediadiff.train.flops): exact counts on small nets, the peak table."""

import pytest
import torch

from mediadiff.train import flops
from mediadiff.train.flops import mfu, peak_flops, step_flops


def test_step_flops_of_an_mlp_are_the_matrix_products_of_forward_and_backward():
    n, a, b, c = 5, 7, 11, 3
    model = torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.GELU(), torch.nn.Linear(b, c))
    x = torch.randn(n, a)
    forward = 2 * n * (a * b + b * c)  # 2 FLOPs per multiply-add
    # backward: both weight gradients, and the input gradient of the second layer only (x needs none)
    backward = 2 * n * (a * b + b * c) + 2 * n * b * c
    assert step_flops(model, x, backward=False) == forward
    assert step_flops(model, x) == forward + backward
    # an input that requires grad adds the first layer's input gradient
    assert step_flops(model, x.requires_grad_()) == forward + backward + 2 * n * a * b


def test_step_flops_leave_the_model_untouched():
    model = torch.nn.Linear(4, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step_flops(model, torch.randn(2, 4))
    assert model.weight.grad is None and model.weight.device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_step_flops_count_attention_and_scale_with_the_batch():
    from mediadiff.train.testing import TinyBackbone

    model = TinyBackbone(channels=4, width=16, depth=1, context_dim=8)
    x, t, ctx = torch.randn(2, 4, 2, 4, 4), torch.rand(2), torch.randn(2, 3, 8)
    one = step_flops(model, x[:1], t[:1], context=ctx[:1])
    assert one > 0 and step_flops(model, x, t, context=ctx) == 2 * one


def test_peak_flops_table_and_override(monkeypatch):
    assert peak_flops("cpu") is None
    assert peak_flops("cpu", tflops=10) == 10e12
    with pytest.raises(ValueError, match="tflops must be > 0"):
        peak_flops("cpu", tflops=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name, tf in [
        ("NVIDIA H200", 989.4),
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.1),
    ]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=name: n)
        assert peak_flops("cuda") == pytest.approx(tf * 1e12), name
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert peak_flops("cuda") is None
    assert "H200" in flops.PEAK_BF16_TFLOPS


def test_mfu():
    assert mfu(1e12, 0.5, 4e12, processes=1) == pytest.approx(0.5)
    assert mfu(1e12, 0.5, 4e12, processes=2) == pytest.approx(0.25)
    assert mfu(1e12, 0.5, None) is None


def test_trainer_logs_flops_per_step_tflops_and_mfu(tmp_path):
    import json

    from mediadiff.diffusion import FlowSchedule
    from mediadiff.train import TrainConfig, Trainer
    from mediadiff.train.testing import HashTextEncoder, MovingSquares, TinyAutoencoder, TinyBackbone

    torch.manual_seed(0)
    config = TrainConfig(
        output_dir=str(tmp_path), max_steps=3, batch_size=2, grad_accum=2, mixed_precision="no",
        log_every=1, ema_decay=0, peak_tflops=0.5,
    )  # fmt: skip
    model = TinyBackbone(channels=4, width=16, depth=1, context_dim=8)
    trainer = Trainer(
        model, FlowSchedule(), MovingSquares(8, num_frames=4, size=8), config, prediction="flow",
        autoencoder=TinyAutoencoder(width=8), text_encoder=HashTextEncoder(dim=8),
    )  # fmt: skip
    trainer.fit()
    # the backbone's forward + backward on one micro-batch of latents [2 4 2 4 4] with a text context
    x0, cond = trainer.prepare_batch(trainer.next_batch())
    expected = 2 * step_flops(model, x0, torch.zeros(2), **cond)  # x grad_accum, one process
    assert trainer.flops_per_step == expected > 0
    logs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logs = [e for e in logs if "samples_per_s" in e]
    assert len(logs) == 3 and all(e["flops_per_step"] == expected for e in logs)
    for e in logs:  # TFLOP/s and MFU follow from the step time, which samples/s gives too
        seconds_per_step = config.grad_accum * config.batch_size / e["samples_per_s"]
        assert e["tflops_per_s"] == pytest.approx(expected / seconds_per_step / 1e12, rel=1e-6)
        assert e["mfu"] == pytest.approx(e["tflops_per_s"] / 0.5, rel=1e-6)
