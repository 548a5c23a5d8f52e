"""VideoPipeline on tiny random parts: save/load round trip, fp16 storage, seeds, batching, files, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from mediadiff.diffusion import SAMPLERS, FlowSchedule, VPSchedule
from mediadiff.pipelines import VideoOutput, VideoPipeline
from mediadiff.text import load_text_encoder
from mediadiff.train.testing import HashTextEncoder
from mediadiff.video import CausalVideoVAE, DiT, IdentityAutoencoder, UNet3D
from tests.test_text import tiny_folder

DEFAULT_MODEL, SHIPPED_MODELS = VideoPipeline.DEFAULT_MODEL, VideoPipeline.SHIPPED_MODELS
installed_models = VideoPipeline.installed_models

pytestmark = pytest.mark.usefixtures("one_thread")

DIT_DEFAULTS = {"num_frames": 5, "height": 16, "width": 16, "steps": 3, "guidance_scale": 3.0, "fps": 6}
UNET_DEFAULTS = {"num_frames": 3, "height": 8, "width": 8, "steps": 2, "sampler": "euler", "fps": 4}


def randomize(model: torch.nn.Module, seed: int, std: float = 0.2) -> torch.nn.Module:
    """Replace every parameter with seeded noise: the zero-initialised output layers of a fresh backbone
    would make the prediction ignore the prompt."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("text"), "bert")  # 16-d tiny BERT with a word-level tokenizer


@pytest.fixture(scope="module")
def dit_pipe(bert_dir):
    """Latent DiT (patch 1x2x2) on a tiny causal VAE (5x16x16 -> 4x2x4x4), tiny BERT text."""
    torch.manual_seed(0)
    text = load_text_encoder(bert_dir)
    vae = randomize(CausalVideoVAE(latent_channels=4, channels=(8, 8)), 1, std=0.3).eval()
    dit = randomize(DiT(in_channels=4, width=32, depth=1, heads=2, context_dim=16), 2).eval()
    pipe = VideoPipeline(dit, vae, text, FlowSchedule(), defaults=DIT_DEFAULTS, info={"recipe": "test"})
    pipe.autocast = False  # exact comparisons below; bf16 gets its own test
    return pipe


@pytest.fixture(scope="module")
def unet_pipe(bert_dir):
    """Pixel UNet3D (2 levels) with the identity autoencoder, v prediction on a VP schedule."""
    text = load_text_encoder(bert_dir)
    unet = randomize(UNet3D.from_preset("tiny", context_dim=16, channels=8, head_dim=8), 3, std=0.1).eval()
    pipe = VideoPipeline(
        unet, IdentityAutoencoder(), text, VPSchedule("cosine"), prediction="v", defaults=UNET_DEFAULTS
    )
    pipe.autocast = False
    return pipe


def test_save_load_round_trip_is_bit_identical(dit_pipe, bert_dir, tmp_path):
    out = dit_pipe("a red ball moving left", seed=5)
    assert out.frames.dtype == np.uint8 and out.frames.shape == (1, 5, 16, 16, 3)
    assert out.seeds == [5] and out.prompts == ["a red ball moving left"] and out.fps == 6
    assert out.frames.std() > 5  # a real picture, not a constant

    folder = dit_pipe.save_pretrained(tmp_path / "pipe")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary folder left behind
    spec = json.loads((folder / "pipeline.json").read_text())
    assert spec["type"] == "VideoPipeline" and spec["format"] == 1 and spec["prediction"] == "flow"
    assert spec["schedule"] == FlowSchedule().to_config() and spec["info"] == {"recipe": "test"}
    assert spec["defaults"]["num_frames"] == 5 and spec["defaults"]["sampler"] == "dpmpp_2m"
    # the local text encoder is copied, so the folder rebuilds with nothing else
    assert spec["text_encoder"] == "text_encoder"
    assert (folder / "text_encoder" / "config.json").read_bytes() == (bert_dir / "config.json").read_bytes()
    assert {p.name for p in (folder / "backbone").iterdir()} == {"config.json", "model.safetensors"}
    assert json.loads((folder / "autoencoder" / "config.json").read_text())["type"] == "CausalVideoVAE"

    loaded = VideoPipeline.from_pretrained(folder)
    loaded.autocast = False
    assert isinstance(loaded.backbone, DiT) and isinstance(loaded.autoencoder, CausalVideoVAE)
    for module in (loaded.backbone, loaded.autoencoder):
        assert not module.training and not any(p.requires_grad for p in module.parameters())
    assert loaded.defaults == dit_pipe.defaults and loaded.info == dit_pipe.info
    assert loaded.text_encoder.path == (folder / "text_encoder").resolve()
    again = loaded("a red ball moving left", seed=5)
    np.testing.assert_array_equal(again.frames, out.frames)

    # saving over an existing folder replaces it whole
    dit_pipe.save_pretrained(folder, dtype="bfloat16")
    with safe_open(folder / "backbone" / "model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_fp16_storage_loads_float32_modules(unet_pipe, tmp_path):
    folder = unet_pipe.save_pretrained(tmp_path / "unet", dtype="float16")
    with safe_open(folder / "backbone" / "model.safetensors", "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert {t.dtype for t in stored.values()} == {torch.float16}
    assert json.loads((folder / "autoencoder" / "config.json").read_text())["type"] == "IdentityAutoencoder"

    loaded = VideoPipeline.from_pretrained(folder)
    assert isinstance(loaded.backbone, UNet3D) and isinstance(loaded.autoencoder, IdentityAutoencoder)
    assert loaded.prediction == "v" and loaded.schedule.to_config() == unet_pipe.schedule.to_config()
    state = loaded.backbone.state_dict()
    for name, value in unet_pipe.backbone.state_dict().items():
        assert state[name].dtype == torch.float32
        torch.testing.assert_close(state[name], value.half().float(), rtol=0, atol=0)
    full = unet_pipe.save_pretrained(tmp_path / "full")  # fp16 halves the weights file
    assert (folder / "backbone/model.safetensors").stat().st_size < 0.6 * (
        full / "backbone/model.safetensors"
    ).stat().st_size
    loaded.autocast = False
    out = loaded("a blue square", seed=1)
    assert out.frames.shape == (1, 3, 8, 8, 3)


def assert_same_clip(a: np.ndarray, b: np.ndarray) -> None:
    """Bit-identical: on a CPU the pipeline runs each item alone through the backbone and the autoencoder
    (``micro_batch`` "auto" -> 1), so batching changes no pixel (tests/test_reproducibility.py)."""
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("which", ["dit", "unet"])
def test_batch_equals_single_for_the_same_seeds(which, dit_pipe, unet_pipe):
    pipe = dit_pipe if which == "dit" else unet_pipe
    prompts = ["a red ball", "a blue square moving left fast"]
    batch = pipe(prompts, num_videos=2, seed=10)
    assert batch.frames.shape[0] == 4 and batch.seeds == [10, 11, 12, 13]
    assert batch.prompts == [prompts[0], prompts[0], prompts[1], prompts[1]]
    for i in range(4):
        single = pipe(batch.prompts[i], seed=10 + i)
        assert_same_clip(batch.frames[i], single.frames[0])
        if i:  # while different seeds give clearly different clips
            assert np.abs(batch.frames[i].astype(int) - batch.frames[i - 1].astype(int)).mean() > 5
    # a negative prompt replaces "" for every clip, alone or batched
    neg = pipe(prompts, negative_prompt="green", seed=3)
    assert_same_clip(neg.frames[1], pipe(prompts[1], negative_prompt="green", seed=4).frames[0])
    assert not np.array_equal(neg.frames[0], pipe(prompts[0], seed=3).frames[0])


def test_decode_chunk_streams_the_vae_and_matches_the_whole_decode(dit_pipe, unet_pipe, monkeypatch):
    """decode_chunk=N decodes N latent frames per VAE call (the causal cache carries the rest): the clip is the
    whole decode's to a grey level; the identity autoencoder ignores it; bad values and an autoencoder that
    cannot chunk are refused before anything runs."""
    calls = []
    vae_decode = dit_pipe.autoencoder._decode
    monkeypatch.setattr(
        dit_pipe.autoencoder, "_decode", lambda z, state: calls.append(z.shape[2]) or vae_decode(z, state)
    )
    settings = {"num_frames": 9, "seed": 5}  # 3 latent frames
    whole = dit_pipe("a red ball", **settings).frames.astype(int)
    assert calls == [3]
    try:
        for chunk, parts in ((1, [1, 1, 1]), (2, [2, 1]), (3, [3])):
            calls.clear()
            dit_pipe.decode_chunk = chunk
            chunked = dit_pipe("a red ball", **settings).frames.astype(int)
            assert calls == parts
            assert chunked.shape == whole.shape and np.abs(chunked - whole).max() <= 1
        for bad in (0, -2, 1.5, True, "2"):
            dit_pipe.decode_chunk = bad
            with pytest.raises(
                ValueError, match="decode_chunk must be a positive number of latent frames or None"
            ):
                dit_pipe("a red ball", **settings)
        dit_pipe.decode_chunk = 2
        whole_only = dit_pipe.autoencoder.decode
        monkeypatch.setattr(dit_pipe.autoencoder, "decode", lambda z: whole_only(z))  # no chunk_size argument
        with pytest.raises(ValueError, match="decode_chunk=2, but CausalVideoVAE decodes whole clips only"):
            dit_pipe.chunked_decode()
    finally:
        dit_pipe.decode_chunk = None
    unet_pipe.decode_chunk = 1
    try:
        chunked = unet_pipe("a red ball", seed=2).frames
    finally:
        unet_pipe.decode_chunk = None
    np.testing.assert_array_equal(chunked, unet_pipe("a red ball", seed=2).frames)


def test_seeds_reproduce_and_differ(dit_pipe):
    a = dit_pipe("a green circle", seed=7)
    np.testing.assert_array_equal(a.frames, dit_pipe("a green circle", seed=7).frames)
    assert not np.array_equal(a.frames, dit_pipe("a green circle", seed=8).frames)
    assert not np.array_equal(a.frames, dit_pipe("a red square", seed=7).frames)  # the prompt matters
    drawn = dit_pipe("a green circle")  # random seed, reported
    assert len(drawn.seeds) == 1 and drawn.seeds[0] >= 0
    np.testing.assert_array_equal(drawn.frames, dit_pipe("a green circle", seed=drawn.seeds[0]).frames)
    # settings given per call override the defaults
    other = dit_pipe("a green circle", seed=7, sampler="euler", steps=2, num_frames=9, height=8, width=24)
    assert other.frames.shape == (1, 9, 8, 24, 3)


def test_text_encodings_are_cached(dit_pipe):
    calls = []
    encode = dit_pipe.text_encoder.encode
    dit_pipe.text_encoder.encode = lambda prompts: calls.append(list(prompts)) or encode(prompts)
    try:
        dit_pipe.clear_cache()
        dit_pipe(["a red ball", "a red ball", "up"], seed=0)
        assert sorted(map(tuple, calls)) == [("",), ("a red ball",), ("up",)]  # each prompt once, alone
        dit_pipe(["up"], seed=1)
        assert len(calls) == 3
    finally:
        dit_pipe.text_encoder.encode = encode


def test_bf16_autocast_runs(dit_pipe):
    dit_pipe.autocast = True
    try:
        out = dit_pipe("a red ball", seed=0)
    finally:
        dit_pipe.autocast = False
    exact = dit_pipe("a red ball", seed=0)
    assert out.frames.shape == exact.frames.shape
    assert np.abs(out.frames.astype(int) - exact.frames.astype(int)).mean() < 8  # bf16 rounding, same picture


def test_save_writes_readable_files(dit_pipe, tmp_path):
    from mediadiff.video.io import probe, read_video

    out = dit_pipe(["a red ball", "a blue square"], seed=0)  # 2 clips of 5 frames 16x16
    paths = out.save(tmp_path / "clip.mp4")
    assert [p.name for p in paths] == ["clip-0.mp4", "clip-1.mp4"]
    for path in paths:
        info = probe(path, count_frames=True)
        assert (info.num_frames, info.height, info.width, info.codec) == (5, 16, 16, "h264")
        assert info.fps == pytest.approx(6)
        assert read_video(path).shape == (5, 16, 16, 3)
    # the file holds the clip, frames in order (H.264 4:2:0 keeps a ramp; random-colour pixels lose chroma)
    ramp = np.linspace(0, 255, 16).astype(np.uint8)
    clip = np.stack(
        [np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.uint8(50 * k)), -1) for k in range(5)]
    )  # [5 16 16 3]: blue rises 50 levels per frame
    (path,) = VideoOutput(clip[None], ["ramp"], [0], 6).save(tmp_path / "ramp.mp4")
    err = np.abs(read_video(path)[:, None].astype(int) - clip[None].astype(int)).mean((2, 3, 4))  # [5 5]
    assert err.diagonal().max() < 10 and (err.argmin(1) == np.arange(5)).all()

    one = VideoOutput(out.frames[:1], out.prompts[:1], out.seeds[:1], out.fps)
    for ext, codec in ((".webm", ("vp9", "vp8")), (".gif", ("gif",))):
        (path,) = one.save(tmp_path / f"one{ext}")
        assert path.name == f"one{ext}"
        info = probe(path, count_frames=True)
        assert (info.num_frames, info.height, info.width) == (5, 16, 16) and info.codec in codec
        assert read_video(path).shape == (5, 16, 16, 3)

    import imageio.v3 as iio

    (grid_path,) = out.save(tmp_path / "grid.png")
    grid = iio.imread(grid_path)
    assert grid.shape == (2 + 2 * 18, 2 + 5 * 18, 3)  # one row per clip, frames left to right, 2-px gutters
    for i in range(2):
        for j in range(5):
            np.testing.assert_array_equal(
                grid[2 + i * 18 : 18 + i * 18, 2 + j * 18 : 18 + j * 18], out.frames[i, j]
            )

    with pytest.raises(ValueError, match=r"cannot write \.avi; supported: \.mp4.*\.png"):
        out.save(tmp_path / "clip.avi")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "nope"}, r"unknown sampler 'nope'; choose from \[.*'dpmpp_2m'.*\]"),
        ({"num_frames": 6}, r"6 frames of 16x16 do not suit the autoencoder: video needs 1 \+ k \* 4 frames"),
        (
            {"height": 12},
            r"height=12 gives 3 latent height, but the DiT needs .* multiple of 2; use a height .* 8",
        ),
        ({"width": 18}, r"multiples of 4, got 16x18"),
        ({"steps": 0}, r"steps must be a positive integer, got 0"),
        ({"guidance_scale": -1.0}, r"guidance_scale must be a finite number >= 0"),
        ({"num_videos": 0}, r"num_videos must be a positive integer"),
        ({"seed": -3}, r"seed must be a non-negative integer"),
        ({"negative_prompt": ["x", "y", "z"]}, r"1 prompts but 3 negative prompts"),
    ],
)
def test_bad_arguments_raise_clear_errors(dit_pipe, kwargs, message):
    assert set(SAMPLERS) >= {"dpmpp_2m", "euler"}
    with pytest.raises(ValueError, match=message):
        dit_pipe("a red ball", **kwargs)


def test_bad_prompts_and_backbone_sizes(dit_pipe, unet_pipe):
    for prompt in ("", [], ["ok", 3]):
        with pytest.raises(ValueError, match="prompt must"):
            dit_pipe(prompt)
    with pytest.raises(
        ValueError, match=r"UNet3D needs a positive multiple of 2; use a width that is a multiple of 2"
    ):
        unet_pipe("a red ball", width=5)


def test_construction_and_saving_errors(dit_pipe, tmp_path):
    vae, dit = dit_pipe.autoencoder, dit_pipe.backbone
    wide = DiT(in_channels=4, width=32, depth=1, heads=2, context_dim=32)
    with pytest.raises(ValueError, match=r"gives 16-d tokens but the backbone takes context_dim=32"):
        VideoPipeline(wide, vae, dit_pipe.text_encoder, FlowSchedule(), defaults=DIT_DEFAULTS)
    with pytest.raises(ValueError, match=r"unknown defaults \['frames'\]"):
        VideoPipeline(dit, vae, dit_pipe.text_encoder, FlowSchedule(), defaults={"frames": 5})
    with pytest.raises(
        ValueError, match="do not suit the autoencoder"
    ):  # the fallback 17x64x64 is fine; 8 frames not
        VideoPipeline(dit, vae, dit_pipe.text_encoder, FlowSchedule(), defaults={"num_frames": 8})
    in_memory = VideoPipeline(dit, vae, HashTextEncoder(dim=16), FlowSchedule(), defaults=DIT_DEFAULTS)
    assert in_memory("a red ball", seed=0).frames.shape == (1, 5, 16, 16, 3)  # generation needs no folder
    with pytest.raises(ValueError, match=r"HashTextEncoder.*has no folder"):
        in_memory.save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="dtype must be one of"):
        dit_pipe.save_pretrained(tmp_path / "p", dtype="int8")
    assert not (tmp_path / "p").exists() and list(tmp_path.iterdir()) == []


def test_from_pretrained_names_the_shipped_models(tmp_path):
    assert DEFAULT_MODEL in SHIPPED_MODELS
    with pytest.raises(FileNotFoundError, match=r"model 'no-such-model' not found.*shipped"):
        VideoPipeline.from_pretrained("no-such-model")
    with pytest.raises(FileNotFoundError, match=r"not a pipeline folder \(no pipeline.json\)"):
        VideoPipeline.from_pretrained(tmp_path)
    for name in set(SHIPPED_MODELS) - set(installed_models()):
        with pytest.raises(FileNotFoundError, match=f"model '{name}' is not installed"):
            VideoPipeline.from_pretrained(name)
    (tmp_path / "pipeline.json").write_text(json.dumps({"type": "AudioPipeline", "format": 1}))
    with pytest.raises(ValueError, match="not a VideoPipeline"):
        VideoPipeline.from_pretrained(tmp_path)


def test_exported_lazily_from_mediadiff():
    import mediadiff

    assert mediadiff.VideoPipeline is VideoPipeline
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from mediadiff import VideoPipeline; "
         "print(VideoPipeline.__name__, 'av' in sys.modules, 'transformers' in sys.modules)"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert out.split() == ["VideoPipeline", "False", "False"]


def test_guidance_rescale_and_interval_reach_the_sampler(dit_pipe):
    """The core's guidance options through the pipeline: an interval that excludes every sampled time
    is the unguided model, rescale moves the result, and bad values are refused."""
    prompt, kw = "a red ball moving left", {"seed": 2, "guidance_scale": 3.0}
    guided = dit_pipe(prompt, **kw).frames.astype(int)
    unguided = dit_pipe(prompt, seed=2, guidance_scale=1.0).frames.astype(int)
    never = dit_pipe(prompt, guidance_interval=(0.0, 0.0), **kw).frames.astype(int)  # t = 0 is never sampled
    assert np.abs(never - unguided).max() <= 1  # the same up to one grey level (batched vs single call)
    assert np.abs(guided - unguided).mean() > 2  # guidance does move the clip
    always = dit_pipe(prompt, guidance_interval=(0.0, 1.0), **kw).frames.astype(int)
    np.testing.assert_array_equal(always, guided)
    rescaled = dit_pipe(prompt, guidance_rescale=1.0, **kw).frames.astype(int)
    assert np.abs(rescaled - guided).mean() > 0.5
    settings = dit_pipe.resolve(guidance_rescale=0.7, guidance_interval=[0.2, 0.9])
    assert settings["guidance_rescale"] == 0.7 and settings["guidance_interval"] == (0.2, 0.9)
    for bad, message in (
        ({"guidance_rescale": 1.5}, r"guidance_rescale must be a finite number in \[0, 1\]"),
        ({"guidance_interval": (0.8, 0.2)}, "guidance_interval must have lo <= hi"),
        ({"guidance_interval": 0.5}, r"guidance_interval must be a pair"),
    ):
        with pytest.raises(ValueError, match=message):
            dit_pipe(prompt, **bad)


def test_saved_guidance_defaults_round_trip(dit_pipe, tmp_path):
    pipe = VideoPipeline(
        dit_pipe.backbone,
        dit_pipe.autoencoder,
        dit_pipe.text_encoder,
        FlowSchedule(),
        defaults={**DIT_DEFAULTS, "guidance_rescale": 0.5, "guidance_interval": (0.1, 0.8)},
    )
    loaded = VideoPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "p"))
    assert loaded.defaults["guidance_rescale"] == 0.5 and loaded.defaults["guidance_interval"] == (0.1, 0.8)
    assert loaded.resolve()["guidance_interval"] == (0.1, 0.8)
