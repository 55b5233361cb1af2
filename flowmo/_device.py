"""Kept as an import path: the device checks live in :mod:`flowmo.devices`."""

from .devices import check_device, parse_device  # noqa: F401  re-exported

__all__ = ["parse_device", "check_device"]
