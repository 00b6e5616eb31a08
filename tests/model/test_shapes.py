"""The shape functions against torch and against the formulas of the cs231n notes
and TensorFlow's 'same' padding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.layers.shapes import (
    conv_output,
    receptive_field,
    resolve_padding,
    same_padding,
    window_output,
)

GRID = list(itertools.product([5, 7, 8, 13], [1, 2, 3, 4], [1, 2, 3], [0, 1, 2], [1, 2]))


@pytest.mark.parametrize(("size", "kernel", "stride", "pad", "dilation"), GRID)
def test_window_output_matches_torch_conv(size, kernel, stride, pad, dilation):
    expected_fits = size + 2 * pad >= dilation * (kernel - 1) + 1
    got = window_output(size, kernel, stride, 2 * pad, dilation)
    if not expected_fits:
        assert got == 0
        return
    x = torch.zeros(1, 1, size, size)
    w = torch.zeros(1, 1, kernel, kernel)
    out = F.conv2d(x, w, stride=stride, padding=pad, dilation=dilation)
    assert got == out.shape[-1]


def test_cs231n_examples():
    # "a 7x7 input and a 3x3 filter with stride 1 and pad 0 gives a 5x5 output;
    # with stride 2 a 3x3 output" (cs231n notes, Spatial arrangement).
    assert window_output(7, 3, 1, 0) == 5
    assert window_output(7, 3, 2, 0) == 3
    # AlexNet's first layer: 227x227, F=11, S=4, P=0 -> 55.
    assert window_output(227, 11, 4, 0) == 55


@pytest.mark.parametrize(("size", "kernel", "stride", "dilation"),
                         list(itertools.product([5, 6, 7, 28, 32], [1, 2, 3, 4, 5], [1, 2, 3],
                                                [1, 2])))
def test_same_padding_gives_ceil_size_over_stride(size, kernel, stride, dilation):
    before, after = same_padding(size, kernel, stride, dilation)
    assert after - before in (0, 1)  # the odd pixel goes after, as in TensorFlow
    assert window_output(size, kernel, stride, before + after, dilation) == math.ceil(size / stride)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("kernel", [2, 3, 4, 5])
def test_same_padding_matches_torch_same_for_stride_one(kernel):
    x = torch.randn(1, 1, 9, 9)
    w = torch.randn(1, 1, kernel, kernel)
    top, bottom, left, right = resolve_padding("same", (9, 9), (kernel,) * 2, (1, 1), (1, 1))
    ours = F.conv2d(F.pad(x, (left, right, top, bottom)), w)
    torch.testing.assert_close(ours, F.conv2d(x, w, padding="same"))


def test_rectangular_sizes_are_height_width():
    assert conv_output((10, 20), (3, 5), (1, 2), (1, 1, 2, 2)) == (10, 10)


def test_receptive_field_of_stacked_3x3_convs_is_7x7():
    # Three 3x3 convs see 7x7 (VGG, Simonyan and Zisserman 2015, section 2.3).
    rf, jump = (1, 1), (1, 1)
    for _ in range(3):
        rf, jump = receptive_field(rf, jump, (3, 3), (1, 1))
    assert rf == (7, 7)
    # A 2x2/2 pool then a 3x3 conv: 2 + 2*2 = 6.
    rf, jump = receptive_field((1, 1), (1, 1), (2, 2), (2, 2))
    rf, jump = receptive_field(rf, jump, (3, 3), (1, 1))
    assert rf == (6, 6) and jump == (2, 2)


def test_ceil_pooling_sizes_are_torchs():
    """`pool: {ceil: true}` against torch's ceil_mode, over sizes, windows, strides and
    paddings (the last window may start in the input or the left padding, never the right)."""
    from cnnzoo.layers.shapes import ceil_window_output

    for n, k, s, p in itertools.product(range(1, 20), range(1, 6), range(1, 5), range(3)):
        if 2 * p > k or n + 2 * p < k:
            continue
        expected = F.max_pool2d(torch.zeros(1, 1, n, n), k, s, p, ceil_mode=True).shape[-1]
        assert ceil_window_output(n, k, s, p) == expected, (n, k, s, p)
