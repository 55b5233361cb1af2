"""Every component kind has an abstract interface with documented shapes; optional capabilities
are declared on it with defaults right for any component; nothing in flowmo/ probes for them."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import pytest
import torch

import flowmo
from flowmo.quantizers import Quantizer, QuantizerOutput


@pytest.mark.parametrize("kind", sorted(flowmo.REGISTRIES))
def test_each_kind_has_an_abstract_interface_with_documented_methods(kind):
    iface = flowmo.REGISTRIES[kind].interface
    assert inspect.isabstract(iface), iface
    with pytest.raises(TypeError, match="abstract"):
        iface()
    assert iface.__doc__ and "Registered with" in iface.__doc__
    for name in iface.__abstractmethods__:
        doc = inspect.getdoc(getattr(iface, name)) or ""
        assert "Args:" in doc and "Returns:" in doc, f"{iface.__name__}.{name}"


class _VQ(Quantizer):
    """Nearest of ``codebook_size`` random codewords (a VQ): it declares nothing but codebook_size."""

    def __init__(self, *, codebook_size: int = 1024, channels: int):
        super().__init__()
        self.channels, self.codebook_size = channels, codebook_size
        self.register_buffer("codebook", torch.randn(codebook_size, channels, generator=torch.Generator().manual_seed(0)))

    def forward(self, z):
        idx = self.codes_to_indices(z)
        q = self.indices_to_codes(idx).to(z.dtype)
        return QuantizerOutput(q + (z - z.detach()), idx)

    def codes_to_indices(self, codes):
        return torch.cdist(codes.float().reshape(-1, self.channels), self.codebook).argmin(-1).reshape(codes.shape[:-1])

    def indices_to_codes(self, indices):
        return self.codebook[indices]


def test_bits_per_pixel_of_any_quantizer_is_log2_of_its_codebook():
    flowmo.QUANTIZERS.register("test_iface_vq")(_VQ)
    try:
        spec = flowmo.flowmo_tiny().replace(code_channels=8, quantizer={"name": "test_iface_vq"})
        # 16 tokens of log2(1024) = 10 bits on 32 x 32 pixels (not 8 bits, one per channel)
        assert spec.bits_per_token == 10.0
        assert spec.bits_per_pixel == 16 * 10 / 32**2 == 0.15625
        small = spec.replace(quantizer={"name": "test_iface_vq", "codebook_size": 3})
        assert small.bits_per_pixel == pytest.approx(16 * math.log2(3) / 32**2)
        model = flowmo.build(spec)
        assert model.quantizer.bits_per_token == 10.0 and not model.quantizer.has_groups
        with pytest.raises(ValueError, match="needs a quantizer with entropy groups"):
            model.tokenize(torch.zeros(1, 3, 32, 32), groups=True)
        with pytest.raises(ValueError, match="no entropy groups"):
            model.quantizer.codes_to_group_indices(torch.zeros(1, 8))
        with pytest.raises(ValueError, match=r"tokens \(indices\) must lie in \[0, 1024\)"):
            model.tokens_to_code(torch.full((1, 16), 1024))
    finally:
        flowmo.QUANTIZERS.unregister("test_iface_vq")


def test_builtin_capabilities():
    lfq = flowmo.build(flowmo.flowmo_tiny()).quantizer
    assert lfq.has_groups and lfq.bits_per_token == 18.0 and lfq.group_codebook_size == 2**9
    fsq = flowmo.FSQ(flowmo.FSQSpec(levels=(8, 5, 5)), channels=3)
    assert fsq.bits_per_token == pytest.approx(math.log2(200)) and not fsq.has_groups
    assert flowmo.flowmo_lo().bits_per_pixel == pytest.approx(256 * 18 / 256**2)
    assert flowmo.losses.UniformTime(flowmo.UniformTimeSpec(shift=3.0)).shift == 3.0
    ms = flowmo.losses.ModeSeeking(flowmo.ModeSeekingSpec(checkpoint=False))
    assert ms.checkpoints_decoder is False and flowmo.losses.PosttrainObjective.checkpoints_decoder is False
    backbone = flowmo.build(flowmo.flowmo_tiny()).decoder
    assert backbone.compile_units() == tuple(backbone.double_blocks)


def test_no_capability_probing_in_the_package():
    """Capabilities are declared on the interfaces: nothing in flowmo/ asks a component (or a
    spec) by attribute name whether it has one."""
    pattern = re.compile(r"\b(get|has)attr\(\s*[\w.]*(quantizer|encoder|decoder|backbone|spec|solver|grid|sampler"
                         r"|loss|objective|distance|posttrain|component)", re.I)
    root = Path(flowmo.__file__).parent
    found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found
