"""The autoregressive (LlamaGen-style) generator: causality, teacher-forced loss by hand, one
token per forward pass, guidance, seeds, training, folders and argument checks."""

import numpy as np
import pytest
import torch

from flowmo.generators import AutoregressiveGenerator, MaskGiT

V, L, C = 8, 6, 3


def tiny(**kw):
    args = dict(vocab_size=V, seq_len=L, num_classes=C, width=32, depth=2, heads=2, mlp_ratio=2.0)
    args.update(kw)
    return AutoregressiveGenerator(**args)


class Spy:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, prefix, labels):
        self.calls.append((prefix.clone(), labels.clone()))
        return self.fn(prefix, labels)


def test_causal_and_class_first():
    m = tiny().eval()
    x = torch.randint(0, V, (2, L - 1), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[:, 2] = (y[:, 2] + 1) % V           # change token 2: rows 0..2 (which predict tokens 0..2) must not move
    lab = torch.tensor([0, 1])
    with torch.no_grad():
        a, b = m(x, lab), m(y, lab)
        assert a.shape == (2, L, V) and a.dtype == torch.float32
        assert torch.equal(a[:, :3], b[:, :3])
        assert not torch.allclose(a[:, 3:], b[:, 3:])
        assert not torch.allclose(m(x, torch.tensor([2, 2]))[:, 0], a[:, 0])  # the class token conditions row 0


def test_loss_hand_worked():
    m = tiny()
    table = torch.randn(L, V, generator=torch.Generator().manual_seed(1))
    spy = Spy(lambda prefix, labels: table[: prefix.shape[1] + 1].expand(prefix.shape[0], -1, -1).clone())
    m._logits = spy
    tokens = torch.randint(0, V, (3, L), generator=torch.Generator().manual_seed(2))
    out = m.eval().loss(tokens, torch.tensor([0, 1, 2]))
    assert set(out.terms) == {"next_token_ce"}
    assert torch.equal(spy.calls[0][0], tokens[:, :-1])   # teacher forcing: the prefix is the tokens but the last
    t = table.numpy()
    logp = t - np.log(np.exp(t).sum(-1, keepdims=True))
    expected = -np.mean([logp[i, tokens[b, i].item()] for b in range(3) for i in range(L)])
    assert out.total.item() == pytest.approx(expected, rel=1e-5)


def test_generate_one_token_per_pass():  # the uncached path (the cached one: test_ar_cache.py)
    m = tiny()
    spy = Spy(m._logits)
    m._logits = spy
    out = m.generate(torch.tensor([0, 2]), generator=torch.Generator().manual_seed(0), use_cache=False)
    assert out.tokens.shape == (2, L) and ((out.tokens >= 0) & (out.tokens < V)).all()
    assert len(spy.calls) == out.forward_passes == out.nfe == out.steps == L
    for i, (prefix, _) in enumerate(spy.calls):
        assert torch.equal(prefix, out.tokens[:, :i])


def test_guided_batched():
    m = tiny()
    spy = Spy(m._logits)
    m._logits = spy
    out = m.generate(torch.tensor([1]), cfg_scale=3.0, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert len(spy.calls) == out.forward_passes == L and out.nfe == 2 * L
    assert all(torch.equal(lab, torch.tensor([1, C])) for _, lab in spy.calls)


def test_scale_one_same_seed_top_k():
    m = tiny()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.1)
    lab = torch.tensor([0, 1, 2])
    a = m.generate(lab, cfg_scale=1.0, generator=torch.Generator().manual_seed(1)).tokens
    b = m.generate(lab, generator=torch.Generator().manual_seed(1)).tokens
    c = m.generate(lab, generator=torch.Generator().manual_seed(2)).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)
    t1 = m.generate(lab, top_k=1, temperature=1.0, generator=torch.Generator().manual_seed(3)).tokens
    t0 = m.generate(lab, temperature=0.0).tokens
    assert torch.equal(t1, t0)


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    m = tiny(seq_len=12, width=48)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, V, (4, 12), generator=g)
    labels = torch.tensor([0, 0, 1, 1])
    m.eval()
    with torch.no_grad():
        before = m.loss(data, labels).total.item()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    for _ in range(40):
        loss = m.loss(data, labels, generator=g).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        after = m.loss(data, labels).total.item()
    assert before > 1.8 and after < 0.5 * before, (before, after)


def test_save_load_round_trip(tmp_path):
    m = tiny()
    d = m.save_pretrained(tmp_path / "ar", metadata={"k": 1})
    n = AutoregressiveGenerator.from_pretrained(d)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), n.state_dict().values()))
    kw = dict(cfg_scale=2.0, top_k=4)
    assert torch.equal(m.generate(torch.tensor([2]), generator=torch.Generator().manual_seed(0), **kw).tokens,
                       n.generate(torch.tensor([2]), generator=torch.Generator().manual_seed(0), **kw).tokens)
    with pytest.raises(ValueError, match="autoregressive"):
        MaskGiT.from_pretrained(d)


@pytest.mark.parametrize("kw, name", [
    (dict(steps=L - 1), "steps"), (dict(temperature=-1.0), "temperature"), (dict(top_k=V + 1), "top_k"),
    (dict(labels=torch.tensor([C])), "labels"), (dict(labels=None), "batch_size"),
])
def test_generate_refuses(kw, name):
    args = dict(labels=torch.tensor([0]))
    args.update(kw)
    labels = args.pop("labels")
    with pytest.raises((TypeError, ValueError), match=name):
        tiny().generate(labels, **args)


@pytest.mark.parametrize("kw, name", [(dict(heads=3), "heads"), (dict(seq_len=0), "seq_len"),
                                      (dict(label_dropout=-0.1), "label_dropout")])
def test_constructor_refuses(kw, name):
    with pytest.raises((TypeError, ValueError), match=name):
        tiny(**kw)


def test_forward_refuses_full_length_prefix():
    with pytest.raises(ValueError, match="prefix"):
        tiny()(torch.zeros(1, L, dtype=torch.long), torch.tensor([0]))
