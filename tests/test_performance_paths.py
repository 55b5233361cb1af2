"""The fast paths agree with the plain float32 eager path: torch.compile, bf16 autocast, FLOP counts."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import flowmo
from benchmarks.flops import attention_flops, decoder_flops, encoder_flops


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    model = flowmo.build(flowmo.flowmo_tiny()).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return model, x


def test_compiled_blocks_give_the_same_outputs(pair):
    model, x = pair
    compiled = flowmo.build(flowmo.flowmo_tiny()).eval()
    compiled.load_state_dict(model.state_dict())
    compiled.compile()
    z = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        code = model.quantize(model.encode(x)).values
        assert (compiled.encode(x) - model.encode(x)).abs().max() < 1e-5
        v, vc = model.velocity(z, 0.3, code), compiled.velocity(z, 0.3, code)
    assert (v - vc).abs().max() < 1e-5


def test_bf16_autocast_agrees_with_float32(pair):
    """bf16 autocast keeps the velocity within 3% (relative L2) of float32 and the code's signs
    (the LFQ bits) mostly equal: the tolerance bf16's 8-bit mantissa allows through 3 blocks."""
    model, x = pair
    z = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        code32 = model.encode(x)
        v32 = model.velocity(z, 0.3, torch.sign(code32))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            code16 = model.encode(x)
            v16 = model.velocity(z, 0.3, torch.sign(code32))
    rel = lambda a, b: float((a.float() - b).norm() / b.norm())
    assert rel(v16, v32) < 0.03
    assert rel(code16, code32) < 0.03
    agree = (torch.sign(code16.float()) == torch.sign(code32)).float().mean()
    assert agree > 0.97


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_analytic_flops_match_the_counter(name):
    """The analytic count equals torch's FLOP counter for the matmuls; attention (which the
    counter does not see inside CPU SDPA kernels) is added analytically."""
    spec = flowmo.get_preset(name)
    model = flowmo.build(spec).eval()
    s = spec.image_size
    x, t = torch.rand(1, 3, s, s) * 2 - 1, torch.rand(1)
    cond = torch.randn(1, spec.code_length, spec.code_channels + 1)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.decoder_velocity(x, t, cond)
    counted = fc.get_total_flops()
    assert counted in (decoder_flops(spec) - attention_flops(spec.decoder, spec), decoder_flops(spec))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.encode(x)
    assert fc.get_total_flops() in (encoder_flops(spec) - attention_flops(spec.encoder, spec), encoder_flops(spec))


def test_sampler_presets_decoder_calls(pair):
    from flowmo.samplers import SAMPLER_PRESETS

    model, x = pair
    code = model.quantize(model.encode(x)).values
    calls = {name: model.decode(code, sampler=spec).decoder_calls for name, spec in SAMPLER_PRESETS.items()}
    assert calls["release"] == 31
    assert calls["fast"] <= 31 / 3


def test_tanh_gelu_in_place_only_without_autograd():
    from flowmo.blocks.double_block import TanhGELU

    act = TanhGELU()
    x = torch.randn(3, 5, 8)
    expected = torch.nn.functional.gelu(x, approximate="tanh")
    with torch.no_grad():
        y = x.clone()
        out = act(y)
        assert out.data_ptr() == y.data_ptr()  # in place during sampling
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    w = x.clone().requires_grad_(True)
    out = act(w)
    assert out.data_ptr() != w.data_ptr()
    out.square().sum().backward()
    w2 = x.clone().requires_grad_(True)
    torch.nn.functional.gelu(w2, approximate="tanh").square().sum().backward()
    torch.testing.assert_close(w.grad, w2.grad, rtol=0, atol=0)
