"""Which mixed precision a run gets: bf16 autocast where the hardware has it, fp32 master weights always.

Light on purpose (imports torch only), so ``mediadiff info`` can ask without importing accelerate.
"""

from __future__ import annotations

import torch

from mediadiff.utils import cpu_bf16_supported

__all__ = ["MIXED_PRECISION", "resolve_mixed_precision"]

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


def resolve_mixed_precision(name: str, cpu: bool) -> str:
    """Turn ``auto | no | bf16 | fp16`` into what ``accelerate.Accelerator(mixed_precision=...)`` takes.

    ``auto`` is ``bf16`` on a CUDA device that supports it and on a CPU with native bf16, else ``no``.
    ``fp16`` needs CUDA (it needs a gradient scaler, which accelerate only runs there).
    """
    if name not in MIXED_PRECISION:
        raise ValueError(f"--mixed-precision must be one of {list(MIXED_PRECISION)}, got {name!r}")
    if name == "auto":
        if cpu:
            return "bf16" if cpu_bf16_supported() else "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if name == "fp16" and cpu:
        raise ValueError("--mixed-precision fp16 needs a CUDA device; use bf16 or no on CPU")
    return name
