"""What the README and docstrings tell a new user matches the code: the patch layout, what
the losses return, how a subclass calls its interface's constructor, what the grid check
covers (and FlowMo's own check of the image), what loading raises, and that a sampler preset
is a complete sampler."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

import flowmo
import flowmo.testing
from flowmo.blocks import MMDiT, patchify
from flowmo.losses import TimeSampler
from flowmo.spec import MMDiTSpec

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _doc_texts() -> dict[str, str]:
    """Every .py file of the package and every Markdown file of the repository."""
    files = list((REPO / "flowmo").rglob("*.py")) + [REPO / "README.md"] + list((REPO / "docs").rglob("*.md"))
    return {str(f.relative_to(REPO)): f.read_text() for f in files}


# ------------------------------------------------------------------ patch layout
def test_patches_are_row_column_channel_channels_last_everywhere():
    p = 2
    images = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    tokens = patchify(images, p)
    # computed here: patch (r, c) of image b holds pixel (i, j) of channel k at i * p * 3 + j * 3 + k
    for b in range(2):
        for r in range(2):
            for c in range(3):
                patch = images[b, :, r * p:(r + 1) * p, c * p:(c + 1) * p]  # (C, p, p)
                expected = torch.tensor([float(patch[k, i, j]) for i in range(p) for j in range(p) for k in range(3)])
                assert torch.equal(tokens[b, r * 3 + c], expected)
    doc = inspect.getdoc(flowmo.blocks.Backbone)
    assert "(row, column, channel) order, channels last" in doc
    wrong = re.compile(r"\(channels?, rows?, col(umn)?s?\)|channel, row, column", re.I)
    assert not [name for name, text in _doc_texts().items() if wrong.search(text)]


# ------------------------------------------------------------------ what the losses return
def test_the_readme_says_what_the_losses_return():
    assert "both return named terms" not in README
    assert "both return a `flowmo.LossOutput`: `.total`" in README and "`.detached()`" in README
    model = flowmo.build(flowmo.flowmo_tiny()).train()
    out = model.loss(torch.zeros(1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    assert isinstance(out, flowmo.LossOutput) and out.total.ndim == 0
    assert set(out.terms) == {t.name for t in model.spec.loss_terms("1a")}
    total = float(out.total.detach())
    assert out.detached()["total"] == pytest.approx(total)
    assert float(torch.stack(list(out.terms.values())).sum().detach()) == pytest.approx(total)


# ------------------------------------------------------------------ interface constructors
@pytest.mark.parametrize("kind", sorted(flowmo.REGISTRIES))
def test_every_interface_says_how_a_subclass_calls_its_constructor(kind):
    doc = " ".join(inspect.getdoc(flowmo.REGISTRIES[kind].interface).split())
    assert "super().__init__()" in doc or "no base constructor to call" in doc, kind


def test_a_decorator_time_sampler_calls_the_base_without_arguments():
    doc = " ".join(inspect.getdoc(TimeSampler).split())
    assert "calls ``super().__init__()`` with no argument" in doc

    @flowmo.TIME_SAMPLERS.register("t15_linear_time")
    class LinearTime(TimeSampler):
        def __init__(self, *, power: float = 1.0, shift: float = 1.0):
            super().__init__()
            self.power, self.shift = power, shift

        def draw(self, n, generator, device):
            return torch.rand(n, generator=generator, device=device) ** self.power

    try:
        sampler = flowmo.TIME_SAMPLERS.build({"name": "t15_linear_time", "power": 2.0})
        assert sampler.spec is None and sampler.power == 2.0
        flowmo.testing.check_time_sampler(sampler, max_examples=5, large_n=2000)
    finally:
        flowmo.TIME_SAMPLERS.unregister("t15_linear_time")


# ------------------------------------------------------------------ the grid
def test_flowmo_refuses_an_image_of_another_shape_with_as_many_patches():
    model = flowmo.build(flowmo.flowmo_tiny()).eval()
    cond = model.conditioning(None, 1)
    t = torch.full((1,), 0.5)
    assert model.decoder_velocity(torch.zeros(1, 3, 32, 32), t, cond).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 3, 32, 32\) .*patch grid is \(8, 8\)\), got "
                                         r"\(1, 3, 16, 64\)"):
        model.decoder_velocity(torch.zeros(1, 3, 16, 64), t, cond)  # 4 x 16 = 8 x 8 patches


def test_the_blocks_document_that_they_check_the_patch_count_only():
    spec = MMDiTSpec(width=16, heads=1, depth=1, axes_dim=(4, 6, 6))
    net = MMDiT(spec, patch_dim=12, txt_in_dim=6, txt_out_dim=6).eval()
    img, txt = torch.randn(1, 64, 12), torch.randn(1, 2, 6)
    with torch.no_grad():
        a, _ = net(img, txt, None, (8, 8))
        b, _ = net(img, txt, None, (4, 16))  # the same count: runs, with other positions
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match=r"grid \(rows, cols\) = \(4, 8\) has 32 patches but img has 64 tokens"):
        net(img, txt, None, (4, 8))
    doc = " ".join(inspect.getdoc(MMDiT.forward).split())
    assert "Only rows * cols = img's token count is checked" in doc
    assert "a grid that does not match the patches" not in README
    assert "they check the grid's patch count only" in " ".join(README.split())


# ------------------------------------------------------------------ loading
def test_from_pretrained_documents_the_unregistered_component_error():
    doc = " ".join(inspect.getdoc(flowmo.FlowMo.from_pretrained).split())
    assert "ValueError when ``config.json`` names a component that is not registered" in doc
    assert "--import" in doc


# ------------------------------------------------------------------ sampler presets
def test_a_preset_is_a_complete_sampler_and_says_so():
    spec = flowmo.flowmo_tiny().replace(sampler={"grid": {"name": "linear"}, "solver": "heun"})
    fast = spec.replace(sampler="fast")
    assert fast.sampler == flowmo.samplers.SAMPLER_PRESETS["fast"]  # the custom grid and solver are gone
    assert fast.replace(sampler={"grid": "linear"}).sampler.grid.name == "linear"
    for doc in (inspect.getdoc(flowmo.FlowMoSpec.replace), inspect.getdoc(flowmo.SamplerSpec)):
        assert "complete sampler" in doc
    assert "is a complete sampler: it replaces the whole sampler" in " ".join(README.split())


# ------------------------------------------------------------------ conventions a user comparing figures must know
def _said(text: str) -> str:
    return " ".join(text.split())


def test_maskgit_decodes_with_the_codes_floor_and_says_the_paper_writes_ceil():
    import math

    from flowmo.generators import schedule

    # L = 16, T = 3: 16 cos(pi / 6) = 13.86 stay masked after step 0: floor 13 (the paper's ceil: 14);
    # 16 cos(pi / 3) = 8 exactly after step 1; 0 after the last
    assert math.ceil(16 * math.cos(math.pi / 6)) == 14
    assert schedule.decoding_schedule(16, 3) == [math.floor(16 * math.cos(math.pi / 6)), 8, 0] == [13, 8, 0]
    for doc in (inspect.getdoc(schedule), inspect.getdoc(schedule.decoding_schedule),
                inspect.getdoc(flowmo.generators.MaskGiT.generate)):
        doc = _said(doc)
        assert "floor" in doc and "ceil" in doc and "google-research/maskgit" in doc
    assert "the floor of google-research/maskgit's code where the paper's text writes ceil" in _said(README)


def test_precision_recall_use_float64_distances_and_say_guided_diffusion_uses_float16():
    import numpy as np

    from flowmo.metrics.generation import precision_recall
    from flowmo.metrics.generative_inputs import CONVENTIONS

    def brute(real, fake, k, half):
        def sq(a, b):  # squared distances; ``half``: as guided-diffusion's evaluator, in float16
            if half:
                a, b = a.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32)
                d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]
                return np.maximum(d, 0).astype(np.float16).astype(np.float64)
            return ((a[:, None] - b[None]) ** 2).sum(-1)

        r_real, r_fake = np.sort(sq(real, real), 1)[:, k], np.sort(sq(fake, fake), 1)[:, k]
        return (float(np.mean((sq(fake, real) <= r_real[None]).any(1))),
                float(np.mean((sq(real, fake) <= r_fake[None]).any(1))))

    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(60, 16)), rng.normal(size=(60, 16)) * 1.1 + 0.2
    exact, half = brute(real, fake, 3, False), brute(real, fake, 3, True)
    assert exact != half  # a set on which the two conventions disagree
    assert tuple(precision_recall(real, fake, k=3)) == pytest.approx(exact, abs=1e-12)
    doc = _said(inspect.getdoc(precision_recall))
    assert "float64" in doc and "float16" in doc and "guided-diffusion" in doc
    assert "float16" in CONVENTIONS["precision"]
    assert "float64 distances, where guided-diffusion's evaluator uses float16" in _said(README)
