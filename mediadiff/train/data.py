"""Data order that can stop and continue anywhere, batching of raw and cached items.

The data position of a run is ``(epoch, offset)``: the epoch's seeded permutation and how many of its
samples all processes together have consumed. A checkpoint stores it; :class:`ResumableSampler`
restarts from it, so a resumed run sees exactly the samples the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from mediadiff.text.context import pad_context

__all__ = [
    "ResumableSampler",
    "collate_cached",
    "collate_raw",
    "resolve_data_key",
]


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffle, split over processes, that can start in the middle of an epoch.

    Every epoch draws one permutation of all items from ``(seed, epoch)``, identical in every process,
    and cuts it into global batches of ``batch_size * world_size``; the incomplete tail is dropped so
    every process runs the same number of steps. Process ``rank`` takes slice ``rank`` of each global
    batch, so processes never see the same item within a step. ``offset`` (global samples already
    consumed in this epoch) is a multiple of the global batch; it stays meaningful when the number of
    processes changes between runs.
    """

    def __init__(
        self,
        num_items: int,
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.global_batch = batch_size * world_size
        if num_items < self.global_batch:
            raise ValueError(
                f"the dataset has {num_items} items, fewer than one global batch of {self.global_batch} "
                f"(--batch-size {batch_size} x {world_size} processes); lower --batch-size or add data"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        self.num_items, self.batch_size, self.rank, self.world_size = num_items, batch_size, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.offset = 0, 0

    @property
    def samples_per_epoch(self) -> int:
        """Global samples consumed per epoch (a multiple of the global batch)."""
        return self.num_items // self.global_batch * self.global_batch

    def set_position(self, epoch: int, offset: int) -> None:
        """Start the next iteration at global sample ``offset`` of epoch ``epoch``."""
        if offset % self.global_batch or not 0 <= offset <= self.samples_per_epoch:
            raise ValueError(
                f"data offset {offset} is not a multiple of the global batch {self.global_batch} within "
                f"[0, {self.samples_per_epoch}]: the checkpoint was written with another batch size"
            )
        self.epoch, self.offset = epoch, offset

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of all items in ``epoch``: ``[num_items]``."""
        if not self.shuffle:
            return torch.arange(self.num_items)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=g)

    def __iter__(self) -> Iterator[int]:
        order = self.permutation(self.epoch)[self.offset : self.samples_per_epoch]  # [n_left]
        mine = order.view(-1, self.world_size, self.batch_size)[:, self.rank]  # [steps_left batch]
        return iter(mine.flatten().tolist())

    def __len__(self) -> int:
        return (self.samples_per_epoch - self.offset) // self.world_size


def resolve_data_key(dataset: Any, data_key: str | None = None) -> str:
    """The key of the tensor in ``dataset``'s items: ``data_key`` when given, else ``dataset.data_key``.

    There is no default: the recipe or the dataset names it. Neither given is a ``ValueError`` that
    names the keys the items have.
    """
    key = data_key if data_key is not None else getattr(dataset, "data_key", None)
    if key is None:
        try:
            keys = f"its items have the keys {sorted(dataset[0])}"
        except Exception as err:
            keys = f"its first item could not be read ({type(err).__name__}: {err})"
        raise ValueError(
            f"name the data key of {type(dataset).__name__}: pass data_key=... (the recipe) or give the "
            f"dataset a data_key attribute; {keys}"
        )
    if not isinstance(key, str):
        raise TypeError(f"data_key must be a string, got {type(key).__name__} {key!r}")
    return key


def collate_raw(items: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """Batch raw dataset items: ``{"data": [b ...] stacked items[key], "text": [b] captions}``."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    if key not in items[0]:
        raise KeyError(
            f"dataset items have no {key!r} (keys: {sorted(items[0])}); pass the data_key they have"
        )
    data = torch.stack([it[key] for it in items])  # [b ...]
    return {"data": data, "text": [str(it.get("text", "")) for it in items]}


def collate_cached(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch cache items: ``{"latent": [b ...], "tokens": [b l d], "mask": [b l]}`` (text parts if present)."""
    batch: dict[str, Any] = {"latent": torch.stack([it["latent"] for it in items])}  # [b ...]
    if "tokens" in items[0]:
        batch["tokens"], batch["mask"] = pad_context(
            [it["tokens"] for it in items], [it["mask"] for it in items]
        )
    return batch
