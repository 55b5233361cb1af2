"""The dispatcher: :func:`check_component` builds any registered component from its spec and runs
the check for its kind (plus the ``declared_loss_terms`` property of the loss kinds)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import torch

from .backbone import check_backbone
from .checker import _Checker, _seeded
from .distance import check_distance
from .flow_loss import check_flow_loss
from .generator import check_generator
from .loss_harness import _loss_inputs, _ToyDecoder
from .posttrain import check_posttrain
from .quantizer import check_quantizer
from .solver import check_solver
from .time_grid import check_time_grid
from .time_sampler import check_time_sampler


def check_component(spec: Any, *, max_examples: Optional[int] = None, options: Optional[dict[str, Any]] = None,
                    **wiring: Any) -> dict[str, int]:
    """Build the component a spec describes with its registry (``REGISTRY.build(spec, **wiring)``)
    and run the kit's check for its kind.

    Args:
        spec: a component spec (e.g. ``QuantizerSpec.model_validate({"name": "my_vq"})`` or a
            registered spec class's instance).
        max_examples: passed on (default: each check's own).
        options: keyword options of the kind's check, separate from the wiring, e.g.
            ``{"order": 2}`` for a second-order solver (:func:`check_solver`),
            ``{"forward_idempotent": False}`` (:func:`check_quantizer`), ``{"atol": 1e-3}``
            (:func:`check_backbone`). An option the check does not take raises TypeError
            listing those it takes.
        **wiring: the kind's wiring arguments (``channels`` for a quantizer; ``patch_dim``,
            ``txt_in_dim``, ``txt_out_dim`` for a backbone; ``vocab_size``, ``seq_len``,
            ``num_classes`` for a token generator; none for the other kinds).

    For a quantizer, flow loss or post-training objective the spec's declared loss terms
    (``spec.loss_terms()``, see :class:`flowmo.quantizers.Quantizer`) are checked too
    (property ``declared_loss_terms``): they must be declared (not None) and name exactly the
    terms the component returns. For a quantizer, also ``encoder_channels``: the spec's
    ``encoder_channels(channels)`` is the built quantizer's ``input_channels``.

    Returns the check's report (``{property: examples run}``).
    """
    from ..registry import REGISTRIES
    from ..spec import ComponentSpec

    if not isinstance(spec, ComponentSpec) or type(spec).registry is None:
        raise TypeError(f"spec must be a component spec (e.g. a QuantizerSpec), got {type(spec).__name__}")
    registry = type(spec).registry
    kind = next((k for k, r in REGISTRIES.items() if r is registry), None)
    if kind is None:
        raise ValueError(f"the {registry.kind} registry has no check in flowmo.testing")
    check = {"quantizer": check_quantizer, "backbone": check_backbone, "time_sampler": check_time_sampler,
             "flow_loss": check_flow_loss, "time_grid": check_time_grid, "solver": check_solver,
             "posttrain": check_posttrain, "perceptual": check_distance, "generator": check_generator}[kind]
    options = _check_options(check, options, set(registry.wiring))
    extra = dict(options) if max_examples is None else {**options, "max_examples": max_examples}
    obj = registry.build(spec, **wiring)
    if kind == "quantizer":
        report = check_quantizer(obj, wiring["channels"], **extra)
    elif kind in ("backbone", "generator"):
        report = check(obj, **wiring, **extra)
    else:
        report = check(obj, **extra)
    if kind in ("quantizer", "flow_loss", "posttrain"):
        _check_declared_terms(kind, spec, obj, wiring)
        report["declared_loss_terms"] = 1
    if kind == "quantizer":
        _check_encoder_channels(spec, obj, wiring["channels"])
        report["encoder_channels"] = 1
    return report


def _check_encoder_channels(spec: Any, obj: Any, channels: int) -> None:
    """Property ``encoder_channels`` of :func:`check_component` for a quantizer: the spec's
    ``encoder_channels(channels)`` (the class's declaration, which sizes the model's encoder) is
    the built quantizer's ``input_channels`` (the width its forward takes)."""
    ck = _Checker("check_component", 1)

    def body() -> None:
        declared = spec.encoder_channels(channels)
        if declared != obj.input_channels:
            raise AssertionError(f"the quantizer {spec.name!r} declares encoder_channels(spec, {channels}) = {declared} "
                                 f"but its input_channels is {obj.input_channels}: the model's encoder would output "
                                 "another width than forward takes; declare the same in both")

    ck.once("encoder_channels", body)


def _check_options(check: Callable[..., Any], options: Any, wiring: set[str]) -> dict[str, Any]:
    """``options`` checked against the keyword-only options ``check`` takes (TypeError otherwise)."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise TypeError(f"options must be a dict of the check's keyword options, got {type(options).__name__} "
                        f"{options!r}")
    params = inspect.signature(check).parameters
    taken = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
             and n not in wiring and n != "max_examples"]
    if "max_examples" in options:
        raise TypeError("options: pass max_examples to check_component itself, not in options")
    bad = [k for k in options if k not in taken]
    if bad:
        raise TypeError(f"options: {check.__name__} takes no option {', '.join(map(repr, bad))}; it takes: "
                        f"{', '.join(taken) or 'none'} (the wiring arguments go to check_component as keywords)")
    return dict(options)


def _check_declared_terms(kind: str, spec: Any, obj: Any, wiring: dict[str, Any]) -> None:
    """The ``declared_loss_terms`` property of :func:`check_component`."""
    ck = _Checker("check_component", 1)
    what = {"quantizer": "quantizer", "flow_loss": "flow loss", "posttrain": "post-training objective"}[kind]
    how = {"quantizer": "flowmo.quantizers.Quantizer.loss_terms", "flow_loss": "flowmo.losses.FlowLoss.loss_terms",
           "posttrain": "flowmo.losses.PosttrainObjective.loss_terms"}[kind]

    def body() -> None:
        declared = spec.loss_terms()
        if declared is None:
            raise AssertionError(f"the {what} {spec.name!r} does not declare its loss terms: give its class a "
                                 f"classmethod loss_terms(cls, spec) (see {how}), or override its explicit spec "
                                 "class's loss_terms()")
        names = sorted(str(t[0]) for t in declared)
        g = _seeded(0)
        if kind == "quantizer":
            params = list(obj.parameters()) + list(obj.buffers())
            device = params[0].device if params else torch.device("cpu")
            was_training = obj.training
            obj.train()
            try:
                with torch.no_grad():
                    got = obj(torch.randn(2, 3, obj.input_channels, generator=g).to(device)).losses
            finally:
                obj.train(was_training)
        else:
            x, cond = _loss_inputs(0, 2, 8, (4, 6))
            dec = _ToyDecoder(x.shape, cond.shape, what)
            if kind == "flow_loss":
                got = obj(dec, x, cond, torch.rand(2, generator=g), torch.randn(x.shape, generator=g),
                          dropout=True, generator=g)
            else:
                teacher = ({"teacher": _ToyDecoder(x.shape, cond.shape, f"{what}'s teacher", any_batch=True)}
                           if getattr(obj, "needs_teacher", False) is True else {})
                got = obj(dec, x, cond, generator=g, **teacher)
        if not isinstance(got, dict):
            raise AssertionError(f"the {what} returned {type(got).__name__} terms, not a dict")
        if sorted(got) != names:
            raise AssertionError(f"the {what} {spec.name!r} returns the terms {sorted(got)!r} but its spec declares "
                                 f"{names!r}: declare exactly the terms it returns (a classmethod "
                                 f"loss_terms(cls, spec) on its class, see {how})")

    ck.once("declared_loss_terms", body)
