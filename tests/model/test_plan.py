"""The planner (cnnzoo.model.plan): shapes passed from layer to layer, shorthand
desugared into rows of their own, nested stacks, the input implied by the dataset,
the totals against counts by hand, and the errors it gives (the corpus rows about
shapes and nested stacks, each with its one-line message)."""

from __future__ import annotations

import pytest
from torch import nn

import cnnzoo
from cnnzoo.model.plan import last_weighted_layer
from tests.helpers.common import run_process
from tests.helpers.config_cases import IN8, Case, H, check_message, write_case
from tests.model.test_language import plan_of


def test_pairs_are_height_width():
    plan = plan_of("conv: {filters: 4, kernel: [3, 5], stride: [1, 2]}")
    assert plan.layers[1].output.as_list() == [4, 8, 4]  # W = (12-5)/2+1, H = 10-3+1


def test_activation_shorthand_becomes_its_own_row():
    plan = plan_of("conv: {filters: 4, activation: relu}", "fc: {units: 5, activation: tanh}")
    assert [p.type_name for p in plan.layers] == ["input", "conv", "relu", "fc", "tanh"]
    model = cnnzoo.build_model(plan)
    assert isinstance(model.layers[2], nn.ReLU) and isinstance(model.layers[4], nn.Tanh)


def test_repeat_applies_the_stack_times_over():
    plan = plan_of("repeat: {times: 3, layers: [{conv: {filters: 3, padding: 1}}, relu]}")
    assert [c.index for c in plan.layers[1].children] == [f"1.{i}" for i in range(6)]
    assert plan.layers[1].params == 3 * (3 * 27 + 3)
    assert plan.layers[1].receptive_field == (7, 7)


def test_input_layer_is_implied_by_the_dataset():
    config = cnnzoo.parse_config("model:\n  layers: [conv: 4, pool: 2, fc: 10]\n"
                                "data: {dataset: fashion_mnist}\n")
    plan = cnnzoo.plan_experiment(config)
    assert plan.layers[0].type_name == "input"
    assert plan.layers[0].output.as_list() == [28, 28, 1]
    assert plan.layers[1].output.as_list() == [26, 26, 4]


def test_resize_pad_and_channels_shape_the_input():
    config = cnnzoo.parse_config(
        "model:\n  layers: [input: {width: 32, height: 32, depth: 3}, fc: 10]\n"
        "data: {dataset: fashion_mnist, pad: 2, channels: 3}\n"
    )
    assert cnnzoo.plan_experiment(config).input.as_list() == [32, 32, 3]


def test_activation_values_count_every_layers_output():
    plan = plan_of("conv: {filters: 4, padding: same}", "relu", "pool: 2", "fc: 10")
    # input 12x10x3, conv and relu 12x10x4 each, pool 6x5x4, fc 10
    assert plan.activation_values == 360 + 480 + 480 + 120 + 10


def test_walk_goes_depth_first_and_the_last_weighted_layer_skips_what_has_no_weights():
    plan = plan_of("conv: 3", "residual: [{conv: {filters: 3, padding: same}}, relu]",
                   "fc: 10", "relu", "dropout: 0.5")
    assert [p.index for p in plan.walk()] == ["0", "1", "2", "2.0", "2.1", "3", "4", "5"]
    assert [p.type_name for p in plan.walk()][3:5] == ["conv", "relu"]
    assert last_weighted_layer(plan).index == "3"  # the fc, not the relu or dropout after it
    weightless = plan_of("relu", "flatten")
    assert last_weighted_layer(weightless) is weightless.layers[-1]
    assert plan.total_params == sum(p.numel() for p in cnnzoo.build_model(plan).parameters())


PLAN_CASES = [
    # Shapes: found by the planner, with the layer, the volumes and where they came from.
    Case(
        "kernel_larger_than_input",
        H + "    - input: {width: 8, height: 8, depth: 1}\n    - conv: {filters: 16, kernel: 3}\n"
        "    - relu\n    - pool: 2\n    - conv: {filters: 8, kernel: 5}\n",
        ("model.layers[4] (conv)", "kernel 5x5", "3x3x16", "(after layers[3] pool)",
         "use padding or a smaller kernel"), 7,
    ),
    Case(
        "kernel_larger_than_input_block",
        H + IN8 + "    - conv:\n        filters: 4\n        kernel: 11\n",
        ("model.layers[1] (conv)", "kernel 11x11", "8x8x4", "(after layers[0] input)"), 6,
    ),
    Case(
        "dilated_kernel_larger_than_input",
        H + IN8 + "    - conv: {filters: 4, kernel: 3, dilation: 4}\n",
        ("model.layers[1] (conv)", "dilated to 9x9", "8x8x4"), 4,
    ),
    Case(
        "pooled_to_nothing", H + IN8 + "    - pool: 2\n" * 4,
        ("model.layers[4] (pool)", "1x1x4", "(after layers[3] pool)"), 7,
    ),
    Case(
        "strided_to_nothing",
        H + IN8 + "    - conv: {filters: 4, kernel: 3, stride: 4}\n    - conv: {filters: 4}\n",
        ("model.layers[2] (conv)", "2x2x4", "(after layers[1] conv)"), 5,
    ),
    Case(
        "conv_after_fc", H + IN8 + "    - fc: 10\n    - conv: 4\n",
        ("model.layers[2] (conv)", "flat vector of 10 values", "(after layers[1] fc)"), 5,
    ),
    Case(
        "pool_after_flatten", H + IN8 + "    - flatten\n    - pool: 2\n",
        ("model.layers[2] (pool)", "flat vector of 256 values", "(after layers[1] flatten)"), 5,
    ),
    Case(
        "global_pool_after_fc", H + IN8 + "    - fc: 3\n    - global_pool\n",
        ("model.layers[2] (global_pool)", "flat vector", "(after layers[1] fc)"), 5,
    ),
    Case(
        "fc_width_not_classes",
        H + "    - conv: {filters: 4, kernel: 3}\n    - relu\n    - fc: 7\n"
        "data:\n  dataset: mnist\n",
        ("model.layers[2] (fc)", "7 outputs", "mnist has 10 classes", "fc: 10"), 5,
    ),
    Case(
        "fc_width_not_classes_cifar100", H + "    - fc: 10\ndata: {dataset: cifar100}\n",
        ("model.layers[0] (fc)", "10 outputs", "cifar100 has 100 classes"), 3,
    ),
    Case(
        "classifier_ends_in_volume", H + IN8 + "    - conv: 10\ndata: {dataset: fake}\n",
        ("model.layers[1] (conv)", "ends in a volume 6x6x10", "global_pool"), 4,
    ),
    Case(
        "input_size_not_dataset",
        H + "    - input: {width: 32, height: 32, depth: 1}\n    - fc: 10\n"
        "data: {dataset: mnist}\n",
        ("model.layers[0] (input)", "32x32x1", "28x28x1", "data.resize: [32, 32]",
         "data.pad: 2"), 3,
    ),
    Case(
        "input_depth_not_dataset",
        H + "    - input: {width: 32, height: 32, depth: 1}\n    - fc: 10\n"
        "data: {dataset: cifar10}\n",
        ("model.layers[0] (input)", "32x32x1", "32x32x3", "data.channels"), 3,
    ),
    Case(
        "reflect_padding_over_input",
        H + "    - input: {width: 4, height: 4, depth: 1}\n"
        "    - conv: {filters: 4, kernel: 9, padding: 4, padding_mode: reflect}\n",
        ("model.layers[1] (conv)", "reflect padding of 4", "at least 5 pixels", "4x4x1"), 4,
    ),
    Case(
        "circular_padding_over_input",
        H + IN8 + "    - conv: {filters: 4, kernel: 3, padding: 9, padding_mode: circular}\n",
        ("model.layers[1] (conv)", "circular padding of 9", "8x8x4"), 4,
    ),
    Case(
        "groups_not_dividing_filters", H + IN8 + "    - conv: {filters: 6, groups: 4}\n",
        ("model.layers[1] (conv)", "filters (6)", "groups (4)"), 4,
    ),
    Case(
        "groups_not_dividing_depth", H + IN8 + "    - conv: {filters: 6, groups: 3}\n",
        ("model.layers[1] (conv)", "input depth 4", "groups=3", "(after layers[0] input)"), 4,
    ),
    Case(
        "residual_no_1x1_shortcut",
        H + "    - input: {width: 9, height: 9, depth: 4}\n"
        "    - residual:\n        - conv: {filters: 4, kernel: 3}\n",
        ("model.layers[1] (residual)", "no 1x1 convolution", "9x9x4", "7x7x4"), 4,
    ),
    Case(
        "residual_identity_changes_shape",
        H + IN8 + "    - residual:\n        layers:\n"
        "          - conv: {filters: 8, kernel: 3, padding: same}\n        shortcut: identity\n",
        ("model.layers[1] (residual)", "identity shortcut", "8x8x4 to 8x8x8"), 7,
    ),
    Case(
        "residual_branch_to_vector", H + IN8 + "    - residual:\n        - fc: 4\n",
        ("model.layers[1] (residual)", "shortcut needs volumes"), 4,
    ),
    # Nested stacks: the index path down to the layer, and that layer's own line.
    Case(
        "nested_repeat_kernel",
        H + "    - input: {width: 8, height: 8, depth: 3}\n    - repeat:\n        times: 2\n"
        "        layers:\n          - conv: {filters: 4, kernel: 9}\n",
        ("model.layers[1] (repeat).layers[0] (conv)", "kernel 9x9", "8x8x3"), 7,
    ),
    Case(
        "nested_residual_repeat_pool",
        H + IN8 + "    - residual:\n        - conv: 4\n        - repeat:\n            times: 2\n"
        "            layers:\n              - pool: 4\n",
        ("model.layers[1] (residual).layers[1] (repeat).layers[0] (pool)", "1x1x4"), 9,
    ),
    Case(
        "nested_repeat_misspelt_param",
        H + IN8 + "    - repeat:\n        times: 2\n        layers:\n"
        "          - conv: {filtres: 4}\n",
        ("model.layers[1] (repeat).layers[0] (conv)", "did you mean 'filters'?"), 7,
    ),
    Case(
        "nested_residual_unknown_type",
        H + IN8 + "    - residual:\n        - conv: {filters: 4, padding: same}\n"
        "        - cnov: 4\n",
        ("model.layers[1] (residual).layers[1]", "unknown layer type 'cnov'",
         "did you mean 'conv'?"), 6,
    ),
]


def test_plan_corpus_ids_are_unique() -> None:
    ids = [case.id for case in PLAN_CASES]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", PLAN_CASES, ids=lambda case: case.id)
def test_broken_config_gives_one_line_error(case: Case, cli, tmp_path) -> None:
    path = write_case(case, tmp_path)
    result = cli("summary", "--config", path, *case.args)
    check_message(case, path, result.code, result.out, result.err)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", ["kernel_larger_than_input"])
def test_broken_config_in_a_real_process(case_id: str, tmp_path) -> None:
    case = next(c for c in PLAN_CASES if c.id == case_id)
    path = write_case(case, tmp_path)
    result = run_process("summary", "--config", path, *case.args, timeout=120)
    check_message(case, path, result.code, result.out, result.err)
