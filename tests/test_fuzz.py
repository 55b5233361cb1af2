"""Property-based fuzzing of every public tensor entry point with bad input.

Inputs are drawn over shapes (ranks 0-5, sizes 0-40, empty batches), dtypes (float16,
bfloat16, float32, float64, integers, bool, complex), devices (cpu, meta, and cuda when
present) and values (NaN, +-Inf, huge, pixels outside [-1, 1], negative and too-large
tokens), plus non-tensors (None, lists, numpy arrays, numbers, strings). About half of the
draws have the valid shape so that the value checks are reached.

The property, for every call: it returns a valid result (the documented shape and dtype,
finite values) or raises ValueError / TypeError whose message names the offending argument.
Any other exception type, or a non-finite result, fails the test.

The number of examples per entry point and how each ended (ok / ValueError / TypeError) are
counted in ``COUNTS``; they are printed at the end of the module (``pytest -s``) and, when
``FLOWMO_FUZZ_REPORT`` names a file, merged into it as JSON (docs/reliability.md quotes them).
Draws are derandomized so the counts are reproducible; set ``FLOWMO_FUZZ_RANDOM=1`` for fresh
random draws and ``FLOWMO_FUZZ_SCALE=10`` for ten times the examples.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import flowmo
from flowmo import FlowMoSpec, SamplerSpec
from flowmo.metrics.pixel import psnr, ssim
from flowmo.model import LossOutput
from flowmo.quantizers import FSQ
from flowmo.samplers import sample
from flowmo.samplers.sampler import SampleOutput
from flowmo.spec import FSQSpec

SCALE = float(os.environ.get("FLOWMO_FUZZ_SCALE", "1"))
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=os.environ.get("FLOWMO_FUZZ_RANDOM") != "1", database=None)


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


# ------------------------------------------------------------------ bookkeeping
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def _names_in(msg: str, names) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", msg, re.IGNORECASE) for n in names)


def check(entry: str, fn, names, validate):
    """Call ``fn``; a result must pass ``validate``, an error must be ValueError/TypeError naming one of ``names``."""
    try:
        out = fn()
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert _names_in(msg, names), f"{entry}: {type(e).__name__} does not name any of {sorted(names)}: {msg}"
        kind = "ValidationError" if isinstance(e, ValidationError) else type(e).__name__
        COUNTS[entry][kind] += 1
        return None
    validate(out)
    COUNTS[entry]["ok"] += 1
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is several times faster than two on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if not COUNTS:
        return
    rows = {k: dict(v) for k, v in sorted(COUNTS.items())}
    width = max(map(len, rows))
    print("\nfuzz examples per entry point (ok / ValueError / TypeError / ValidationError):")
    for k, v in rows.items():
        total = sum(v.values())
        print(f"  {k:<{width}} {total:5d}  ok {v.get('ok', 0):4d}  ValueError {v.get('ValueError', 0):4d}  "
              f"TypeError {v.get('TypeError', 0):4d}  ValidationError {v.get('ValidationError', 0):4d}")
    path = os.environ.get("FLOWMO_FUZZ_REPORT")
    if path:
        p = Path(path)
        old = json.loads(p.read_text()) if p.is_file() and p.read_text().strip() else {}
        for k, v in rows.items():
            merged = collections.Counter(old.get(k, {}))
            merged.update(v)
            old[k] = dict(merged)
        p.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")


def assert_exercised(*entries, errors=True):
    """Each entry point saw valid results and (with ``errors``) refusals."""
    for e in entries:
        c = COUNTS[e]
        assert c["ok"] > 0, f"{e}: no valid input was drawn ({dict(c)})"
        if errors:
            assert sum(v for k, v in c.items() if k != "ok") > 0, f"{e}: no bad input was drawn ({dict(c)})"


# ------------------------------------------------------------------ the model under test
SPEC = flowmo.flowmo_tiny()
S, T, C = SPEC.image_size, SPEC.code_length, SPEC.code_channels


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return flowmo.build(SPEC).eval()


FSQ_Q = FSQ(FSQSpec(levels=(8, 5, 5, 3)), channels=4)

# ------------------------------------------------------------------ strategies
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
INTS = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
ODD = [torch.bool, torch.complex64, torch.uint16, torch.uint32, torch.uint64]
SPECIALS = [math.nan, math.inf, -math.inf, 1e30, -1e30, 1.0001, -1.0001, 1.04, 1.2, -3.0, 7e4, 0.0]
DEVICES = ["cpu"] * 6 + ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
MAX_NUMEL = 40_000


def _prod(shape) -> int:
    return math.prod(shape) if shape else 1


@st.composite
def shapes(draw, valid, batch_max=3):
    """The valid shape (``valid(batch)``, batch 0..batch_max), a near miss, or a random shape."""
    kind = draw(st.sampled_from(["valid"] * 5 + ["near"] * 2 + ["random"] * 3))
    if kind == "random":
        shape = draw(st.lists(st.integers(0, 40), min_size=0, max_size=5))
        while _prod(shape) > MAX_NUMEL:  # keep tensors small: halve the largest size
            i = max(range(len(shape)), key=shape.__getitem__)
            shape[i] //= 2
        return tuple(shape)
    shape = list(valid(draw(st.integers(0, batch_max))))
    if kind == "near" and shape:
        op = draw(st.sampled_from(["grow", "shrink", "zero", "drop", "add"]))
        i = draw(st.integers(0, len(shape) - 1))
        if op == "grow":
            shape[i] += 1
        elif op == "shrink":
            shape[i] = max(shape[i] - 1, 0)
        elif op == "zero":
            shape[i] = 0
        elif op == "drop":
            shape.pop(i)
        else:
            shape.insert(i, draw(st.integers(1, 2)))
    return tuple(shape)


@st.composite
def tensors(draw, valid, *, dtypes=FLOATS, lo=-1.0, hi=1.0, ints=(0, 10), forms=True, batch_max=3,
            specials=True):
    """Tensor-like inputs around ``valid(batch)`` with values mostly in [lo, hi] (floats) or
    ``ints`` (integer dtypes), then bad ones: scaled out of range, specials, other dtypes/devices,
    non-tensors."""
    if draw(st.integers(0, 9)) < 4:  # a clean, valid input: the right shape, dtype, device and range
        shape = valid(draw(st.integers(min(1, batch_max), batch_max)))
        dtype = draw(st.sampled_from(dtypes))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
        if dtype.is_floating_point:
            return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(dtype)
        return torch.randint(ints[0], ints[1], shape, generator=g).to(dtype)
    form = draw(st.sampled_from(["tensor"] * 14 + ["none", "list", "numpy", "number", "str"])) if forms else "tensor"
    if form == "none":
        return None
    if form == "number":
        return draw(st.sampled_from([0, 1.5, math.nan, True, -7]))
    if form == "str":
        return "an image"
    shape = draw(shapes(valid, batch_max))
    dtype = draw(st.sampled_from(dtypes * 4 + FLOATS + INTS + ODD))
    n = _prod(shape)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    if dtype.is_floating_point or dtype.is_complex:
        scale = draw(st.sampled_from([1.0] * 6 + [1.03, 2.0, 1e4, 1e30])) if specials else 1.0
        base = (torch.rand(n, generator=g, dtype=torch.float64) * (hi - lo) + lo) * scale
        if specials and n:
            for _ in range(draw(st.sampled_from([0, 0, 0, 1, 3]))):
                base[draw(st.integers(0, n - 1))] = draw(st.sampled_from(SPECIALS))
        x = base.reshape(shape).to(dtype)
    elif dtype == torch.bool:
        x = torch.rand(n, generator=g).reshape(shape) > 0.5
    else:
        info = torch.iinfo(torch.int64 if dtype in (torch.uint64,) else dtype)
        mode = draw(st.sampled_from(["in"] * 4 + ["negative", "high", "extreme"])) if specials else "in"
        a, b = ints
        if mode == "negative":
            a, b = -(2**40), 0
        elif mode == "high":
            a, b = ints[1], ints[1] + 100
        elif mode == "extreme":
            a, b = info.min, info.max
        a, b = max(a, info.min), min(b, info.max)
        b = max(b, a + 1)
        x = torch.randint(a, b, (n,), generator=g, dtype=torch.int64).clamp(info.min, info.max)
        if dtype in (torch.uint16, torch.uint32, torch.uint64):
            x = x.clamp_min(0)
        x = x.to(dtype).reshape(shape)
    if form in ("list", "numpy") and x.is_complex():
        x = x.real
    if form == "list":
        return x.float().tolist() if x.dtype == torch.bfloat16 else x.tolist()
    if form == "numpy":
        return x.float().numpy() if x.dtype in (torch.bfloat16, torch.uint16, torch.uint32, torch.uint64) else x.numpy()
    device = draw(st.sampled_from(DEVICES))
    return x.to(device)


def image_shape(b):
    return (b, 3, S, S)


def token_shape(b):
    return (b, T)


def code_shape(b):
    return (b, T, C)


samplers = st.one_of(
    st.builds(lambda s: {"steps": s}, st.sampled_from([1, 2])),
    st.builds(lambda s, c: {"steps": s, "clip": c}, st.sampled_from([1, 2]), st.booleans()),
    st.sampled_from([
        {"steps": 0}, {"steps": -3}, {"steps": 1.5}, {"steps": "two"}, {"steps": None}, {"bogus": 1},
        {"steps": 2, "guidance": {"scale": math.nan, "interval": None}},
        {"steps": 2, "guidance": {"scale": 1e38, "interval": None}},
        {"steps": 2, "guidance": {"scale": 3.0, "interval": [0.9, 0.1]}},
        {"steps": 1, "solver": {"name": "heun"}}, {"steps": 1, "solver": {"name": "no_such_solver"}},
        {"steps": 2, "grid": {"name": "pow", "p": -1}},
        "euler", 3, [1, 2],
    ]),
    st.just(SamplerSpec(steps=1)),
)


def finite_tensor(shape, *, dtype=None, bounded=False):
    def validate(x):
        assert isinstance(x, torch.Tensor), type(x)
        assert tuple(x.shape) == tuple(shape), (tuple(x.shape), shape)
        if dtype is not None:
            assert x.dtype == dtype, x.dtype
        assert x.is_floating_point() and bool(torch.isfinite(x).all()), "non-finite result"
        if bounded:
            assert float(x.abs().max()) <= 1.0 if x.numel() else True
    return validate


def index_tensor(shape, size):
    def validate(x):
        assert isinstance(x, torch.Tensor) and x.dtype == torch.int64 and tuple(x.shape) == tuple(shape)
        if x.numel():
            assert 0 <= int(x.min()) and int(x.max()) < size
    return validate


def _batch(x):
    return x.shape[0] if isinstance(x, torch.Tensor) and x.ndim else 0


# ------------------------------------------------------------------ images in
@given(x=tensors(image_shape, batch_max=2), groups=st.booleans(), sampler=samplers, seed=st.integers(0, 2**16))
@settings(max_examples=examples(150), **SETTINGS)
def _fuzz_images(model, x, groups, sampler, seed):
    b = _batch(x)
    check("FlowMo.encode", lambda: model.encode(x), {"images"}, finite_tensor((b, T, C)))
    shape = (b, T, model.quantizer.groups) if groups else (b, T)
    size = model.quantizer.group_codebook_size if groups else model.quantizer.codebook_size
    check("FlowMo.tokenize", lambda: model.tokenize(x, groups=groups), {"images"}, index_tensor(shape, size))
    bounded = not (isinstance(sampler, dict) and sampler.get("clip") is False)
    check("FlowMo.reconstruct",
          lambda: model.reconstruct(x, sampler=sampler, generator=torch.Generator().manual_seed(seed)),
          {"images", "sampler", "SamplerSpec"}, finite_tensor((b, 3, S, S), bounded=bounded))


def test_fuzz_encode_tokenize_reconstruct(model):
    _fuzz_images(model)
    assert_exercised("FlowMo.encode", "FlowMo.tokenize", "FlowMo.reconstruct")


@st.composite
def loss_inputs(draw):
    x = draw(tensors(image_shape, batch_max=2))
    b = _batch(x) or 1
    t = draw(st.one_of(st.none(), tensors(lambda _: (b,), lo=0.0, hi=1.0, batch_max=0)))
    noise = draw(st.one_of(st.none(), tensors(lambda _: (b, 3, S, S), lo=-3.0, hi=3.0, batch_max=0)))
    return x, t, noise


@given(inputs=loss_inputs(), seed=st.integers(0, 2**16))
@settings(max_examples=examples(150), **SETTINGS)
def _fuzz_loss(model, inputs, seed):
    x, t, noise = inputs

    def validate(out):
        assert isinstance(out, LossOutput) and out.total.shape == ()
        assert bool(torch.isfinite(out.total)) and all(bool(torch.isfinite(v)) for v in out.terms.values())

    check("FlowMo.loss", lambda: model.loss(x, t=t, noise=noise, generator=torch.Generator().manual_seed(seed)),
          {"images", "t", "noise"}, validate)


def test_fuzz_loss(model):
    _fuzz_loss(model)
    assert_exercised("FlowMo.loss")


# ------------------------------------------------------------------ tokens in
@given(tok=tensors(token_shape, dtypes=INTS, ints=(0, 2**C)), sampler=samplers, seed=st.integers(0, 2**16))
@settings(max_examples=examples(150), **SETTINGS)
def _fuzz_tokens(model, tok, sampler, seed):
    b = _batch(tok)

    def is_code(x):
        finite_tensor((b, T, C), dtype=model.dtype)(x)
        assert bool((x.abs() == 1).all())

    check("FlowMo.tokens_to_code", lambda: model.tokens_to_code(tok), {"tokens"}, is_code)
    bounded = not (isinstance(sampler, dict) and sampler.get("clip") is False)
    check("FlowMo.detokenize",
          lambda: model.detokenize(tok, sampler=sampler, generator=torch.Generator().manual_seed(seed)),
          {"tokens", "sampler", "SamplerSpec"}, finite_tensor((b, 3, S, S), bounded=bounded))


def test_fuzz_tokens_to_code_and_detokenize(model):
    _fuzz_tokens(model)
    assert_exercised("FlowMo.tokens_to_code", "FlowMo.detokenize")


# ------------------------------------------------------------------ codes in
@st.composite
def decode_inputs(draw):
    code = draw(tensors(code_shape, batch_max=2))
    b = _batch(code) or 1
    noise = draw(st.one_of(st.none(), tensors(lambda _: (b, 3, S, S), lo=-3.0, hi=3.0, batch_max=0)))
    return code, noise


@given(inputs=decode_inputs(), sampler=samplers, seed=st.integers(0, 2**16))
@settings(max_examples=examples(150), **SETTINGS)
def _fuzz_decode(model, inputs, sampler, seed):
    code, noise = inputs
    b = _batch(code)
    bounded = not (isinstance(sampler, dict) and sampler.get("clip") is False)
    image_ok = finite_tensor((b, 3, S, S), bounded=bounded)

    def validate(out):
        assert isinstance(out, SampleOutput) and out.decoder_calls >= 1
        image_ok(out.images)

    check("FlowMo.decode",
          lambda: model.decode(code, noise=noise, sampler=sampler, generator=torch.Generator().manual_seed(seed)),
          {"code", "noise", "sampler", "SamplerSpec"}, validate)


def test_fuzz_decode(model):
    _fuzz_decode(model)
    assert_exercised("FlowMo.decode")


@st.composite
def velocity_inputs(draw):
    x = draw(tensors(image_shape, lo=-3.0, hi=3.0, batch_max=2))
    b = _batch(x) or 1
    t = draw(st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(0.0, 1.0),
        st.integers(-2, 2),
        tensors(lambda _: (b,), lo=0.0, hi=1.0, batch_max=0),
        tensors(lambda _: (), lo=0.0, hi=1.0, batch_max=0),
    ))
    code = draw(st.one_of(st.none(), tensors(lambda _: (b, T, C), batch_max=0)))
    scale = draw(st.one_of(st.sampled_from([1.0, 1.5, 0, 3]), st.floats(allow_nan=True, allow_infinity=True),
                           st.sampled_from([None, "2", True, torch.tensor(2.0)])))
    return x, t, code, scale


@given(inputs=velocity_inputs())
@example(inputs=(torch.zeros(1, 3, S, S), torch.tensor(0.5, device="meta"), None, 1.0))  # found by fuzzing
@settings(max_examples=examples(200), **SETTINGS)
def _fuzz_velocity(model, inputs):
    x, t, code, scale = inputs
    b = _batch(x)
    check("FlowMo.velocity", lambda: model.velocity(x, t, code, guidance_scale=scale),
          {"x_t", "t", "code", "guidance_scale"}, finite_tensor((b, 3, S, S)))


def test_fuzz_velocity(model):
    _fuzz_velocity(model)
    assert_exercised("FlowMo.velocity")


# ------------------------------------------------------------------ quantizer conversions
def _any_lead(c):
    """Valid shapes (..., c) with a random number of leading dims."""
    return lambda b: (b, 3, c) if b % 2 else (b, c)


@given(codes=tensors(_any_lead(C), lo=-2.0, hi=2.0), idx=tensors(lambda b: (b, 5), dtypes=INTS, ints=(0, 2**C)),
       gidx=tensors(lambda b: (b, 4, 2), dtypes=INTS, ints=(0, 512)),
       fcodes=tensors(_any_lead(4), lo=-1.0, hi=1.0), fidx=tensors(lambda b: (b, 7), dtypes=INTS, ints=(0, 600)))
@settings(max_examples=examples(300), **SETTINGS)
def _fuzz_quantizers(model, codes, idx, gidx, fcodes, fidx):
    lfq = model.quantizer
    lead = lambda x, k=1: tuple(x.shape[:-k]) if isinstance(x, torch.Tensor) and x.ndim >= k else ()
    shp = lambda x: tuple(x.shape) if isinstance(x, torch.Tensor) else ()
    names = {"codes", "indices", "group_indices"}
    check("LFQ.codes_to_indices", lambda: lfq.codes_to_indices(codes), names, index_tensor(lead(codes), 2**C))
    check("LFQ.codes_to_group_indices", lambda: lfq.codes_to_group_indices(codes), names,
          index_tensor(lead(codes) + (lfq.groups,), lfq.group_codebook_size))

    def is_codes(shape, c):
        def validate(x):
            finite_tensor(shape + (c,))(x)
            assert bool((x.abs() <= 1).all())
        return validate

    check("LFQ.indices_to_codes", lambda: lfq.indices_to_codes(idx), names, is_codes(shp(idx), C))
    check("LFQ.group_indices_to_codes", lambda: lfq.group_indices_to_codes(gidx), names, is_codes(lead(gidx), C))
    check("FSQ.codes_to_indices", lambda: FSQ_Q.codes_to_indices(fcodes), names,
          index_tensor(lead(fcodes), FSQ_Q.codebook_size))
    check("FSQ.indices_to_codes", lambda: FSQ_Q.indices_to_codes(fidx), names, is_codes(shp(fidx), 4))


def test_fuzz_quantizer_conversions(model):
    _fuzz_quantizers(model)
    assert_exercised("LFQ.codes_to_indices", "LFQ.codes_to_group_indices", "LFQ.indices_to_codes",
                     "LFQ.group_indices_to_codes", "FSQ.codes_to_indices", "FSQ.indices_to_codes")


# ------------------------------------------------------------------ metrics
@st.composite
def metric_pairs(draw):
    size = draw(st.sampled_from([11, 16, 23, 40, 4]))
    chans = draw(st.sampled_from([3, 1]))
    valid = lambda b: (b, chans, size, size)
    a = draw(tensors(valid, lo=-1.2, hi=1.2))
    if draw(st.integers(0, 3)) and isinstance(a, torch.Tensor) and a.device.type != "meta" and a.is_floating_point():
        b = (a.float() + 0.1 * torch.randn(a.shape)).to(a.dtype)  # same shape, close values
        if draw(st.booleans()) and b.numel():
            b.view(-1)[0] = draw(st.sampled_from(SPECIALS))
    else:
        b = draw(tensors(valid, lo=-1.2, hi=1.2))
    return a, b


@given(pair=metric_pairs())
@settings(max_examples=examples(300), **SETTINGS)
def _fuzz_metrics(pair):
    a, b = pair
    n = _batch(a)

    def per_image(kind):
        def validate(x):
            assert isinstance(x, torch.Tensor) and x.dtype == torch.float64 and tuple(x.shape) == (n,)
            assert not bool(torch.isnan(x).any()), "NaN metric"
            if kind == "psnr":  # +inf only for identical quantised images
                assert bool((torch.isfinite(x) | (x == math.inf)).all())
            else:
                assert bool(torch.isfinite(x).all()) and bool((x.abs() <= 1 + 1e-9).all())
        return validate

    names = {"originals", "reconstructions"}
    check("metrics.psnr", lambda: psnr(a, b), names, per_image("psnr"))
    check("metrics.ssim", lambda: ssim(a, b), names, per_image("ssim"))


def test_fuzz_psnr_ssim():
    _fuzz_metrics()
    assert_exercised("metrics.psnr", "metrics.ssim")


# ------------------------------------------------------------------ the functional sampler
def toy_decoder(z, t, cond):
    """An elementwise velocity that uses every input: any shape and floating dtype works."""
    view = (-1,) + (1,) * (z.ndim - 1)
    c = cond.reshape(cond.shape[0], -1).float().mean(1) if cond[0].numel() else cond.new_zeros(cond.shape[0]).float()
    return (z - 0.5 * c.view(view).to(z.dtype)) * t.view(view).to(z.dtype)


@st.composite
def sample_inputs(draw):
    noise = draw(tensors(lambda b: (b, 3, 8, 8), lo=-3.0, hi=3.0))
    b = _batch(noise) or 1
    cond = draw(tensors(lambda _: (b, 4, 5), lo=-1.0, hi=1.0, batch_max=0))
    null = draw(st.one_of(st.none(), tensors(lambda _: (b, 4, 5), batch_max=0)))
    return noise, cond, null


@given(inputs=sample_inputs(), spec=samplers)
@settings(max_examples=examples(300), **SETTINGS)
def _fuzz_sample(inputs, spec):
    noise, cond, null = inputs
    bounded = not (isinstance(spec, dict) and spec.get("clip") is False)

    def validate(out):
        assert isinstance(out, SampleOutput)
        finite_tensor(tuple(noise.shape), bounded=bounded)(out.images)

    check("samplers.sample", lambda: sample(toy_decoder, noise, cond, spec, null_cond=null),
          {"noise", "cond", "null_cond", "spec", "SamplerSpec", "decoder"}, validate)


def test_fuzz_sample():
    _fuzz_sample()
    assert_exercised("samplers.sample")


# ------------------------------------------------------------------ specs
VALID = flowmo.flowmo_tiny().model_dump(mode="json")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


PATHS = list(_paths(VALID))


@st.composite
def spec_inputs(draw):
    """(input, names its error may mention): a mutated valid spec or a random JSON value."""
    if draw(st.integers(0, 3)) == 0:
        keys = st.sampled_from(sorted(VALID)) | st.text(max_size=6)
        return draw(json_values | st.dictionaries(keys, json_values, max_size=6)), None
    d = json.loads(json.dumps(VALID))
    path = draw(st.sampled_from(PATHS))
    node = d
    for k in path[:-1]:
        node = node[k]
    op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "unknown"]))
    if op == "replace":
        node[path[-1]] = draw(json_values | st.sampled_from([0, -1, 3, 1e308, math.inf, math.nan, "", [], {}]))
    elif op == "delete":
        del node[path[-1]]
    else:
        node["unknown_field"] = 1
        path = path[:-1] + ("unknown_field",)
    return d, path


@given(inputs=spec_inputs())
@example(inputs=({**VALID, "encoder": {**VALID["encoder"], "mlp_ratio": math.inf}}, ("encoder", "mlp_ratio")))  # found
@settings(max_examples=examples(500), **SETTINGS)
def _fuzz_spec(inputs):
    data, path = inputs
    names = {"FlowMoSpec"} | ({str(p) for p in path} if path else set())

    def validate(spec):
        assert isinstance(spec, FlowMoSpec)
        assert FlowMoSpec.from_json(spec.to_json()) == spec

    # a deleted field with a default, or a replacement that is valid, gives a valid spec
    check("FlowMoSpec.model_validate", lambda: FlowMoSpec.model_validate(data), names, validate)


def test_fuzz_spec_validation():
    _fuzz_spec()
    assert_exercised("FlowMoSpec.model_validate")


def test_numpy_and_list_inputs_name_the_argument(model):
    """Two fixed cases that the property also draws: clear TypeErrors for non-tensors."""
    x = np.zeros((1, 3, S, S), dtype=np.float32)
    with pytest.raises(TypeError, match="images must be a torch.Tensor, got ndarray"):
        model.encode(x)
    with pytest.raises(TypeError, match="tokens must be an int64 torch.Tensor"):
        model.detokenize([[0] * T])
