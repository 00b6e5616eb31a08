"""Fuzzing the two ways a user's text enters cnnzoo: the config loader and `--set`.

Whatever the input (random text, random structures dumped to YAML, random keys
with dots, brackets, indices, unicode and stray `=`), the result is a config, or
a `ConfigError`; never any other exception. A valid config also plans (or is
refused by the planner with a ConfigError), so nothing slips through to torch. The
deadline is a guard against blow-ups (an input that makes the loader expand or
recurse), not a benchmark: each example normally takes milliseconds.
"""

from __future__ import annotations

import dataclasses
import string
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import cnnzoo
from cnnzoo.config.experiment import (
    AugmentConfig,
    DataConfig,
    LossConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainConfig,
)
from cnnzoo.config.overrides import apply_override
from cnnzoo.layers.registry import layer_table

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

BASE = """
model:
  layers:
    - input: {width: 8, height: 8, depth: 1}
    - conv: {filters: 4, kernel: 3, padding: same, activation: relu}
    - pool: 2
    - fc: 10
data: {dataset: fashion_mnist, resize: 8}
train: {epochs: 2, optimizer: adam}
"""

LAYER_TYPES = [entry["type"] for entry in layer_table()]
LAYER_PARAMS = sorted({p["name"] for entry in layer_table() for p in entry["params"]})
SECTION_KEYS = sorted({f.name for cls in (DataConfig, TrainConfig, OptimizerConfig,
                                          SchedulerConfig, AugmentConfig, LossConfig)
                       for f in dataclasses.fields(cls)})
# Values that would name Python objects if anything resolved names dynamically.
PYTHON_NAMES = ["os.system", "__import__", "builtins.eval", "torch.optim.SGD",
                "torch.nn.Conv2d", "subprocess.Popen", "__class__", "__globals__"]

names = st.sampled_from(["model", "layers", "data", "train", "name", "versions", *LAYER_TYPES,
                         *LAYER_PARAMS, *SECTION_KEYS, *PYTHON_NAMES])
keys = st.one_of(names, names, st.text(max_size=8))
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.integers(),
    st.sampled_from([2**63, -(2**64), 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    names,
    st.text(max_size=12),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(keys, st.integers(0, 3)), inner, max_size=4),
    ),
    max_leaves=25,
)
layers = st.one_of(
    st.sampled_from(LAYER_TYPES),
    st.builds(lambda t, v: {t: v}, st.sampled_from(LAYER_TYPES),
              st.one_of(leaves, st.dictionaries(st.sampled_from(LAYER_PARAMS), values,
                                                max_size=4))),
    values,
)
experiments = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.fixed_dictionaries({"layers": st.lists(layers, max_size=6)}),
                           values),
        "data": st.one_of(st.dictionaries(st.sampled_from(SECTION_KEYS), values, max_size=4),
                          values),
        "train": st.one_of(st.dictionaries(st.sampled_from(SECTION_KEYS), values, max_size=4),
                           values),
        "name": values,
    },
)


def _load_and_plan(text: str, overrides: list[str] | tuple[str, ...] = ()) -> None:
    """Load (and plan, when valid); only a config or a ConfigError may come out."""
    try:
        config = cnnzoo.parse_config(text, overrides)
    except cnnzoo.ConfigError as exc:
        assert str(exc), "a ConfigError must say something"
        return
    assert isinstance(config, cnnzoo.ExperimentConfig)
    try:
        plan = cnnzoo.plan_experiment(config)
    except cnnzoo.ConfigError:
        return
    assert plan.total_params >= 0


@pytest.mark.slow
@FUZZ
@given(experiments)
@example({"model": {"layers": [{}]}})  # an empty mapping as a layer
@example({"train": {"optimizer": {"name": "torch.optim.SGD"}}})
def test_random_structures_are_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    _load_and_plan(text if text.strip() else "{}\n")


@FUZZ
@given(st.lists(st.sampled_from([*PYTHON_NAMES, "!!python/object/apply:os.system ['true']",
                                  "&a [*a]", "*a", "{", "[", "- ", ": ", "\n", "  ", "\t",
                                  "model:\n  layers:\n", "    - ", "conv", "input", "relu",
                                  "{filters: 4}", "3", "1e999", "'", '"', "#", "\x00", "\ufeff",
                                  "<<: ", "? ", "!!str ", "%TAG ! x\n", "---\n",
                                  "9" * 4400]),  # past Python's int-from-string limit
                max_size=30).map("".join))
@example("model: {layers: [input: {width: " + "9" * 4400 + "}]}\n")
def test_random_yaml_fragments_are_a_config_or_a_config_error(text: str) -> None:
    _load_and_plan(text if (":" in text or "\n" in text) else text + "\n")


segments = st.one_of(
    names,
    st.sampled_from(["0", "1", "3", "99", "-1", "00", "²", "٣", "𝟘", "1" * 12, "1" * 5000, "",
                     " ", "[0]", "[1]", "[x]", "[", "]", "[]", "[-1]", "..", "=", "==", "\n",
                     "layers[0]", "layers[0][0]", "conv.filters"]),
    st.text(string.printable, max_size=4),
    st.text(max_size=4),
)
separators = st.sampled_from([".", ".", ".", "", "[", "]", "=", " "])
override_keys = st.lists(st.tuples(segments, separators), max_size=6).map(
    lambda parts: "".join(seg + sep for seg, sep in parts))
override_values = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["", "~", "1", "-1", "0", "3", "1.0e6", ".nan", ".inf", "[1, 2]", "[]",
                     "{}", "{a: 1}", "relu", "{conv: 8}", "adam", "[relu, {fc: 10}]", "&a [*a]",
                     "!!python/name:os.system", "1" * 5000, "a=b", "=", "[", "'"]),
    values.map(lambda v: yaml.safe_dump(v, allow_unicode=True, default_flow_style=True)
               .removesuffix("\n...\n").strip()),
)
overrides = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", override_keys, override_values),
    st.text(max_size=20),
)


@pytest.mark.slow
@FUZZ
@given(st.lists(overrides, min_size=1, max_size=3))
@example(["model.layers.²=relu"])
@example(["model.layers." + "1" * 5000 + "=relu"])
@example(["model.layers[0]=" + "1" * 5000])
@example(["model.layers=[{}]"])
@example(["=", "a==b"])
def test_random_set_overrides_are_a_config_or_a_config_error(texts: list[str]) -> None:
    _load_and_plan(BASE, texts)


@FUZZ
@given(values, overrides)
def test_apply_override_on_any_data_returns_a_key_path_or_a_config_error(
    data: Any, text: str
) -> None:
    raw = data if isinstance(data, dict) else {"model": data}
    try:
        path = apply_override(raw, text)
    except cnnzoo.ConfigError:
        return
    assert path and all(isinstance(p, (str, int)) for p in path)
    node: Any = raw
    for part in path[:-1]:
        node = node[part]
    # The value is now at that path, parsed as YAML (the same text a file would hold).
    value_text = text.partition("=")[2]
    expected = yaml.safe_load(value_text) if value_text.strip() else None
    assert node[path[-1]] == expected or expected != expected  # nan != nan


@FUZZ
@given(epochs=st.integers(1, 10**6), filters=st.integers(1, 64),
       lr=st.floats(0, 1e6, allow_nan=False), style=st.sampled_from(["[1]", ".1"]))
def test_valid_overrides_land_where_they_say(epochs: int, filters: int, lr: float,
                                             style: str) -> None:
    config = cnnzoo.parse_config(BASE, [
        f"train.epochs={epochs}",
        f"model.layers{style}.conv.filters={filters}",
        f"train.optimizer.lr={lr!r}",
    ])
    assert config.train.epochs == epochs
    assert config.train.optimizer.name == "adam"  # the shorthand was expanded, not lost
    assert config.train.optimizer.lr == lr
    plan = cnnzoo.plan_experiment(config)
    # conv 3x3 from 1 channel: 9 weights and a bias per filter
    assert plan.layers[1].params == filters * (9 + 1)
