"""Reconstruction metrics (:mod:`flowmo.eval.metrics`), the streaming evaluator
(:mod:`flowmo.eval.evaluator`) and ``flowmo eval`` (:mod:`flowmo.eval.cli`).
See docs/evaluation.md for the protocol and its conventions."""

from .evaluator import Evaluator, codebook_statistics, evaluate_model, image_noise
from .metrics import (
    PROTOCOLS,
    FeatureStats,
    batched_psnr,
    feature_statistics,
    frechet_distance,
    psnr,
    quantise_pair,
    release_originals,
    ssim,
    to_uint8,
)

__all__ = [
    "Evaluator",
    "evaluate_model",
    "image_noise",
    "codebook_statistics",
    "FeatureStats",
    "feature_statistics",
    "frechet_distance",
    "psnr",
    "ssim",
    "to_uint8",
    "PROTOCOLS",
    "batched_psnr",
    "quantise_pair",
    "release_originals",
]
