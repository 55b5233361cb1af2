"""The continuous FlowMo (issue 25): the ``kl`` bottleneck (a diagonal Gaussian posterior, the
release's layout and loss) and ``identity`` (the release's ``noop``): their math, the kit's
continuous and stochastic properties (and the faults they catch), the model's wiring and draws,
every token path's refusal, and training, saving, loading and evaluating from Python and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowmo
from flowmo import cli
from flowmo.quantizers import DiagonalGaussian, Identity, QuantizerOutput
from flowmo.quantizers.kl import LOGVAR_RANGE
from flowmo.testing import check_component, check_quantizer

from conftest import random_png_folder

NO_TOKENS = r"bottleneck 'kl' is continuous: it has no tokens \(.* needs a discrete quantizer such as lfq\)"
COMMON = {"output", "deterministic", "inference", "batch_independent", "gradients", "losses", "bfloat16", "all_zero",
          "extreme", "input_unchanged", "empty", "continuous", "state", "state_roundtrip"}


def kl_spec(**changes) -> flowmo.FlowMoSpec:
    return flowmo.flowmo_tiny().replace(quantizer={"name": "kl", **changes})


# ----------------------------------------------------------------------------- the kl math
def release_split(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's layout written out: b t f -> b (f t), two halves, each back to (B, T, C)."""
    b, t, f = z.shape
    flat = z.permute(0, 2, 1).reshape(b, f * t)  # feature-major: index f * T + t
    mean, logvar = flat.chunk(2, dim=1)
    back = lambda x: x.reshape(b, f // 2, t).permute(0, 2, 1)  # b (f t) -> b t f, f = C
    return back(mean), back(logvar).clamp(*LOGVAR_RANGE)


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**31 - 1))
@settings(max_examples=20)
def test_kl_splits_mean_and_logvar_as_the_release_flattens_feature_major(b, t, c, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, t, 2 * c, generator=g) * 20  # beyond the clamp too
    q = DiagonalGaussian(channels=c)
    mean, logvar = q.posterior(z)
    ref_mean, ref_logvar = release_split(z)
    assert torch.equal(mean, ref_mean) and torch.equal(logvar, ref_logvar)
    assert torch.equal(mean, z[..., :c]) and torch.equal(logvar, z[..., c:].clamp(-30, 20))
    eps = q.draw_noise(b, t, generator=g)
    sample = q.train()(z, noise=eps).values
    torch.testing.assert_close(sample, ref_mean + torch.exp(ref_logvar / 2) * eps, rtol=0, atol=0)
    assert torch.equal(q.eval()(z).values, ref_mean)


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 4), st.floats(0.0, 10.0), st.sampled_from([0.1, 1.0, 5.0]),
       st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_the_kl_loss_is_the_closed_form_in_either_mode(b, t, c, weight, scale, seed):
    z = torch.randn(b, t, 2 * c, generator=torch.Generator().manual_seed(seed)) * scale
    q = DiagonalGaussian(kl_weight=weight, channels=c)
    m, lv = z[..., :c].double(), z[..., c:].double().clamp(-30, 20)
    expected = 0.5 * (m**2 + lv.exp() - 1 - lv).sum() / b  # summed over an image's values, mean over the batch
    for mode in (True, False):
        out = q.train(mode)(z)
        assert out.indices is None and out.values.shape == (b, t, c)
        assert float(out.stats["kl"]) == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
        assert float(out.losses["kl"]) == pytest.approx(weight * float(expected), rel=1e-5, abs=1e-6)
    assert DiagonalGaussian.loss_terms(flowmo.QuantizerSpec.model_validate({"name": "kl", "kl_weight": weight})) == [
        flowmo.LossTerm("kl", weight, DiagonalGaussian.loss_terms(kl_spec().quantizer)[0].what)]


def test_kl_samples_in_training_mode_and_gives_the_mean_at_inference():
    q = DiagonalGaussian(channels=3)
    z = torch.randn(2, 4, 6)
    q.train()
    a, b = q(z), q(z)  # torch's global generator: two samples
    assert not torch.equal(a.values, b.values)
    for mode in (True, False):
        q.train(mode)
        assert torch.equal(q.quantize(z).values, z[..., :3])  # inference: the mean, in either mode
    assert torch.equal(q.eval()(z, noise=torch.randn(2, 4, 3)).values, z[..., :3])
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 4, 3\)"):
        q.train()(z, noise=torch.randn(2, 4, 6))


def test_the_kl_loss_stays_finite_and_is_zero_without_images():
    q = DiagonalGaussian(channels=2)
    huge = torch.full((1, 2, 4), 3e38)
    assert torch.isfinite(q(huge).loss) and torch.isfinite(q(-huge).loss)
    assert float(q(torch.zeros(0, 3, 4)).loss) == 0.0


def test_identity_passes_the_code_unchanged():
    q = Identity(channels=5)
    z = torch.randn(2, 3, 5, requires_grad=True)
    for mode in (True, False):
        out = q.train(mode)(z)
        assert out.values is z and out.indices is None and out.losses == {}


@pytest.mark.parametrize("q", [DiagonalGaussian(channels=3), Identity(channels=3)], ids=["kl", "identity"])
def test_continuous_quantizers_have_no_codebook_and_say_so(q):
    assert not q.discrete and q.codebook_size is None and q.bits_per_token is None and not q.has_groups
    for call in (lambda: q.codes_to_indices(torch.zeros(2, 3)), lambda: q.indices_to_codes(torch.zeros(2, dtype=torch.long)),
                 lambda: q.check_indices(torch.zeros(2, dtype=torch.long))):
        with pytest.raises(ValueError, match="is continuous .*: it has no codebook"):
            call()


def test_the_spec_declares_the_encoder_width_and_no_bits():
    assert kl_spec().quantizer.encoder_channels(18) == 36 and not kl_spec().quantizer.discrete
    assert flowmo.flowmo_tiny().quantizer.encoder_channels(18) == 18 and flowmo.flowmo_tiny().quantizer.discrete
    for name in ("kl", "identity"):
        spec = flowmo.flowmo_tiny().replace(quantizer={"name": name})
        assert spec.bits_per_token is None and spec.bits_per_pixel is None
        assert spec.loss_terms("1a")[-1].name == ("quantizer/kl" if name == "kl" else "diffusion")
    assert flowmo.FlowMoSpec.from_json(kl_spec(kl_weight=0.5).to_json()) == kl_spec(kl_weight=0.5)
    with pytest.raises(ValueError, match="kl_weight"):
        kl_spec(kl_weight=-1.0)


# ----------------------------------------------------------------------------- the conformance kit
@pytest.mark.parametrize("make,channels,extra", [
    (lambda: DiagonalGaussian(channels=4), 4, {"noise", "moments"}),
    (lambda: DiagonalGaussian(kl_weight=0.25, channels=18), 18, {"noise", "moments"}),
    (lambda: Identity(channels=6), 6, set()),
], ids=["kl-4", "kl-18", "identity"])
def test_the_continuous_bottlenecks_pass_the_kit(make, channels, extra):
    report = check_quantizer(make, channels, max_examples=5)
    assert set(report) == COMMON | extra and all(n >= 1 for n in report.values())


def test_check_component_checks_the_declared_encoder_width():
    report = check_component(kl_spec().quantizer, max_examples=2, channels=4)
    assert report["encoder_channels"] == 1 and report["declared_loss_terms"] == 1

    class Narrow(Identity):  # declares 2C for the encoder but takes C
        @classmethod
        def encoder_channels(cls, spec, channels):
            return 2 * channels

    flowmo.QUANTIZERS.register("t25_narrow")(Narrow)
    try:
        spec = flowmo.QuantizerSpec.model_validate({"name": "t25_narrow"})
        with pytest.raises(AssertionError, match="property 'encoder_channels' failed: .* declares encoder_channels"):
            check_component(spec, max_examples=1, channels=4)
        with pytest.raises(ValueError, match=r"its input_channels \(18\) differ from its class's encoder_channels\(spec, 18\) \(36\)"):
            flowmo.build(flowmo.flowmo_tiny().replace(quantizer={"name": "t25_narrow"}))
    finally:
        flowmo.QUANTIZERS.unregister("t25_narrow")


class _UsesNoiseInEval(DiagonalGaussian):
    def forward(self, z, noise=None):
        out = super().forward(z, noise)
        if not self.training and noise is not None:
            out.values = out.values + noise.to(out.values.dtype)
        return out


class _StdIsTheVariance(DiagonalGaussian):
    def forward(self, z, noise=None):
        out = super().forward(z, noise)
        if self.training and noise is not None:
            mean, logvar = self.posterior(z)
            out.values = (mean + logvar.exp() * noise).to(z.dtype)
        return out


class _DrawsItsOwn(DiagonalGaussian):
    def forward(self, z, noise=None):
        return super().forward(z, None)


class _Undeclared(DiagonalGaussian):
    stochastic = False


class _ContinuousWithIndices(Identity):
    def codes_to_indices(self, codes):
        return torch.zeros(codes.shape[:-1], dtype=torch.int64)


@pytest.mark.parametrize("cls,prop,words", [
    (_UsesNoiseInEval, "noise", "eval-mode forward uses the noise it is given"),
    (_StdIsTheVariance, "moments", "over 2000 draws is not the declared"),
    (_DrawsItsOwn, "deterministic", "non-deterministic: two train-mode calls"),
    (_Undeclared, "attributes", "stochastic is False but draw_noise returns draws"),
    (_ContinuousWithIndices, "continuous", "codes_to_indices must raise ValueError"),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_the_kit_catches_broken_continuous_and_stochastic_bottlenecks(cls, prop, words):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed: .*{words}"):
        check_quantizer(lambda: cls(channels=3), 3, max_examples=3)


class _RunningShift(DiagonalGaussian):
    """Stochastic and stateful: the values are shifted by a running mean of the posterior's
    means, updated by every training-mode call (declared state): the kit's stochastic properties
    must each start from the same state, or the same draws give other values."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.register_buffer("shift", torch.zeros(()))

    @property
    def updated_state(self):
        return ("shift",)

    def forward(self, z, noise=None):
        out = super().forward(z, noise)
        out.values = out.values - self.shift.to(out.values.dtype)
        if self.training and z.numel():
            self.shift.mul_(0.5).add_(0.5 * self.posterior(z)[0].detach().float().mean())
        return out

    def quantize(self, z):
        out = super().quantize(z)
        out.values = out.values - self.shift.to(out.values.dtype)
        return out

    def moments(self, z):
        mean, var = super().moments(z)
        return mean - self.shift, var


def test_the_kit_runs_each_stochastic_property_from_the_baseline_state():
    report = check_quantizer(lambda: _RunningShift(channels=3), 3, max_examples=3)
    assert report["noise"] >= 1 and report["moments"] >= 1 and report["state"] >= 1


@pytest.mark.parametrize("args,error,words", [
    ((-1, 2), ValueError, "batch must be an int >= 0, got int -1"),
    ((2, 1.5), TypeError, "tokens must be an int >= 0, got float 1.5"),
    ((True, 2), TypeError, "batch must be an int >= 0, got bool True"),
    ((2, 2, 7), TypeError, "generator must be a torch.Generator or None, got int"),
])
def test_draw_noise_names_a_bad_argument(args, error, words):
    b, t, *g = args
    with pytest.raises(error, match=words):
        DiagonalGaussian(channels=3).draw_noise(b, t, generator=g[0] if g else None)


# ----------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def kl_model() -> flowmo.FlowMo:
    torch.manual_seed(0)
    return flowmo.build(kl_spec())


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_the_encoder_outputs_2c_for_kl_only(kl_model, images):
    shapes = {k: tuple(v.shape) for k, v in kl_model.state_dict().items()}
    lfq = {k: tuple(v.shape) for k, v in flowmo.build(flowmo.flowmo_tiny()).state_dict().items()}
    assert shapes.keys() == lfq.keys()
    assert {k for k in shapes if shapes[k] != lfq[k]} == {"encoder.final_layer_txt.linear.weight",
                                                          "encoder.final_layer_txt.linear.bias"}
    assert shapes["encoder.final_layer_txt.linear.bias"] == (36,) and lfq["encoder.final_layer_txt.linear.bias"] == (18,)
    z = kl_model.encode(images)
    assert z.shape == (2, 16, 36) and kl_model.quantize(z, losses=False).values.shape == (2, 16, 18)


@pytest.mark.parametrize("train", [True, False])
def test_loss_draws_are_the_losses_own_draws_in_their_order(kl_model, images, train):
    kl_model.train(train)
    try:
        draws = kl_model.loss_draws(images, torch.Generator().manual_seed(5))
        assert draws["quantizer_noise"].shape == (2, 16, 18) and draws["quantizer_noise"].dtype == torch.float32
        given = kl_model.loss(images, **draws)
        own = kl_model.loss(images, generator=torch.Generator().manual_seed(5))
        assert torch.equal(given.total, own.total) and set(given.terms) == {"diffusion", "quantizer/kl"}
        # the first draw is the quantizer's: its eps is a plain N(0, I) draw of the generator
        assert torch.equal(draws["quantizer_noise"], torch.randn(2, 16, 18, generator=torch.Generator().manual_seed(5)))
    finally:
        kl_model.eval()


def test_quantizer_noise_is_refused_for_a_deterministic_quantizer(images):
    model = flowmo.build(flowmo.flowmo_tiny())
    with pytest.raises(ValueError, match="quantizer_noise is for a stochastic quantizer \\(kl\\); 'lfq' draws none"):
        model.loss(images, quantizer_noise=torch.zeros(2, 16, 18))


def test_quantize_refuses_noise_without_losses(kl_model, images):
    z = kl_model.encode(images)
    with pytest.raises(ValueError, match="noise is used only with losses=True"):
        kl_model.quantize(z, losses=False, noise=torch.zeros(2, 16, 18))


def test_posttraining_samples_the_code_and_few_step_objectives_run(kl_model, images):
    model = flowmo.build(kl_spec().replace(posttrain={"name": "distillation", "k": 1, "teacher": {"steps": 2}}))
    model.set_teacher()
    model.train()
    eps = torch.randn(2, 16, 18, generator=torch.Generator().manual_seed(3))
    out = model.posttrain_loss(images, generator=torch.Generator().manual_seed(0), quantizer_noise=eps)
    assert set(out.terms) == {"quantizer/kl", "distillation"} and torch.isfinite(out.total)
    # the code is sampled with the given draws (as in Stage 1A): other draws, another loss
    other = model.posttrain_loss(images, generator=torch.Generator().manual_seed(0), quantizer_noise=2 * eps)
    assert not torch.equal(out.total, other.total)
    out.total.backward()
    assert all(p.grad is None for p in model.encoder.parameters())  # the encoder is frozen in Stage 1B


def test_inference_is_deterministic_in_either_mode(kl_model, images):
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    kl_model.eval()
    a = kl_model.reconstruct(images, noise=noise, sampler={"steps": 2})
    kl_model.train()
    try:
        b = kl_model.reconstruct(images, noise=noise, sampler={"steps": 2})
    finally:
        kl_model.eval()
    assert torch.equal(a, b)
    code = kl_model.quantize(kl_model.encode(images), losses=False).values
    assert torch.equal(kl_model.decode(code, noise=noise, sampler={"steps": 2}).images, a)


# ----------------------------------------------------------------------------- token paths refuse
@pytest.fixture(scope="module")
def kl_folder(tmp_path_factory, kl_model) -> Path:
    return kl_model.save_pretrained(tmp_path_factory.mktemp("kl") / "model")


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory) -> Path:
    return random_png_folder(tmp_path_factory.mktemp("pngs"), 4, seed=1)


def _continuous_token_file(path: Path) -> Path:
    """A labelled token file of the tiny LFQ tokenizer whose recorded spec is then replaced by a kl
    one (flowmo never writes such a file: a reader must still refuse it)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from flowmo.data.token_layout import TokenLayout
    from flowmo.data.tokens import write_tokens

    spec = flowmo.flowmo_tiny()
    layout = TokenLayout("group", 16, 2, 512, spec.fingerprint())
    write_tokens(path, torch.zeros(4, 16, 2, dtype=torch.int64), spec=spec, sources=list("abcd"), groups=True,
                 labels=torch.tensor([0, 1, 0, 1]), classes=["x", "y"], layout=layout)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={**meta, "spec": kl_spec().to_json()})
    return path


def _generator():
    from flowmo.generators.build import build_generator

    return build_generator({"name": "maskgit", "width": 32, "depth": 1, "heads": 2}, vocab_size=512, seq_len=32,
                           num_classes=0)


def _cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


PYTHON_PATHS = {
    "tokenize": lambda m, tmp: m.tokenize(torch.zeros(1, 3, 32, 32)),
    "detokenize": lambda m, tmp: m.detokenize(torch.zeros(1, 16, dtype=torch.int64)),
    "tokens_to_code": lambda m, tmp: m.tokens_to_code(torch.zeros(1, 16, dtype=torch.int64)),
    "write_tokens": lambda m, tmp: __import__("flowmo.data.tokens", fromlist=["x"]).write_tokens(
        tmp / "t.safetensors", torch.zeros(1, 16, dtype=torch.int64), spec=m.spec, sources=["a"], groups=False),
    "read_tokens": lambda m, tmp: __import__("flowmo.data.tokens", fromlist=["x"]).read_tokens(
        _continuous_token_file(tmp / "t.safetensors")),
    "token_set_writer": lambda m, tmp: __import__("flowmo.data.token_shards", fromlist=["x"]).TokenShardWriter(
        tmp / "set", spec=m.spec, layout=None, classes=["a"]),
    "read_token_set": lambda m, tmp: __import__("flowmo.data.token_set_reader", fromlist=["x"]).read_token_set(
        _continuous_token_file(tmp / "t.safetensors")),
    "layout_for": lambda m, tmp: __import__("flowmo.data.token_layout", fromlist=["x"]).layout_for(m),
    "generate_images": lambda m, tmp: __import__("flowmo.generators.pipeline", fromlist=["x"]).generate_images(
        _generator(), m, num_images=1),
}


@pytest.mark.parametrize("path", sorted(PYTHON_PATHS))
def test_every_token_path_refuses_a_continuous_model_in_one_sentence(kl_model, tmp_path, path):
    with pytest.raises(ValueError, match=NO_TOKENS) as e:
        PYTHON_PATHS[path](kl_model, tmp_path)
    assert str(e.value).count(". ") == 0 and "\n" not in str(e.value)


def test_training_a_generator_on_a_continuous_tokenizers_tokens_is_refused(tmp_path, capsys):
    from flowmo.train.config import load_generator_config
    from flowmo.train.generator_trainer import GeneratorTrainer

    tokens = _continuous_token_file(tmp_path / "t.safetensors")
    cfg = {"generator": {"name": "maskgit", "width": 32, "depth": 1, "heads": 2},
           "train": {"tokens": str(tokens), "steps": 1, "device": "cpu", "optim": {"batch_size": 2},
                     "log": {"tensorboard": False, "progress": False}}}
    with pytest.raises(ValueError, match=NO_TOKENS):
        GeneratorTrainer(load_generator_config(cfg), tmp_path / "run")
    (tmp_path / "g.json").write_text(json.dumps(cfg))
    rc, err = _cli(["train-generator", "--config", tmp_path / "g.json", "--out", tmp_path / "run2"], capsys)
    assert rc == 2 and "records a tokenizer whose bottleneck 'kl' is continuous: it has no tokens" in err


@pytest.mark.parametrize("command", ["tokenize", "tokenize-classes", "detokenize", "generate"])
def test_the_token_commands_refuse_a_continuous_model(kl_folder, png_folder, tmp_path, capsys, command):
    from flowmo.data.tokens import write_tokens

    lfq = flowmo.build(flowmo.flowmo_tiny())
    tokens = write_tokens(tmp_path / "t.safetensors", torch.zeros(1, 16, dtype=torch.int64), spec=lfq.spec,
                          sources=["a"], groups=False)
    gen = _generator().save_pretrained(tmp_path / "gen") if command == "generate" else None
    argv = {
        "tokenize": ["tokenize", "--model", kl_folder, "--input", png_folder, "--output", tmp_path / "o.safetensors"],
        "tokenize-classes": ["tokenize", "--model", kl_folder, "--input", png_folder, "--output", tmp_path / "s", "--classes"],  # not a class tree: the model is refused first
        "detokenize": ["detokenize", "--model", kl_folder, "--tokens", tokens, "--output", tmp_path / "o"],
        "generate": ["generate", "--generator", gen, "--tokenizer", kl_folder, "--per-class", 1, "--out", tmp_path / "o"],
    }[command]
    rc, err = _cli(argv, capsys)
    name = "--tokenizer" if command == "generate" else "--model"
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert (f"{name}'s bottleneck 'kl' is continuous: it has no tokens (flowmo {argv[0]} needs a discrete quantizer "
            "such as lfq); use flowmo reconstruct or flowmo eval") in err


# ----------------------------------------------------------------------------- training, saving, evaluating
def _train_config(folder: Path, quantizer: str, **train) -> dict:
    t = {"steps": 1, "seed": 3, "device": "cpu", "data": {"folder": str(folder)}, "optim": {"lr": 1e-3, "batch_size": 2},
         "ema": {"decay": 0.9, "every": 1}, "checkpoint": {"every": 1, "keep_last": 1},
         "log": {"every": 1, "images_every": 1000, "tensorboard": False, "progress": False},
         "eval": {"enabled": False}}
    t.update(train)
    return {"model": {"preset": "tiny", "quantizer": {"name": quantizer}}, "train": t}


POSTTRAIN = {"kl": {"name": "mode_seeking", "k": 2}, "identity": {"name": "distillation", "k": 1, "teacher": {"steps": 2}}}


@pytest.mark.parametrize("quantizer", ["kl", "identity"])
def test_a_continuous_flowmo_trains_both_stages_saves_loads_and_evaluates(png_folder, tmp_path, quantizer):
    from flowmo.metrics.run import evaluate_model
    from flowmo.train import Trainer, load_config
    from flowmo.train.export import export_checkpoint

    first = Trainer(load_config(_train_config(png_folder, quantizer)), tmp_path / "1a")
    assert ("quantizer/kl" in first.fit()["last_terms"]) == (quantizer == "kl")
    cfg = _train_config(png_folder, quantizer, stage="1b", init_from=str(tmp_path / "1a"))
    cfg["model"] = {"posttrain": POSTTRAIN[quantizer]}  # the rest from init_from's model
    t = Trainer(load_config(cfg), tmp_path / "1b")
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    terms = t.fit()["last_terms"]
    assert ("quantizer/kl" in terms) == (quantizer == "kl") and math.isfinite(terms["total"])
    assert all(torch.equal(p, before[n]) for n, p in t.model.named_parameters() if n.startswith("encoder."))
    assert any(not torch.equal(p, before[n]) for n, p in t.model.named_parameters() if n.startswith("decoder."))
    folder = export_checkpoint(tmp_path / "1b", tmp_path / "model", weights="ema")
    model = flowmo.FlowMo.from_pretrained(folder)
    assert model.spec.quantizer.name == quantizer and not model.quantizer.discrete
    card = (folder / "README.md").read_text()
    assert "continuous" in card and "fingerprint" not in card and "model.tokenize(" not in card
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    metrics = evaluate_model(model, images, sampler={"steps": 2}, lpips=(), fid=False, progress=False)
    assert metrics["bits_per_pixel"] is None and metrics["codebook"] is None and math.isfinite(metrics["psnr"])


@pytest.mark.parametrize("quantizer", ["kl", "identity"])
def test_the_cli_trains_both_stages_exports_reconstructs_and_evaluates(png_folder, tmp_path, capsys, quantizer):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(_train_config(png_folder, "lfq")))
    rc, err = _cli(["train", "--config", cfg, "--out", tmp_path / "1a", "--set", f"model.quantizer.name={quantizer}",
                    "-q"], capsys)
    assert rc == 0, err
    stage_1b = _train_config(png_folder, quantizer, stage="1b", init_from=str(tmp_path / "1a"))
    (tmp_path / "1b.json").write_text(json.dumps({**stage_1b, "model": {"posttrain": POSTTRAIN[quantizer]}}))
    rc, err = _cli(["train", "--config", tmp_path / "1b.json", "--out", tmp_path / "1b", "--export", tmp_path / "model",
                    "-q"], capsys)
    assert rc == 0, err
    rc, err = _cli(["export", tmp_path / "1b", "--output", tmp_path / "raw", "--raw"], capsys)
    assert rc == 0, err
    for folder in ("model", "raw"):
        assert flowmo.FlowMo.from_pretrained(tmp_path / folder).spec.quantizer.name == quantizer
    rc, err = _cli(["reconstruct", "--model", tmp_path / "model", "--input", png_folder, "--output", tmp_path / "rec",
                    "--steps", 2], capsys)
    assert rc == 0 and len(list((tmp_path / "rec").glob("*.png"))) == 4, err
    rc = cli.main([str(a) for a in ["eval", "--model", tmp_path / "model", "--data", png_folder, "--steps", 2,
                                    "--lpips", "none", "--no-fid", "--output", tmp_path / "ev", "--workers", 0]])
    out = capsys.readouterr().out
    assert rc == 0 and "continuous, standard protocol" in out, out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert metrics["bits_per_pixel"] is None and metrics["n_images"] == 4


def test_kl_refuses_a_code_without_tokens_and_integer_noise():
    q = flowmo.QUANTIZERS.build({"name": "kl"}, channels=3).train()
    with pytest.raises(ValueError, match=r"^z must have shape \(B, T, 6\), got \(2, 6\)"):
        q(torch.randn(2, 6))
    with pytest.raises(TypeError, match=r"^noise must be a floating-point torch.Tensor .*int64"):
        q(torch.randn(2, 4, 6), noise=torch.zeros(2, 4, 3, dtype=torch.long))


@pytest.mark.parametrize("call,error,words", [
    (lambda m: m.quantize(torch.zeros(2, 5, 36)), ValueError, r"code must have shape \(B, 16, 36\) \(the encoder's output\)"),
    (lambda m: m.quantize(torch.zeros(2, 5, 36), noise=torch.zeros(2, 5, 18)), ValueError, r"code must have shape \(B, 16, 36\)"),
    (lambda m: m.quantize(torch.zeros(2, 36)), ValueError, r"code must have shape \(B, 16, 36\)"),
    (lambda m: m.quantize(torch.zeros(2, 16, 36, device="meta")), ValueError, "code is on meta but the model is on cpu"),
    (lambda m: m.quantize(torch.zeros(2, 16, 36), losses="no"), TypeError, "losses must be a bool"),
    (lambda m: m.quantize(torch.zeros(2, 16, 36), noise=torch.full((2, 16, 18), 1e300, dtype=torch.float64)),
     ValueError, "noise has values beyond the range of torch.float32"),
])
def test_quantize_names_a_bad_code_or_noise(kl_model, call, error, words):
    kl_model.train()
    try:
        with pytest.raises(error, match=words):
            call(kl_model)
    finally:
        kl_model.eval()


class _SumPairsSign(flowmo.quantizers.Quantizer):
    """Discrete, E = 2C: the sign of channel pairs' sums (a correct quantizer the kit must pass)."""

    def __init__(self, *, channels):
        super().__init__()
        self.channels, self.codebook_size = channels, 2 ** channels

    @classmethod
    def encoder_channels(cls, spec, channels):
        return 2 * channels

    @property
    def input_channels(self):
        return 2 * self.channels

    def _idx(self, c):
        return ((c > 0).long() * (2 ** torch.arange(self.channels, device=c.device))).sum(-1)

    def forward(self, z):
        self._check_code(z, channels=self.input_channels)
        p = z[..., :self.channels] + z[..., self.channels:]
        q = torch.where(p > 0, 1.0, -1.0).to(z.dtype)
        return QuantizerOutput(q + (p - p.detach()), self._idx(q))

    def codes_to_indices(self, codes):
        self._check_code(codes, "codes", values=True)
        return self._idx(codes)

    def indices_to_codes(self, idx):
        self._check_indices(idx)
        return (((idx.long()[..., None] >> torch.arange(self.channels, device=idx.device)) & 1).float() * 2 - 1)


def test_the_kit_passes_a_correct_discrete_quantizer_wider_at_its_input():
    report = check_quantizer(lambda: _SumPairsSign(channels=3), 3, max_examples=3)
    assert report["idempotent"] >= 1


class _NoisySign(DiagonalGaussian):
    """Discrete and stochastic: the sign of z + 0.1 eps in training mode (a small noise often
    lands on the same codes: the kit must not call that 'does not sample')."""

    discrete = True

    def __init__(self, *, channels):
        super().__init__(channels=channels)
        self.codebook_size = 2 ** channels

    @classmethod
    def encoder_channels(cls, spec, channels):
        return channels

    @property
    def input_channels(self):
        return self.channels

    def moments(self, z):
        return None

    def _sign(self, x):
        return torch.where(x > 0, 1.0, -1.0).to(x.dtype)

    def forward(self, z, noise=None):
        self._check_code(z, channels=self.channels)
        p = z + 0.1 * noise.to(z.dtype) if self.training and noise is not None else z
        q = self._sign(p)
        return QuantizerOutput(q + (z - z.detach()), self.codes_to_indices(q.detach()), {}, {})

    def quantize(self, z):
        q = self._sign(z)
        return QuantizerOutput(q + (z - z.detach()), self.codes_to_indices(q.detach()), {}, {})

    def codes_to_indices(self, codes):
        return ((codes > 0).long() * (2 ** torch.arange(self.channels, device=codes.device))).sum(-1)

    def indices_to_codes(self, idx):
        return (((idx.long()[..., None] >> torch.arange(self.channels, device=idx.device)) & 1).float() * 2 - 1)

    @property
    def loss_terms(self):
        return []


def test_the_kit_passes_a_discrete_stochastic_quantizer_whose_draws_may_keep_the_codes():
    report = check_quantizer(lambda: _NoisySign(channels=3), 3, max_examples=4)
    assert report["noise"] >= 1
