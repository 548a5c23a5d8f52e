"""Sharded training (FSDP2, ``torch.distributed.fsdp.fully_shard``) through accelerate, on GPUs and CPUs.

``accelerate launch --config_file recipes/accelerate/fsdp.yaml`` sets ``ACCELERATE_USE_FSDP`` and the
``FSDP_*`` settings for every process. On GPUs accelerate turns them into its FSDP mode itself; on CPUs
(processes over gloo) it silently ignores them and runs DDP. :func:`fsdp_plugin` reads the same
settings and :func:`shard_on_cpu` puts an accelerator created with ``cpu=True`` into the same FSDP2
mode, so ``accelerator.prepare`` shards the model with ``fully_shard`` (FSDP2 works over gloo; it keeps
parameter names, so checkpoints hold the same keys as DDP's and a run can move between the two).

FSDP2 shards every parameter along its first dimension (a ``DTensor`` with a ``Shard(0)`` placement);
gradients and AdamW's moments follow the parameters. :class:`ShardedEMA` keeps the EMA the same way:
each process averages its own shard (no communication; the average is element-wise), and the full
EMA is gathered only to write a checkpoint or to sample.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

__all__ = [
    "ShardedEMA",
    "fsdp_plugin",
    "fsdp_requested",
    "local_numel",
    "plain_copy",
    "shard_on_cpu",
    "unshard_cpu_state",
]


def fsdp_requested() -> bool:
    """Whether this process was launched with an FSDP accelerate config (``ACCELERATE_USE_FSDP=true``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def fsdp_plugin() -> Any:
    """accelerate's ``FullyShardedDataParallelPlugin`` from the launch's ``FSDP_*`` settings."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin()


def shard_on_cpu(accelerator: Any, plugin: Any) -> None:
    """Switch an accelerator made with ``cpu=True`` in a multi-process CPU run to FSDP with ``plugin``.

    accelerate only enters FSDP for GPU-like devices; on CPUs the same config would run plain DDP. The
    accelerator state's distributed type is set to FSDP (in ``PartialState`` too, which every new
    ``AcceleratorState()`` copies from) and the plugin installed, with the run's mixed precision, as
    accelerate does on GPUs. :func:`unshard_cpu_state` undoes the mark before the process's next
    accelerator. Only FSDP2 (``fsdp_version: 2``) is accepted on CPUs.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise ValueError(
            f"shard_on_cpu needs a multi-process CPU accelerator, got {accelerator.distributed_type}"
        )
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"FSDP on CPUs needs fsdp_version: 2 in the accelerate config (FSDP2, fully_shard, as in "
            f"recipes/accelerate/fsdp.yaml); got fsdp_version: {plugin.fsdp_version}, which is not supported on CPUs"
        )
    state = accelerator.state
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def unshard_cpu_state() -> None:
    """Put a process group that :func:`shard_on_cpu` marked FSDP back to multi-CPU, so that the next
    ``Accelerator`` of the process (a second trainer) is made, and sharded, the same way again."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    shared = PartialState._shared_state
    if shared.get("distributed_type") == DistributedType.FSDP and shared.get("device", None) is not None:
        if shared["device"].type == "cpu":
            shared["distributed_type"] = DistributedType.MULTI_CPU


def local_numel(tensors: Any) -> int:
    """Elements this process holds of ``tensors`` (a DTensor counts its local shard only)."""
    return sum((t.to_local() if isinstance(t, DTensor) else t).numel() for t in tensors)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


class ShardedEMA:
    """An exponential moving average of a (possibly FSDP-sharded) model's parameters and buffers.

    The same arithmetic as ``torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=..., use_buffers=True)``
    (a copy at the first update, then ``torch._foreach_lerp_(ema, weights, 1 - decay)``), applied to each
    process's local shard: the average is element-wise, so the shards of the average are the average of
    the shards, and no communication is needed. :meth:`full_state_dict` gathers it (every process must
    call it), :meth:`load_full_state_dict` scatters a full state back.

    model: the prepared model (its parameters DTensors under FSDP2, plain tensors otherwise).
    state_keys: the names a checkpoint holds (the plain model's ``state_dict()`` keys: parameters and
        persistent buffers).
    """

    def __init__(self, model: torch.nn.Module, multi_avg_fn: Any, state_keys: list[str]):
        self.names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
        self._n_params = len(list(model.parameters()))
        self.tensors = [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]
        self.state_keys = [k for k in state_keys if k in set(self.names)]
        self.multi_avg_fn = multi_avg_fn
        self.n_averaged = torch.tensor(0, dtype=torch.long)

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        """Average in ``model``'s current weights (its local shards)."""
        ema = [_local(t) for t in self.tensors]
        now = [_local(t.detach()) for t in [*model.parameters(), *model.buffers()]]
        if len(ema) != len(now):
            raise ValueError(f"the EMA tracks {len(ema)} tensors but the model has {len(now)}")
        if int(self.n_averaged) == 0:
            torch._foreach_copy_(ema, now)
        else:
            groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}
            for e, m in zip(ema, now):
                a, b = groups.setdefault((e.device, e.dtype), ([], []))
                a.append(e)
                b.append(m)
            for a, b in groups.values():
                self.multi_avg_fn(a, b, self.n_averaged)
        self.n_averaged += 1

    def parameters(self) -> list[torch.Tensor]:
        """The EMA of each parameter as held here (a DTensor shard under FSDP), in the model's order."""
        return self.tensors[: self._n_params]

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The full EMA under the checkpoint keys, on the CPU (a collective: every process calls it)."""
        out = {}
        for name, t in zip(self.names, self.tensors):
            if name in self.state_keys:
                full = t.full_tensor() if isinstance(t, DTensor) else t
                out[name] = full.detach().to("cpu", copy=True)
        return {k: out[k] for k in self.state_keys}

    def buffers(self) -> dict[str, torch.Tensor]:
        """Every averaged buffer (persistent or not) by name; buffers are never sharded."""
        return dict(zip(self.names[self._n_params :], self.tensors[self._n_params :]))

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Take a full EMA state (each process its shard of it)."""
        missing = [k for k in self.state_keys if k not in state]
        unexpected = [k for k in state if k not in set(self.state_keys)]
        if strict and (missing or unexpected):
            raise ValueError(
                f"the EMA state does not match the model ({len(missing)} missing, e.g. {missing[:1]}; "
                f"{len(unexpected)} unexpected, e.g. {unexpected[:1]})"
            )
        for name, t in zip(self.names, self.tensors):
            if name not in state:
                continue
            full = state[name].to(device=_local(t).device, dtype=t.dtype)
            if isinstance(t, DTensor):  # every process has the whole tensor: each keeps its slice
                shard = distribute_tensor(full, t.device_mesh, t.placements, src_data_rank=None)
                t.to_local().copy_(shard.to_local())
            else:
                t.copy_(full)


def plain_copy(
    meta_model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    device: torch.device,
) -> torch.nn.Module:
    """A plain (unsharded) module with ``meta_model``'s architecture on ``device``: every buffer from
    ``buffers`` (non-persistent ones included), then the full ``state`` (strict)."""
    model = copy.deepcopy(meta_model).to_empty(device=device)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name not in buffers:
                raise KeyError(f"buffer {name!r} of the model is missing")
            b.copy_(buffers[name])
    model.load_state_dict(state, strict=True)
    return model
