"""The blocks used alone: layouts written out index by index, modulation-free construction
(every parameter gets a gradient), and a clear error for each bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmo import MMDiTSpec
from flowmo.blocks import (
    MMDiT, DoubleStreamBlock, FinalLayer, Modulation, RMSNorm, RopeTable, SelfAttention, TimeEmbedding, attention,
    apply_rope, flowmo_positions, mlp, patchify, rope_angles, rope_freqs, timestep_embedding, unpatchify,
)

W, H = 32, 2  # width, heads: head dim 16
AXES = (4, 6, 6)


def table(n_txt, grid, axes=AXES):
    return rope_freqs(rope_angles(flowmo_positions(n_txt, grid), axes))


def streams(b=2, n_img=6, n_txt=3, width=W, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n_img, width, generator=g), torch.randn(b, n_txt, width, generator=g)


# ----------------------------------------------------------------------------- layouts
@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 2), c=st.integers(1, 4), rows=st.integers(1, 4), cols=st.integers(1, 4),
       p=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_patchify_layout_and_round_trip(b, c, rows, cols, p, seed):
    images = torch.randn(b, c, rows * p, cols * p, generator=torch.Generator().manual_seed(seed))
    tokens = patchify(images, p)
    assert tokens.shape == (b, rows * cols, p * p * c)
    # token r * cols + col, feature (ph * p + pw) * c + ch is pixel (r * p + ph, col * p + pw) of channel ch
    for r in range(rows):
        for col in range(cols):
            for ph in range(p):
                for pw in range(p):
                    for ch in range(c):
                        assert torch.equal(tokens[:, r * cols + col, (ph * p + pw) * c + ch],
                                           images[:, ch, r * p + ph, col * p + pw])
    assert torch.equal(unpatchify(tokens, p, (rows, cols), channels=c), images)


def test_flowmo_positions_follow_the_token_order():
    pos = flowmo_positions(2, (2, 3))
    expected = [[0, 0, 0], [1, 1, 1]] + [[0, r, c] for r in range(2) for c in range(3)]
    assert pos.tolist() == expected


@settings(max_examples=60, deadline=None)
@given(axes=st.lists(st.integers(1, 6).map(lambda k: 2 * k), min_size=1, max_size=4),
       n=st.integers(1, 5), theta=st.sampled_from([100.0, 10000.0]), seed=st.integers(0, 2**16))
def test_rope_angles_count_and_values(axes, n, theta, seed):
    g = torch.Generator().manual_seed(seed)
    positions = torch.randint(0, 50, (n, len(axes)), generator=g)
    angles = rope_angles(positions, axes, theta)
    assert angles.shape == (n, sum(axes) // 2) and angles.dtype == torch.float32
    col = 0
    for a, d in enumerate(axes):
        for k in range(d // 2):
            for i in range(n):
                want = positions[i, a].item() * theta ** (-2 * k / d)
                assert math.isclose(angles[i, col].item(), want, rel_tol=1e-6, abs_tol=1e-6)
            col += 1


@settings(max_examples=30, deadline=None)
@given(axes=st.lists(st.integers(1, 9), min_size=1, max_size=4).filter(lambda a: any(d % 2 for d in a)))
def test_rope_angles_refuse_odd_axis_sizes(axes):
    with pytest.raises(ValueError, match=r"axes_dim\[\d\] = \d is odd"):
        rope_angles(torch.zeros(2, len(axes)), axes)


def test_qkv_heads_split_is_k_then_heads_then_dim():
    att = SelfAttention(W, H)
    x = torch.randn(2, 5, W)
    q, k, v = att.qkv_heads(x)
    raw = att.qkv(x)
    d = W // H
    assert q.shape == k.shape == v.shape == (2, H, 5, d)
    for h in range(H):
        torch.testing.assert_close(v[:, h], raw[..., 2 * W + h * d: 2 * W + (h + 1) * d])
        rq = raw[..., h * d: (h + 1) * d]
        torch.testing.assert_close(q[:, h], rq / torch.sqrt(rq.pow(2).mean(-1, keepdim=True) + 1e-6))


def test_attention_is_softmax_attention_with_merged_heads():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 4, 8, generator=g) for _ in range(3))
    zero = rope_freqs(torch.zeros(4, 4))  # angle 0: RoPE is the identity
    out = attention(q, k, v, zero, scale=0.3)
    weights = torch.softmax(0.3 * q @ k.transpose(-1, -2), dim=-1)
    expected = (weights @ v).permute(0, 2, 1, 3).reshape(2, 4, 3 * 8)
    torch.testing.assert_close(out, expected)


# ----------------------------------------------------------------------------- modulation
def test_block_without_modulation_is_the_plain_pre_norm_block():
    plain = DoubleStreamBlock(W, H, modulation=False)
    full = DoubleStreamBlock(W, H)
    assert not any("_mod." in k for k in plain.state_dict())
    missing, unexpected = full.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("_mod." in k for k in missing)
    img, txt = streams()
    freqs = table(3, (2, 3))
    for a, b in zip(plain(img, txt, None, freqs), full(img, txt, None, freqs)):
        torch.testing.assert_close(a, b)


def test_final_layer_without_modulation():
    plain, full = FinalLayer(W, 5, modulation=False), FinalLayer(W, 5)
    assert set(plain.state_dict()) == {"linear.weight", "linear.bias"}
    full.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 4, W)
    torch.testing.assert_close(plain(x), full(x, None))
    torch.testing.assert_close(plain(x), plain.linear(torch.nn.functional.layer_norm(x, (W,), eps=1e-6)))


@pytest.mark.parametrize("modulation", [False, True])
@pytest.mark.parametrize("stream", ["img", "txt"])
def test_a_stream_without_output_only_gives_keys_and_values(stream, modulation):
    """A block updating one stream equals the full block's output for that stream, with the
    other stream's k/v rows of ``qkv`` as its ``kv`` and its first modulation triple."""
    full = DoubleStreamBlock(W, H, modulation=modulation)
    part = DoubleStreamBlock(W, H, modulation=modulation, outputs=(stream,))
    other = "txt" if stream == "img" else "img"
    sd = full.state_dict()
    mapped = {}
    for key in part.state_dict():
        if key.startswith(f"{other}_attn.kv."):
            mapped[key] = sd[key.replace(".kv.", ".qkv.")][W:]
        elif key == f"{other}_attn.key_norm.scale":
            mapped[key] = sd[f"{other}_attn.norm.key_norm.scale"]
        elif key.startswith(f"{other}_mod.lin."):
            mapped[key] = sd[key][: 3 * W]
        else:
            mapped[key] = sd[key]
    part.load_state_dict(mapped)
    assert not any(k.startswith((f"{other}_mlp", f"{other}_attn.proj", f"{other}_attn.qkv", f"{other}_attn.norm."))
                   for k in part.state_dict())
    img, txt = streams()
    freqs = table(3, (2, 3))
    vec = torch.randn(2, W) if modulation else None
    want = dict(zip(("img", "txt"), full(img, txt, vec, freqs)))
    got = dict(zip(("img", "txt"), part(img, txt, vec, freqs)))
    assert got[other] is None
    torch.testing.assert_close(got[stream], want[stream])


def _grads_after_backward(module, loss):
    module.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad for n, p in module.named_parameters()}


def test_modulation_free_modules_get_a_gradient_in_every_parameter():
    img, txt = streams()
    freqs = table(3, (2, 3))
    block = DoubleStreamBlock(W, H, modulation=False)
    head = FinalLayer(W, 7, modulation=False)
    model = torch.nn.ModuleDict({"block": block, "head": head})
    i, t = block(img, txt, None, freqs)
    grads = _grads_after_backward(model, head(t).square().mean() + i.square().mean())
    assert all(g is not None and bool(g.any()) for g in grads.values()), [n for n, g in grads.items() if g is None]

    # the same with the default layout: the modulation layers never get one (why modulation=False exists)
    full = DoubleStreamBlock(W, H)
    i, t = full(img, txt, None, freqs)
    grads = _grads_after_backward(full, i.sum() + t.sum())
    assert {n for n, g in grads.items() if g is None} == {f"{s}_mod.lin.{w}" for s in ("img", "txt")
                                                          for w in ("weight", "bias")}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_mmdit_encoder_without_time_conditioning_trains_every_parameter(checkpointing):
    spec = MMDiTSpec(width=W, heads=H, depth=2, axes_dim=AXES, gradient_checkpointing=checkpointing)
    enc = MMDiT(spec, patch_dim=12, txt_in_dim=5, txt_out_dim=5, time_conditioning=False, outputs=("txt",))
    keys = set(enc.state_dict())
    assert not any(k.startswith(("time_in.", "final_layer_img.")) or "_mod." in k or "adaLN" in k for k in keys)
    g = torch.Generator().manual_seed(0)
    img = patchify(torch.randn(2, 3, 4, 6, generator=g), 2)  # grid (rows, cols) = (2, 3)
    txt = torch.randn(2, 4, 5, generator=g)
    _, code = enc(img, txt, None, (2, 3), outputs=("txt",))
    assert code.shape == (2, 4, 5)
    grads = _grads_after_backward(enc, code.square().mean())
    assert all(gr is not None and bool(gr.any()) for gr in grads.values())


def test_mmdit_default_keeps_the_release_layout_and_attention_scale():
    spec = MMDiTSpec(width=W, heads=H, depth=1, axes_dim=AXES)
    m = MMDiT(spec, patch_dim=12, txt_in_dim=5, txt_out_dim=5)
    keys = set(m.state_dict())
    for k in ("time_in.in_layer.weight", "double_blocks.0.img_mod.lin.weight", "double_blocks.0.txt_mod.lin.bias",
              "final_layer_img.adaLN_modulation.1.weight", "final_layer_txt.linear.weight"):
        assert k in keys
    # the spec's default ("mup", the release's) is 8 / head_dim; the block's own default is head_dim**-0.5
    assert m.double_blocks[0].softmax_scale == pytest.approx(8 / 16)
    assert DoubleStreamBlock(W, H).softmax_scale == pytest.approx(16 ** -0.5)


def test_mmdit_with_time_runs_on_a_non_square_grid():
    spec = MMDiTSpec(width=W, heads=H, depth=1, axes_dim=AXES)
    dec = MMDiT(spec, patch_dim=12, txt_in_dim=5, txt_out_dim=5)
    img = torch.randn(3, 6, 12)
    out, none = dec(img, torch.randn(3, 4, 5), torch.rand(3), (3, 2), outputs=("img",))
    assert out.shape == (3, 6, 12) and none is None


# ----------------------------------------------------------------------------- bad input
def test_block_refuses_a_modulation_vector_with_a_token_axis():
    img, txt = streams()
    block = DoubleStreamBlock(W, H)
    with pytest.raises(ValueError, match=r"vec must have shape \(B, D\) = \(2, 32\).*got \(2, 1, 32\)"):
        block(img, txt, torch.randn(2, 1, W), table(3, (2, 3)))
    with pytest.raises(ValueError, match=r"vec must have shape \(B, D\) = \(2, 32\)"):
        block(img, txt, torch.randn(3, W), table(3, (2, 3)))
    with pytest.raises(ValueError, match="vec must be None: this module was built with modulation=False"):
        DoubleStreamBlock(W, H, modulation=False)(img, txt, torch.randn(2, W), table(3, (2, 3)))


def test_block_refuses_a_rope_table_of_the_image_tokens_only():
    img, txt = streams()
    block = DoubleStreamBlock(W, H)
    image_only = rope_freqs(rope_angles(flowmo_positions(0, (2, 3)), AXES))
    with pytest.raises(ValueError, match=r"freqs covers 6 tokens \(it covers only the image tokens\).*3 \+ 6 = 9"):
        block(img, txt, None, image_only)
    with pytest.raises(ValueError, match=r"freqs must be float32 \(9, 8, 2\)"):
        block(img, txt, None, table(3, (2, 3)).double())
    with pytest.raises(ValueError, match=r"freqs has 5 angle pairs per token, for a head dim of 10, but this block's "
                                         r"head dim is 16 \(width / heads\): sum\(axes_dim\) must equal the head dim"):
        block(img, txt, None, table(3, (2, 3), axes=(2, 4, 4)))
    with pytest.raises(ValueError, match=r"freqs has 5 angle pairs.*x \(..., N, D\) = \(1, 9, 16\) has head dim D = "
                                         r"16: sum\(axes_dim\) must equal the head dim"):
        apply_rope(torch.zeros(1, 9, 16), table(3, (2, 3), axes=(2, 4, 4)))
    with pytest.raises(TypeError, match="freqs must be a torch.Tensor"):
        block(img, txt, None, None)


def test_block_refuses_streams_of_the_wrong_shape():
    img, txt = streams()
    block = DoubleStreamBlock(W, H)
    freqs = table(3, (2, 3))
    with pytest.raises(ValueError, match=r"img must have shape \(B, N, 32\)"):
        block(img[..., :16], txt, None, freqs)
    with pytest.raises(ValueError, match=r"txt must have shape \(B, N, 32\) \(3 dims\)"):
        block(img, txt[0], None, freqs)
    with pytest.raises(ValueError, match="txt has batch 1 but the other stream has batch 2"):
        block(img, txt[:1], None, freqs)
    with pytest.raises(TypeError, match="img must be a floating-point tensor"):
        block(img.long(), txt, None, freqs)


def test_block_constructor_checks():
    with pytest.raises(ValueError, match=r"width \(30\) must be divisible by heads \(4\)"):
        DoubleStreamBlock(30, 4)
    with pytest.raises(ValueError, match="head dim width / heads = 30 / 2 = 15 must be even"):
        DoubleStreamBlock(30, 2)
    with pytest.raises(ValueError, match="softmax_scale must be None or a finite number > 0"):
        DoubleStreamBlock(W, H, softmax_scale=0.0)
    with pytest.raises(TypeError, match="modulation must be a bool"):
        DoubleStreamBlock(W, H, modulation="no")
    with pytest.raises(TypeError, match="heads must be an int"):
        DoubleStreamBlock(W, 2.0)
    with pytest.raises(ValueError, match=r"int\(width \* ratio\) = 0"):
        mlp(4, 0.1)
    with pytest.raises(ValueError, match=r"width \(10\) must be divisible by heads \(3\)"):
        SelfAttention(10, 3)
    with pytest.raises(ValueError, match="chunks must be a multiple of 3"):
        Modulation(W, chunks=4)
    with pytest.raises(TypeError, match="modulation must be a bool"):
        FinalLayer(W, 3, modulation=1)
    with pytest.raises(ValueError, match=r"outputs must be a non-empty subset of \('img', 'txt'\)"):
        DoubleStreamBlock(W, H, outputs=())
    with pytest.raises(ValueError, match=r"outputs must be a non-empty subset of \('img', 'txt'\)"):
        DoubleStreamBlock(W, H, outputs=("latent",))
    with pytest.raises(TypeError, match="queries must be a bool"):
        SelfAttention(W, H, queries=None)


def test_final_layer_and_modulation_refuse_bad_vectors():
    x = torch.randn(2, 4, W)
    with pytest.raises(ValueError, match=r"vec must have shape \(B, D\) = \(2, 32\).*got \(2, 1, 32\)"):
        FinalLayer(W, 3)(x, torch.randn(2, 1, W))
    with pytest.raises(ValueError, match="vec must be None: this module was built with modulation=False"):
        FinalLayer(W, 3, modulation=False)(x, torch.randn(2, W))
    with pytest.raises(ValueError, match=r"x must have shape \(B, N, 32\)"):
        FinalLayer(W, 3)(x[..., :8])
    with pytest.raises(ValueError, match=r"vec must have shape \(B, D\) = \(2, 32\).*got \(2, 1, 32\)"):
        Modulation(W)(torch.randn(2, 1, W))
    with pytest.raises(ValueError, match="vec must be a \\(B, D\\) tensor, got None"):
        Modulation(W)(None)


def test_mmdit_refuses_a_grid_that_does_not_match_the_patches():
    spec = MMDiTSpec(width=W, heads=H, depth=1, axes_dim=AXES)
    m = MMDiT(spec, patch_dim=12, txt_in_dim=5, txt_out_dim=5)
    img, txt, t = torch.randn(2, 6, 12), torch.randn(2, 4, 5), torch.rand(2)
    with pytest.raises(ValueError, match=r"grid \(rows, cols\) = \(2, 2\) has 4 patches but img has 6 tokens"):
        m(img, txt, t, (2, 2))
    with pytest.raises(TypeError, match=r"grid must be a pair \(rows, cols\)"):
        m(img, txt, t, 6)
    with pytest.raises(ValueError, match=r"grid must be a pair \(rows, cols\) of positive ints.*rows = 0"):
        m(img, txt, t, (0, 6))
    with pytest.raises(ValueError, match=r"img must have shape \(B, N, 12\)"):
        m(img[..., :8], txt, t, (2, 3))
    with pytest.raises(ValueError, match=r"txt must have shape \(B, N, 5\)"):
        m(img, txt[..., :4], t, (2, 3))
    with pytest.raises(ValueError, match=r"t must be None or a \(B,\) = \(2,\) tensor"):
        m(img, txt, t[:, None], (2, 3))
    with pytest.raises(ValueError, match="outputs must be a non-empty subset"):
        m(img, txt, t, (2, 3), outputs=("image",))
    enc = MMDiT(spec, patch_dim=12, txt_in_dim=5, txt_out_dim=5, time_conditioning=False, outputs=("txt",))
    with pytest.raises(ValueError, match="t must be None: this MMDiT was built with time_conditioning=False"):
        enc(img, txt, t, (2, 3), outputs=("txt",))
    with pytest.raises(ValueError, match=r"outputs must be a non-empty subset of \('txt',\)"):
        enc(img, txt, None, (2, 3), outputs=("img",))
    with pytest.raises(ValueError, match=r"outputs must be a non-empty subset of \('img', 'txt'\)"):
        MMDiT(spec, patch_dim=12, txt_in_dim=5, txt_out_dim=5, outputs=())
    with pytest.raises(TypeError, match="time_conditioning must be a bool"):
        MMDiT(spec, patch_dim=12, txt_in_dim=5, txt_out_dim=5, time_conditioning=None)


def test_patchify_and_unpatchify_refuse_mismatched_sizes():
    with pytest.raises(ValueError, match=r"H x W = 10 x 8 do not split into 4 x 4 patches"):
        patchify(torch.zeros(1, 3, 10, 8), 4)
    with pytest.raises(ValueError, match=r"images must have shape \(B, C, H, W\)"):
        patchify(torch.zeros(3, 8, 8), 4)
    with pytest.raises(TypeError, match="patch_size must be an int"):
        patchify(torch.zeros(1, 3, 8, 8), True)
    with pytest.raises(ValueError, match="patch_size must be >= 1"):
        patchify(torch.zeros(1, 3, 8, 8), 0)
    tokens = torch.zeros(1, 6, 48)
    with pytest.raises(ValueError, match=r"grid \(rows, cols\) = \(2, 2\) has 4 patches but tokens has 6"):
        unpatchify(tokens, 4, (2, 2))
    with pytest.raises(ValueError, match=r"p \* p \* channels = 2 \* 2 \* 3 = 12 values per token, got 48"):
        unpatchify(tokens, 2, (2, 3))
    with pytest.raises(TypeError, match=r"grid must be a pair \(rows, cols\)"):
        unpatchify(tokens, 4, 6)
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, N, p\*p\*C\)"):
        unpatchify(tokens[0], 4, (2, 3))


def test_rope_functions_refuse_bad_input():
    with pytest.raises(ValueError, match=r"axes_dim\[1\] = 7 is odd"):
        rope_angles(torch.zeros(4, 3), (4, 7, 6))
    with pytest.raises(ValueError, match=r"positions must have shape \(N, n_axes\) = \(N, 3\)"):
        rope_angles(torch.zeros(4, 2), (4, 6, 6))
    with pytest.raises(ValueError, match=r"positions must have shape \(N, n_axes\) = \(N, 1\)"):
        rope_angles(torch.zeros(4), (4,))
    with pytest.raises(ValueError, match="axes_dim\\[0\\] must be >= 1"):
        rope_angles(torch.zeros(4, 1), (0,))
    with pytest.raises(TypeError, match="axes_dim must be a non-empty sequence"):
        rope_angles(torch.zeros(4, 0), ())
    with pytest.raises(ValueError, match="theta must be finite and > 0"):
        rope_angles(torch.zeros(4, 1), (4,), theta=0.0)
    with pytest.raises(ValueError, match=r"axes_dim\[0\] = 3 is odd"):
        RopeTable((3, 4))
    with pytest.raises(ValueError, match=r"freqs must be float32 \(5, 4, 2\)"):
        apply_rope(torch.zeros(1, 5, 8), rope_freqs(torch.zeros(4, 4)))
    with pytest.raises(ValueError, match="code_length must be >= 0"):
        flowmo_positions(-1, (2, 2))
    with pytest.raises(ValueError, match=r"grid must be a pair \(rows, cols\) of positive ints.*cols = 0"):
        flowmo_positions(2, (2, 0))
    with pytest.raises(ValueError, match=r"angles must be a real \(N, D/2\) tensor"):
        rope_freqs(torch.zeros(4))


def test_attention_pieces_refuse_bad_input():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match=r"freqs covers 3 tokens but there are 4 keys"):
        attention(q, q, q, rope_freqs(torch.zeros(3, 4)), 0.5)
    with pytest.raises(ValueError, match="q, k and v must have the same shape"):
        attention(q, q[:, :, :3], q, rope_freqs(torch.zeros(4, 4)), 0.5)
    with pytest.raises(ValueError, match=r"q_freqs covers 4 tokens but there are 2 queries"):
        attention(q[:, :, :2], q, q, rope_freqs(torch.zeros(4, 4)), 0.5, q_freqs=rope_freqs(torch.zeros(4, 4)))
    with pytest.raises(ValueError, match=r"q must have shape \(B, H, N, D\)"):
        attention(q[0], q[0], q[0], rope_freqs(torch.zeros(4, 4)), 0.5)
    with pytest.raises(ValueError, match=r"x must have shape \(B, N, 32\)"):
        SelfAttention(W, H).qkv_heads(torch.randn(1, 4, 16))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 8\)"):
        RMSNorm(8)(torch.randn(2, 4))


def test_time_embedding_refuses_times_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"t must be a real \(B,\) tensor of times in \[0, 1\].*\(2, 1\)"):
        timestep_embedding(torch.rand(2, 1))
    with pytest.raises(ValueError, match=r"t must be a real \(B,\) tensor"):
        TimeEmbedding(W)(torch.tensor(0.5))
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        TimeEmbedding(W)(0.5)
    with pytest.raises(ValueError, match="time_factor must be a real number > 0"):
        TimeEmbedding(W, time_factor=0)
