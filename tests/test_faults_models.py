"""Bad models and checkpoints (issue 17): a folder of another kind, damaged weights, edited configs, a
backbone that does not fit its autoencoder, and planted pickles. Each is a clear ``ValueError`` or
``FileNotFoundError`` naming the file and what was expected, raised while loading (before any sampling);
through the CLI, exit code 2 and one line. Nothing is ever unpickled from a model folder.

The folders are real: tiny random pipelines of both modalities written by ``save_pretrained`` (their
weights carry the SHA-256 of their data), the shipped models' own sub-folders, a real training run, and
damage done to the bytes of the files.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mediadiff.audio import DiT1D, WaveformVAE
from mediadiff.cli import main
from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import AudioPipeline, VideoPipeline
from mediadiff.pipelines.base import WEIGHTS_DIR
from mediadiff.text import load_text_encoder
from mediadiff.video import CausalVideoVAE, DiT
from tests.test_pipeline import randomize
from tests.test_text import tiny_folder

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = {"video": VideoPipeline, "audio": AudioPipeline}
PROMPT = "a red ball"
MEDIADIFF = Path(__file__).resolve().parents[1] / "mediadiff"


# ----------------------------------------------------------------------------------------- folders


def video_parts(in_channels: int = 4, out_channels: int | None = None, context_dim: int = 16):
    vae = randomize(CausalVideoVAE(latent_channels=4, channels=(8, 8)), 1, std=0.3)
    dit = DiT(
        in_channels=in_channels,
        out_channels=out_channels,
        width=32,
        depth=1,
        heads=2,
        context_dim=context_dim,
    )
    return randomize(dit, 2), vae


def audio_parts(in_channels: int = 4, out_channels: int | None = None, context_dim: int = 16):
    mel = {"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "n_mels": 32}
    vae = randomize(
        WaveformVAE(latent_channels=4, patch=4, strides=(4,), channels=(8, 8), mel=mel), 1, std=0.3
    )
    dit = DiT1D(
        in_channels=in_channels, out_channels=out_channels, patch=(2,), width=32, depth=1, heads=2,
        context_dim=context_dim,
    )  # fmt: skip
    return randomize(dit, 2), vae


DEFAULTS = {
    "video": {"num_frames": 5, "height": 16, "width": 16, "steps": 1, "fps": 6},
    "audio": {"num_samples": 2048, "steps": 1, "sample_rate": 8000},
}
PARTS = {"video": video_parts, "audio": audio_parts}


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return load_text_encoder(tiny_folder(tmp_path_factory.mktemp("text"), "bert"))  # 16-d tiny BERT


@pytest.fixture(scope="module")
def saved(tmp_path_factory, text) -> dict[str, Path]:
    """Good pipeline folders of both modalities (tiny, random), written by save_pretrained."""
    root = tmp_path_factory.mktemp("good")
    folders = {}
    for modality, cls in CLASSES.items():
        backbone, autoencoder = PARTS[modality]()
        pipe = cls(backbone, autoencoder, text, FlowSchedule(), defaults=DEFAULTS[modality])
        folders[modality] = pipe.save_pretrained(root / modality)
    return folders


def copy(saved: dict[str, Path], modality: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[modality], tmp_path / modality))


def load(modality: str, folder: Path):
    pipe = CLASSES[modality].from_pretrained(folder)
    pipe.autocast = False
    return pipe


def generate(pipe):
    out = pipe(PROMPT, seed=0)
    return out.frames if hasattr(out, "frames") else out.audio


def test_the_good_folders_load_and_generate(saved):
    for modality, folder in saved.items():
        assert np.isfinite(generate(load(modality, folder)).astype(np.float64)).all()


# ----------------------------------------------------------------------------------------- the wrong folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real (two-step) training run folder: metrics.jsonl, config.json and checkpoints/step-*."""
    from tests.test_train import make_trainer

    out = tmp_path_factory.mktemp("run") / "run"
    make_trainer(out, max_steps=2, checkpoint_every=1).fit()
    return out


def wrong_folders(saved: dict[str, Path], run_dir: Path, tmp: Path) -> list[tuple[str, str, Path, type, str]]:
    """(modality loaded, what, folder, error, message) for every kind of folder that is not a pipeline of
    that modality."""
    empty = tmp / "empty"
    empty.mkdir()
    half = tmp / "half-written"
    shutil.copytree(saved["video"], half)
    (half / "pipeline.json").unlink()
    flux, bare_index, binary_index = tmp / "flux", tmp / "no-class", tmp / "binary-index"
    for folder, text in ((flux, '{"_class_name": "FluxPipeline"}'), (bare_index, '{"vae": ["x", "y"]}')):
        folder.mkdir()
        (folder / "model_index.json").write_text(text)
    binary_index.mkdir()
    (binary_index / "model_index.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    wan = tmp / "wan"
    wan.mkdir()
    (wan / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    checkpoint = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    not_found, value = FileNotFoundError, ValueError
    return [
        ("video", "an audio pipeline", saved["audio"], value, r"not a VideoPipeline folder but an AudioPipeline one"),
        ("audio", "a video pipeline", saved["video"], value, r"not a AudioPipeline folder but a VideoPipeline one"),
        ("video", "the shipped audio model", WEIGHTS_DIR / "t2a_tones_dit", value, "generate audio"),
        ("audio", "the shipped video model", WEIGHTS_DIR / "t2v_shapes_dit", value, "generate video"),
        ("video", "a bare backbone", saved["video"] / "backbone", not_found, r"single model's folder \(a DiT\)"),
        ("audio", "a bare backbone", saved["audio"] / "backbone", not_found, r"single model's folder \(a DiT1D\)"),
        ("video", "the shipped VAE", WEIGHTS_DIR / "video_vae_shapes", not_found, r"\(a CausalVideoVAE\)"),
        ("audio", "the shipped VAE", WEIGHTS_DIR / "audio_vae_tones", not_found, r"\(a WaveformVAE\)"),
        ("audio", "the shipped vocoder", WEIGHTS_DIR / "audio_vocoder_tones", not_found, r"\(a Vocoder\)"),
        ("video", "a training run", run_dir, not_found, r"training run folder.*--export"),
        ("audio", "a training run", run_dir, not_found, r"training run folder.*--export"),
        ("video", "a checkpoint", checkpoint, not_found, r"a training checkpoint"),
        ("video", "a half-written pipeline", half, not_found, r"backbone/ or autoencoder/ but no pipeline.json"),
        ("video", "an empty folder", empty, not_found, r"not a pipeline folder \(no pipeline.json\)"),
        ("video", "an unsupported diffusers class", flux, value, r"'FluxPipeline' is not a supported video"),
        ("audio", "a diffusers video class", wan, value, r"'WanPipeline' \(a video pipeline\) is not a supported audio"),
        ("video", "a diffusers index with no class", bare_index, value, r"model_index.json: no _class_name"),
        ("video", "a binary diffusers index", binary_index, value, r"model_index.json: not UTF-8 text"),
        ("video", "an incomplete diffusers folder", wan, not_found, r"cannot load this WanPipeline folder"),
    ]  # fmt: skip


def test_a_folder_of_another_kind_is_named(saved, run_dir, tmp_path):
    cases = wrong_folders(saved, run_dir, tmp_path)
    assert len(cases) == 19
    for modality, what, folder, error, message in cases:
        with pytest.raises(error, match=message) as info:
            CLASSES[modality].from_pretrained(folder)
        assert str(folder) in str(info.value), what  # the folder (or a file in it) is named


# ----------------------------------------------------------------------------------------- damaged weights


def header_length(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


def float_tensor_offset(data: bytes) -> int:
    """The file offset of the first float32 tensor's data."""
    header = json.loads(data[8 : 8 + header_length(data)])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    return 8 + header_length(data) + header[name]["data_offsets"][0]


def without_checksum(path: Path) -> None:
    """Rewrite a safetensors file as folders written before the checksum were (metadata: format only)."""
    from safetensors.torch import load_file

    save_file(load_file(path), path, metadata={"format": "pt"})


def damage(kind: str) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        data = bytearray(path.read_bytes())
        n = header_length(data)
        if kind == "truncated to half":
            data = data[: len(data) // 2]
        elif kind == "truncated to 7 bytes":
            data = data[:7]
        elif kind == "empty":
            data = bytearray()
        elif kind == "header length changed":
            data[0:8] = (n + 1000).to_bytes(8, "little")
        elif kind == "header bytes flipped":
            for i in range(8 + n // 2, 8 + n // 2 + 4):
                data[i] ^= 0xFF
        elif kind == "data bytes flipped":
            for i in range(len(data) - 40, len(data) - 36):
                data[i] ^= 0xFF
        elif kind == "NaN written, no checksum":
            path.write_bytes(bytes(data))
            without_checksum(path)
            data = bytearray(path.read_bytes())
            at = float_tensor_offset(data)
            data[at : at + 4] = np.float32(np.nan).tobytes()
        path.write_bytes(bytes(data))

    return apply


DAMAGE = {
    "truncated to half": r"model.safetensors: not a readable safetensors file .*truncated or damaged",
    "truncated to 7 bytes": r"model.safetensors: not a readable safetensors file",
    "empty": r"model.safetensors: not a readable safetensors file",
    "header length changed": r"model.safetensors: not a readable safetensors file",
    "header bytes flipped": r"model.safetensors: not a readable safetensors file",
    "data bytes flipped": r"model.safetensors: its data does not match the checksum stored in it",
    "NaN written, no checksum": r"model.safetensors: tensor '.*' holds 1 NaN or infinite values",
}


@pytest.mark.parametrize("component", ["backbone", "autoencoder"])
@pytest.mark.parametrize("modality", ["video", "audio"])
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_weights_are_named(saved, tmp_path, modality, component, kind):
    folder = copy(saved, modality, tmp_path)
    weights = folder / component / "model.safetensors"
    damage(kind)(weights)
    with pytest.raises(ValueError, match=DAMAGE[kind]) as info:
        CLASSES[modality].from_pretrained(folder)
    assert str(weights) in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_weights_whose_sum_overflows_load_and_one_bad_value_is_counted(tmp_path, dtype):
    """load_weights tests a tensor's sum first: a sum that overflows must not refuse finite weights, and
    bad values among finite ones are found and counted exactly."""
    from mediadiff.nn.pretrained import load_weights

    big = torch.full((64,), torch.finfo(dtype).max / 2, dtype=dtype)  # finite; its sum is inf
    assert not torch.isfinite(big.sum())
    path = tmp_path / "big.safetensors"
    save_file({"w": big, "steps": torch.arange(3)}, str(path))
    assert torch.equal(load_weights(path)["w"], big)
    for bad in (float("inf"), float("-inf"), float("nan")):
        damaged = torch.linspace(-1, 1, 64, dtype=dtype)
        damaged[[5, 40]] = torch.tensor([bad, -bad], dtype=dtype)  # two bad values (+inf and -inf sum to NaN)
        save_file({"w": damaged}, str(path))
        with pytest.raises(ValueError, match=r"big.safetensors: tensor 'w' holds 2 NaN or infinite values"):
            load_weights(path)


def test_weights_written_before_the_checksum_still_load(saved, tmp_path):
    """Shipped folders predate the checksum: their files (metadata "format" only) load as before."""
    for modality in CLASSES:
        folder = copy(saved, modality, tmp_path)
        for component in ("backbone", "autoencoder"):
            without_checksum(folder / component / "model.safetensors")
        np.testing.assert_array_equal(
            generate(load(modality, folder)), generate(load(modality, saved[modality]))
        )


def test_a_missing_weights_file_is_named(saved, tmp_path):
    for modality in CLASSES:
        for component in ("backbone", "autoencoder"):
            folder = copy(saved, modality, tmp_path / component)
            (folder / component / "model.safetensors").unlink()
            with pytest.raises(
                FileNotFoundError, match=rf"{component}/model.safetensors: weights file not found"
            ):
                CLASSES[modality].from_pretrained(folder)


# ----------------------------------------------------------------------------------------- edited configs


def edit_json(rel: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / rel
        spec = json.loads(path.read_text())
        change(spec)
        path.write_text(json.dumps(spec))

    return apply


def write(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / rel).write_bytes(data)


def config(**fields) -> Callable[[dict], None]:
    return lambda spec: spec["config"].update(fields)


def drop(*keys: str, inner: bool = True) -> Callable[[dict], None]:
    def apply(spec: dict) -> None:
        for k in keys:
            (spec["config"] if inner else spec).pop(k)

    return apply


B, A, P = "backbone/config.json", "autoencoder/config.json", "pipeline.json"
BACKBONE_TYPE = {"video": "DiT", "audio": "DiT1D"}
OTHER_BACKBONE = {"video": "UNet3D", "audio": "UNet1D"}
OTHER_AUTOENCODER = {"video": "WaveformVAE", "audio": "CausalVideoVAE"}
EDITS = [
    # backbone/config.json
    ("unknown field", B, edit_json(B, config(colour="red")), r"backbone/config.json: config: unknown fields \['colour'\]"),
    ("width a string", B, edit_json(B, config(width="wide")), r"config.width must be an integer, got 'wide'"),
    ("depth a float", B, edit_json(B, config(depth=1.5)), r"config.depth must be an integer, got 1.5"),
    ("qk_norm a string", B, edit_json(B, config(qk_norm="yes")), r"config.qk_norm must be true or false"),
    ("mlp_ratio NaN", B, edit_json(B, config(mlp_ratio=float("nan"))), r"config.mlp_ratio must be a finite number"),
    ("in_channels edited", B, edit_json(B, config(in_channels=8)), r"model.safetensors: does not fit the DiT.*in the file but"),
    ("width edited", B, edit_json(B, config(width=64)), r"does not fit the DiT.* that .*backbone/config.json describes"),
    ("width missing", B, edit_json(B, drop("width")), r"does not fit the DiT"),
    ("heads zero", B, edit_json(B, config(heads=0)), r"backbone/config.json: (cannot build|not a valid)"),
    ("context_pool unknown", B, edit_json(B, config(context_pool="max")), r"backbone/config.json: not a valid .*context_pool"),
    ("type of another backbone", B, None, r"backbone/config.json: (config: unknown fields|expected a)"),
    ("type unknown", B, edit_json(B, lambda s: s.update(type="Transformer9000")), r"unknown (video|audio) backbone type 'Transformer9000'"),
    ("type a list", B, edit_json(B, lambda s: s.update(type=["DiT"])), r"unknown (video|audio) backbone type \['DiT'\]"),
    ("config a list", B, edit_json(B, lambda s: s.update(config=[1, 2])), r"\"config\" must be an object of .*Config fields"),
    ("not JSON", B, write(B, b'{"type": "DiT", "config": {'), r"backbone/config.json: not valid JSON"),
    ("a JSON list", B, write(B, b"[]"), r"backbone/config.json: holds a JSON list"),
    # autoencoder/config.json
    ("latent_channels edited", A, edit_json(A, config(latent_channels=8)), r"autoencoder/model.safetensors: does not fit"),
    ("latent_shift missing", A, edit_json(A, drop("latent_shift")), r"missing fields \['latent_shift'\]"),
    ("latent stats too short", A, edit_json(A, config(latent_shift=[0.5])), r"latent_shift needs 4 entries"),
    ("unknown field", A, edit_json(A, config(colour="red")), r"autoencoder/config.json: config: unknown fields"),
    ("channels a string", A, edit_json(A, config(channels="wide")), r"config.channels must be a list"),
    ("autoencoder of the other modality", A, None, r"unknown autoencoder type"),
    ("not JSON", A, write(A, b"\x00\x01"), r"autoencoder/config.json: not valid JSON"),
    # pipeline.json
    ("prediction missing", P, edit_json(P, drop("prediction", inner=False)), r"pipeline.json: missing \['prediction'\]"),
    ("schedule missing", P, edit_json(P, drop("schedule", inner=False)), r"pipeline.json: missing \['schedule'\]"),
    ("text_encoder missing", P, edit_json(P, drop("text_encoder", inner=False)), r"pipeline.json: missing \['text_encoder'\]"),
    ("unknown key", P, edit_json(P, lambda s: s.update(seed=3)), r"pipeline.json: unknown keys \['seed'\]"),
    ("prediction a number", P, edit_json(P, lambda s: s.update(prediction=5)), r"'prediction' must be a string"),
    ("prediction unknown", P, edit_json(P, lambda s: s.update(prediction="score")), r"unknown prediction 'score'"),
    ("schedule a string", P, edit_json(P, lambda s: s.update(schedule="flow")), r"'schedule' must be an object"),
    ("schedule type unknown", P, edit_json(P, lambda s: s["schedule"].update(type="cosmic")), r"unknown schedule 'cosmic'"),
    ("schedule shift NaN", P, edit_json(P, lambda s: s["schedule"]["config"].update(shift=float("nan"))), r"shift must be a finite number"),
    ("schedule shift negative", P, edit_json(P, lambda s: s["schedule"]["config"].update(shift=-1)), r"shift must be a finite number in \[0.0001, 10000\], got -1"),
    ("schedule parameter unknown", P, edit_json(P, lambda s: s["schedule"]["config"].update(gamma=1)), r"takes \['shift', 't_min'\], not \['gamma'\]"),
    ("defaults steps zero", P, edit_json(P, lambda s: s["defaults"].update(steps=0)), r"steps must be a positive integer, got 0"),
    ("defaults sampler unknown", P, edit_json(P, lambda s: s["defaults"].update(sampler="magic")), r"unknown sampler 'magic'"),
    ("defaults key unknown", P, edit_json(P, lambda s: s["defaults"].update(colour=1)), r"unknown defaults \['colour'\]"),
    ("defaults a list", P, edit_json(P, lambda s: s.update(defaults=[1])), r"'defaults' must be an object or null"),
    ("format 2", P, edit_json(P, lambda s: s.update(format=2)), r"folder format 2; this mediadiff reads format 1"),
    ("text_encoder unknown", P, edit_json(P, lambda s: s.update(text_encoder="t5-xxl")), r"text_encoder must be 'minilm' or 'text_encoder'"),
    ("not JSON", P, write(P, b"{'type': 'VideoPipeline'}"), r"pipeline.json: not valid JSON"),
    ("binary", P, write(P, bytes(range(256))), r"pipeline.json: not UTF-8 text"),
    ("empty", P, write(P, b""), r"pipeline.json: not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize("modality", ["video", "audio"])
@pytest.mark.parametrize(
    "what, rel, edit, message", EDITS, ids=[f"{e[1].split('/')[0]}: {e[0]}" for e in EDITS]
)
def test_an_edited_config_is_named(saved, tmp_path, modality, what, rel, edit, message):
    folder = copy(saved, modality, tmp_path)
    if what == "type of another backbone":
        edit = edit_json(B, lambda s: s.update(type=OTHER_BACKBONE[modality]))
    elif what == "autoencoder of the other modality":
        edit = edit_json(A, lambda s: s.update(type=OTHER_AUTOENCODER[modality]))
    elif what == "not JSON" and rel == P:
        edit = write(P, b"{'type': '" + CLASSES[modality].__name__.encode() + b"'}")
    message = message.replace("the DiT", f"the {BACKBONE_TYPE[modality]}")
    edit(folder)
    with pytest.raises(ValueError, match=message) as info:
        CLASSES[modality].from_pretrained(folder)
    assert str(folder) in str(info.value)


def test_a_missing_config_file_is_named(saved, tmp_path):
    for modality in CLASSES:
        for rel in (B, A):
            folder = copy(saved, modality, tmp_path / rel.split("/")[0])
            (folder / rel).unlink()
            with pytest.raises(FileNotFoundError, match=rf"{rel}: (missing|not found)"):
                CLASSES[modality].from_pretrained(folder)


# ----------------------------------------------------------------------------------------- parts that do not fit


@pytest.mark.parametrize("modality", ["video", "audio"])
@pytest.mark.parametrize(
    "channels, message",
    [
        (
            {"in_channels": 8},
            r"takes 8-channel and predicts 8-channel latents, but the autoencoder \(\w+\) makes 4",
        ),
        ({"in_channels": 4, "out_channels": 8}, r"takes 4-channel and predicts 8-channel latents"),
        ({"context_dim": 32}, r"the text encoder gives 16-d tokens but the backbone takes context_dim=32"),
    ],
)
def test_a_backbone_that_does_not_fit_its_autoencoder_or_text(
    saved, text, tmp_path, modality, channels, message
):
    """Another backbone's folder in a pipeline (a whole, valid model of its own): refused on load."""
    backbone, autoencoder = PARTS[modality](**channels)
    with pytest.raises(ValueError, match=message):  # built in code
        CLASSES[modality](backbone, autoencoder, text, FlowSchedule(), defaults=DEFAULTS[modality])
    folder = copy(saved, modality, tmp_path)
    shutil.rmtree(folder / "backbone")
    backbone.save_pretrained(folder / "backbone")
    with pytest.raises(ValueError, match=message) as info:  # loaded from a folder
        CLASSES[modality].from_pretrained(folder)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize(
    "what, damage_fn, error, message",
    [
        ("weights truncated", lambda f: damage("truncated to half")(f / "model.safetensors"), ValueError,
         r"text_encoder: cannot load the text encoder \(SafetensorError"),
        ("config.json removed", lambda f: (f / "config.json").unlink(), FileNotFoundError, r"text_encoder has no config.json"),
        ("tokenizer.json truncated", lambda f: (f / "tokenizer.json").write_text('{"version": '), ValueError,
         r"cannot load its tokenizer"),
    ],
)  # fmt: skip
def test_a_damaged_text_encoder_folder_is_named(saved, tmp_path, what, damage_fn, error, message):
    folder = copy(saved, "video", tmp_path)
    damage_fn(folder / "text_encoder")
    with pytest.raises(error, match=message):
        VideoPipeline.from_pretrained(folder)


# ----------------------------------------------------------------------------------------- nothing unpickled

UNPICKLING = {
    "torch.load": "torch.load without weights_only=True",
    "pickle": "an import of pickle",
    "cPickle": "an import of cPickle",
    "dill": "an import of dill",
    "cloudpickle": "an import of cloudpickle",
    "joblib": "an import of joblib",
}


def unpickling_calls(path: Path) -> list[str]:
    """Where ``path`` could unpickle: torch.load without ``weights_only=True``, pickle-like imports,
    ``np.load(..., allow_pickle=True)``, ``torch.jit.load``, ``pandas.read_pickle``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [
                f"{path}:{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in UNPICKLING
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLING:
            names = [
                a.name for a in node.names if not a.name.endswith(("Error", "Warning"))
            ]  # exceptions: fine
            found += [f"{path}:{node.lineno}: from {node.module} import {n}" for n in names]
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
            if name.endswith("torch.load") and not safe:
                found.append(f"{path}:{node.lineno}: {name} without weights_only=True")
            pickled = isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True
            if name.endswith(("np.load", "numpy.load")) and pickled:
                found.append(f"{path}:{node.lineno}: {name}(allow_pickle=True)")
            if name.endswith(("jit.load", "read_pickle", "pickle.load", "pickle.loads")):
                found.append(f"{path}:{node.lineno}: {name}")
    return found


def test_no_source_file_can_unpickle():
    """The audit, kept true: nothing in mediadiff/ unpickles; the torch files it reads (a training
    checkpoint's optimizer.pt) go through ``torch.load(..., weights_only=True)``."""
    files = sorted(MEDIADIFF.rglob("*.py"))
    assert len(files) > 50
    assert [hit for f in files for hit in unpickling_calls(f)] == []
    loads = [f for f in files if "torch.load(" in f.read_text()]
    assert loads, "the audit should see the checkpoint reader's torch.load"


def test_the_audit_sees_an_unpickling_load(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport numpy as np\nimport torch\nfrom pickle import UnpicklingError, loads\n"
        "torch.load('x.pt')\ntorch.load('x.pt', weights_only=False)\nnp.load('x.npy', allow_pickle=True)\n"
        "torch.load('y.pt', map_location='cpu', weights_only=True)\n"
    )
    assert [h.split(": ", 1)[1] for h in unpickling_calls(bad)] == [
        "import pickle",
        "from pickle import loads",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "np.load(allow_pickle=True)",
    ]


class Plant:
    """Unpickling this creates the file ``marker`` (any code could run instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path) -> None:
    """A malicious torch file (zip + pickle) or a raw pickle, by the suffix."""
    if path.suffix in (".pkl", ".pickle"):
        path.write_bytes(pickle.dumps({"weights": Plant(marker)}))
    else:
        torch.save({"weight": torch.zeros(2), "hook": Plant(marker)}, path)


def test_the_planted_files_are_live(tmp_path):
    """The plant works: an unsafe load runs it (so the tests below would see one)."""
    marker = tmp_path / "pwned"
    for name in ("model.bin", "x.pkl"):
        plant(tmp_path / name, marker)
        if name.endswith(".pkl"):
            pickle.loads((tmp_path / name).read_bytes())
        else:
            torch.load(tmp_path / name, weights_only=False)
        assert marker.is_file()
        marker.unlink()
        with pytest.raises(pickle.UnpicklingError):
            torch.load(tmp_path / name, weights_only=True)
        assert not marker.exists()


PLANTED = (
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
    "model.ckpt",
    "weights.pkl",
    "optimizer.pt",
    "diffusion_pytorch_model.bin",
)


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_planted_pickles_in_a_model_folder_never_run(saved, tmp_path, modality):
    """Malicious torch / pickle files beside the safetensors, in every sub-folder: loading, generating and
    saving again never unpickle them."""
    marker = tmp_path / "pwned"
    folder = copy(saved, modality, tmp_path)
    for sub in (folder, folder / "backbone", folder / "autoencoder", folder / "text_encoder"):
        for name in PLANTED:
            plant(sub / name, marker)
    pipe = load(modality, folder)
    assert np.isfinite(generate(pipe).astype(np.float64)).all()
    pipe.save_pretrained(tmp_path / "again")
    load(modality, tmp_path / "again")
    assert not marker.exists()


def test_a_text_encoder_with_only_a_pickle_is_refused_without_running_it(saved, tmp_path):
    """A text encoder folder whose weights are a malicious pytorch_model.bin: transformers reads it with
    weights_only=True, which refuses the pickle; nothing runs and the error names the folder."""
    marker = tmp_path / "pwned"
    folder = copy(saved, "video", tmp_path)
    (folder / "text_encoder" / "model.safetensors").unlink()
    plant(folder / "text_encoder" / "pytorch_model.bin", marker)
    with pytest.raises(ValueError, match=r"text_encoder: cannot load the text encoder"):
        VideoPipeline.from_pretrained(folder)
    assert not marker.exists()


@pytest.mark.slow
def test_a_diffusers_folder_with_a_pickle_or_damaged_weights(tmp_path):
    """A diffusers (Wan) folder: its transformer weights as a malicious .bin are refused unrun; truncated
    safetensors, a broken config and a missing sub-folder are one clear error naming the folder."""
    from tests.test_diffusers_video import build_wan

    good = build_wan(tmp_path / "good", "euler")
    VideoPipeline.from_pretrained(good)
    marker = tmp_path / "pwned"

    def variant(name: str, change: Callable[[Path], None]) -> Path:
        folder = Path(shutil.copytree(good, tmp_path / name))
        change(folder)
        return folder

    def pickled(folder: Path) -> None:
        (folder / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
        plant(folder / "transformer" / "diffusion_pytorch_model.bin", marker)

    cases = [
        ("pickle", pickled, ValueError),
        ("truncated", lambda f: damage("truncated to half")(f / "vae" / "diffusion_pytorch_model.safetensors"), ValueError),
        ("config", lambda f: (f / "transformer" / "config.json").write_text("{"), ValueError),
        ("scheduler", lambda f: shutil.rmtree(f / "scheduler"), FileNotFoundError),
    ]  # fmt: skip
    for name, change, error in cases:
        folder = variant(name, change)
        with pytest.raises(error, match=rf"{folder}: cannot load this WanPipeline folder"):
            VideoPipeline.from_pretrained(folder)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------- the command line


def cli_cases(saved: dict[str, Path], tmp: Path) -> list[tuple[str, str, Path]]:
    """(modality, what, folder) of bad folders for ``mediadiff generate MODALITY --model``."""
    out = []
    for modality in CLASSES:
        other = "audio" if modality == "video" else "video"
        bad = {
            "another modality": saved[other],
            "a bare backbone": saved[modality] / "backbone",
            "a truncated backbone": "truncated to half",
            "flipped data": "data bytes flipped",
            "an edited channel count": "in_channels",
            "a pickle for a text encoder": "pickle",
        }
        for what, how in bad.items():
            if isinstance(how, Path):
                out.append((modality, what, how))
                continue
            folder = Path(shutil.copytree(saved[modality], tmp / modality / what.replace(" ", "-")))
            if how in DAMAGE:
                damage(how)(folder / "backbone" / "model.safetensors")
            elif how == "in_channels":
                edit_json(B, config(in_channels=8))(folder)
            else:
                (folder / "text_encoder" / "model.safetensors").unlink()
                plant(folder / "text_encoder" / "pytorch_model.bin", tmp / "pwned")
            out.append((modality, what, folder))
    return out


def test_generate_with_a_bad_model_exits_2_with_one_line(saved, tmp_path, capsys):
    cases = cli_cases(saved, tmp_path)
    assert len(cases) == 12
    for modality, what, folder in cases:
        target = tmp_path / f"out-{modality}.{'mp4' if modality == 'video' else 'wav'}"
        code = main(
            ["generate", modality, PROMPT, "-o", str(target), "--model", str(folder), "--device", "cpu"]
        )
        _, err = capsys.readouterr()
        assert code == 2, (what, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mediadiff generate {modality}: error: --model: "), (
            what,
            err,
        )
        assert "Traceback" not in err and str(folder) in err, what
        assert not target.exists() and not list(tmp_path.glob("out-*")), what
    assert not (tmp_path / "pwned").exists()
