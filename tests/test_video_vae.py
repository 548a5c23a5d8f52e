import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from mediadiff.video.autoencoder import (
    CausalVideoVAE,
    DiagonalGaussian,
    IdentityAutoencoder,
    VideoAutoencoderConfig,
    load_autoencoder,
)
from mediadiff.video.metrics import psnr
from mediadiff.video.shapes import Shapes

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "mediadiff" / "weights" / "video_vae_shapes"
# a recipe run small enough for a test: 5 frames of 16x16, a 4-8 channel autoencoder
TINY_RECIPE = [
    "--size",
    "16",
    "--frames",
    "5",
    "--batch-size",
    "2",
    "--channels",
    "4,8",
    "--latent-channels",
    "4",
]


# time compressed by strided causal convolutions instead of the temporal patchify (the other code path)
STRIDED = {"temporal_patch": 1, "channels": (8, 16, 16)}


def tiny(**overrides) -> CausalVideoVAE:
    """A tiny VAE with random (non-zero) weights everywhere, so every path carries signal."""
    config = VideoAutoencoderConfig(**{"channels": (8, 16), "latent_channels": 4, **overrides})
    model = CausalVideoVAE(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(
                torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 4 else 0.0)
            )  # norm weights ~1
    return model.eval()


@pytest.mark.parametrize(
    ("overrides", "shape"),
    [
        ({}, (1, 3, 1, 16, 16)),
        ({}, (2, 3, 5, 16, 32)),
        ({}, (1, 3, 13, 32, 16)),
        ({"spatial_ratio": 8, "channels": (8, 16, 16)}, (1, 3, 9, 32, 32)),
        ({"temporal_ratio": 2, "temporal_patch": 2}, (1, 3, 7, 16, 16)),
        (STRIDED, (2, 3, 9, 16, 16)),
        ({"blocks_per_level": 1}, (1, 3, 5, 16, 16)),
        ({"patch_size": 1, "channels": (8, 16, 16)}, (1, 3, 5, 16, 16)),
    ],
)
def test_latent_shape_matches_encode(overrides, shape):
    model = tiny(**overrides)
    with torch.no_grad():
        z = model.encode(torch.randn(shape))
        x = model.decode(z)
    cfg = model.config
    b, _, f, h, w = shape
    expected = (
        b,
        cfg.latent_channels,
        1 + (f - 1) // cfg.temporal_ratio,
        h // cfg.spatial_ratio,
        w // cfg.spatial_ratio,
    )
    assert model.latent_shape(shape) == expected == tuple(z.shape)
    assert tuple(x.shape) == shape == model.output_shape(z.shape)


@pytest.mark.parametrize("overrides", [{}, STRIDED], ids=["temporal-patch", "strided"])
def test_encoder_is_causal(overrides):
    model = tiny(**overrides)
    rt = model.config.temporal_ratio
    x = torch.randn(1, 3, 13, 16, 16)
    with torch.no_grad():
        z = model.encode(x)  # [1 4 4 4 4]
        for i in (0, 1, 3, 4, 5, 8, 12):  # each side of every group boundary
            y = x.clone()
            y[:, :, i] += 1.0
            zi = model.encode(y)
            group = math.ceil(i / rt)  # frame 0 alone, then frames 1..rt -> latent 1, ...
            assert torch.equal(zi[:, :, :group], z[:, :, :group]), f"frame {i} leaked into earlier latents"
            assert not torch.equal(zi[:, :, group], z[:, :, group]), (
                f"frame {i} does not reach latent {group}"
            )


@pytest.mark.parametrize("overrides", [{}, STRIDED], ids=["temporal-patch", "strided"])
def test_decoder_is_causal(overrides):
    model = tiny(**overrides)
    rt = model.config.temporal_ratio
    z = torch.randn(1, 4, 4, 4, 4)
    with torch.no_grad():
        x = model.decode(z)
        for j in range(4):
            y = z.clone()
            y[:, :, j] += 1.0
            xj = model.decode(y)
            first = 0 if j == 0 else 1 + (j - 1) * rt  # first frame that latent j decodes to
            assert torch.equal(xj[:, :, :first], x[:, :, :first])
            assert not torch.equal(xj[:, :, first], x[:, :, first])


@pytest.mark.parametrize("overrides", [{}, STRIDED], ids=["temporal-patch", "strided"])
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5])
def test_chunked_decode_equals_unchunked(chunk_size, overrides):
    model = tiny(**overrides)
    z = torch.randn(2, 4, 5, 4, 4)
    with torch.no_grad():
        whole = model.decode(z)
        chunked = model.decode(z, chunk_size=chunk_size)
    assert chunked.shape == whole.shape == (2, 3, 17, 16, 16)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = tiny()
    model.set_latent_stats(torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.tensor([2.0, 0.5, 1.0, 3.0]))
    model.save_pretrained(tmp_path)
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["type"] == "CausalVideoVAE" and spec["config"]["latent_scale"] == [2.0, 0.5, 1.0, 3.0]
    loaded = load_autoencoder(tmp_path)
    assert isinstance(loaded, CausalVideoVAE)
    x = torch.randn(1, 3, 5, 16, 16)
    with torch.no_grad():
        z, z2 = model.encode(x), loaded.encode(x)
        assert torch.equal(z, z2)
        assert torch.equal(model.decode(z), loaded.decode(z2))
    # the stats are applied: normalised latents are (raw - shift) * scale
    raw = model.encode_posterior(x).mean
    torch.testing.assert_close(z, (raw - model.latent_shift) * model.latent_scale)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o044  # readable by others, not mkstemp's 0600


def test_kl():
    moments = torch.randn(2, 8, 3, 4, 4)
    kl = DiagonalGaussian(moments).kl()
    assert kl.shape == (2,) and torch.isfinite(kl).all() and (kl >= 0).all()
    assert DiagonalGaussian(torch.zeros(2, 8, 3, 4, 4)).kl().abs().max() == 0  # q == N(0, I)
    # extreme log-variances are clamped, so the KL stays finite
    assert torch.isfinite(DiagonalGaussian(torch.full((1, 2, 1, 1, 1), 1e4)).kl()).all()
    # closed form for one dimension: 0.5 * (mu^2 + var - 1 - log var)
    one = DiagonalGaussian(torch.tensor([1.5, math.log(0.25)]).view(1, 2, 1, 1, 1)).kl()
    assert one.item() == pytest.approx(0.5 * (1.5**2 + 0.25 - 1 - math.log(0.25)))


def test_bad_inputs_name_what_was_expected():
    model = tiny()
    with pytest.raises(ValueError, match=r"1 \+ k \* 4 frames .* got 16 frames"):
        model.encode(torch.randn(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match="multiples of 4"):
        model.encode(torch.randn(1, 3, 5, 18, 16))
    with pytest.raises(ValueError, match=r"\[b c f h w\]"):
        model.encode(torch.randn(3, 5, 16, 16))
    with pytest.raises(ValueError, match="4 channels"):
        model.decode(torch.randn(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="channels needs 2 entries"):
        VideoAutoencoderConfig(channels=(8, 16, 16))
    with pytest.raises(ValueError, match="multiple of temporal_patch"):
        VideoAutoencoderConfig(temporal_ratio=4, temporal_patch=3)
    with pytest.raises(ValueError, match="power of 2"):
        VideoAutoencoderConfig(temporal_ratio=12, temporal_patch=4)


def test_identity_autoencoder(tmp_path):
    ae = IdentityAutoencoder()
    x = torch.randn(1, 3, 4, 8, 8)
    assert ae.latent_shape(x.shape) == tuple(x.shape)
    assert torch.equal(ae.decode(ae.encode(x)), x)
    ae.save_pretrained(tmp_path)
    assert isinstance(load_autoencoder(tmp_path), IdentityAutoencoder)


def test_psnr():
    x = torch.zeros(2, 3, 1, 4, 4)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 10 log10(4 / 0.01)
    y[1] += 0.2
    assert psnr(x, y).tolist() == pytest.approx([10 * math.log10(400), 10 * math.log10(100)])
    assert psnr(x, y, data_range=1.0)[0].item() == pytest.approx(20.0)


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    model = CausalVideoVAE(VideoAutoencoderConfig(channels=(8, 16), latent_channels=4))
    data = Shapes(num_frames=5, size=16)
    x = torch.stack([data[i]["video"] for i in range(4)])  # [4 3 5 16 16]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        rec, posterior = model(x)
        loss = (rec - x).pow(2).mean() + 1e-6 * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def load_recipe():
    spec = importlib.util.spec_from_file_location("train_vae", ROOT / "recipes" / "video" / "train_vae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)  # the recipe builds its own Accelerator
    yield
    AcceleratorState._reset_state(True)


def test_train_script_resumes_exactly(tmp_path, fresh_accelerate_state):
    recipe = load_recipe()
    common = [
        *TINY_RECIPE,
        "--precision",
        "no",
        "--warmup-steps",
        "1",
        "--min-lr-ratio",
        "1",
        "--eval-clips",
        "2",
        "--stats-clips",
        "2",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "2",
    ]

    def run(out, steps, *extra):
        return recipe.main(["--output-dir", str(out), "--max-steps", str(steps), *common, *extra])

    summary = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    run(tmp_path / "b", 4, "--resume")
    a = load_autoencoder(tmp_path / "a" / "final")
    b = load_autoencoder(tmp_path / "b" / "final")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0, msg=name)
    assert a.config.latent_scale == pytest.approx(b.config.latent_scale, rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == [
        "step_0000002",
        "step_0000004",
    ]
    assert summary["steps"] == 4 and math.isfinite(summary["heldout_psnr_db"])
    assert json.loads((tmp_path / "a" / "final" / "training.json").read_text()) == summary
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_psnr" in r] == [2, 4]


def test_train_script_skips_non_finite_steps(tmp_path, fresh_accelerate_state, monkeypatch):
    recipe = load_recipe()

    class Corrupt(Shapes):  # one corrupt clip (index 2, i.e. step 1 at batch 2) among good ones
        def __getitem__(self, index):
            item = super().__getitem__(index)
            if self.seed == 0 and index == 2:
                item["video"] = torch.full_like(item["video"], float("nan"))
            return item

    monkeypatch.setattr(recipe, "Shapes", Corrupt)
    out = tmp_path / "run"
    summary = recipe.main(
        [
            "--output-dir",
            str(out),
            "--max-steps",
            "3",
            *TINY_RECIPE,
            "--precision",
            "no",
            "--eval-clips",
            "2",
            "--stats-clips",
            "2",
            "--eval-every",
            "3",
        ]
    )
    assert summary["skipped_steps"] == 1 and math.isfinite(summary["heldout_psnr_db"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("event") == "skipped"] == [1]
    assert all(torch.isfinite(t).all() for t in load_autoencoder(out / "final").state_dict().values())


def test_train_script_on_a_video_folder(tmp_path, fresh_accelerate_state):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    import subprocess

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"testsrc=size=40x32:rate=10:duration=1,hue=h={60 * i}",
                "-pix_fmt",
                "yuv420p",
                str(videos / f"clip{i}.mp4"),
            ],
            check=True,
        )
    summary = load_recipe().main(
        [
            "--data",
            str(videos),
            "--output-dir",
            str(tmp_path / "run"),
            "--max-steps",
            "2",
            *TINY_RECIPE,
            "--eval-clips",
            "1",
            "--stats-clips",
            "2",
        ]
    )
    assert summary["heldout"] == f"last 1 clips of {videos}" and summary["steps"] == 2
    assert isinstance(load_autoencoder(tmp_path / "run" / "final"), CausalVideoVAE)


def test_train_script_rejects_the_heldout_seed(tmp_path, fresh_accelerate_state):
    with pytest.raises(SystemExit):
        load_recipe().main(["--output-dir", str(tmp_path), "--seed", "12345"])


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="shipped weights not trained yet")
def test_shipped_weights_reconstruct_heldout_shapes():
    """Regression guard for the shipped VAE; benchmarks/video_vae.py measures the 64-clip mean (>= 30 dB)."""
    model = load_autoencoder(SHIPPED)
    data = Shapes(num_frames=17, size=64, seed=12345)  # the held-out seed of recipes/video/train_vae.py
    x = torch.stack([data[i]["video"] for i in range(8)])  # [8 3 17 64 64]
    with torch.no_grad():
        z = model.encode(x)
        rec = model.decode(z).clamp(-1, 1)
        chunked = model.decode(z, chunk_size=2).clamp(-1, 1)
    assert z.shape == model.latent_shape(x.shape) == (8, model.config.latent_channels, 5, 16, 16)
    assert z.std().item() == pytest.approx(1.0, abs=0.2)  # latent scale/shift normalise to ~unit variance
    assert abs(z.mean().item()) < 0.2
    assert psnr(rec, x).mean().item() > 30.0  # 30.4 dB on these 8 clips when shipped
    torch.testing.assert_close(chunked, rec, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = tiny()
    x = torch.randn(1, 3, 5, 16, 16)
    with torch.no_grad():
        cpu = model.decode(model.encode(x))
        gpu = model.cuda().decode(model.encode(x.cuda())).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)
