import os
import sys
from pathlib import Path

# one BLAS thread per test process (numpy's and scipy's OpenBLAS, read when they load): with
# pytest-xdist two processes share the two cores, and oversubscribed BLAS threads made one
# 2048x2048 sqrtm of a Frechet distance take 28 s instead of 4.5 s on a loaded machine
if os.environ.get("PYTEST_XDIST_WORKER") and "numpy" not in sys.modules:
    for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest
import torch
from hypothesis import HealthCheck, settings

# The suite must give the same verdict on a loaded machine as on an idle one:
# - no test fails for being slow. Hypothesis's per-example deadline (200 ms by default) and its
#   too_slow health check are timing limits, so they are off everywhere;
# - property tests draw the same examples on every run (derandomize: a clean-clone CI run has no
#   example database), so a rare counterexample is not found by one run and missed by the next.
#   HYPOTHESIS_PROFILE=explore draws fresh examples each run (for hunting bugs, not for CI).
settings.register_profile("flowmo", deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "flowmo"))

# A subprocess's wall-clock limit only catches a hang: it is far above anything a slow or loaded
# machine takes (the whole suite runs in under 10 minutes on 2 cores), and no test asserts on speed.
# Tests that must bound how long something takes derive the bound from durations they measure.
HANG_GUARD_S = 900

REPO = Path(__file__).resolve().parents[1]
VENDORED_REFERENCE = REPO / "tests" / "data" / "reference"
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


def reference_roots() -> list[Path]:
    """Where reference folders are looked for: $FLOWMO_REFERENCE_DIR alone when set, else the
    shared folder beside the checkout (when present) and the vendored copy."""
    env = os.environ.get("FLOWMO_REFERENCE_DIR")
    if env:
        return [Path(env)]
    return [p for p in (SHARED_REFERENCE, VENDORED_REFERENCE) if p.is_dir()]


def reference_folders() -> list[Path]:
    """Every folder holding meta.json + tensors.safetensors, one per name (the first root wins)."""
    found: dict[str, Path] = {}
    for root in reference_roots():
        for meta in sorted(root.glob("*/meta.json")):
            d = meta.parent
            if (d / "tensors.safetensors").is_file():
                found.setdefault(d.name, d)
    return list(found.values())


def reference_file(name: str) -> Path:
    for root in reference_roots():
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{name} not found in {reference_roots()}")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    # one intra-op thread per test process: with pytest-xdist two processes share the two
    # cores, and oversubscribed OpenMP threads slow small matmuls down ten-fold
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def random_png_folder(root: Path, n: int, seed: int, size: int = 36) -> Path:
    """``n`` random RGB PNGs of ``size`` x ``size`` named 0.png ... in ``root`` (for training tests)."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root
