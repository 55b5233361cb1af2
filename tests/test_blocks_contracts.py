"""Block inputs a break-it review found unchecked: empty batches and token sets, non-contiguous
RoPE tables, dtype / device mismatches with the block's parameters, attention's k, v and
scale, and a few constructor arguments."""

import math

import pytest
import torch

from flowmo.blocks import (DoubleStreamBlock, FinalLayer, MMDiT, TimeEmbedding, flowmo_positions, rope_angles,
                           rope_freqs)
from flowmo.blocks.attention import RMSNorm, SelfAttention, attention
from flowmo.blocks.embeddings import timestep_embedding
from flowmo.blocks.rope import apply_rope
from flowmo.spec import MMDiTSpec

W, HEADS, AXES = 64, 2, (4, 14, 14)
T, GRID = 4, (2, 3)
N = GRID[0] * GRID[1]


def _freqs(t=T, grid=GRID):
    return rope_freqs(rope_angles(flowmo_positions(t, grid), AXES))


def _inputs(b=2, t=T, n=N, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(b, n, W, generator=g, dtype=dtype), torch.randn(b, t, W, generator=g, dtype=dtype),
            torch.randn(b, W, generator=g, dtype=dtype))


def _rotate_by_hand(x, freqs):
    """(x0 cos - x1 sin, x0 sin + x1 cos) for each pair, written out."""
    x0, x1 = x[..., 0::2].float(), x[..., 1::2].float()
    cos, sin = freqs[..., 0], freqs[..., 1]
    out = torch.empty(x.shape, dtype=torch.float32)
    out[..., 0::2], out[..., 1::2] = x0 * cos - x1 * sin, x0 * sin + x1 * cos
    return out.to(x.dtype)


# ----------------------------------------------------------------------------- empty inputs
@pytest.mark.parametrize("shape", [(0, 2, 10, 32), (2, 2, 0, 32), (0, 2, 0, 32)])
def test_apply_rope_on_empty_inputs_returns_empty(shape):
    freqs = rope_freqs(torch.zeros(shape[2], 16))
    out = apply_rope(torch.randn(shape), freqs)
    assert out.shape == shape


@pytest.mark.parametrize("b,t,n", [(0, T, N), (2, 0, N), (2, T, 0), (2, 0, 0), (0, 0, 0)])
@pytest.mark.parametrize("outputs", [("img", "txt"), ("img",), ("txt",)])
def test_a_block_on_empty_batches_or_token_sets_returns_empty_outputs(b, t, n, outputs):
    blk = DoubleStreamBlock(W, HEADS, outputs=outputs)
    img, txt, vec = _inputs(b, t, n)
    freqs = torch.cat((_freqs(t)[:t], _freqs(0)[:n])) if n else _freqs(t)[:t]
    out_img, out_txt = blk(img, txt, vec, freqs)
    assert (out_img is None) == ("img" not in outputs) and (out_txt is None) == ("txt" not in outputs)
    if out_img is not None:
        assert out_img.shape == (b, n, W)
    if out_txt is not None:
        assert out_txt.shape == (b, t, W)


def test_an_empty_batch_through_the_backbone():
    net = MMDiT(MMDiTSpec(width=W, heads=HEADS, depth=2, axes_dim=AXES), patch_dim=48, txt_in_dim=6, txt_out_dim=6)
    img_out, txt_out = net(torch.randn(0, N, 48), torch.randn(0, T, 6), torch.rand(0), GRID)
    assert img_out.shape == (0, N, 48) and txt_out.shape == (0, T, 6)


# ----------------------------------------------------------------------------- layouts
def test_non_contiguous_tables_and_inputs_rotate_as_contiguous_ones():
    freqs = _freqs()
    strided = freqs.transpose(1, 2).contiguous().transpose(1, 2)  # same values, last-dim stride != 1
    assert not strided.is_contiguous() and torch.equal(strided, freqs)
    x = torch.randn(2, HEADS, T + N, 32)
    x_t = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, non-contiguous
    expected = _rotate_by_hand(x, freqs)
    torch.testing.assert_close(apply_rope(x, strided), expected)
    torch.testing.assert_close(apply_rope(x_t, freqs), expected)
    blk = DoubleStreamBlock(W, HEADS)
    img, txt, vec = _inputs()
    a, b = blk(img, txt, vec, strided), blk(img, txt, vec, freqs)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------- dtypes and devices
@pytest.mark.parametrize("which", ["img", "txt", "vec"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_a_block_refuses_inputs_of_another_dtype_naming_them(which, dtype):
    blk = DoubleStreamBlock(W, HEADS)
    args = dict(zip(("img", "txt", "vec"), _inputs()))
    args[which] = args[which].to(dtype)
    with pytest.raises(TypeError, match=f"{which} has dtype {dtype} but the block's parameters are torch.float32"):
        blk(args["img"], args["txt"], args["vec"], _freqs())


@pytest.mark.parametrize("which", ["img", "txt", "vec", "freqs"])
def test_a_block_refuses_inputs_on_another_device_naming_them(which):
    blk = DoubleStreamBlock(W, HEADS)
    args = dict(zip(("img", "txt", "vec"), _inputs()), freqs=_freqs())
    args[which] = args[which].to("meta")
    with pytest.raises(ValueError, match=f"{which} is on meta but the block's parameters are on cpu"):
        blk(args["img"], args["txt"], args["vec"], args["freqs"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_a_block_in_reduced_precision_returns_the_inputs_dtype(dtype):
    blk = DoubleStreamBlock(W, HEADS).to(dtype)
    img, txt, vec = _inputs(dtype=dtype)
    out_img, out_txt = blk(img, txt, vec, _freqs())
    assert out_img.dtype == dtype and out_txt.dtype == dtype


def test_under_autocast_mixed_dtypes_are_allowed():
    blk = DoubleStreamBlock(W, HEADS)
    img, txt, vec = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_img, out_txt = blk(img.bfloat16(), txt, vec, _freqs())
    assert out_img.shape == img.shape and torch.isfinite(out_img.float()).all()


def test_the_backbone_and_final_layer_check_dtype_and_device():
    net = MMDiT({"width": W, "heads": HEADS, "depth": 1, "axes_dim": AXES}, patch_dim=48, txt_in_dim=6,
                txt_out_dim=6)
    img, txt, t = torch.randn(2, N, 48), torch.randn(2, T, 6), torch.rand(2)
    with pytest.raises(TypeError, match="img has dtype torch.float64 but the MMDiT's parameters are torch.float32"):
        net(img.double(), txt, t, GRID)
    with pytest.raises(ValueError, match="t is on meta but the MMDiT's parameters are on cpu"):
        net(img, txt, t.to("meta"), GRID)
    assert net(img, txt, t.double(), GRID)[0].dtype == torch.float32  # t is converted: any real dtype
    final = FinalLayer(W, 12)
    with pytest.raises(TypeError, match="x has dtype torch.bfloat16 but the layer's parameters"):
        final(torch.randn(2, 3, W, dtype=torch.bfloat16), torch.randn(2, W))
    for bad in (None, {"width": 3}, MMDiTSpec.__mro__[1]):
        with pytest.raises((TypeError, ValueError)):
            MMDiT(bad, patch_dim=48, txt_in_dim=6, txt_out_dim=6)


# ----------------------------------------------------------------------------- attention
def test_attention_checks_k_v_and_scale():
    freqs = rope_freqs(torch.zeros(10, 16))
    q = torch.randn(1, 2, 10, 32)
    with pytest.raises(TypeError, match="k must be a torch.Tensor"):
        attention(q, None, q, freqs, 0.1)
    with pytest.raises(ValueError, match=r"v must have shape \(B, H, N, D\) \(4 dims\)"):
        attention(q, q, q[0], freqs, 0.1)
    with pytest.raises(TypeError, match="v must be a floating-point tensor"):
        attention(q, q, q.long(), freqs, 0.1)
    with pytest.raises(TypeError, match="q, k and v must have one dtype"):
        attention(q, q.double(), q, freqs, 0.1)
    for scale in (0, -1.0, float("nan"), float("inf"), True, "0.1", torch.tensor(0.1)):
        with pytest.raises(ValueError, match="scale .* must be a finite number > 0"):
            attention(q, q, q, freqs, scale)
    out = attention(q, q, q, freqs, 0.1)
    assert out.shape == (1, 10, 64)


# ----------------------------------------------------------------------------- constructor arguments
@pytest.mark.parametrize("value", ["no", None, 1, 0])
def test_qkv_bias_must_be_a_bool(value):
    with pytest.raises(TypeError, match="qkv_bias must be a bool"):
        DoubleStreamBlock(W, HEADS, qkv_bias=value)
    with pytest.raises(TypeError, match="qkv_bias must be a bool"):
        SelfAttention(W, HEADS, value)


def test_rms_norm_refuses_integer_inputs():
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        RMSNorm(4)(torch.ones(2, 4, dtype=torch.long))


def test_time_embedding_arguments():
    with pytest.raises(ValueError, match="freq_dim must be >= 2"):
        TimeEmbedding(W, freq_dim=1)
    for name, kw in (("max_period", {"max_period": 0}), ("max_period", {"max_period": float("inf")}),
                     ("time_factor", {"time_factor": float("nan")}), ("time_factor", {"time_factor": -1})):
        with pytest.raises(ValueError, match=f"{name} must be a real number > 0"):
            timestep_embedding(torch.rand(3), **kw)
    with pytest.raises(ValueError, match="dim must be >= 2"):
        timestep_embedding(torch.rand(3), dim=1)
    emb = timestep_embedding(torch.tensor([0.5]), dim=4, time_factor=2.0, max_period=100.0)
    f = [1.0, 100.0 ** -0.5]  # max_period ** (-k / 2), k = 0, 1
    expected = [math.cos(1.0 * f[0]), math.cos(1.0 * f[1]), math.sin(1.0 * f[0]), math.sin(1.0 * f[1])]
    torch.testing.assert_close(emb[0], torch.tensor(expected))
