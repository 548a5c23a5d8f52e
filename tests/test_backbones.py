import json

import pytest
import torch

from mediadiff.video.dit import DiT, DiTConfig
from mediadiff.video.unet3d import UNet3D, UNet3DConfig

CTX = 16  # tiny context width for the tests


def make(kind, **overrides):
    cls = {"unet": UNet3D, "dit": DiT}[kind]
    return cls.from_preset("tiny", context_dim=CTX, **overrides)


def inputs(kind, b=2, f=5, h=8, w=8, n_ctx=4):
    c = 3 if kind == "unet" else 8
    return torch.randn(b, c, f, h, w), torch.rand(b), torch.randn(b, n_ctx, CTX)


def perturb_(model, scale=0.05):
    """Move every parameter off its init, so zero-initialised layers pass signal and gradients."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


KINDS = ["unet", "dit"]


@pytest.mark.parametrize(
    "kind,shape",
    [
        ("unet", (1, 3, 5, 8, 8)),
        ("unet", (2, 3, 17, 6, 10)),
        ("unet", (1, 3, 1, 4, 4)),
        ("dit", (1, 8, 5, 8, 8)),
        ("dit", (2, 8, 17, 6, 10)),
        ("dit", (1, 8, 1, 2, 4)),
    ],
)
def test_output_shape_equals_input_shape(kind, shape):
    model = make(kind)
    x, t, ctx = torch.randn(shape), torch.rand(shape[0]), torch.randn(shape[0], 3, CTX)
    out = model(x, t, ctx)
    assert out.shape == shape
    assert (out == 0).all()  # zero-initialised output layer
    assert perturb_(model)(x, t).shape == shape  # unconditional call


def test_out_channels_patch_and_scalar_t():
    unet = UNet3D.from_preset("tiny", context_dim=CTX, in_channels=4, out_channels=6)
    assert unet(torch.randn(1, 4, 3, 8, 8), 0.5).shape == (1, 6, 3, 8, 8)
    dit = DiT.from_preset("tiny", context_dim=CTX, patch=(2, 2, 2), out_channels=2)
    assert dit(torch.randn(1, 8, 4, 4, 6), torch.tensor(0.3)).shape == (1, 2, 4, 4, 6)


def test_clear_errors_for_bad_sizes_and_inputs():
    unet, dit = make("unet"), make("dit", patch=(2, 2, 2))
    with pytest.raises(ValueError, match=r"multiples of the downsampling factors \[1, 2, 2\]"):
        unet(torch.randn(1, 3, 5, 7, 8), torch.rand(1))
    with pytest.raises(ValueError, match="multiples of the patch size"):
        dit(torch.randn(1, 8, 5, 8, 8), torch.rand(1))
    with pytest.raises(ValueError, match=r"x must be \[b 3"):
        unet(torch.randn(1, 4, 5, 8, 8), torch.rand(1))
    with pytest.raises(ValueError, match="context must be"):
        unet(torch.randn(1, 3, 5, 8, 8), torch.rand(1), torch.randn(1, 2, CTX + 1))
    with pytest.raises(ValueError, match="context_mask must be bool"):
        dit(torch.randn(1, 8, 4, 4, 4), torch.rand(1), torch.randn(1, 2, CTX), torch.ones(1, 2))
    with pytest.raises(ValueError, match="t must be"):
        dit(torch.randn(2, 8, 4, 4, 4), torch.rand(3))
    with pytest.raises(ValueError, match="one flag per level"):
        UNet3DConfig(channel_mult=(1, 2), attention_levels=(True,), temporal_attention_levels=(True, True))
    with pytest.raises(ValueError, match="divisible by heads"):
        DiTConfig(width=30, heads=4)


def test_presets_and_overrides():
    assert set(UNet3D.presets) == set(DiT.presets) == {"tiny", "S", "B"}
    assert make("dit").config.width == 64 and make("dit").config.context_dim == CTX
    with pytest.raises(ValueError, match="unknown preset"):
        DiT.from_preset("XL")
    with pytest.raises(TypeError, match="unknown config fields"):
        UNet3D.from_preset("tiny", chanels=8)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    model = perturb_(make(kind))
    x, t, ctx = inputs(kind)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    model(x, t, ctx, mask).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("kind", KINDS)
def test_one_step_from_init_unzeroes_the_output(kind):
    model = make(kind)
    x, t, ctx = inputs(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x, t, ctx).sub(x).square().mean().backward()  # a denoising-like target
    opt.step()
    assert model(x, t, ctx).abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_is_identical(kind, tmp_path):
    model = perturb_(make(kind)).eval()
    x, t, ctx = inputs(kind)
    model.save_pretrained(tmp_path / "m")
    spec = json.loads((tmp_path / "m" / "config.json").read_text())
    assert spec["type"] == type(model).__name__ and spec["config"]["context_dim"] == CTX
    loaded = type(model).from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    assert torch.equal(loaded(x, t, ctx), model(x, t, ctx))
    assert not list(tmp_path.glob("m/*.tmp"))
    other = DiT if kind == "unet" else UNet3D
    with pytest.raises(ValueError, match="expected a"):
        other.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not found"):
        type(model).from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize("kind", KINDS)
def test_context_changes_output_and_padding_does_not(kind):
    model = perturb_(make(kind)).eval()
    x, t, ctx = inputs(kind, n_ctx=3)
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
    assert out.shape == x.shape[:1] + ref.shape[1:] and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean()


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_bf16_matches_cpu(kind):
    model = perturb_(make(kind)).eval()
    x, t, ctx = inputs(kind)
    ref = model(x, t, ctx)
    model.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x.cuda(), t.cuda(), ctx.cuda(), torch.ones(2, 4, dtype=torch.bool, device="cuda"))
    assert (out.float().cpu() - ref).abs().mean() < 0.05 * ref.abs().mean()


@pytest.mark.parametrize("kind", KINDS)
def test_pooled_context_norm_is_fitted_saved_and_loaded(kind, tmp_path):
    from mediadiff.nn import masked_mean

    model = perturb_(make(kind, pooled_context_norm=True)).eval()
    x, t, ctx = inputs(kind)
    before = model(x, t, ctx)
    sample = 3.0 + 0.1 * torch.randn(64, 6, CTX)  # a common offset and small spread, like sentence vectors
    model.pooled_norm.fit(masked_mean(sample))
    standardised = model.pooled_norm(masked_mean(sample))  # [64 d]
    torch.testing.assert_close(standardised.mean(0), torch.zeros(CTX), atol=1e-4, rtol=0)
    torch.testing.assert_close(standardised.std(0), torch.ones(CTX), atol=1e-4, rtol=0)
    after = model(x, t, ctx)
    assert not torch.allclose(before, after)  # the fitted statistics change the conditioning
    model.save_pretrained(tmp_path / "m")
    loaded = type(model).from_pretrained(tmp_path / "m").eval()
    assert torch.equal(loaded.pooled_norm.mean, model.pooled_norm.mean)
    assert torch.equal(loaded(x, t, ctx), after)
    with pytest.raises(ValueError, match="need"):
        model.pooled_norm.fit(torch.randn(1, CTX))


@pytest.mark.parametrize("kind", KINDS)
def test_attention_context_pool_conditions_and_round_trips(kind, tmp_path):
    model = perturb_(make(kind, context_pool="attention", context_pool_heads=2)).eval()
    assert model.context_pool is not None
    x, t, ctx = inputs(kind)
    out = model(x, t, ctx)
    ctx2 = ctx.clone()
    ctx2[:, 1] += 1.0  # change one token
    assert not torch.allclose(model(x, t, ctx2), out)
    model.save_pretrained(tmp_path / "m")
    loaded = type(model).from_pretrained(tmp_path / "m").eval()
    assert loaded.config.context_pool == "attention"
    assert torch.equal(loaded(x, t, ctx), out)
    with pytest.raises(ValueError, match="context_pool"):
        make(kind, context_pool="max")


@pytest.mark.parametrize("kind", KINDS)
def test_context_adapter_feeds_the_text_pathway_and_round_trips(kind, tmp_path):
    model = perturb_(make(kind, context_adapter_hidden=8)).eval()
    x, t, ctx = inputs(kind)
    out = model(x, t, ctx)
    with torch.no_grad():
        model.context_adapter.mlp[-1].bias.add_(0.5)  # the adapter's output is what the backbone reads
    assert not torch.allclose(model(x, t, ctx), out)
    model.save_pretrained(tmp_path / "m")
    loaded = type(model).from_pretrained(tmp_path / "m").eval()
    assert loaded.config.context_adapter_hidden == 8
    assert torch.equal(loaded(x, t, ctx), model(x, t, ctx))
    assert make(kind).context_adapter is None


def test_space_time_coords_and_coord_channels_unet(tmp_path):
    from mediadiff.video.unet3d import space_time_coords

    x = torch.randn(2, 3, 5, 8, 6)
    c = space_time_coords(x)  # [2 3 5 8 6]
    assert c.shape == (2, 3, 5, 8, 6)
    torch.testing.assert_close(c[0, 0, :, 0, 0], torch.linspace(-1, 1, 5))  # frame axis
    torch.testing.assert_close(c[1, 1, 0, :, 0], torch.linspace(-1, 1, 8))  # rows
    torch.testing.assert_close(c[0, 2, 3, 2, :], torch.linspace(-1, 1, 6))  # columns
    assert (c[:, 0].std(dim=(2, 3)) == 0).all()  # the frame channel is constant within a frame
    model = perturb_(make("unet", coord_channels=True)).eval()
    assert model.conv_in.spatial.in_channels == 6
    x, t, ctx = inputs("unet")
    out = model(x, t, ctx)
    assert out.shape == x.shape
    # the coordinates enter as conv_in's last three input channels and change the output
    blind = UNet3D(model.config)
    blind.load_state_dict(model.state_dict())
    with torch.no_grad():
        blind.conv_in.spatial.weight[:, 3:] = 0
    assert not torch.allclose(blind.eval()(x, t, ctx), out, atol=1e-4)
    model.save_pretrained(tmp_path / "m")
    loaded = UNet3D.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.coord_channels
    assert torch.equal(loaded(x, t, ctx), out)


def test_size_multiples_and_the_attributes_a_pipeline_reads():
    unet = UNet3D.from_preset(
        "tiny",
        context_dim=CTX,
        channel_mult=(1, 2, 2),
        attention_levels=(False,) * 3,
        temporal_attention_levels=(False,) * 3,
    )
    assert unet.size_multiples() == (1, 4, 4) and unet.downsample_factor == 4
    dit = make("dit", patch=(2, 1, 2))
    assert dit.size_multiples() == (2, 1, 2) == dit.config.patch
    assert DiTConfig(rope_axes_dims=(8, 4, 4)).rope_axes_dims == (8, 4, 4)
    with pytest.raises(ValueError, match="three positive ints"):
        DiTConfig(patch=(2, 2))


@pytest.mark.parametrize("path", ["t2v_shapes_dit", "t2v_shapes_unet3d"])
def test_shipped_backbones_load_strictly(path):
    from pathlib import Path

    import mediadiff

    folder = Path(mediadiff.__file__).parent / "weights" / path / "backbone"
    spec = json.loads((folder / "config.json").read_text())
    model = {"DiT": DiT, "UNet3D": UNet3D}[spec["type"]].from_pretrained(folder)  # strict=True inside
    assert model.size_multiples()[0] == (model.config.patch[0] if spec["type"] == "DiT" else 1)
