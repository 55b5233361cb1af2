"""Smoke tests of the benchmark scripts: they run and fill every row (nothing here is timed)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu import FEW_STEP, ROWS, Table

ROOT = Path(__file__).resolve().parents[1]
COMPILED = {"compile time (first compiled step)", "train step, compiled", "peak memory, compiled step"}
NUMBER = re.compile(r"\d")


def _table(stdout: str) -> dict[str, list[str]]:
    """The printed markdown table: row name -> its cells."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| measurement"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def gpu_cpu_run(tmp_path_factory):
    """``benchmarks/gpu.py`` on the CPU, tiny preset, eager only: its stdout and its JSON.

    The compiled variant is not run here: inductor's C++ build of the tiny model's blocks took
    143 s (float32) and 192 s (--autocast bf16) on this project's 2 shared cores with a cold
    cache (both ran, every row filled), too slow for the suite.
    By hand: ``python benchmarks/gpu.py --device cpu --preset tiny``."""
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    # one intra-op thread: on 2 shared cores the tiny model runs ~3x faster than with 2 threads
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--preset", "tiny",
           "--no-compile", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_gpu_benchmark_fills_every_row_on_the_cpu(gpu_cpu_run):
    stdout, record = gpu_cpu_run
    table = _table(stdout)
    assert list(table) == list(ROWS)
    assert [r["name"] for r in record["rows"]] == list(ROWS)
    for row in record["rows"]:
        name, result = row["name"], table[row["name"]][0]
        assert result == row["result"]
        if name in COMPILED:
            assert row["status"] == "skipped" and result == "skipped", row
        else:
            assert row["status"] == "ok" and result != "error" and NUMBER.search(result), row
    assert record["run"]["device"] == "cpu" and record["run"]["compile"] is False and record["run"]["complete"]


def test_gpu_benchmark_rows_hold_what_they_name(gpu_cpu_run):
    rows = {r["name"]: r["data"] for r in gpu_cpu_run[1]["rows"]}
    assert rows["decode, default sampler"]["decoder_calls"] == 31  # the release's 25 steps, 6 of them guided
    assert rows[f"decode, {FEW_STEP}"]["decoder_calls"] == 4
    assert rows["DDP (world 1) step / plain step"]["backend"] == "gloo"
    assert rows["dense matmul (reference)"]["n"] == 2048
    for name in ("train step, eager", "decode, default sampler", f"decode, {FEW_STEP}"):
        r = rows[name]
        assert 0 < r["low"] <= r["median"] <= r["high"] and r["best_s"] > 0
    for name in ROWS:
        if name.startswith("host syncs"):
            assert isinstance(rows[name]["count"], int) and rows[name]["cuda_warnings"] is None


def test_a_failing_row_becomes_an_error_row_and_the_table_goes_on(capsys):
    table = Table()

    def broken():
        raise RuntimeError("CUDA out of memory | tried to allocate\n2 GiB")

    table.measure("first", broken)
    table.measure("second", lambda: ("1.5 s", "fine", {"s": 1.5}))
    assert [(r.name, r.status) for r in table.rows] == [("first", "error"), ("second", "ok")]
    assert table.rows[0].notes == "RuntimeError: CUDA out of memory | tried to allocate 2 GiB"
    lines = table.markdown().splitlines()
    assert lines[2] == "| first | error | RuntimeError: CUDA out of memory \\| tried to allocate 2 GiB |"
    assert lines[3] == "| second | 1.5 s | fine |"
    assert "Traceback" in capsys.readouterr().err


def test_every_bottleneck_variant_is_a_valid_config_of_its_dataset():
    """benchmarks/bottlenecks.py trains each variant in turn: one invalid override would fail the
    comparison hours in (the Fashion-MNIST BSQ once had group_bits 9 for 12 channels)."""
    from benchmarks import bottlenecks
    from flowmo.train.config.reading import load_config

    for config, variants in bottlenecks.DATASETS.values():
        for name, (_, overrides) in variants.items():
            cfg = load_config(str(ROOT / "configs" / config), [*bottlenecks.QUIET, *overrides, "train.data.folder=x"])
            assert cfg.model.quantizer.name == name.split("_")[0], (config, name)
        assert set(variants) == set(bottlenecks.DEMO)


def test_every_nested_variant_is_a_valid_config_of_each_dataset():
    """benchmarks/nested.py: each variant's overrides validate on both datasets' configs, and
    name what they say (fixed_k: k tokens; nested*: nested dropout, causal only where named)."""
    from benchmarks import nested
    from flowmo.train.config.reading import load_config

    for config in nested.CONFIGS.values():
        for name, (_, overrides) in nested.VARIANTS.items():
            cfg = load_config(str(ROOT / "configs" / config), [*nested.QUIET, *overrides, "train.data.folder=x"])
            model = cfg.model
            if name.startswith("fixed_"):
                assert model.code_length == int(name.split("_")[1]) and model.nested_dropout is None
            else:
                assert model.code_length == 16 and model.nested_dropout is not None
                assert (model.encoder.latent_attention == "causal") == ("causal" in name)
                assert model.nested_dropout.full_probability == {"nested": 0.0, "nested_full80": 0.8}.get(name, 0.5)
