"""What flowmo measures, as a library: reconstruction and distribution metrics, the streaming
:class:`Evaluator` and generation metrics (``flowmo eval`` / ``flowmo eval-gen`` run them).

Images are float tensors in [-1, 1] of shape ``(B, C, H, W)``.  PSNR and SSIM
are computed on 8-bit images (see :func:`to_uint8`) with a data range of 255,
under one of two protocols (:data:`PROTOCOLS`, keyword ``protocol``):

``"standard"`` (the default)
    8 bits by ROUNDING, ``round((x + 1) * 127.5)`` in float64; SSIM with an
    11x11 Gaussian window (sigma 1.5) and population covariances, numerically
    matching ``skimage.metrics.structural_similarity(a, b, channel_axis=...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=255)`` (the settings of Wang et al. 2004).

``"release"``
    what the released FlowMo evaluation code (``flowmo/evaluate.py`` of
    kylesargent/FlowMo, whose figures are the paper's Table 1) does:

    * 8 bits by TRUNCATION in float32: reconstructions are clamped to [-1, 1],
      then ``uint8(((x + 1) / 2) * 255.0)`` with each operation rounded to
      float32 and the cast truncating (e.g. ``(x + 1) / 2 = 0.999`` -> 254,
      where rounding gives 255);
    * originals are taken to be 8-bit images (as every data set is):
      ``u = round((x + 1) * 127.5)`` is re-expressed as the release's data
      loader makes it, ``float32(u / 127.5 - 1.0)`` (computed in float64), and
      then truncated like the reconstructions.  In float32 that chain gives
      ``u - 1`` for 95 of the 256 levels (see :func:`release_originals`);
    * SSIM is scikit-image's ``structural_similarity`` with its DEFAULT window:
      the release calls ``structural_similarity(rec, gt, data_range=1.0,
      channel_axis=-1)`` on float32 HWC arrays ``u8 / 255``, i.e. a 7x7
      uniform window (scipy ``uniform_filter``, 'reflect' borders), SAMPLE
      covariances (x 49/48), K1 = 0.01, K2 = 0.03, the map cropped by 3
      pixels, per-channel means averaged;
    * its PSNR is that of the pooled MSE of each batch of 5 images, averaged
      over batches (:func:`batched_psnr`).

Value range (:func:`psnr`, :func:`ssim`, :func:`quantise_pair` and the
:class:`~flowmo.metrics.Evaluator`):

* ``originals`` are data: they must lie in [-1, 1] up to a tolerance of
  :data:`ORIGINALS_TOL` (1e-3) (values within it are clamped); anything beyond
  raises ``ValueError`` naming ``originals`` (e.g. images still in [0, 255]).
* ``reconstructions`` are a model's output: they are clamped to [-1, 1] before
  the 8-bit conversion, as decoding with a clipping sampler and saving to PNG
  do, so an unclipped sampler's overshoot (or an untrained model's output) is
  measured as the image it would save.  Values whose range shows data on the
  [0, 255] scale (none below -1e-3 and some above 2) raise ``ValueError``
  naming ``reconstructions``.  (:func:`~flowmo.metrics.evaluate_model` clamps a
  FlowMo's own output to [-1, 1] first, so ``flowmo eval`` never trips this,
  whatever the sampler.)
* Images in [0, 1] cannot be told from bright [-1, 1] images by their values,
  so that mistake is NOT detected: convert with ``2 * x - 1``.

Functions:

* :func:`to_uint8`, :func:`release_originals` - the 8-bit conversions.
* :func:`psnr` - per-image peak signal-to-noise ratio over all channels/pixels.
* :func:`batched_psnr` - the release's batch-pooled PSNR from per-image MSEs.
* :func:`ssim` - per-image structural similarity (window per protocol).
* :func:`frechet_distance`, :func:`feature_statistics`, :class:`FeatureStats` -
  the Frechet distance between Gaussians fitted to feature sets (the FID
  formula), exact and non-negative (see its docstring), plus streaming /
  mergeable feature statistics.  No network weights are involved here;
  feature extraction is the caller's business.

Metric computations run in float64.  Devices without float64 support (Apple
MPS) fall back to the CPU; elsewhere the result stays on the input's device.
"""

from flowmo.metrics.eight_bit import quantise_pair, release_originals, to_uint8
from flowmo.metrics.evaluator import Evaluator
from flowmo.metrics.codebook import codebook_statistics
from flowmo.samplers.noise import image_noise
from flowmo.metrics.run import evaluate_model
from flowmo.metrics.feature_stats import FeatureStats, feature_statistics
from flowmo.metrics.frechet import frechet_distance
from flowmo.metrics.inputs import ORIGINALS_TOL, PROTOCOLS
from flowmo.metrics.pixel import RELEASE_PSNR_BATCH, batched_psnr, psnr, ssim

__all__ = [
    "Evaluator", "evaluate_model", "image_noise", "codebook_statistics",
    "PROTOCOLS", "ORIGINALS_TOL", "RELEASE_PSNR_BATCH",
    "to_uint8", "release_originals", "quantise_pair", "psnr", "batched_psnr", "ssim",
    "frechet_distance", "feature_statistics", "FeatureStats",
]
