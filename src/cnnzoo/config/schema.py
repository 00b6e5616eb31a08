"""JSON Schema of the experiment file, generated from the same declarations the
loader validates with, for editors (yaml-language-server) to complete and check."""

from __future__ import annotations

from typing import Any

from cnnzoo.config.experiment import ExperimentConfig
from cnnzoo.layers.registry import layer_schema
from cnnzoo.utils.params import params_schema


def experiment_schema() -> dict[str, Any]:
    schema = params_schema(ExperimentConfig)
    schema["required"] = ["model"]
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "cnnzoo experiment",
        "description": "A network in the cnnzoo model language, with its data and training.",
        **schema,
        "definitions": {
            "layers": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/layer"}},
            "layer": layer_schema(),
        },
    }
