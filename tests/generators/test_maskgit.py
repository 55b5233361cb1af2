"""MaskGiT: the masked-token loss and iterative decoding on hand-worked cases, guidance, seeds,
training, folders and argument checks."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmo.generators import GenerationOutput, MaskGiT, TokenGenerator
from flowmo.model import LossOutput

V, L, C = 8, 16, 3


def tiny(**kw):
    args = dict(vocab_size=V, seq_len=L, num_classes=C, width=32, depth=2, heads=2, mlp_ratio=2.0)
    args.update(kw)
    return MaskGiT(**args)


class Spy:
    """Stands in for the network: records (inputs, labels) and returns ``fn(inputs, labels)``."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, inputs, labels):
        self.calls.append((inputs.clone(), labels.clone()))
        return self.fn(inputs, labels)


def fixed_logits(table):
    """A network whose logits ignore the inputs: table (L, V) for every sample."""
    return Spy(lambda inputs, labels: table.expand(inputs.shape[0], *table.shape).clone())


def np_ce(logits, targets):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -logp[np.arange(len(targets)), targets]


# ----------------------------------------------------------------------------- the loss
def test_loss_is_ce_on_masked_positions_only():
    m = tiny()
    table = torch.randn(L, V, generator=torch.Generator().manual_seed(1))
    spy = fixed_logits(table)
    m._logits = spy
    tokens = torch.randint(0, V, (5, L), generator=torch.Generator().manual_seed(2))
    out = m.eval().loss(tokens, torch.tensor([0, 1, 2, 0, 1]), generator=torch.Generator().manual_seed(3))
    assert isinstance(out, LossOutput) and set(out.terms) == {"masked_ce"}
    inputs = spy.calls[0][0].numpy()
    masked = inputs == V
    n = masked.sum(1)
    assert (n >= 1).all() and (n <= L).all()
    # unmasked positions carry the tokens; masked ones [MASK] = vocab_size
    assert (inputs[~masked] == tokens.numpy()[~masked]).all()
    rows, cols = np.nonzero(masked)
    expected = np_ce(table.numpy()[cols], tokens.numpy()[rows, cols]).mean()
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    assert out.total is out.terms["masked_ce"] or torch.equal(out.total, out.terms["masked_ce"])


def test_loss_with_given_mask_hand_worked():
    m = tiny(seq_len=3, num_classes=0)
    # logits: position 0 -> uniform over 8 (CE = log 8); position 2 -> token 5 with logit 2, others 0
    table = torch.zeros(3, V)
    table[2, 5] = 2.0
    m._logits = fixed_logits(table)
    tokens = torch.tensor([[1, 2, 5], [3, 4, 0]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    out = m.loss(tokens, None, mask=mask)
    ce_uniform = np.log(8)
    ce_hit = -(2 - np.log(np.exp(2) + 7))       # token 5 at position 2
    ce_miss = -(0 - np.log(np.exp(2) + 7))      # token 0 at position 2
    assert out.total.item() == pytest.approx((ce_uniform + ce_hit + ce_miss) / 3, rel=1e-6)


def test_mask_counts_spread_over_the_schedule():
    m = tiny(seq_len=32)
    spy = fixed_logits(torch.zeros(32, V))
    m._logits = spy
    tokens = torch.zeros(400, 32, dtype=torch.long)
    m.loss(tokens, torch.zeros(400, dtype=torch.long), generator=torch.Generator().manual_seed(0))
    frac = (spy.calls[0][0] == V).float().mean().item()
    assert abs(frac - 2 / np.pi) < 0.05   # E[cos(pi r / 2)] = 2 / pi


def test_label_dropout():
    tokens = torch.zeros(64, L, dtype=torch.long)
    labels = torch.randint(0, C, (64,), generator=torch.Generator().manual_seed(0))
    for p, mode, expect_null in ((1.0, True, True), (0.0, True, False), (1.0, False, False)):
        m = tiny(label_dropout=p).train(mode)
        spy = fixed_logits(torch.zeros(L, V))
        m._logits = spy
        m.loss(tokens, labels, generator=torch.Generator().manual_seed(1))
        seen = spy.calls[0][1]
        assert torch.equal(seen, torch.full_like(labels, C)) if expect_null else torch.equal(seen, labels)
    m = tiny(label_dropout=0.5).train()
    spy = fixed_logits(torch.zeros(L, V))
    m._logits = spy
    m.loss(torch.zeros(2000, L, dtype=torch.long), torch.zeros(2000, dtype=torch.long),
           generator=torch.Generator().manual_seed(2))
    assert abs((spy.calls[0][1] == C).float().mean().item() - 0.5) < 0.05


def test_loss_same_seed_same_value():
    m = tiny().train()
    tokens = torch.randint(0, V, (4, L), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 1])
    a = m.loss(tokens, labels, generator=torch.Generator().manual_seed(5)).total
    b = m.loss(tokens, labels, generator=torch.Generator().manual_seed(5)).total
    assert torch.equal(a, b)


def perturbed(m):
    """The model with every parameter moved off its init (adaLN-Zero starts every block as the identity)."""
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def test_bidirectional():
    m = perturbed(tiny()).eval()
    x = torch.full((1, L), V)
    y = x.clone()
    y[0, -1] = 3  # change the last position: the first position's logits must change
    lab = torch.tensor([0])
    with torch.no_grad():
        assert not torch.allclose(m(x, lab)[0, 0], m(y, lab)[0, 0])


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("steps, expected", [(4, [16, 14, 11, 6]), (1, [16]), (16, list(range(16, 0, -1)))])
def test_decoding_fills_every_position_in_steps(steps, expected):
    m = tiny()
    spy = Spy(m._logits)
    m._logits = spy
    out = m.generate(torch.tensor([0, 1, 2]), steps=steps, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, GenerationOutput)
    assert out.tokens.shape == (3, L) and out.tokens.dtype == torch.int64
    assert ((out.tokens >= 0) & (out.tokens < V)).all()
    assert len(spy.calls) == out.forward_passes == out.nfe == out.steps == steps
    # masked inputs per call: L, then the hand-worked cosine counts floor(16 cos(pi/2 (t+1)/4)) = 14, 11, 6
    for (inputs, _), n in zip(spy.calls, expected):
        assert ((inputs == V).sum(1) == n).all()
    # decoded tokens stay fixed: what an input shows is kept in every later input and the output
    for t, (inputs, _) in enumerate(spy.calls):
        known = inputs != V
        for later in [c[0] for c in spy.calls[t + 1:]] + [out.tokens]:
            assert torch.equal(later[known], inputs[known])


def test_guided_pairs_batched_and_counted():
    m = tiny()
    spy = Spy(m._logits)
    m._logits = spy
    labels = torch.tensor([2, 0])
    out = m.generate(labels, steps=3, cfg_scale=2.5, generator=torch.Generator().manual_seed(0))
    assert len(spy.calls) == out.forward_passes == 3 and out.nfe == 6
    for inputs, lab in spy.calls:
        assert inputs.shape == (4, L)
        assert torch.equal(lab, torch.tensor([2, 0, C, C]))
        assert torch.equal(inputs[:2], inputs[2:])


def test_guidance_hand_worked():
    # cond (any class): argmax token 0; uncond: prefers 0 less; scale 3 -> u + 3 (c - u) = [1, 2.7, 0, ...]
    cond = torch.full((V,), -10.0)
    cond[:2] = torch.tensor([1.0, 0.9])
    uncond = torch.full((V,), -10.0)
    uncond[0] = 1.0
    uncond[1] = 0.0

    def net(inputs, labels):
        rows = torch.where((labels == C)[:, None], uncond, cond)
        return rows[:, None, :].expand(inputs.shape[0], L, V).clone()

    m = tiny()
    m._logits = Spy(net)
    kw = dict(steps=4, temperature=0.0, choice_temperature=0.0)
    assert (m.generate(torch.tensor([1]), cfg_scale=1.0, **kw).tokens == 0).all()
    assert (m.generate(torch.tensor([1]), cfg_scale=3.0, **kw).tokens == 1).all()
    assert (m.generate(torch.tensor([1]), cfg_scale=0.0, **kw).tokens == 0).all()  # unconditional


def test_scale_one_equals_no_guidance_bitwise():
    m = perturbed(tiny())
    labels = torch.tensor([0, 1, 2, 2])
    spy = Spy(m._logits)
    m._logits = spy
    a = m.generate(labels, steps=5, cfg_scale=1.0, top_k=5, generator=torch.Generator().manual_seed(9)).tokens
    assert all(lab.shape == (4,) and (lab < C).all() for _, lab in spy.calls)  # no unconditional pass
    del m._logits
    b = m.generate(labels, steps=5, top_k=5, generator=torch.Generator().manual_seed(9)).tokens
    c = m.generate(labels, steps=5, cfg_scale=1.5, top_k=5, generator=torch.Generator().manual_seed(9)).tokens
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # guidance does act on this (perturbed) model


def test_top_k_one_is_argmax():
    table = torch.randn(L, V, generator=torch.Generator().manual_seed(4))
    m = tiny()
    m._logits = fixed_logits(table)
    out = m.generate(torch.tensor([0, 2]), steps=4, temperature=1.0, top_k=1,
                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.tokens, table.argmax(-1).expand(2, L))
    out0 = m.generate(torch.tensor([0, 2]), steps=4, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out0.tokens, table.argmax(-1).expand(2, L))


def test_temperature_zero_deterministic():
    m = tiny()
    labels = torch.tensor([0, 1, 2])
    runs = [m.generate(labels, steps=4, temperature=0.0, choice_temperature=0.0, cfg_scale=2.0,
                       generator=torch.Generator().manual_seed(s)).tokens for s in (0, 1)]
    runs.append(m.generate(labels, steps=4, temperature=0.0, choice_temperature=0.0, cfg_scale=2.0).tokens)
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_same_seed_same_tokens():
    m = tiny()
    labels = torch.tensor([0, 1, 2, 0])
    kw = dict(steps=6, temperature=1.0, cfg_scale=2.0, top_k=6)
    a = m.generate(labels, generator=torch.Generator().manual_seed(11), **kw).tokens
    torch.manual_seed(123)  # the global RNG is not used
    b = m.generate(labels, generator=torch.Generator().manual_seed(11), **kw).tokens
    c = m.generate(labels, generator=torch.Generator().manual_seed(12), **kw).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unconditional_and_training_mode_kept():
    m = tiny(num_classes=0).train()
    out = m.generate(batch_size=2, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, L) and m.training


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    m = tiny(width=48, depth=2, heads=2, label_dropout=0.1)
    g = torch.Generator().manual_seed(0)
    # 2 classes, each with 2 fixed sequences: a small fixed token set
    data = torch.randint(0, V, (4, L), generator=g)
    labels = torch.tensor([0, 0, 1, 1])

    def eval_loss():
        m.eval()
        with torch.no_grad():
            return float(np.mean([m.loss(data, labels, generator=torch.Generator().manual_seed(s)).total.item()
                                  for s in range(8)]))

    before = eval_loss()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    for step in range(60):
        loss = m.loss(data, labels, generator=g).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert before > 1.8                 # about log 8 = 2.08 at the start
    assert after < 0.5 * before, (before, after)


# ----------------------------------------------------------------------------- folders
def test_save_load_bit_identical(tmp_path):
    m = perturbed(tiny())  # not the init: the zero-initialised modulation must round-trip too
    m.save_pretrained(tmp_path / "g", metadata={"tokenizer": "abc", "layout": {"kind": "lfq"}})
    doc = json.loads((tmp_path / "g" / "config.json").read_text())
    assert doc["generator"] == "maskgit" and doc["config"] == m.config()
    assert doc["metadata"] == {"tokenizer": "abc", "layout": {"kind": "lfq"}}
    n = MaskGiT.from_pretrained(tmp_path / "g")
    assert isinstance(n, TokenGenerator) and not n.training
    sa, sb = m.state_dict(), n.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    kw = dict(steps=4, cfg_scale=2.0, top_k=5)
    a = m.generate(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(3), **kw).tokens
    b = n.generate(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(3), **kw).tokens
    assert torch.equal(a, b)
    assert MaskGiT(**m.config()).config() == m.config()


def test_load_refusals(tmp_path):
    from flowmo.generators import AutoregressiveGenerator

    m = tiny()
    d = m.save_pretrained(tmp_path / "g")
    with pytest.raises(ValueError, match="maskgit"):
        AutoregressiveGenerator.from_pretrained(d)
    doc = json.loads((d / "config.json").read_text())
    doc["config"]["heads"] = 5
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="heads"):
        MaskGiT.from_pretrained(d)
    d2 = tiny(width=64).save_pretrained(tmp_path / "h")
    (d2 / "model.safetensors").replace(d / "model.safetensors")
    doc["config"]["heads"] = 2
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="model.safetensors"):
        MaskGiT.from_pretrained(d)
    (d / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        MaskGiT.from_pretrained(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError):
        MaskGiT.from_pretrained(d)
    (d / "config.json").write_text("{")
    with pytest.raises(ValueError, match="JSON"):
        MaskGiT.from_pretrained(d)
    with pytest.raises(FileNotFoundError):
        MaskGiT.from_pretrained(tmp_path / "nothing")
    with pytest.raises(TypeError, match="metadata"):
        m.save_pretrained(tmp_path / "x", metadata={"a": object()})


# ----------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("kw, name", [
    (dict(vocab_size=1), "vocab_size"), (dict(vocab_size=8.0), "vocab_size"), (dict(seq_len=0), "seq_len"),
    (dict(num_classes=-1), "num_classes"), (dict(width=0), "width"), (dict(depth=0), "depth"),
    (dict(heads=3), "heads"), (dict(width=30, heads=10), "heads"), (dict(mlp_ratio=0), "mlp_ratio"),
    (dict(label_dropout=1.5), "label_dropout"), (dict(label_dropout=True), "label_dropout"),
    (dict(rope_theta=0), "rope_theta"),
])
def test_constructor_refuses(kw, name):
    with pytest.raises((TypeError, ValueError), match=name):
        tiny(**kw)


@pytest.mark.parametrize("kw, name", [
    (dict(steps=0), "steps"), (dict(steps=L + 1), "steps"), (dict(temperature=-1.0), "temperature"),
    (dict(cfg_scale=-0.5), "cfg_scale"), (dict(top_k=0), "top_k"), (dict(top_k=V + 1), "top_k"),
    (dict(choice_temperature=-1.0), "choice_temperature"), (dict(generator=3), "generator"),
    (dict(labels=torch.tensor([0, C])), "labels"), (dict(labels=torch.tensor([0.0])), "labels"),
    (dict(labels=torch.tensor([[0]])), "labels"), (dict(batch_size=2), "batch_size"),
    (dict(labels=None), "batch_size"), (dict(labels=None, batch_size=2, cfg_scale=2.0), "cfg_scale"),
])
def test_generate_refuses(kw, name):
    args = dict(labels=torch.tensor([0]), steps=2)
    args.update(kw)
    labels = args.pop("labels")
    with pytest.raises((TypeError, ValueError), match=name):
        tiny().generate(labels, **args)


@pytest.mark.parametrize("tokens, labels, name", [
    (torch.zeros(2, L), torch.tensor([0, 1]), "tokens"),
    (torch.full((2, L), V), torch.tensor([0, 1]), "tokens"),
    (torch.zeros(2, L + 1, dtype=torch.long), torch.tensor([0, 1]), "tokens"),
    (torch.zeros(2, L, dtype=torch.long), None, "labels"),
    (torch.zeros(2, L, dtype=torch.long), torch.tensor([0, 1, 2]), "labels"),
    (torch.zeros(2, L, dtype=torch.long), torch.tensor([0, C]), "labels"),
])
def test_loss_refuses(tokens, labels, name):
    with pytest.raises((TypeError, ValueError), match=name):
        tiny().loss(tokens, labels)


def test_unconditional_refuses_labels():
    with pytest.raises(ValueError, match="labels"):
        tiny(num_classes=0).generate(torch.tensor([0]), steps=2)
    with pytest.raises(ValueError, match="mask"):
        tiny().loss(torch.zeros(1, L, dtype=torch.long), torch.tensor([0]), mask=torch.zeros(1, L, dtype=torch.bool))


def test_loss_refuses_a_non_generator():
    with pytest.raises(TypeError, match="generator"):
        tiny().loss(torch.zeros(1, L, dtype=torch.long), torch.tensor([0]), generator=0)


@settings(max_examples=30)
@given(length=st.integers(1, 12), data=st.data())
def test_decoding_invariants(length, data):
    steps = data.draw(st.integers(1, length))
    temperature = data.draw(st.sampled_from([0.0, 0.7, 1.0]))
    top_k = data.draw(st.sampled_from([None, 1, 3, V]))
    cfg = data.draw(st.sampled_from([1.0, 0.0, 2.0]))
    choice = data.draw(st.sampled_from([0.0, 4.5]))
    m = tiny(seq_len=length, width=16, depth=1, heads=2)
    noise = torch.Generator().manual_seed(data.draw(st.integers(0, 100)))
    spy = Spy(lambda inputs, labels: torch.randn(inputs.shape[0], length, V, generator=noise))
    m._logits = spy
    out = m.generate(torch.tensor([0, 2]), steps=steps, temperature=temperature, top_k=top_k, cfg_scale=cfg,
                     choice_temperature=choice, generator=torch.Generator().manual_seed(0))
    assert ((out.tokens >= 0) & (out.tokens < V)).all()
    assert len(spy.calls) == out.forward_passes == steps
    assert out.nfe == steps * (1 if cfg == 1.0 else 2)
    masked = [int((inputs[:2] == V).sum(1).max()) for inputs, _ in spy.calls]
    assert masked[0] == length and all(a > b for a, b in zip(masked, masked[1:]))
