"""cnnzoo.model.inspect: every layer paired with its module, and the first layer's
filters read out of conv, fc and local layers."""

from __future__ import annotations

import numpy as np

import cnnzoo
from cnnzoo.model.inspect import first_layer_filters, layer_modules
from tests.helpers.runs import DENSE, SMALL


def test_layer_modules_pair_every_layer_with_its_module():
    model = cnnzoo.build_model("resnet-small")
    pairs = layer_modules(model)
    assert [p.index for p, _ in pairs] == [p.index for p in model.plan.walk()]
    for plan, module in pairs:
        assert sum(p.numel() for p in module.parameters()) == plan.params, plan.label


def test_first_layer_filters():
    conv_net = cnnzoo.build_model(cnnzoo.parse_config(SMALL))
    plan, weights = first_layer_filters(conv_net)
    assert plan.index == "1"
    np.testing.assert_array_equal(weights, conv_net.layers[1].weight.detach().numpy())
    dense = cnnzoo.build_model(cnnzoo.parse_config(DENSE))
    plan, weights = first_layer_filters(dense)
    assert weights.shape == (16, 1, 28, 28)
    np.testing.assert_array_equal(weights[5, 0], dense.layers[1].weight[5].view(28, 28).detach())
    local = cnnzoo.build_model("cnn-small-local")
    plan, weights = first_layer_filters(local)
    assert weights.shape == (16, 1, 5, 5)
    # local weights are (out_h, out_w, F, kh, kw, C): the centre bank, channels first
    centre = local.layers[1].weight[14, 14].permute(0, 3, 1, 2)
    np.testing.assert_array_equal(weights, centre.detach().numpy())
    flat = "model: {layers: [input: {width: 28, height: 28, depth: 1}, flatten, fc: 10]}"
    assert first_layer_filters(cnnzoo.build_model(cnnzoo.parse_config(flat))) is None
