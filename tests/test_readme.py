"""The README's Python examples run as written (those needing release files are compiled only),
and so do the documentation site's (docs/**/*.md, the guides' examples on the tiny preset)."""

import re
from pathlib import Path

import pytest

import flowmo

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
# blocks that need the release's files or a folder a script trains (scripts/few_step_demo.sh)
NEEDS_FILES = ("flowmo_lo.pth", "runs/few_step/")
# the documentation's blocks: (page, index in the page, code); those naming a dataset the
# machine does not hold (ImageNet) are compiled, not run, as are those needing files
DOC_BLOCKS = [(str(page.relative_to(REPO)), i, code)
              for page in sorted((REPO / "docs").rglob("*.md"))
              for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))]
DOC_NEEDS = NEEDS_FILES + ("/data/imagenet",)


@pytest.fixture(autouse=True)
def _forget_registrations():
    """Components an example registers (my_sign, ...) are unregistered after it, so that two
    pages registering the same name, or a later test listing a registry, see the built-ins only."""
    before = {kind: set(r.names()) for kind, r in flowmo.REGISTRIES.items()}
    yield
    for kind, r in flowmo.REGISTRIES.items():
        for name in set(r.names()) - before[kind]:
            r.unregister(name)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    compiled = compile(code, f"README.md[python block {index}]", "exec")
    if any(f in code for f in NEEDS_FILES):
        return  # needs the released checkpoint files or a trained folder: compiled, not run
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": f"readme_{index}"})


def test_the_readme_shows_each_use_with_a_runnable_example():
    """One runnable example per use the README promises: load/tokenize, the blocks with a
    registry-built quantizer, loss, time sampler and the sampler, a variant, a registered and
    checked component, the Python training API, the generation path, a few-step objective."""
    runnable = [code for code in BLOCKS if not any(f in code for f in NEEDS_FILES)]
    for needle in ("model.tokenize(", "QUANTIZERS.build(", "FLOW_LOSSES.build(", "TIME_SAMPLERS.build(",
                   "samplers.sample(", ".replace(", "flowmo.testing.check_component(", "Trainer(",
                   "load_config(", "export_checkpoint(", "GeneratorTrainer(", "generate_images(",
                   "DistillationSpec("):
        assert any(needle in code for code in runnable), needle


def test_the_docs_have_examples():
    assert len(DOC_BLOCKS) >= 10
    assert {page for page, _, _ in DOC_BLOCKS} >= {f"docs/guides/{name}.md" for name in (
        "using-a-model", "own-tokenizer", "composing", "components", "training", "generators", "few-step")}


@pytest.mark.parametrize("page, index", [(page, i) for page, i, _ in DOC_BLOCKS])
def test_docs_example(page, index, tmp_path, monkeypatch):
    code = next(c for p, i, c in DOC_BLOCKS if (p, i) == (page, index))
    compiled = compile(code, f"{page}[python block {index}]", "exec")
    if any(f in code for f in DOC_NEEDS):
        return  # needs the released checkpoint files, a trained folder or ImageNet: compiled, not run
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": f"docs_{Path(page).stem}_{index}"})
