"""Weight initialisation schemes (`init:`): the variance of He et al. and Glorot and
Bengio written out, PyTorch's default, why the option exists, and conv's dirac (the
identity map)."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from tests.helpers.common import assert_summary_refuses
from tests.helpers.layers import (
    layer_of,
    one_thread,  # noqa: F401 (an autouse fixture)
    plan_of,
    yaml_of,
)


@pytest.mark.parametrize("init", ["he_normal", "he_uniform", "xavier_normal", "xavier_uniform"])
@pytest.mark.parametrize(("size", "depth", "layer", "fans"), [
    (16, 64, "conv: {filters: 128, kernel: 3, padding: same, init: INIT}", (576, 1152)),
    (16, 64, "conv: {filters: 128, kernel: 3, groups: 4, init: INIT}", (144, 288)),
    (8, 32, "local: {filters: 16, kernel: 3, init: INIT}", (288, 144)),
    (8, 16, "fc: {units: 256, init: INIT}", (1024, 256)),
])
def test_init_draws_weights_with_the_schemes_variance(init, size, depth, layer, fans):
    torch.manual_seed(0)
    module = layer_of(size, size, depth, layer.replace("INIT", init))
    weight, bias = module.weight.detach(), module.bias.detach()
    fan_in, fan_out = fans
    # The formulas of He et al. (2015) and Glorot and Bengio (2010), written out.
    std = {"he_normal": (2 / fan_in) ** 0.5, "he_uniform": (2 / fan_in) ** 0.5,
           "xavier_normal": (2 / (fan_in + fan_out)) ** 0.5,
           "xavier_uniform": (2 / (fan_in + fan_out)) ** 0.5}[init]
    assert weight.numel() > 15_000  # enough draws for the std to within 2%
    assert abs(weight.std().item() / std - 1) < 0.02
    if init.endswith("uniform"):
        assert weight.abs().max().item() <= std * 3**0.5 * (1 + 1e-6)
    assert torch.count_nonzero(bias) == 0


def test_default_init_is_pytorchs():
    torch.manual_seed(0)
    conv = layer_of(16, 16, 64, "conv: {filters: 128, kernel: 3}")
    # nn.Conv2d's kaiming_uniform_(a=sqrt(5)): uniform in +-1/sqrt(fan_in).
    bound = 1 / 576**0.5
    assert conv.weight.abs().max().item() <= bound
    assert abs(conv.weight.std().item() / (bound / 3**0.5) - 1) < 0.02
    assert torch.count_nonzero(conv.bias) > 0


def test_he_init_keeps_the_signal_of_a_deep_relu_stack():
    """Why the option exists: through ten plain conv+ReLU layers PyTorch's default
    shrinks the signal some forty-fold; he_normal keeps it near its size."""
    layers = ["conv: {filters: 32, kernel: 3, padding: same, activation: relu, init: INIT}"] * 10
    stds = {}
    for init in ("default", "he_normal"):
        torch.manual_seed(0)
        text = yaml_of(16, 16, 32, *(layer.replace("INIT", init) for layer in layers))
        model = cnnzoo.build_model(cnnzoo.parse_config(text))
        with torch.no_grad():
            stds[init] = model(torch.randn(8, 32, 16, 16)).std().item()
    assert stds["default"] < 0.05 < 0.3 < stds["he_normal"] < 3, stds


def test_init_and_a_fixed_kernel_cannot_both_set_the_weights():
    with pytest.raises(cnnzoo.ConfigError) as error:
        plan_of(8, 8, 1, "conv: {filters: 1, weights: sobel_x, init: he_normal}")
    message = str(error.value)
    assert "init: he_normal and weights: sobel_x both set the weights" in message
    assert "line 4" in message


@pytest.mark.parametrize("layer", [
    "conv: {filters: 6, kernel: 3, padding: 1, init: dirac}",
    "conv: {filters: 6, kernel: [5, 3], padding: same, init: dirac}",
    "conv: {filters: 6, kernel: 3, dilation: 2, padding: 2, init: dirac}",
    "conv: {filters: 6, kernel: 3, padding: 1, groups: 3, init: dirac}",
    "conv: {filters: 6, kernel: 3, padding: 1, padding_mode: reflect, impl: fft, init: dirac}",
])
def test_dirac_with_matching_depth_is_the_identity_map(layer):
    torch.manual_seed(0)
    conv = layer_of(10, 9, 6, layer)
    x = torch.randn(4, 6, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), x, rtol=0, atol=1e-5)


def test_dirac_with_more_filters_passes_the_input_through_the_first_and_keeps_the_rest():
    torch.manual_seed(0)
    default = layer_of(8, 8, 3, "conv: {filters: 5, kernel: 3, padding: 1}")
    torch.manual_seed(0)
    conv = layer_of(8, 8, 3, "conv: {filters: 5, kernel: 3, padding: 1, init: dirac}")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :3], x, rtol=0, atol=1e-5)
    # as airbench leaves them: the filters beyond the input depth keep the default draw
    assert torch.equal(conv.weight[3:], default.weight[3:])
    assert torch.count_nonzero(conv.bias) == 0


def test_dirac_in_groups_passes_each_groups_channels_through_its_first_filters():
    conv = layer_of(6, 6, 4, "conv: {filters: 8, kernel: 1, groups: 2, init: dirac}")
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        out = conv(x)
    # group 0: filters 0-3 see channels 0-1; group 1: filters 4-7 see channels 2-3
    torch.testing.assert_close(out[:, [0, 1, 4, 5]], x, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("depth", "layers", "message", "fix"), [
    (4, "- conv: {filters: 3, kernel: 3, init: dirac}",
     "init: dirac passes each of the 4 input channels (after layers[0] input) through a "
     "filter of its own, so filters must be at least 4. Received: filters=3",
     "set filters: 4 or more, or use another init"),
    (2, "- conv: {filters: 2, kernel: 2, init: dirac}",
     "a kernel of 2x2 does not have", "use an odd kernel (1, 3, 5) or another init"),
])
def test_dirac_where_the_depth_or_kernel_does_not_allow_it_is_refused(cli, tmp_path, depth,
                                                                     layers, message, fix):
    assert_summary_refuses(cli, tmp_path, depth, layers, message, fix)
