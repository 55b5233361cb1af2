"""The check for the token-generator kind: :func:`check_generator`."""

from __future__ import annotations

import copy
import math
import tempfile
from typing import Any, Optional

import torch
from torch import Tensor

from .checker import _Checker, _instance, _mismatch, _shape

# the dependence properties run on a copy whose floating parameters get this much N(0, 1) noise,
# so that zero-initialised layers (adaLN-Zero gates, zero output projections) are not identities
PERTURB_STD = 0.5


def check_generator(make: Any, *, vocab_size: int, seq_len: int, num_classes: int, max_examples: int = 4,
                    steps: Optional[tuple[int, ...]] = None) -> dict[str, int]:
    """Check a token generator (a :class:`flowmo.generators.TokenGenerator` or a zero-argument
    factory) built with the wiring ``vocab_size``, ``seq_len`` and ``num_classes``, on batches
    of 1 .. 3 random token sequences (and random classes when ``num_classes`` > 0).

    Args:
        make: the generator, or a zero-argument factory returning one.
        vocab_size, seq_len, num_classes: the wiring it was built with (checked against its
            attributes).
        max_examples: examples per property (>= 1).
        steps: the step counts to ask ``generate`` for besides the default (None: 1, 2 and
            ``seq_len``). A count the generator refuses with a ValueError (an autoregressive
            generator takes only ``seq_len``) is skipped; one it accepts must be reported back.

    Properties (each failure raises AssertionError naming the property):

    - ``attributes``: ``vocab_size``, ``seq_len``, ``num_classes`` equal the wiring; ``name`` is a
      non-empty string; ``default_steps`` is None or an int >= 1; ``config()`` is a dict holding the
      wiring.
    - ``loss``: train and eval mode: ``loss`` returns a :class:`flowmo.LossOutput` whose ``total`` is
      a finite float32 scalar with a gradient, whose ``terms`` (named by strings) sum to it, with
      the same term names in both modes; its backward (train mode) gives every trainable
      parameter a finite gradient.
    - ``loss_deterministic``: the same ``torch.Generator`` seed gives the same loss (train mode).
    - ``loss_uses_every_input``: eval mode, on a copy whose parameters are perturbed
      (:data:`PERTURB_STD`): changing one token of any sample (a few positions per sample), or
      (class-conditional) one sample's class, changes the loss drawn with the same seed: the loss
      ignores no sample, position or label it is given (a loss computed on part of the batch, a
      teacher-forced loss that drops a position, a class embedding never read all fail).
    - ``generate``: ``GenerationOutput`` with ``tokens`` int64 (B, seq_len) on the generator's
      device, every value in [0, vocab_size) (no position left unfilled, e.g. as [MASK]);
      ``steps`` an int >= 1, ``forward_passes`` >= ``steps``; ``nfe`` = ``forward_passes``
      unguided and 2 * ``forward_passes`` guided; the network really is evaluated that often (the
      least-called module holding parameters is called at most, the most-called at least,
      ``forward_passes`` times: forward hooks); the train/eval mode is restored.
    - ``steps``: the default count reported, asked again explicitly, is reported back and gives
      the same tokens (same seed); every other count of ``steps`` the generator accepts is
      reported back as asked.
    - ``cfg_one_is_no_guidance`` (class-conditional): ``cfg_scale=1`` makes no unconditional pass
      (``nfe`` = ``forward_passes``) and gives the tokens of a call without ``cfg_scale``;
      ``cfg_scale=2`` makes one (``nfe`` = 2 * ``forward_passes``).
    - ``seeded``: the same ``torch.Generator`` seed gives the same tokens even when torch's global
      RNG is reseeded in between (every draw comes from the generator given); different seeds
      give different tokens (temperature 1, four samples, over three seed pairs).
    - ``batch_independent`` (class-conditional): on the perturbed copy, a sample's tokens do not
      depend on the classes of the other samples of its batch (same seed, same draws).
    - ``save_load``: ``save_pretrained`` then ``type(g).from_pretrained`` gives the same config,
      a bit-identical state dict, the same metadata, the same tokens for the same seed and the same
      eval-mode loss.

    Returns ``{property: examples run}``. Runs on the device of the generator's parameters;
    restores the generator's train/eval mode and leaves its parameters unchanged.
    """
    from ..generators.base import GenerationOutput, TokenGenerator
    from ..model import LossOutput

    ck = _Checker("check_generator", max_examples)
    st = ck.st
    for arg, v, low in (("vocab_size", vocab_size, 2), ("seq_len", seq_len, 1), ("num_classes", num_classes, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{arg} must be an int >= {low}, got {v!r}")
    if steps is not None and (not isinstance(steps, tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in steps)):
        raise ValueError(f"steps must be None or a tuple of ints >= 1, got {steps!r}")
    gen = _instance(make, TokenGenerator, "check_generator")
    params = list(gen.parameters())
    device = params[0].device if params else torch.device("cpu")
    was_training = gen.training
    conditional = num_classes > 0
    extra_steps = tuple(steps) if steps is not None else tuple(sorted({1, min(2, seq_len), seq_len}))

    def rng(seed: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed)

    def batch(ex):
        b, seed = ex
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, vocab_size, (b, seq_len), generator=g).to(device)
        labels = torch.randint(0, num_classes, (b,), generator=g).to(device) if conditional else None
        return tokens, labels

    def loss_of(model, tokens, labels, seed):
        out = model.loss(tokens, labels, generator=rng(seed))
        if not isinstance(out, LossOutput):
            raise AssertionError(f"loss must return a flowmo.LossOutput, got {type(out).__name__}")
        return out

    def sample(model, labels=None, b=None, seed=0, **kw) -> Any:
        out = model.generate(labels, batch_size=None if labels is not None else b, generator=rng(seed), **kw)
        if not isinstance(out, GenerationOutput):
            raise AssertionError(f"generate must return a GenerationOutput, got {type(out).__name__}")
        return out

    def labels_for(ex):
        b, seed = ex
        if not conditional:
            return None
        return torch.randint(0, num_classes, (b,), generator=torch.Generator().manual_seed(seed + 1)).to(device)

    def perturbed():
        model = copy.deepcopy(gen)
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for p in model.parameters():
                if p.is_floating_point():
                    p.add_(PERTURB_STD * torch.randn(p.shape, generator=g).to(p.device, p.dtype))
        return model.eval()

    examples = st.tuples(st.integers(1, 3), st.integers(0, 2**31 - 1))

    # ------------------------------------------------------------------ properties
    def p_attributes() -> None:
        for attr, want in (("vocab_size", vocab_size), ("seq_len", seq_len), ("num_classes", num_classes)):
            got = getattr(gen, attr, None)
            if got != want or isinstance(got, bool) or not isinstance(got, int):
                raise AssertionError(f"{attr} is {got!r}; it was built with {attr}={want}")
        if not isinstance(type(gen).name, str) or not type(gen).name:
            raise AssertionError(f"the class attribute name must be a non-empty string, got {type(gen).name!r}")
        ds = type(gen).default_steps
        if ds is not None and (isinstance(ds, bool) or not isinstance(ds, int) or ds < 1):
            raise AssertionError(f"default_steps must be None or an int >= 1, got {ds!r}")
        cfg = gen.config()
        if not isinstance(cfg, dict) or any(cfg.get(k) != v for k, v in
                                            (("vocab_size", vocab_size), ("seq_len", seq_len),
                                             ("num_classes", num_classes))):
            raise AssertionError(f"config() must be a dict holding the wiring (vocab_size={vocab_size}, "
                                 f"seq_len={seq_len}, num_classes={num_classes}), got {cfg!r:.200}")

    def p_loss(ex) -> None:
        tokens, labels = batch(ex)
        names: dict[str, list] = {}
        for mode in ("eval", "train"):
            gen.train(mode == "train")
            gen.zero_grad(set_to_none=True)
            out = loss_of(gen, tokens, labels, ex[1])
            total = out.total
            if not isinstance(total, Tensor) or total.ndim != 0 or total.dtype != torch.float32:
                raise AssertionError(f"{mode} mode: total must be a float32 scalar, got "
                                     f"{getattr(total, 'dtype', type(total).__name__)} {_shape(total)}")
            if not bool(torch.isfinite(total)):
                raise AssertionError(f"{mode} mode: the loss is not finite ({float(total.detach())})")
            if not total.requires_grad:
                raise AssertionError(f"{mode} mode: the loss has no gradient (requires_grad is False)")
            terms = out.terms
            if not isinstance(terms, dict) or not terms or not all(isinstance(k, str) and k for k in terms):
                raise AssertionError(f"{mode} mode: terms must be a non-empty dict of named scalars, got {terms!r:.200}")
            names[mode] = sorted(terms)
            if mode == "train" and names["train"] != names["eval"]:
                raise AssertionError(f"the loss terms depend on the module's mode: eval mode gives {names['eval']}, "
                                     f"train mode {names['train']} (a loaded generator is in eval mode: a term that "
                                     "reads self.training silently changes a fine-tuning loop that forgot .train())")
            summed = sum(float(v.detach()) if isinstance(v, Tensor) else float(v) for v in terms.values())
            if not math.isclose(summed, float(total.detach()), rel_tol=1e-5, abs_tol=1e-6):
                raise AssertionError(f"{mode} mode: the terms {sorted(terms)} sum to {summed}, not total {float(total.detach())}")
            if mode == "train":
                total.backward()
                missing = [n for n, p in gen.named_parameters() if p.requires_grad and p.grad is None]
                if missing:
                    raise AssertionError(f"parameters get no gradient from the loss: {missing[:5]}")
                bad = [n for n, p in gen.named_parameters() if p.grad is not None
                       and not bool(torch.isfinite(p.grad).all())]
                if bad:
                    raise AssertionError(f"non-finite gradients of {bad[:5]}")
        gen.zero_grad(set_to_none=True)

    def p_loss_deterministic(ex) -> None:
        tokens, labels = batch(ex)
        gen.train()
        with torch.no_grad():
            a = loss_of(gen, tokens, labels, ex[1]).total
            b = loss_of(gen, tokens, labels, ex[1]).total
        if not torch.equal(a, b):
            raise AssertionError(f"non-deterministic: the same generator seed gave the losses {float(a)!r} and {float(b)!r}")

    def p_loss_uses_every_input(ex) -> None:
        model = perturbed()
        tokens, labels = batch((ex[0] + 1, ex[1]))  # at least two samples
        with torch.no_grad():
            base = loss_of(model, tokens, labels, ex[1]).total
            g = torch.Generator().manual_seed(ex[1] + 7)
            for i in range(tokens.shape[0]):
                positions = torch.randperm(seq_len, generator=g)[:4].tolist()
                if seq_len - 1 not in positions:
                    positions.append(seq_len - 1)  # the last position (teacher forcing may drop it)
                for j in positions:
                    changed = tokens.clone()
                    changed[i, j] = (changed[i, j] + 1) % vocab_size
                    if torch.equal(loss_of(model, changed, labels, ex[1]).total, base):
                        raise AssertionError(f"changing the token at position {j} of sample {i} leaves the loss "
                                             "unchanged: the loss ignores it")
                if conditional and num_classes > 1:
                    other = labels.clone()
                    other[i] = (other[i] + 1) % num_classes
                    if torch.equal(loss_of(model, tokens, other, ex[1]).total, base):
                        raise AssertionError(f"changing the class of sample {i} leaves the (eval-mode) loss "
                                             "unchanged: the loss ignores the labels")

    def counting(model):
        counts: dict[str, int] = {}
        handles = []
        for name, m in model.named_modules():
            if any(True for _ in m.parameters(recurse=False)):
                counts[name] = 0

                def hook(_m, _i, _o, name=name):
                    counts[name] += 1

                handles.append(m.register_forward_hook(hook))
        return counts, handles

    def check_output(out, b: int, guided: bool, counts: dict[str, int], what: str) -> None:
        tok = out.tokens
        if not isinstance(tok, Tensor) or tok.dtype != torch.int64 or tuple(tok.shape) != (b, seq_len):
            raise AssertionError(f"{what}: tokens must be int64 ({b}, {seq_len}), got "
                                 f"{getattr(tok, 'dtype', type(tok).__name__)} {_shape(tok)}")
        if tok.device != device:
            raise AssertionError(f"{what}: tokens are on {tok.device}, not the generator's device {device}")
        if tok.numel() and (int(tok.min()) < 0 or int(tok.max()) >= vocab_size):
            bad = ((tok < 0) | (tok >= vocab_size)).nonzero()[0].tolist()
            raise AssertionError(f"{what}: every position must be filled with a token in [0, {vocab_size}); "
                                 f"position {bad[1]} of sample {bad[0]} holds {int(tok[bad[0], bad[1]])}")
        for field in ("steps", "forward_passes", "nfe"):
            v = getattr(out, field)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AssertionError(f"{what}: {field} must be an int >= 1, got {v!r}")
        if out.forward_passes < out.steps:
            raise AssertionError(f"{what}: forward_passes ({out.forward_passes}) < steps ({out.steps}): every step "
                                 "evaluates the network at least once")
        want = 2 * out.forward_passes if guided else out.forward_passes
        if out.nfe != want:
            raise AssertionError(f"{what}: nfe is {out.nfe}; with {'' if guided else 'no '}guidance it must be "
                                 f"{'2 * ' if guided else ''}forward_passes = {want}")
        called = [c for c in counts.values() if c > 0]
        if called and not min(called) <= out.forward_passes <= max(called):
            raise AssertionError(f"{what}: forward_passes is {out.forward_passes} but the network's modules were "
                                 f"called {min(called)} .. {max(called)} times")

    def p_generate(ex) -> None:
        b, seed = ex
        labels = labels_for(ex)
        for mode, temperature in (("train", 1.0), ("eval", 0.0)):
            gen.train(mode == "train")
            counts, handles = counting(gen)
            try:
                out = sample(gen, labels, b, seed, temperature=temperature)
            finally:
                for h in handles:
                    h.remove()
            if gen.training != (mode == "train"):
                raise AssertionError(f"generate left the generator in {'train' if gen.training else 'eval'} mode; "
                                     f"it was in {mode} mode")
            check_output(out, b, False, counts, f"{mode} mode, temperature {temperature}")

    def p_steps(ex) -> None:
        b, seed = ex
        labels = labels_for(ex)
        gen.eval()
        first = sample(gen, labels, b, seed)
        again = sample(gen, labels, b, seed, steps=first.steps)
        if again.steps != first.steps:
            raise AssertionError(f"asked for steps={first.steps} (the default count it reported), it reported "
                                 f"{again.steps}")
        if not torch.equal(first.tokens, again.tokens):
            raise AssertionError(f"steps=None and steps={first.steps} (the default it reported) gave different "
                                 f"tokens: {_mismatch(first.tokens, again.tokens)}")
        for s in extra_steps:
            try:
                counts, handles = counting(gen)
                try:
                    out = sample(gen, labels, b, seed, steps=s)
                finally:
                    for h in handles:
                        h.remove()
            except ValueError as e:
                if "steps" not in str(e):
                    raise
                continue  # a step count this generator refuses (it says so)
            if out.steps != s:
                raise AssertionError(f"asked for steps={s}, it reported steps={out.steps}")
            check_output(out, b, False, counts, f"steps={s}")

    def p_cfg(ex) -> None:
        b, seed = ex
        labels = labels_for(ex)
        gen.eval()
        plain = sample(gen, labels, b, seed)
        one = sample(gen, labels, b, seed, cfg_scale=1.0)
        if one.nfe != one.forward_passes:
            raise AssertionError(f"cfg_scale=1 made an unconditional pass (nfe {one.nfe}, forward_passes "
                                 f"{one.forward_passes}): guidance 1 must be exactly no guidance")
        if not torch.equal(plain.tokens, one.tokens):
            raise AssertionError(f"cfg_scale=1 and no cfg_scale gave different tokens: {_mismatch(plain.tokens, one.tokens)}")
        counts, handles = counting(gen)
        try:
            two = sample(gen, labels, b, seed, cfg_scale=2.0)
        finally:
            for h in handles:
                h.remove()
        check_output(two, b, True, counts, "cfg_scale=2")

    def p_seeded(ex) -> None:
        b, seed = ex
        labels = labels_for(ex)
        gen.eval()
        torch.manual_seed(seed)
        a = sample(gen, labels, b, seed)
        torch.manual_seed(seed + 1)
        c = sample(gen, labels, b, seed)
        if not torch.equal(a.tokens, c.tokens):
            raise AssertionError("the same generator seed gave different tokens once torch's global RNG was reseeded: "
                                 f"a draw does not come from the generator given ({_mismatch(a.tokens, c.tokens)})")
        four = torch.arange(4, device=device) % max(num_classes, 1) if conditional else None
        for k in range(3):
            x = sample(gen, four, 4, seed + 2 * k, temperature=1.0).tokens
            y = sample(gen, four, 4, seed + 2 * k + 1, temperature=1.0).tokens
            if not torch.equal(x, y):
                return
        raise AssertionError("different generator seeds always gave the same tokens (temperature 1): the generator "
                             "seed is ignored")

    def p_batch_independent(ex) -> None:
        b, seed = ex
        model = perturbed()
        labels = torch.randint(0, num_classes, (b + 1,), generator=torch.Generator().manual_seed(seed)).to(device)
        a = sample(model, labels, b + 1, seed, temperature=1.0).tokens
        other = labels.clone()
        other[1:] = (other[1:] + 1) % num_classes
        c = sample(model, other, b + 1, seed, temperature=1.0).tokens
        if not torch.equal(a[0], c[0]):
            raise AssertionError(f"sample 0's tokens changed when only the other samples' classes changed (same seed): "
                                 f"{_mismatch(a[:1], c[:1])}")

    def p_save_load() -> None:
        gen.eval()
        tokens, labels = batch((2, 5))
        meta = {"kit": "check_generator", "layout": {"kind": "token"}}
        with tempfile.TemporaryDirectory() as tmp:
            gen.save_pretrained(tmp, metadata=meta)
            loaded = type(gen).from_pretrained(tmp, device=device)
        if loaded.config() != gen.config():
            raise AssertionError(f"the loaded generator's config {loaded.config()!r:.200} differs from "
                                 f"{gen.config()!r:.200}")
        if loaded.metadata != meta:
            raise AssertionError(f"the metadata came back as {loaded.metadata!r:.200}, not {meta!r}")
        a, c = gen.state_dict(), loaded.state_dict()
        if sorted(a) != sorted(c):
            raise AssertionError(f"the state dict keys differ: {sorted(set(a) ^ set(c))[:5]}")
        for k in a:
            if a[k].dtype != c[k].dtype or not torch.equal(a[k], c[k].to(a[k].device)):
                raise AssertionError(f"{k} is not bit-identical after save/load: {_mismatch(a[k], c[k])}")
        labels2 = labels_for((2, 9))
        x = sample(gen, labels2, 2, 11).tokens
        y = sample(loaded, labels2, 2, 11).tokens
        if not torch.equal(x, y):
            raise AssertionError(f"the loaded generator samples other tokens for the same seed: {_mismatch(x, y)}")
        with torch.no_grad():
            la = loss_of(gen, tokens, labels, 3).total
            lb = loss_of(loaded.eval(), tokens, labels, 3).total
        if not torch.equal(la, lb):
            raise AssertionError(f"the loaded generator's eval loss is {float(lb)!r}, not {float(la)!r}")

    rng_state = torch.get_rng_state()  # ``seeded`` reseeds the global RNG: restored below
    try:
        ck.once("attributes", p_attributes)
        ck.run("loss", examples, p_loss)
        ck.run("loss_deterministic", examples, p_loss_deterministic, max_examples=min(max_examples, 2))
        ck.run("loss_uses_every_input", examples, p_loss_uses_every_input, max_examples=min(max_examples, 2))
        with torch.no_grad():
            ck.run("generate", examples, p_generate)
            ck.run("seeded", examples, p_seeded, max_examples=min(max_examples, 2))
            ck.run("steps", examples, p_steps, max_examples=min(max_examples, 2))
            if conditional:
                ck.run("cfg_one_is_no_guidance", examples, p_cfg, max_examples=min(max_examples, 2))
            if conditional:
                ck.run("batch_independent", examples, p_batch_independent, max_examples=min(max_examples, 3))
        ck.once("save_load", p_save_load)
    finally:
        torch.set_rng_state(rng_state)
        gen.train(was_training)
        gen.zero_grad(set_to_none=True)
    return ck.report
