"""Token generators as a component kind: the GENERATORS registry and its wiring, GeneratorSpec,
one-line registration of a user's generator (folders record its module), check_constructed, and
the conformance kit check_generator: it passes the built-ins and catches seeded faults."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flowmo
from flowmo.generators import (AutoregressiveGenerator, GenerationOutput, MaskGiT, TokenGenerator, load_generator,
                               read_generator_config)
from flowmo.model import LossOutput
from flowmo.registry import RegistryError
from flowmo.testing import check_component, check_generator

V, L, C = 16, 8, 3
SMALL = {"width": 32, "depth": 2, "heads": 2, "mlp_ratio": 2.0}
WIRING = {"vocab_size": V, "seq_len": L, "num_classes": C}


@pytest.fixture
def cleanup():
    names = []
    yield names
    for n in names:
        if n in flowmo.GENERATORS:
            flowmo.GENERATORS.unregister(n)


# ----------------------------------------------------------------------------- a user's generator
class Unigram(TokenGenerator):
    """Independent positions: per (class, position) logits over the vocabulary. One forward pass."""

    name = "test_unigram"
    default_steps = None

    def __init__(self, *, vocab_size: int, seq_len: int, num_classes: int = 0, scale: float = 1.0):
        super().__init__()
        self.vocab_size, self.seq_len, self.num_classes, self.scale = vocab_size, seq_len, num_classes, scale
        self.table = nn.Embedding(num_classes + 1, seq_len * vocab_size)

    def config(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len, "num_classes": self.num_classes,
                "scale": self.scale}

    def _logits(self, labels):
        return self.scale * self.table(labels).view(-1, self.seq_len, self.vocab_size)

    def loss(self, tokens, labels=None, *, generator=None):
        tokens = self.check_tokens(tokens)
        labels = self.training_labels(labels, tokens.shape[0])
        ce = F.cross_entropy(self._logits(labels).reshape(-1, self.vocab_size), tokens.reshape(-1))
        return LossOutput(ce, {"ce": ce})

    def generate(self, labels=None, *, batch_size=None, steps=None, temperature=1.0, cfg_scale=1.0, top_k=None,
                 generator=None):
        from flowmo.generators import guide, sample_logits, top_k_filter

        labels, guided, temperature, cfg_scale, top_k = self.sampling_inputs(labels, batch_size, temperature,
                                                                             cfg_scale, top_k, generator)
        if steps is not None and steps != 1:
            raise ValueError(f"steps must be None or 1 for this generator, got {steps}")
        with torch.no_grad():
            if guided:
                cond, uncond = self._logits(torch.cat((labels, torch.full_like(labels, self.null_class)))).chunk(2)
                logits = guide(cond, uncond, cfg_scale)
            else:
                logits = self._logits(labels)
            tokens = sample_logits(top_k_filter(logits, top_k), temperature, generator=generator)
        return GenerationOutput(tokens, 1, 2 if guided else 1, 1)


def test_the_kind_is_declared_beside_the_others():
    reg = flowmo.GENERATORS
    assert flowmo.REGISTRIES["generator"] is reg
    assert reg.wiring == ("vocab_size", "seq_len", "num_classes")
    assert reg.interface is TokenGenerator and reg.spec_base is flowmo.GeneratorSpec
    assert {"maskgit", "autoregressive"} <= set(reg)
    assert reg.get("maskgit").factory is MaskGiT and reg.get("autoregressive").factory is AutoregressiveGenerator
    assert reg.get("maskgit").builtin


def test_the_spec_is_derived_from_the_constructor_without_the_wiring():
    spec = flowmo.GeneratorSpec.model_validate({"name": "maskgit", "width": 64})
    fields = set(type(spec).model_fields)
    assert fields == {"name", "width", "depth", "heads", "mlp_ratio", "label_dropout", "rope_theta"}
    assert spec.width == 64 and spec.depth == 6  # the constructor's defaults
    again = flowmo.GeneratorSpec.model_validate_json(spec.model_dump_json())
    assert again == spec and type(again) is type(spec)
    with pytest.raises(ValueError):
        flowmo.GeneratorSpec.model_validate({"name": "maskgit", "width": "wide"})
    with pytest.raises(ValueError, match="unknown token generator 'nope'"):
        flowmo.GeneratorSpec.model_validate({"name": "nope"})


@pytest.mark.parametrize("name,cls", [("maskgit", MaskGiT), ("autoregressive", AutoregressiveGenerator)])
def test_build_passes_the_wiring(name, cls):
    g = flowmo.GENERATORS.build({"name": name, **SMALL}, **WIRING)
    assert type(g) is cls and (g.vocab_size, g.seq_len, g.num_classes, g.width) == (V, L, C, 32)
    assert flowmo.GENERATORS.build(name, vocab_size=5, seq_len=3, num_classes=0).num_classes == 0
    with pytest.raises(TypeError, match="missing num_classes"):
        flowmo.GENERATORS.build(name, vocab_size=V, seq_len=L)
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        flowmo.GENERATORS.build(name, vocab_size=0, seq_len=L, num_classes=0)
    with pytest.raises(ValueError, match="num_classes"):
        flowmo.GENERATORS.build(name, vocab_size=V, seq_len=L, num_classes=-1)


def test_a_users_generator_registers_in_one_line_and_passes_the_kit(cleanup, tmp_path):
    flowmo.GENERATORS.register("test_unigram")(Unigram)
    cleanup.append("test_unigram")
    spec = flowmo.GeneratorSpec.model_validate({"name": "test_unigram", "scale": 2.0})
    g = flowmo.GENERATORS.build(spec, **WIRING)
    assert isinstance(g, Unigram) and g.scale == 2.0
    report = check_component(spec, max_examples=3, **WIRING)
    assert report["save_load"] == 1 and report["batch_independent"] >= 1
    # its folder records the module that registered it, and loads through the registry
    g.save_pretrained(tmp_path / "g", metadata={"classes": ["a", "b", "c"]})
    doc = json.loads((tmp_path / "g" / "config.json").read_text())
    assert doc["generator"] == "test_unigram" and doc["imports"] == [Unigram.__module__]
    loaded = load_generator(tmp_path / "g")
    assert type(loaded) is Unigram and loaded.metadata == {"classes": ["a", "b", "c"]}
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), loaded.state_dict().values()))
    # a built-in generator's folder records no module
    MaskGiT(vocab_size=V, seq_len=L, **SMALL).save_pretrained(tmp_path / "m")
    assert "imports" not in json.loads((tmp_path / "m" / "config.json").read_text())


def test_loading_an_unregistered_generator_names_the_module_to_import(cleanup, tmp_path):
    flowmo.GENERATORS.register("test_unigram")(Unigram)
    cleanup.append("test_unigram")
    Unigram(vocab_size=V, seq_len=L, num_classes=C).save_pretrained(tmp_path / "g")
    flowmo.GENERATORS.unregister("test_unigram")
    with pytest.raises(ValueError, match=rf"token generator 'test_unigram'.*not registered.*import {Unigram.__module__}"):
        load_generator(tmp_path / "g")
    # a recorded module that is not imported is named too
    doc = json.loads((tmp_path / "g" / "config.json").read_text())
    doc["imports"] = ["not_imported_pkg.gens"]
    (tmp_path / "g" / "config.json").write_text(json.dumps(doc))
    flowmo.GENERATORS.register("test_unigram")(Unigram)
    with pytest.raises(ValueError, match="not_imported_pkg.gens.*not imported"):
        load_generator(tmp_path / "g")
    doc["imports"] = ["bad/path.py"]
    (tmp_path / "g" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="file name"):
        read_generator_config(tmp_path / "g")


def test_build_checks_what_the_constructor_set(cleanup):
    class Forgets(Unigram):
        name = "test_forgets"

        def __init__(self, *, vocab_size: int, seq_len: int, num_classes: int = 0):
            super().__init__(vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes)
            del self.seq_len

    class Misnamed(Unigram):
        name = "another_name"

    flowmo.GENERATORS.register("test_forgets")(Forgets)
    flowmo.GENERATORS.register("test_misnamed")(Misnamed)
    cleanup += ["test_forgets", "test_misnamed"]
    with pytest.raises(TypeError, match="does not set seq_len"):
        flowmo.GENERATORS.build("test_forgets", **WIRING)
    with pytest.raises(ValueError, match="name is 'another_name' but the class is registered as 'test_misnamed'"):
        flowmo.GENERATORS.build("test_misnamed", **WIRING)


def test_registration_refuses_a_generator_without_the_wiring(cleanup):
    class NoWiring(Unigram):
        def __init__(self, *, scale: float = 1.0):
            super().__init__(vocab_size=2, seq_len=1, scale=scale)

    with pytest.raises(RegistryError, match="must take the keyword argument.*vocab_size"):
        flowmo.GENERATORS.register("test_nowiring")(NoWiring)


# ----------------------------------------------------------------------------- the kit on the built-ins
@pytest.mark.parametrize("cls", [MaskGiT, AutoregressiveGenerator])
@pytest.mark.parametrize("classes", [C, 0])
def test_the_kit_passes_the_builtins(cls, classes):
    report = check_generator(cls(vocab_size=V, seq_len=L, num_classes=classes, **SMALL), vocab_size=V, seq_len=L,
                             num_classes=classes, max_examples=3)
    expected = {"attributes", "loss", "loss_deterministic", "loss_uses_every_input", "generate", "steps", "seeded",
                "save_load"} | ({"cfg_one_is_no_guidance", "batch_independent"} if classes else set())
    assert set(report) == expected and all(n >= 1 for n in report.values())


@pytest.mark.parametrize("cls", [MaskGiT, AutoregressiveGenerator])
def test_the_loss_is_the_same_in_train_and_eval_mode_but_for_label_dropout(cls):
    """Issue 22: the same weights, batch and seed give the same terms in either mode; only label
    dropout (training mode, as nn.Dropout) differs, and eval mode draws what training mode
    draws, so that the masks and later draws match."""
    tokens = torch.randint(0, V, (4, L), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(0)
    g = cls(vocab_size=V, seq_len=L, num_classes=C, label_dropout=1e-9, **SMALL)  # draws, (almost) never drops
    with torch.no_grad():  # away from the initialisation (a zero class embedding ignores the label)
        for p in g.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    out = {mode: g.train(mode).loss(tokens, labels, generator=torch.Generator().manual_seed(2)) for mode in (True, False)}
    assert set(out[True].terms) == set(out[False].terms)
    assert all(torch.equal(out[True].terms[k], out[False].terms[k]) for k in out[True].terms)
    g.label_dropout = 1.0  # every label dropped in training mode, none in eval mode
    dropped = g.train().loss(tokens, labels, generator=torch.Generator().manual_seed(2))
    kept = g.eval().loss(tokens, labels, generator=torch.Generator().manual_seed(2))
    assert set(dropped.terms) == set(kept.terms)
    assert torch.equal(kept.total, out[False].total)  # eval mode: no dropout, whatever its rate
    assert not torch.equal(dropped.total, kept.total)


class _TrainOnlyTerm(MaskGiT):
    """Adds a (zero) term in training mode only."""

    def loss(self, tokens, labels=None, *, generator=None, mask=None):
        out = super().loss(tokens, labels, generator=generator, mask=mask)
        if self.training:
            out.terms["regulariser"] = 0.0 * out.total
        return out


def test_the_kit_catches_loss_terms_that_depend_on_the_mode():
    with pytest.raises(AssertionError, match=r"property 'loss' failed: the loss terms depend on the module's mode: "
                                             r"eval mode gives \['masked_ce'\], train mode \['masked_ce', 'regulariser'\]"):
        check_generator(_TrainOnlyTerm(vocab_size=V, seq_len=L, num_classes=C, **SMALL), vocab_size=V, seq_len=L,
                        num_classes=C, max_examples=2)


def test_the_kit_leaves_the_generator_as_it_was():
    g = MaskGiT(vocab_size=V, seq_len=L, num_classes=C, **SMALL).train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    check_generator(g, vocab_size=V, seq_len=L, num_classes=C, max_examples=2)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is restored
    assert g.training and all(torch.equal(before[k], v) for k, v in g.state_dict().items())


def test_the_kit_checks_its_arguments():
    g = MaskGiT(vocab_size=V, seq_len=L, num_classes=C, **SMALL)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 2"):
        check_generator(g, vocab_size=1, seq_len=L, num_classes=C)
    with pytest.raises(AssertionError, match="attributes.*seq_len is 8; it was built with seq_len=9"):
        check_generator(g, vocab_size=V, seq_len=9, num_classes=C)
    with pytest.raises(AssertionError, match="expected a flowmo.generators.base.TokenGenerator"):
        check_generator(torch.nn.Linear(2, 2), vocab_size=V, seq_len=L, num_classes=C)


# ----------------------------------------------------------------------------- seeded faults
def tiny_maskgit(cls=MaskGiT, classes=C):
    return cls(vocab_size=V, seq_len=L, num_classes=classes, **SMALL)


class LeavesMasks(MaskGiT):
    """Returns [MASK] (= vocab_size) at the last position."""

    def generate(self, *args, **kw):
        out = super().generate(*args, **kw)
        out.tokens[:, -1] = self.mask_id
        return out


class IgnoresSeed(MaskGiT):
    """Draws from torch's global RNG instead of the generator given."""

    def generate(self, labels=None, *, generator=None, **kw):
        return super().generate(labels, generator=None, **kw)


class DeterministicAnyway(MaskGiT):
    """Ignores the seed by never drawing: argmax tokens, no confidence noise."""

    def generate(self, labels=None, *, temperature=1.0, **kw):
        return super().generate(labels, temperature=0.0, choice_temperature=0.0, **kw)


class MixesBatch(MaskGiT):
    """Every sample's logits get the batch mean added: samples see each other."""

    def _logits(self, inputs, labels):
        out = super()._logits(inputs, labels)
        return out + out.mean(0, keepdim=True)


class IgnoresSteps(MaskGiT):
    """Always decodes in its default step count, whatever was asked (and reports that)."""

    def generate(self, labels=None, *, steps=None, **kw):
        return super().generate(labels, **kw)


class OverreportsPasses(MaskGiT):
    def generate(self, *args, **kw):
        out = super().generate(*args, **kw)
        out.forward_passes *= 3
        out.nfe *= 3
        return out


class GuidesAtOne(MaskGiT):
    """Makes the unconditional pass even at cfg_scale 1."""

    def sampling_inputs(self, *args):
        labels, guided, temperature, cfg_scale, top_k = super().sampling_inputs(*args)
        return labels, guided or self.num_classes > 0, temperature, cfg_scale, top_k


class LossOnFirstSample(AutoregressiveGenerator):
    def loss(self, tokens, labels=None, *, generator=None):
        return super().loss(tokens[:1], None if labels is None else labels[:1], generator=generator)


class LossDropsLastPosition(AutoregressiveGenerator):
    """Teacher forcing that never predicts the last token."""

    def loss(self, tokens, labels=None, *, generator=None):
        labels = self.training_labels(labels, tokens.shape[0])
        logits = self._logits(tokens[:, :-1], labels)[:, :-1]
        ce = F.cross_entropy(logits.reshape(-1, self.vocab_size), tokens[:, :-1].reshape(-1))
        return LossOutput(ce, {"next_token_ce": ce})


class LossIgnoresLabels(MaskGiT):
    def loss(self, tokens, labels=None, *, generator=None, mask=None):
        return super().loss(tokens, None if labels is None else torch.zeros_like(labels), generator=generator,
                            mask=mask)


class TermsDoNotSum(MaskGiT):
    def loss(self, *args, **kw):
        out = super().loss(*args, **kw)
        return LossOutput(out.total, {"masked_ce": out.total * 0.5})


class ForgetsDepthInConfig(MaskGiT):
    def config(self):
        cfg = super().config()
        del cfg["depth"]
        return cfg


class NonFiniteLoss(MaskGiT):
    def loss(self, *args, **kw):
        out = super().loss(*args, **kw)
        bad = out.total * float("nan")
        return LossOutput(bad, {"masked_ce": bad})


class ChangesMode(MaskGiT):
    def generate(self, *args, **kw):
        out = super().generate(*args, **kw)
        self.eval()
        return out


FAULTS = [
    (LeavesMasks, "generate", "every position must be filled"),
    (IgnoresSeed, "seeded", "global RNG"),
    (DeterministicAnyway, "seeded", "seed is ignored"),
    (MixesBatch, "batch_independent", "sample 0's tokens changed"),
    (IgnoresSteps, "steps", "it reported steps=8"),
    (OverreportsPasses, "generate", "modules were called"),
    (GuidesAtOne, "generate", "with no guidance it must be forward_passes"),
    (LossOnFirstSample, "loss_uses_every_input", "of sample 1 leaves the loss unchanged"),
    (LossDropsLastPosition, "loss_uses_every_input", f"position {L - 1} of sample 0 leaves the loss unchanged"),
    (LossIgnoresLabels, "loss_uses_every_input", "the loss ignores the labels"),
    (TermsDoNotSum, "loss", "sum to"),
    (NonFiniteLoss, "loss", "not finite"),
    (ForgetsDepthInConfig, "save_load", ""),
    (ChangesMode, "generate", "left the generator in eval mode"),
]


@pytest.mark.parametrize("cls,prop,message", FAULTS, ids=[f[0].__name__ for f in FAULTS])
def test_the_kit_catches_seeded_faults(cls, prop, message):
    g = tiny_maskgit(cls)
    with pytest.raises(AssertionError) as info:
        check_generator(g, vocab_size=V, seq_len=L, num_classes=C, max_examples=3)
    text = str(info.value)
    assert f"property {prop!r} failed" in text, text
    assert message in text, text
