import json

import pytest
import torch
import torch.nn.functional as F

from mediadiff.text import default_encoder_path, load_text_encoder
from mediadiff.text.encoder import TextEncoder

WORDS = "a red blue green circle square ball moving left right up down fast slow".split()


def save_wordlevel_tokenizer(folder, specials, template, pad="<pad>"):
    """A word-level tokenizer built offline with `tokenizers`, saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([pad, "<unk>", *specials, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(s, vocab[s]) for s in specials]
        )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, unk_token="<unk>", model_max_length=32
    ).save_pretrained(folder)
    return vocab


def tiny_folder(tmp_path, kind, template=True):
    from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    folder = tmp_path / kind
    if kind == "bert":
        vocab = save_wordlevel_tokenizer(folder, ["[CLS]", "[SEP]"], "[CLS] $A [SEP]" if template else None)
        cfg = BertConfig(
            vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=32,
        )  # fmt: skip
        model = BertModel(cfg)
    elif kind == "t5":
        vocab = save_wordlevel_tokenizer(folder, ["</s>"], "$A </s>")
        cfg = T5Config(
            vocab_size=len(vocab), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
            pad_token_id=0, eos_token_id=vocab["</s>"], decoder_start_token_id=0,
        )  # fmt: skip
        model = T5EncoderModel(cfg)
    else:
        vocab = save_wordlevel_tokenizer(folder, ["<bos>", "<eos>"], "<bos> $A <eos>")
        cfg = CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=32, pad_token_id=0,
            bos_token_id=vocab["<bos>"], eos_token_id=vocab["<eos>"],
        )  # fmt: skip
        model = CLIPTextModel(cfg)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder()


def test_minilm_shapes_mask_and_zero_padding(minilm):
    prompts = ["a red circle", "", "a small green square moving slowly to the left"]
    tokens, mask = minilm.encode(prompts)
    assert minilm.dim == 384 and minilm.max_length == 77
    assert tokens.dtype == torch.float32 and mask.dtype == torch.bool
    assert tokens.shape == (3, mask.shape[1], 384) and mask.shape[1] == mask[2].sum()
    assert mask[1].tolist()[:3] == [True, True, False]  # "" -> [CLS] [SEP]
    assert mask[0].sum() == 5  # [CLS] a red circle [SEP]
    assert (tokens[~mask] == 0).all() and (tokens[mask].abs().sum(-1) > 0).all()
    fixed, fixed_mask = minilm.encode(prompts, padding="max_length")
    assert fixed.shape == (3, 77, 384) and fixed_mask.sum() == mask.sum()
    long_tokens, long_mask = minilm.encode([" ".join(["word"] * 200)])
    assert long_tokens.shape[1] == 77 and long_mask.all()  # truncated to max_length


def test_minilm_deterministic_and_distinct(minilm):
    a, ma = minilm.encode(["a red circle", "a blue square"])
    b, mb = minilm.encode(["a red circle", "a blue square"])
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not torch.allclose(a[0], a[1], atol=1e-2)


def test_minilm_batch_padding_does_not_change_valid_tokens(minilm):
    alone, m_alone = minilm.encode(["a red circle"])
    batch, m_batch = minilm.encode(
        ["a red circle", "a much longer prompt about a blue square drifting upwards"]
    )
    n = int(m_alone.sum())
    assert m_batch[0].sum() == n and batch.shape[1] > n
    torch.testing.assert_close(batch[0, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


def test_minilm_semantic_sanity(minilm):
    tokens, mask = minilm.encode(["a red circle", "a red ball", "a blue square"])
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # [3 384]
    near = F.cosine_similarity(pooled[0], pooled[1], dim=0)
    far = F.cosine_similarity(pooled[0], pooled[2], dim=0)
    assert near > far + 0.05


def test_fingerprint_is_stable_and_tracks_what_changes_the_output(minilm, tmp_path):
    fp = minilm.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0 and fp == minilm.fingerprint()
    folder = tiny_folder(tmp_path, "bert")
    first = TextEncoder(folder).fingerprint()
    assert first != fp and TextEncoder(folder).fingerprint() == first
    assert TextEncoder(folder, max_length=8).fingerprint() != first
    cfg = json.loads((folder / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-6
    (folder / "config.json").write_text(json.dumps(cfg))
    assert TextEncoder(folder).fingerprint() != first


@pytest.mark.parametrize("kind,empty_tokens", [("bert", 2), ("t5", 1), ("clip", 2)])
def test_tiny_encoders_load_by_path(tmp_path, kind, empty_tokens):
    folder = tiny_folder(tmp_path, kind)
    enc = load_text_encoder(folder)
    assert enc.kind == kind and enc.dim == 16
    tokens, mask = enc.encode(["a red circle moving left", "", "blue ball"])
    assert tokens.shape == (3, 5 + empty_tokens, 16)  # longest: 5 words + the special tokens
    assert mask.sum(1).tolist() == [5 + empty_tokens, empty_tokens, 2 + empty_tokens]
    assert torch.isfinite(tokens).all() and (tokens[~mask] == 0).all()
    assert not torch.allclose(tokens[0, : mask[2].sum()], tokens[2, : mask[2].sum()])
    alone, _ = enc.encode(["blue ball"])
    torch.testing.assert_close(tokens[2, : 2 + empty_tokens], alone[0], atol=1e-5, rtol=1e-5)


def test_prompt_with_no_tokens_keeps_one_valid_position(tmp_path):
    enc = TextEncoder(tiny_folder(tmp_path, "bert", template=False))  # no [CLS]/[SEP]: "" has no token
    tokens, mask = enc.encode(["", "red ball"])
    assert mask.tolist() == [[True, False], [True, True]] and tokens.shape == (2, 2, 16)
    only, only_mask = enc.encode([""])
    assert only.shape == (1, 1, 16) and only_mask.tolist() == [[True]]


def test_clear_errors(tmp_path, minilm):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_encoder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_text_encoder(tmp_path)
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    )
    with pytest.raises(ValueError, match="not a supported text encoder"):
        load_text_encoder(tmp_path / "gpt")
    with pytest.raises(FileNotFoundError, match="local Hugging Face cache"):
        load_text_encoder("nobody/no-such-encoder-in-cache")
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode("a red circle")
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(default_encoder_path(), max_length=100000)
