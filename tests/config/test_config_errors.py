"""A corpus of broken experiment files, each run through `cnnzoo summary`.

Every row is a file a user could plausibly write, with what the one-line error
must say about it: the fragments a reader needs (the layer's place, the value
received, the fix) and the line it points at. The expectations are written by
hand from the model language contract, not copied from the current messages. The
rows the planner refuses (shapes, nested stacks) are in tests/model/test_plan.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.common import run_process
from tests.helpers.config_cases import (
    FAST_S,
    IN8,
    USER_ERROR,
    Case,
    H,
    check_message,
    write_case,
)


def _billion_laughs() -> str:
    """Nine levels of nine aliases each: 9**9 values once expanded, from 72 aliases."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\nmodel: {layers: [relu]}\n"


def _many_aliases(count: int) -> str:
    """`count` aliases of one small anchor, the last on line 4 + count: harmless, but over
    the alias limit."""
    head = "x: &x 0.5\nmodel:\n  layers:\n    - input: {width: 8, height: 8, depth: 1}\n"
    return head + "".join("    - dropout: *x\n" for _ in range(count))


def _deep_block(levels: int) -> str:
    """A block mapping nested `levels` deep, one level per line."""
    return "".join(" " * i + f"k{i}:\n" for i in range(levels)) + " " * levels + "v: 1\n"


CASES = [
    # The file as a whole: YAML that must never reach the config layer.
    Case("empty_file", "", ("the file is empty", "model:"), None),
    Case("only_comments", "# nothing here\n", ("the file is empty",), None),
    Case(
        "top_level_list", "- input: {width: 8, height: 8, depth: 1}\n- relu\n",
        ("must be a mapping", "got list"), 1,
    ),
    Case("top_level_scalar", "42\n", ("must be a mapping", "got int"), 1),
    Case(
        "tab_indent", H + IN8 + "\t- relu\n",
        ("invalid YAML", "indent with spaces, not tabs"), 4,
    ),
    Case(
        "unclosed_flow_list", H + IN8 + "    - conv: {filters: 4, kernel: [3, 3}\n",
        ("invalid YAML",), 4,
    ),
    Case(
        "colon_in_plain_value", H + IN8 + "    - conv: filters: 4\n",
        ("invalid YAML", "mapping values are not allowed"), 4,
    ),
    Case(
        "control_character", H + IN8 + "    - relu\x07\n",
        ("invalid YAML", "#x0007"), 4,
    ),
    Case("not_utf8", b"model:\n  layers: [relu]\n# \xff\xfe\n", ("not a UTF-8 text file",), None),
    Case(
        "python_tag_apply", H + "    - !!python/object/apply:os.system ['echo pwned']\n",
        ("!!python/object/apply:os.system", "not allowed", "plain values only"), 3,
    ),
    Case(
        "python_tag_name", H + "    - relu\nname: !!python/name:os.system\n",
        ("!!python/name:os.system", "not allowed"), 4,
    ),
    Case("binary_tag", "model:\n  layers: !!binary aGVsbG8=\n", ("!!binary", "not allowed"), 2),
    Case(
        "duplicate_top_key", H + "    - relu\nmodel:\n  layers: [relu]\n",
        ("duplicate key 'model'", "keep only one"), 4,
    ),
    Case(
        "duplicate_param_key", H + IN8 + "    - conv: {filters: 4, filters: 8}\n",
        ("duplicate key 'filters'",), 4,
    ),
    Case(
        "integer_key", H + IN8 + "    - conv: {1: 2, filters: 3}\n",
        ("mapping keys must be names", "quote the key"), 4,
    ),
    Case("alias_bomb", _billion_laughs(), ("alias bomb",), None, fast=True),
    Case("too_many_aliases", _many_aliases(101), ("more than 100 aliases",), 4 + 101, fast=True),
    Case(
        "deep_flow_nesting", "model: " + "[" * 60 + "]" * 60 + "\n",
        ("nesting deeper than 50",), 1, fast=True,
    ),
    Case("deep_block_nesting", _deep_block(60), ("nesting deeper than 50",), 51, fast=True),
    Case(
        "huge_file", "# " + "x" * (1 << 20) + "\nmodel: {layers: [relu]}\n",
        ("1,048,576-byte limit",), None, fast=True,
    ),
    # Sections: unknown keys are errors with a hint, at the line of the key.
    Case(
        "misspelt_model_key", "modle:\n  layers:\n    - relu\n",
        ("'modle' is not a parameter", "did you mean 'model'?"), 1,
    ),
    Case(
        "misspelt_name_key", H + IN8 + "nmae: small\n",
        ("'nmae' is not a parameter", "did you mean 'name'?"), 4,
    ),
    Case(
        "misspelt_train_key", H + IN8 + "train:\n  epochs: 3\n  bach_size: 64\n",
        ("train", "'bach_size' is not a parameter", "did you mean 'batch_size'?"), 6,
    ),
    Case(
        "misspelt_data_key", H + IN8 + "data:\n  datset: mnist\n",
        ("data", "'datset' is not a parameter", "did you mean 'dataset'?"), 5,
    ),
    Case(
        "misspelt_data_section", H + IN8 + "data:\n  augmnt:\n    flip: true\n",
        ("'augmnt' is not a parameter of data", "did you mean 'augment'?"), 5,
    ),
    Case(
        "misspelt_optimizer_key",
        H + IN8 + "train:\n  optimizer:\n    name: sgd\n    momentun: 0.9\n",
        ("train.optimizer", "'momentun' is not a parameter", "did you mean 'momentum'?"), 7,
    ),
    Case(
        "misspelt_optimizer_name", H + IN8 + "train:\n  optimizer: adm\n",
        ("train.optimizer", "Received: name='adm'", "did you mean 'adam'?"), 5,
    ),
    Case(
        "unknown_dataset", H + IN8 + "data: {dataset: cifar11}\n",
        ("Received: dataset='cifar11'", "did you mean 'cifar10'?"), 4,
    ),
    Case("missing_model", "data: {dataset: mnist}\n", ("'model' is required",), None),
    Case("missing_layers", "model: {}\n", ("'layers' is required",), 1),
    Case(
        "layers_not_a_list", "model:\n  layers: relu\n",
        ("model.layers", "must be a list", "got str"), 2,
    ),
    Case("layers_empty", "model:\n  layers: []\n", ("model.layers", "layers is empty"), 2),
    # How a layer is written.
    Case(
        "unknown_layer_type", H + IN8 + "    - cnov: {filters: 4}\n",
        ("model.layers[1]", "unknown layer type 'cnov'", "did you mean 'conv'?"), 4,
    ),
    Case(
        "unknown_bare_layer", H + IN8 + "    - rleu\n",
        ("model.layers[1]", "unknown layer type 'rleu'", "did you mean 'relu'?"), 4,
    ),
    Case(
        "misspelt_param", H + IN8 + "    - conv: {filter: 4}\n",
        ("model.layers[1] (conv)", "'filter' is not a parameter of conv",
         "did you mean 'filters'?"), 4,
    ),
    Case(
        "misspelt_param_block", H + IN8 + "    - conv:\n        filters: 4\n        kernal: 3\n",
        ("model.layers[1] (conv)", "'kernal' is not a parameter of conv",
         "did you mean 'kernel'?"), 6,
    ),
    Case(
        "params_not_indented", H + IN8 + "    - conv:\n      filters: 4\n",
        ("model.layers[1]", "'filters' is written as a second key", "indent"), 4,
    ),
    Case(
        "mapping_with_two_types", H + IN8 + "    - {conv: 4, relu: null}\n",
        ("model.layers[1]", "one key", "got 2 keys"), 4,
    ),
    Case(
        "number_as_layer", H + IN8 + "    - 3\n",
        ("model.layers[1]", "a name or a one-key mapping", "got int 3"), 4,
    ),
    Case(
        "shorthand_on_paramless_layer", H + IN8 + "    - relu: 3\n",
        ("model.layers[1] (relu)", "no shorthand value", "Received: 3"), 4,
    ),
    Case(
        "missing_required_param", H + IN8 + "    - conv: {kernel: 3}\n",
        ("model.layers[1] (conv)", "'filters' is required", "add filters"), 4,
    ),
    Case(
        "input_not_first", H + "    - relu\n    - input: {width: 8, height: 8, depth: 1}\n",
        ("model.layers[1] (input)", "input must be the first layer"), 4,
    ),
    # Values of the wrong type or out of range, with what was received.
    Case(
        "string_for_int", H + IN8 + "    - conv: {filters: twelve}\n",
        ("model.layers[1] (conv)", "filters must be an integer", "Received: filters='twelve'"),
        4,
    ),
    Case(
        "float_kernel", H + IN8 + "    - conv: {filters: 4, kernel: 2.5}\n",
        ("model.layers[1] (conv)", "kernel must be an integer", "Received: kernel=2.5"), 4,
    ),
    Case(
        "bool_for_int", H + IN8 + "    - conv: {filters: true}\n",
        ("model.layers[1] (conv)", "filters must be an integer", "Received: filters=True"), 4,
    ),
    Case(
        "kernel_of_three", H + IN8 + "    - conv: {filters: 4, kernel: [3, 3, 3]}\n",
        ("model.layers[1] (conv)", "[height, width] pair", "Received: kernel=[3, 3, 3]"), 4,
    ),
    Case(
        "negative_stride", H + IN8 + "    - conv: {filters: 4, stride: -1}\n",
        ("model.layers[1] (conv)", "stride must be positive", "Received: stride=-1"), 4,
    ),
    Case(
        "zero_in_kernel_pair", H + IN8 + "    - conv: {filters: 4, kernel: [3, 0]}\n",
        ("model.layers[1] (conv)", "kernel must be positive", "Received: kernel=[3, 0]"), 4,
    ),
    Case(
        "zero_units", H + IN8 + "    - fc: 0\n",
        ("model.layers[1] (fc)", "units must be positive", "Received: units=0"), 4,
    ),
    Case(
        "zero_width_input", H + "    - input: {width: 0, height: 8, depth: 1}\n",
        ("model.layers[0] (input)", "width must be positive", "Received: width=0"), 3,
    ),
    Case(
        "repeat_zero_times", H + IN8 + "    - repeat: {times: 0, layers: [relu]}\n",
        ("model.layers[1] (repeat)", "times must be positive", "Received: times=0"), 4,
    ),
    Case(
        "dropout_p_over_one", H + IN8 + "    - dropout: 1.5\n",
        ("model.layers[1] (dropout)", "p must be below 1", "Received: p=1.5"), 4,
    ),
    Case(
        "bad_padding", H + IN8 + "    - conv: {filters: 4, padding: sme}\n",
        ("model.layers[1] (conv)", "Received: padding='sme'", "did you mean 'same'?"), 4,
    ),
    Case(
        "bad_padding_mode",
        H + IN8 + "    - conv: {filters: 4, padding: 1, padding_mode: mirror}\n",
        ("model.layers[1] (conv)", "padding_mode must be one of", "reflect",
         "Received: padding_mode='mirror'"), 4,
    ),
    Case(
        "bad_activation", H + IN8 + "    - conv: {filters: 4, activation: rleu}\n",
        ("model.layers[1] (conv)", "Received: activation='rleu'", "did you mean 'relu'?"), 4,
    ),
    Case(
        "pool_padding_over_half", H + IN8 + "    - pool: {size: 2, padding: 2}\n",
        ("model.layers[1] (pool)", "more than half the window"), 4,
    ),
    # --set: checked exactly like the file, and named in the message.
    Case(
        "set_unknown_key", H + IN8, ("--set train.epoch=3", "did you mean 'epochs'?"), None,
        args=("--set", "train.epoch=3"), names_set=True,
    ),
    Case(
        "set_wrong_type", H + IN8,
        ("--set train.epochs=many", "epochs must be an integer", "Received: epochs='many'"),
        None, args=("--set", "train.epochs=many"), names_set=True,
    ),
    Case(
        "set_without_equals", H + IN8, ("--set takes key=value", "train.epochs"), None,
        args=("--set", "train.epochs"), names_set=True,
    ),
    Case(
        "set_empty_key", H + IN8, ("bad key", "--set"), None,
        args=("--set", "=3"), names_set=True,
    ),
    Case(
        "set_invalid_yaml_value", H + IN8, ("--set train.epochs=[1", "invalid YAML"), None,
        args=("--set", "train.epochs=[1"), names_set=True,
    ),
    Case(
        "set_missing_layer", H + IN8, ("--set model.layers[9].conv.filters=3", "does not exist"),
        None, args=("--set", "model.layers[9].conv.filters=3"), names_set=True,
    ),
    Case(
        "set_misspelt_layer_param", H + IN8 + "    - conv: {filters: 4}\n",
        ("--set model.layers[1].conv.kernal=3", "model.layers[1] (conv)",
         "did you mean 'kernel'?"), None,
        args=("--set", "model.layers[1].conv.kernal=3"), names_set=True,
    ),
    Case(
        "set_kernel_larger_than_input", H + IN8 + "    - conv: {filters: 4}\n",
        ("--set model.layers[1].conv.kernel=11", "model.layers[1] (conv)", "kernel 11x11"), None,
        args=("--set", "model.layers[1].conv.kernel=11"), names_set=True,
    ),
]


def test_corpus_is_large_and_ids_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_broken_config_gives_one_line_error(case: Case, cli, tmp_path: Path) -> None:
    path = write_case(case, tmp_path)
    start = time.perf_counter()
    result = cli("summary", "--config", path, *case.args)
    elapsed = time.perf_counter() - start
    check_message(case, path, result.code, result.out, result.err)
    if case.fast:
        assert elapsed < FAST_S


SUBPROCESS_CASES = [
    "python_tag_apply",
    "alias_bomb",
    "control_character",
    "set_unknown_key",
]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_broken_config_in_a_real_process(case_id: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    path = write_case(case, tmp_path)
    result = run_process("summary", "--config", path, *case.args, timeout=120)
    check_message(case, path, result.code, result.out, result.err)


def test_python_tag_is_never_executed(cli, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(
        f"model:\n  layers:\n    - !!python/object/apply:os.system ['touch {marker}']\n"
    )
    result = cli("summary", "--config", path)
    assert result.code == USER_ERROR
    assert not marker.exists()


def test_shared_header_is_valid(cli, tmp_path: Path) -> None:
    """The header most rows share is itself valid, so each row fails for its own reason."""
    path = tmp_path / "ok.yaml"
    path.write_text(H + IN8 + "    - conv: {filters: 4, padding: same}\n    - fc: 3\n")
    result = cli("summary", "--config", path)
    assert result.code == 0, result.err
    assert "8x8x4" in result.out


def test_overlong_config_name_is_a_user_error(cli) -> None:
    """A name longer than the system allows for a file is still a missing config, not a crash."""
    result = cli("summary", "--config", "a" * 300)
    assert result.code == USER_ERROR
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert "a" * 80 in result.err and "too long" in result.err
