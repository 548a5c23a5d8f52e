"""One trainer for every modality, on ``accelerate``.

The trainer knows tensors, not media: a dataset item holds a tensor under its data key (which the
recipe or the dataset names) and a caption under ``text``; an optional autoencoder turns the tensor into latents and
an optional text encoder turns captions into context tokens; the backbone is trained with
:func:`mediadiff.diffusion.diffusion_loss`. What a sample looks like on disk is the recipe's business:
it hands in a ``sample_fn`` that writes files.

Per optimizer step: ``grad_accum`` micro-batches (condition dropout, encode or read the cache, loss,
backward under ``accelerator.accumulate``), then a check that the loss was finite on every process
(else the step is skipped and counted), gradient clipping, AdamW, the learning-rate schedule and the
EMA update. Checkpoints and resume are exact: see :mod:`mediadiff.train.checkpoint`.

Faults: a run holds a lock on its output folder while it trains (a second run on the same folder is
refused, naming the first; a lock left by a killed run is taken over); SIGTERM and the first Ctrl-C
finish the step, write a checkpoint and stop (``fit`` returns with ``interrupted``); a checkpoint that
cannot be written (a full disk) is removed whole and reported as :class:`CheckpointError`, the
previous checkpoint intact.

The same script runs single-process, under ``torchrun`` and under ``accelerate launch``; with no GPU
the accelerator is created with ``cpu=True`` so that several processes talk over gloo.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, set_seed
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mediadiff.text.context import encode_context, pack_context, substitute_context
from mediadiff.utils import GracefulStop, atomic_write_text, publish_dir

from ..diffusion import PREDICTIONS, Schedule, diffusion_loss
from .cache import LatentCache, encode_latents
from .checkpoint import (
    STATE_FILE,
    CheckpointError,
    checkpoint_name,
    get_rng_state,
    latest_checkpoint,
    load_torch,
    lock_run_folder,
    prune_checkpoints,
    read_state,
    remove_stale_temporaries,
    save_torch,
    set_rng_state,
)
from .config import TrainConfig
from .data import ResumableSampler, collate_cached, collate_raw, resolve_data_key
from .flops import meta_copy, mfu, peak_flops, step_flops
from .fsdp import ShardedEMA, fsdp_plugin, fsdp_requested, plain_copy, shard_on_cpu, unshard_cpu_state
from .memory import GIB, ActivationEstimate, DryRunReport, count_parameters, total_memory_bytes
from .precision import resolve_mixed_precision

__all__ = [
    "LORA_NAME",
    "NonFiniteLossError",
    "SampleContext",
    "Trainer",
    "ema_decay_at",
    "make_accelerator",
]


LORA_NAME = "lora.safetensors"  # a LoRA run's adapters, beside config.json (the newest checkpoint's)


class NonFiniteLossError(RuntimeError):
    """K consecutive optimizer steps had a NaN/inf loss or gradient norm; the run stopped."""


@dataclass
class SampleContext:
    """What a recipe's ``sample_fn`` receives (called on the main process, in eval mode, no grad)."""

    model: torch.nn.Module  # the EMA weights when the EMA is on, else the trained model
    step: int
    out_dir: Path  # <output_dir>/samples/step-XXXXXXXX, already created
    device: torch.device
    mixed_precision: str = "no"  # the run's precision (no | bf16 | fp16); sample_fn runs under its autocast


def ema_decay_at(updates: int, decay: float, warmup: bool = True) -> float:
    """The EMA decay for the update after ``updates`` earlier ones: ``min(decay, (1 + n) / (10 + n))``
    with warm-up (the schedule of diffusers' ``EMAModel``), else ``decay``.

    Without warm-up the EMA starts as a copy of the first weights, which still weigh ``decay^n``
    after ``n`` updates (67% after 400 at 0.999): samples from a short run's EMA are mostly the
    untrained network. With warm-up the average forgets its start within a few hundred steps.
    """
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """Whether ``flag`` holds in any process of ``accelerator``'s run (one all-reduce when there are several)."""
    if accelerator.num_processes == 1:
        return flag
    return accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum").item() > 0


def make_accelerator(config: TrainConfig) -> Accelerator:
    """An ``Accelerator`` for this config: CPU (gloo between processes) when no GPU is present.

    ``mixed_precision="auto"`` defers to ``accelerate launch --mixed_precision`` when given, else bf16
    where supported. A previous ``Accelerator`` in this process (tests, notebooks) is replaced. Under an
    FSDP accelerate config (``accelerate launch --config_file recipes/accelerate/fsdp.yaml``) several CPU
    processes shard the model with FSDP2 as GPUs do (:func:`~mediadiff.train.fsdp.shard_on_cpu`).
    """
    cpu = not torch.cuda.is_available()
    name = config.mixed_precision
    if name == "auto" and os.environ.get("ACCELERATE_MIXED_PRECISION", "no") != "no":
        name = os.environ["ACCELERATE_MIXED_PRECISION"]
    precision = resolve_mixed_precision(name, cpu)
    AcceleratorState._reset_state(reset_partial_state=False)  # keep the process group, drop old settings
    unshard_cpu_state()  # a previous CPU FSDP accelerator's mark on the process group
    plugin = fsdp_plugin() if cpu and fsdp_requested() else None
    acc = Accelerator(
        cpu=cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=config.grad_accum,
        step_scheduler_with_optimizer=False,
        fsdp_plugin=plugin,
    )
    if plugin is not None and acc.distributed_type == DistributedType.MULTI_CPU:
        shard_on_cpu(acc, plugin)  # accelerate would run DDP on CPUs; one process has nothing to shard
    return acc


def _freeze(module: Any, device: torch.device) -> Any:
    """Move a frozen helper model (autoencoder, text encoder) to ``device`` in eval mode."""
    if module is None:
        return None
    if hasattr(module, "to"):
        module = module.to(device) or module
    if isinstance(module, torch.nn.Module):
        module.eval().requires_grad_(False)
    return module


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, no two sharing memory (safetensors refuses shared storage)."""
    out, seen = {}, set()
    for k, v in state.items():
        v = v.detach().to("cpu").contiguous()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


class Trainer:
    """Train ``model`` to denoise ``dataset`` under ``schedule`` with a ``prediction``-type objective.

    model: ``model(x, t, context=None, context_mask=None) -> prediction`` (an ``nn.Module``).
    schedule / prediction: the diffusion process and what the model predicts (``eps | x0 | v | flow``).
    dataset: a map-style dataset of dicts with a tensor under ``data_key`` and a caption under
        ``text``, or a :class:`~mediadiff.train.cache.LatentCache`.
    data_key: the key of that tensor; None: the dataset's own ``data_key`` attribute (no default:
        the recipe or the dataset names it; see :func:`~mediadiff.train.data.resolve_data_key`).
    autoencoder: ``encode(x) -> z`` (normalised latents); None trains on the data itself.
    text_encoder: ``encode(prompts) -> (tokens [b l d], mask [b l])``; None trains unconditionally.
    cache_dir: precompute latents and text embeddings there once (built on first use, rebuilt or
        refused on a fingerprint mismatch, see ``cache_on_mismatch``) and train from them.
    sample_fn: called every ``config.sample_every`` steps and at the end with a :class:`SampleContext`;
        writes media files and returns their paths, or a dict ``{"paths": [...], "metrics": {...}}``
        whose metrics (a periodic evaluation: accuracy against steps) go into ``metrics.jsonl``.
    t_sampler / weighting / loss_kwargs: passed to :func:`~mediadiff.diffusion.diffusion_loss`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        schedule: Schedule,
        dataset: Any,
        config: TrainConfig,
        *,
        prediction: str,
        data_key: str | None = None,
        autoencoder: Any | None = None,
        text_encoder: Any | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_on_mismatch: str = "rebuild",
        cache_extra: dict[str, Any] | None = None,
        sample_fn: Callable[[SampleContext], list[Path] | dict | None] | None = None,
        t_sampler: str | Callable = "logit_normal",
        weighting: str = "uniform",
        loss_kwargs: dict[str, Any] | None = None,
    ):
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; known: {list(PREDICTIONS)}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.config = config
        self.schedule, self.prediction = schedule, prediction
        if isinstance(dataset, LatentCache):  # items are latents already; the key is the cache's
            self.data_key = data_key or dataset.meta["fingerprint"].get("data_key")
        else:
            self.data_key = resolve_data_key(dataset, data_key)
        self.t_sampler, self.weighting, self.loss_kwargs = t_sampler, weighting, dict(loss_kwargs or {})
        self.sample_fn = sample_fn
        self.out = Path(config.output_dir)
        self.checkpoint_dir = self.out / "checkpoints"

        acc = self.accelerator = make_accelerator(config)
        self.device = acc.device
        self.rank, self.world_size = acc.process_index, acc.num_processes
        set_seed(config.seed, device_specific=True)  # python/numpy/torch RNGs: seed + process index
        self.autoencoder = _freeze(autoencoder, self.device)
        self.text_encoder = _freeze(text_encoder, self.device)

        self.dataset = dataset
        self._cache_args = None
        if cache_dir is not None:
            if isinstance(dataset, LatentCache):
                raise ValueError("dataset is already a LatentCache; do not also pass cache_dir")
            self._cache_args = {
                "path": Path(cache_dir),
                "on_mismatch": cache_on_mismatch,
                "extra": cache_extra,
            }
        self._data: Any = None  # the dataset trained on (the cache, once opened)

        use_ema = config.ema_decay > 0
        self.fsdp = acc.distributed_type == DistributedType.FSDP
        self.lora = config.lora
        if self.lora is not None and self.fsdp:
            raise ValueError(
                "LoRA under FSDP is not supported (the adapters are small: train them with DDP, torchrun or "
                "accelerate launch --multi_gpu); or pass --lora-rank 0"
            )
        if self.lora is not None:  # LoRA: only the adapters train, are checkpointed and saved
            from mediadiff.nn.lora import add_lora

            add_lora(model, self.lora)
        model = model.to(self.device)
        # what checkpoints hold: every weight, or (LoRA) the adapters alone
        self._saved_names = (
            None if self.lora is None else {n for n, p in model.named_parameters() if p.requires_grad}
        )
        # the plain architecture on the meta device (no memory): FLOPs, and a full copy to sample with under FSDP
        try:
            self._meta_model: torch.nn.Module | None = meta_copy(model)
        except Exception as err:  # a module that cannot be deep-copied: no FLOPs, no samples under FSDP
            self.log(f"could not copy the model to the meta device ({type(err).__name__}: {err})")
            self._meta_model = None
        self._state_keys = list(model.state_dict())
        self.ema: AveragedModel | ShardedEMA | None = None  # under FSDP: each process averages its shard
        if use_ema and not self.fsdp:
            self.ema = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
            )
        self._ema_updates = 0  # EMA updates made (host-side, for the warm-up decay)
        if config.compile:  # in place: the module and its state-dict keys stay (no _orig_mod. prefix)
            model.compile()
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        optimizer = torch.optim.AdamW(
            params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        from diffusers.optimization import get_scheduler  # heavy import, only when training

        self.lr_scheduler = get_scheduler(
            "constant_with_warmup" if config.lr_schedule == "constant" else "cosine",
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.max_steps,
        )
        self.model, self.optimizer = acc.prepare(model, optimizer)
        if use_ema and self.fsdp:
            self.ema = ShardedEMA(
                self.unwrapped_model, get_ema_multi_avg_fn(config.ema_decay), self._state_keys
            )
        # model FLOPs of one optimizer step over all processes (counted on the first batch) and the peak
        self.flops_per_step: int | None = None
        self._flops_counted = False
        self.peak_flops = peak_flops(self.device, config.peak_tflops)
        # t, noise and caption dropout come from this generator: one stream per process, checkpointed
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed * 1_000_003 + self.rank)

        self.step = self.epoch = self.offset = 0  # optimizer steps; data position (epoch, global samples)
        self.skipped = self.bad_in_row = 0
        self.last_checkpoint: Path | None = None
        self._metrics_failed = False
        self._empty: tuple[torch.Tensor, torch.Tensor] | None = None
        self._iter = None
        self._sampler: ResumableSampler | None = None
        if config.resume:
            self.resume()

    # --- properties -------------------------------------------------------------------------------

    @property
    def is_main_process(self) -> bool:
        """Whether this is process 0 (the one that writes files and logs)."""
        return self.accelerator.is_main_process

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The model without DDP / FSDP wrappers (the same parameters as the trained model).

        The autocast wrapper stays: ``keep_fp32_wrapper=False`` would strip it from the model in place
        and silently turn the rest of the run into fp32.
        """
        return self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=True)

    @property
    def global_batch(self) -> int:
        """Samples per micro-batch over all processes."""
        return self.config.batch_size * self.world_size

    @property
    def mixed_precision(self) -> str:
        """The precision the accelerator runs (``no`` | ``bf16`` | ``fp16``)."""
        return self.accelerator.mixed_precision

    def log(self, message: str) -> None:
        """Print on the main process only, without breaking the progress bar."""
        if self.is_main_process:
            tqdm.write(message)

    # --- data -------------------------------------------------------------------------------------

    def training_data(self) -> Any:
        """The dataset trained on: the cache (opened or built on first call) or the raw dataset."""
        if self._data is None:
            if self._cache_args is not None:
                a = self._cache_args
                self._data = LatentCache.open_or_build(
                    a["path"], self.dataset, autoencoder=self.autoencoder, text_encoder=self.text_encoder,
                    data_key=self.data_key, extra=a["extra"], on_mismatch=a["on_mismatch"],
                    is_main_process=self.is_main_process, wait_for_everyone=self.accelerator.wait_for_everyone,
                    log=self.log, device=self.device, batch_size=self.config.batch_size,
                    num_workers=self.config.num_workers, progress=self.is_main_process,
                )  # fmt: skip
            else:
                self._data = self.dataset
        return self._data

    @property
    def cached(self) -> bool:
        """Whether training reads a :class:`LatentCache`."""
        return isinstance(self.training_data(), LatentCache)

    @property
    def conditional(self) -> bool:
        """Whether the backbone gets a text context."""
        data = self.training_data()
        return data.has_text if isinstance(data, LatentCache) else self.text_encoder is not None

    def _collate(self) -> Callable:
        return collate_cached if self.cached else functools.partial(collate_raw, key=self.data_key)

    def _empty_context(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty prompt's ``tokens [l d]`` and ``mask [l]`` (from the cache when training from one)."""
        if self._empty is None:
            data = self.training_data()
            if isinstance(data, LatentCache):
                if data.empty is None:
                    raise ValueError(f"the cache at {data.path} has no empty-prompt embedding")
                tokens, mask = data.empty
            else:
                tokens, mask = encode_context(self.text_encoder, [""], self.device)  # [1 l d], [1 l]
                tokens, mask = tokens[0], mask[0]
            self._empty = (tokens.to(self.device), mask.to(self.device))
        return self._empty

    def _new_iterator(self) -> Any:
        data = self.training_data()
        if self._sampler is None:
            self._sampler = ResumableSampler(
                len(data), batch_size=self.config.batch_size, rank=self.rank, world_size=self.world_size,
                seed=self.config.seed,
            )  # fmt: skip
        self._sampler.set_position(self.epoch, self.offset)
        # the DataLoader draws worker seeds from this generator, not from the global RNG
        g = torch.Generator().manual_seed((self.config.seed * 7919 + self.epoch) * 104_729 + self.rank)
        loader = DataLoader(
            data,
            batch_size=self.config.batch_size,
            sampler=self._sampler,
            num_workers=self.config.num_workers,
            collate_fn=self._collate(),
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            generator=g,
        )
        return iter(loader)

    def next_batch(self) -> dict[str, Any]:
        """The next micro-batch of this process; advances the data position."""
        if self._iter is None:
            self._iter = self._new_iterator()
        try:
            batch = next(self._iter)
        except StopIteration:
            self.epoch, self.offset = self.epoch + 1, 0
            self._iter = self._new_iterator()
            batch = next(self._iter)
        self.offset += self.global_batch
        return batch

    def prepare_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(x0, cond)`` for the loss: latents and, when conditional, the text context after dropout.

        Dropped captions become the empty prompt (Ho & Salimans 2022, "Classifier-Free Diffusion
        Guidance", Alg. 1): on the fly by encoding ``""``, from a cache by its stored empty embedding.
        Both give the same tensors, in the canonical form of :func:`~mediadiff.text.context.pack_context`.
        """
        dev = self.device
        b = len(batch["latent"] if "latent" in batch else batch["data"])
        drop = torch.zeros(b, dtype=torch.bool)
        if self.conditional and self.config.cond_dropout > 0:
            u = torch.rand(b, generator=self.generator, device=self.generator.device)  # [b]
            drop = (u < self.config.cond_dropout).cpu()
        cond: dict[str, torch.Tensor] = {}
        if "latent" in batch:  # from the cache
            x0 = batch["latent"].to(dev, non_blocking=True)  # [b ...]
            if self.conditional:
                tokens, mask = batch["tokens"].to(dev), batch["mask"].to(dev)  # [b l d], [b l]
                if drop.any():
                    tokens, mask = substitute_context(tokens, mask, drop.to(dev), self._empty_context())
                cond["context"], cond["context_mask"] = pack_context(tokens, mask)
        else:
            x0 = encode_latents(self.autoencoder, batch["data"].to(dev, non_blocking=True))  # [b ...]
            if self.conditional:
                captions = ["" if d else c for d, c in zip(drop.tolist(), batch["text"])]
                cond["context"], cond["context_mask"] = encode_context(self.text_encoder, captions, dev)
        return x0, cond

    def loss(self, x0: torch.Tensor, cond: dict[str, torch.Tensor], model: Any = None) -> torch.Tensor:
        """Per-sample diffusion loss ``[b]`` (t and noise drawn from the trainer's generator)."""
        return diffusion_loss(
            self.model if model is None else model, x0, self.schedule, self.prediction,
            t_sampler=self.t_sampler, weighting=self.weighting, cond=cond, generator=self.generator,
            **self.loss_kwargs,
        )  # fmt: skip

    # --- the loop ---------------------------------------------------------------------------------

    def train_step(self) -> tuple[torch.Tensor, str | None, torch.Tensor | None]:
        """One optimizer step over ``grad_accum`` micro-batches: ``(loss, skip_reason, grad_norm)``.

        The step is skipped (weights, optimizer, schedule and EMA untouched) when the loss is NaN/inf
        in any process, or when the clipped gradient norm is (``skip_reason`` says which); every
        process takes the same decision.
        """
        acc, cfg = self.accelerator, self.config
        losses = []
        for _ in range(cfg.grad_accum):
            x0, cond = self.prepare_batch(self.next_batch())
            if not self._flops_counted:
                self.flops_per_step = self.count_flops(x0, cond)
            with acc.accumulate(self.model):
                loss = self.loss(x0, cond).mean()
                acc.backward(loss)
            losses.append(loss.detach())
        loss = torch.stack(losses).mean()
        bad_loss = acc.reduce((~torch.isfinite(loss)).float().reshape(1), "sum")  # agree across processes
        grad_norm = None
        bad_grad = torch.zeros_like(bad_loss)
        if cfg.max_grad_norm is not None:  # the norm of the reduced gradients: the same in every process
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            if isinstance(grad_norm, DTensor):  # FSDP2: the norm over all shards, replicated
                grad_norm = grad_norm.full_tensor()
            bad_grad = (~torch.isfinite(grad_norm)).float().reshape(1)
        loss_is_bad, grad_is_bad = torch.cat([bad_loss, bad_grad]).tolist()  # the step's one host sync
        if loss_is_bad or grad_is_bad:
            if grad_norm is not None and acc.scaler is not None:
                acc.scaler.update()  # fp16: clipping unscaled the gradients; close that round (lowers the scale)
            self.optimizer.zero_grad(set_to_none=True)
            if loss_is_bad:
                return loss, "non-finite loss", None
            return loss, "non-finite gradient", grad_norm
        self.optimizer.step()
        if not acc.optimizer_step_was_skipped:  # fp16's scaler may skip on overflow
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            decay = ema_decay_at(self._ema_updates, self.config.ema_decay, self.config.ema_warmup)
            self.ema.multi_avg_fn = get_ema_multi_avg_fn(decay)
            self.ema.update_parameters(self.unwrapped_model)
            self._ema_updates += 1
        return loss, None, grad_norm

    def count_flops(self, x0: torch.Tensor, cond: dict[str, torch.Tensor]) -> int | None:
        """Model FLOPs of one optimizer step, all processes and micro-batches: forward + backward of the
        backbone on a micro-batch shaped like ``x0`` (:func:`~mediadiff.train.flops.step_flops`, on a meta
        copy: nothing is computed) x ``grad_accum`` x processes. None (logged) when it cannot be counted."""
        self._flops_counted = True
        if self._meta_model is None:
            return None
        t = torch.zeros(x0.shape[0], device=x0.device)  # [b]
        try:
            per_batch = step_flops(self._meta_model, x0, t, **cond)
        except Exception as err:  # a model that needs real values (data-dependent control flow)
            self.log(f"could not count the model FLOPs ({type(err).__name__}: {err}); no TFLOP/s or MFU")
            return None
        return per_batch * self.config.grad_accum * self.world_size

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train until ``config.max_steps``; returns ``{"step", "loss", "skipped", "checkpoint", "interrupted"}``.

        until: stop earlier, after this step, with a checkpoint (a time-limited job); the learning-rate
            schedule still spans ``config.max_steps`` and ``--resume`` continues exactly.
        SIGTERM or Ctrl-C (main thread): the current step ends, a checkpoint is written and ``fit``
        returns with ``interrupted`` the signal's name (None otherwise); a second Ctrl-C stops at once.
        Raises :class:`~mediadiff.utils.LockedError` if another live run trains in ``output_dir``,
        :class:`~mediadiff.train.checkpoint.CheckpointError` if a checkpoint cannot be written, and
        :class:`NonFiniteLossError` after ``config.max_bad_steps`` skipped steps in a row (NaN/inf loss or
        gradient), without writing a checkpoint: the last good one stays.
        """
        lock = lock_run_folder(self.out, self.log) if self.is_main_process else None
        try:
            with GracefulStop(log=self.log if self.is_main_process else None) as stop:
                return self._fit(until, stop)
        finally:
            if lock is not None:
                lock.release()

    def _any_process(self, flag: bool) -> bool:
        """Whether ``flag`` holds in any process of the run (one all-reduce when there are several)."""
        return any_process(self.accelerator, flag)

    def _stop_requested(self, stop: GracefulStop) -> bool:
        """Whether any process got SIGTERM / Ctrl-C; all processes agree, so they stop at the same step
        (:meth:`GracefulStop.agreed <mediadiff.utils.GracefulStop.agreed>`)."""
        return stop.agreed(self._any_process)

    def _fit(self, until: int | None, stop_signal: GracefulStop) -> dict[str, Any]:
        acc, cfg = self.accelerator, self.config
        stop = cfg.max_steps if until is None else min(until, cfg.max_steps)
        self.training_data()
        if self.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.checkpoint_dir)
            atomic_write_text(self.out / "config.json", json.dumps(self.describe(), indent=1))
        acc.wait_for_everyone()
        self._metrics(
            {
                "event": "start",
                "step": self.step,
                "world_size": self.world_size,
                "mixed_precision": self.mixed_precision,
                "cached": self.cached,
            }
        )
        self.model.train()
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not self.is_main_process,
            dynamic_ncols=True,
        )
        window = torch.zeros(2, device=self.device)  # [sum of good losses, good steps] since the last log
        window_steps, window_start, last_loss = 0, time.perf_counter(), float("nan")
        grad_norm = None
        while self.step < stop:
            loss, skipped, norm = self.train_step()
            self.step += 1
            window_steps += 1
            bar.update(1)
            if skipped:
                self.skipped += 1
                self.bad_in_row += 1
                self._metrics(
                    {"event": "skipped", "step": self.step, "reason": skipped, "loss": loss.item(),
                     "grad_norm": None if norm is None else norm.item(), "skipped": self.skipped}
                )  # fmt: skip
                if self.bad_in_row >= cfg.max_bad_steps:
                    bar.close()
                    self._stop_non_finite()
            else:
                self.bad_in_row = 0
                window += torch.stack([loss.float(), torch.ones((), device=self.device)])
                grad_norm = norm if norm is not None else grad_norm
            if self.step % cfg.log_every == 0 or self.step == stop:
                total = acc.reduce(window.clone(), "sum")
                last_loss = (total[0] / total[1]).item() if total[1] > 0 else float("nan")
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "loss": last_loss,
                    "lr": self.lr_scheduler.get_last_lr()[0],
                    "grad_norm": None if grad_norm is None else float(grad_norm),
                    "skipped": self.skipped,
                    "samples_per_s": window_steps * cfg.grad_accum * self.global_batch / max(elapsed, 1e-9),
                    **self._throughput(window_steps, elapsed),
                }
                self._metrics(record)
                postfix = {"loss": f"{last_loss:.4f}", "lr": f"{record['lr']:.2e}"}
                if "tflops_per_s" in record:
                    postfix["TFLOP/s"] = f"{record['tflops_per_s']:.3g}"
                if "mfu" in record:
                    postfix["mfu"] = f"{record['mfu']:.1%}"
                bar.set_postfix(postfix)
                window.zero_()
                window_steps, window_start = 0, time.perf_counter()
            if self.step % cfg.checkpoint_every == 0 and self.bad_in_row == 0:
                self.save_checkpoint()
            if self.sample_fn is not None and cfg.sample_every and self.step % cfg.sample_every == 0:
                self.sample()
            if self._stop_requested(stop_signal):
                break
        bar.close()
        # agreed once more (one all-reduce): a signal that came in the last step on one process only must not
        # send that process down another path (no sample, a checkpoint) than the others
        interrupted = stop_signal.requested if self._stop_requested(stop_signal) else None
        if self.bad_in_row == 0 and (
            self.last_checkpoint is None or self.last_checkpoint.name != checkpoint_name(self.step)
        ):
            self.save_checkpoint()
        if interrupted is not None:
            self._metrics({"event": "interrupted", "step": self.step, "signal": interrupted})
            self.log(
                f"{interrupted}: stopped at step {self.step} of {cfg.max_steps}; checkpoint {self.last_checkpoint}. "
                "Continue with --resume."
            )
        elif self.sample_fn is not None and not (cfg.sample_every and self.step % cfg.sample_every == 0):
            self.sample()
        if interrupted is None:
            self._metrics({"event": "end", "step": self.step, "loss": last_loss, "skipped": self.skipped})
        self.plot_curves()
        return {
            "step": self.step,
            "loss": last_loss,
            "skipped": self.skipped,
            "checkpoint": self.last_checkpoint,
            "interrupted": interrupted,
        }

    def _throughput(self, steps: int, seconds: float) -> dict[str, float]:
        """``flops_per_step``, ``tflops_per_s`` (all processes) and ``mfu`` (when the peak is known)."""
        if self.flops_per_step is None or steps == 0 or seconds <= 0:
            return {}
        out = {
            "flops_per_step": self.flops_per_step,
            "tflops_per_s": self.flops_per_step * steps / seconds / 1e12,
        }
        utilisation = mfu(self.flops_per_step, seconds / steps, self.peak_flops, self.world_size)
        if utilisation is not None:
            out["mfu"] = utilisation
        return out

    def _stop_non_finite(self) -> None:
        where = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint
            else "no checkpoint was written"
        )
        message = (
            f"stopping at step {self.step}: the loss (or its gradient) was NaN/inf for {self.bad_in_row} steps in a row "
            f"(--max-bad-steps {self.config.max_bad_steps}; {self.skipped} skipped in total). Those steps did "
            f"not change the weights; {where}. Lower --lr, check the data, then continue with --resume."
        )
        self._metrics(
            {"event": "stopped", "step": self.step, "reason": "non-finite loss", "skipped": self.skipped}
        )
        raise NonFiniteLossError(message)

    def _metrics(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl`` (main process). A failed write (a full disk) is reported
        once and training goes on: the checkpoints, not the log, are what a run cannot lose."""
        if not self.is_main_process:
            return
        record = {**record, "time": time.time()}
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record, default=str) + "\n")
        except OSError as err:
            if not self._metrics_failed:
                self.log(
                    f"warning: could not append to {self.out / 'metrics.jsonl'} ({err}); training goes on"
                )
            self._metrics_failed = True

    def describe(self) -> dict[str, Any]:
        """The run's settings, as written to ``config.json``."""
        return {
            "train": self.config.to_dict(),
            "prediction": self.prediction,
            "schedule": getattr(self.schedule, "to_config", lambda: repr(self.schedule))(),
            "t_sampler": self.t_sampler if isinstance(self.t_sampler, str) else repr(self.t_sampler),
            "weighting": self.weighting,
            "data_key": self.data_key,
            "world_size": self.world_size,
            "mixed_precision": self.mixed_precision,
            "cache": str(self._cache_args["path"]) if self._cache_args else None,
        }

    # --- sampling ---------------------------------------------------------------------------------

    def sample(self) -> list[Path]:
        """Call ``sample_fn`` on the main process (EMA weights, eval mode, forked RNG); others wait.

        Under FSDP every process first takes part in gathering the full weights, which the main process
        puts in a plain copy of the model for the call (freed after it)."""
        paths: list[Path] = []
        model = self.sampling_model() if self.sample_fn is not None else None
        if self.sample_fn is not None and self.is_main_process:
            out_dir = self.out / "samples" / checkpoint_name(self.step)
            out_dir.mkdir(parents=True, exist_ok=True)
            was_training = model.training
            model.eval()
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad(), self.accelerator.autocast():
                result = self.sample_fn(
                    SampleContext(model, self.step, out_dir, self.device, self.mixed_precision)
                )
            model.train(was_training)
            measured: dict[str, Any] = {}
            if isinstance(result, dict):  # {"paths": [...], "metrics": {...}}: a periodic evaluation
                measured = dict(result.get("metrics") or {})
                result = result.get("paths")
            paths = list(result or [])
            self._metrics(
                {"event": "samples", "step": self.step, "paths": [str(p) for p in paths], **measured}
            )
            if measured:
                self.log(f"step {self.step}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in measured.items()))
            self.plot_curves()
        del model
        self.accelerator.wait_for_everyone()
        return paths

    def sampling_model(self) -> torch.nn.Module | None:
        """The weights samples come from: the EMA when it is on, else the trained model.

        Under FSDP a collective (every process calls it): the full weights are gathered and the main
        process gets them in a plain, unsharded copy of the model (the others get None)."""
        if not self.fsdp:
            return self.ema.module if self.ema is not None else self.unwrapped_model
        if self.ema is not None:
            state, buffers = self.ema_state_dict(), self.ema.buffers()
        else:
            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))
            buffers = dict(self.unwrapped_model.named_buffers())
        if not self.is_main_process:
            return None
        if self._meta_model is None:
            raise RuntimeError(
                "sampling under FSDP needs a copy of the model's architecture; see the log above"
            )
        return plain_copy(self._meta_model, state, buffers, self.device)

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The full EMA weights under the model's state-dict keys (under FSDP gathered: a collective)."""
        if self.ema is None:
            raise ValueError("this run keeps no EMA (--ema-decay 0)")
        if isinstance(self.ema, ShardedEMA):
            return self.ema.full_state_dict()
        return self.ema.module.state_dict()

    def plot_curves(self) -> Path | None:
        """Redraw ``curves.png`` beside ``metrics.jsonl`` (main process; :func:`mediadiff.train.plot.plot_runs`).
        A failure to draw is logged and never stops the run."""
        if not self.is_main_process or not (self.out / "metrics.jsonl").is_file():
            return None
        from .plot import CURVES_NAME, plot_runs

        try:
            return plot_runs([self.out], self.out / CURVES_NAME)
        except Exception as err:
            self.log(f"could not draw {self.out / CURVES_NAME}: {type(err).__name__}: {err}")
            return None

    # --- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-XXXXXXXX`` atomically and keep the newest ``keep_checkpoints``.

        A failed write (a full disk, a file-size limit) removes the partial folder and raises
        :class:`~mediadiff.train.checkpoint.CheckpointError` in every process; the previous checkpoint
        is untouched, so ``--resume`` continues from it.
        """
        final = self.checkpoint_dir / checkpoint_name(self.step)
        tmp = self.checkpoint_dir / f".tmp-{final.name}"
        try:
            failure = self._agree(self._write_checkpoint(final, tmp))
        except BaseException:  # a second Ctrl-C: nothing half-written stays
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if failure is not None:
            if self.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            previous = (
                f"the previous checkpoint {self.last_checkpoint} is intact"
                if self.last_checkpoint
                else "there is no earlier checkpoint"
            )
            self._metrics({"event": "checkpoint_failed", "step": self.step, "error": str(failure)})
            raise CheckpointError(
                f"could not write the checkpoint of step {self.step} to {final}: {type(failure).__name__}: "
                f"{failure}. Nothing of it was kept; {previous}. Free space (or fix the folder) and continue "
                "with --resume."
            ) from failure
        self.last_checkpoint = final
        return final

    def _agree(self, failure: Exception | None) -> Exception | None:
        """This process's failure, or (several processes) a stand-in when another process failed."""
        if self._any_process(failure is not None) and failure is None:
            return RuntimeError("another process of the run failed to write its part")
        return failure

    def _write_checkpoint(self, final: Path, tmp: Path) -> Exception | None:
        """The writes of :meth:`save_checkpoint`: every file into ``tmp``, then one rename to ``final``.

        A write that fails is returned, not raised, so every process still reaches every barrier; nothing
        is published unless all processes wrote their part."""
        acc, main = self.accelerator, self.is_main_process
        failure: Exception | None = None

        def guarded(write: Callable[[], Any]) -> None:  # run unless an earlier write failed; keep its error
            nonlocal failure
            if failure is None:
                try:
                    write()
                except Exception as err:  # OSError, safetensors' own error on a failed write, ...
                    failure = err

        def prepare() -> None:
            if tmp.exists():
                remove_stale_temporaries(self.checkpoint_dir)
            tmp.mkdir(parents=True)

        if main:
            guarded(prepare)
        acc.wait_for_everyone()
        # every process takes part (FSDP gathers shards); the main process writes the full state
        model_state, optim_state = get_state_dict(
            self.model,
            self.optimizer.optimizer,
            options=StateDictOptions(full_state_dict=True, cpu_offload=True),
        )
        ema_state = self.ema_state_dict() if self.ema is not None else None  # FSDP: gathered, every process
        guarded(lambda: save_torch(get_rng_state(self.generator), tmp / f"rng-{self.rank:05d}.pt"))

        def write_main() -> None:
            save_file(
                _unshared(self._saved(model_state)),
                tmp / "model.safetensors",
                metadata={"step": str(self.step)},
            )
            if ema_state is not None:
                save_file(
                    _unshared(self._saved(ema_state)),
                    tmp / "ema.safetensors",
                    metadata={"step": str(self.step), "n_averaged": str(int(self.ema.n_averaged))},
                )
            save_torch(optim_state, tmp / "optimizer.pt")
            save_torch(self.lr_scheduler.state_dict(), tmp / "scheduler.pt")
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "offset": self.offset,
                "skipped": self.skipped,
                "world_size": self.world_size,
                "batch_size": self.config.batch_size,
                "grad_accum": self.config.grad_accum,
                "samples_seen": self.step * self.config.grad_accum * self.global_batch,
                "mixed_precision": self.mixed_precision,
                "ema": self.ema is not None,
                "lora": None if self.lora is None else self.lora.to_dict(),
                "config": self.describe(),
            }
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))

        def publish() -> None:
            publish_dir(tmp, final)  # fsync all, rename into place
            prune_checkpoints(self.checkpoint_dir, self.config.keep_checkpoints)
            if self.lora is not None:
                self.save_lora()

        if main:
            guarded(write_main)
        failure = self._agree(failure)  # all wrote their part, or nobody publishes
        if main:
            guarded(publish)
            if failure is None:
                self._metrics({"event": "checkpoint", "step": self.step, "path": str(final)})
        acc.wait_for_everyone()
        return failure

    def _saved(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps of a model state: all of it, or (LoRA) the adapters' weights only."""
        if self._saved_names is None:
            return state
        return {k: v for k, v in state.items() if k in self._saved_names}

    def _check_saved(self, state: dict[str, torch.Tensor], file: Path) -> None:
        """A LoRA checkpoint must hold exactly this run's adapter weights (strict loading does the rest)."""
        if self._saved_names is None:
            return
        missing, unexpected = sorted(self._saved_names - set(state)), sorted(set(state) - self._saved_names)
        if missing or unexpected:
            raise ValueError(
                f"{file}: its LoRA adapters do not match this run's "
                f"({len(missing)} missing, e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]}); "
                "resume with the same --lora-rank, --lora-targets and model"
            )

    def save_lora(self, path: str | os.PathLike | None = None) -> Path:
        """Write the adapters (the EMA's when the EMA is on) to ``path`` (default ``OUTPUT_DIR/lora.safetensors``),
        atomically, with the base model, the step and the run in the file's metadata. Main process only."""
        from mediadiff.nn.lora import lora_state_dict, save_lora

        if self.lora is None:
            raise ValueError("this run trains no LoRA adapters (--lora-rank 0)")
        model = self.ema.module if self.ema is not None else self.unwrapped_model
        info = {
            "base": self.config.init_from,
            "step": self.step,
            "run": str(self.out),
            "ema": self.ema is not None,
        }
        return save_lora(
            self.unwrapped_model,
            self.out / LORA_NAME if path is None else path,
            info=info,
            state=lora_state_dict(model),
        )

    def resume(self, path: str | os.PathLike | None = None) -> Path | None:
        """Load a checkpoint (default: the newest in ``output_dir``); None when there is none yet."""
        path = Path(path) if path is not None else latest_checkpoint(self.checkpoint_dir)
        if path is None:
            self.log(f"--resume: no checkpoint in {self.checkpoint_dir}; starting at step 0")
            return None
        state = read_state(path)
        if state["ema"] != (self.ema is not None):
            raise ValueError(
                f"checkpoint {path} was written {'with' if state['ema'] else 'without'} an EMA but this run has "
                f"--ema-decay {self.config.ema_decay}; use the same setting to resume"
            )
        if bool(state.get("lora")) != (self.lora is not None):
            raise ValueError(
                f"checkpoint {path} was written {'with' if state.get('lora') else 'without'} LoRA adapters but "
                f"this run has --lora-rank {self.config.lora_rank}; use the same setting to resume"
            )
        if self.lora is not None and state["lora"] != self.lora.to_dict():
            raise ValueError(
                f"checkpoint {path}: its LoRA adapters do not match this run's ({state['lora']} there, "
                f"{self.lora.to_dict()} here); resume with the same --lora-rank, --lora-alpha and --lora-targets"
            )
        model_state = load_file(path / "model.safetensors", device="cpu")
        optim_state = load_torch(path / "optimizer.pt")
        self._check_saved(model_state, path / "model.safetensors")
        set_state_dict(
            self.model, self.optimizer.optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
            options=StateDictOptions(full_state_dict=True, strict=self.lora is None),
        )  # fmt: skip
        if self.ema is not None:
            ema_state = load_file(path / "ema.safetensors", device="cpu")
            self._check_saved(ema_state, path / "ema.safetensors")
            if isinstance(self.ema, ShardedEMA):  # each process keeps its shard
                self.ema.load_full_state_dict(ema_state, strict=self.lora is None)
            else:
                self.ema.module.load_state_dict(ema_state, strict=self.lora is None)
            with safe_open(path / "ema.safetensors", framework="pt") as f:
                self._ema_updates = int(f.metadata()["n_averaged"])
                self.ema.n_averaged.fill_(self._ema_updates)
        self.lr_scheduler.load_state_dict(load_torch(path / "scheduler.pt"))
        rng_file = path / f"rng-{self.rank:05d}.pt"
        if rng_file.is_file():
            set_rng_state(load_torch(rng_file), self.generator)
        else:
            print(
                f"warning: {rng_file} is missing (the run had {state['world_size']} processes, this one has "
                f"{self.world_size}); process {self.rank} continues with fresh random numbers"
            )
        self.step, self.epoch, self.offset = state["step"], state["epoch"], state["offset"]
        self.skipped, self.bad_in_row = state["skipped"], 0
        self._iter = None
        self.last_checkpoint = path
        self.log(f"resumed from {path} (step {self.step}, epoch {self.epoch})")
        return path

    # --- dry run ----------------------------------------------------------------------------------

    def dry_run(self, memory_gb: float | None = None) -> DryRunReport:
        """Parameter counts, measured activation memory per sample and the largest batch that fits.

        Runs one forward and backward at batch 1 and 2 on real items (see :mod:`~mediadiff.train.memory`)
        with the run's precision; training state (weights, RNGs) is left as it was.
        """
        data = self.dataset
        if len(data) < 2:
            raise ValueError("--dry-run needs a dataset with at least 2 items")
        collate = (
            collate_cached
            if isinstance(data, LatentCache)
            else functools.partial(collate_raw, key=self.data_key)
        )
        cached_before = self._data
        self._data = data  # measure on the raw data: no cache is built for a dry run
        items = [data[0], data[1]]
        model = self.unwrapped_model
        model.train()
        gen_state = self.generator.get_state()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []

        def step(b: int) -> torch.Tensor:
            x0, cond = self.prepare_batch(collate(items[:b]))
            with self.accelerator.autocast():
                return self.loss(x0, cond, model=model).mean()

        try:
            with torch.random.fork_rng(devices=devices):
                act = ActivationEstimate.measure(step, exclude=list(model.parameters()))
        finally:
            self.generator.set_state(gen_state)
            self._data, self._empty = cached_before, None
            model.zero_grad(set_to_none=True)
        total, trainable = count_parameters(model)
        helpers = [getattr(m, "model", m) for m in (self.autoencoder, self.text_encoder)]  # TextEncoder.model
        frozen = total - trainable + sum(count_parameters(m)[0] for m in helpers)
        # fp32 weight, gradient, AdamW's two moments, EMA copy
        per_trainable = 4 + 4 + 8 + (4 if self.ema is not None else 0)
        report = DryRunReport(
            trainable_params=trainable,
            frozen_params=frozen,
            state_bytes=trainable * per_trainable + frozen * 4,
            activations=act,
            mixed_precision=self.mixed_precision,
            memory_bytes=int(memory_gb * GIB) if memory_gb else total_memory_bytes(self.device),
            batch_size=self.config.batch_size,
        )
        self.log(report.format())
        return report

    def run(self, dry_run: bool = False, memory_gb: float | None = None) -> dict[str, Any] | DryRunReport:
        """What a recipe's ``main`` does: ``dry_run`` or ``fit``, then release the process group."""
        try:
            return self.dry_run(memory_gb) if dry_run else self.fit()
        finally:
            self.accelerator.end_training()


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
