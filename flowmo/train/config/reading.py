"""Reading a training configuration, for both trainers: YAML 1.2 (:func:`parse_yaml`, ruamel.yaml)
or JSON files, ``a.b.c=value`` overrides (:func:`apply_overrides` for a tokenizer's config, with
the semantics of :meth:`flowmo.FlowMoSpec.replace`; :func:`apply_generator_overrides`), the
validated configs (:func:`load_config`, :func:`load_generator_config`, :func:`read_train_config`)
and Stage 1B's starting model (``train.init_from``: :func:`resolve_init_from`,
:func:`init_from_spec`, :func:`check_init_architecture`)."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Optional, Union

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import YAMLError

from flowmo.folders.imports import (
    check_module_names,
    import_modules,
    unknown_component_message,
    unknown_components,
)
from flowmo.data.folder_kinds import path_kind, wrong_kind
from flowmo.folders.model_folder import CONFIG_NAME, read_config

from ...spec import FlowMoSpec, merge_data
from .schema import GeneratorTrainConfig, TrainConfig, config_differences, expand_model

__all__ = ["parse_yaml", "read_config_source", "apply_overrides", "apply_generator_overrides", "load_config",
           "load_generator_config", "read_train_config", "resolve_init_from", "init_from_spec",
           "check_init_architecture"]


# ---------------------------------------------------------------------------------- YAML 1.2
class _CoreSchemaConstructor(SafeConstructor):
    """ruamel.yaml's safe constructor with binary integers kept as strings: ruamel's YAML 1.2
    resolver reads ``0b101`` as 5, which the 1.2 core schema does not (a number field then
    refuses the string, naming the field)."""

    def construct_yaml_int(self, node: Any) -> Any:
        text = self.construct_scalar(node)
        if text.lstrip("+-").startswith("0b"):
            return text
        return super().construct_yaml_int(node)


_CoreSchemaConstructor.add_constructor("tag:yaml.org,2002:int", _CoreSchemaConstructor.construct_yaml_int)


def parse_yaml(text: str) -> Any:
    """Config YAML (files and ``--set`` values) as plain data, read as YAML 1.2 (core schema) by
    ruamel.yaml's safe loader:

    - booleans: ``true``/``false`` (any case) only; ``on``/``off``/``yes``/``no`` stay strings
      (YAML 1.1 would turn ``autocast: off`` into ``False`` and fail validation);
    - integers: decimal, and a leading zero does not make octal (``010`` is 10, ``0777`` is
      777); ``0o17`` is octal and ``0x10`` hexadecimal (16); ``_`` may group digits
      (``100_000``); base 60 (``1:00``) and ``0b101`` stay strings, which number fields refuse;
    - floats: ``1e-3`` and ``-.5`` are floats, ``1:30.5`` is a string;
    - a key given twice in one mapping is an error (ruamel's DuplicateKeyError).

    Raises ruamel.yaml's YAMLError for text that is not valid YAML."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = _CoreSchemaConstructor
    return yaml.load(text)


def _yaml_problem(e: YAMLError) -> str:
    """A one-line description of a YAML error: the problem and where (line and column, 1-based)."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if not problem:
        return " ".join(str(e).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


# ---------------------------------------------------------------------------------- reading a config
def read_config_source(source: Any, sections: str) -> dict:
    """The raw mapping of a training config: ``source`` a path (str or os.PathLike) of a
    ``.yaml``/``.yml``/``.json`` file, a dict (returned as is), or None (an empty config).
    ``sections`` names the sections the file must hold, for the message (e.g. "'model' and 'train'").

    Raises TypeError for another kind of ``source``, FileNotFoundError / IsADirectoryError for a
    missing file / a folder, ValueError for a file that is not UTF-8, not valid JSON / YAML, or
    does not hold a mapping."""
    if source is None:
        return {}
    if isinstance(source, dict):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a config file path (str or pathlib.Path), a dict or None, "
                        f"got {type(source).__name__} {source!r}")
    p = Path(source)
    if p.is_dir():
        raise IsADirectoryError(f"config file {str(p)!r} is a folder, not a file")
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {str(p)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        raw = json.loads(text) if p.suffix == ".json" else parse_yaml(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"config file {str(p)!r} is not valid JSON ({e.msg} at line {e.lineno}, "
                         f"column {e.colno})") from None
    except YAMLError as e:
        raise ValueError(f"config file {str(p)!r} is not valid YAML ({_yaml_problem(e)})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p} must hold a mapping with {sections} sections")
    return raw


def _parsed_overrides(overrides: Any) -> Iterator[tuple[str, list[str], Any]]:
    """(the override, its key path, its value parsed as YAML 1.2) for each ``a.b.c=value`` string
    of ``overrides``, in order. Raises TypeError when ``overrides`` is not a list (or another
    iterable) of strings, ValueError naming an override that is malformed (no ``=``, an empty key
    part, a value that is not valid YAML)."""
    if isinstance(overrides, (str, bytes, dict)) or not isinstance(overrides, Iterable):
        raise TypeError(f"overrides must be a list of 'key.path=value' strings, got {type(overrides).__name__} "
                        f"{overrides!r}")
    for item in list(overrides):
        if not isinstance(item, str):
            raise TypeError(f"override {item!r} must be a 'key.path=value' string, got {type(item).__name__}")
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        path, text = item.split("=", 1)
        keys = [k.strip() for k in path.strip().split(".")]
        if not all(keys):
            raise ValueError(f"override {item!r}: the key path {path.strip()!r} has an empty part "
                             f"(it must look like key.path=value)")
        try:
            value = parse_yaml(text)
        except YAMLError as e:
            raise ValueError(f"override {item!r}: the value {text!r} is not valid YAML ({_yaml_problem(e)}); "
                             f"quote it to pass a string") from None
        yield item, keys, value


def _nest(keys: list[str], value: Any) -> dict:
    """``{"a": {"b": {"c": value}}}`` for the key path ``a.b.c``."""
    for k in reversed(keys):
        value = {k: value}
    return value


def _other_command(source: Any, section: str, ours: str, what: str, command: str) -> str:
    """The message refusing the other trainer's config (a ``section``, not ``ours``) by its name,
    instead of pydantic's list of missing and unknown fields."""
    where = "the config" if source is None or isinstance(source, dict) else f"config file {str(source)!r}"
    return f"{where} is a {what} training config (a '{section}' section, no '{ours}'): train it with {command}"


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML 1.2) to a raw tokenizer config dict.

    Each override, in order, is the edit ``{"a": {"b": {"c": value}}}`` of the config with
    the semantics of :meth:`flowmo.FlowMoSpec.replace` (:func:`flowmo.spec.merge_data`),
    the model section starting from its preset: ``model.sampler.steps=4`` keeps the rest of
    the sampler; ``model.sampler.guidance.interval_sigma=[0.2,1.0]`` replaces the preset's
    ``interval``; ``model.quantizer.name=fsq`` drops LFQ's fields (FSQ's defaults fill the
    rest; a later ``model.quantizer.levels=[...]`` gives its own); a dict value
    (``model.encoder={depth: 3}``, ``model={code_length: 8}``) merges, into the preset's spec
    where the model section names a preset; ``model=NAME`` and ``model={preset: NAME, ...}``
    replace the whole model section. The result is validated once, after the last override (load_config), so
    overrides that are only valid together (``model.code_channels=6`` with
    ``model.quantizer.name=fsq``) may come in any order.

    Raises TypeError if ``raw`` is not a dict or ``overrides`` not a list of strings, and
    ValueError naming the override if one is malformed (no ``=``, an empty key, a value
    that is not valid YAML) or names a field that does not exist (``model.preset``
    included: write ``model=NAME`` to switch presets)."""
    if not isinstance(raw, dict):
        raise TypeError(f"the config must be a mapping (dict), got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for item, keys, value in _parsed_overrides(overrides):
        if keys == ["model", "preset"]:
            raise ValueError(f"override {item!r}: the preset is the starting point of the model section, not one of "
                             f"its fields; write model=NAME to replace the whole model with a preset")
        if keys == ["model"] and isinstance(value, dict) and "preset" in value:
            raw["model"] = value  # model={preset: small, ...}: a whole new model section
            continue
        if keys[0] == "model" and (len(keys) > 1 or isinstance(value, dict)) and "model" in raw:
            # an edit of the model (model.x=..., model={x: ...}) edits the preset's spec
            model = expand_model(raw["model"])
            raw["model"] = model.model_dump(mode="json") if isinstance(model, FlowMoSpec) else model
        try:
            raw = merge_data(TrainConfig, raw, _nest(keys, value))
        except ValueError as e:
            raise ValueError(f"override {item!r}: {e}") from None
    return raw


def apply_generator_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML 1.2) to a raw generator config dict, in order.

    A dict value merges into a dict already there (``generator={depth: 2}`` keeps the other
    options); any other value replaces. Raises TypeError for a non-dict config or overrides that
    are not a list of strings, ValueError naming a malformed override (no ``=``, an empty key part,
    invalid YAML, a path through a value that is not a mapping). Unknown fields are refused when
    the result is validated (:func:`load_generator_config`)."""
    if not isinstance(raw, dict):
        raise TypeError(f"the config must be a mapping (dict), got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for item, keys, value in _parsed_overrides(overrides):
        node = raw
        for depth, k in enumerate(keys[:-1]):
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"override {item!r}: {'.'.join(keys[:depth + 1])} is not a section")
            node = nxt
        last = keys[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last] = {**node[last], **value}
        else:
            node[last] = value
    return raw


def load_config(source: Union[str, Path, dict, None] = None, overrides: Optional[list[str]] = None,
                imports: Iterable[str] = ()) -> TrainConfig:
    """A TrainConfig from a YAML/JSON file (or a dict), with dotted overrides applied.

    ``imports`` (e.g. from ``--import``) and the config's own ``imports`` list (after the
    overrides) are imported first, in that order, so that the components they register are
    known when the model is validated; the result's ``imports`` lists both.

    ``source``: a path (str or os.PathLike) of a ``.yaml``/``.yml``/``.json`` file, a dict, or
    None (an empty config). Raises TypeError for another kind of ``source``,
    FileNotFoundError / IsADirectoryError for a missing file / a folder, ValueError for a
    file that cannot be parsed or does not hold a mapping, and pydantic's ValidationError
    (a ValueError) naming the fields of an invalid config.

    A Stage 1B config (``train.stage: "1b"``, from the file or an override) whose ``model``
    section is absent, or a mapping with neither ``preset`` nor both ``encoder`` and ``decoder``
    (a whole model), takes its model from ``train.init_from`` (:func:`init_from_spec`: the model
    folder's ``config.json``, the run's ``model``): the section then edits that model as
    ``{preset: NAME, ...}`` edits a preset, so it needs only what post-training changes
    (``posttrain``, and e.g. the ``sampler``); an architecture field that differs from the
    folder's is refused when the Trainer starts, naming it. FileNotFoundError when
    ``train.init_from`` names no folder there is a model to take."""
    raw = read_config_source(source, "'model' and 'train'")
    given = import_modules(imports, what="--import")
    base = _init_from_model(raw, list(overrides or []))
    if base is not None:  # Stage 1B: the model section edits train.init_from's model
        raw = {**raw, "model": merge_data(FlowMoSpec, base.model_dump(mode="json"), raw.get("model") or {},
                                          where="model")}
    raw = apply_overrides(raw, overrides or [])
    if "generator" in raw and "model" not in raw:
        raise ValueError(_other_command(source, "generator", "model", "generator", "flowmo train-generator"))
    listed = raw.get("imports")
    if listed is None:  # `imports:` with nothing after it (YAML null): no modules
        listed = []
    if not isinstance(listed, (list, tuple)):  # a dict would be iterated as its keys
        raise TypeError(f"imports must be a list of module names (imports: [my_pkg.vq]), got "
                        f"{type(listed).__name__} {listed!r}")
    listed = import_modules(listed, what="imports")
    raw = {**raw, "imports": list(dict.fromkeys(given + listed))}
    return TrainConfig.model_validate(raw)


def load_generator_config(source: Union[str, os.PathLike, dict, None] = None,
                          overrides: Optional[list[str]] = None) -> GeneratorTrainConfig:
    """A GeneratorTrainConfig from a YAML/JSON file (or a dict, or None: overrides only), with
    dotted overrides applied (:func:`apply_generator_overrides`).

    Raises TypeError for another kind of ``source``, FileNotFoundError / IsADirectoryError for a
    missing file / a folder, ValueError for a file that cannot be parsed or does not hold a
    mapping, and pydantic's ValidationError (a ValueError) naming the fields of an invalid config."""
    raw = read_config_source(source, "'generator' and 'train'")
    raw = apply_generator_overrides(raw, overrides or [])
    if "model" in raw and "generator" not in raw:
        raise ValueError(_other_command(source, "model", "generator", "tokenizer", "flowmo train"))
    return GeneratorTrainConfig.model_validate(raw)


def read_train_config(path: Union[str, Path]) -> TrainConfig:
    """The TrainConfig a run wrote (``RUN/config.json``). Does not import the modules it lists:
    when it names components that are not registered, the ValueError names those modules."""
    path = Path(path)
    text = path.read_text()
    try:
        doc = json.loads(text)
        ema = doc.get("train", {}).get("ema") if isinstance(doc, dict) and isinstance(doc.get("train"), dict) else None
        if isinstance(ema, dict) and "warmup" not in ema:  # a run recorded before the EMA warm-up existed:
            ema["warmup"] = False                           # its steps ran without one
        return TrainConfig.model_validate(doc)
    except ValueError as e:
        unknown = unknown_components(e)
        if not unknown:
            raise ValueError(f"{path} (a run's recorded config) cannot be read: {e}") from None
        try:
            recorded = check_module_names(json.loads(text).get("imports", []))
        except (TypeError, ValueError, AttributeError):
            recorded = []
        raise ValueError(unknown_component_message(unknown, recorded, str(path))) from None


# ---------------------------------------------------------------------------------- Stage 1B's starting model
_FORMS = "a Stage 1A run folder, one of its checkpoint folders, a model folder"


def resolve_init_from(source: str) -> Path:
    """The local folder ``train.init_from`` names: an existing path as it is, else a released
    model's name (``flowmo_lo``, ...) or a Hub id ``user/repo``, fetched into the cache
    (:func:`flowmo.folders.hub.resolve_model_source`; a local path always wins over a name).

    Raises FileNotFoundError naming ``train.init_from`` and the forms accepted."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    from flowmo.folders.hub import RELEASED, is_repo_id, resolve_model_source

    if source in RELEASED or is_repo_id(source):
        try:
            return resolve_model_source(source)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"train.init_from: {e}") from None
    raise FileNotFoundError(f"train.init_from: {source} does not exist; give {_FORMS}, a released model's name "
                            f"({', '.join(RELEASED)}) or a Hub id 'user/repo'")


def init_from_spec(folder: Path, *, needed: bool = False) -> Optional[FlowMoSpec]:
    """The FlowMoSpec of Stage 1B's starting point ``folder`` (resolved: :func:`resolve_init_from`):
    a model folder's ``config.json``; a run folder's ``config.json`` ``model``; for a checkpoint
    folder, its run's (``RUN/checkpoints/ckpt-N`` -> ``RUN/config.json``).

    None when a run or checkpoint folder records no config (a checkpoint folder outside its run);
    with ``needed`` that is a FileNotFoundError saying to give the config a ``model`` section.
    FileNotFoundError for a folder of none of these kinds; ValueError for an invalid config or a
    folder of another kind (a generator's, a token set: the kind named)."""
    folder = Path(folder)
    if path_kind(folder) not in (None, "tokenizer-run", "tokenizer-checkpoint", "tokenizer"):
        raise wrong_kind(folder, "train.init_from", "a flowmo train run, one of its checkpoints or a tokenizer "
                         "model folder")  # a generator's, a token set, ...: the kind found, named
    if (folder / "checkpoints").is_dir() or (folder / "state.json").is_file():
        if (folder / "checkpoints").is_dir():
            record: Optional[Path] = folder / "config.json"
        else:  # a checkpoint folder: its run's record, when it is inside its run
            record = folder.parent.parent / "config.json" if folder.parent.name == "checkpoints" else None
        if record is not None and record.is_file():
            return read_train_config(record).model
        if needed:
            raise FileNotFoundError(f"train.init_from: {folder} records no model spec (its run's config.json); give "
                                    "the config a model: section with the architecture of its weights")
        return None
    if (folder / CONFIG_NAME).is_file():
        return read_config(folder / CONFIG_NAME)[0]
    raise FileNotFoundError(f"train.init_from: {folder} is neither {_FORMS.replace(', a model', ' nor a model')}")


def _init_from_model(raw: dict, overrides: list[str]) -> Optional[FlowMoSpec]:
    """The model a Stage 1B config's ``model`` section edits: ``train.init_from``'s, when the
    section is absent (or null) or a mapping with neither ``preset`` nor both ``encoder`` and
    ``decoder``, and the config (with the overrides that do not edit the model) is Stage 1B with
    an ``init_from``; None otherwise (a preset name, ``{preset: ...}`` or a mapping with both
    backbones is a whole model, e.g. a run's own ``config.json``; anything else is left to
    validation)."""
    model = raw.get("model")
    if model is not None and (not isinstance(model, dict) or "preset" in model
                              or {"encoder", "decoder"} <= set(model)):
        return None

    def edits_model(item: Any) -> bool:
        return isinstance(item, str) and item.split("=", 1)[0].split(".")[0].strip() == "model"

    trial = apply_overrides({k: v for k, v in raw.items() if k != "model"},
                            [o for o in overrides if not edits_model(o)])
    train = trial.get("train")
    if not isinstance(train, dict) or train.get("stage") != "1b" or not isinstance(train.get("init_from"), str):
        return None
    listed = trial.get("imports")
    if isinstance(listed, (list, tuple)):  # the folder's components may be the config's own
        import_modules(listed, what="imports")
    return init_from_spec(resolve_init_from(train["init_from"]), needed=True)


def check_init_architecture(spec: FlowMoSpec, init_spec: FlowMoSpec, source: str) -> None:
    """Refuse a model ``spec`` whose architecture (:meth:`flowmo.FlowMoSpec.architecture`)
    differs from that of Stage 1B's starting point ``init_spec`` (read from ``source``).

    The sampler, its presets, the objectives (time sampler, flow loss, post-training) and
    gradient checkpointing may differ: they change neither the weights' shapes nor what they
    mean, and Stage 1B exists to change the objective (and with a few-step objective, the
    sampler). Raises ValueError naming each differing field, the folder's value and the
    config's, and the fix."""
    diffs = config_differences(init_spec.architecture(), spec.architecture(), "model")
    if diffs:
        fields = ", ".join(f"{p} (folder: {json.dumps(a)}, config: {json.dumps(b)})" for p, a, b in diffs)
        raise ValueError(f"train.init_from {source} holds a model of another architecture than the config's: "
                         f"{fields}; post-training starts from its weights, so drop these fields from the config's "
                         "model: section (or drop model: altogether) to take the folder's")
