"""Atomic files and folders, random-number-generator states, and the checkpoint folder layout.

A checkpoint is one folder ``checkpoints/step-00001000/``::

    model.safetensors      full (unsharded) model weights, fp32
    ema.safetensors        EMA weights (when the EMA is on)
    optimizer.pt           optimizer state keyed by parameter name
    scheduler.pt           learning-rate schedule state
    rng-00000.pt ...       python / numpy / torch (/ CUDA) RNG states and the trainer's generator, one per process
    state.json             step, data position (epoch, offset), counters, config; written last

It is written under a temporary name (``.tmp-step-...``), every file flushed and fsynced, then renamed
into place in one ``os.replace``: a folder named ``step-*`` that has ``state.json`` is complete. A crash
leaves only a ``.tmp-*`` folder, which the next run deletes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mediadiff.utils import FileLock, LockedError, fsync_dir, recover_published

__all__ = [
    "RUN_LOCK",
    "STATE_FILE",
    "CheckpointError",
    "checkpoint_name",
    "complete_checkpoints",
    "get_rng_state",
    "latest_checkpoint",
    "load_model_weights",
    "load_torch",
    "lock_run_folder",
    "prune_checkpoints",
    "read_state",
    "remove_stale_temporaries",
    "resolve_checkpoint",
    "save_torch",
    "set_rng_state",
]

STATE_FILE = "state.json"
RUN_LOCK = ".lock"  # held in a run's output folder while it trains (mediadiff.utils.FileLock)
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (a full disk, a file-size limit, a vanished folder). Nothing of
    it is left behind; the previous checkpoint is intact."""


def lock_run_folder(out: str | os.PathLike, log: Any = print) -> FileLock:
    """Lock run folder ``out`` for one training run; :class:`~mediadiff.utils.LockedError` naming the live
    run that holds it. A lock left by a killed run is taken over, and ``log`` told whose it was."""
    lock = FileLock(Path(out) / RUN_LOCK, f"the run folder {out}")
    try:
        lock.acquire()
    except LockedError as err:
        raise LockedError(
            f"{err}; another training run writes there. Wait for it to end, stop it, or choose another "
            "--output-dir",
            err.holder,
        ) from None
    if lock.stale is not None:
        log(lock.stale_message())
    return lock


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` optimizer steps."""
    return f"step-{step:08d}"


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` then flush and fsync (the file sits in a temporary folder that is renamed later)."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def load_torch(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``: checkpoints hold tensors and plain Python values only."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing")
    return torch.load(path, map_location="cpu", weights_only=True)


def complete_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``folder``, or None."""
    found = complete_checkpoints(folder)
    return found[-1][1] if found else None


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints; returns what was deleted.

    Each is first renamed to a ``.tmp-`` name (one atomic step), then deleted: a process killed while
    deleting leaves a temporary folder that the next start removes, never a ``step-*`` folder that
    still looks complete with some of its files gone."""
    folder = Path(folder)
    found = complete_checkpoints(folder)
    doomed = [p for _, p in found[: max(0, len(found) - keep)]]
    for p in doomed:
        gone = p.with_name(f".tmp-pruned-{p.name}")
        os.replace(p, gone)
        fsync_dir(folder)
        shutil.rmtree(gone)
    return doomed


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete ``.tmp-*`` leftovers of interrupted saves; returns them.

    A save of a step that already had a checkpoint (saved again after a resume) moves the old folder
    aside as ``.old-*`` before renaming the new one into place; when the process died between the two
    renames, the old folder is the only complete copy and is put back (:func:`~mediadiff.utils.recover_published`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    recover_published(folder)
    stale = [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    for p in stale:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return stale


def get_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """This process's python, numpy, torch (and current CUDA device) RNG states, and ``generator``'s.

    Plain Python values and tensors only, so :func:`load_torch` can read it with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`get_rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if generator is not None:
        if "generator" not in state:
            raise KeyError("the checkpoint's RNG file has no trainer generator state")
        generator.set_state(state["generator"])


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint folder."""
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint: {STATE_FILE} is missing")
    return json.loads(file.read_text())


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder as given, or a run folder's newest complete checkpoint; FileNotFoundError else."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    newest = latest_checkpoint(path / "checkpoints")
    if newest is None:
        raise FileNotFoundError(f"{path} is neither a checkpoint nor a run folder with checkpoints/")
    return newest


def load_model_weights(path: str | os.PathLike, model: torch.nn.Module, *, ema: bool = True) -> Path:
    """Load a checkpoint's weights into ``model``: the EMA weights when present and ``ema``, else the
    trained weights. ``path`` is a checkpoint folder or a run folder (its newest checkpoint). A model
    carrying LoRA adapters (:func:`mediadiff.nn.lora.add_lora`) takes a LoRA run's checkpoint, which
    holds exactly its adapter weights."""
    from safetensors.torch import load_model

    from mediadiff.nn.lora import has_lora

    adapters_only = has_lora(model)
    path = resolve_checkpoint(path)
    file = (
        path / "ema.safetensors"
        if ema and (path / "ema.safetensors").is_file()
        else path / "model.safetensors"
    )
    missing, unexpected = load_model(
        model, file, strict=not adapters_only, device=str(next(model.parameters()).device)
    )
    if adapters_only:
        missing = [k for k in missing if ".lora_" in k]
        if missing or unexpected:
            raise ValueError(
                f"{file}: its adapters do not fit the model ({len(missing)} missing, {len(unexpected)} unexpected, "
                f"e.g. {(missing or unexpected)[0]})"
            )
    return file
