"""Tiny local tokenizers and random text encoders for the diffusers interop tests (no download).

The tokenizers are built in code with the ``tokenizers`` library and wrapped in transformers' own
classes, so ``save_pretrained`` writes what ``AutoTokenizer.from_pretrained`` (and every diffusers
pipeline) loads back: a T5 Unigram tokenizer (``</s>`` appended, ``<pad>`` = 0; also what UMT5 folders
use) and a CLIP BPE tokenizer over single letters (``<|startoftext|> ... <|endoftext|>``, padded with
``<|endoftext|>``, 77 tokens). The encoders are random, one layer, width 16: seconds to build.
"""

from __future__ import annotations

import string

import torch

WORDS = (
    "a an the red green blue yellow white circle square triangle moving up down left right fast slow "
    "cat dog bird playing sine square wave note rising falling"
).split()
PROMPT = "a red circle moving right"
NEGATIVE = "a blue square"


def t5_tokenizer(model_max_length: int = 512):
    """A T5 tokenizer (Unigram over :data:`WORDS`, Metaspace pre-tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=model_max_length,
    )


def clip_tokenizer():
    """A CLIP tokenizer: BPE with no merges over lower-case letters (a word is its letters), 77 tokens."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in string.ascii_lowercase:
            vocab[c + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def vocab_size(tokenizer) -> int:
    return len(tokenizer)


def tiny_t5(vocab: int, d_model: int = 16, seed: int = 0, umt5: bool = False):
    """A random one-layer T5 encoder (``T5EncoderModel``; ``UMT5EncoderModel`` with ``umt5``), width ``d_model``."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    torch.manual_seed(seed)
    config = config_class(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    return model_class(config).eval()


def tiny_umt5(vocab: int, d_model: int = 16, seed: int = 0):
    """A random one-layer UMT5 encoder (``UMT5EncoderModel``), width ``d_model``: :func:`tiny_t5` of UMT5."""
    return tiny_t5(vocab, d_model, seed, umt5=True)


def tiny_clip_text(vocab: int, hidden: int = 16, seed: int = 0):
    """A random one-layer CLIP text model (``CLIPTextModel``), width ``hidden``, 77 positions."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=hidden,
    )
    return CLIPTextModel(config).eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """``(max |a - b|, max |a - b| / max |b|)`` in float64."""
    a, b = a.double(), b.double()
    diff = (a - b).abs().max().item()
    return diff, diff / max(b.abs().max().item(), 1e-30)
