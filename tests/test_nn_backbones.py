"""The modality-free backbones of ``mediadiff.nn``: the U-Net skeleton and the patch transformer over
1 and 2 axes, built the way audio will build them (a config, ``dims`` and the hooks it needs)."""

import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from mediadiff.nn import (
    AxisAttention,
    DiffusionTransformer,
    DiffusionTransformerConfig,
    UNet,
    UNetConfig,
    patchify,
    unpatchify,
)

CTX = 16  # tiny context width


class UNet1D(UNet):
    """Waveforms or 1-D latents ``[b c t]``: 2x per level, attention over t at the low levels."""

    dims = 1


class UNet2D(UNet):
    """Spectrograms ``[b 1 m t]``: time halves at every level, mel bins only from the second one."""

    dims = 2

    def level_factor(self, level: int) -> tuple[int, ...]:
        return (1, 2) if level == 0 else (2, 2)


@dataclass(frozen=True)
class DiT1DConfig(DiffusionTransformerConfig):
    in_channels: int = 4
    patch: tuple[int] = (2,)


class DiT1D(DiffusionTransformer):
    config_class = DiT1DConfig


TINY_UNET = dict(
    in_channels=1,
    channels=8,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    attention_levels=(False, True, True),
    head_dim=8,
    norm_groups=4,
    context_dim=CTX,
)


def perturb_(model, scale=0.05):
    """Move every parameter off its init, so zero-initialised layers pass signal and gradients."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@pytest.mark.parametrize(
    "cls,shape,multiples",
    [(UNet1D, (2, 1, 24), (4,)), (UNet2D, (2, 1, 6, 12), (2, 4))],
)
def test_unet_skeleton_1d_and_2d_forward_backward_with_text(cls, shape, multiples):
    torch.manual_seed(0)
    model = cls(UNetConfig(**TINY_UNET))
    assert model.size_multiples() == multiples
    attn = [m for m in model.modules() if isinstance(m, AxisAttention)]
    assert attn and all(a.block.cross is not None for a in attn)  # self + cross at the low levels
    x, t = torch.randn(shape), torch.rand(shape[0])
    ctx, mask = torch.randn(shape[0], 3, CTX), torch.tensor([[True, True, False], [True, True, True]])
    assert (model(x, t, ctx, mask) == 0).all()  # zero-initialised output layer
    perturb_(model)
    out = model(x, t, ctx, mask)
    assert out.shape == x.shape
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    model.eval()
    with torch.no_grad():
        out = model(x, t, ctx, mask)
        assert not torch.allclose(out, model(x, t, torch.randn_like(ctx), mask))
        assert not torch.allclose(out, model(x, t))
    bad = list(shape)
    bad[-1] += 1
    with pytest.raises(ValueError, match="must be multiples of"):
        model(torch.randn(bad), t)


def test_unet_skeleton_save_load_round_trip(tmp_path):
    model = perturb_(UNet1D(UNetConfig(**TINY_UNET), context_pool="attention", context_pool_heads=2)).eval()
    x, t, ctx = torch.randn(1, 1, 8), torch.rand(1), torch.randn(1, 2, CTX)
    model.save_pretrained(tmp_path / "m")
    loaded = UNet1D.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(loaded(x, t, ctx), model(x, t, ctx))


def test_unet_skeleton_needs_dims_and_valid_levels():
    with pytest.raises(TypeError, match="dims"):
        UNet(UNetConfig(**TINY_UNET))
    with pytest.raises(ValueError, match="one flag per level"):
        UNetConfig(channel_mult=(1, 2), attention_levels=(True,))
    with pytest.raises(ValueError, match="context_pool"):
        UNetConfig(context_pool="max")


@pytest.mark.parametrize("length", [8, 14])
def test_dit_over_one_axis(length):
    torch.manual_seed(0)
    model = DiT1D(width=32, depth=2, heads=2, context_dim=CTX)
    assert model.size_multiples() == (2,) and model.rope.axes_dims == (16,)
    x, t, ctx = torch.randn(2, 4, length), torch.rand(2), torch.randn(2, 3, CTX)
    assert (model(x, t, ctx) == 0).all()
    perturb_(model).eval()
    with torch.no_grad():
        out = model(x, t, ctx)
        assert out.shape == x.shape
        assert not torch.allclose(out, model(x, t, torch.randn_like(ctx)))
        assert not torch.allclose(out, model(x, t))
    model.train()
    model(x, t, ctx).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model(torch.randn(1, 4, length + 1), t[:1])


def test_dit_over_two_axes_and_config_checks():
    model = perturb_(
        DiffusionTransformer(in_channels=1, patch=(2, 4), width=32, depth=1, heads=2, context_dim=CTX)
    )
    assert model.rope.axes_dims == (8, 8)
    x = torch.randn(1, 1, 6, 8)  # [b 1 m t]
    assert model(x, torch.rand(1), torch.randn(1, 2, CTX)).shape == x.shape
    with pytest.raises(ValueError, match="one entry per patch axis"):
        DiffusionTransformerConfig(patch=(2,), rope_axes_dims=(4, 4))
    with pytest.raises(ValueError, match="positive ints"):
        DiffusionTransformerConfig(patch=(0,))


@pytest.mark.parametrize(
    "shape,patch", [((2, 3, 8), (2,)), ((2, 3, 4, 6), (2, 3)), ((1, 2, 2, 4, 6), (1, 2, 3))]
)
def test_patchify_round_trip_and_token_order(shape, patch):
    x = torch.randn(shape)
    tokens, grid = patchify(x, patch)
    n = 1
    for g in grid:
        n *= g
    assert tokens.shape == (shape[0], n, shape[1] * torch.tensor(patch).prod().item())
    assert torch.equal(unpatchify(tokens, grid, patch), x)
    # the first token is the first patch, channel-major within it
    first = x[(slice(None), slice(None), *(slice(0, p) for p in patch))]  # [b c *patch]
    assert torch.equal(tokens[:, 0], first.reshape(shape[0], -1))


def test_axis_attention_folds_the_other_axes():
    torch.manual_seed(0)
    over_t = perturb_(AxisAttention(2, 8, 4, axes=(1,), groups=4)).eval()
    over_t.norm = torch.nn.Identity()  # GroupNorm's statistics span the whole map; the tokens do not
    x = torch.randn(1, 8, 3, 5)  # [b c m t]
    with torch.no_grad():
        y = over_t(x)
        x2 = x.clone()
        x2[:, :, 0, -1] += 1.0  # change one time step of mel row 0
        y2 = over_t(x2)
    assert y.shape == x.shape
    assert torch.equal(y[:, :, 1:], y2[:, :, 1:])  # other rows are other sequences
    assert not torch.allclose(y[:, :, 0, 0], y2[:, :, 0, 0])  # the same row attends along t
    with pytest.raises(ValueError, match="axes"):
        AxisAttention(2, 8, 4, axes=(2,))


def test_nn_imports_no_modality():
    code = "import sys, mediadiff.nn; print(sorted(m for m in sys.modules if m.startswith('mediadiff.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for pkg in ("video", "audio", "train", "pipelines"):
        assert f"'mediadiff.{pkg}" not in loaded, loaded
