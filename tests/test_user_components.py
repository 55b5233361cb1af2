"""Components defined outside the package: registered with a decorator, used by name in a
spec, checked by the conformance kit, and trained."""

from typing import Literal

import torch
from pydantic import Field

import flowmo
import flowmo.testing
from flowmo.losses import TimeSampler
from flowmo.quantizers import Quantizer, QuantizerOutput


class TernarySpec(flowmo.QuantizerSpec):
    """Each channel rounded to {-1, 0, +1} after tanh; a small commitment loss."""

    name: Literal["test_ternary"] = "test_ternary"
    commit_weight: float = Field(0.01, ge=0)


@flowmo.QUANTIZERS.register("test_ternary", spec=TernarySpec)
class Ternary(Quantizer):
    def __init__(self, spec: TernarySpec, *, channels: int):
        super().__init__()
        self.spec, self.channels, self.codebook_size = spec, channels, 3**channels
        self.register_buffer("_basis", 3 ** torch.arange(channels), persistent=False)

    def forward(self, z):
        self._check_code(z)
        b = torch.tanh(z.float())
        q = torch.round(b)
        values = (b + (q - b).detach()).to(z.dtype)
        # the mean over the tokens (0 for an input without tokens, where .mean() would be NaN)
        commit = (b - q.detach()).pow(2).sum() / max(b.numel(), 1)
        losses = {"commitment": self.spec.commit_weight * commit}
        return QuantizerOutput(values, self.codes_to_indices(q), losses)

    def codes_to_indices(self, codes):
        self._check_code(codes, "codes")
        return ((torch.round(codes.float()).long() + 1) * self._basis).sum(-1)

    def indices_to_codes(self, indices):
        self._check_indices(indices)
        return ((indices.long()[..., None] // self._basis) % 3).float() - 1


class BetaTimeSpec(flowmo.TimeSamplerSpec):
    name: Literal["test_beta"] = "test_beta"
    alpha: float = Field(2.0, gt=0)
    beta: float = Field(2.0, gt=0)


@flowmo.TIME_SAMPLERS.register("test_beta", spec=BetaTimeSpec)
class BetaTime(TimeSampler):
    def draw(self, n, generator, device):
        # Beta(a, b) as X / (X + Y) with gamma draws made from the generator's uniforms
        u = torch.rand(2, n, generator=generator, device=device)
        x = u[0] ** (1 / self.spec.alpha)
        y = u[1] ** (1 / self.spec.beta)
        return x / (x + y)


def spec():
    return flowmo.flowmo_tiny().replace(
        code_channels=6, quantizer={"name": "test_ternary"}, time_sampler={"name": "test_beta", "alpha": 1.5},
    )


def test_user_components_are_usable_by_name_and_round_trip():
    s = spec()
    assert isinstance(s.quantizer, TernarySpec) and isinstance(s.time_sampler, BetaTimeSpec)
    assert flowmo.FlowMoSpec.from_json(s.to_json()) == s
    model = flowmo.build(s)
    assert isinstance(model.quantizer, Ternary) and isinstance(model.time_sampler, BetaTime)


def test_user_components_pass_the_conformance_kit():
    flowmo.testing.check_quantizer(lambda: Ternary(TernarySpec(), channels=6), channels=6, max_examples=10)
    flowmo.testing.check_time_sampler(BetaTime(BetaTimeSpec()), max_examples=10)


def test_training_with_user_components_lowers_the_loss():
    torch.manual_seed(0)
    model = flowmo.build(spec()).train()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    # a fixed evaluation draw of (t, noise), so the losses compare like with like
    t_eval = model.time_sampler.sample(4, generator=torch.Generator().manual_seed(1))
    noise_eval = torch.randn(images.shape, generator=torch.Generator().manual_seed(2))

    def eval_loss():
        with torch.no_grad():
            return float(model.loss(images, t=t_eval, noise=noise_eval, cfg_dropout=False).total)

    before = eval_loss()
    for step in range(30):
        out = model.loss(images, generator=torch.Generator().manual_seed(100 + step))
        assert "quantizer/commitment" in out.terms
        opt.zero_grad()
        out.total.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.8 * before, (before, after)
