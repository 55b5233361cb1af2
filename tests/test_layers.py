"""The package's floors and its one-of-each plumbing: no module imports a higher floor, no import
cycles, no module imports another package's private names; one atomic write, one device rule."""

import ast
import os
from pathlib import Path

import pytest
import torch

import flowmo
from flowmo.data.files import atomic_write, atomic_write_text
from flowmo.devices import DistContext, init_process_group, resolve_device

ROOT = Path(flowmo.__file__).parent


def _imports(path: Path):
    """(line, absolute module, imported names) of every `from ... import` in ``path``."""
    pkg = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(pkg[: len(pkg) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield node.lineno, module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []


def _files(*parts):
    for p in parts:
        path = ROOT / p
        yield from ([path] if path.suffix == ".py" else sorted(path.rglob("*.py")))


# the floors, lowest first: a module imports only from its own floor or below (docs/reference/index.md)
FLOORS = [
    ("registry", "spec", "presets", "devices", "state_dicts"),
    ("data",),
    ("blocks", "quantizers", "losses", "samplers", "generators", "nets", "metrics", "model"),
    ("folders",),
    ("train", "cli", "testing", "__main__"),
]
# the library's own save/load methods, which hand the files to folders/ (FlowMo.save_pretrained /
# from_pretrained, TokenGenerator's, and flowmo.generators naming load_generator in its surface)
UPWARD = {("model", "folders.model_folder"), ("model", "folders.hub"), ("generators.base", "folders.generator_folder"),
          ("generators", "folders.generator_folder")}


def _floor(module: str) -> int:
    if module == "flowmo":  # the package's public surface names everything
        return len(FLOORS)
    return next(i for i, names in enumerate(FLOORS) if module.split(".")[1] in names)


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _flowmo_imports(path: Path):
    """(line, imported flowmo module) of every import in ``path``, type-only imports excluded."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    for line, module, names in _imports(path):
        if not module.startswith("flowmo."):
            continue
        if any(id(n) in typing_only for n in ast.walk(tree) if getattr(n, "lineno", None) == line
               and isinstance(n, (ast.Import, ast.ImportFrom))):
            continue
        for name in names or [None]:
            sub = f"{module}.{name}" if name else module
            yield line, sub if (ROOT.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                (ROOT.parent / Path(*sub.split("."))).is_dir() else module


def test_nothing_imports_a_higher_floor():
    bad = []
    for f in sorted(ROOT.rglob("*.py")):
        me = _module(f)
        for line, target in _flowmo_imports(f):
            if _floor(target) > _floor(me) and (me[7:], ".".join(target.split(".")[1:3])) not in UPWARD:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, bad


def test_no_import_cycles():
    graph = {_module(f): {t for _, t in _flowmo_imports(f)} for f in ROOT.rglob("*.py")}
    graph = {m: {t if t in graph else t.rpartition(".")[0] for t in ts} - {m} for m, ts in graph.items()}
    # a package importing its own submodules is its public surface, not a cycle
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = 1
        for t in graph.get(m, ()):
            if state.get(t) == 1:
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_no_module_imports_a_private_name_of_another_package():
    bad = []
    for f in ROOT.rglob("*.py"):
        own = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts[:-1])
        for line, module, names in _imports(f):
            if not module.startswith("flowmo"):
                continue
            parts = module.split(".")
            # the package holding the imported name: the module's package, or the module itself if a package
            target = module if (ROOT.parent / Path(*parts)).is_dir() else ".".join(parts[:-1])
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private_module = any(p.startswith("_") and not p.startswith("__") for p in parts)
            if target != own and (private or private_module):
                bad.append(f"{f.relative_to(ROOT)}:{line} from {module} import {names}")
    assert not bad, bad


def test_atomic_write_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    assert atomic_write_text(path, "one") == path and path.read_text() == "one"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"two"))
    assert path.read_bytes() == b"two"

    def dies(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, dies)
    assert path.read_bytes() == b"two" and sorted(os.listdir(path.parent)) == ["a.txt"]
    with pytest.raises(ValueError, match="folder"):
        atomic_write_text(tmp_path, "x")


def test_one_device_rule(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device"):
        resolve_device("gpu", "--device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: True)
        assert resolve_device("auto") == resolve_device(None) == torch.device("mps")
        # several processes: MPS has no process-group backend, so the CPU
        assert resolve_device("auto", ctx=DistContext(2, 1, 1)) == torch.device("cpu")
        monkeypatch.setattr(mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", ctx=DistContext(4, 3, 1)) == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert DistContext.from_env() == DistContext(2, 1, 1)
    assert resolve_device("auto") == torch.device("cuda", 1)


def test_a_single_process_starts_no_process_group():
    assert init_process_group(torch.device("cpu"), DistContext()) is False


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path, umask, mode):
    import os
    import stat

    from flowmo.data.files import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with open(tmp_path / "b.json", "w") as f:  # what open() gives, for comparison
            f.write("{}")
    finally:
        os.umask(old)
    got = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert got == mode == stat.S_IMODE((tmp_path / "b.json").stat().st_mode)


@pytest.mark.parametrize("env, match", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be a non-negative integer, got 'two'"),
    ({"WORLD_SIZE": "2"}, "RANK expected, but not set"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, r"RANK \(5\) must be below WORLD_SIZE \(2\)"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "x"}, "LOCAL_RANK must be a non-negative integer"),
])
def test_bad_launcher_variables_are_named(monkeypatch, env, match):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        DistContext.from_env()
    # a single-process command does not read them
    assert resolve_device("cpu", "--device", DistContext()) == torch.device("cpu")


@pytest.mark.parametrize("kwargs", [dict(world=0), dict(world=2, rank=2), dict(rank=-1), dict(local_rank=-1)])
def test_an_impossible_context_is_refused(kwargs):
    with pytest.raises(ValueError, match="DistContext needs"):
        DistContext(**kwargs)
    with pytest.raises(TypeError, match="DistContext.world must be an int"):
        DistContext(world=2.0)


@pytest.mark.parametrize("value, match", [("bogus", r"unknown device 'bogus'.*\(or auto\)"),
                                          ("meta", "holds no data"), ("cpu:5", "the CPU is one device")])
def test_devices_one_cannot_compute_on_are_refused_with_the_auto_hint(value, match):
    with pytest.raises(ValueError, match=match):
        resolve_device(value, "--device", DistContext())
    assert resolve_device("cpu:0", "--device", DistContext()) == torch.device("cpu", 0)
