"""Model folders saved by the previous version (tests/data/previous_version) still load, with the same meaning."""

import json
from pathlib import Path

import pytest
import torch

import flowmo

ROOT = Path(__file__).parent / "data" / "previous_version"
# spec fields added after those folders were written, with the value that means "as before"
ADDED_SINCE = {("sampler_presets",): {}, ("posttrain", "grid"): None, ("nested_dropout",): None,
               ("encoder", "latent_attention"): "full", ("decoder", "latent_attention"): "full"}


@pytest.mark.parametrize("name", ["lfq", "fsq"])
def test_previous_version_folder_loads_with_the_same_meaning(name):
    folder = ROOT / name
    expected = json.loads((folder / "expected.json").read_text())
    model = flowmo.FlowMo.from_pretrained(folder)
    assert model.spec.fingerprint() == expected["fingerprint"]
    assert model.spec.bits_per_pixel == pytest.approx(expected["bits_per_pixel"], rel=1e-12)
    # the file's fields all still mean what they meant: nothing dropped, and nothing added but the
    # fields introduced since, at the defaults that keep the old behaviour (ADDED_SINCE)
    raw = json.loads((folder / "config.json").read_text())
    now = json.loads(model.spec.to_json())
    for path, default in ADDED_SINCE.items():
        *parents, key = path
        d = now
        for p in parents:
            d = d[p]
        assert d.pop(key) == default, path
    assert now == raw
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        code = model.encode(images)
        tokens = model.tokenize(images)
        decoded = model.decode(model.tokens_to_code(tokens), noise=noise).images
    want_code = torch.tensor(expected["code"]).reshape(code.shape)
    torch.testing.assert_close(code, want_code, atol=2e-5, rtol=0)
    assert torch.equal(tokens, torch.tensor(expected["tokens"]))
    torch.testing.assert_close(decoded, torch.tensor(expected["decoded"]).reshape(decoded.shape), atol=2e-4, rtol=0)
