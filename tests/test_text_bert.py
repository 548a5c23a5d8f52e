"""The native BERT path (mediadiff.text.bert, issue 18) against transformers, bit for bit.

The bundled all-MiniLM-L6-v2 and tiny random BERT folders: the ids and masks of the ``tokenizers``
tokenizer equal transformers' tokenizer's, the hidden states of :class:`BertEncoder` equal
``AutoModel``'s (``torch.equal``, float32), and a shipped model generates the same clip with either
text-encoder backend. Folders the native path does not reproduce load through transformers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from mediadiff.text import default_encoder_path
from mediadiff.text.bert import BertEncoder, FolderTokenizer, Unsupported
from mediadiff.text.encoder import BACKEND_ENV, TextEncoder
from tests.test_text import tiny_folder

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = {
    "empty": [""],
    "one": ["a red circle moving right"],
    "padded batch": ["a red circle", "", "a small green square moving slowly to the left, then up"],
    "long, truncated": [" ".join(f"word{i}" for i in range(120)), "short"],
    "non-ASCII": ["café naïve Ångström", "日本語のテキスト", "emoji 🙂 and ☃", "Straße ÆØÅ ﬁ"],
    "whitespace and punctuation": ["   ", "a,b.c!?", "don't stop"],
}


@pytest.fixture(scope="module")
def minilm() -> tuple[TextEncoder, TextEncoder]:
    """The bundled encoder through each backend: (native, transformers)."""
    native = TextEncoder(default_encoder_path())
    reference = TextEncoder(default_encoder_path(), backend="transformers")
    assert native.backend == "native" and reference.backend == "transformers"
    return native, reference


def _hf_batch(encoder: TextEncoder, prompts: list[str], padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    batch = encoder.tokenizer(
        prompts, padding=padding, truncation=True, max_length=encoder.max_length, return_tensors="pt"
    )
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize("case", list(PROMPTS))
@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_minilm_tokens_and_hidden_states_equal_transformers(minilm, case, padding):
    native, reference = minilm
    prompts = PROMPTS[case]
    ids, mask = native._native_tokenizer(prompts, padding=padding, max_length=native.max_length)
    hf_ids, hf_mask = _hf_batch(reference, prompts, padding)
    assert torch.equal(ids, hf_ids) and torch.equal(mask, hf_mask)
    assert ids.shape[1] <= native.max_length and (case != "long, truncated" or ids.shape[1] == 77)
    with torch.no_grad():
        hidden = native.model(ids, mask)
        hf_hidden = reference.model(input_ids=hf_ids, attention_mask=hf_mask).last_hidden_state
    assert hidden.dtype == torch.float32 and torch.equal(hidden, hf_hidden)
    with pytest.warns() if case == "long, truncated" else _no_warning():
        tokens, token_mask = native.encode(prompts, padding=padding)
    with pytest.warns() if case == "long, truncated" else _no_warning():
        hf_tokens, hf_token_mask = reference.encode(prompts, padding=padding)
    assert torch.equal(tokens, hf_tokens) and torch.equal(token_mask, hf_token_mask)


class _no_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


def test_minilm_equal_on_two_threads_and_with_pads_encoded(minilm):
    native, reference = minilm
    prompts = PROMPTS["padded batch"] + PROMPTS["non-ASCII"]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = TextEncoder(default_encoder_path(), pad_mode="encoded", max_length=24)  # no mask: pads encoded
        b = TextEncoder(default_encoder_path(), pad_mode="encoded", max_length=24, backend="transformers")
        (ta, ma), (tb, mb) = a.encode(prompts), b.encode(prompts)
        assert torch.equal(ta, tb) and torch.equal(ma, mb) and ta.shape[1] == 24
        (ta, ma), (tb, mb) = native.encode(prompts), reference.encode(prompts)
        assert torch.equal(ta, tb) and torch.equal(ma, mb)
    finally:
        torch.set_num_threads(threads)


def test_minilm_tokenizer_file_is_transformers_tokenizer(minilm):
    native, reference = minilm
    spec = json.loads(reference.tokenizer.backend_tokenizer.to_str())
    ours = json.loads(native._native_tokenizer._tokenizer.to_str())
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "model", "added_tokens"):
        assert ours[part] == spec[part], part
    assert native._native_tokenizer.pad_token_id == reference.tokenizer.pad_token_id == 0
    assert native._native_tokenizer.model_max_length == reference.tokenizer.model_max_length == 512
    ids = native._native_tokenizer.full_ids(["A Café, isn't it?"])[0]
    assert ids == reference.tokenizer("A Café, isn't it?")["input_ids"]
    text = native._native_tokenizer.decode(ids)
    assert text == reference.tokenizer.decode(ids, skip_special_tokens=True) and text.startswith(
        "a cafe, isn"
    )


def test_same_interface_fingerprint_and_truncation_warning(minilm):
    native, reference = minilm
    assert native.fingerprint() == reference.fingerprint()  # caches keyed by it stay valid
    assert (native.dim, native.max_length, native.kind) == (reference.dim, reference.max_length, "bert")
    assert native.device == torch.device("cpu") and repr(native) == repr(reference)
    assert native.options() == reference.options()
    assert native._hf_tokenizer is None  # nothing of transformers was loaded to encode
    assert native.tokenizer.tokenize("café") == ["cafe"]  # transformers' tokenizer, loaded on use
    prompt = " ".join(f"w{i}" for i in range(100))
    with pytest.warns(Warning) as ours:
        native.encode([prompt])
    with pytest.warns(Warning) as theirs:
        reference.encode([prompt])
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert "tokens long" in str(ours[0].message)


@pytest.mark.filterwarnings("ignore:TextEncoder. the prompt")  # the 40-token prompt, cut to 32
@pytest.mark.parametrize("template", [True, False])
def test_tiny_random_bert_equals_transformers(tmp_path, template):
    folder = tiny_folder(tmp_path, "bert", template=template)
    native, reference = TextEncoder(folder), TextEncoder(folder, backend="transformers")
    assert native.backend == "native"
    assert native.max_length == reference.max_length == 32
    for prompts in (["a red circle moving left", "", "blue ball"], ["up " * 40], ["zebra unknown words"]):
        for padding in ("longest", "max_length"):
            (ta, ma), (tb, mb) = (
                native.encode(prompts, padding=padding),
                reference.encode(prompts, padding=padding),
            )
            assert torch.equal(ma, mb) and torch.equal(ta, tb), (prompts, padding)


def test_bfloat16_equals_transformers(tmp_path):
    folder = tiny_folder(tmp_path, "bert")
    native = TextEncoder(folder, dtype=torch.bfloat16)
    reference = TextEncoder(folder, dtype=torch.bfloat16, backend="transformers")
    assert next(native.model.parameters()).dtype == torch.bfloat16
    (ta, ma), (tb, mb) = native.encode(["a red circle", "blue"]), reference.encode(["a red circle", "blue"])
    assert torch.equal(ma, mb) and torch.equal(ta, tb)


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "change",
    [
        {"position_embedding_type": "relative_key"},
        {"hidden_act": "gelu_new"},
        {"is_decoder": True},
        {"chunk_size_feed_forward": 4},
        {"model_type": "roberta"},
    ],
)
def test_configs_it_does_not_build_load_through_transformers(tmp_path, change):
    folder = tiny_folder(tmp_path, "bert")
    _edit_config(folder, **change)
    assert TextEncoder(folder).backend == "transformers"
    with pytest.raises(ValueError, match=r"backend 'native' cannot load .*config\.json"):
        TextEncoder(folder, backend="native")


def test_weights_it_cannot_read_load_through_transformers(tmp_path):
    folder = tiny_folder(tmp_path, "bert")
    model = BertEncoder.from_folder(folder)  # complete safetensors: native
    assert model.config.hidden_size == 16 and len(model.encoder.layer) == 2
    _edit_config(folder, num_hidden_layers=3)  # a layer the weights lack
    with pytest.raises(Unsupported, match="missing"):
        BertEncoder.from_folder(folder)
    _edit_config(folder, num_hidden_layers=2)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Unsupported, match="cannot be read"):
        BertEncoder.from_folder(folder)
    with pytest.raises(Exception):  # noqa: B017 - transformers' own error for a damaged file, as before
        TextEncoder(folder)


def test_tokenizers_transformers_rebuilds_differently_are_not_native(tmp_path):
    folder = tmp_path / "minilm"
    shutil.copytree(default_encoder_path(), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["do_lower_case"] = False  # BertTokenizer would rebuild a cased normalizer
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(Unsupported, match="normalizer"):
        FolderTokenizer(folder)
    assert TextEncoder(folder).backend == "transformers"
    (folder / "tokenizer.json").unlink()
    with pytest.raises(Unsupported, match=r"no tokenizer\.json"):
        FolderTokenizer(folder)


def test_backend_choice_and_its_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "transformers")
    assert TextEncoder(default_encoder_path()).backend == "transformers"
    assert TextEncoder(default_encoder_path(), backend="auto").backend == "native"
    monkeypatch.setenv(BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match=r"\$MEDIADIFF_TEXT_BACKEND must be one of"):
        TextEncoder(default_encoder_path())
    monkeypatch.delenv(BACKEND_ENV)
    with pytest.raises(ValueError, match="backend must be one of"):
        TextEncoder(default_encoder_path(), backend="torch")
    with pytest.raises(ValueError, match="BERT folders only"):
        TextEncoder(tiny_folder(tmp_path, "t5"), backend="native")


def test_the_default_encoder_loads_without_transformers():
    code = (
        "import sys\n"
        "from mediadiff.text import load_text_encoder\n"
        "enc = load_text_encoder()\n"
        "tokens, mask = enc.encode(['a red circle'])\n"
        "print(enc.backend, tuple(tokens.shape), any(m.split('.')[0] == 'transformers' for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["native", "(1,", "5,", "384)", "False"]


@pytest.mark.parametrize("modality", [pytest.param("video", marks=pytest.mark.slow), "audio"])  # video: ~20 s
def test_shipped_model_generates_the_same_clip_with_either_backend(modality, monkeypatch):
    from mediadiff.pipelines import pipeline_class

    cls = pipeline_class(modality)
    clips, latents = [], []
    for backend in ("auto", "transformers"):
        monkeypatch.setenv(BACKEND_ENV, backend)
        pipe = cls.from_pretrained(cls.DEFAULT_MODEL)
        assert pipe.text_encoder.backend == ("native" if backend == "auto" else "transformers")
        settings, edit = pipe.prepare_edit()
        _, seeds, cond, uncond = pipe.prepare(cls.EXAMPLE_PROMPT, None, 0, 1, "num")
        latents.append(pipe.sample_items(settings, cond, uncond, seeds, False, edit))
        out = pipe.generate(cls.EXAMPLE_PROMPT, seed=0)
        clips.append(torch.from_numpy(out.frames if modality == "video" else out.audio))
    assert torch.equal(latents[0], latents[1])
    assert torch.equal(clips[0], clips[1])
