"""Image decoding, resizing and cropping: kept as an import path; the code lives in
:mod:`flowmo.data.images` (the data layer below training, evaluation and the CLI)."""

from .data.images import (  # noqa: F401  re-exported
    IMAGE_EXTENSIONS,
    BACKGROUND,
    DEFAULT_PIXEL_LIMIT,
    UnsupportedImageError,
    check_convertible,
    check_size,
    decode_image,
    image_to_tensor,
    open_image_file,
    pixel_limit,
    resized_size,
    resize_short_side,
    center_crop,
)

__all__ = ['IMAGE_EXTENSIONS', 'BACKGROUND', 'DEFAULT_PIXEL_LIMIT', 'UnsupportedImageError', 'check_convertible', 'check_size', 'decode_image', 'image_to_tensor', 'open_image_file', 'pixel_limit', 'resized_size', 'resize_short_side', 'center_crop']
