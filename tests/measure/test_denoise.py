"""PSNR and SSIM against known values; the low-pass denoisers against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from cnnzoo.measure.denoise import (
    DENOISERS,
    SSIM_C1,
    add_noise,
    best_strength,
    lowpass,
    psnr,
    ssim,
)


def test_psnr_of_a_known_error():
    clean = np.zeros((2, 8, 8))
    estimate = clean + np.array([0.1, 0.01])[:, None, None]  # mse 1e-2 and 1e-4
    np.testing.assert_allclose(psnr(clean, estimate), [20.0, 40.0])


def test_ssim_of_identical_images_is_one():
    x = np.random.default_rng(0).random((3, 28, 28))
    np.testing.assert_allclose(ssim(x, x), 1.0)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    # Flat images have no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly.
    a, b = 0.3, 0.7
    got = ssim(np.full((1, 20, 20), a), np.full((1, 20, 20), b))
    assert got[0] == pytest.approx((2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1))


def test_ssim_of_a_shifted_image_is_the_luminance_term_of_the_local_means():
    # y = x + c keeps every local variance and covariance, so only the luminance term
    # is below 1: with local means m and m + c it is (2m(m+c) + C1) / (m^2 + (m+c)^2 + C1).
    from scipy import ndimage

    x = np.random.default_rng(1).random((1, 24, 24))
    c = 0.2
    m = ndimage.gaussian_filter(x, (0, 1.5, 1.5), truncate=3.5, mode="reflect")
    luminance = (2 * m * (m + c) + SSIM_C1) / (m * m + (m + c) ** 2 + SSIM_C1)
    assert ssim(x, x + c)[0] == pytest.approx(luminance[:, 5:-5, 5:-5].mean())


def test_lowpass_matches_numpy():
    x = np.random.default_rng(2).random((4, 28, 28))
    fy, fx = np.meshgrid(np.fft.fftfreq(28), np.fft.fftfreq(28), indexing="ij")
    mask = 1 / (1 + (np.hypot(fx, fy) / 0.2) ** 4)
    expected = np.real(np.fft.ifft2(np.fft.fft2(x) * mask))
    np.testing.assert_allclose(lowpass(x, 0.2, "butterworth"), expected, atol=1e-5)


def test_best_strength_denoises_smooth_images():
    # Smooth images under strong white noise: every denoiser's chosen strength must beat
    # doing nothing, and the chosen ones must not sit at the edge of a useless grid.
    yy, xx = np.mgrid[0:28, 0:28] / 28
    clean = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (k * xx + yy)) for k in range(1, 9)])
    noisy = add_noise(clean, 0.2, seed=0)
    for denoiser in DENOISERS:
        strength = best_strength(denoiser, clean, noisy)
        assert psnr(clean, denoiser.apply(noisy, strength)).mean() > psnr(clean, noisy).mean() + 3


def test_augment_noise_adds_seeded_gaussian_noise_in_pixel_units():
    import torch

    from cnnzoo.config.experiment import AugmentConfig
    from cnnzoo.data.augment import BatchTransform

    images = torch.randint(0, 256, (64, 2, 16, 16), dtype=torch.uint8)
    std = (0.5, 0.25)
    noisy = BatchTransform((0.5, 0.5), std, AugmentConfig(noise=0.1), True, torch.device("cpu"))
    plain = BatchTransform((0.5, 0.5), std, AugmentConfig(), True, torch.device("cpu"))
    added = noisy.train(images, seed=3) - plain.train(images, seed=3)
    # sigma 0.1 in pixel units is 0.1 / std once normalised, per channel
    for channel, s in enumerate(std):
        assert float(added[:, channel].std()) == pytest.approx(0.1 / s, rel=0.05)
        assert abs(float(added[:, channel].mean())) < 0.02 / s
    torch.testing.assert_close(noisy.train(images, seed=3), noisy.train(images, seed=3))
    assert not torch.equal(noisy.train(images, seed=3), noisy.train(images, seed=4))
