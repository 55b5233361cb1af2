"""Kept as an import path: the state-dict checks live in :mod:`flowmo.state_dicts`."""

from .state_dicts import StateDictMismatchError, check_finite, check_state_dict  # noqa: F401  re-exported

__all__ = ["StateDictMismatchError", "check_state_dict", "check_finite"]
