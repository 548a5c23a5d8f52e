"""From a training run to a pipeline folder: the run's newest checkpoint (its EMA weights) in a pipeline.

A recipe builds its pipeline from the same parts it trains (backbone, autoencoder, text encoder,
schedule) and hands it here with the run folder; :func:`export_run` loads the checkpoint's weights
into the backbone and writes the pipeline with :func:`run_summary` in its ``info``. Works for any
pipeline class (anything with ``backbone``, ``info`` and ``save_pretrained``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["export_run", "run_summary"]


def run_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What a training run folder says about itself: its config, steps, last loss and training time.

    ``train_minutes`` adds up the run's sessions: each from a ``start`` event of the trainer (after
    any cache build) to the last record before the next start (a resumed run has several).
    ``periodic_eval`` lists the periodic evaluations: every ``*_acc`` value of each ``samples`` event.
    """
    run = Path(run_dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r and "event" not in r]
    evals = [r for r in records if r.get("event") == "samples" and any(k.endswith("_acc") for k in r)]
    seconds, begin, last = 0.0, None, None
    for r in records:
        if r.get("event") == "start":
            if begin is not None:
                seconds += last - begin
            begin = r["time"]
        last = r.get("time", last)
    if begin is not None:
        seconds += last - begin
    summary: dict[str, Any] = {
        "run_dir": str(run),
        "steps": max((r.get("step", 0) for r in records), default=0),
        "last_loss": steps[-1]["loss"] if steps else None,
        "train_minutes": round(seconds / 60, 1) if begin is not None else None,
        "sessions": sum(r.get("event") == "start" for r in records),
        "periodic_eval": [{k: v for k, v in r.items() if k == "step" or k.endswith("_acc")} for r in evals],
    }
    config = run / "config.json"
    if config.is_file():
        summary["config"] = json.loads(config.read_text())
    return summary


def export_run(
    run_dir: str | os.PathLike,
    folder: str | os.PathLike,
    pipeline: Any,
    *,
    info: dict[str, Any] | None = None,
    dtype: str | None = "float16",
) -> Path:
    """Write the newest checkpoint of a training run (its EMA weights) as a pipeline folder; returns it.

    ``pipeline``'s backbone must be built as the recipe built it; its weights are replaced by the
    checkpoint's (the EMA's when the run kept one). A LoRA run's adapters go on ``pipeline``'s backbone (its
    base model) and are merged into its weights. The folder's ``info`` holds :func:`run_summary`
    (steps, training time, periodic evaluation) merged with ``info`` and the pipeline's own ``info``.
    ``dtype``: storage type of the backbone weights (``"float16"``, ``"bfloat16"``, None: float32).
    """
    from mediadiff.train.checkpoint import load_model_weights, read_state, resolve_checkpoint

    backbone = pipeline.backbone
    lora = read_state(resolve_checkpoint(run_dir)).get("lora")
    if lora:  # a LoRA run: its adapters on the base backbone, folded into the weights
        from mediadiff.nn.lora import LoraSettings, add_lora, unload_lora

        add_lora(backbone, LoraSettings.from_dict(lora))
    weights = load_model_weights(run_dir, backbone, ema=True)  # ema.safetensors if any
    if lora:
        unload_lora(backbone, merge=True)
    summary = {
        **run_summary(run_dir),
        "checkpoint": str(weights.parent),
        "weights": weights.name,
        **(pipeline.info or {}),
        **(info or {}),
    }
    summary["steps"] = read_state(weights.parent)["step"]  # the checkpoint's, not the log's last line
    backbone.eval().requires_grad_(False)
    pipeline.autoencoder.eval().requires_grad_(False)
    pipeline.info = summary
    return pipeline.save_pretrained(folder, dtype=dtype)
