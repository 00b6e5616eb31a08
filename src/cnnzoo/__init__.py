"""cnnzoo: convolutional networks described in YAML, built, summarised and trained."""

from cnnzoo.startup import quiet_interrupt

with quiet_interrupt():  # Ctrl-C while torch is imported
    from cnnzoo import layers as layers  # registers the layer types
    from cnnzoo.build import Network, build_model
    from cnnzoo.config import ExperimentConfig, load_config, parse_config
    from cnnzoo.errors import CnnzooError, ConfigError
    from cnnzoo.plan import Plan, plan_experiment, plan_layers
    from cnnzoo.registry import LayerSpec, register_layer

# The one place the version is written: pyproject.toml reads it from here (hatch).
__version__ = "0.1.0"

__all__ = [
    "CnnzooError",
    "ConfigError",
    "ExperimentConfig",
    "LayerSpec",
    "Network",
    "Plan",
    "__version__",
    "build_model",
    "layers",
    "load_config",
    "parse_config",
    "plan_experiment",
    "plan_layers",
    "register_layer",
]
