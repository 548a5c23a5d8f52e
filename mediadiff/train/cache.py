"""Precomputed autoencoder latents and text embeddings, on disk in safetensors shards.

Encoding the data and its captions is often the most expensive part of a training step and gives the same
answer every epoch, so it is done once::

    cache = LatentCache.open_or_build("cache/run", dataset, autoencoder=ae, text_encoder=te, data_key="x")
    item = cache[0]   # {"latent": [c ...], "tokens": [l d], "mask": [l]}

A cache is keyed by a fingerprint of everything that produced it: the autoencoder (class, config
including latent scale and shift, a hash of its weights), the text encoder (its ``fingerprint()``),
the dataset (class, length, config or ``fingerprint()``, and a content hash of probe items, which
also pins the data's shape: lengths, sizes, rates), the data key and the recipe's extra values. Opening a cache
whose fingerprint differs names the parts that differ and either rebuilds it or refuses; it is never
used silently. A build writes into a temporary folder and renames it into place when every shard is
on disk, and ``meta.json`` lists each shard's size, so a crashed or truncated build is detected.

Layout::

    meta.json                  fingerprint, key, item count, shard list (written last)
    shard-00000.safetensors    latent [n ...], tokens [n l d], mask [n l], length [n], index [n]
    empty.safetensors          the empty prompt's tokens [l d] and mask [l] (condition dropout)
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mediadiff.text.context import encode_context, pad_context
from mediadiff.utils import FileLock, publish_dir

from .data import collate_raw, resolve_data_key

__all__ = [
    "CACHE_VERSION",
    "CacheError",
    "CacheMismatchError",
    "LatentCache",
    "autoencoder_fingerprint",
    "cache_fingerprint",
    "dataset_fingerprint",
    "encode_latents",
    "fingerprint_key",
    "text_encoder_fingerprint",
    "weights_digest",
]

CACHE_VERSION = 1
META_FILE = "meta.json"
EMPTY_FILE = "empty.safetensors"


class CacheError(RuntimeError):
    """A cache folder is missing, incomplete or damaged."""


class CacheMismatchError(CacheError):
    """A cache was built by something other than what the run uses."""


# --- fingerprints ------------------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    """A JSON-ready, deterministic rendering of a config value (no memory addresses)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, torch.Tensor):
        return {"tensor": list(x.shape), "sha256": _tensor_sha(x)}
    if isinstance(x, (torch.dtype, torch.device, os.PathLike)):
        return str(x)
    text = repr(x)
    return type(x).__qualname__ if " at 0x" in text else text


def _tensor_sha(t: torch.Tensor) -> str:
    t = t.detach().to("cpu").contiguous()
    raw = t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict: every name, dtype, shape and byte, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update((t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)).numpy().tobytes())
    return h.hexdigest()


def _config_of(obj: Any) -> Any:
    for attr in ("config", "to_config", "to_dict"):
        value = getattr(obj, attr, None)
        if value is None:
            continue
        return _jsonable(value() if callable(value) and not isinstance(value, dict) else value)
    return None


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def autoencoder_fingerprint(autoencoder: Any | None) -> dict[str, Any]:
    """Class, config (which holds the latent scale and shift) and weights hash of an autoencoder.

    ``None`` (no autoencoder: the model works on the data itself) is fingerprinted as ``identity``.
    """
    if autoencoder is None:
        return {"type": "identity"}
    fp: dict[str, Any] = {"type": _qualname(autoencoder), "config": _config_of(autoencoder)}
    for attr in ("scaling_factor", "shift_factor", "latent_scale", "latent_shift"):
        if hasattr(autoencoder, attr):
            fp[attr] = _jsonable(getattr(autoencoder, attr))
    if isinstance(autoencoder, torch.nn.Module):
        fp["weights"] = weights_digest(autoencoder)
    elif fp["config"] is None:
        raise TypeError(
            f"cannot fingerprint the autoencoder {_qualname(autoencoder)}: it is no nn.Module and has no config"
        )
    return fp


def text_encoder_fingerprint(text_encoder: Any | None) -> str | None:
    """The text encoder's own ``fingerprint()``, else its class and weights hash; None without one."""
    if text_encoder is None:
        return None
    fingerprint = getattr(text_encoder, "fingerprint", None)
    if callable(fingerprint):
        return str(fingerprint())
    if isinstance(text_encoder, torch.nn.Module):
        return f"{_qualname(text_encoder)}:{weights_digest(text_encoder)}"
    raise TypeError(
        f"cannot fingerprint the text encoder {_qualname(text_encoder)}: give it a fingerprint() method"
    )


def dataset_fingerprint(dataset: Any, data_key: str, probes: int = 3) -> dict[str, Any]:
    """Identity of a dataset without reading all of it.

    Class, length, its ``fingerprint()`` or config when it has one, and a sha256 of ``probes`` items
    spread over the dataset (their data tensor bytes, shape and caption): a change of the
    data's shape, its files or captions changes it.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot cache an empty dataset")
    fp: dict[str, Any] = {"type": _qualname(dataset), "len": n}
    own = getattr(dataset, "fingerprint", None)
    if callable(own):
        fp["fingerprint"] = str(own())
    else:
        fp["config"] = _config_of(dataset)
    h = hashlib.sha256()
    shapes = []
    for i in sorted({round(k * (n - 1) / max(1, probes - 1)) for k in range(probes)}):
        item = dataset[i]
        if data_key not in item:
            raise KeyError(
                f"{type(dataset).__name__} items have no {data_key!r} (keys: {sorted(item)}); "
                "pass the data_key they have"
            )
        x = item[data_key]
        shapes.append(list(x.shape))
        h.update(f"{i}|{x.dtype}|{list(x.shape)}|{item.get('text', '')}|".encode())
        h.update(_tensor_sha(x).encode())
    fp["probe_shapes"] = shapes
    fp["probe_sha256"] = h.hexdigest()
    return fp


def cache_fingerprint(
    dataset: Any,
    *,
    autoencoder: Any | None,
    text_encoder: Any | None,
    data_key: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All parts of a cache's identity (see the module docstring).

    data_key: the tensor of the dataset's items (None: the dataset's ``data_key``, see
    :func:`~mediadiff.train.data.resolve_data_key`).
    """
    data_key = resolve_data_key(dataset, data_key)
    return {
        "version": CACHE_VERSION,
        "data_key": data_key,
        "autoencoder": autoencoder_fingerprint(autoencoder),
        "text_encoder": text_encoder_fingerprint(text_encoder),
        "dataset": dataset_fingerprint(dataset, data_key),
        "extra": _jsonable(extra or {}),
    }


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a fingerprint."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``"a.b: cache has X, run has Y"`` for every leaf where two fingerprints differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: cache has {_short(old)}, run has {_short(new)}"]
    return []


# --- encoding (shared by the cache build and the trainer's on-the-fly path) ----------------------


@torch.no_grad()
def encode_latents(autoencoder: Any | None, x: torch.Tensor) -> torch.Tensor:
    """``autoencoder.encode(x)`` without gradients (``x`` itself when there is no autoencoder)."""
    return x if autoencoder is None else autoencoder.encode(x)


# --- the cache ---------------------------------------------------------------------------------


class LatentCache(Dataset):
    """A read-only dataset of cached ``{"latent", "tokens", "mask"}`` items (see the module docstring).

    Opening checks that the build completed and every shard has its recorded size; with
    ``fingerprint`` it also checks the cache was built by the same parts, else raises
    :class:`CacheMismatchError` naming what differs.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: dict[str, Any] | None = None):
        self.path = Path(path)
        meta_file = self.path / META_FILE
        if not self.path.is_dir():
            raise CacheError(f"no cache at {self.path}")
        if not meta_file.is_file():
            raise CacheError(
                f"the cache at {self.path} is incomplete (no {META_FILE}): its build was interrupted; "
                "delete it or let open_or_build rebuild it"
            )
        self.meta = json.loads(meta_file.read_text())
        for shard in self.meta["shards"]:
            file = self.path / shard["file"]
            size = file.stat().st_size if file.is_file() else -1
            if size != shard["bytes"]:
                raise CacheError(
                    f"the cache at {self.path} is damaged: {shard['file']} has {max(size, 0)} bytes, "
                    f"expected {shard['bytes']}; delete it or let open_or_build rebuild it"
                )
        if fingerprint is not None and fingerprint_key(fingerprint) != self.meta["key"]:
            diffs = _differences(self.meta["fingerprint"], fingerprint) or ["(fingerprint key differs)"]
            raise CacheMismatchError(
                f"the cache at {self.path} was built by different parts than this run uses:\n  "
                + "\n  ".join(diffs)
                + "\nrebuild it (open_or_build(..., on_mismatch='rebuild'), --rebuild-cache) or delete it"
            )
        self._ends = list(_cumsum(s["items"] for s in self.meta["shards"]))
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()
        self.empty: tuple[torch.Tensor, torch.Tensor] | None = None
        if (self.path / EMPTY_FILE).is_file():
            with safe_open(self.path / EMPTY_FILE, framework="pt") as f:
                self.empty = (f.get_tensor("tokens"), f.get_tensor("mask"))

    @property
    def key(self) -> str:
        """The fingerprint key this cache was built with."""
        return self.meta["key"]

    @property
    def has_text(self) -> bool:
        """Whether items carry text embeddings."""
        return self.meta["text"]

    def __len__(self) -> int:
        return self.meta["num_items"]

    def _handle(self, shard: int) -> Any:
        if self._pid != os.getpid():  # a DataLoader worker: open its own file handles
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = safe_open(self.path / self.meta["shards"][shard]["file"], framework="pt")
        return self._handles[shard]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"cache index {index} out of range [0, {len(self)})")
        shard = bisect.bisect_right(self._ends, index)
        row = index - (self._ends[shard - 1] if shard else 0)
        f = self._handle(shard)
        item = {"latent": f.get_slice("latent")[row]}  # [...]
        if self.has_text:
            length = int(f.get_slice("length")[row : row + 1][0])
            item["tokens"] = f.get_slice("tokens")[row, :length]  # [l d]
            item["mask"] = f.get_slice("mask")[row, :length]  # [l]
        return item

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers (spawn)
        return {**self.__dict__, "_handles": {}}

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        dataset: Any,
        *,
        autoencoder: Any | None,
        text_encoder: Any | None,
        data_key: str | None = None,
        extra: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
        batch_size: int = 8,
        shard_size: int = 1024,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        latent_dtype: torch.dtype = torch.float32,
        progress: bool = True,
    ) -> LatentCache:
        """Encode every item of ``dataset`` once and write the cache to ``path`` (replacing an old one).

        ``autoencoder.encode`` and ``text_encoder.encode`` run on ``device`` in batches of
        ``batch_size`` without gradients; ``shard_size`` items go in each safetensors file.
        ``data_key``: the tensor of the items (None: the dataset's own ``data_key``).
        """
        path = Path(path)
        data_key = resolve_data_key(dataset, data_key)
        if fingerprint is None:
            fingerprint = cache_fingerprint(
                dataset, autoencoder=autoencoder, text_encoder=text_encoder, data_key=data_key, extra=extra
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.time_ns()}")
        tmp.mkdir()
        try:
            shards = _write_shards(
                tmp,
                dataset,
                autoencoder,
                text_encoder,
                data_key,
                batch_size,
                shard_size,
                num_workers,
                device,
                latent_dtype,
                progress,
            )
            if text_encoder is not None:
                tokens, mask = encode_context(text_encoder, [""], device)  # [1 l d], [1 l]
                save_file(
                    {"tokens": tokens[0].cpu().contiguous(), "mask": mask[0].cpu().contiguous()},
                    tmp / EMPTY_FILE,
                )
            meta = {
                "version": CACHE_VERSION,
                "key": fingerprint_key(fingerprint),
                "fingerprint": fingerprint,
                "num_items": sum(s["items"] for s in shards),
                "text": text_encoder is not None,
                "latent_dtype": str(latent_dtype),
                "shards": shards,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
            publish_dir(tmp, path)  # swaps in the new build, then drops an old one
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(path, fingerprint)

    @classmethod
    def open_or_build(
        cls,
        path: str | os.PathLike,
        dataset: Any,
        *,
        autoencoder: Any | None,
        text_encoder: Any | None,
        data_key: str | None = None,
        extra: dict[str, Any] | None = None,
        on_mismatch: str = "rebuild",
        is_main_process: bool = True,
        wait_for_everyone: Callable[[], None] | None = None,
        log: Callable[[str], None] = print,
        **build_kwargs: Any,
    ) -> LatentCache:
        """Open the cache at ``path`` if it matches this run's parts, else build it.

        on_mismatch: ``rebuild`` (default) replaces a cache built by other parts, ``error`` raises
        :class:`CacheMismatchError`. An incomplete or damaged cache is always rebuilt. In a
        multi-process run only the main process builds; the others wait (``wait_for_everyone``) and
        then open it.
        """
        if on_mismatch not in ("rebuild", "error"):
            raise ValueError(f"on_mismatch must be 'rebuild' or 'error', got {on_mismatch!r}")
        data_key = resolve_data_key(dataset, data_key)
        fingerprint = cache_fingerprint(
            dataset, autoencoder=autoencoder, text_encoder=text_encoder, data_key=data_key, extra=extra
        )
        if is_main_process:
            # one builder at a time: a second run (or `--cache-only`) on the same cache waits for the first,
            # then opens what it built instead of deleting its half-written files and building again
            with FileLock(Path(path).parent / f".{Path(path).name}.lock", f"the latent cache {path}").acquire(
                blocking=True, log=log
            ):
                cls._open_or_build_locked(
                    path,
                    dataset,
                    autoencoder,
                    text_encoder,
                    data_key,
                    fingerprint,
                    on_mismatch,
                    log,
                    build_kwargs,
                )
        if wait_for_everyone is not None:
            wait_for_everyone()
        return cls(path, fingerprint)

    @classmethod
    def _open_or_build_locked(
        cls,
        path: str | os.PathLike,
        dataset: Any,
        autoencoder: Any | None,
        text_encoder: Any | None,
        data_key: str,
        fingerprint: dict[str, Any],
        on_mismatch: str,
        log: Callable[[str], None],
        build_kwargs: dict[str, Any],
    ) -> None:
        """Open the cache, or build it when it is missing, damaged or (``rebuild``) built by other parts;
        the caller holds the cache's lock."""
        for stale in Path(path).parent.glob(f".{Path(path).name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # an interrupted earlier build
        try:
            cls(path, fingerprint)
            return
        except CacheMismatchError as err:
            if on_mismatch == "error":
                raise
            log(f"{err}\nrebuilding the cache at {path}")
        except CacheError as err:  # missing, incomplete or damaged: always rebuilt
            if Path(path).exists():
                log(f"{err}\nrebuilding the cache at {path}")
        cls.build(
            path,
            dataset,
            autoencoder=autoencoder,
            text_encoder=text_encoder,
            data_key=data_key,
            fingerprint=fingerprint,
            **build_kwargs,
        )


def _cumsum(values: Any) -> Any:
    total = 0
    for v in values:
        total += v
        yield total


def _write_shards(
    folder: Path,
    dataset: Any,
    autoencoder: Any | None,
    text_encoder: Any | None,
    data_key: str,
    batch_size: int,
    shard_size: int,
    num_workers: int,
    device: torch.device | str,
    latent_dtype: torch.dtype,
    progress: bool,
) -> list[dict[str, Any]]:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=functools.partial(collate_raw, key=data_key),
    )
    shards: list[dict[str, Any]] = []
    buf: dict[str, list[torch.Tensor]] = {"latent": [], "tokens": [], "mask": []}
    index = 0

    def flush() -> None:
        if not buf["latent"]:
            return
        n = len(buf["latent"])
        tensors = {
            "latent": torch.stack(buf["latent"]).contiguous(),  # [n ...]
            "index": torch.arange(index - n, index),  # [n] dataset index of each row
        }
        if text_encoder is not None:
            lengths = torch.tensor([t.shape[0] for t in buf["tokens"]])  # [n]
            tokens, mask = pad_context(buf["tokens"], buf["mask"])  # [n l d], [n l]
            tensors.update(tokens=tokens, mask=mask, length=lengths)
        name = f"shard-{len(shards):05d}.safetensors"
        save_file(tensors, folder / name, metadata={"format": "mediadiff-latent-cache"})
        shards.append({"file": name, "items": n, "bytes": (folder / name).stat().st_size})
        for v in buf.values():
            v.clear()

    bar = tqdm(
        total=len(dataset),
        desc=f"caching {folder.name.split('.tmp-')[0].lstrip('.')}",
        unit="item",
        disable=not progress,
    )
    for batch in loader:
        latents = encode_latents(autoencoder, batch["data"].to(device)).to("cpu", latent_dtype)  # [b ...]
        if text_encoder is not None:
            tokens, mask = encode_context(text_encoder, batch["text"], device)  # [b l d], [b l]
            tokens, mask = tokens.cpu(), mask.cpu()
        for i in range(latents.shape[0]):
            buf["latent"].append(latents[i])
            if text_encoder is not None:
                real = mask[i].nonzero()
                length = int(real.max()) + 1 if real.numel() else 1  # keep up to the last real token
                buf["tokens"].append(tokens[i, :length])
                buf["mask"].append(mask[i, :length])
            index += 1
            if len(buf["latent"]) == shard_size:
                flush()
        bar.update(latents.shape[0])
    flush()
    bar.close()
    return shards
