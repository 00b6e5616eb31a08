"""Reading YAML safely: the line of every value, and numbers Python refuses to read."""

from __future__ import annotations

import pytest

import cnnzoo
from cnnzoo.config.yamlio import load_yaml


def test_every_value_keeps_its_line() -> None:
    doc = load_yaml("a: 1\nb:\n  c: [1, 2]\n  d: x\n", "f.yaml")
    assert doc.data == {"a": 1, "b": {"c": [1, 2], "d": "x"}}
    assert doc.lines[("a",)] == 1
    assert doc.lines[("b", "d")] == 4


@pytest.mark.parametrize("text", [
    "model: {layers: " + "9" * 4400 + "}\n",  # a value
    "? " + "9" * 4400 + "\n: 1\n",  # a mapping key (found by the fuzzer)
])
def test_an_integer_of_thousands_of_digits_is_a_config_error(text: str) -> None:
    with pytest.raises(cnnzoo.ConfigError, match="cannot be read as a number") as info:
        cnnzoo.parse_config(text)
    assert info.value.line == 1
