"""Hypothesis strategies for small, valid FlowMo specs."""

from hypothesis import strategies as st

from flowmo import FlowMoSpec


@st.composite
def backbone_specs(draw):
    heads = draw(st.sampled_from([1, 2, 4]))
    # head dim = sum of three positive even axes dims
    axes = tuple(draw(st.sampled_from([2, 4, 6])) for _ in range(3))
    head_dim = sum(axes)
    return {
        "name": "mmdit", "width": heads * head_dim, "heads": heads, "depth": draw(st.integers(1, 2)),
        "axes_dim": axes, "mlp_ratio": draw(st.sampled_from([1.0, 2.0, 4.0])),
        "qkv_bias": draw(st.booleans()), "attn_scale": draw(st.sampled_from(["mup", "standard", 0.5])),
    }


@st.composite
def quantizer_specs(draw, channels):
    name = draw(st.sampled_from(["lfq", "fsq", "bsq", "vq"] if channels > 1 else ["lfq", "fsq", "vq"]))  # BSQ: C >= 2
    if name in ("lfq", "bsq"):
        divisors = [g for g in range(1, min(channels, 8) + 1) if channels % g == 0]
        return {"name": name, "group_bits": draw(st.sampled_from(divisors))}
    if name == "vq":
        ema = draw(st.booleans())
        return {"name": "vq", "codebook_size": draw(st.sampled_from([2, 16, 100])), "ema": ema,
                "l2_normalize": channels > 1 and draw(st.booleans()), "dead_code_threshold": 1.0 if ema else 0.0}
    return {"name": "fsq", "levels": tuple(draw(st.lists(st.integers(2, 9), min_size=channels, max_size=channels)))}


@st.composite
def small_specs(draw):
    patch = draw(st.sampled_from([1, 2, 4]))
    grid = draw(st.integers(1, 4))
    channels = draw(st.integers(1, 12))
    return FlowMoSpec.model_validate({
        "image_size": patch * grid,
        "patch_size": patch,
        "code_length": draw(st.integers(1, 6)),
        "code_channels": channels,
        "encoder": draw(backbone_specs()),
        "decoder": draw(backbone_specs()),
        "quantizer": draw(quantizer_specs(channels)),
        "sampler": {"steps": draw(st.integers(1, 3))},
    })
