"""The README's Python examples run as written (those needing release files are compiled only)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
# blocks that need the release's files or a folder a script trains (scripts/few_step_demo.sh)
NEEDS_FILES = ("flowmo_lo.pth", "runs/few_step/")


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
