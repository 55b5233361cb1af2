"""Bad input to sampling, decoding, Stage 1B and the distances: clear TypeError / ValueError
naming the argument, never a deep torch error or a silent NaN; mixed dtypes that have one
meaning (float64 conditioning for a bfloat16 decoder) just work.
"""

from __future__ import annotations

import pytest
import torch

import flowmo
from flowmo.losses.posttrain import ModeSeeking, PosttrainObjective, random_chain_times
from flowmo.nets.distances import ResNet50LogitsDistance, ResNet50LogitsSpec, SSIMDistance
from flowmo.samplers import sample
from flowmo.spec import ModeSeekingSpec, SamplerSpec

SPEC = SamplerSpec(steps=2)  # guided (release interval covers t = 0.5 ... ) and unguided steps


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    m32 = flowmo.build(flowmo.flowmo_tiny()).eval()
    m16 = flowmo.build(flowmo.flowmo_tiny()).eval()
    m16.load_state_dict(m32.state_dict())
    return m32, m16.to(torch.bfloat16)


def _code(m, b=1, dtype=None):
    g = torch.Generator().manual_seed(1)
    c = torch.randint(0, 2, (b, m.spec.code_length, m.spec.code_channels), generator=g).float() * 2 - 1
    return c.to(dtype or m.dtype)


def _noise(b=1, dtype=torch.float32):
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(dtype)


# ------------------------------------------------------------------ sample(): dtypes of cond / null_cond
def test_bf16_decoder_with_default_decoder_dtype_and_float32_noise(models):
    """The tester's case: the decoder's own dtype is used (not noise's float32)."""
    _, m16 = models
    cond = m16.conditioning(_code(m16))
    out = sample(m16.decoder_velocity, _noise(), cond, SPEC)
    ref = sample(m16.decoder_velocity, _noise(), cond, SPEC, decoder_dtype=torch.bfloat16)
    assert out.images.dtype == torch.float32 and torch.equal(out.images, ref.images)


@pytest.mark.parametrize("cond_dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("null_dtype", [None, torch.float64, torch.bfloat16])
def test_cond_and_null_cond_of_any_float_dtype_are_cast_to_the_decoder_dtype(models, cond_dtype, null_dtype):
    m32, _ = models
    cond = m32.conditioning(_code(m32))
    guided = SamplerSpec(steps=2, guidance={"scale": 1.5, "interval": None})
    ref = sample(m32.decoder_velocity, _noise(), cond, guided, null_cond=torch.zeros_like(cond))
    null = None if null_dtype is None else torch.zeros_like(cond, dtype=null_dtype)
    out = sample(m32.decoder_velocity, _noise(), cond.to(cond_dtype), guided, null_cond=null)
    # the code is +-1 and ones: exact in every dtype, so the results are identical
    assert torch.equal(out.images, ref.images)


def test_cond_seen_by_the_decoder_is_in_decoder_dtype():
    seen = []

    def dec(x, t, c):
        seen.append((x.dtype, c.dtype))
        return torch.zeros_like(x)

    sample(dec, _noise(), torch.ones(1, 2, 3, dtype=torch.float64), SamplerSpec(steps=2, guidance={"scale": 2.0}),
           null_cond=torch.zeros(1, 2, 3, dtype=torch.float16), decoder_dtype=torch.bfloat16)
    assert set(seen) == {(torch.bfloat16, torch.bfloat16)}


@pytest.mark.parametrize("dd", [torch.float32, torch.float64])
def test_explicit_decoder_dtype_not_the_modules_is_refused(models, dd):
    _, m16 = models
    cond = m16.conditioning(_code(m16))
    with pytest.raises(ValueError, match="decoder_dtype.*bfloat16"):
        sample(m16.decoder_velocity, _noise(), cond, SPEC, decoder_dtype=dd)


@pytest.mark.parametrize("name", ["cond", "null_cond"])
def test_cond_overflowing_the_decoder_dtype_names_it(name):
    big = torch.full((1, 2, 3), 1e300, dtype=torch.float64)
    kw = {"null_cond": big} if name == "null_cond" else {}
    cond = big if name == "cond" else torch.ones(1, 2, 3)
    with pytest.raises(ValueError, match=f"^{name} has values beyond the range"):
        sample(lambda x, t, c: torch.zeros_like(x), _noise(), cond, SPEC, decoder_dtype=torch.bfloat16, **kw)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64, torch.complex128])
def test_non_real_float_velocity_is_refused(dtype):
    with pytest.raises(TypeError, match="velocity"):
        sample(lambda x, t, c: torch.zeros(x.shape, dtype=dtype), _noise(), torch.ones(1, 2, 3), SPEC)


# ------------------------------------------------------------------ FlowMo.decode
def test_decode_noise_overflowing_the_state_dtype_says_so(models):
    _, m16 = models
    noise = torch.full((1, 3, 32, 32), 1e300, dtype=torch.float64)
    with pytest.raises(ValueError, match="noise has values beyond the range.*float32") as e:
        m16.decode(_code(m16), noise=noise, sampler=SPEC)
    assert "NaN" not in str(e.value)


def test_decode_code_overflowing_the_model_dtype_says_so(models):
    _, m16 = models
    with pytest.raises(ValueError, match="code has values beyond the range.*bfloat16"):
        m16.decode(_code(m16, dtype=torch.float64) * 1e300, sampler=SPEC)


@pytest.mark.parametrize("which", [0, 1])
def test_decode_noise_is_used_in_the_state_dtype(models, which):
    """As documented: float64 noise is rounded to the float32 state (for a float32 or a bfloat16
    model), bfloat16 noise is converted exactly; never to the model's dtype."""
    m = models[which]
    n64 = _noise(dtype=torch.float64) * (1 + 1e-12)  # not representable in float32
    a = m.decode(_code(m), noise=n64, sampler=SPEC)
    b = m.decode(_code(m), noise=n64.float(), sampler=SPEC)
    assert a.images.dtype == torch.float32 and torch.equal(a.images, b.images)
    nb = _noise(dtype=torch.bfloat16)
    assert torch.equal(m.decode(_code(m), noise=nb, sampler=SPEC).images,
                       m.decode(_code(m), noise=nb.float(), sampler=SPEC).images)


def test_decode_docstring_describes_return_and_arguments():
    doc = flowmo.FlowMo.decode.__doc__
    for word in ("SampleOutput", "sampler", "generator", "noise", "return_intermediates", "rounded to float32"):
        assert word in doc, word


# ------------------------------------------------------------------ Stage 1B
@pytest.fixture(scope="module")
def stage1b():
    torch.manual_seed(0)
    return flowmo.build(flowmo.flowmo_tiny().replace(posttrain={"name": "mode_seeking", "k": 2})).eval()


def _images(b=2):
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


BAD_U = [
    (torch.zeros(2, 3), ValueError, r"u\[0, 1:\] is all zero"),
    (torch.tensor([[0.9, 0.0, 0.0]] * 2), ValueError, r"u\[0, 1:\] is all zero"),
    (torch.full((2, 3), float("nan")), ValueError, "u contains NaN"),
    (torch.tensor([[0.5, 1.0, float("inf")]] * 2), ValueError, "u contains NaN or Inf"),
    (torch.tensor([[0.2, -0.5, 0.9]] * 2), ValueError, "u must be non-negative"),
    (torch.ones(2, 3, dtype=torch.int64), TypeError, "u must be a real floating-point"),
    (torch.ones(2, 3, dtype=torch.bool), TypeError, "u must be a real floating-point"),
    (torch.ones(2, 3, dtype=torch.complex64), TypeError, "u must be a real floating-point"),
    (torch.rand(2, 4), ValueError, r"u must have shape \(2, 3\)"),
    (torch.rand(3, 3), ValueError, "u must have"),
    (torch.rand(2, 3, device="meta"), ValueError, "u "),
    ([[0.1, 0.2, 0.3]] * 2, TypeError, "u must be a torch.Tensor"),
]


@pytest.mark.parametrize("u,exc,msg", BAD_U)
def test_posttrain_loss_refuses_bad_u(stage1b, u, exc, msg):
    with pytest.raises(exc, match=msg):
        stage1b.posttrain_loss(_images(), u=u)


@pytest.mark.parametrize("u,exc,msg", BAD_U)
def test_mode_seeking_chain_and_call_refuse_bad_u(u, exc, msg):
    ms = ModeSeeking(ModeSeekingSpec(k=2, checkpoint=False))
    v = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(exc, match=msg):
        ms.chain(v, torch.randn(2, 3, 8, 8), torch.ones(2, 4), u)
    with pytest.raises(exc, match=msg):
        ms(v, torch.rand(2, 3, 8, 8) * 2 - 1, torch.ones(2, 4), u=u)


BAD_NOISE = [
    (torch.full((2, 3, 32, 32), float("nan")), ValueError, "noise contains NaN"),
    (torch.randn(2, 3, 16, 16), ValueError, "noise must have"),
    (torch.randn(1, 3, 32, 32), ValueError, "noise must have the shape of images"),
    (torch.randn(2, 3, 32, 32, device="meta"), ValueError, "noise "),
    (torch.zeros(2, 3, 32, 32, dtype=torch.int64), TypeError, "noise must be a floating-point"),
    ([[1.0]], TypeError, "noise must be a floating-point"),
]


@pytest.mark.parametrize("noise,exc,msg", BAD_NOISE)
@pytest.mark.parametrize("train", [False, True])
def test_posttrain_loss_refuses_bad_noise_in_both_modes(stage1b, noise, exc, msg, train):
    stage1b.train(train)
    try:
        with pytest.raises(exc, match=msg):
            stage1b.posttrain_loss(_images(), noise=noise)
        with pytest.raises(exc, match=msg.replace("images", "images")):
            stage1b.loss(_images(), noise=noise)  # Stage 1A: the same rule
    finally:
        stage1b.eval()


@pytest.mark.parametrize("noise,exc,msg", [
    (torch.full((2, 3, 8, 8), float("nan")), ValueError, "noise contains NaN"),
    (torch.randn(2, 3, 4, 4), ValueError, "noise must have the shape of x"),
    (torch.randn(2, 3, 8, 8, device="meta"), ValueError, "noise is a meta tensor"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.int32), TypeError, "noise must be a real floating-point"),
    ([[1.0]], TypeError, "noise must be a real floating-point"),
])
def test_mode_seeking_call_refuses_bad_noise(noise, exc, msg):
    ms = ModeSeeking(ModeSeekingSpec(k=2, checkpoint=False))
    with pytest.raises(exc, match=msg):
        ms(lambda x, t, c: torch.zeros_like(x), torch.rand(2, 3, 8, 8) * 2 - 1, torch.ones(2, 4), noise=noise)


def test_mode_seeking_chain_refuses_bad_noise_and_cond():
    ms = ModeSeeking(ModeSeekingSpec(k=2, checkpoint=False))
    v = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    u = torch.rand(2, 3) + 0.1
    with pytest.raises(ValueError, match="noise contains NaN"):
        ms.chain(v, torch.full((2, 3, 4, 4), float("nan")), torch.ones(2, 4), u)
    with pytest.raises(ValueError, match="noise is a meta tensor"):
        ms.chain(v, torch.zeros(2, 3, 4, 4, device="meta"), torch.ones(2, 4), u)
    with pytest.raises(ValueError, match="cond must have batch 2"):
        ms.chain(v, torch.zeros(2, 3, 4, 4), torch.ones(3, 4), u)
    with pytest.raises(TypeError, match="velocity must return"):
        ms.chain(lambda x, t, c: x.long(), torch.zeros(2, 3, 4, 4), torch.ones(2, 4), u)


def test_chain_times_run_monotonically_from_1_to_0_for_every_valid_u():
    g = torch.Generator().manual_seed(4)
    cases = [torch.rand(5, 9, generator=g, dtype=torch.float64),
             torch.tensor([[1e300, 1.0, 0.0, 2.0]], dtype=torch.float64),  # a huge u[:, 0] cannot swamp
             torch.tensor([[0.0, 1e308, 1e308, 1e308]], dtype=torch.float64),  # no overflowing sum
             torch.tensor([[0.0, 5e-324, 0.0, 0.0]], dtype=torch.float64),  # subnormal steps
             torch.tensor([[0.3, 0.0, 0.7, 0.0]])]
    for u in cases:
        t = random_chain_times(u)
        assert t.dtype == u.dtype and bool(torch.isfinite(t).all())
        assert bool((t[:, 0] == 1).all()) and bool((t[:, -1] == 0).all())
        assert bool((t[:, :-1] >= t[:, 1:]).all())
        assert bool(((t >= 0) & (t <= 1)).all())


def test_chain_times_match_the_release_formula_on_uniform_draws():
    u = torch.rand(6, 9, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    s = torch.cumsum(u, dim=1)
    release = ((s - s[:, :1]) / (s[:, -1:] - s[:, :1])).flip(1)
    torch.testing.assert_close(random_chain_times(u), release, rtol=0, atol=1e-15)


def test_mixed_sign_u_no_longer_runs_the_decoder_outside_0_1(stage1b):
    seen = []
    ms = ModeSeeking(ModeSeekingSpec(k=2, checkpoint=False))

    def v(x, t, c):
        seen.append(t)
        return torch.zeros_like(x)

    with pytest.raises(ValueError, match="non-negative"):
        ms.chain(v, torch.zeros(1, 3, 4, 4), torch.ones(1, 4), torch.tensor([[0.0, -0.3, 1.0]]))
    assert seen == []


class _Colliding(PosttrainObjective):
    """A user's post-training objective whose term is named like the flow loss's."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self, velocity, x, cond, *, noise=None, u=None, generator=None):
        return {"diffusion": x.float().mean() * 0}


def test_posttrain_objective_term_colliding_with_the_flow_loss_is_refused():
    model = flowmo.build(flowmo.flowmo_tiny().replace(posttrain={"name": "mode_seeking", "k": 2})).eval()
    model._posttrain = _Colliding(model.spec.posttrain)  # as a registered objective would be built
    assert model.spec.posttrain.flow_weight > 0
    with pytest.raises(ValueError, match="'diffusion'"):
        model.posttrain_loss(_images())


def test_posttrain_loss_valid_inputs_still_work(stage1b):
    u = torch.rand(2, 3, generator=torch.Generator().manual_seed(6))
    out = stage1b.posttrain_loss(_images(), u=u, noise=torch.randn(2, 3, 32, 32),
                                 generator=torch.Generator().manual_seed(7))
    assert bool(torch.isfinite(out.total)) and "mode_seeking" in out.terms and "diffusion" in out.terms


# ------------------------------------------------------------------ distances
def test_ssim_distance_non_finite_input_is_non_finite_never_finite():
    """Documented: values are not refused (a training loop must see a non-finite loss)."""
    d = SSIMDistance()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = x.clone()
    y[0, 0, 0, 0] = float("nan")
    out = d(x, y)
    assert bool(torch.isnan(out[0])) and bool(torch.isfinite(out[1])) and float(out[1]) == 0.0
    y[0, 0, 0, 0] = float("inf")
    assert not bool(torch.isfinite(d(x, y)[0]))


@pytest.mark.parametrize("bad,exc,msg", [
    (torch.zeros(1, 3, 16, 16, dtype=torch.int64), TypeError, "floating-point"),
    (torch.zeros(1, 3, 16, 16, device="meta"), ValueError, "meta"),
    (torch.zeros(1, 3, 0, 0), ValueError, "no pixels"),
])
def test_distance_pair_check(bad, exc, msg):
    good = torch.zeros(bad.shape)
    with pytest.raises(exc, match=msg):
        SSIMDistance()(good if bad.device.type != "meta" else bad, bad)


@pytest.fixture(scope="module")
def resnet_distance(tmp_path_factory):
    from flowmo.nets.resnet import resnet50

    d = tmp_path_factory.mktemp("w")
    torch.save(resnet50(pretrained=False).state_dict(), d / "resnet50-0676ba61.pth")
    return ResNet50LogitsDistance(ResNet50LogitsSpec(weights_path=str(d)))


def test_resnet_preprocess_empty_and_meta_inputs_name_x(resnet_distance):
    with pytest.raises(ValueError, match="^x must have at least 1x1 pixels"):
        resnet_distance.preprocess(torch.zeros(1, 3, 0, 0))
    with pytest.raises(ValueError, match="^x is a meta tensor"):
        resnet_distance.preprocess(torch.zeros(1, 3, 8, 8, device="meta"))
    with pytest.raises(ValueError, match="meta"):
        resnet_distance(torch.zeros(1, 3, 8, 8, device="meta"), torch.zeros(1, 3, 8, 8, device="meta"))
    assert resnet_distance.preprocess(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 224, 224)
