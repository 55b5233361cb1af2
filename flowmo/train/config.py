"""The training configuration: a FlowMoSpec plus a TrainSpec, from YAML/JSON with dotted overrides.

The ``train`` section's fields, their bounds and meaning are in :mod:`flowmo.train.train_spec`
(:class:`~flowmo.train.train_spec.TrainSpec`), the YAML rules in :mod:`flowmo.train.yaml12`;
every name listed in ``__all__`` is importable from here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import Field, field_validator, model_validator

from flowmo.folders.imports import (
    check_module_names,
    import_modules,
    unknown_component_message,
    unknown_components,
)
from ..presets import get_preset
from ..spec import FlowMoSpec, merge_data
from .train_spec import (
    MAX_BATCH,
    MAX_BUILTIN_LENGTH,
    MAX_IMAGES,
    MAX_LOG_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    MAX_TIMEOUT_S,
    MAX_WORKERS,
    CheckpointConfig,
    DataConfig,
    EMAConfig,
    EvalConfig,
    LogConfig,
    OptimConfig,
    TrainSpec,
    _Strict,
)
from .yaml12 import _yaml_problem, parse_yaml, read_config_source

__all__ = [
    "DataConfig", "OptimConfig", "EMAConfig", "CheckpointConfig", "LogConfig", "EvalConfig", "TrainSpec",
    "TrainConfig", "load_config", "apply_overrides", "read_train_config", "config_differences",
    "describe_differences",
    # re-exported from train_spec and yaml12
    "MAX_STEPS", "MAX_SEED", "MAX_WORKERS", "MAX_BUILTIN_LENGTH", "MAX_BATCH", "MAX_IMAGES", "MAX_LOG_IMAGES",
    "MAX_TIMEOUT_S", "parse_yaml",
]


class TrainConfig(_Strict):
    """A ``flowmo train`` config (:func:`load_config`): ``model`` (a :class:`~flowmo.FlowMoSpec`; in
    a file, a preset name or ``{preset: NAME, <overrides>}`` too), ``train``
    (:class:`~flowmo.train.train_spec.TrainSpec`) and ``imports`` (the modules that register the
    config's own components)."""

    imports: tuple[str, ...] = Field(
        (), description="modules to import before the model is validated: those that register the config's own "
                        "components (load_config imports them; so does --import MODULE on the command line)",
    )
    model: FlowMoSpec
    train: TrainSpec

    @field_validator("imports", mode="before")
    @classmethod
    def _imports(cls, v: Any) -> Any:
        return tuple(check_module_names(v, "imports"))

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" in data:
            data = dict(data)
            data["model"] = expand_model(data["model"])
        if isinstance(data, dict) and "train" not in data:
            data = {**data, "train": {}}  # so that the message names the missing field: train.steps
        return data


def expand_model(model: Any) -> Any:
    """The ``model`` section of a config as data: a preset name gives that preset's spec; a
    dict with a ``preset`` key gives the preset edited by the dict's other keys with the
    semantics of :meth:`flowmo.FlowMoSpec.replace` (:func:`flowmo.spec.merge_data`: nested
    dicts merge, naming another component drops the old one's fields, ``interval_sigma``
    replaces ``interval``, unknown keys raise ValueError naming them); anything else is
    returned as it is (validated later)."""
    if isinstance(model, str):
        return get_preset(model)
    if isinstance(model, dict) and "preset" in model:
        if not isinstance(model["preset"], str):
            raise ValueError(f"model.preset must be a preset name (a str), got {model['preset']!r}")
        rest = {k: v for k, v in model.items() if k != "preset"}
        return merge_data(FlowMoSpec, get_preset(model["preset"]).model_dump(mode="json"), rest, where="model")
    return model


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw config dict.

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
    if isinstance(overrides, (str, bytes, dict)) or not isinstance(overrides, Iterable):
        raise TypeError(f"overrides must be a list of 'key.path=value' strings, got {type(overrides).__name__} "
                        f"{overrides!r}")
    raw = copy.deepcopy(raw)
    for item in list(overrides):
        if not isinstance(item, str):
            raise TypeError(f"override {item!r} must be a 'key.path=value' string, got {type(item).__name__}")
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(k.strip() for k in keys):
            raise ValueError(f"override {item!r}: the key path {path.strip()!r} has an empty part "
                             f"(it must look like key.path=value)")
        keys = [k.strip() for k in keys]
        try:
            value = parse_yaml(text)
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: the value {text!r} is not valid YAML ({_yaml_problem(e)}); "
                             f"quote it to pass a string") from None
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
        change: Any = value
        for k in reversed(keys):
            change = {k: change}
        try:
            raw = merge_data(TrainConfig, raw, change)
        except ValueError as e:
            raise ValueError(f"override {item!r}: {e}") from None
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
    (a whole model), takes its model from ``train.init_from``
    (:func:`flowmo.train.init_from.init_from_spec`: the model folder's ``config.json``, the run's
    ``model``): the section then edits that model as ``{preset: NAME, ...}`` edits a preset, so it
    needs only what post-training changes (``posttrain``, and e.g. the ``sampler``); an
    architecture field that differs from the folder's is refused when the Trainer starts, naming
    it. FileNotFoundError when ``train.init_from`` names no folder there is a model to take."""
    raw = read_config_source(source, "'model' and 'train'")
    given = import_modules(imports, what="--import")
    base = _init_from_model(raw, list(overrides or []))
    if base is not None:  # Stage 1B: the model section edits train.init_from's model
        raw = {**raw, "model": merge_data(FlowMoSpec, base.model_dump(mode="json"), raw.get("model") or {},
                                          where="model")}
    raw = apply_overrides(raw, overrides or [])
    if "generator" in raw and "model" not in raw:  # the other command's config: say so, not pydantic's errors
        raise ValueError(f"{'the config' if source is None or isinstance(source, dict) else f'config file {str(source)!r}'} is a generator training config (a 'generator' section, no "
                         "'model'): train it with flowmo train-generator")
    listed = raw.get("imports")
    if listed is None:  # `imports:` with nothing after it (YAML null): no modules
        listed = []
    if not isinstance(listed, (list, tuple)):  # a dict would be iterated as its keys
        raise TypeError(f"imports must be a list of module names (imports: [my_pkg.vq]), got "
                        f"{type(listed).__name__} {listed!r}")
    listed = import_modules(listed, what="imports")
    raw = {**raw, "imports": list(dict.fromkeys(given + listed))}
    return TrainConfig.model_validate(raw)


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
    from .init_from import init_from_spec, resolve_init_from

    return init_from_spec(resolve_init_from(train["init_from"]), needed=True)


ABSENT = "(absent)"
"""What :func:`config_differences` gives for a key that one side lacks."""


def config_differences(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where two configs, as JSON data (``model_dump(mode="json")``), differ: ``(dotted path,
    old value, new value)`` for each differing leaf, in the order of ``old``'s keys and then
    ``new``'s own. Mappings are compared key by key, except two components with different
    ``name`` fields, which are compared whole (their other fields mean different things); a
    key on one side only has :data:`ABSENT` on the other. ``path`` prefixes the paths."""
    if isinstance(old, dict) and isinstance(new, dict) and old.get("name") == new.get("name"):
        out: list[tuple[str, Any, Any]] = []
        for k in list(old) + [k for k in new if k not in old]:
            where = f"{path}.{k}" if path else str(k)
            if k not in old or k not in new:
                out.append((where, old.get(k, ABSENT), new.get(k, ABSENT)))
            else:
                out.extend(config_differences(old[k], new[k], where))
        return out
    return [] if old == new else [(path, old, new)]


def describe_differences(differences: Iterable[tuple[str, Any, Any]]) -> str:
    """``path old -> new`` for each difference of :func:`config_differences`, joined by ", "
    (values as JSON)."""
    def show(v: Any) -> str:
        return v if v is ABSENT else json.dumps(v)

    return ", ".join(f"{p} {show(a)} -> {show(b)}" for p, a, b in differences)


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
