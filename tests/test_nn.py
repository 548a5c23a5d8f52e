import math

import pytest
import torch
import torch.nn.functional as F

from mediadiff.nn import (
    AdaGroupNorm,
    AdaLNZeroBlock,
    Attention,
    AttentionPool,
    Downsample,
    FactorizedConv3d,
    ResBlock,
    RotaryEmbedding,
    TimestepEmbedding,
    TokenAdapter,
    Upsample,
    apply_rope,
    attention,
    checkpoint,
    conv_nd,
    grid_positions,
    masked_mean,
    sinusoidal_embedding,
    split_head_dim,
)


def naive_attention(q, k, v, key_mask=None):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [b nh n l]
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ v


def test_attention_matches_naive_softmax_with_and_without_mask():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    mask = torch.tensor([[True] * 7, [True, False, True, True, False, False, True]])
    torch.testing.assert_close(attention(q, k, v), naive_attention(q, k, v))
    torch.testing.assert_close(attention(q, k, v, mask), naive_attention(q, k, v, mask))


def test_attention_module_matches_manual_heads():
    attn = Attention(16, 4, context_dim=12)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 3, 12)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    q = attn.to_q(x).view(2, 5, 4, 4).transpose(1, 2)
    k, v = (a.view(2, 3, 4, 4).transpose(1, 2) for a in attn.to_kv(ctx).chunk(2, -1))
    ref = attn.to_out(naive_attention(q, k, v, mask).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x, ctx, mask), ref)


def test_masked_padding_keys_do_not_affect_output():
    attn = Attention(16, 2, context_dim=12, qk_norm=True)
    x, ctx = torch.randn(1, 6, 16), torch.randn(1, 3, 12)
    out = attn(x, ctx, torch.ones(1, 3, dtype=torch.bool))
    padded = torch.cat([ctx, 100 * torch.randn(1, 4, 12)], dim=1)  # [1 7 12], garbage padding
    mask = torch.tensor([[True] * 3 + [False] * 4])
    torch.testing.assert_close(attn(x, padded, mask), out)
    assert not torch.allclose(attn(x, padded), out)  # unmasked, the padding would matter


def test_all_masked_sample_gives_zeros_not_nan():
    q, k, v = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 2, 4), torch.randn(2, 1, 2, 4)
    out = attention(q, k, v, torch.tensor([[False, False], [True, False]]))
    assert torch.isfinite(out).all() and (out[0] == 0).all()
    torch.testing.assert_close(out[1], v[1, :, :1].expand(1, 3, 4))


def test_attention_rejects_bad_mask_and_context_misuse():
    with pytest.raises(ValueError, match="key_mask"):
        attention(*(torch.randn(1, 1, 2, 4) for _ in range(3)), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs `context`"):
        Attention(8, 2, context_dim=4)(torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 3)


def test_attention_pool_ignores_padding_and_can_select_one_token():
    torch.manual_seed(0)
    pool = AttentionPool(16, 8, heads=2)
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [False] * 5])
    out = pool(x, mask)  # [3 8]
    assert out.shape == (3, 8) and torch.isfinite(out).all()
    garbage = x.clone()
    garbage[1, 3:] = 100 * torch.randn(2, 16)
    torch.testing.assert_close(pool(garbage, mask)[1], out[1])  # masked tokens do not count
    torch.testing.assert_close(out[2], pool.to_out.bias)  # nothing to attend to: zero before to_out
    # a query aligned with one token's key picks that token's value: the pooled vector then follows
    # that token alone, unlike a mean (what lets it single out "left" among "a red square moving ...")
    with torch.no_grad():
        k_target = pool.to_kv(pool.norm(x[0, 2]))[:16]  # key of token 2, both heads
        pool.query.copy_(50 * k_target.view(2, 8))
    moved = x.clone()
    moved[0, [0, 1, 3, 4]] += torch.randn(4, 16)  # change every other token
    torch.testing.assert_close(pool(moved[:1]), pool(x[:1]), atol=1e-3, rtol=1e-3)
    assert not torch.allclose(masked_mean(moved[:1]), masked_mean(x[:1]), atol=1e-2)
    with pytest.raises(ValueError, match="divisible"):
        AttentionPool(10, 4, heads=3)


def test_masked_mean():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0
    assert masked_mean(x, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0
    assert masked_mean(x).item() == pytest.approx(104 / 3)


@pytest.mark.parametrize("sizes", [(7,), (3, 4), (2, 3, 4)])
def test_rope_scores_depend_only_on_position_differences(sizes):
    n_axes = len(sizes)
    rope = RotaryEmbedding(24, n_axes=n_axes)
    pos = grid_positions(*sizes)  # [n axes]
    assert pos.shape == (math.prod(sizes), n_axes)
    q, k = torch.randn(1, 2, len(pos), 24), torch.randn(1, 2, len(pos), 24)
    # the same vector at every position, so scores differ only through the rotation
    q, k = q[:, :, :1].expand_as(q), k[:, :, :1].expand_as(k)

    def scores(offset):
        cs = rope(pos + offset)
        return apply_rope(q, cs) @ apply_rope(k, cs).transpose(-1, -2)  # [1 2 n n]

    s0 = scores(torch.zeros(n_axes, dtype=torch.long))
    torch.testing.assert_close(scores(torch.tensor([5, -3, 11][:n_axes])), s0, atol=1e-4, rtol=1e-4)
    # rel[i, j] = pos[j] - pos[i]: pairs with the same difference have the same score
    rel = pos[None, :, :] - pos[:, None, :]
    flat = s0[0, 0]
    for d in rel.reshape(-1, n_axes)[:: max(1, len(pos))]:
        same = (rel == d).all(-1)
        vals = flat[same]
        torch.testing.assert_close(vals, vals[:1].expand_as(vals), atol=1e-4, rtol=1e-4)
    assert flat.std() > 1e-3  # and different differences give different scores


def test_rope_shapes_norm_and_batched_positions():
    rope = RotaryEmbedding(16, n_axes=3)
    assert rope.axes_dims == (6, 6, 4) and split_head_dim(64, 3) == (22, 22, 20)
    cos, sin = rope(grid_positions(2, 3, 4))
    assert cos.shape == sin.shape == (24, 8)
    x = torch.randn(2, 4, 24, 16)
    y = apply_rope(x, (cos, sin))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # a rotation
    batched = rope(grid_positions(2, 3, 4).expand(2, -1, -1))
    torch.testing.assert_close(apply_rope(x, batched), y)
    torch.testing.assert_close(apply_rope(x, rope(torch.zeros(24, 3, dtype=torch.long))), x)
    with pytest.raises(ValueError, match="axes"):
        rope(grid_positions(2, 3))
    with pytest.raises(ValueError, match="sum to head_dim"):
        RotaryEmbedding(16, axes_dims=(8, 6))


def test_sinusoidal_and_timestep_embedding():
    t = torch.tensor([0.0, 0.5, 1.0])
    e = sinusoidal_embedding(1000 * t, 8)
    assert e.shape == (3, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    # frequency i = 10000^(-i/4): at x = 500 the first pair is cos(500), sin(500)
    torch.testing.assert_close(e[1, [0, 4]], torch.tensor([math.cos(500.0), math.sin(500.0)]))
    torch.testing.assert_close(e[1, 3], torch.tensor(math.cos(500.0 * 10000 ** (-3 / 4))))
    assert sinusoidal_embedding(t, 7).shape == (3, 7)
    emb = TimestepEmbedding(32)
    out = emb(t)
    assert out.shape == (3, 32) and not torch.allclose(out[0], out[1])
    torch.testing.assert_close(emb(t[:1]), out[:1])


def test_adaln_zero_block_is_identity_at_init():
    block = AdaLNZeroBlock(16, 2, 8, context_dim=12)
    x, emb, ctx = torch.randn(2, 5, 16), torch.randn(2, 8), torch.randn(2, 3, 12)
    torch.testing.assert_close(block(x, emb, ctx), x)
    torch.testing.assert_close(block(x, emb), x)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert not torch.allclose(block(x, emb, ctx), x)
    assert not torch.allclose(block(x, emb, ctx), block(x, emb))  # the context matters


def test_ada_group_norm_scale_shift():
    norm = AdaGroupNorm(8, 4, groups=4)
    x, emb = torch.randn(2, 8, 5, 6), torch.randn(2, 4)
    scale, shift = norm.proj(F.silu(emb)).chunk(2, -1)
    ref = F.group_norm(x, 4) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    torch.testing.assert_close(norm(x, emb), ref)
    with torch.no_grad():
        norm.proj.weight.zero_()
        norm.proj.bias.zero_()
    torch.testing.assert_close(norm(x, emb), F.group_norm(x, 4))


@pytest.mark.parametrize("dims,factorized", [(1, False), (2, False), (3, False), (3, True)])
def test_resblock_shapes_gradients_and_embedding(dims, factorized):
    block = ResBlock(dims, 8, 12, emb_dim=6, groups=4, factorized=factorized)
    spatial = (9,) * dims
    x, emb = torch.randn(2, 8, *spatial, requires_grad=True), torch.randn(2, 6)
    torch.testing.assert_close(block(x, emb), block.skip(x))  # zero-init output conv: skip path only
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = block(x, emb)
    assert out.shape == (2, 12, *spatial)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not torch.allclose(block(x, emb), block(x, emb + 1))  # the embedding modulates


def test_plain_resblock_and_factorized_errors():
    assert ResBlock(2, 4, groups=2)(torch.randn(1, 4, 6, 6)).shape == (1, 4, 6, 6)
    with pytest.raises(ValueError, match="dims=3"):
        ResBlock(2, 4, factorized=True)
    with pytest.raises(ValueError, match="dims must be 1, 2 or 3"):
        conv_nd(4, 1, 1, 3)


def test_factorized_conv_starts_as_per_frame_spatial_conv():
    conv = FactorizedConv3d(3, 5)
    x = torch.randn(2, 3, 4, 6, 6)
    per_frame = torch.stack(
        [F.conv2d(x[:, :, i], conv.spatial.weight[:, :, 0], conv.spatial.bias, padding=1) for i in range(4)],
        2,
    )
    torch.testing.assert_close(conv(x), per_frame)
    torch.testing.assert_close(conv(x[1:]), per_frame[1:])  # batch 1 takes a 2-D conv path on CPU
    with torch.no_grad():
        conv.temporal.weight.add_(0.1 * torch.randn_like(conv.temporal.weight))
    y = conv(x)
    x2 = x.clone()
    x2[:, :, 0] += 1  # a change in frame 0 reaches frame 1 (kernel 3) but not frame 3
    y2 = conv(x2)
    assert not torch.allclose(y2[:, :, 1], y[:, :, 1]) and torch.allclose(y2[:, :, 3], y[:, :, 3])
    assert (FactorizedConv3d(3, 5, zero_init=True)(x) == 0).all()


@pytest.mark.parametrize("dims,factor", [(1, 2), (2, 2), (3, (1, 2, 2)), (3, 2)])
def test_up_and_downsample_shapes(dims, factor):
    x = torch.randn(1, 4, *(8,) * dims)
    down = Downsample(dims, 4, 6, factor=factor)(x)
    f = (factor,) * dims if isinstance(factor, int) else factor
    assert down.shape == (1, 6, *(8 // s for s in f))
    assert Upsample(dims, 6, 4, factor=factor)(down).shape == x.shape
    with pytest.raises(ValueError, match="factor"):
        Downsample(dims, 4, factor=(2,) * (dims + 1))


def test_checkpoint_same_values_and_gradients():
    block = ResBlock(2, 4, emb_dim=3, groups=2)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, emb = torch.randn(2, 4, 5, 5), torch.randn(2, 3)
    grads = []
    for enabled in (False, True):
        block.zero_grad()
        out = checkpoint(block, x, emb, enabled=enabled)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in block.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_token_adapter_is_residual_and_zero_at_padding():
    adapter = TokenAdapter(16, 32)
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    out = adapter(x, mask)  # [2 5 16]
    assert out.shape == x.shape
    assert (out[1, 2:] == 0).all() and not torch.allclose(out[0], x[0])
    with torch.no_grad():
        adapter.mlp[-1].weight.zero_()
        adapter.mlp[-1].bias.zero_()
    torch.testing.assert_close(adapter(x, mask), x * mask[..., None])  # a zero MLP: identity on real tokens
    torch.testing.assert_close(adapter(x), x)
