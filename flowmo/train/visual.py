"""Image grids as PNG: kept as an import path (``flowmo.train.visual.save_image_rows``); the
code lives in :mod:`flowmo.data.grids`."""

from ..data.grids import (  # noqa: F401  re-exported
    to_uint8_hwc,
    save_image_rows,
)

__all__ = ['to_uint8_hwc', 'save_image_rows']
