"""Bad text for the text encoders and the pipelines (issue 17, part B).

Decided and tested here: a control character (tab, newline, NUL, escape, DEL, C1) reads as a space, in
every encoder (``mediadiff.text.sanitize_prompt``); text holding bytes that were not UTF-8 (lone
surrogates) is refused with a ValueError that names the byte; any other text, non-ASCII included,
encodes to finite tokens; a prompt longer than the encoder's limit is cut to the limit with a
:class:`~mediadiff.text.encoder.PromptTruncatedWarning` that gives its length, the limit and where it
was cut; an empty prompt (or one of control characters only) is the unconditional context for the
encoder and is refused by the pipelines and the command line.
"""

from __future__ import annotations

import unicodedata
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediadiff.pipelines import VideoPipeline
from mediadiff.text import load_text_encoder, sanitize_prompt
from mediadiff.text.encoder import PromptTruncatedWarning, TextEncoder
from tests.test_text import tiny_folder

pytestmark = pytest.mark.usefixtures("one_thread")

FUZZ = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
CONTROLS = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))]  # C0, DEL, C1: 65 characters


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return load_text_encoder()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, TextEncoder]:
    """Tiny BERT, T5 and CLIP folders (word-level tokenizers, a 32-token limit)."""
    root = tmp_path_factory.mktemp("faults_text")
    return {kind: TextEncoder(tiny_folder(root, kind)) for kind in ("bert", "t5", "clip")}


def _same(encoder: TextEncoder, a: str, b: str) -> None:
    (ta, ma), (tb, mb) = encoder.encode([a]), encoder.encode([b])
    assert torch.equal(ma, mb), (a, b)
    torch.testing.assert_close(ta, tb, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------- control characters


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_sanitize_prompt_replaces_each_control_character_by_one_space(text):
    clean = sanitize_prompt(text)
    assert len(clean) == len(text)  # one for one: positions keep their meaning
    for before, after in zip(text, clean):
        assert after == (" " if before in CONTROLS else before)
    assert sanitize_prompt(clean) == clean  # idempotent


def test_every_control_character_reads_as_a_space_in_every_encoder(minilm, tiny):
    for encoder in (minilm, *tiny.values()):
        for control in CONTROLS:
            _same(encoder, f"a red{control}circle", "a red circle")
        _same(encoder, "\ta red\r\nball\x0c", " a red  ball ")
        _same(encoder, "\x1b[31ma red ball\x1b[0m", " [31ma red ball [0m")  # an ANSI colour code's ESC
    # without the rule BERT joins the words around NUL ("ared") and the word-level tokenizers read it as a token
    assert minilm.tokenizer.tokenize("a\x00red") == ["are", "##d"]


def test_a_prompt_of_control_characters_only_is_empty(minilm):
    _same(minilm, "\x00\x01\x7f\x9f", "")  # the encoder: the unconditional context
    pipe = VideoPipeline.from_pretrained("shapes-unet3d")
    for prompt in ("\x00\x01\x7f\x9f", "\t\n", ["a red circle", "\x1b"]):
        with pytest.raises(ValueError, match="prompt must not be empty"):
            pipe(prompt, steps=1)
    ctx = pipe.encode(["a red\x00circle moving right"])
    torch.testing.assert_close(
        ctx["context"], pipe.encode(["a red circle moving right"])["context"], rtol=0, atol=0
    )


# ----------------------------------------------------------------------------------------- bytes that are not UTF-8


@FUZZ
@given(
    st.text(max_size=20),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.text(max_size=20),
)
def test_text_with_lone_surrogates_is_refused_naming_where(head, surrogate, tail):
    with pytest.raises(ValueError, match=f"at character {len(head)} is not UTF-8"):
        sanitize_prompt(head + surrogate + tail)


def test_undecodable_bytes_are_refused_by_the_encoder_and_the_pipeline(minilm):
    text = b"a red \xff\xfe circle".decode("utf-8", errors="surrogateescape")  # what Python makes of argv
    with pytest.raises(ValueError, match="byte 0xff at character 6 is not UTF-8"):
        minilm.encode([text])
    pipe = VideoPipeline.from_pretrained("shapes-unet3d")
    with pytest.raises(ValueError, match=r"VideoPipeline: prompt: .* byte 0xff"):
        pipe(text, steps=1)
    with pytest.raises(ValueError, match=r"VideoPipeline: negative_prompt: .* byte 0xc3"):
        pipe("a red circle", b"\xc3".decode("utf-8", "surrogateescape"), steps=1)
    with pytest.raises(TypeError, match="must be a string"):
        sanitize_prompt(b"a red circle")


# ----------------------------------------------------------------------------------------- non-ASCII text

SAMPLES = [
    "un cercle rouge qui va à droite",  # accents (MiniLM strips them)
    "赤い円が右に動く",  # Japanese
    "红色圆圈向右移动",  # Chinese
    "دائرة حمراء تتحرك لليمين",  # Arabic, right to left
    "a red circle 😀🔴➡️",  # emoji, a variation selector
    "👩‍👩‍👧 family",  # zero-width joiners
    "e\u0301e\u0301 combining accents",  # combining marks
    "\ufeffa BOM, \u200ba zero-width space, \u00a0a no-break space",
    "\U0010fffd a private-use character",
    "ǅ ǈ ǋ titlecase digraphs, ß, İ",
]


@pytest.mark.parametrize("kind", ["minilm", "bert", "t5", "clip"])
def test_non_ascii_text_encodes_to_finite_tokens(kind, minilm, tiny):
    encoder = minilm if kind == "minilm" else tiny[kind]
    tokens, mask = encoder.encode(SAMPLES)
    assert tokens.shape[:2] == mask.shape and tokens.shape[0] == len(SAMPLES)
    assert torch.isfinite(tokens).all() and mask.any(1).all() and (tokens[~mask] == 0).all()
    alone, alone_mask = encoder.encode(SAMPLES[4:5])  # the same alone as in the batch
    n = int(alone_mask.sum())
    torch.testing.assert_close(tokens[4, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=120), min_size=1, max_size=3))
def test_any_text_encodes_or_warns_never_crashes(minilm, prompts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptTruncatedWarning)  # 120 emoji can pass 77 tokens
        tokens, mask = minilm.encode(prompts)
    assert tokens.shape == (len(prompts), mask.shape[1], 384) and mask.shape[1] <= minilm.max_length
    assert torch.isfinite(tokens).all() and mask.any(1).all()


def test_minilm_reads_unicode_as_its_tokenizer_does(minilm):
    assert minilm.tokenizer.tokenize("café") == ["cafe"]  # accents stripped: "café" is "cafe"
    _same(minilm, "a café", "a cafe")
    _same(minilm, unicodedata.normalize("NFD", "a café"), "a cafe")
    _, mask = minilm.encode(["😀"])
    assert mask.sum() == 3  # [CLS] [UNK] [SEP]: the vocabulary has no emoji, the prompt still encodes


# ----------------------------------------------------------------------------------------- too long


def _words(n: int) -> str:
    return " ".join(["word"] * n)


def test_a_prompt_at_the_limit_is_silent_one_over_is_cut_and_says_so(minilm):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens, mask = minilm.encode([_words(75)])  # [CLS] + 75 + [SEP] = 77 tokens: exactly the limit
    assert mask.sum() == 77
    with pytest.warns(PromptTruncatedWarning) as record:
        tokens, mask = minilm.encode([_words(76)])
    (warning,) = record
    message = str(warning.message)
    assert "is 78 tokens long, more than the text encoder's limit of 77 tokens" in message
    assert "(its last 1 tokens are ignored)" in message and "\n" not in message
    assert tokens.shape[1] == 77 and mask.all()


def test_the_warning_says_where_the_prompt_was_cut(minilm):
    prompt = " ".join(f"w{i}" for i in range(100)) + " ending"
    with pytest.warns(PromptTruncatedWarning, match=r"it is cut after '.*w3[0-9].*'") as record:
        cut, _ = minilm.encode([prompt])
    message = str(record[0].message)
    assert message.startswith("TextEncoder: the prompt 'w0 w1 w2") and "...' is " in message  # shortened
    total = len(minilm.tokenizer(prompt)["input_ids"])
    assert f"is {total} tokens long" in message and f"its last {total - 77} tokens are ignored" in message
    kept = minilm.tokenizer.decode(
        minilm.tokenizer(prompt, truncation=True, max_length=77)["input_ids"][1:-1]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same, _ = minilm.encode([kept])  # what was kept, given alone: the same tokens
    torch.testing.assert_close(cut, same, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "t5", "clip"])
def test_every_encoder_warns_at_its_own_limit(tiny, kind):
    encoder = tiny[kind]
    assert encoder.max_length == 32  # the tiny folders' limit (a CLIP-like 77 is capped by the model's)
    with pytest.warns(PromptTruncatedWarning, match="more than the text encoder's limit of 32 tokens"):
        tokens, mask = encoder.encode(["a red circle", _words(50)])
    assert mask.shape[1] == 32 and mask[1].all() and torch.isfinite(tokens).all()


@pytest.mark.parametrize("pad_mode", ["encoded", "encoded_masked", "zeros"])
def test_the_diffusers_pad_modes_warn_too(tiny, pad_mode):
    encoder = TextEncoder(tiny["t5"].path, pad_mode=pad_mode, max_length=16)
    with pytest.warns(PromptTruncatedWarning, match="limit of 16 tokens"):
        tokens, _ = encoder.encode([_words(20)])
    assert tokens.shape[1] == 16


def test_a_huge_prompt_is_cut_quickly_and_warned_once_through_the_pipeline(recwarn):
    pipe = VideoPipeline.from_pretrained("shapes-unet3d")
    prompt = "a red circle moving right " * 20_000  # 100k words, 500 kB
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every warning recorded: once is the prompt cache's doing
        pipe.encode([prompt, prompt])  # the prompt cache: encoded (and warned) once
        pipe.encode([prompt])
    cut = [w for w in recwarn.list if issubclass(w.category, PromptTruncatedWarning)]
    assert len(cut) == 1 and "is 100002 tokens long" in str(cut[0].message)
