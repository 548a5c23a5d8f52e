"""Dry-run arithmetic: parameter counts, activation memory per sample, the largest batch that fits.

Activation memory is measured, not guessed: one forward and backward at batch 1 and at batch 2 with
``torch.autograd.graph.saved_tensors_hooks`` summing the bytes autograd keeps for the backward pass
(each storage once, parameters excluded). The difference is the cost of one more sample; the rest is
a per-step constant (e.g. bf16 copies of the weights under autocast).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

__all__ = [
    "ActivationEstimate",
    "DryRunReport",
    "count_parameters",
    "measure_saved_bytes",
    "total_memory_bytes",
]

GIB = 1024**3


def count_parameters(module: object) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts of an ``nn.Module`` (``(0, 0)`` for anything else)."""
    if not isinstance(module, torch.nn.Module):
        return 0, 0
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


def measure_saved_bytes(step: Callable[[], torch.Tensor], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves during ``step()`` (a forward returning a scalar loss).

    Each storage is counted once; storages of ``exclude`` (the parameters) are not counted. The loss
    is then back-propagated so the graph is freed the normal way.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and ptr != 0:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(seen.values())


@dataclass
class ActivationEstimate:
    """Saved activation bytes: ``fixed + per_sample * batch``."""

    per_sample: int
    fixed: int

    @classmethod
    def measure(
        cls, step: Callable[[int], torch.Tensor], exclude: Iterable[torch.Tensor] = ()
    ) -> ActivationEstimate:
        """Run ``step(batch)`` at batch 1 and 2 (see :func:`measure_saved_bytes`)."""
        exclude = list(exclude)
        one = measure_saved_bytes(lambda: step(1), exclude)
        two = measure_saved_bytes(lambda: step(2), exclude)
        per_sample = max(two - one, 0)
        return cls(per_sample=per_sample, fixed=max(one - per_sample, 0))


def total_memory_bytes(device: torch.device) -> int:
    """Memory of a CUDA device, or the machine's physical RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class DryRunReport:
    """What ``--dry-run`` prints (also returned for programmatic use)."""

    trainable_params: int
    frozen_params: int  # autoencoder, text encoder and frozen backbone parameters
    state_bytes: int  # weights + gradients + AdamW moments + EMA (fp32) + frozen weights
    activations: ActivationEstimate
    mixed_precision: str
    memory_bytes: int  # the budget
    batch_size: int  # the configured per-process batch

    @property
    def max_batch(self) -> int:
        """Largest per-process batch whose estimated memory fits the budget (0 if none does)."""
        free = self.memory_bytes - self.state_bytes - self.activations.fixed
        if free <= 0:
            return 0
        if self.activations.per_sample == 0:
            raise ValueError("measured no activation memory per sample; is the model trainable?")
        return int(free // self.activations.per_sample)

    def estimate(self, batch: int) -> int:
        """Estimated bytes at a per-process ``batch``."""
        return self.state_bytes + self.activations.fixed + self.activations.per_sample * batch

    def format(self) -> str:
        """A small human-readable table."""
        rows = [
            ("trainable parameters", f"{self.trainable_params:,}"),
            ("frozen parameters", f"{self.frozen_params:,}"),
            ("weights+grads+AdamW+EMA", f"{self.state_bytes / GIB:.3f} GiB"),
            (
                f"activations per sample ({self.mixed_precision})",
                f"{self.activations.per_sample / 2**20:.2f} MiB",
            ),
            ("activations, per-step constant", f"{self.activations.fixed / 2**20:.2f} MiB"),
            (f"estimate at batch {self.batch_size}", f"{self.estimate(self.batch_size) / GIB:.3f} GiB"),
            ("memory budget", f"{self.memory_bytes / GIB:.2f} GiB"),
            ("largest batch that fits", f"{self.max_batch}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
