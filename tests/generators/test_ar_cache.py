"""The autoregressive generator's key/value cache: the cached sampler gives the uncached one's
tokens for the same draws (every sampling option), the incremental logits match the full
forward's, one new position per pass, preallocated buffers, no host sync per token."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowmo.generators.autoregressive as ar
from flowmo.generators import AutoregressiveGenerator
from flowmo.generators.transformer import GeneratorBlock, KVCache
from flowmo.testing.syncs import count_host_syncs


def build(seed: int, **kw) -> AutoregressiveGenerator:
    """A small generator whose weights are perturbed (seeded) so that its logits spread out."""
    args = dict(vocab_size=8, seq_len=6, num_classes=3, width=32, depth=2, heads=2, mlp_ratio=2.0)
    args.update(kw)
    torch.manual_seed(seed)
    m = AutoregressiveGenerator(**args)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return m.eval()


@st.composite
def sampling_cases(draw):
    heads = draw(st.sampled_from([1, 2, 4]))
    config = dict(vocab_size=draw(st.integers(2, 12)), seq_len=draw(st.integers(1, 9)),
                  num_classes=draw(st.integers(0, 3)), width=heads * draw(st.sampled_from([2, 4, 8])),
                  depth=draw(st.integers(1, 3)), heads=heads, mlp_ratio=draw(st.sampled_from([1.0, 2.0])))
    b = draw(st.integers(1, 3))
    options = dict(temperature=draw(st.sampled_from([0.0, 0.25, 1.0, 3.0])),
                   top_k=draw(st.none() | st.integers(1, config["vocab_size"])))
    if config["num_classes"]:
        options["labels"] = torch.tensor(draw(st.lists(st.integers(0, config["num_classes"] - 1), min_size=b,
                                                       max_size=b)))
        options["cfg_scale"] = draw(st.sampled_from([1.0, 0.0, 0.5, 2.5]))
    else:
        options["labels"] = None
        options["batch_size"] = b
    return config, options, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=60)
@given(sampling_cases())
def test_cached_tokens_equal_uncached(case):
    config, options, seed = case
    m = build(seed % 1000, **config)
    labels = options.pop("labels")
    a = m.generate(labels, generator=torch.Generator().manual_seed(seed), **options)
    b = m.generate(labels, generator=torch.Generator().manual_seed(seed), use_cache=False, **options)
    assert torch.equal(a.tokens, b.tokens), (a.tokens, b.tokens)
    assert (a.forward_passes, a.nfe, a.steps) == (b.forward_passes, b.nfe, b.steps)


def test_cached_tokens_equal_uncached_long_guided():
    """A longer sequence (a group layout's sub-tokens: 2 per latent token, seq_len 2 * 24),
    guidance, top-k and temperature together; the two paths must draw the same tokens."""
    m = build(7, vocab_size=16, seq_len=48, width=64, depth=3, heads=4)
    lab = torch.tensor([0, 2, 1, 1])
    kw = dict(cfg_scale=3.0, top_k=5, temperature=0.7)
    a = m.generate(lab, generator=torch.Generator().manual_seed(3), **kw).tokens
    b = m.generate(lab, generator=torch.Generator().manual_seed(3), use_cache=False, **kw).tokens
    assert torch.equal(a, b)
    c = m.generate(lab, generator=torch.Generator().manual_seed(4), **kw).tokens
    assert not torch.equal(a, c)  # the draws matter: the equality above is not a constant output


@settings(max_examples=30)
@given(st.integers(2, 10), st.lists(st.integers(1, 4), min_size=1, max_size=6), st.integers(0, 3),
       st.integers(0, 999))
def test_incremental_logits_match_forward(seq_len, chunks, label, seed):
    """Feeding the class token, then the prefix in chunks of any sizes (one position or several
    at once, from position 0 or after cached ones), gives the full forward's logits row by row."""
    m = build(seed, seq_len=seq_len)
    n = seq_len - 1
    prefix = torch.randint(0, 8, (2, n), generator=torch.Generator().manual_seed(seed))
    labels = torch.tensor([label, 3])
    with torch.no_grad():
        full = m(prefix, labels)
        cache, freqs = m._new_cache(2), m.rope(seq_len, prefix.device)
        rows = [m._cached_logits(m.class_emb(labels)[:, None], cache, freqs)]
        at = 0
        for size in chunks:
            if at >= n:
                break
            rows.append(m._cached_logits(m.tok_emb(prefix[:, at:at + size]), cache, freqs))
            at += rows[-1].shape[1]
        got = torch.cat(rows, dim=1)
    assert cache.length == got.shape[1] == 1 + at
    torch.testing.assert_close(got, full[:, :1 + at], atol=1e-5, rtol=1e-5)


def test_prefill_from_zero_matches_forward():
    """The class token and the whole prefix in one cached pass (the is_causal branch)."""
    m = build(1, seq_len=7)
    prefix = torch.randint(0, 8, (3, 6), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 3])
    with torch.no_grad():
        emb = torch.cat((m.class_emb(labels)[:, None], m.tok_emb(prefix)), dim=1)
        got = m._cached_logits(emb, m._new_cache(3), m.rope(7, prefix.device))
        torch.testing.assert_close(got, m(prefix, labels), atol=1e-5, rtol=1e-5)


class StepSpy:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, emb, cache, freqs):
        self.calls.append((tuple(emb.shape), cache.length))
        return self.fn(emb, cache, freqs)


@pytest.mark.parametrize("cfg_scale", [1.0, 2.0])
def test_one_new_position_per_pass(cfg_scale):
    m = build(0)
    spy = StepSpy(m._cached_logits)
    m._cached_logits = spy
    out = m.generate(torch.tensor([0, 2]), cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(0))
    rows = 4 if cfg_scale != 1.0 else 2  # the guided pair stacked in one pass
    assert len(spy.calls) == out.forward_passes == m.seq_len
    assert spy.calls == [((rows, 1, m.width), i) for i in range(m.seq_len)]
    assert out.nfe == (2 if cfg_scale != 1.0 else 1) * m.seq_len


def test_guided_rows_are_class_then_null():
    """The cached guided pass feeds rows [labels, null class] at position 0, as the uncached one."""
    m = build(2)
    seen = []
    m.class_emb.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    m.generate(torch.tensor([1, 0]), cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 1 and torch.equal(seen[0], torch.tensor([1, 0, 3, 3]))


def test_cache_preallocated_once(monkeypatch):
    made = []

    class Recorded(KVCache):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append((self, [t.data_ptr() for t in self.keys + self.values]))

    monkeypatch.setattr(ar, "KVCache", Recorded)
    m = build(0, seq_len=9, depth=3)
    m.generate(torch.tensor([0, 1, 2]), cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert len(made) == 1
    cache, ptrs = made[0]
    assert len(cache.keys) == len(cache.values) == 3 and cache.length == 9
    assert all(t.shape == (6, 2, 9, 16) for t in cache.keys + cache.values)  # (2B, heads, L_max, head_dim)
    assert [t.data_ptr() for t in cache.keys + cache.values] == ptrs  # written in place, never regrown


@pytest.mark.parametrize("use_cache", [True, False])
def test_no_host_sync_per_token(use_cache):
    counts = []
    for seq_len in (3, 17):
        m = build(0, seq_len=seq_len)
        with count_host_syncs() as syncs:
            m.generate(torch.tensor([0, 1]), cfg_scale=2.0, top_k=3, temperature=0.5, use_cache=use_cache,
                       generator=torch.Generator().manual_seed(0))
        counts.append(syncs)
    assert counts[0].count == counts[1].count, (counts[0].report(), counts[1].report())  # none per token
    assert counts[1].count <= 2, counts[1].report()  # the label check and the overflow check, once a call


def test_use_cache_must_be_bool():
    with pytest.raises(TypeError, match="use_cache"):
        build(0).generate(torch.tensor([0]), use_cache=1)


def test_kv_cache_refuses():
    with pytest.raises(ValueError, match="max_len"):
        KVCache(1, 1, 1, 0, 2)
    with pytest.raises(TypeError, match="dtype"):
        KVCache(1, 1, 1, 4, 2, dtype=torch.long)
    c = KVCache(2, 1, 1, 4, 2)
    c.advance(3)
    with pytest.raises(ValueError, match="max_len = 4"):
        c.advance(2)
    assert c.length == 3


def test_bidirectional_block_has_no_cached_forward():
    block = GeneratorBlock(8, 2, 2.0, causal=False, modulation=False)
    c = KVCache(1, 1, 2, 4, 4)
    with pytest.raises(ValueError, match="causal"):
        block.forward_cached(torch.zeros(1, 1, 8), None, torch.zeros(1, 2, 2), c.keys[0], c.values[0], 0)
