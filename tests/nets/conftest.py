import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_weight_locations(tmp_path_factory, monkeypatch):
    """Never let a test see real weight files of this machine: empty hub cache, no
    $FLOWMO_WEIGHTS_DIR, no lpips package."""
    from flowmo.nets import weights

    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("FLOWMO_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setattr(weights, "_lpips_package_dir", lambda: None)
    yield
