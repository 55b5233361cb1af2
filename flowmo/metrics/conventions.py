"""The evaluation's conventions in words: what each metric means under each protocol, as written
to ``metrics.json`` by ``flowmo eval`` (see :mod:`flowmo.metrics.evaluator` and docs/evaluation.md)."""

__all__ = ["LPIPS_NETS", "QUANTISATION", "CONVENTIONS", "PSNR_CONVENTION", "PSNR5_CONVENTION", "SSIM_CONVENTION",
           "LPIPS_CONVENTION", "FID_CONVENTION"]

#: LPIPS head name -> the flowmo.nets network name (whose weight files it needs).
LPIPS_NETS = {"vgg": "lpips_vgg", "alex": "lpips_alex"}

#: What "8 bits" means under each protocol (also written to metrics.json by ``flowmo eval``).
QUANTISATION = {
    "standard": "8 bits by rounding: round((x + 1) * 127.5) clamped to 0..255 (float64, half to even), "
                "originals and reconstructions alike",
    "release": "8 bits as the released evaluation (flowmo/evaluate.py): originals re-expressed as its data "
               "loader makes them, float32(u / 127.5 - 1) with u = round((x + 1) * 127.5); reconstructions "
               "clamped to [-1, 1]; then uint8(((x + 1) / 2) * 255.0) in float32, TRUNCATED by the cast",
}
_PSNR_EXACT = ("an exact reconstruction counts as the PSNR of one channel of one pixel off by one level "
               "(the release would give inf)")
CONVENTIONS = {
    "standard": {
        "psnr": "per image on the rounded 8-bit images, data range 255, MSE over all channels and pixels of "
                "the image, then averaged over images; " + _PSNR_EXACT,
        "psnr_batches_of_5": "PSNR of the pooled 8-bit MSE of consecutive groups of 5 images (in id order), "
                             "averaged over groups (the release's averaging); for comparison only",
        "ssim": "per image on the rounded 8-bit images as skimage structural_similarity(gaussian_weights=True, "
                "sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis), averaged over images",
        "lpips": "LPIPS v0.1 per image on the rounded 8-bit images (as [-1, 1] floats), averaged over images",
        "rfid": "exact Frechet distance (never negative) between Gaussians fitted (float64, N - 1 covariance) "
                "to the 2048-d pool3 features of the FID InceptionV3 (pt_inception-2015-12-05) of the rounded "
                "8-bit originals and reconstructions, each resized to 299x299 bilinearly",
    },
    "release": {
        "psnr": "the release's PSNR: PSNR of the pooled 8-bit MSE (truncated images) of consecutive batches "
                "of 5 images in id order, averaged over batches (its eval_batch_size 5, one process); "
                + _PSNR_EXACT,
        "psnr_batches_of_5": "the same as psnr",
        "psnr_mean_over_images": "per-image PSNR on the truncated 8-bit images, averaged over images",
        "ssim": "per image on the truncated 8-bit images as the release's skimage structural_similarity(rec, "
                "gt, data_range=1.0, channel_axis=-1) on u8 / 255: 7x7 uniform window, sample covariances, "
                "K1 0.01, K2 0.03, 3-pixel crop; averaged over images",
        "lpips": "LPIPS v0.1 per image on the float images as the release: originals as its loader makes them, "
                 "reconstructions clamped to [-1, 1], each through (x + 1) / 2 * 2 - 1 in float32; averaged",
        "rfid": "exact Frechet distance (never negative) between Gaussians fitted (float64, N - 1 covariance) "
                "to the 2048-d pool3 features of the FID InceptionV3 (pt_inception-2015-12-05) of the float "
                "images as for LPIPS, each resized to 299x299 bilinearly (the release's scipy sqrtm formula "
                "gives the same value up to its round-off where it does not fail)",
    },
}
# the standard protocol's strings under their former names
PSNR_CONVENTION = CONVENTIONS["standard"]["psnr"]
PSNR5_CONVENTION = CONVENTIONS["standard"]["psnr_batches_of_5"]
SSIM_CONVENTION = CONVENTIONS["standard"]["ssim"]
LPIPS_CONVENTION = CONVENTIONS["standard"]["lpips"]
FID_CONVENTION = CONVENTIONS["standard"]["rfid"]
