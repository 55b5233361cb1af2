"""Host-sync budgets of the hot paths, counted on the CPU with flowmo.testing.syncs.count_host_syncs.

Each budget is the number of times one public call may make the host wait for the device
(``.item()``, ``bool(t)``, ``.tolist()``, ...; docs/performance.md, "Host syncs"). A failure
prints ``HostSyncs.report()``: the sites, most frequent first.

Layout: the fixtures first, then one section per path (inference: tokenize / encode, decode
and the paths built on it, velocity). A new path adds its own section and budget.
"""

from __future__ import annotations

import pytest
import torch

import flowmo
from flowmo.devices import ValueChecks
from flowmo.losses import Distillation, ModeSeeking
from flowmo.registry import QUANTIZERS, SOLVERS, TIME_GRIDS
from flowmo.samplers import SAMPLER_PRESETS
from flowmo.spec import DistillationSpec, ModeSeekingSpec
from flowmo.testing.syncs import count_host_syncs

# ============================================================================= fixtures
ONE = 1  # decode, detokenize, reconstruct, tokenize, encode, tokens_to_code, velocity

# a configuration of every built-in time grid and quantizer (a new built-in without one here
# fails test_every_builtin_component_has_an_example instead of going untested)
GRID_EXAMPLES = {
    "linear": {"name": "linear"},
    "pow": {"name": "pow", "p": 0.25},
    "shifted": {"name": "shifted", "shift": 3.0},
    "knots": {"name": "knots", "times": [1.0, 0.6, 0.2, 0.05, 0.0]},
}
QUANTIZER_EXAMPLES = {
    "lfq": {"name": "lfq", "group_bits": 9},
    "fsq": {"name": "fsq", "levels": [2] * 18},
    "kl": {"name": "kl"},
    "identity": {"name": "identity"},
    "bsq": {"name": "bsq", "group_bits": 9},
    "vq": {"name": "vq", "codebook_size": 64, "ema": True, "l2_normalize": True, "dead_code_threshold": 1.0},
}
BUILTIN_SOLVERS = [e.name for e in SOLVERS.entries() if e.builtin]
BUILTIN_GRIDS = [e.name for e in TIME_GRIDS.entries() if e.builtin]
BUILTIN_QUANTIZERS = [e.name for e in QUANTIZERS.entries() if e.builtin]
# the few-step decoders' presets, as the post-training objectives record them in the model
FEW_STEP_PRESETS = dict([
    Distillation(DistillationSpec(k=2, teacher={"steps": 6})).sampler_preset(),
    ModeSeeking(ModeSeekingSpec(k=3, grid={"name": "pow", "p": 0.5}, weight=1.0)).sampler_preset(),
])


def _model(quantizer: str = "lfq", dtype: torch.dtype = torch.float32) -> flowmo.FlowMo:
    spec = flowmo.get_preset("tiny").replace(quantizer=QUANTIZER_EXAMPLES[quantizer], sampler_presets=FEW_STEP_PRESETS)
    torch.manual_seed(0)
    return flowmo.FlowMo(spec).eval().to(dtype)


@pytest.fixture(scope="module")
def model() -> flowmo.FlowMo:
    return _model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture(scope="module")
def code(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model.quantize(model.encode(images), losses=False).values


def _syncs(fn, *args, **kw):
    """(fn's result, the HostSyncs of the call)."""
    with count_host_syncs() as syncs:
        out = fn(*args, **kw)
    return out, syncs


def _within(budget: int, syncs, what: str) -> None:
    assert syncs.count <= budget, f"{what}: budget {budget}, got {syncs.report()}"


def test_every_builtin_component_has_an_example():
    assert sorted(BUILTIN_GRIDS) == sorted(GRID_EXAMPLES)
    assert sorted(BUILTIN_QUANTIZERS) == sorted(QUANTIZER_EXAMPLES)
    assert BUILTIN_SOLVERS and sorted(FEW_STEP_PRESETS) == ["distillation-2", "mode_seeking-3"]


# ============================================================================= the one read (ValueChecks)
def test_value_checks_read_once_and_raise_the_first_failed_check_in_order():
    made = []

    def error(i):
        return lambda: made.append(i) or ValueError(f"check {i}")

    checks = ValueChecks()
    x = torch.tensor([1.0, float("nan"), 3.0])
    for i, ok in enumerate((torch.isfinite(x[[0, 2]]), x > 0, torch.isfinite(x), x.new_ones(0, dtype=torch.bool))):
        checks.add(ok, error(i))
    with count_host_syncs() as syncs, pytest.raises(ValueError, match="check 1"):
        checks.read()
    assert made == [1] and len(checks) == 0  # only the failed check's message was made
    assert syncs.count == 2, syncs.report()  # the read, and the failure path's which-one read
    checks.add(x[[0, 2]] > 0, error(5))
    with count_host_syncs() as syncs:
        checks.read()
        ValueChecks().read()  # nothing to read: no sync
    assert syncs.count == 1 and made == [1], syncs.report()


# ============================================================================= tokenize / encode
@pytest.mark.parametrize("quantizer", BUILTIN_QUANTIZERS)
def test_tokenize_encode_and_tokens_to_code_make_one_sync(quantizer, images):
    m = _model(quantizer)
    if not m.quantizer.discrete:  # no tokens: encode, and reconstruct (the inference code) instead
        _, syncs = _syncs(m.encode, images)
        _within(ONE, syncs, "encode")
        _, syncs = _syncs(m.reconstruct, images, sampler={"steps": 2})
        _within(ONE, syncs, "reconstruct")
        return
    tokens, syncs = _syncs(m.tokenize, images)
    _within(ONE, syncs, "tokenize")
    _, syncs = _syncs(m.encode, images)
    _within(ONE, syncs, "encode")
    code, syncs = _syncs(m.tokens_to_code, tokens)
    _within(ONE, syncs, "tokens_to_code")
    assert torch.equal(code, m.quantize(m.encode(images), losses=False).values)
    if m.quantizer.has_groups:
        groups, syncs = _syncs(m.tokenize, images, groups=True)
        _within(ONE, syncs, "tokenize(groups=True)")
        assert torch.equal(m.quantizer.group_indices_to_codes(groups), code)


def test_check_images_without_values_reads_nothing_and_with_values_once(model, images):
    out, syncs = _syncs(model._check_images, images.double(), values=False)
    assert syncs.count == 0, syncs.report()
    assert out.dtype == model.dtype and torch.equal(out, images)
    _, syncs = _syncs(model._check_images, images)
    assert syncs.count == 1, syncs.report()
    bad = images.clone()
    bad[0, 0, 0, 0] = 1.5
    model._check_images(bad, values=False)  # no value read: nothing to see
    with pytest.raises(ValueError, match=r"images must lie in \[-1, 1\].*\[-1, 1.5\]"):
        model._check_images(bad)


# ============================================================================= decode (detokenize, reconstruct)
@pytest.mark.parametrize("grid", BUILTIN_GRIDS)
@pytest.mark.parametrize("solver", BUILTIN_SOLVERS)
def test_decode_makes_one_sync_for_every_solver_and_grid(model, code, solver, grid):
    sampler = {"solver": {"name": solver}, "grid": GRID_EXAMPLES[grid], "steps": 5}  # with the spec's guidance
    out, syncs = _syncs(model.decode, code, sampler=sampler, generator=torch.Generator().manual_seed(0))
    _within(ONE, syncs, f"decode with {solver} on {grid}")
    assert out.decoder_calls > 5 and torch.isfinite(out.images).all()


@pytest.mark.parametrize("preset", sorted(SAMPLER_PRESETS) + sorted(FEW_STEP_PRESETS))
def test_decode_makes_one_sync_for_every_sampler_preset(model, code, preset):
    out, syncs = _syncs(model.decode, code, sampler=preset, return_intermediates=True)
    _within(ONE, syncs, f"decode with the preset {preset!r}")
    assert len(out.intermediates) == len(out.times) - 1


def test_decode_makes_one_sync_with_guidance_everywhere_and_given_noise_in_bfloat16(code):
    m = _model(dtype=torch.bfloat16)
    noise = torch.randn(2, 3, 32, 32, dtype=torch.float64)  # checked, and cast to float32
    sampler = {"steps": 4, "guidance": {"scale": 2.0, "interval": None}, "solver": {"name": "heun"}}
    out, syncs = _syncs(m.decode, code.double(), noise=noise, sampler=sampler)
    _within(ONE, syncs, "decode (bfloat16 model, float64 code and noise, guided everywhere)")
    assert out.decoder_calls == 2 * 2 * 4 and out.images.dtype == torch.float32


def test_detokenize_and_reconstruct_make_one_sync(model, images):
    tokens = model.tokenize(images)
    _, syncs = _syncs(model.detokenize, tokens, sampler="fast")
    _within(ONE, syncs, "detokenize")
    _, syncs = _syncs(model.reconstruct, images, sampler="fast")
    _within(ONE, syncs, "reconstruct")  # the brief allows 2 (encode + decode): it makes 1


def test_the_one_read_still_names_the_first_bad_input(model, code):
    """The value checks are read together after the sampling; the error is the first check's."""
    nan_code, big_noise = code.clone(), torch.full((2, 3, 32, 32), 1e300, dtype=torch.float64)
    nan_code[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="code contains NaN or Inf values"):
        model.decode(nan_code, noise=big_noise, sampler={"steps": 2})
    with pytest.raises(ValueError, match="noise has values beyond the range of torch.float32"):
        model.decode(code, noise=big_noise, sampler={"steps": 2})
    tokens = torch.zeros(2, 16, dtype=torch.int64)
    tokens[1, 3] = 2**18
    with pytest.raises(ValueError, match=r"tokens \(indices\) must lie in \[0, 262144\), got values in \[0, 262144\]"):
        model.detokenize(tokens, noise=big_noise, sampler={"steps": 2})


# ============================================================================= velocity
@pytest.mark.parametrize("t", [0.3, torch.tensor([0.2, 0.9])])
@pytest.mark.parametrize("guidance_scale", [1.0, 2.5])
def test_velocity_makes_one_sync(model, code, images, t, guidance_scale):
    v, syncs = _syncs(model.velocity, images, t, code, guidance_scale=guidance_scale)
    _within(ONE, syncs, f"velocity (t={t}, guidance_scale={guidance_scale})")
    assert v.shape == images.shape
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\] \(finite\), got values in \[0.2, 1.5\]"):
        model.velocity(images, torch.tensor([0.2, 1.5]), code)
