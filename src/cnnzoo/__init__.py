"""cnnzoo: convolutional networks described in YAML, built, summarised and trained."""

from typing import Any

from cnnzoo.utils.startup import quiet_interrupt

with quiet_interrupt():  # Ctrl-C while the package is imported
    from cnnzoo import layers as layers  # registers the layer types
    from cnnzoo.config.experiment import ExperimentConfig, load_config, parse_config
    from cnnzoo.errors import CnnzooError, ConfigError
    from cnnzoo.layers.registry import register_layer
    from cnnzoo.layers.spec import LayerSpec
    from cnnzoo.model.plan import Plan, plan_experiment, plan_layers
    from cnnzoo.version import __version__


def __getattr__(name: str) -> Any:
    # Building needs torch; loading, checking and planning a config do not, so the
    # builder is imported on first use and `cnnzoo summary` starts without torch.
    if name == "Network":
        from cnnzoo.model import build

        return build.Network
    if name == "build_model":  # with pretrained=, it loads trained weights too
        from cnnzoo.runs import pretrained

        return pretrained.build_model
    if name == "Predictor":  # a trained network answering images (torch or onnxruntime)
        from cnnzoo.tools.predict import predictor

        return predictor.Predictor
    raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")


__all__ = [
    "CnnzooError",
    "ConfigError",
    "ExperimentConfig",
    "LayerSpec",
    "Network",
    "Plan",
    "Predictor",
    "__version__",
    "build_model",
    "layers",
    "load_config",
    "parse_config",
    "plan_experiment",
    "plan_layers",
    "register_layer",
]
