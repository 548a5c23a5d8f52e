"""Model FLOPs of a training step, and the accelerator's peak, for throughput and MFU.

``step_flops(model, *inputs)`` counts the floating-point operations of one forward and backward of
``model(*inputs)`` with :class:`torch.utils.flop_counter.FlopCounterMode` on a meta-device copy of the
model: no arithmetic is done, no memory is taken and the model itself (its weights, gradients, hooks,
``torch.compile`` wrapper) is never touched. FlopCounterMode counts matrix products, convolutions and
attention (2 FLOPs per multiply-add) and ignores element-wise work, which is the usual "model FLOPs"
of MFU (Chowdhery et al. 2022, "PaLM", App. B: model FLOPs utilisation = achieved model FLOPs / peak;
recomputation such as activation checkpointing is not counted).

``peak_flops(device)`` is the dense bf16 tensor-core peak of known GPUs (from the vendors' data
sheets), or None (a CPU, an unknown GPU) unless a peak is given. MFU is
``flops_per_step * steps_per_s / (peak * processes)``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["PEAK_BF16_TFLOPS", "meta_copy", "mfu", "peak_flops", "step_flops"]

# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets. Matched as
# substrings of torch.cuda.get_device_name(), in this order: specific names before their families.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "GB200": 2500.0,
    "B200": 2250.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200 NVL": 835.0,
    "H200": 989.4,  # SXM, the same tensor cores as H100 SXM with more, faster memory
    "GH200": 989.4,
    "H100": 989.4,  # SXM
    "H800": 989.4,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.1,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.2,
    "RTX 3090": 71.0,
}


def meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (shapes, dtypes and
    ``requires_grad`` kept, tied weights still tied); the copy costs no memory for its tensors.

    Take it from the plain module, before DDP / FSDP wrapping or ``torch.compile``."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty_like(value, device="meta").requires_grad_(value.requires_grad)
    return value


def step_flops(model: torch.nn.Module, *args: Any, backward: bool = True, **kwargs: Any) -> int:
    """FLOPs of one forward (and, with ``backward``, one backward) of ``model(*args, **kwargs)``.

    The backward is that of the outputs' sum into every trainable parameter and every input that
    requires grad, i.e. what ``loss.backward()`` of a training step does in the model (about twice
    the forward's matrix products: the gradients of inputs and of weights). Counted on
    :func:`meta_copy` of ``model`` (pass the plain module, not a DDP / FSDP / compiled wrapper; a
    module already on the meta device is used as it is) with the tensor inputs moved to meta: no
    compute, and nothing of ``model`` changes. The count is per call: a process's micro-batch.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    on_meta = all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
    twin = model if on_meta else meta_copy(model)
    args, kwargs = tree_map(_to_meta, args), tree_map(_to_meta, kwargs)
    counter = FlopCounterMode(display=False)
    with counter:
        out = twin(*args, **kwargs)
        if backward:
            leaves = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
            if leaves:
                sum(t.float().sum() for t in leaves).backward()
    for p in twin.parameters():  # the meta gradients of a model passed on meta
        p.grad = None
    return int(counter.get_total_flops())


def peak_flops(device: torch.device | str | None = None, tflops: float | None = None) -> float | None:
    """The dense bf16 peak of ``device`` in FLOP/s: ``tflops`` when given, else the table's entry for a
    known GPU (:data:`PEAK_BF16_TFLOPS`), else None (a CPU, or a GPU not in the table)."""
    if tflops is not None:
        if not tflops > 0:
            raise ValueError(f"tflops must be > 0 (the device's peak in TFLOP/s), got {tflops}")
        return float(tflops) * 1e12
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value * 1e12
    return None


def mfu(
    flops_per_step: float, seconds_per_step: float, peak: float | None, processes: int = 1
) -> float | None:
    """Model FLOPs utilisation: ``flops_per_step / seconds_per_step / (peak * processes)``; None
    without a peak. ``flops_per_step`` counts all processes' work, ``peak`` is one device's FLOP/s."""
    if peak is None or seconds_per_step <= 0:
        return None
    return flops_per_step / seconds_per_step / (peak * processes)
