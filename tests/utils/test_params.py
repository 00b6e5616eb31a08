"""cnnzoo.utils.params: one `param(kind, doc)` declaration reads a value, refuses a wrong
one with what was received, writes it back, and describes it in JSON Schema; the schema
accepts exactly what the reader accepts (checked with jsonschema)."""

from __future__ import annotations

from dataclasses import dataclass

import jsonschema
import pytest

from cnnzoo.errors import ConfigError
from cnnzoo.utils.params import (
    Where,
    bool_kind,
    choice_kind,
    float_kind,
    int_kind,
    pair_kind,
    param,
    params_schema,
    parse_params,
    section,
    to_dict,
)


@dataclass(frozen=True)
class Optimizer:
    name: str = param("sgd", kind=choice_kind(("sgd", "adam")), doc="which optimizer")
    lr: float = param(0.1, kind=float_kind(minimum=0.0), doc="the learning rate")


@dataclass(frozen=True)
class Spec:
    filters: int = param(kind=int_kind(minimum=1), doc="how many filters")
    kernel: tuple[int, int] = param((3, 3), kind=pair_kind(), doc="the window")
    decay: float = param(0.0, kind=float_kind(minimum=0.0, below=1.0), doc="weight decay")
    flip: bool = param(False, kind=bool_kind(), doc="flip the images")
    optimizer: Optimizer = section(Optimizer, "the optimizer")


HERE = Where("train", ("train",))


def test_values_are_read_normalised_and_written_back():
    spec = parse_params(Spec, {"filters": 4, "kernel": [3, 5], "decay": "5e-4",
                               "optimizer": "adam"}, HERE)
    assert spec == Spec(filters=4, kernel=(3, 5), decay=0.0005, optimizer=Optimizer("adam"))
    assert parse_params(Spec, {"filters": 2, "kernel": 7}, HERE).kernel == (7, 7)
    plain = to_dict(spec)
    assert plain == {"filters": 4, "kernel": [3, 5], "decay": 0.0005, "flip": False,
                     "optimizer": {"name": "adam", "lr": 0.1}}
    assert parse_params(Spec, plain, HERE) == spec
    assert "flip" not in to_dict(spec, skip_defaults=True)


@pytest.mark.parametrize(("value", "message", "path"), [
    ({"filters": True}, "train: filters must be an integer. Received: filters=True",
     ("train", "filters")),
    ({"filters": 0}, "filters must be positive. Received: filters=0", ("train", "filters")),
    ({"filters": 1, "decay": 1.0}, "decay must be below 1.0. Received: decay=1.0",
     ("train", "decay")),
    ({"filters": 1, "decay": float("inf")}, "decay must be a finite number", ("train", "decay")),
    ({"filters": 1, "flip": "yes"}, "flip must be true or false. Received: flip='yes'",
     ("train", "flip")),
    ({"filtres": 3}, "'filtres' is not a parameter of train; did you mean 'filters'?",
     ("train", "filtres")),
    ({}, "'filters' is required (how many filters); add filters: ...", ("train",)),
    ({"filters": 1, "optimizer": {"name": "adma"}},
     "train.optimizer: name must be one of sgd, adam. Received: name='adma'; did you mean "
     "'adam'?", ("train", "optimizer", "name")),
    ([1, 2], "expected a mapping of parameters, got list [1, 2]", ("train",)),
])
def test_a_wrong_value_names_its_place_and_what_was_received(value, message, path):
    with pytest.raises(ConfigError) as error:
        parse_params(Spec, value, HERE)
    assert message in str(error.value)
    assert error.value.path == path


def test_a_mutable_default_is_refused_at_declaration():
    with pytest.raises(TypeError, match="use tuples or None"):
        param([3, 3], kind=pair_kind(), doc="the window")


def test_the_schema_is_written_from_the_declarations():
    assert params_schema(Optimizer) == {
        "type": "object",
        "properties": {
            "name": {"enum": ["sgd", "adam"], "description": "which optimizer",
                     "default": "sgd"},
            "lr": {"type": "number", "minimum": 0.0, "description": "the learning rate",
                   "default": 0.1},
        },
        "additionalProperties": False,
    }
    assert params_schema(Spec)["required"] == ["filters"]


@pytest.mark.parametrize("value", [
    {"filters": 4}, {"filters": 4, "kernel": [2, 3], "optimizer": "adam"},
    {"filters": 4, "optimizer": {"lr": 0.5}}, {"filters": 1, "flip": True, "decay": 0.5},
    {"filters": 0}, {"filters": 2.5}, {"filters": 4, "kernel": [2]},
    {"filters": 4, "decay": 1.0}, {"filters": 4, "optimizer": "rmsprop"},
    {"filters": 4, "flip": 1}, {"kernel": 3}, {"filters": 4, "extra": 1},
])
def test_the_schema_accepts_exactly_what_the_reader_accepts(value):
    try:
        parse_params(Spec, value, HERE)
        read = True
    except ConfigError:
        read = False
    valid = jsonschema.Draft202012Validator(params_schema(Spec)).is_valid(value)
    assert valid == read, value
