"""Audio backbones: UNet1D (waveforms, 1-D latents), the mel UNet2D and DiT1D, on tiny configs."""

import json

import pytest
import torch

from mediadiff.audio import DiT1D, DiT1DConfig, UNet1D, UNet1DConfig, UNet2D, UNet2DConfig
from mediadiff.nn import AxisAttention, Downsample, Upsample

CTX = 16  # tiny context width

MODELS = {"unet1d": UNet1D, "unet2d": UNet2D, "dit1d": DiT1D}
KINDS = list(MODELS)
SHAPES = {"unet1d": (2, 1, 64), "unet2d": (2, 1, 8, 12), "dit1d": (2, 16, 12)}  # [b c t], [b c m t], [b c t]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread (tests/conftest.py)."""


def make(kind, **overrides):
    return MODELS[kind].from_preset("tiny", context_dim=CTX, **overrides)


def inputs(kind, n_ctx=4, shape=None):
    shape = shape or SHAPES[kind]
    return torch.randn(shape), torch.rand(shape[0]), torch.randn(shape[0], n_ctx, CTX)


def perturb_(model, scale=0.05):
    """Move every parameter off its init, so zero-initialised layers pass signal and gradients."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@pytest.mark.parametrize(
    "kind,overrides,shape",
    [
        ("unet1d", {}, (1, 1, 32)),  # mono waveform, the shortest length: patch 16 * stride 2
        ("unet1d", {}, (2, 1, 96)),
        ("unet1d", {"in_channels": 2}, (2, 2, 64)),  # stereo
        ("unet1d", {"in_channels": 16, "patch": 1}, (2, 16, 6)),  # 1-D latents
        ("unet1d", {"in_channels": 64, "patch": 1, "down_factors": (4,)}, (1, 64, 12)),
        ("unet2d", {}, (1, 1, 8, 12)),  # [b 1 m t]
        ("unet2d", {}, (2, 1, 10, 6)),
        ("unet2d", {"down_factors": ((1, 2),)}, (1, 1, 5, 4)),  # mel axis kept
        ("dit1d", {}, (1, 16, 5)),
        ("dit1d", {"in_channels": 64, "patch": (2,)}, (2, 64, 18)),
        ("dit1d", {"in_channels": 8}, (1, 8, 1)),
    ],
)
def test_output_shape_equals_input_shape(kind, overrides, shape):
    model = make(kind, **overrides)
    x, t, ctx = inputs(kind, 3, shape)
    out = model(x, t, ctx)
    assert out.shape == shape
    assert (out == 0).all()  # zero-initialised output layer
    assert perturb_(model)(x, t).shape == shape  # unconditional call


@pytest.mark.parametrize("kind", KINDS)
def test_out_channels_and_scalar_t(kind):
    overrides = {"in_channels": 2, "out_channels": 4} if kind != "dit1d" else {"out_channels": 4}
    model = make(kind, **overrides)
    x = torch.randn(1, model.config.in_channels, *SHAPES[kind][2:])
    assert model(x, 0.5).shape == (1, 4, *x.shape[2:])
    assert model(x, torch.tensor(0.3)).shape == (1, 4, *x.shape[2:])


def test_waveform_patch_fold_and_unfold():
    model = make("unet1d", in_channels=2, patch=4)
    x = torch.arange(2 * 16.0).reshape(1, 2, 16)  # [b c t]
    folded = model.prepare_input(x)  # [1 8 4]
    assert folded.shape == (1, 8, 4) and model.conv_in.in_channels == 8
    assert torch.equal(folded[0, :4, 1], x[0, 0, 4:8])  # channel c's samples of one patch side by side
    assert torch.equal(model.finish_output(folded), x)
    assert model.conv_out.out_channels == 2 * 4


def test_size_multiples_and_presets():
    for cls in MODELS.values():
        assert set(cls.presets) == {"tiny", "S", "B"}
    assert make("unet1d").size_multiples() == (32,)  # patch 16 * stride 2
    three = {"channel_mult": (1, 2, 2), "attention_levels": (False, False, True)}
    assert make("unet1d", patch=1, down_factors=(4, 2), **three).size_multiples() == (8,)
    assert make("unet2d", down_factors=((1, 2), (2, 2)), **three).size_multiples() == (2, 4)
    assert make("dit1d", patch=(4,)).size_multiples() == (4,)
    with torch.device("meta"):  # shapes only: no memory, no init time
        built = {
            (cls.__name__, name): cls.from_preset(name) for cls in MODELS.values() for name in cls.presets
        }
    multiples = {k: m.size_multiples() for k, m in built.items()}
    assert multiples[("UNet1D", "S")] == (128,) and multiples[("UNet1D", "B")] == (256,)
    assert multiples[("UNet2D", "S")] == (4, 4) and multiples[("UNet2D", "B")] == (8, 8)
    assert multiples[("DiT1D", "S")] == (1,)
    assert 16384 % multiples[("UNet1D", "B")][0] == 0  # 1.02 s at 16 kHz
    assert all(80 % m == 0 and 64 % f == 0 for m, f in (multiples[("UNet2D", n)] for n in ("S", "B")))
    sizes = {k: m.num_parameters() for k, m in built.items()}
    for cls in ("UNet1D", "UNet2D", "DiT1D"):
        assert sizes[(cls, "tiny")] < 1e6 < sizes[(cls, "S")] < sizes[(cls, "B")]
    assert built[("UNet1D", "S")].config.in_channels == 1 == built[("UNet2D", "S")].config.in_channels
    assert built[("DiT1D", "S")].config.in_channels == 16
    with pytest.raises(ValueError, match="unknown preset"):
        UNet1D.from_preset("XL")
    with pytest.raises(TypeError, match="unknown config fields"):
        UNet2D.from_preset("tiny", chanels=8)


def test_attention_only_at_the_low_levels_with_rope():
    model = make("unet1d", channel_mult=(1, 2, 2), attention_levels=(False, False, True))
    attn = [(n, m) for n, m in model.named_modules() if isinstance(m, AxisAttention)]
    assert attn and all(m.block.cross is not None and m.rope is not None for _, m in attn)
    # 1 down block at level 2, the middle, 2 up blocks at level 2: indices of the low level only
    assert sorted(n.split(".")[0] for n, _ in attn) == ["down", "mid", "up", "up"]
    assert all(m.rope.axes_dims == (8,) for _, m in attn)
    assert all(m.rope.axes_dims == (4, 4) for m in make("unet2d").modules() if isinstance(m, AxisAttention))
    assert all(
        m.rope is None for m in make("unet1d", rope_theta=None).modules() if isinstance(m, AxisAttention)
    )


def test_rope_makes_axis_attention_see_positions():
    """Without positions, attention over t commutes with a permutation of t; with RoPE it does not."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 6)  # [b c t]
    perm = torch.randperm(6)
    for theta, equivariant in ((None, True), (100.0, False)):
        layer = perturb_(AxisAttention(1, 8, 4, groups=4, rope_theta=theta)).eval()
        with torch.no_grad():
            y, y_perm = layer(x), layer(x[:, :, perm])
        assert torch.allclose(y[:, :, perm], y_perm, atol=1e-5) == equivariant


def test_large_resampling_factors_read_every_position():
    down, up = Downsample(1, 2, factor=4), Upsample(1, 2, factor=4)
    assert down.conv.kernel_size == (7,) and up.conv.kernel_size == (7,)
    assert Downsample(2, 2, factor=(1, 2)).conv.kernel_size == (1, 3)  # factors 1 and 2 unchanged
    x = torch.randn(1, 2, 18, requires_grad=True)
    y = down(x)
    assert y.shape == (1, 2, 5)  # ceil(18 / 4)
    y.sum().backward()
    assert (x.grad != 0).all()  # a kernel 3 at stride 4 would skip every fourth sample
    assert up(y).shape == (1, 2, 20)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    model = perturb_(make(kind))
    x, t, ctx = inputs(kind)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    model(x, t, ctx, mask).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_is_identical(kind, tmp_path):
    overrides = {"unet1d": {"down_factors": (4,)}, "unet2d": {"down_factors": ((1, 2),)}, "dit1d": {}}
    model = perturb_(make(kind, **overrides[kind])).eval()
    x, t, ctx = inputs(kind)
    model.save_pretrained(tmp_path / "m")
    spec = json.loads((tmp_path / "m" / "config.json").read_text())
    assert spec["type"] == type(model).__name__ and spec["config"]["context_dim"] == CTX
    loaded = type(model).from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config  # nested tuples (down_factors) come back as tuples
    assert torch.equal(loaded(x, t, ctx), model(x, t, ctx))
    other = UNet2D if kind == "unet1d" else UNet1D
    with pytest.raises(ValueError, match="expected a"):
        other.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_checkpointing_gives_same_gradients(kind):
    plain = perturb_(make(kind))
    ckpt = make(kind, gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x, t, ctx = inputs(kind)
    grads = []
    for model in (plain, ckpt):
        model.train()
        model(x, t, ctx).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_context_changes_output_and_padding_does_not(kind):
    model = perturb_(make(kind)).eval()
    x, t, ctx = inputs(kind, n_ctx=3)
    with torch.no_grad():
        out = model(x, t, ctx)
        assert not torch.allclose(out, model(x, t, torch.randn_like(ctx)))
        assert not torch.allclose(out, model(x, t))
        padded = torch.cat([ctx, 50 * torch.randn(2, 5, CTX)], dim=1)  # [2 8 CTX]: garbage padding
        mask = torch.zeros(2, 8, dtype=torch.bool)
        mask[:, :3] = True
        torch.testing.assert_close(model(x, t, padded, mask), out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_autocast_cpu(kind):
    model = perturb_(make(kind))
    x, t, ctx = inputs(kind)
    ref = model(x, t, ctx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, ctx)
        out.float().square().mean().backward()
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean()


def test_mel_unet_on_an_80_bin_spectrogram():
    model = UNet2D(
        channels=8,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_levels=(False, False, True),
        head_dim=8,
        norm_groups=4,
        context_dim=CTX,
        down_factors=((2, 2), (2, 2)),
    )
    x, t, ctx = inputs("unet2d", shape=(1, 1, 128, 64))  # 16384 samples at hop 256
    assert perturb_(model)(x, t, ctx).shape == x.shape


def test_clear_errors_for_bad_inputs_and_configs():
    unet1d, unet2d, dit = make("unet1d"), make("unet2d"), make("dit1d", patch=(2,))
    t = torch.rand(1)
    with pytest.raises(ValueError, match=r"x must be \[b 1 \.\.\.\] with 3 dims, got \[1, 2, 16\]"):
        unet1d(torch.randn(1, 2, 16), t)  # stereo into a mono model
    with pytest.raises(ValueError, match=r"x must be \[b 1 \.\.\.\] with 3 dims"):
        unet1d(torch.randn(1, 16), t)  # no channel axis
    with pytest.raises(
        ValueError, match=r"multiples of the input patch times the downsampling factors \[32\]"
    ):
        unet1d(torch.randn(1, 1, 48), t)
    with pytest.raises(ValueError, match=r"multiples of the downsampling factors \[2, 2\]"):
        unet2d(torch.randn(1, 1, 128, 63), t)
    with pytest.raises(ValueError, match=r"x must be \[b 1 \.\.\.\] with 4 dims"):
        unet2d(torch.randn(1, 1, 64), t)  # a waveform into the mel model
    with pytest.raises(ValueError, match=r"multiples of the patch size \[2\]"):
        dit(torch.randn(1, 16, 7), t)
    with pytest.raises(ValueError, match=r"x must be \[b 16"):
        dit(torch.randn(1, 8, 8), t)
    with pytest.raises(ValueError, match="context must be"):
        unet1d(torch.randn(1, 1, 32), t, torch.randn(1, 2, CTX + 1))
    with pytest.raises(ValueError, match="context_mask must be bool"):
        dit(torch.randn(1, 16, 4), t, torch.randn(1, 2, CTX), torch.ones(1, 2))
    with pytest.raises(ValueError, match="down_factors needs one positive int per level transition"):
        UNet1DConfig(channel_mult=(1, 2, 2), down_factors=(4,))
    with pytest.raises(ValueError, match="down_factors needs one tuple of 2 positive ints"):
        UNet2DConfig(down_factors=((2, 0), (2, 2)))
    with pytest.raises(ValueError, match="patch must be a positive int"):
        UNet1DConfig(patch=0)
    with pytest.raises(ValueError, match="one positive int"):
        DiT1DConfig(patch=(2, 2))
    with pytest.raises(ValueError, match="one flag per level"):
        UNet2DConfig(channel_mult=(1, 2), attention_levels=(True,))
