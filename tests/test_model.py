"""The FlowMo model: shapes over random specs, tokens, losses, saving, devices/dtypes, errors."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowmo
from flowmo import FlowMo, SamplerSpec
from flowmo.losses import RectifiedFlowLoss
from flowmo.spec import RectifiedFlowLossSpec

from strategies import small_specs


def images(b, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return flowmo.build(flowmo.flowmo_tiny()).eval()


@given(spec=small_specs(), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_shapes_and_token_round_trip(spec, batch, seed):
    torch.manual_seed(seed)
    model = flowmo.build(spec).eval()
    x = images(batch, spec.image_size, seed)
    code = model.encode(x)
    assert code.shape == (batch, spec.code_length, spec.code_channels)
    q = model.quantize(code)
    tokens = model.tokenize(x)
    assert tokens.dtype == torch.int64 and tokens.shape == (batch, spec.code_length)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < model.quantizer.codebook_size
    assert torch.equal(tokens, q.indices)
    # tokens -> code is the quantized code exactly
    assert torch.equal(model.tokens_to_code(tokens), q.values)
    g = torch.Generator().manual_seed(seed)
    out = model.detokenize(tokens, generator=g)
    assert out.shape == x.shape and float(out.abs().max()) <= 1.0
    # the same draws give the same images
    assert torch.equal(model.detokenize(tokens, generator=torch.Generator().manual_seed(seed)), out)


@given(spec=small_specs(), seed=st.integers(0, 2**16))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_save_load_bit_identical(tmp_path_factory, spec, seed):
    torch.manual_seed(seed)
    model = flowmo.build(spec).eval()
    d = model.save_pretrained(tmp_path_factory.mktemp("m") / "model")
    loaded = FlowMo.from_pretrained(d)
    assert loaded.spec == spec and not loaded.training
    x = images(2, spec.image_size, seed)
    noise = torch.randn(2, 3, spec.image_size, spec.image_size)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), model.encode(x))
        assert torch.equal(loaded.reconstruct(x, noise=noise), model.reconstruct(x, noise=noise))


def test_flow_loss_zero_exactly_for_the_true_velocity():
    loss = RectifiedFlowLoss(RectifiedFlowLossSpec(cfg_dropout=0.0))

    @given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.0]) | st.floats(1e-3, 2.0))
    @settings(max_examples=30, deadline=None)
    def check(seed, scale):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
        eps = torch.randn(x.shape, generator=g)
        t = torch.rand(3, generator=g)
        cond = torch.ones(3, 2, 5)
        delta = scale * torch.randn(x.shape, generator=g)
        terms = loss(lambda x_t, tt, c: (eps - x) + delta, x, cond, t, eps)
        expected = delta.pow(2).mean()
        assert torch.allclose(terms["diffusion"], expected, rtol=1e-4, atol=1e-12)
        assert (float(terms["diffusion"]) == 0.0) == bool((delta == 0).all())

    check()


def test_loss_terms_and_gradients(tiny):
    model = flowmo.build(flowmo.flowmo_tiny().replace(flow_loss={"name": "rectified_flow", "perceptual": {"name": "l1"}}))
    model.train()
    x = images(4, 32)
    out = model.loss(x, generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {"diffusion", "perceptual", "quantizer/entropy", "quantizer/commitment"}
    assert torch.allclose(out.total, sum(out.terms.values()))
    out.total.backward()
    assert model.encoder.double_blocks[0].img_attn.qkv.weight.grad is not None
    assert model.decoder.img_in.weight.grad is not None


def _same_terms(a, b):
    assert set(a.terms) == set(b.terms)
    for k in a.terms:
        assert torch.equal(a.terms[k], b.terms[k]), k
    assert torch.equal(a.total, b.total)


@pytest.mark.parametrize("quantizer", [{"code_channels": 18, "quantizer": "lfq"},
                                       {"code_channels": 6, "quantizer": "fsq"},
                                       {"code_channels": 18, "quantizer": "bsq"},
                                       {"code_channels": 18, "quantizer": "vq"},
                                       {"code_channels": 18, "quantizer": {"name": "vq", "ema": True}}],
                         ids=["lfq", "fsq", "bsq", "vq", "vq-ema"])
def test_the_loss_terms_do_not_depend_on_the_mode(quantizer):
    """Issue 22: a loaded model is in eval mode; a fine-tuning loop that forgets .train() must get
    the same loss: the quantizer's terms included (LFQ's entropy and commitment). An EMA codebook
    is updated by the training-mode call, after computing its terms: the eval-mode call comes
    first, so both see the same codebook."""
    spec = flowmo.flowmo_tiny().replace(**quantizer)
    model = flowmo.build(spec)
    x = images(2, 32)
    out = {mode: model.train(mode).loss(x, generator=torch.Generator().manual_seed(0)) for mode in (False, True)}
    assert set(out[False].terms) == {t.name for t in spec.loss_terms("1a")}
    _same_terms(out[True], out[False])


@pytest.mark.parametrize("objective", [{"name": "mode_seeking", "k": 2}, {"name": "distillation"}],
                         ids=lambda o: o["name"])
def test_the_posttrain_loss_terms_do_not_depend_on_the_mode(objective):
    spec = flowmo.flowmo_tiny().replace(posttrain=objective)
    model = flowmo.build(spec)
    if model.posttrain_objective.needs_teacher:
        model.set_teacher()
    x = images(2, 32)
    out = {mode: model.train(mode).posttrain_loss(x, generator=torch.Generator().manual_seed(0))
           for mode in (True, False)}
    assert set(out[False].terms) == {t.name for t in spec.loss_terms("1b")}
    _same_terms(out[True], out[False])


def test_a_loaded_model_trains_with_the_quantizer_terms(tmp_path):
    spec = flowmo.flowmo_tiny()
    flowmo.build(spec).save_pretrained(tmp_path / "m")
    model = FlowMo.from_pretrained(tmp_path / "m")
    assert not model.training  # what from_pretrained returns
    out = model.loss(images(2, 32), generator=torch.Generator().manual_seed(0))
    assert {"quantizer/entropy", "quantizer/commitment"} <= set(out.terms)
    out.total.backward()
    assert model.encoder.double_blocks[0].img_attn.qkv.weight.grad is not None


def test_tokenize_and_reconstruct_skip_the_quantizer_loss_terms(monkeypatch):
    """Inference reads only the codewords: LFQ's entropy (tokens x groups x 2^G scores) is not
    computed by tokenize or reconstruct, and their tokens are the loss path's."""
    from flowmo.quantizers import binary

    model = flowmo.build(flowmo.flowmo_tiny()).eval()
    x = images(2, 32)
    with_losses = model.quantize(model.encode(x))
    calls = []
    monkeypatch.setattr(binary, "lfq_entropy_terms", lambda *a: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    assert torch.equal(model.tokenize(x), with_losses.indices)
    assert torch.equal(model.quantize(model.encode(x), losses=False).values, with_losses.values)
    model.reconstruct(x, sampler={"steps": 1}, generator=torch.Generator().manual_seed(0))
    assert calls == []


def test_posttrain_loss_leaves_encoder_frozen():
    model = flowmo.build(flowmo.flowmo_tiny().replace(posttrain={"name": "mode_seeking", "k": 2}))
    model.train()
    out = model.posttrain_loss(images(2, 32), generator=torch.Generator().manual_seed(0))
    assert {"diffusion", "mode_seeking"} <= set(out.terms)
    out.total.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.decoder.img_in.weight.grad is not None and torch.isfinite(model.decoder.img_in.weight.grad).all()


def test_generator_controls_every_draw(tiny):
    x = images(2, 32)
    a = tiny.reconstruct(x, generator=torch.Generator().manual_seed(1))
    b = tiny.reconstruct(x, generator=torch.Generator().manual_seed(1))
    c = tiny.reconstruct(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    tiny.train()
    try:
        l1 = tiny.loss(x, generator=torch.Generator().manual_seed(3)).total
        l2 = tiny.loss(x, generator=torch.Generator().manual_seed(3)).total
    finally:
        tiny.eval()
    assert torch.equal(l1, l2)


def test_guidance_scale_one_equals_no_guidance(tiny):
    x = images(2, 32)
    code = tiny.quantize(tiny.encode(x)).values
    z = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tiny.velocity(z, 0.3, code, guidance_scale=1.0), tiny.velocity(z, 0.3, code))
        guided = tiny.velocity(z, 0.3, code, guidance_scale=2.0)
        v_c, v_u = tiny.velocity(z, 0.3, code), tiny.velocity(z, 0.3, None)
    assert torch.allclose(guided, v_u + 2.0 * (v_c - v_u), atol=1e-6)
    noise = torch.randn(2, 3, 32, 32)
    no_guidance = tiny.decode(code, noise=noise, sampler={"guidance": {"scale": 1.0}})
    empty_interval = tiny.decode(code, noise=noise, sampler={"guidance": {"scale": 1.0, "interval": None}})
    assert torch.equal(no_guidance.images, empty_interval.images)
    assert no_guidance.decoder_calls == SamplerSpec().steps


def test_release_sampler_makes_31_decoder_calls(tiny):
    code = tiny.quantize(tiny.encode(images(1, 32))).values
    out = tiny.decode(code, generator=torch.Generator().manual_seed(0))
    assert out.decoder_calls == 31


def test_rope_tables_built_once_per_shape_and_device(tiny):
    model = flowmo.build(flowmo.flowmo_tiny()).eval()
    x = images(2, 32)
    model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    model.reconstruct(images(3, 32), generator=torch.Generator().manual_seed(0))
    # 31 decoder calls x 2 blocks, two batch sizes: one table per backbone
    assert model.decoder.rope.builds == 1 and model.encoder.rope.builds == 1


def test_bfloat16_matches_float32(tiny):
    x = images(2, 32)
    model16 = flowmo.build(flowmo.flowmo_tiny()).eval()
    model16.load_state_dict(tiny.state_dict())
    model16.to(torch.bfloat16)
    with torch.no_grad():
        c32 = tiny.encode(x)
        c16 = model16.encode(x)  # float32 input is cast to the model's dtype
        assert c16.dtype == torch.bfloat16
        assert (c16.float() - c32).abs().max() < 0.1 * c32.abs().max()
        noise = torch.randn(2, 3, 32, 32)
        v32 = tiny.velocity(noise, 0.5, tiny.quantize(c32).values)
        v16 = model16.velocity(noise.bfloat16(), 0.5, tiny.quantize(c32).values)
        assert (v16.float() - v32).abs().max() < 0.1 * v32.abs().max()


@pytest.mark.parametrize(
    "bad, exc, words",
    [
        (torch.zeros(3, 32, 32), ValueError, ["images", "shape"]),
        (torch.zeros(1, 1, 32, 32), ValueError, ["images", "(batch, 3, 32, 32)"]),
        (torch.zeros(1, 3, 16, 16), ValueError, ["images", "(batch, 3, 32, 32)"]),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, ["images", "floating-point"]),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, ["images", "NaN"]),
        (torch.full((1, 3, 32, 32), 255.0), ValueError, ["images", "[-1, 1]"]),
        (torch.zeros(0, 3, 32, 32), ValueError, ["images", "empty"]),
        ([[0.0]], TypeError, ["images", "Tensor"]),
    ],
)
def test_bad_images_are_named(tiny, bad, exc, words):
    for fn in (tiny.encode, tiny.tokenize, tiny.reconstruct, tiny.loss):
        with pytest.raises(exc) as e:
            fn(bad)
        for w in words:
            assert w in str(e.value)


@pytest.mark.parametrize(
    "bad, exc, words",
    [
        (torch.zeros(2, 15, dtype=torch.long), ValueError, ["tokens", "(batch, 16)"]),
        (torch.zeros(2, 16, 1, dtype=torch.long), ValueError, ["tokens", "(batch, 16)"]),
        (torch.zeros(2, 16), TypeError, ["tokens", "integer"]),
        (torch.full((2, 16), 2**18, dtype=torch.long), ValueError, ["indices", "[0, 262144)"]),
        (torch.full((2, 16), -1, dtype=torch.long), ValueError, ["indices", "[0, 262144)"]),
    ],
)
def test_bad_tokens_are_named(tiny, bad, exc, words):
    with pytest.raises(exc) as e:
        tiny.detokenize(bad)
    for w in words:
        assert w in str(e.value)


def test_bad_code_and_noise(tiny):
    with pytest.raises(ValueError, match=r"code must have shape \(batch, 16, 18\)"):
        tiny.decode(torch.zeros(1, 16, 17))
    with pytest.raises(ValueError, match="code contains NaN"):
        tiny.decode(torch.full((1, 16, 18), float("nan")))
    with pytest.raises(ValueError, match="noise must have shape"):
        tiny.decode(torch.zeros(1, 16, 18), noise=torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="sampler"):
        tiny.decode(torch.zeros(1, 16, 18), sampler=3)


def test_from_pretrained_errors(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FlowMo.from_pretrained(tmp_path / "nothing")
    d = tiny.save_pretrained(tmp_path / "m")
    (d / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="safetensors"):
        FlowMo.from_pretrained(d)
    tiny.save_pretrained(d)
    (d / "config.json").write_text('{"image_size": 32, "bogus": 1}')
    with pytest.raises(ValueError, match="not a valid FlowMo spec"):
        FlowMo.from_pretrained(d)
    # a spec that does not match the weights
    (d / "config.json").write_text(flowmo.flowmo_tiny().replace(code_channels=9, quantizer={"name": "lfq", "group_bits": 9}).to_json())
    with pytest.raises(flowmo.StateDictMismatchError, match="txt_in"):
        FlowMo.from_pretrained(d)
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        FlowMo.from_pretrained(d)


def test_from_pretrained_device_and_dtype(tmp_path, tiny):
    d = tiny.save_pretrained(tmp_path / "m")
    m = FlowMo.from_pretrained(d, device="cpu", dtype=torch.bfloat16)
    assert m.dtype == torch.bfloat16 and m.device.type == "cpu"
