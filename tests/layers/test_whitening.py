"""conv's `init: whitening`: the filters against numpy's eigendecomposition of the same
patches, what the conv makes of them (near-identity covariance), frozen by default,
and the configs that cannot work refused with one clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

import cnnzoo
from cnnzoo.layers.whitening import WHITEN_EPS, whitening_weights
from cnnzoo.model.build import build_layer
from tests.helpers.common import assert_summary_refuses
from tests.helpers.layers import one_thread, plan_of  # noqa: F401 (an autouse fixture)


def smooth_images(n: int, depth: int, size: int, seed: int = 0) -> np.ndarray:
    """Images whose neighbouring pixels and channels are correlated, with a mean away
    from 0, so the patch covariance has distinct eigenvalues and whitening has work."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, depth, size + 2, size + 2))
    smooth = noise[:, :, 1:-1, 1:-1] + 0.6 * (noise[:, :, :-2, 1:-1] + noise[:, :, 1:-1, 2:])
    mix = np.eye(depth) + 0.5 * rng.normal(size=(depth, depth))
    return np.einsum("ed,ndhw->nehw", mix, smooth) + 0.3


def numpy_patches(images: np.ndarray, kernel: tuple[int, int],
                  dilation: tuple[int, int]) -> np.ndarray:
    """Every unpadded stride-1 patch (P, D*kh*kw), in a conv weight's (D, kh, kw) order."""
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))
    windows = sliding_window_view(images, span, axis=(2, 3))[..., ::dilation[0], ::dilation[1]]
    n, depth, h, w, kh, kw = windows.shape
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, depth * kh * kw)


def numpy_eigen(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of the patches' covariance."""
    values, vectors = np.linalg.eigh(np.cov(patches.T, bias=True))
    return values[::-1], vectors[:, ::-1]


CASES = [(1, (2, 2), (1, 1)), (3, (3, 3), (1, 1)), (2, (3, 2), (2, 1))]


@pytest.mark.parametrize(("depth", "kernel", "dilation"), CASES)
def test_the_whitening_conv_gives_identity_covariance_on_the_sample(depth, kernel, dilation):
    images = smooth_images(60, depth, 12)
    size = depth * kernel[0] * kernel[1]
    text = (f"conv: {{filters: {2 * size}, kernel: {list(kernel)}, dilation: {list(dilation)}, "
            "init: whitening, whiten_eps: 1e-9}")
    plan = plan_of(12, 12, depth, text).layers[1]
    conv = build_layer(plan)
    sample = torch.tensor(images, dtype=torch.float32)
    plan.spec.initialise_from_images(conv, sample)
    with torch.no_grad():
        out = conv(sample).double().numpy()  # (N, F, H', W')
    outputs = out.transpose(0, 2, 3, 1).reshape(-1, 2 * size)
    first, second = outputs[:, :size], outputs[:, size:]
    np.testing.assert_allclose(np.cov(first.T, bias=True), np.eye(size), atol=2e-4)
    np.testing.assert_allclose(first.mean(0), 0, atol=2e-4)  # the bias centres them
    np.testing.assert_allclose(second, -first, atol=1e-5)


@pytest.mark.parametrize(("depth", "kernel", "dilation"), CASES)
def test_the_filters_are_numpys_eigenvectors_up_to_sign(depth, kernel, dilation):
    images = smooth_images(60, depth, 12, seed=1)
    patches = numpy_patches(images, kernel, dilation)
    values, vectors = numpy_eigen(patches)
    half = min(3, len(values) - 1)  # fewer filters than 2*K: the top eigenvectors
    # Eigenvectors are defined up to sign where their eigenvalue stands apart.
    assert (np.diff(values[: half + 1]) < -1e-3 * values[0]).all(), values
    weight, bias = whitening_weights(torch.tensor(images, dtype=torch.float32), 2 * half,
                                     kernel, dilation)
    assert weight.shape == (2 * half, depth, *kernel) and weight.dtype == torch.float32
    w = weight.double().reshape(2 * half, -1).numpy()
    for i in range(half):
        expected = vectors[:, i] / np.sqrt(values[i] + WHITEN_EPS)
        sign = np.sign(w[i] @ expected)
        np.testing.assert_allclose(w[i], sign * expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w[half:], -w[:half])
    np.testing.assert_allclose(bias.double().numpy(), -(w @ patches.mean(0)), rtol=1e-4,
                               atol=1e-5)
    # The covariance the whitened patches have: l / (l + eps), near 1 where l >> eps.
    whitened = (patches - patches.mean(0)) @ w[:half].T
    np.testing.assert_allclose(np.cov(whitened.T, bias=True),
                               np.diag(values[:half] / (values[:half] + WHITEN_EPS)), atol=1e-5)


def test_whitening_is_frozen_unless_trainable():
    frozen = plan_of(8, 8, 1, "conv: {filters: 8, kernel: 2, init: whitening}").layers[1]
    assert frozen.label == "conv 2x2/1, 8 whitening frozen"
    assert not any(p.requires_grad for p in build_layer(frozen).parameters())
    learned = plan_of(8, 8, 1, "conv: {filters: 8, kernel: 2, init: whitening, "
                               "trainable: true}").layers[1]
    assert all(p.requires_grad for p in build_layer(learned).parameters())


def test_a_whitening_config_plans_and_builds_without_data():
    """The filters come from the images only when training starts: the summary, the
    network and a forward pass need no data (the layer holds PyTorch's default)."""
    config = cnnzoo.parse_config(
        "model:\n  layers:\n    - input: {width: 8, height: 8, depth: 1}\n"
        "    - conv: {filters: 8, kernel: 2, init: whitening}\n    - fc: 10\n")
    assert cnnzoo.plan_experiment(config).layers[1].params == 40
    model = cnnzoo.build_model(config)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(("depth", "layers", "message", "fix"), [
    (1, "- conv: {filters: 7, kernel: 2, init: whitening}",
     "init: whitening makes its filters in pairs", "set filters: 6 or 8"),
    (1, "- conv: {filters: 10, kernel: 2, init: whitening}",
     "init: whitening has at most 8 filters to give", "set filters: 8 or fewer"),
    (2, "- conv: {filters: 4, kernel: 2, groups: 2, init: whitening}",
     "groups must be 1. Received: groups=2", "remove groups"),
    (1, "- conv: {filters: 4, kernel: 3}\n- conv: {filters: 4, kernel: 2, init: whitening}",
     "must see the images, but its input comes from layers[1] conv",
     "make this conv the first layer after input"),
    (1, "- residual: [{conv: {filters: 2, kernel: 3, padding: 1, init: whitening}}]",
     "must see the images, but it is inside a block", "first layer after input"),
    (1, "- conv: {filters: 4, kernel: 2, whiten_eps: 0.001}",
     "whiten_eps is an option of init: whitening", "set init: whitening"),
    (1, "- conv: {filters: 4, kernel: 2, init: whitening, whiten_eps: 0}",
     "whiten_eps must be above 0", None),
])
def test_whitening_where_it_cannot_work_is_refused(cli, tmp_path, depth, layers, message,
                                                   fix):
    assert_summary_refuses(cli, tmp_path, depth, layers, message, fix)
