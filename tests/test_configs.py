"""Every shipped config states and produces exactly the loss terms of the recipe it names.

The recipes below are written from the paper and the release's facts
(shared/reference/README.md, "Stage 1A loss" / "Stage 1B"), not from our code.
"""

import json
from pathlib import Path

import pytest
import torch
import yaml

import flowmo
from flowmo.nets.weights import MissingWeightsError
from flowmo.train import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# name -> weight (the factor applied to the term), and the distance each network term uses
QUANT = {"quantizer/entropy": 0.0025, "quantizer/commitment": 0.000625}
RECIPES = {
    # the release's Stage 1A: rectified flow + LPIPS-VGG 0.1 on x_hat + LFQ terms
    "flowmo_lo_stage1a.yaml": dict(stage="1a", terms={"diffusion": 1.0, "perceptual": 0.1, **QUANT},
                                   distances={"perceptual": "lpips_vgg"},
                                   files={"vgg16-397923af.pth", "vgg.pth"}),
    # the release's Stage 1B: flow loss + quantizer terms + 0.01 ResNet-50 logits on the K=8 sample
    "flowmo_lo_stage1b.yaml": dict(stage="1b", terms={"diffusion": 1.0, "mode_seeking": 0.01, **QUANT},
                                   distances={"mode_seeking": "resnet50_logits"}, k=8,
                                   files={"resnet50-0676ba61.pth"}),
    # the CPU demo: rectified flow + LFQ terms, no network distance
    "demo.yaml": dict(stage="1a", terms={"diffusion": 1.0, **QUANT}, distances={}, files=set()),
    # the Fashion-MNIST generation demo's tokenizer: the CPU demo's recipe
    "fashion_tokenizer.yaml": dict(stage="1a", terms={"diffusion": 1.0, **QUANT}, distances={}, files=set()),
    # few-step decoding: distillation of the guided sampler alone (no flow loss kept), the
    # quantizer's terms reported (frozen)
    "few_step/demo_distill.yaml": dict(stage="1b", terms={"distillation": 1.0, **QUANT}, distances={}, files=set()),
    "few_step/fashion_distill.yaml": dict(stage="1b", terms={"distillation": 1.0, **QUANT}, distances={},
                                          files=set()),
    "few_step/flowmo_lo_distill.yaml": dict(stage="1b", terms={"distillation": 1.0, **QUANT}, distances={},
                                            files=set()),
    # few-step decoding by the Stage 1B chain on a fixed grid: flow loss kept, MSE to the input
    "few_step/demo_mode_seeking.yaml": dict(stage="1b", terms={"diffusion": 1.0, "mode_seeking": 1.0, **QUANT},
                                            distances={"mode_seeking": "mse"}, k=4, files=set()),
    "few_step/fashion_mode_seeking.yaml": dict(stage="1b", terms={"diffusion": 1.0, "mode_seeking": 1.0, **QUANT},
                                               distances={"mode_seeking": "mse"}, k=4, files=set()),
}


# The model folders the Stage 1B configs start from (their train.init_from), whose model they take:
# the trained demo models (their Stage 1A configs' model) and the released FlowMo-Lo.
STARTING_POINTS = {
    "runs/demo/model": lambda: load_config(CONFIGS / "demo.yaml").model,
    "runs/fashion/tokenizer/model": lambda: load_config(CONFIGS / "fashion_tokenizer.yaml").model,
    "flowmo_lo": lambda: flowmo.get_preset("flowmo_lo"),
}


@pytest.fixture(scope="module")
def starting_points(tmp_path_factory):
    """train.init_from value -> a model folder's config.json holding that model's spec (all
    load_config reads; the weights are the Trainer's business)."""
    from flowmo.folders.model_folder import config_json

    out = {}
    for i, (name, spec) in enumerate(STARTING_POINTS.items()):
        folder = tmp_path_factory.mktemp(f"start{i}")
        (folder / "config.json").write_text(config_json(spec()))
        out[name] = folder
    return out


def _load(name, starting_points):
    """The config, its train.init_from (when it is a known starting point) pointed at that folder."""
    init = yaml.safe_load((CONFIGS / name).read_text())["train"].get("init_from")
    overrides = [f"train.init_from={json.dumps(str(starting_points[init]))}"] if init in starting_points else []
    return load_config(CONFIGS / name, overrides)


def test_few_step_configs_take_the_model_from_their_starting_point(starting_points):
    """A few-step config states only what post-training changes; the architecture is the
    init_from folder's."""
    arch = {"preset", "image_size", "patch_size", "code_length", "code_channels", "encoder", "quantizer"}
    for name in sorted(n for n in RECIPES if n.startswith("few_step/")):
        raw = yaml.safe_load((CONFIGS / name).read_text())
        assert not arch & set(raw["model"]), name
        start = STARTING_POINTS[raw["train"]["init_from"]]()
        assert _load(name, starting_points).model.architecture() == start.architecture(), name


def _config_files():
    return sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")
                  if not p.relative_to(CONFIGS).as_posix().startswith("generators/"))


def test_every_shipped_config_has_a_recipe():
    assert set(_config_files()) == set(RECIPES), "add the recipe of every config in configs/ to RECIPES"


def _shrunk(spec: flowmo.FlowMoSpec) -> flowmo.FlowMoSpec:
    """The config's losses on the tiny architecture (so the test builds in a second)."""
    tiny = flowmo.flowmo_tiny()
    return spec.replace(image_size=tiny.image_size, patch_size=tiny.patch_size, code_length=tiny.code_length,
                        code_channels=tiny.code_channels, encoder=tiny.encoder, decoder=tiny.decoder)


def _with_mse(spec: flowmo.FlowMoSpec) -> flowmo.FlowMoSpec:
    """Network distances replaced by MSE (no weight files here); everything else unchanged."""
    changes = {}
    if getattr(spec.flow_loss, "perceptual", None) is not None:
        changes["flow_loss"] = spec.flow_loss.model_copy(update={"perceptual": flowmo.PerceptualSpec(name="mse")})
    if hasattr(spec.posttrain, "distance"):
        changes["posttrain"] = spec.posttrain.model_copy(update={"distance": flowmo.PerceptualSpec(name="mse")})
    return spec.replace(**changes)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_states_the_recipe_terms(name, starting_points):
    recipe = RECIPES[name]
    cfg = _load(name, starting_points)
    assert cfg.train.stage == recipe["stage"]
    terms = cfg.model.loss_terms(cfg.train.stage)
    assert {t.name: t.weight for t in terms} == pytest.approx(recipe["terms"])
    spec = cfg.model
    used = {}
    if "perceptual" in recipe["terms"]:
        used["perceptual"] = spec.flow_loss.perceptual.name
    if "mode_seeking" in recipe["terms"]:
        used["mode_seeking"] = spec.posttrain.distance.name
        assert spec.posttrain.k == recipe["k"]
    assert used == recipe["distances"]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_needs_exactly_the_recipe_weight_files(name, tmp_path, monkeypatch, starting_points):
    """Building the losses of the stage asks for exactly the recipe's weight files (none
    present here): the Stage 1B config must not ask for the LPIPS files."""
    from flowmo.nets import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("FLOWMO_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setattr(weights, "_lpips_package_dir", lambda: None)
    recipe = RECIPES[name]
    cfg = _load(name, starting_points)
    model = flowmo.FlowMo(_shrunk(cfg.model))
    asked: set[str] = set()
    for part in ("flow_loss", "posttrain_objective") if recipe["stage"] == "1b" else ("flow_loss",):
        try:
            getattr(model, part)
        except MissingWeightsError as e:
            msg = str(e)
            asked |= {f for f in ("vgg16-397923af.pth", "vgg.pth", "alexnet-owt-7be5be79.pth", "alex.pth",
                                  "resnet50-0676ba61.pth") if f in msg}
    assert asked == recipe["files"]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_produces_the_terms_it_states(name, starting_points):
    """The loss the model computes for the config's stage has exactly the stated terms, each
    scaled by its stated weight (checked by doubling the component weights)."""
    recipe = RECIPES[name]
    cfg = _load(name, starting_points)
    spec = _with_mse(_shrunk(cfg.model))
    images = torch.rand(2, 3, spec.image_size, spec.image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def terms_of(s):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            model = flowmo.FlowMo(s).train()
            if recipe["stage"] == "1b" and model.posttrain_objective.needs_teacher:
                model.set_teacher()
        g = torch.Generator().manual_seed(2)
        if recipe["stage"] == "1a":
            out = model.loss(images, generator=g)
        else:
            out = model.posttrain_loss(images, generator=g)
        assert torch.allclose(out.total, torch.stack([v.float() for v in out.terms.values()]).sum())
        return {k: float(v.detach()) for k, v in out.terms.items()}

    base = terms_of(spec)
    assert set(base) == set(recipe["terms"]) == {t.name for t in spec.loss_terms(recipe["stage"])}
    # each weighted term scales with the weight the spec declares for it
    doubled = spec.replace(
        quantizer=spec.quantizer.model_copy(update={"entropy_weight": 2 * spec.quantizer.entropy_weight,
                                                    "commit_weight": 2 * spec.quantizer.commit_weight}),
        flow_loss=spec.flow_loss.model_copy(update={"perceptual_weight": 2 * spec.flow_loss.perceptual_weight}),
        posttrain=spec.posttrain.model_copy(update={"weight": 2 * spec.posttrain.weight}),
    )
    twice = terms_of(doubled)
    for k in ("quantizer/entropy", "quantizer/commitment", "perceptual", "mode_seeking", "distillation"):
        if k in base:
            assert twice[k] == pytest.approx(2 * base[k], rel=1e-5), k
    if "diffusion" in base:
        assert twice["diffusion"] == pytest.approx(base["diffusion"], rel=1e-5)


def test_stage_1b_flow_weight_scales_the_kept_flow_terms():
    spec = flowmo.flowmo_tiny().replace(posttrain={"name": "mode_seeking", "k": 2, "flow_weight": 0.5})
    terms = {t.name: t.weight for t in spec.loss_terms("1b")}
    assert terms == pytest.approx({"diffusion": 0.5, "mode_seeking": 0.01, **QUANT})
    spec0 = spec.replace(posttrain={"name": "mode_seeking", "k": 2, "flow_weight": 0.0})
    assert "diffusion" not in {t.name for t in spec0.loss_terms("1b")}
    model = flowmo.FlowMo(spec0).train()
    out = model.posttrain_loss(torch.zeros(1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {"mode_seeking", *QUANT}


def test_loss_terms_refuses_bad_stage_and_undeclared_components():
    with pytest.raises(ValueError, match="stage"):
        flowmo.flowmo_tiny().loss_terms("2")
    from typing import Literal

    class _SilentQuantizerSpec(flowmo.QuantizerSpec):  # a user component that declares no terms
        name: Literal["test_configs_silent"] = "test_configs_silent"

    from flowmo.quantizers import FSQ

    if "test_configs_silent" not in flowmo.QUANTIZERS.names():
        flowmo.QUANTIZERS.add("test_configs_silent", lambda spec, channels: FSQ(flowmo.FSQSpec(levels=(2,) * channels)),
                              spec=_SilentQuantizerSpec)
    spec = flowmo.flowmo_tiny().replace(quantizer={"name": "test_configs_silent"})
    # a quantizer that declares nothing has no auxiliary loss terms (the interface's default)
    assert [t.name for t in spec.loss_terms("1a")] == ["diffusion"]
    # a flow loss has no such default: undeclared terms are refused, saying how to declare them
    class _SilentFlowSpec(flowmo.FlowLossSpec):
        name: Literal["test_configs_silent_flow"] = "test_configs_silent_flow"

    from flowmo.losses import RectifiedFlowLoss

    if "test_configs_silent_flow" not in flowmo.FLOW_LOSSES.names():
        flowmo.FLOW_LOSSES.add("test_configs_silent_flow", lambda spec: RectifiedFlowLoss(flowmo.RectifiedFlowLossSpec()),
                               spec=_SilentFlowSpec)
    with pytest.raises(ValueError, match="flow_loss 'test_configs_silent_flow' does not declare.*loss_terms"):
        spec.replace(flow_loss={"name": "test_configs_silent_flow"}).loss_terms("1a")


# the configs that reproduce the release (its Stage 1A and Stage 1B runs) and so its EMA exactly
RELEASE_RUNS = {"flowmo_lo_stage1a.yaml", "flowmo_lo_stage1b.yaml"}


@pytest.mark.parametrize("name", sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")))
def test_release_configs_keep_the_release_ema_and_the_others_warm_up(name, starting_points):
    """The release's EMA: decay 0.9999, one update every 10 steps, no warm-up (a copy of the
    initial weights decayed from step 1). Every other shipped config (the CPU demos, few-step
    post-training, the generators) warms its EMA up, so that its short runs export an average
    of their late weights."""
    from flowmo.train.config import EMAConfig
    from flowmo.train.config import load_generator_config

    path = CONFIGS / name
    ema = (load_generator_config(path) if name.startswith("generators/") else _load(name, starting_points)).train.ema
    if name in RELEASE_RUNS:
        assert ema == EMAConfig(enabled=True, decay=0.9999, every=10, warmup=False)
    else:
        assert ema.enabled and ema.warmup
    assert EMAConfig().warmup  # the default for new configs
