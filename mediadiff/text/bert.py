"""BERT-like text encoders without transformers: the tokenizer straight from ``tokenizer.json``
(the ``tokenizers`` library) and BERT's encoder as a small torch module over the folder's safetensors.

Why: importing transformers' modeling stack costs ~2.5 s of a cold ``mediadiff generate`` (issue 18),
for six layers of a 22M-parameter MiniLM. What loads here is bit for bit what transformers'
``AutoModel`` / ``AutoTokenizer`` give for the same folder (tests/test_text_bert.py checks ids, masks
and float32 hidden states with ``torch.equal``): the same ops in the same order as transformers'
``BertModel`` with its default ``sdpa`` attention.

The encoder (Devlin et al. 2019, "BERT", Sec. 3; Vaswani et al. 2017, post-LN):

- embeddings: ``LN(word[ids] + type[0] + position[0..l-1])``;
- each layer: ``x = LN(x + W_o SDPA(W_q x, W_k x, W_v x; key mask))``, then
  ``x = LN(x + W_2 GELU(W_1 x))`` with the exact (erf) GELU;
- the key mask is left out when no position of the batch is padding (as transformers does, which
  lets SDPA pick its unmasked kernel).

:class:`FolderTokenizer` and :meth:`BertEncoder.from_folder` raise :class:`Unsupported` naming why
a folder needs transformers (another architecture or option, weights that are not a complete
safetensors BERT, a tokenizer that transformers would rebuild differently);
:class:`~mediadiff.text.encoder.TextEncoder` then loads the folder with transformers as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BertEncoder", "BertSettings", "FolderTokenizer", "Unsupported"]


class Unsupported(Exception):
    """The folder is not one this module reproduces exactly; the message says why."""


# ------------------------------------------------------------------------------------------------- the model


_REQUIRED = {  # config.json fields that must hold these values (or be absent) for the encoder here to be exact
    "model_type": "bert",
    "position_embedding_type": "absolute",
    "hidden_act": "gelu",
    "is_decoder": False,
    "add_cross_attention": False,
    "chunk_size_feed_forward": 0,
}


@dataclass(frozen=True)
class BertSettings:
    """What BERT's encoder needs from ``config.json`` (the field names are transformers' own)."""

    vocab_size: int
    hidden_size: int  # d, the token width
    num_hidden_layers: int
    num_attention_heads: int  # d is split into this many heads of d / heads
    intermediate_size: int  # width of the MLP's hidden layer
    max_position_embeddings: int  # the most tokens a prompt may have
    type_vocab_size: int  # token types (segments); every token here is type 0
    layer_norm_eps: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BertSettings:
        """The settings of a ``config.json``; :class:`Unsupported` for anything this encoder does not do."""
        for key, value in _REQUIRED.items():
            if config.get(key, value) != value:
                raise Unsupported(f"config.json {key}={config.get(key)!r} (only {value!r} is built here)")
        attention = config.get("_attn_implementation", config.get("attn_implementation"))
        if attention not in (None, "sdpa"):
            raise Unsupported(f"config.json asks for {attention!r} attention (only sdpa is built here)")
        defaults = {"type_vocab_size": 2, "layer_norm_eps": 1e-12, "max_position_embeddings": 512}
        values = {}
        for name, kind in cls.__annotations__.items():
            value = config.get(name, defaults.get(name))
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            if not ok or (kind == "int" and not isinstance(value, int)):
                raise Unsupported(f"config.json {name}={value!r} is not a positive {kind}")
            values[name] = value
        if values["hidden_size"] % values["num_attention_heads"]:
            raise Unsupported(
                f"config.json hidden_size {values['hidden_size']} is not a multiple of "
                f"num_attention_heads {values['num_attention_heads']}"
            )
        return cls(**values)


def _table(rows: int, width: int) -> nn.Embedding:
    """An embedding table of uninitialized weights (they are loaded next)."""
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width))


class _Linear(nn.Module):
    """``nn.Linear``'s ``F.linear(x, weight, bias)`` with uninitialized weights: the folder's are loaded
    next, so drawing random ones first (what ``nn.Linear`` does) would be wasted time."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width_out, width_in))
        self.bias = nn.Parameter(torch.empty(width_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _Embeddings(nn.Module):
    """Word + token type + absolute position embeddings, then LayerNorm."""

    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        # tables given (uninitialized) rather than drawn: on the meta device normal_ would import torch._dynamo
        self.word_embeddings = _table(s.vocab_size, s.hidden_size)
        self.position_embeddings = _table(s.max_position_embeddings, s.hidden_size)
        self.token_type_embeddings = _table(s.type_vocab_size, s.hidden_size)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: [b l]
        positions = torch.arange(ids.shape[1], device=ids.device)[None]  # [1 l]
        types = torch.zeros_like(ids)  # [b l], every token is of type 0
        x = self.word_embeddings(ids) + self.token_type_embeddings(types)  # [b l d]
        x = x + self.position_embeddings(positions)  # [b l d]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.query = _Linear(s.hidden_size, s.hidden_size)
        self.key = _Linear(s.hidden_size, s.hidden_size)
        self.value = _Linear(s.hidden_size, s.hidden_size)
        self.head_dim = s.hidden_size // s.num_attention_heads
        self.scale = self.head_dim**-0.5


class _Residual(nn.Module):
    """``LN(x + W h)``: a projection back to the token width, the residual and post-LN."""

    def __init__(self, width_in: int, s: BertSettings) -> None:
        super().__init__()
        self.dense = _Linear(width_in, s.hidden_size)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + x)


class _Attention(nn.Module):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.self = _SelfAttention(s)
        self.output = _Residual(s.hidden_size, s)


class _Dense(nn.Module):
    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.dense = _Linear(width_in, width_out)


class _Layer(nn.Module):
    """Self-attention and the GELU MLP, each with its residual and post-LN."""

    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.attention = _Attention(s)
        self.intermediate = _Dense(s.hidden_size, s.intermediate_size)
        self.output = _Residual(s.intermediate_size, s)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # x: [b l d]  mask: [b 1 l l] bool (True: attend) or None
        b, n, _ = x.shape
        att = self.attention.self
        q = att.query(x).view(b, n, -1, att.head_dim).transpose(1, 2)  # [b h l dh]
        k = att.key(x).view(b, n, -1, att.head_dim).transpose(1, 2)  # [b h l dh]
        v = att.value(x).view(b, n, -1, att.head_dim).transpose(1, 2)  # [b h l dh]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=att.scale)
        o = o.transpose(1, 2).contiguous().reshape(b, n, -1)  # [b l d]
        x = self.attention.output(o, x)  # [b l d]
        h = F.gelu(self.intermediate.dense(x))  # [b l ff], the exact (erf) GELU
        return self.output(h, x)  # [b l d]


class _Layers(nn.Module):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(s) for _ in range(s.num_hidden_layers))


class BertEncoder(nn.Module):
    """BERT's encoder (no pooler): ``(ids [b l], attention_mask [b l]) -> last hidden states [b l d]``.

    Parameter names are those of transformers' ``BertModel`` (``embeddings.*``, ``encoder.layer.N.*``),
    so its ``state_dict`` loads from and into one. ``config`` holds the :class:`BertSettings`.
    """

    def __init__(self, settings: BertSettings) -> None:
        super().__init__()
        self.config = settings
        self.embeddings = _Embeddings(settings)
        self.encoder = _Layers(settings)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # input_ids: [b l]  attention_mask: [b l], nonzero on real tokens
        b, n = input_ids.shape
        x = self.embeddings(input_ids)  # [b l d]
        mask = None
        if attention_mask is not None:
            keep = attention_mask.to(device=x.device, dtype=torch.bool)  # [b l]
            if not keep.all():  # padding somewhere: mask the padded keys (all queries alike)
                mask = keep[:, None, None, :].expand(b, 1, n, n)  # [b 1 l l]
        for layer in self.encoder.layer:
            x = layer(x, mask)  # [b l d]
        return x

    @classmethod
    def from_folder(cls, path: Path, dtype: torch.dtype = torch.float32) -> BertEncoder:
        """The encoder of a BERT folder (``config.json`` and ``model.safetensors``), in ``dtype``.

        Raises :class:`Unsupported` when the folder is not a complete safetensors BERT this module
        reproduces (its weights are then loaded by transformers, which also names what is wrong).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise Unsupported(f"config.json cannot be read ({err})") from None
        settings = BertSettings.from_config(config)
        weights_path = path / "model.safetensors"
        if not weights_path.is_file():
            raise Unsupported("no model.safetensors (sharded or pickled weights go through transformers)")
        try:
            weights = load_file(weights_path)
        except (OSError, SafetensorError, ValueError) as err:
            raise Unsupported(f"model.safetensors cannot be read ({err})") from None
        prefix = "bert." if any(k.startswith("bert.embeddings.") for k in weights) else ""
        state = {
            key[len(prefix) :]: value
            for key, value in weights.items()
            if key.startswith(prefix) and key[len(prefix) :].startswith(("embeddings.", "encoder."))
        }
        state.pop("embeddings.position_ids", None)  # a buffer of 0..n-1 that older exports carry
        with torch.device("meta"):
            model = cls(settings)
        expected = model.state_dict()
        if set(state) != set(expected):
            missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
            raise Unsupported(
                f"model.safetensors holds other weights (missing {missing[:3]}, extra {extra[:3]})"
            )
        for key, value in state.items():
            if value.shape != expected[key].shape or not value.is_floating_point():
                raise Unsupported(f"model.safetensors {key} is {value.dtype} {list(value.shape)}")
        model.load_state_dict(state, assign=True)
        return model.to(dtype)


# --------------------------------------------------------------------------------------------- the tokenizer


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class FolderTokenizer:
    """A folder's ``tokenizer.json`` through the ``tokenizers`` library, called as transformers calls it
    from :class:`~mediadiff.text.encoder.TextEncoder`: special tokens added, right padding with the pad
    token, truncation to ``max_length`` (special tokens included) on the configured side.
    """

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        tokenizer_json = folder / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise Unsupported("no tokenizer.json")
        try:
            config = _read_json(folder / "tokenizer_config.json")
            special = _read_json(folder / "special_tokens_map.json")
            tokenizer = Tokenizer.from_file(str(tokenizer_json))
        except Exception as err:  # tokenizers raises plain Exceptions for a bad file
            raise Unsupported(f"the tokenizer files cannot be read ({err})") from None
        _check_rebuilt_alike(tokenizer, config)
        for key in ("extra_special_tokens", "additional_special_tokens"):
            if config.get(key) or special.get(key):
                raise Unsupported(f"tokenizer_config.json {key} (extra special tokens)")
        added = {token.content: i for i, token in tokenizer.get_added_tokens_decoder().items()}
        for token in (config.get("added_tokens_decoder") or {}).values():  # what transformers adds
            if _token_text(token) not in added:
                raise Unsupported(
                    f"tokenizer_config.json adds {_token_text(token)!r}, tokenizer.json does not"
                )
        for name in (
            "unk_token",
            "sep_token",
            "pad_token",
            "cls_token",
            "mask_token",
            "bos_token",
            "eos_token",
        ):
            text = _token_text(config.get(name, special.get(name)))
            if text is not None and text not in added:
                raise Unsupported(f"the {name} {text!r} is not one of tokenizer.json's added tokens")
        self.pad_token = _token_text(config.get("pad_token", special.get("pad_token")))
        if self.pad_token is None:
            raise Unsupported("no pad token")
        self.truncation_side = config.get("truncation_side", "right")
        if self.truncation_side not in ("right", "left"):
            raise Unsupported(f"tokenizer_config.json truncation_side {self.truncation_side!r}")
        limit = config.get("model_max_length")
        self.model_max_length: int | None = limit if isinstance(limit, int) else None
        self.clean_up_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self._tokenizer = tokenizer
        self.pad_token_id: int = added[self.pad_token]

    def __call__(
        self, prompts: list[str], *, padding: str, max_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """b prompts -> (ids [b l] int64, attention_mask [b l] int64), as transformers'
        ``tokenizer(prompts, padding=padding, truncation=True, max_length=max_length)`` gives them."""
        tok = self._tokenizer
        tok.enable_truncation(max_length, stride=0, strategy="longest_first", direction=self.truncation_side)
        tok.enable_padding(
            direction="right",
            pad_id=self.pad_token_id,
            pad_type_id=0,
            pad_token=self.pad_token,
            length=max_length if padding == "max_length" else None,
        )
        encodings = tok.encode_batch(prompts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)  # [b l]
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)  # [b l]
        return ids.reshape(len(prompts), -1), mask.reshape(len(prompts), -1)

    def full_ids(self, prompts: list[str]) -> list[list[int]]:
        """Each prompt's ids with special tokens, neither truncated nor padded."""
        tok = self._tokenizer
        tok.no_truncation()
        tok.no_padding()
        return [e.ids for e in tok.encode_batch(prompts)]

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``, as transformers' ``decode`` gives it."""
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        if self.clean_up_spaces:  # transformers' clean_up_tokenization
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'")):
                text = text.replace(before, after)
            for suffix in ("n't", "'m", "'s", "'ve", "'re"):
                text = text.replace(" " + suffix, suffix)
        return text


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return value


def _part(tokenizer: Any, name: str) -> dict[str, Any] | None:
    """A tokenizer part (normalizer, pre_tokenizer, decoder) as its tokenizer.json entry."""
    part = getattr(tokenizer, name)
    return None if part is None else json.loads(part.__getstate__())


def _check_rebuilt_alike(tokenizer: Any, config: dict[str, Any]) -> None:
    """:class:`Unsupported` unless transformers' tokenizer for this folder is ``tokenizer.json`` as it is.

    ``PreTrainedTokenizerFast`` loads the file whole. ``BertTokenizer`` (transformers 5) rebuilds the
    WordPiece model, normalizer, pre-tokenizer and decoder from tokenizer_config.json and takes only the
    vocabulary and post-processor from the file, so those parts of the file must be what it rebuilds.
    """
    cls = config.get("tokenizer_class", "BertTokenizer")  # a bert folder without one gets BertTokenizer
    if cls in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        return
    if cls not in ("BertTokenizer", "BertTokenizerFast"):
        raise Unsupported(f"tokenizer_class {cls!r}")
    unk = _token_text(config.get("unk_token", "[UNK]"))
    rebuilt = {
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": True,
            "handle_chinese_chars": config.get("tokenize_chinese_chars", True),
            "strip_accents": config.get("strip_accents"),
            "lowercase": config.get("do_lower_case", True),
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    }
    for part, fields in rebuilt.items():
        have = _part(tokenizer, part)
        if have != fields:
            raise Unsupported(f"tokenizer.json {part} {have} is not what BertTokenizer rebuilds ({fields})")
    model = tokenizer.model
    have = (
        type(model).__name__,
        *(getattr(model, k, None) for k in ("unk_token", "continuing_subword_prefix")),
    )
    if have != ("WordPiece", unk, "##") or model.max_input_chars_per_word != 100:
        raise Unsupported(f"tokenizer.json model {have} is not the WordPiece BertTokenizer rebuilds")
