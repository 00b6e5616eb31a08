"""Denoising measured: Gaussian noise, PSNR and SSIM, and the filters that remove it.

High frequencies carry both an image's detail and most of white noise's power (white
noise spreads evenly over all frequencies, a natural image's power falls with
frequency), so a low-pass filter removes more noise than signal, up to a point. That
point, the filter's strength, is chosen here on held-out images and reported on
others, for a spatial Gaussian blur and for the ideal, Gaussian and Butterworth
low-pass of the `freq_filter` layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from cnnzoo.data.idx import read_idx
from cnnzoo.layers.freq import FreqFilterSpec
from cnnzoo.layers.modules import FreqFilter

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# SSIM's constants (Wang, Bovik, Sheikh and Simoncelli 2004, "Image quality assessment:
# from error visibility to structural similarity"): an 11 x 11 Gaussian window of
# sigma 1.5, K1 = 0.01, K2 = 0.03, for pixel values in [0, 1] (L = 1).
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius 5: the 11 x 11 window
SSIM_C1 = (0.01 * 1.0) ** 2
SSIM_C2 = (0.03 * 1.0) ** 2


def fashion_test_images(root: Path = FASHION_MNIST) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's 10,000 test images (N, 28, 28) as float64 in [0, 1], and labels."""
    images = read_idx(root / "t10k-images-idx3-ubyte.gz").astype(np.float64) / 255
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def add_noise(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """images + N(0, sigma^2) per pixel, not clipped: additive white Gaussian noise."""
    return images + sigma * np.random.default_rng(seed).standard_normal(images.shape)


def psnr(clean: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each image (N, H, W), peak 1."""
    mse = ((clean - estimate) ** 2).mean(axis=(-2, -1))
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-20))


def ssim(clean: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Mean structural similarity of each image (N, H, W), as Wang et al. 2004 define it:
    local means, variances and covariance under the Gaussian window (population
    statistics), averaged over the positions whose window lies inside the image (as
    scikit-image does)."""
    def blur(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, (0, SSIM_SIGMA, SSIM_SIGMA), truncate=SSIM_TRUNCATE,
                                       mode="reflect")

    mx, my = blur(clean), blur(estimate)
    vx = blur(clean * clean) - mx * mx
    vy = blur(estimate * estimate) - my * my
    cov = blur(clean * estimate) - mx * my
    index = ((2 * mx * my + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))
    r = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    return index[:, r:-r, r:-r].mean(axis=(-2, -1))


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Spatial Gaussian blur of each image (mirror padding at the borders)."""
    return ndimage.gaussian_filter(images, (0, sigma, sigma), mode="reflect")


def lowpass(images: np.ndarray, cutoff: float, shape: str) -> np.ndarray:
    """The `freq_filter` layer (low-pass, `shape`) applied to each image."""
    spec = FreqFilterSpec(kind="lowpass", cutoff=cutoff, shape=shape)
    layer = FreqFilter(spec.mask(images.shape[-2:]), "matmul").double()
    with torch.no_grad():
        return layer(torch.from_numpy(images)[:, None])[:, 0].numpy()


@dataclass(frozen=True)
class Denoiser:
    name: str
    strength: str  # what the strength means, for the table
    grid: tuple[float, ...]  # the strengths tried on the held-out images
    apply: Callable[[np.ndarray, float], np.ndarray]


CUTOFFS = tuple(float(c) for c in np.round(np.linspace(0.04, 0.7, 34), 3))  # up to the corner
DENOISERS = (
    Denoiser("Gaussian blur (spatial)", "sigma px",
             tuple(float(s) for s in np.round(np.geomspace(0.3, 3.0, 21), 3)), gaussian_blur),
    Denoiser("ideal low-pass", "cutoff", CUTOFFS, lambda x, c: lowpass(x, c, "ideal")),
    Denoiser("Gaussian low-pass", "cutoff", CUTOFFS, lambda x, c: lowpass(x, c, "gaussian")),
    Denoiser("Butterworth low-pass (order 2)", "cutoff", CUTOFFS,
             lambda x, c: lowpass(x, c, "butterworth")),
)


def best_strength(denoiser: Denoiser, clean: np.ndarray, noisy: np.ndarray) -> float:
    """The strength of `denoiser` with the highest mean PSNR on these images."""
    scores = [psnr(clean, denoiser.apply(noisy, s)).mean() for s in denoiser.grid]
    return denoiser.grid[int(np.argmax(scores))]


@dataclass(frozen=True)
class Score:
    method: str
    sigma: float  # the noise's standard deviation
    strength: float | None  # chosen on the held-out images; None for no filter
    psnr: float  # mean over the test images, dB
    ssim: float


def measure(clean_val: np.ndarray, clean_test: np.ndarray, sigma: float,
            seed: int) -> tuple[list[Score], dict[str, np.ndarray]]:
    """Scores of no filter and of each denoiser (strength chosen on `clean_val`) on
    `clean_test` with noise `sigma`; and each method's output on the test images."""
    noisy_val = add_noise(clean_val, sigma, seed)
    noisy_test = add_noise(clean_test, sigma, seed + 1)
    scores = [Score("no filter", sigma, None, float(psnr(clean_test, noisy_test).mean()),
                    float(ssim(clean_test, noisy_test).mean()))]
    outputs = {"noisy": noisy_test}
    for denoiser in DENOISERS:
        strength = best_strength(denoiser, clean_val, noisy_val)
        out = denoiser.apply(noisy_test, strength)
        outputs[denoiser.name] = out
        scores.append(Score(denoiser.name, sigma, strength, float(psnr(clean_test, out).mean()),
                            float(ssim(clean_test, out).mean())))
    return scores, outputs


def noisy_accuracy(run_dir: Path, images: np.ndarray, labels: np.ndarray,
                   sigmas: tuple[float, ...], seed: int, batch: int = 1000) -> dict[float, float]:
    """A trained run's accuracy on `images` (N, H, W in [0, 1]) with Gaussian noise of
    each sigma added before its own normalisation (sigma 0: the clean images)."""
    from cnnzoo.runs import rundir
    from cnnzoo.runs.load import load_run_model, run_transform
    from cnnzoo.training.evaluation import predict_logits

    run = rundir.open_run(run_dir)
    device = torch.device("cpu")
    model = load_run_model(run, device)
    transform = run_transform(run, device)
    accuracy = {}
    for sigma in sigmas:
        noisy = add_noise(images, sigma, seed) if sigma > 0 else images
        correct = 0
        with torch.no_grad():
            for start in range(0, len(noisy), batch):
                # the transform takes pixel values on 0..255, as the uint8 batches of training
                x = torch.from_numpy(noisy[start:start + batch, None] * 255).float()
                logits = predict_logits(model, transform.normalize(x), run.config.train.tta,
                                        transform.neg_shift)
                correct += int((logits.argmax(1).numpy() == labels[start:start + batch]).sum())
        accuracy[sigma] = correct / len(noisy)
    return accuracy
