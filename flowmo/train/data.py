"""Image folders and built-in photos: kept as an import path (``flowmo.train.data.held_out_photos``,
``ImageFolderDataset``, ...); the code lives in :mod:`flowmo.data.folders`, the data layer that
training, evaluation and the CLI share."""

from ..data.folders import (  # noqa: F401  re-exported
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    BuiltinPhotos,
    BUILTIN_PHOTO_NAMES,
    DEFAULT_HOLDOUT,
    available_photos,
    load_photo,
    held_out_photos,
)

__all__ = ['IMAGE_EXTENSIONS', 'ImageFolderDataset', 'BuiltinPhotos', 'BUILTIN_PHOTO_NAMES', 'DEFAULT_HOLDOUT', 'available_photos', 'load_photo', 'held_out_photos']
