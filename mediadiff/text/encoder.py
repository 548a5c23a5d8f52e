"""Hugging Face text encoders from local folders behind one interface.

``TextEncoder.encode(prompts) -> (tokens [b l d], mask [b l])``: the last hidden states of the
encoder, right-padded to the longest prompt in the batch (or to ``max_length``), with ``mask`` True
on real tokens; padded positions hold zeros. Supported folders (detected from ``config.json``):

- BERT-like encoders through ``AutoModel`` (bert, roberta, distilbert, mpnet, ...), e.g. the
  default all-MiniLM-L6-v2;
- T5 encoders through ``T5EncoderModel`` (t5, mt5, umt5; the decoder of a full T5 folder is not loaded);
- CLIP text models through ``CLIPTextModel`` (a ``clip`` or ``clip_text_model`` folder).

The empty prompt ``""`` is the unconditional context. It keeps the tokenizer's special tokens, so
its mask has at least one True: ``[CLS] [SEP]`` for BERT-like (2 tokens), ``</s>`` for T5 (1),
``<|startoftext|> <|endoftext|>`` for CLIP (2). A tokenizer that yields no token at all gets its
first (pad) position marked valid, so attention over any context is always defined.

Options for the text encoders of diffusers pipeline folders (``text_encoder/`` and ``tokenizer/``
apart): ``tokenizer=`` another folder for the tokenizer, ``max_length``, and ``pad_mode``:

- ``"mask"`` (default): as above;
- ``"encoded"``: pad every prompt to ``max_length`` and encode the pad tokens as text, with no attention
  mask; the mask returned is all True (CogVideoX: T5, 226 tokens; Stable Diffusion text-to-video: CLIP, 77);
- ``"encoded_masked"``: as ``"encoded"`` (pad to ``max_length``, no attention mask in the encoder),
  but the mask returned marks the real tokens, for a backbone that masks its cross-attention
  (LTX-Video: LTXPipeline runs T5 without a mask over 128 tokens and gives the transformer the mask);
- ``"zeros"``: encode with the mask, zero the padding, pad to ``max_length``; the mask returned is all
  True, so a backbone attends to the zero tokens as Wan does (UMT5, 512 tokens).

Prompts: every prompt goes through :func:`~mediadiff.text.sanitize_prompt` first (control characters
become spaces, text that is not valid UTF-8 is a ValueError); non-ASCII text is kept and encodes as the
tokenizer reads it (an emoji that MiniLM's vocabulary lacks is its ``[UNK]`` token). A prompt longer
than ``max_length`` tokens is cut to its first ``max_length`` tokens (special tokens included), with a
:class:`PromptTruncatedWarning` that says how many tokens it had, the limit and where it was cut.

Everything loads with ``local_files_only=True``: no network.

Backends: a BERT folder that :mod:`mediadiff.text.bert` reproduces exactly (the bundled MiniLM among
them: ``bert`` with absolute positions and GELU, safetensors weights, a ``tokenizer.json`` that
transformers loads as it is) is tokenized with the ``tokenizers`` library and run by
:class:`~mediadiff.text.bert.BertEncoder`, without importing transformers (~2.5 s of a cold start); its
ids, masks and hidden states are bit for bit transformers' (tests/test_text_bert.py). Every other folder
loads through transformers. ``backend="transformers"`` (or the environment variable
``MEDIADIFF_TEXT_BACKEND=transformers``) forces transformers for every folder; ``"native"`` refuses a
folder the native path cannot load.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mediadiff.utils import MediadiffWarning

from . import default_encoder_path, sanitize_prompt

__all__ = [
    "BACKENDS",
    "ENCODER_TYPES",
    "PAD_MODES",
    "PromptTruncatedWarning",
    "TextEncoder",
    "load_text_encoder",
]


class PromptTruncatedWarning(MediadiffWarning):
    """A prompt longer than the text encoder's token limit was cut to it."""


_BERT_LIKE = (
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "mpnet",
    "albert",
    "electra",
    "deberta",
    "deberta-v2",
    "camembert",
    "modernbert",
)
_T5 = ("t5", "mt5")
_UMT5 = ("umt5",)
_CLIP = ("clip", "clip_text_model")
ENCODER_TYPES = (*_BERT_LIKE, *_T5, *_UMT5, *_CLIP)
PAD_MODES = ("mask", "encoded", "encoded_masked", "zeros")
"""The ``model_type`` values of ``config.json`` that :class:`TextEncoder` loads."""
BACKENDS = ("auto", "native", "transformers")
BACKEND_ENV = "MEDIADIFF_TEXT_BACKEND"  # the backend when none is given (default "auto")

_HASHED_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin", ".merges")


def _folder_kind(path: Path) -> str:
    """'bert' | 't5' | 'umt5' | 'clip' from the folder's config.json, or a clear error."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"text encoder folder {path} has no config.json (not a Hugging Face model folder)"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    model_type = config.get("model_type")
    if model_type in _T5:
        return "t5"
    if model_type in _UMT5:
        return "umt5"
    if model_type in _CLIP:
        return "clip"
    if model_type in _BERT_LIKE:
        return "bert"
    raise ValueError(
        f"{config_path}: model_type {model_type!r} (architectures {config.get('architectures')}) is not a "
        f"supported text encoder; supported model types: {list(ENCODER_TYPES)}"
    )


def _position_limit(path: Path, tokenizer_limit: int | None) -> int | None:
    """The most tokens the model takes: its position table and the tokenizer's limit (None: no limit)."""
    config = json.loads((path / "config.json").read_text())
    config = config.get("text_config", config)  # a full CLIP folder keeps the text model's config inside
    limits = [n for n in (config.get("max_position_embeddings"), tokenizer_limit) if isinstance(n, int)]
    limits = [n for n in limits if 0 < n < 1_000_000]  # tokenizers without a limit report ~1e30
    return min(limits) if limits else None


class TextEncoder:
    """A frozen text encoder loaded from a local Hugging Face folder; see the module docstring.

    path: the model folder; device, dtype: where and in what precision the encoder runs
    (``encode`` always returns float32 tokens); max_length: token limit per prompt, longer prompts
    are truncated (default: 77, CLIP's context, capped by the model's own limit); tokenizer: a folder
    holding the tokenizer when it is not ``path`` (diffusers' ``tokenizer/``); pad_mode: ``"mask"``,
    ``"encoded"``, ``"encoded_masked"`` or ``"zeros"`` (see the module docstring); clean: applied to each
    prompt before tokenizing (a pipeline's own prompt clean-up, e.g. Wan's ``prompt_clean``);
    backend: ``"auto"`` (native BERT where exact, else transformers), ``"native"`` or ``"transformers"``
    (default: ``$MEDIADIFF_TEXT_BACKEND``, else ``"auto"``); ``self.backend`` says which one loaded.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_length: int | None = None,
        tokenizer: str | os.PathLike | None = None,
        pad_mode: str = "mask",
        clean: Callable[[str], str] | None = None,
        backend: str | None = None,
    ) -> None:
        given = backend
        backend = (os.environ.get(BACKEND_ENV) or "auto") if backend is None else backend
        if backend not in BACKENDS:
            where = "backend" if given is not None else f"${BACKEND_ENV}"
            raise ValueError(f"TextEncoder: {where} must be one of {list(BACKENDS)}, got {backend!r}")
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise FileNotFoundError(f"text encoder folder {self.path} does not exist")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"TextEncoder: pad_mode must be one of {list(PAD_MODES)}, got {pad_mode!r}")
        self.pad_mode = pad_mode
        self.clean = clean
        self.tokenizer_path = self.path if tokenizer is None else Path(tokenizer).expanduser().resolve()
        self.kind = _folder_kind(self.path)
        self._hf_tokenizer: Any = None
        self._native_tokenizer: Any = None
        self.model: Any = None
        if self.kind == "bert" and backend != "transformers":
            from .bert import BertEncoder, FolderTokenizer, Unsupported

            try:
                self._native_tokenizer = FolderTokenizer(self.tokenizer_path)
                checked = self._check_max_length(max_length, self._native_tokenizer.model_max_length)
                self.model = BertEncoder.from_folder(self.path, dtype)
                max_length = checked
            except Unsupported as err:
                if backend == "native":
                    raise ValueError(
                        f"TextEncoder: backend 'native' cannot load {self.path}: {err}"
                    ) from None
                self._native_tokenizer = None
        elif backend == "native":
            raise ValueError(
                f"TextEncoder: backend 'native' loads BERT folders only; {self.path} is {self.kind}"
            )
        self.backend = "transformers" if self.model is None else "native"
        if self.model is None:
            max_length = self._load_transformers(max_length, dtype)
        self.model.eval().requires_grad_(False).to(device)
        self.dtype = dtype
        config = self.model.config
        self.dim: int = config.d_model if self.kind in ("t5", "umt5") else config.hidden_size
        self.max_length: int = max_length
        self._fingerprint: str | None = None

    def _check_max_length(self, max_length: int | None, tokenizer_limit: int | None) -> int:
        """``max_length``, or its default (77 capped by the model's limit); a ValueError if out of range."""
        model_limit = _position_limit(self.path, tokenizer_limit)
        if max_length is None:
            max_length = min(77, model_limit) if model_limit else 77
        if max_length < 1 or (model_limit is not None and max_length > model_limit):
            raise ValueError(
                f"TextEncoder: max_length must be in [1, {model_limit}] for {self.path}, got {max_length}"
            )
        return max_length

    def _load_transformers(self, max_length: int | None, dtype: torch.dtype) -> int:
        """Tokenizer and model through transformers; returns the checked ``max_length``."""
        from transformers import AutoModel, CLIPTextModel, T5EncoderModel, UMT5EncoderModel

        model_cls = {
            "bert": AutoModel,
            "t5": T5EncoderModel,
            "umt5": UMT5EncoderModel,
            "clip": CLIPTextModel,
        }[self.kind]
        max_length = self._check_max_length(max_length, self.tokenizer.model_max_length)
        self.model = _quiet_load(model_cls, self.path, dtype)
        return max_length

    @property
    def tokenizer(self) -> Any:
        """The folder's transformers tokenizer (right padding). The native backend tokenizes without it;
        it is loaded here on first use, for callers that want transformers' tokenizer API."""
        if self._hf_tokenizer is None:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path, local_files_only=True)
            except (OSError, ValueError, TypeError) as err:
                raise ValueError(
                    f"text encoder folder {self.path}: cannot load its tokenizer from {self.tokenizer_path} ({err})"
                ) from err
            tokenizer.padding_side = "right"
            self._hf_tokenizer = tokenizer
        return self._hf_tokenizer

    @property
    def device(self) -> torch.device:
        """Where the encoder runs."""
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> TextEncoder:
        """Move the encoder to ``device``; returns self."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(
        self, prompts: list[str] | tuple[str, ...], *, padding: str = "longest"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts: b strings -> (tokens [b l dim] float32, mask [b l] bool), on the encoder's device.

        ``padding="longest"`` pads to the longest prompt of the batch, ``"max_length"`` to
        ``max_length`` (fixed shapes, e.g. for caching). A prompt's valid tokens do not depend on
        the other prompts in the batch.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("TextEncoder.encode: prompts must be a list of strings")
        if len(prompts) == 0:
            raise ValueError("TextEncoder.encode: prompts is empty")
        if padding not in ("longest", "max_length"):
            raise ValueError(
                f"TextEncoder.encode: padding must be 'longest' or 'max_length', got {padding!r}"
            )
        if self.pad_mode != "mask":
            padding = "max_length"
        prompts = [sanitize_prompt(p) for p in prompts]
        if self.clean is not None:
            prompts = [self.clean(p) for p in prompts]
        self._warn_if_truncated(prompts)
        if self._native_tokenizer is not None:
            ids, mask = self._native_tokenizer(list(prompts), padding=padding, max_length=self.max_length)
            pad_id = self._native_tokenizer.pad_token_id
        else:
            batch = self.tokenizer(
                list(prompts),
                padding=padding,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                return_token_type_ids=False,
            )
            ids, mask, pad_id = batch["input_ids"], batch["attention_mask"], self.tokenizer.pad_token_id
        ids = ids.to(self.device)  # [b l]
        mask = mask.to(self.device).bool()  # [b l]
        if ids.shape[1] == 0:  # no prompt yielded a token: one pad position each
            ids = torch.full((len(prompts), 1), pad_id or 0, device=self.device)  # [b 1]
            mask = torch.zeros_like(ids, dtype=torch.bool)  # [b 1]
        mask[:, 0] |= ~mask.any(-1)  # a prompt with no token keeps one (pad) position valid
        if self.pad_mode in ("encoded", "encoded_masked"):  # pad tokens encoded as text, nothing masked
            tokens = self._hidden(ids, None).float()  # [b l dim]
            return tokens, (mask if self.pad_mode == "encoded_masked" else torch.ones_like(mask))
        tokens = self._hidden(ids, mask.long()).float() * mask[..., None]  # [b l dim], zeros at padding
        if self.pad_mode == "zeros":  # the zero tokens are part of the context
            return tokens, torch.ones_like(mask)
        return tokens, mask

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """ids [b l], mask [b l] int or None -> the encoder's last hidden states [b l dim], its dtype."""
        if self.backend == "native":
            return self.model(ids, mask)
        if mask is None:
            return self.model(input_ids=ids).last_hidden_state
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    def _warn_if_truncated(self, prompts: list[str]) -> None:
        """A :class:`PromptTruncatedWarning` for each prompt of more than ``max_length`` tokens."""
        native = self._native_tokenizer
        if native is not None:
            full, decode = native.full_ids(prompts), native.decode
        else:
            full = self.tokenizer(prompts, truncation=False, verbose=False)["input_ids"]  # b lists of ids
            decode = self.tokenizer.decode
        for prompt, ids in zip(prompts, full):
            if len(ids) <= self.max_length:
                continue
            kept = decode(ids[: self.max_length], skip_special_tokens=True).split()
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            warnings.warn(
                f"TextEncoder: the prompt {shown!r} is {len(ids)} tokens long, more than the text encoder's "
                f"limit of {self.max_length} tokens; it is cut after {' '.join(kept[-4:])!r} "
                f"(its last {len(ids) - self.max_length} tokens are ignored)",
                PromptTruncatedWarning,
                stacklevel=4,  # past encode and its no_grad wrapper: the caller of encode
            )

    def options(self) -> dict[str, Any]:
        """The keyword arguments (besides the folder) that rebuild this encoder: ``max_length``, ``pad_mode``."""
        return {"max_length": self.max_length, "pad_mode": self.pad_mode}

    __call__ = encode

    def fingerprint(self) -> str:
        """sha256 over everything that decides ``encode``'s output: the folder's config, tokenizer and
        weight files (names and bytes), the encoder kind, ``max_length`` and the dtype. Computed once."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(
                f"mediadiff.TextEncoder/1 {self.kind} max_length={self.max_length} {self.dtype}\n".encode()
            )
            if self.pad_mode != "mask":
                h.update(f"pad_mode={self.pad_mode}\n".encode())
            if self.clean is not None:
                h.update(f"clean={self.clean.__module__}.{self.clean.__qualname__}\n".encode())
            roots = [self.path] if self.tokenizer_path == self.path else [self.path, self.tokenizer_path]
            files = sorted(
                (root, p)
                for root in roots
                for p in root.rglob("*")
                if p.is_file() and p.name.endswith(_HASHED_SUFFIXES)
            )
            for root, p in files:
                h.update(f"{p.relative_to(root).as_posix()}\0{p.stat().st_size}\0".encode())
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        pad = "" if self.pad_mode == "mask" else f", pad_mode={self.pad_mode!r}"
        return (
            f"TextEncoder({self.path}, kind={self.kind}, dim={self.dim}, max_length={self.max_length}{pad})"
        )


def load_text_encoder(name_or_path: str | os.PathLike | None = None, **kwargs: Any) -> TextEncoder:
    """The text encoder in a local folder; ``None`` or ``"minilm"`` gives the bundled all-MiniLM-L6-v2.

    A name that is not a folder is looked up in the local Hugging Face cache (never downloaded).
    ``kwargs`` go to :class:`TextEncoder` (device, dtype, max_length).
    """
    if name_or_path is None or str(name_or_path) in ("minilm", "all-MiniLM-L6-v2"):
        return TextEncoder(default_encoder_path(), **kwargs)
    path = Path(name_or_path).expanduser()
    if not path.exists() and "/" in str(name_or_path) and not path.is_absolute():
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(str(name_or_path), local_files_only=True))
        except Exception as err:
            raise FileNotFoundError(
                f"text encoder {name_or_path!r} is neither a local folder nor in the local Hugging Face cache "
                "(mediadiff loads encoders offline; download the folder first)"
            ) from err
    return TextEncoder(path, **kwargs)


def _quiet_load(model_cls, path: Path, dtype: torch.dtype):
    """Load weights without transformers' per-load "Loading weights" progress bar (a sub-second load)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return model_cls.from_pretrained(path, local_files_only=True, dtype=dtype)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
