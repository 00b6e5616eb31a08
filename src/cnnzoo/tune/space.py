"""The search space of `cnnzoo tune`: a YAML file naming config keys by their `--set` paths.

    trials: 24
    objective: val_accuracy            # or val_loss
    space:
      train.optimizer.lr: {low: 1.0e-4, high: 0.3, log: true}
      model.layers[1].conv.filters: {low: 8, high: 64, step: 8}
      model.layers[1].conv.kernel: [3, 5, 7]

A list is a categorical choice; `{low, high}` an int range when both ends are ints,
a float range otherwise (`log`, `step`). `validate_space` applies every value a
parameter can take (each choice, both ends of a range) to the experiment with the
same machinery as `--set` and plans the network, so a value the config refuses is
reported before any trial runs, in the space file's own words and line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnzoo.config.bundled import bundled_spaces
from cnnzoo.config.experiment import ExperimentConfig, load_config
from cnnzoo.config.overrides import parse_override_key
from cnnzoo.config.yamlio import YamlDocument, load_yaml, read_config_text
from cnnzoo.errors import ConfigError, did_you_mean

OBJECTIVES = {"val_accuracy": "maximize", "val_loss": "minimize"}
_TOP_KEYS = ("trials", "objective", "space", "prune", "startup_trials", "warmup_epochs")
_RANGE_KEYS = ("low", "high", "log", "step")


@dataclass(frozen=True)
class Param:
    """One searched key: `choices` for a categorical, otherwise a range."""

    key: str  # the `--set` path, e.g. model.layers[1].conv.kernel
    line: int | None  # its line in the space file
    choices: tuple[Any, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)

    def values_to_check(self) -> tuple[Any, ...]:
        """Every choice, or a range's two ends (the top one a step can reach)."""
        if self.choices is not None:
            return self.choices
        assert self.low is not None and self.high is not None
        high = self.high
        if self.step is not None:
            high = self.low + math.floor((self.high - self.low) / self.step + 1e-9) * self.step
        return (self.low, high)

    def suggest(self, trial: Any) -> Any:
        """This parameter's value for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1,
                                     log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


def override(key: str, value: Any) -> str:
    """`key=value` as `--set` takes it (JSON is YAML, so strings keep their quotes)."""
    return f"{key}={json.dumps(value)}"


@dataclass(frozen=True)
class SearchSpace:
    source: str  # the space file
    text: str  # its contents, stored with the study so a resume can check it is the same
    trials: int  # finished trials (complete or pruned) the study should end with
    objective: str  # val_accuracy or val_loss: the last epoch's validation metric
    params: tuple[Param, ...]
    prune: bool  # stop hopeless trials early from their per-epoch validation metric
    startup_trials: int  # trials that run in full before the pruner compares against them
    warmup_epochs: int  # epochs every trial runs before it may be pruned

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]


def resolve_space_path(name_or_path: str | Path) -> Path:
    """A space file: an existing file, or the name of a bundled space."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_spaces()
    stem = path.name.removesuffix(".yaml")
    if len(path.parts) == 1 and stem in bundled:
        return bundled[stem]
    raise ConfigError(f"no search space file or bundled space named '{name_or_path}'"
                      f"{did_you_mean(stem, bundled)}",
                      fix=f"bundled spaces: {', '.join(bundled) or 'none'}")


def load_space(path: str | Path) -> SearchSpace:
    """Read a space file; a malformed one raises ConfigError with its file and line."""
    path = resolve_space_path(path)
    return parse_space(read_config_text(path), str(path))


def parse_space(text: str, source: str) -> SearchSpace:
    """A space from its text (a study stores it, so a report needs no file)."""
    doc = load_yaml(text, source)
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError(
            f"a search space must be a mapping with trials, objective and space, got "
            f"{type(data).__name__}", source=source, line=1,
            fix="see `cnnzoo tune --help` for an example",
        )
    for key in data:
        if key not in _TOP_KEYS:
            raise _error(doc, (key,), f"'{key}' is not a key of a search space"
                         f"{did_you_mean(str(key), _TOP_KEYS)}; known: {', '.join(_TOP_KEYS)}")
    trials = _int(doc, "trials", 20, 1)
    objective = data.get("objective", "val_accuracy")
    if objective not in OBJECTIVES:
        raise _error(doc, ("objective",), f"objective must be val_accuracy or val_loss. "
                     f"Received: objective={objective!r}{did_you_mean(str(objective), OBJECTIVES)}")
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise _error(doc, ("space",), "space must be a non-empty mapping of config keys to "
                     f"values. Received: space={space!r}",
                     fix="e.g. space: {train.optimizer.lr: {low: 1.0e-4, high: 0.1, log: true}}")
    params = tuple(_param(doc, str(key), value) for key, value in space.items())
    prune = data.get("prune", True)
    if not isinstance(prune, bool):
        raise _error(doc, ("prune",), f"prune must be true or false. Received: prune={prune!r}")
    return SearchSpace(source, text, trials, objective, params, prune,
                       _int(doc, "startup_trials", 3, 0), _int(doc, "warmup_epochs", 1, 0))


def _int(doc: YamlDocument, key: str, default: int, minimum: int) -> int:
    value = doc.data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _error(doc, (key,), f"{key} must be an integer >= {minimum}. "
                     f"Received: {key}={value!r}")
    return value


def _param(doc: YamlDocument, key: str, value: Any) -> Param:
    path = ("space", key)
    line = _line(doc, path)
    try:
        parse_override_key(key)
    except ConfigError as exc:
        raise _error(doc, path, f"{key}: {exc.what}") from None
    if isinstance(value, list):
        if not value:
            raise _error(doc, path, f"{key}: the list of choices is empty",
                         fix="give at least one value, e.g. [3, 5]")
        if any(isinstance(v, (dict, list)) for v in value):
            raise _error(doc, path, f"{key}: choices must be plain values. Received: {value!r}")
        if len({json.dumps(v) for v in value}) != len(value):
            raise _error(doc, path, f"{key}: a choice is listed twice. Received: {value!r}")
        return Param(key, line, choices=tuple(value))
    if not isinstance(value, dict):
        raise _error(doc, path, f"{key} must be a list of choices or a range "
                     f"{{low, high}}. Received: {value!r}", fix=f"e.g. {key}: [{value!r}, ...]")
    unknown = [k for k in value if k not in _RANGE_KEYS]
    if unknown:
        raise _error(doc, path, f"{key}: '{unknown[0]}' is not a key of a range"
                     f"{did_you_mean(str(unknown[0]), _RANGE_KEYS)}; known: low, high, log, step")
    return _range(doc, path, key, line, value)


def _range(doc: YamlDocument, path: tuple[str, ...], key: str, line: int | None,
           value: dict[str, Any]) -> Param:
    def number(name: str) -> int | float | None:
        v = value.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _error(doc, path, f"{key}: {name} must be a number. Received: {name}={v!r}")
        return v

    low, high, step = number("low"), number("high"), number("step")
    if low is None or high is None:
        raise _error(doc, path, f"{key}: a range needs low and high. Received: {value!r}")
    if low > high:
        raise _error(doc, path, f"{key}: low must not be above high. Received: low={low}, "
                     f"high={high}", fix="swap them")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise _error(doc, path, f"{key}: log must be true or false. Received: log={log!r}")
    if log and low <= 0:
        raise _error(doc, path, f"{key}: a log range needs low > 0. Received: low={low}")
    if step is not None and step <= 0:
        raise _error(doc, path, f"{key}: step must be positive. Received: step={step}")
    if log and step is not None:
        raise _error(doc, path, f"{key}: a range takes log or step, not both")
    is_int = isinstance(low, int) and isinstance(high, int)
    if is_int and step is not None and not isinstance(step, int):
        raise _error(doc, path, f"{key}: an int range needs an int step. Received: step={step}",
                     fix=f"write low: {float(low)} for a float range")
    return Param(key, line, low=low, high=high, log=log, step=step)


def validate_space(space: SearchSpace, config: str, base: list[str]) -> ExperimentConfig:
    """The base experiment, after checking that it has a validation split and that every
    value of every parameter is accepted by it (applied as `--set`, then planned)."""
    from cnnzoo.model.plan import plan_experiment

    experiment = load_config(config, base)
    plan_experiment(experiment)
    if experiment.data.val_split <= 0:
        raise ConfigError(
            f"tuning needs a validation split, but {config} has data.val_split: 0",
            fix="set data.val_split (e.g. --set data.val_split=0.1); the test split stays "
            "unseen until the end")
    for param in space.params:
        if param.key == "train.loss" and space.objective == "val_loss":
            raise ConfigError(
                "objective val_loss compares the cross-entropy of the scores, which the svm "
                "loss does not minimise", source=space.source, line=param.line,
                where=f"space: {param.key}", fix="use objective: val_accuracy when the loss is "
                "searched")
        for value in param.values_to_check():
            text = override(param.key, value)
            try:
                plan_experiment(load_config(config, [*base, text]))
            except ConfigError as exc:
                inner = ": ".join(p for p in (exc.where, exc.what) if p)
                inner = inner.removeprefix(f"--set {text}: ")
                raise ConfigError(
                    f"{config} refuses {param.key}={value!r}: {inner}",
                    source=space.source, line=param.line, where=f"space: {param.key}",
                    fix=exc.fix) from None
    return experiment


def _line(doc: YamlDocument, path: tuple[str | int, ...]) -> int | None:
    while path:
        if path in doc.lines:
            return doc.lines[path]
        path = path[:-1]
    return None


def _error(doc: YamlDocument, path: tuple[str | int, ...], what: str,
           fix: str | None = None) -> ConfigError:
    return ConfigError(what, source=doc.source, line=_line(doc, path), fix=fix)
