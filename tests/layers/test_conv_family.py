"""The convolution family: padding modes against numpy.pad, the locally-connected layer
against a naive loop and against conv, FFT convolution against direct (values and
gradients), fixed kernels against outputs computed by hand, and frozen weights. The `filter`
command is tested in tests/tools/test_filter.py, weight initialisation in
tests/layers/test_init.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.layers import LocallyConnected2d
from cnnzoo.layers.basic import InputSpec
from cnnzoo.layers.padding import PADDING_MODES, max_padding, pad
from cnnzoo.layers.registry import parse_layer
from cnnzoo.model.build import build_layer
from cnnzoo.model.summary import summary_totals
from cnnzoo.utils.params import Where
from tests.helpers.common import slow_cases
from tests.helpers.layers import (
    layer_of,
    one_thread,  # noqa: F401 (an autouse fixture)
    plan_of,
    yaml_of,
)

NUMPY_MODE = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
}



def numpy_pad(x: np.ndarray, padding: tuple[int, int, int, int], mode: str) -> np.ndarray:
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=NUMPY_MODE[mode])


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_every_padding_mode_matches_numpy_pad(mode):
    rng = np.random.default_rng(PADDING_MODES.index(mode))
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(1, 7, size=2))
        pads = []
        for size in (height, height, width, width):
            limit = max_padding(mode, size)
            pads.append(int(rng.integers(0, (limit if limit is not None else 3 * size) + 1)))
        x = rng.standard_normal((2, 3, height, width))
        got = pad(torch.from_numpy(x), tuple(pads), mode).numpy()
        np.testing.assert_array_equal(got, numpy_pad(x, tuple(pads), mode))


def test_symmetric_padding_larger_than_the_input_goes_through_the_planner():
    # numpy's symmetric mode keeps mirroring past the first copy; so does the layer.
    conv = layer_of(3, 2, 1, "conv: {filters: 1, kernel: 1, weights: identity, padding: [3, 7], "
                             "padding_mode: symmetric}")
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3), (7, 7)), mode="symmetric")
    np.testing.assert_array_equal(conv(x).detach().numpy(), expected)


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_mirror_limits_are_config_errors(mode):
    size = 4
    too_far = max_padding(mode, size) + 1
    with pytest.raises(cnnzoo.ConfigError, match=f"{mode} padding of {too_far}"):
        plan_of(size, size, 1, f"conv: {{filters: 1, padding: {too_far}, padding_mode: {mode}}}")


def naive_local(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding,
                mode, dilation) -> np.ndarray:
    """Every output position computed on its own, with its own filters."""
    xp = numpy_pad(x, padding, mode)
    out_h, out_w, filters, kh, kw, _ = weight.shape
    out = np.zeros((x.shape[0], filters, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            rows = i * stride[0] + dilation[0] * np.arange(kh)
            cols = j * stride[1] + dilation[1] * np.arange(kw)
            window = xp[:, :, rows][:, :, :, cols]  # (B, C, kh, kw)
            out[:, :, i, j] = np.einsum("bcuv,ouvc->bo", window, weight[i, j])
            if bias is not None:
                out[:, :, i, j] += bias[:, i, j]
    return out


LOCAL_CASES = [
    "local: {filters: 4, kernel: 3}",
    "local: {filters: 3, kernel: [2, 3], stride: [2, 1], padding: same, padding_mode: reflect}",
    "local: {filters: 2, kernel: 3, dilation: 2, padding: 2, padding_mode: symmetric}",
    "local: {filters: 5, kernel: 1, stride: 3, bias: false}",
    "local: {filters: 2, kernel: 4, padding: [1, 2], padding_mode: circular}",
    "local: {filters: 3, kernel: 2, stride: 2, padding: same, padding_mode: replicate}",
]


@pytest.mark.parametrize("layer", LOCAL_CASES)
def test_local_matches_a_naive_per_position_loop(layer):
    plan = plan_of(9, 7, 3, layer)
    local = build_layer(plan.layers[1]).double()
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    bias = None if local.bias is None else local.bias.detach().numpy()
    expected = naive_local(x.numpy(), local.weight.detach().numpy(), bias, local.stride,
                           plan.layers[1].detail["padding"], local.padding_mode, local.dilation)
    np.testing.assert_allclose(local(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", LOCAL_CASES)
def test_local_with_every_position_given_a_convs_weights_is_that_conv(layer):
    conv = layer_of(9, 7, 3, layer.replace("local", "conv"))
    local = layer_of(9, 7, 3, layer)
    with torch.no_grad():
        # local's filters are (kh, kw, C), a conv's (C, kh, kw)
        local.weight.copy_(conv.weight.permute(0, 2, 3, 1).expand_as(local.weight))
        if local.bias is not None:
            local.bias.copy_(conv.bias.view(-1, 1, 1).expand_as(local.bias))
    x = torch.randn(2, 3, 7, 9)
    torch.testing.assert_close(local(x), conv(x))


# the quick set keeps the cheapest case; finite differences cost seconds each
@pytest.mark.parametrize("layer", slow_cases(LOCAL_CASES, *LOCAL_CASES[:3], *LOCAL_CASES[4:]))
def test_local_gradients_match_finite_differences(layer):
    local = layer_of(9, 7, 3, layer).double()
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)

    def f(x, weight):
        return torch.func.functional_call(local, {"weight": weight}, (x,))

    weight = local.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, weight), eps=1e-6, atol=1e-6)


def test_local_summary_counts_its_params_and_the_flop_counters_mult_adds():
    plan = plan_of(11, 10, 3, "local: {filters: 4, kernel: 3, stride: 2, dilation: 2, "
                              "padding: same, padding_mode: reflect}",
                   "local: {filters: 6, kernel: 2, bias: false}")
    model = cnnzoo.build_model(plan)
    for layer, module in zip(plan.layers[1:], model.layers[1:], strict=True):
        assert layer.params == sum(p.numel() for p in module.parameters())
        out = layer.output
        # one weight per output value and input tap; a bias per output value
        fan_in = layer.input.depth * layer.spec.kernel[0] * layer.spec.kernel[1]
        bias = out.numel if layer.spec.bias else 0
        assert layer.params == out.numel * fan_in + bias
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 10, 11))
    assert plan.total_macs == counter.get_total_flops() // 2


def test_locally_connected_2d_from_python():
    layer = LocallyConnected2d(3, 8, input_size=(10, 12), kernel_size=3, padding="same")
    assert layer.weight.shape == (10, 12, 8, 3, 3, 3)
    assert layer.bias.shape == (8, 10, 12)
    x = torch.randn(4, 3, 10, 12, requires_grad=True)
    y = layer(x)
    assert y.shape == (4, 8, 10, 12)
    y.sum().backward()
    assert x.grad is not None and layer.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="made for inputs of 3x10x12"):
        layer(torch.randn(1, 3, 9, 12))


def _fft_and_direct(mode: str, kernel: int, stride, padding, dilation, groups):
    params = {"filters": 4, "kernel": [kernel, kernel + 1], "stride": list(stride),
              "padding": padding, "padding_mode": mode, "dilation": list(dilation),
              "groups": groups}
    convs = []
    for impl in ("direct", "fft"):
        # the parser and planner of the YAML path, without the YAML text
        spec = parse_layer({"conv": {**params, "impl": impl}}, 0, Where("layers", ()))
        plan = cnnzoo.plan_layers([InputSpec(width=10, height=9, depth=4), spec])
        convs.append(build_layer(plan.layers[1]).double())
    convs[1].load_state_dict(convs[0].state_dict())
    return convs


@pytest.mark.parametrize("mode", slow_cases(PADDING_MODES, *PADDING_MODES[1:]))
def test_fft_equals_direct_in_values_and_gradients(mode):
    checked = 0
    grid = itertools.product(
        [1, 2, 3, 5],  # kernel heights (widths one more)
        [(1, 1), (2, 2), (1, 3)],  # strides
        [0, [1, 2], "same", "valid"],  # paddings
        [(1, 1), (2, 1)],  # dilations
        [1, 2, 4],  # groups
    )
    for kernel, stride, padding, dilation, groups in grid:
        try:
            direct, fft = _fft_and_direct(mode, kernel, stride, padding, dilation, groups)
        except cnnzoo.ConfigError:
            continue  # a window that does not fit, or a mirror longer than the input
        x = torch.randn(2, 4, 9, 10, dtype=torch.float64)
        outputs, grads = [], []
        for conv in (direct, fft):
            xi = x.clone().requires_grad_(True)
            y = conv(xi)
            (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
            outputs.append(y)
            grads.append((xi.grad, conv.weight.grad, conv.bias.grad))
        case = f"{mode} k{kernel} s{stride} p{padding} d{dilation} g{groups}"
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-9, atol=1e-9, msg=case)
        for got, want in zip(grads[1], grads[0], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=case)
        checked += 1
    assert checked >= 150


def test_fft_in_float32_with_a_large_kernel_agrees_to_float_rounding():
    layer = "conv: {filters: 8, kernel: 31, padding: same, padding_mode: circular}"
    direct = layer_of(64, 64, 8, layer)
    fft = layer_of(64, 64, 8, layer.replace("}", ", impl: fft}"))
    fft.load_state_dict(direct.state_dict())
    x = torch.randn(2, 8, 64, 64)
    y, y_fft = direct(x), fft(x)
    scale = y.abs().max().item()
    torch.testing.assert_close(y_fft, y, rtol=0, atol=1e-5 * scale)


def test_state_dicts_are_interchangeable_between_impls():
    text = yaml_of(16, 16, 3, "conv: {filters: 6, kernel: 7, padding: same, impl: IMPL}",
                   "relu", "fc: 10")
    direct = cnnzoo.build_model(cnnzoo.parse_config(text.replace("IMPL", "direct"))).double()
    fft = cnnzoo.build_model(cnnzoo.parse_config(text.replace("IMPL", "fft"))).double()
    fft.load_state_dict(direct.state_dict())
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(fft(x), direct(x), rtol=1e-10, atol=1e-10)


def test_the_summary_counts_the_convolutions_mult_adds_whatever_the_impl():
    layer = "conv: {filters: 4, kernel: 9, padding: same, impl: IMPL}"
    direct = plan_of(20, 20, 2, layer.replace("IMPL", "direct")).layers[1]
    fft = plan_of(20, 20, 2, layer.replace("IMPL", "fft")).layers[1]
    assert fft.macs == direct.macs == 20 * 20 * 4 * 2 * 9 * 9
    assert fft.label.endswith(" fft")


def test_auto_takes_direct_for_small_kernels_and_fft_for_large_ones():
    def chosen(kernel: int) -> str:
        plan = plan_of(128, 128, 8, f"conv: {{filters: 8, kernel: {kernel}, padding: same, "
                                    "impl: auto}")
        return plan.layers[1].detail["impl"]

    assert chosen(3) == "direct"
    assert chosen(31) == "fft"
    assert plan_of(128, 128, 8, "conv: {filters: 8, kernel: 31, padding: same, impl: auto}"
                   ).layers[1].label.endswith("auto: fft")


def test_fft_that_would_not_fit_is_a_config_error_and_auto_avoids_it():
    layer = "conv: {filters: 512, kernel: 3, padding: same, impl: IMPL}"
    with pytest.raises(cnnzoo.ConfigError) as info:
        plan_of(256, 256, 512, layer.replace("IMPL", "fft"))
    message = str(info.value)
    assert "model.layers[1] (conv)" in message and "GiB" in message
    assert "impl: direct" in message and "impl: auto" in message
    assert plan_of(256, 256, 512, layer.replace("IMPL", "auto")).layers[1].detail["impl"] == (
        "direct")


A = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]).view(1, 1, 3, 3)

# Each kernel on A with 'valid' padding (one output): sum of weight * pixel, by hand.
VALID_BY_HAND = {
    "identity": 5.0,  # the centre
    "box_blur": 45 / 9,
    "gaussian_blur": (1 + 4 + 3 + 8 + 20 + 12 + 7 + 16 + 9) / 16,
    "sharpen": 5 * 5 - (2 + 4 + 6 + 8),
    "edge": 4 * 5 - (2 + 4 + 6 + 8),
    "sobel_x": (3 - 1) + 2 * (6 - 4) + (9 - 7),
    "sobel_y": (7 + 2 * 8 + 9) - (1 + 2 * 2 + 3),
    "emboss": -2 * 1 - 2 - 4 + 5 + 6 + 8 + 2 * 9,
}


@pytest.mark.parametrize("name", sorted(VALID_BY_HAND))
def test_fixed_kernels_by_hand_on_a_3x3_image(name):
    conv = layer_of(3, 3, 1, f"conv: {{filters: 1, weights: {name}}}")
    assert conv(A).item() == pytest.approx(VALID_BY_HAND[name])


def test_sobel_x_with_same_padding_by_hand():
    zeros = layer_of(3, 3, 1, "conv: {filters: 1, weights: sobel_x, padding: same}")
    expected = torch.tensor([[9.0, 6, -9], [20, 8, -20], [21, 6, -21]]).view(1, 1, 3, 3)
    torch.testing.assert_close(zeros(A), expected)
    # symmetric padding repeats the edge: the row above row 0 is row 0 itself, etc.
    symmetric = layer_of(3, 3, 1, "conv: {filters: 1, weights: sobel_x, padding: same, "
                                  "padding_mode: symmetric}")
    expected = torch.tensor([[4.0, 8, 4], [4, 8, 4], [4, 8, 4]]).view(1, 1, 3, 3)
    torch.testing.assert_close(symmetric(A), expected)


def test_blur_kernels_grow_with_kernel_and_identity_stays_identity():
    gauss = layer_of(5, 5, 1, "conv: {filters: 1, weights: gaussian_blur, kernel: 5}")
    row = torch.tensor([1.0, 4, 6, 4, 1])
    torch.testing.assert_close(gauss.weight[0, 0], torch.outer(row, row) / 256)
    box = layer_of(4, 2, 1, "conv: {filters: 1, weights: box_blur, kernel: [2, 4]}")
    x = torch.arange(8.0).view(1, 1, 2, 4)
    assert box(x).item() == pytest.approx(28 / 8)
    for kernel in (2, 4, 5):
        identity = layer_of(6, 5, 1, f"conv: {{filters: 1, weights: identity, kernel: {kernel}, "
                                     "padding: same}")
        x = torch.randn(1, 1, 5, 6)
        torch.testing.assert_close(identity(x), x)


def test_fixed_kernels_apply_to_each_channel_in_turn():
    rgb = torch.randn(1, 3, 6, 6)
    sobel = layer_of(6, 6, 3, "conv: {filters: 6, weights: sobel_x, padding: same}")
    one = layer_of(6, 6, 1, "conv: {filters: 1, weights: sobel_x, padding: same}")
    y = sobel(rgb)
    for c in range(3):
        expected = one(rgb[:, c:c + 1])[:, 0]
        torch.testing.assert_close(y[:, 2 * c], expected)
        torch.testing.assert_close(y[:, 2 * c + 1], expected)
    bank = layer_of(6, 6, 1, "conv: {filters: 2, weights: [identity, sobel_y], padding: same}")
    grey = rgb[:, :1]
    sobel_y = layer_of(6, 6, 1, "conv: {filters: 1, weights: sobel_y, padding: same}")
    torch.testing.assert_close(bank(grey), torch.cat([grey, sobel_y(grey)], dim=1))


def test_fixed_kernels_are_frozen_unless_trainable():
    from cnnzoo.training.optim import create_optimizer

    text = yaml_of(8, 8, 1, "conv: {filters: 2, weights: [sobel_x, sobel_y], padding: same}",
                   "conv: {filters: 4, kernel: 3, trainable: TRAIN}", "fc: 3")
    text += "train: {optimizer: {name: sgd, lr: 0.5}}\n"
    frozen = cnnzoo.parse_config(text.replace(", trainable: TRAIN", ""))
    model = cnnzoo.build_model(frozen)
    fixed = model.layers[1]
    assert not fixed.weight.requires_grad and not fixed.bias.requires_grad
    optimizer = create_optimizer(model, frozen.train)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(fixed.weight) not in in_optimizer and id(model.layers[2].weight) in in_optimizer
    before = fixed.weight.detach().clone()
    model(torch.randn(4, 1, 8, 8)).square().sum().backward()
    optimizer.step()
    torch.testing.assert_close(fixed.weight, before)
    plan = cnnzoo.plan_experiment(frozen)
    totals = summary_totals(plan)
    assert totals["total_params"] - totals["trainable_params"] == 2 * 9 + 2
    assert " frozen" in plan.layers[1].label

    learned = cnnzoo.parse_config(text.replace("padding: same}", "padding: same, trainable: true}")
                                 .replace(", trainable: TRAIN", ""))
    model = cnnzoo.build_model(learned)
    assert model.layers[1].weight.requires_grad
    optimizer = create_optimizer(model, learned.train)
    assert id(model.layers[1].weight) in {id(p) for g in optimizer.param_groups
                                           for p in g["params"]}
    # a learned conv frozen on purpose (random features)
    random = cnnzoo.build_model(cnnzoo.parse_config(text.replace("TRAIN", "false")))
    assert not random.layers[2].weight.requires_grad


def test_weights_round_trip_through_yaml():
    config = cnnzoo.parse_config(yaml_of(8, 8, 1, "conv: {filters: 2, weights: [sobel_x, "
                                                 "sobel_y], trainable: true}",
                                        "conv: {filters: 1, weights: edge}"))
    assert cnnzoo.parse_config(config.to_yaml()) == config
    assert config.model.layers[2].weights == ("edge",)


@pytest.mark.parametrize(
    ("layer", "fragments"),
    [
        ("conv: {filters: 4, weights: sobel_x}",
         ("model.layers[1] (conv)", "multiple of 3", "Received: filters=4", "filters: 3")),
        ("conv: {filters: 3, weights: [sobel_x, sobel_y]}",
         ("multiple of 6", "Received: filters=3")),
        ("conv: {filters: 3, weights: sobel_x, kernel: 5}",
         ("sobel_x is a 3x3 kernel", "kernel: 3")),
        ("conv: {filters: 3, weights: sobelx}", ("did you mean 'sobel_x'",)),
        ("conv: {filters: 3, weights: [edge, edge]}", ("lists a kernel twice",)),
        ("conv: {filters: 6, weights: edge, groups: 2}", ("groups", "remove groups")),
        ("conv: {filters: 6, impl: fast}", ("impl must be one of direct, fft, auto",)),
    ],
)
def test_fixed_kernel_and_impl_config_errors(layer, fragments):
    with pytest.raises(cnnzoo.ConfigError) as info:
        plan_of(8, 8, 3, layer)
    for fragment in fragments:
        assert fragment in str(info.value)
