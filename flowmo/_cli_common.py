"""Kept as an import path: the shared command-line pieces live in :mod:`flowmo.cli_common`."""

from .cli_common import (  # noqa: F401  re-exported
    SAMPLER_OPTIONS_HELP,
    add_common_arguments,
    add_sampler_arguments,
    positive_int,
    sampler_from_args,
)

__all__ = ["add_common_arguments", "add_sampler_arguments", "sampler_from_args", "positive_int",
           "SAMPLER_OPTIONS_HELP"]
