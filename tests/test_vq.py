"""VQ specifics (the generic properties: the kit, run over every registered quantizer in
test_conformance_kinds.py, and on the EMA variants here): the nearest code, the losses and which
of them trains the codebook, the EMA update and dead-code replacement against an explicit
computation, the counter-based draw, the spec's checks, the state in model folders, no host
sync, one graph under torch.compile, and two gloo ranks holding the same codebook."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import flowmo
from flowmo.quantizers import VQ, VQSpec
from flowmo.quantizers.vq import draw_indices
from flowmo.registry import QUANTIZERS
from flowmo.testing import check_quantizer
from flowmo.testing.syncs import count_host_syncs

from conftest import HANG_GUARD_S, REPO

FAST = settings(max_examples=15, deadline=None, derandomize=True, database=None)


def _vq(channels: int = 6, **kw) -> VQ:
    return QUANTIZERS.build({"name": "vq", "codebook_size": 16, **kw}, channels=channels)


def _points(z: torch.Tensor, l2: bool) -> torch.Tensor:
    return F.normalize(z.double(), dim=-1) if l2 else z.double()


@pytest.mark.parametrize("spec", [
    {"ema": True, "codebook_size": 32, "dead_code_threshold": 2.0},
    {"ema": True, "l2_normalize": True, "codebook_size": 32, "dead_code_threshold": 0.5, "decay": 0.5},
], ids=["ema-dead-codes", "ema-l2"])
def test_the_ema_variants_pass_the_kit(spec):
    """Threshold 2 > the initial usage 1: every training-mode call with tokens replaces codes, so
    the kit's state properties see dead-code replacement too."""
    report = check_quantizer(lambda: _vq(6, **spec), 6, max_examples=3)
    assert report["state"] >= 1 and report["state_roundtrip"] >= 1


@FAST
@given(st.integers(0, 2**32 - 1), st.booleans(), st.integers(1, 3), st.integers(1, 6))
def test_each_token_gets_its_nearest_code(seed, l2, b, t):
    q = _vq(l2_normalize=l2)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, t, 6, generator=g) * 2
    out = q(z)
    x, table = _points(z, l2), _points(q.codebook.detach(), l2)
    dist = ((x[..., None, :] - table) ** 2).sum(-1)  # (b, t, K), float64
    chosen = dist.gather(-1, out.indices[..., None])[..., 0]
    torch.testing.assert_close(chosen, dist.min(-1).values, rtol=1e-6, atol=1e-6)
    assert torch.equal(out.values.detach(), q.indices_to_codes(out.indices))
    torch.testing.assert_close(out.values.detach().double(), table[out.indices], rtol=1e-6, atol=1e-7)
    if l2:  # nearest on the sphere = largest cosine
        assert torch.equal(out.indices, (x @ table.t()).argmax(-1))
    assert torch.equal(q.codes_to_indices(out.values), out.indices)


@pytest.mark.parametrize("l2", [False, True])
def test_the_losses_are_vq_vaes_and_only_the_codebook_loss_trains_the_codebook(l2):
    q = _vq(l2_normalize=l2, beta=0.3, codebook_weight=2.0)
    z = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = q(z)
    x, e = _points(z.detach(), l2), q.indices_to_codes(out.indices).double()
    mse = ((x - e) ** 2).mean()
    torch.testing.assert_close(out.stats["commitment"].double(), mse)
    torch.testing.assert_close(out.stats["codebook"].double(), mse)
    torch.testing.assert_close(out.losses["commitment"], 0.3 * out.stats["commitment"])
    torch.testing.assert_close(out.losses["codebook"], 2.0 * out.stats["codebook"])
    assert 1.0 <= float(out.stats["perplexity"]) <= 10.0
    out.values.sum().backward(retain_graph=True)
    assert q.codebook.grad is None  # the values pass gradients to z only (straight through)
    if not l2:
        assert torch.equal(z.grad, torch.ones_like(z))
    z.grad = None
    out.losses["commitment"].backward(retain_graph=True)
    assert q.codebook.grad is None and z.grad is not None
    out.losses["codebook"].backward()
    used = torch.zeros(16, dtype=torch.bool)
    used[out.indices.flatten()] = True
    assert (q.codebook.grad[used] != 0).any(dim=-1).all() and (q.codebook.grad[~used] == 0).all()


@FAST
@given(st.integers(0, 2**32 - 1), st.booleans(), st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([1e-5, 0.1]),
       st.integers(1, 3))
def test_the_ema_update_is_the_explicit_recurrence(seed, l2, decay, eps, steps):
    """N <- d N + (1 - d) n, m <- d m + (1 - d) s, e = m / ((N + eps) / (sum N + K eps) sum N), in
    float64 here; each call's indices are the nearest codes of the codebook as the call started;
    eval mode changes nothing."""
    k = 8
    q = _vq(codebook_size=k, ema=True, l2_normalize=l2, decay=decay, epsilon=eps).train()
    g = torch.Generator().manual_seed(seed)
    size, embed_sum = q.cluster_size.double().clone(), q.embed_sum.double().clone()
    book = q.codebook.double().clone()
    for _ in range(steps):
        z = torch.randn(3, 4, 6, generator=g)
        x = _points(z, l2).reshape(-1, 6)
        table = F.normalize(book, dim=-1) if l2 else book
        expected = ((x[:, None] - table) ** 2).sum(-1).argmin(-1)
        out = q(z)
        assert torch.equal(out.indices.reshape(-1), expected)
        n = torch.zeros(k, dtype=torch.float64).index_add_(0, expected, torch.ones(len(expected), dtype=torch.float64))
        s = torch.zeros(k, 6, dtype=torch.float64).index_add_(0, expected, x)
        size = decay * size + (1 - decay) * n
        embed_sum = decay * embed_sum + (1 - decay) * s
        book = embed_sum / ((size + eps) / (size.sum() + k * eps) * size.sum())[:, None]
        torch.testing.assert_close(q.cluster_size.double(), size, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(q.embed_sum.double(), embed_sum, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(q.codebook.double(), book, rtol=1e-4, atol=1e-5)
    before = {n: b.clone() for n, b in q.named_buffers()}
    q.eval()(torch.randn(2, 3, 6, generator=g))
    assert all(torch.equal(b, before[n]) for n, b in q.named_buffers())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("dead", [0.0, 2.0])
def test_a_non_finite_input_leaves_the_ema_state_as_it_was(bad, dead):
    q = _vq(codebook_size=8, ema=True, dead_code_threshold=dead).train()
    z = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0))
    z[1, 2, 4] = bad
    before = {n: b.clone() for n, b in q.named_buffers() if n != "draws"}
    with count_host_syncs() as syncs:
        q(z)
    assert syncs.count == 0
    assert all(torch.equal(b, before[n]) for n, b in q.named_buffers() if n != "draws")
    q(z.nan_to_num(posinf=0.0))  # the next finite batch updates it
    assert not torch.equal(q.codebook, before["codebook"])


def test_dead_codes_are_replaced_by_drawn_inputs_of_the_batch():
    """Codes 4..7 unused (usage 0): below the threshold after the update, each is replaced by
    the input draw_indices picks (its sum = threshold x input, its usage = threshold); codes
    0..3 follow the EMA; the draw counter advances; no host sync."""
    k, t, d = 8, 0.5, 0.9
    q = _vq(codebook_size=k, ema=True, dead_code_threshold=t, decay=d).train()
    with torch.no_grad():
        q.cluster_size.copy_(torch.tensor([5.0] * 4 + [0.0] * 4))
    draws = q.draws.clone()
    before = {n: b.clone() for n, b in q.named_buffers()}
    z = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(3))
    with count_host_syncs() as syncs:
        out = q(z)
    assert syncs.count == 0, syncs.report()
    x = z.reshape(-1, 6)
    n = torch.zeros(k).index_add_(0, out.indices.reshape(-1), torch.ones(10))
    size = d * before["cluster_size"] + (1 - d) * n
    dead = size < t
    assert dead[4:].all() and not dead[:4].any()
    picked = x[draw_indices(draws, k, 10)]
    assert torch.equal(q.codebook[dead], picked[dead])
    assert torch.equal(q.embed_sum[dead], picked[dead] * t)
    assert torch.equal(q.cluster_size[dead], torch.full((4,), t))
    torch.testing.assert_close(q.cluster_size[~dead], size[~dead])
    assert torch.equal(q.draws, draws + torch.tensor([0, 1]))
    assert not torch.equal(draw_indices(q.draws, k, 10), draw_indices(draws, k, 10))


def test_draw_indices_is_a_pure_uniform_draw():
    state = torch.tensor([12345, 7])
    a = draw_indices(state, 70000, 7)
    assert a.dtype == torch.int64 and torch.equal(a, draw_indices(state.clone(), 70000, 7))
    assert int(a.min()) >= 0 and int(a.max()) <= 6
    counts = torch.bincount(a, minlength=7).double()
    assert ((counts - 10000).abs() < 400).all(), counts  # within 4 standard deviations of uniform
    others = [draw_indices(torch.tensor(s), 1000, 1000) for s in ([12345, 8], [12346, 7], [2**40 + 12345, 7])]
    assert not torch.equal(others[0], others[1]) and not torch.equal(draw_indices(state, 1000, 1000), others[0])
    assert torch.equal(others[2], draw_indices(state, 1000, 1000))  # the low 32 bits of the key


def test_the_spec_checks_and_declares_its_terms():
    with pytest.raises(ValueError, match="dead_code_threshold .* needs ema: true"):
        VQSpec(dead_code_threshold=1.0)
    with pytest.raises(ValueError, match="codebook_weight must be > 0 with ema: false"):
        VQSpec(codebook_weight=0.0)
    with pytest.raises(ValueError, match="codebook_size"):
        VQSpec(codebook_size=1)
    with pytest.raises(ValueError, match="decay"):
        VQSpec(ema=True, decay=1.0)
    for kw, words in (({"ema": True, "codebook_weight": 0.0}, r"codebook_weight \(0\) applies only with ema: false"),
                      ({"decay": 0.5}, r"decay \(0.5\) applies only with ema: true"),
                      ({"epsilon": 0.1}, r"epsilon \(0.1\) applies only with ema: true")):
        with pytest.raises(ValueError, match=words):
            VQSpec(**kw)
    for spec in (VQSpec(), VQSpec(ema=True, decay=0.5)):  # every field dumped, defaults included: still valid
        assert VQSpec.model_validate(spec.model_dump()) == spec
    tiny = flowmo.flowmo_tiny()
    spec = tiny.replace(quantizer={"name": "vq", "codebook_size": 256})
    rng = torch.get_rng_state()
    assert spec.bits_per_token == 8
    assert torch.equal(torch.get_rng_state(), rng)  # building the codebook to ask it drew nothing from torch's RNG
    assert [t.name for t in spec.loss_terms("1a")] == ["diffusion", "quantizer/commitment", "quantizer/codebook"]
    spec = tiny.replace(quantizer={"name": "vq", "ema": True, "beta": 0.5})
    assert [(t.name, t.weight) for t in spec.loss_terms("1a")][1:] == [("quantizer/commitment", 0.5)]
    assert flowmo.FlowMoSpec.from_json(spec.to_json()) == spec
    assert VQ(VQSpec(ema=True), channels=4).updated_state == ("codebook", "cluster_size", "embed_sum", "draws")
    assert VQ(VQSpec(), channels=4).updated_state == ()


def test_detokenize_refuses_tokens_beyond_the_codebook_in_one_read():
    model = flowmo.build(flowmo.flowmo_tiny().replace(quantizer={"name": "vq", "codebook_size": 64})).eval()
    tokens = torch.zeros(1, 16, dtype=torch.int64)
    tokens[0, 3] = 64
    with pytest.raises(ValueError, match=r"tokens \(indices\) must lie in \[0, 64\), got values in \[0, 64\]"):
        model.detokenize(tokens, sampler={"steps": 1})


def test_the_ema_state_is_saved_in_model_folders_and_continues_bitwise(tmp_path):
    """A tiny FlowMo with an EMA codebook trained a few calls: save_pretrained / from_pretrained
    keep every buffer bitwise; the loaded model tokenizes alike and, after one more training-mode
    call on each, holds the same state."""
    spec = flowmo.flowmo_tiny().replace(quantizer={"name": "vq", "codebook_size": 32, "ema": True,
                                                   "dead_code_threshold": 1.5})
    torch.manual_seed(0)
    model = flowmo.build(spec).train()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for i in range(3):
        model.loss(x, generator=torch.Generator().manual_seed(i))
    assert int(model.quantizer.draws[1]) == 3
    loaded = flowmo.FlowMo.from_pretrained(model.save_pretrained(tmp_path / "m"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert torch.equal(model.eval().tokenize(x), loaded.tokenize(x))
    code = model.encode(x)
    model.quantizer.train()(code)
    loaded.quantizer.train()(code)
    for k, v in model.quantizer.state_dict().items():
        assert torch.equal(v, loaded.quantizer.state_dict()[k]), k


def test_posttraining_leaves_the_ema_codebook_as_it_is():
    spec = flowmo.flowmo_tiny().replace(quantizer={"name": "vq", "codebook_size": 32, "ema": True},
                                        posttrain={"name": "mode_seeking", "k": 2})
    model = flowmo.build(spec).train()
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = model.posttrain_loss(x, generator=torch.Generator().manual_seed(0))
    assert model.quantizer.training and "quantizer/commitment" in out.terms
    assert all(torch.equal(v, before[k]) for k, v in model.quantizer.state_dict().items())
    model.loss(x, generator=torch.Generator().manual_seed(0))  # Stage 1A does update it
    assert not torch.equal(model.quantizer.cluster_size, before["cluster_size"])


def test_the_training_forward_is_one_graph_under_torch_compile():
    """fullgraph=True (what train.compile uses for one process): the EMA update and the dead-code
    replacement trace without a graph break and give the eager results and state."""
    torch.manual_seed(0)
    eager = _vq(codebook_size=32, ema=True, dead_code_threshold=2.0).train()
    compiled_q = _vq(codebook_size=32, ema=True, dead_code_threshold=2.0).train()
    compiled_q.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_q, fullgraph=True, backend="eager")
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        z = torch.randn(2, 5, 6, generator=g)
        a, b = eager(z), compiled(z)
        assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(compiled_q.state_dict()[k], v, rtol=1e-6, atol=1e-7)


RANKS_SCRIPT = r"""
import sys, torch, torch.distributed as dist
from flowmo.registry import QUANTIZERS
dist.init_process_group("gloo")
rank, out = dist.get_rank(), sys.argv[1]
for threshold in (0.0, 2.0):
    torch.manual_seed(0)  # the same initial codebook on every rank (as the trainer's seeded init)
    q = QUANTIZERS.build({"name": "vq", "codebook_size": 16, "ema": True, "dead_code_threshold": threshold,
                          "decay": 0.8}, channels=6).train()
    for step in range(3):
        q(torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(100 * step + rank)))
    torch.save({k: v.clone() for k, v in q.state_dict().items()}, f"{out}/rank{rank}-{threshold}.pt")
dist.destroy_process_group()
"""


def test_two_gloo_ranks_hold_the_same_codebook(tmp_path):
    """Each rank quantizes its own batches: the counts and sums are all-reduced (without dead
    codes the state is one process's on both ranks' batches together, to float32 rounding) and
    the replacements are rank 0's inputs, so both ranks end with the same state bitwise."""
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}  # this checkout's flowmo
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for threshold in (0.0, 2.0):
        r0, r1 = (torch.load(tmp_path / f"rank{r}-{threshold}.pt") for r in (0, 1))
        for k in r0:
            assert torch.equal(r0[k], r1[k]), (threshold, k)
        assert r0["draws"][1] == 3
        batches = [[torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(100 * step + r)) for r in (0, 1)]
                   for step in range(3)]
        if threshold == 0.0:  # one process on both ranks' batches together
            torch.manual_seed(0)
            one = QUANTIZERS.build({"name": "vq", "codebook_size": 16, "ema": True, "decay": 0.8}, channels=6).train()
            for zs in batches:
                one(torch.cat(zs))
            for k, v in one.state_dict().items():
                torch.testing.assert_close(r0[k], v, rtol=1e-5, atol=1e-6)
        else:  # every replaced code is one of rank 0's inputs
            replaced = r0["cluster_size"] == threshold
            rank0 = torch.cat([zs[0].reshape(-1, 6) for zs in batches])
            assert replaced.any()
            for code in r0["codebook"][replaced]:
                assert (rank0 == code).all(-1).any()


def test_a_float16_ema_codebook_skips_an_update_that_would_overflow():
    """n_k x beyond 65504 in float16: the update is skipped, the codebook stays finite."""
    q = QUANTIZERS.build({"name": "vq", "codebook_size": 4, "ema": True, "decay": 0.5}, channels=2).half().train()
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        out = q((torch.randn(1, 4096, 2, generator=g) * 0.1 + 30).half())
    assert all(bool(torch.isfinite(b).all()) for b in (q.codebook, q.embed_sum, q.cluster_size, out.values))
