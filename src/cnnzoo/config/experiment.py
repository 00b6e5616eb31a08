"""The experiment file as typed, validated, frozen config objects (no torch).

`load_config` (a file or a bundled name) and `parse_config` (YAML text) are the only
ways in: YAML text -> plain data with lines -> `--set` overrides -> `ExperimentConfig`.
Nothing past here sees a raw dict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cnnzoo.config.datasets import DATASETS
from cnnzoo.config.limits import check_layer_count, check_run_name
from cnnzoo.config.overrides import apply_override
from cnnzoo.config.yamlio import YamlDocument, dump_yaml, load_yaml, read_config_text
from cnnzoo.errors import ConfigError
from cnnzoo.layers.registry import LAYERS, LayerSpec
from cnnzoo.utils.params import (
    Kind,
    Where,
    bool_kind,
    choice_kind,
    float_kind,
    float_list_kind,
    int_kind,
    one_of,
    optional,
    pair_kind,
    param,
    parse_params,
    section,
    str_kind,
    to_dict,
    with_fix,
)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    layers: tuple[LayerSpec, ...] = param(
        kind=LAYERS, doc="the stack, first to last: INPUT -> CONV -> RELU -> POOL -> FC"
    )

    def check(self, where: Where) -> None:
        check_layer_count(self.layers, where)


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    crop: int = param(
        0, kind=int_kind(0), doc="random crop of the original size after zero-padding by this "
        "many pixels on each side (0: off)"
    )
    flip: bool = param(False, kind=bool_kind(), doc="random horizontal flip")
    erase: float = param(
        0.0, kind=float_kind(0.0, 1.0), doc="probability of random erasing (a random rectangle "
        "set to zero, after normalisation)"
    )
    noise: float = param(
        0.0, kind=float_kind(0.0), doc="standard deviation of Gaussian noise added to every "
        "pixel, in units of pixel values in [0, 1] (0: off)"
    )
    mixup: float = param(
        0.0, kind=float_kind(0.0), doc="mixup: train on lam * image + (1 - lam) * another "
        "image of the batch, lam drawn from Beta(mixup, mixup), the loss mixed alike (0: off)"
    )
    cutmix: float = param(
        0.0, kind=float_kind(0.0), doc="CutMix: paste a box of another image of the batch, "
        "of area 1 - lam with lam from Beta(cutmix, cutmix), the loss mixed by area (0: off; "
        "with mixup on too, each batch is one or the other)"
    )


_DOWNLOAD = one_of(bool_kind(), choice_kind(["auto"]))


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    dataset: str | None = param(
        None, kind=optional(choice_kind(list(DATASETS))), doc="a dataset name, or folder"
    )
    root: str | None = param(
        None, kind=optional(str_kind()), doc="where the data is (folder: your images; others: "
        "a directory searched before the usual places)"
    )
    download: bool | str = param(
        "auto", kind=_DOWNLOAD, doc="auto: download only when not found locally; "
        "true: always try; false: never"
    )
    val_split: float = param(
        0.1, kind=float_kind(0.0, below=1.0), doc="fraction of the training set held out for "
        "validation (model selection); the test split is only used at the end"
    )
    test_split: float = param(
        0.2, kind=float_kind(0.0, below=1.0), doc="folder only: fraction held out as the test "
        "set when root has no test/ directory"
    )
    resize: tuple[int, int] | None = param(
        None, kind=optional(pair_kind()), doc="resize images to this size (int or [h, w])"
    )
    pad: int = param(0, kind=int_kind(0), doc="zero-pad every image by this many pixels per side")
    channels: int | None = param(
        None, kind=optional(int_kind(1, 3)), doc="convert images to 1 (grey) or 3 (RGB) channels"
    )
    augment: AugmentConfig = section(AugmentConfig, "training-time augmentation, per batch")
    normalize: bool = param(True, kind=bool_kind(), doc="subtract the mean and divide by the std")
    mean: tuple[float, ...] | None = param(
        None, kind=optional(float_list_kind()), doc="per-channel mean (default: the dataset's)"
    )
    std: tuple[float, ...] | None = param(
        None, kind=optional(float_list_kind()), doc="per-channel std (default: the dataset's)"
    )
    limit_train: int | None = param(
        None, kind=optional(int_kind(1)), doc="use only the first N training images (quick runs)"
    )
    limit_test: int | None = param(
        None, kind=optional(int_kind(1)), doc="use only the first N test images (quick runs)"
    )
    workers: int = param(
        2, kind=int_kind(0), doc="folder only: DataLoader worker processes for decoding images"
    )

    def check(self, where: Where) -> None:
        if self.dataset == "folder" and self.root is None:
            raise where.error("dataset folder needs root", "root", fix="add root: path/to/images")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and any(v <= 0 for v in values) and key == "std":
                raise where.error(f"std must be positive. Received: std={list(values)}", key)


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    name: str = param("sgd", kind=choice_kind(["sgd", "adam", "adamw", "muon"]),
                      doc="the optimizer; muon: orthogonalised (Newton-Schulz) momentum for the "
                      "conv and fc weights but the last layer's, the fallback for the rest")
    lr: float = param(0.05, kind=float_kind(0.0), doc="peak learning rate")
    momentum: float = param(0.9, kind=float_kind(0.0, 1.0), doc="sgd, muon: momentum (adam: beta1)")
    nesterov: bool = param(False, kind=bool_kind(), doc="sgd, muon: Nesterov momentum")
    weight_decay: float = param(0.0, kind=float_kind(0.0), doc="L2 penalty (adamw, muon's "
                                "matrices: decoupled, w *= 1 - lr * weight_decay)")
    beta2: float = param(0.999, kind=float_kind(0.0, below=1.0), doc="adam/adamw: beta2")
    fallback: str = param("sgd", kind=with_fix(choice_kind(["sgd", "adamw"]), "set fallback: sgd "
                          "or adamw"), doc="muon: the optimizer of the rest (biases, norms, the "
                          "last layer, layers that are neither conv nor fc)")
    fallback_lr: float | None = param(None, kind=optional(float_kind(0.0)),
                                      doc="muon: the fallback's peak learning rate (null: lr)")
    fallback_momentum: float | None = param(None, kind=optional(float_kind(0.0, 1.0)),
                                            doc="muon: the fallback's momentum (null: momentum)")

    def check(self, where: Where) -> None:
        if self.nesterov and (self.name not in ("sgd", "muon") or self.momentum == 0):
            raise where.error("nesterov needs sgd or muon with momentum > 0", "nesterov")
        given = [k for k, v in (("fallback", "sgd"), ("fallback_lr", None),
                                ("fallback_momentum", None)) if getattr(self, k) != v]
        if self.name != "muon" and given:
            raise where.error(f"{given[0]} only applies to muon, but the optimizer is "
                              f"{self.name}", given[0], fix=f"set name: muon or remove {given[0]}")


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    name: str = param(
        "none", kind=choice_kind(["none", "step", "cosine", "onecycle"]),
        doc="learning-rate schedule over the run, stepped every batch",
    )
    warmup_epochs: float = param(
        0.0, kind=float_kind(0.0), doc="linear warm-up from 0 over this many epochs (not onecycle)"
    )
    step_epochs: int = param(
        30, kind=int_kind(1), doc="step: multiply the lr by gamma every this many epochs"
    )
    gamma: float = param(0.1, kind=float_kind(0.0, 1.0), doc="step: the factor")
    min_lr: float = param(0.0, kind=float_kind(0.0), doc="cosine: the final learning rate")
    pct_start: float = param(
        0.25, kind=float_kind(0.0, 1.0), doc="onecycle: fraction of the run spent rising"
    )


# Registered in losses.py; named here so that validating a config needs no torch.
LOSS_NAMES = ["cross_entropy", "svm", "margin"]


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    name: str = param("cross_entropy", kind=choice_kind(LOSS_NAMES), doc="the loss")
    label_smoothing: float = param(
        0.0, kind=float_kind(0.0, below=1.0), doc="spread this much of the target over all classes"
    )
    margin: float = param(
        1.0, kind=float_kind(0.0), doc="svm: the margin by which the true class's score must "
        "beat every other (Weston-Watkins hinge; the L2 term is train.optimizer.weight_decay)"
    )
    m_plus: float = param(
        0.9, kind=float_kind(0.0), doc="margin: a present class's score should reach m+"
    )
    m_minus: float = param(
        0.1, kind=float_kind(0.0), doc="margin: an absent class's score should stay below m-"
    )
    absent_weight: float = param(
        0.5, kind=float_kind(0.0), doc="margin: lambda, the weight of the absent classes' term"
    )

    def check(self, where: Where) -> None:
        margin_keys = [k for k, default in (("m_plus", 0.9), ("m_minus", 0.1),
                                            ("absent_weight", 0.5)) if getattr(self, k) != default]
        if self.name != "margin" and margin_keys:
            raise where.error(
                f"{', '.join(margin_keys)} only apply to the margin loss, but the loss is "
                f"{self.name}", margin_keys[0], fix=f"set name: margin or remove {margin_keys[0]}",
            )
        if self.name == "margin" and self.label_smoothing:
            raise where.error(
                "label_smoothing applies to cross_entropy, not to the margin loss. "
                f"Received: label_smoothing={self.label_smoothing:g}", "label_smoothing",
                fix="remove label_smoothing",
            )


@dataclass(frozen=True, kw_only=True)
class DivergenceConfig:
    enabled: bool = param(
        True, kind=bool_kind(), doc="stop a run whose loss stays far above a uniform guess's "
        "(as a NaN loss stops it)"
    )
    factor: float = param(
        10.0, kind=float_kind(1.0), doc="the limit, in multiples of ln(classes): the loss of a "
        "uniform guess, where training starts"
    )
    steps: int = param(
        20, kind=int_kind(1), doc="consecutive steps above the limit before the run stops"
    )


@dataclass(frozen=True, kw_only=True)
class EmaConfig:
    decay: float | None = param(
        None, kind=optional(float_kind(0.0, below=1.0)),
        doc="keep an exponential moving average of the weights, updated after every step "
        "with this decay (e.g. 0.999), and validate, test and save it instead of the "
        "weights; null: off",
    )
    warmup: bool = param(
        True, kind=bool_kind(), doc="use the decay min(decay, (1 + step) / (10 + step)), so "
        "that the average does not remember the random initial weights for long"
    )


@dataclass(frozen=True, kw_only=True)
class LookaheadConfig:
    steps: int | None = param(
        None, kind=optional(with_fix(int_kind(1), "set steps: 1 or more, e.g. 5")),
        doc="every this many optimizer steps, move the slow weights alpha of the way to the "
        "weights and set the weights to them (Zhang et al. 2019); null: off",
    )
    alpha: float = param(
        0.5, kind=with_fix(float_kind(0.0, 1.0), "set alpha: a fraction in (0, 1], e.g. 0.5"),
        doc="the fraction of the way the slow weights move (1: lookahead does nothing)",
    )

    def check(self, where: Where) -> None:
        if self.alpha == 0:  # the range kind takes 0; here it would freeze the weights
            raise where.error("alpha must be in (0, 1]. Received: alpha=0", "alpha",
                              fix="set alpha: a fraction in (0, 1], e.g. 0.5")


# Test-time augmentation (`train.tta`): how many views of each image are evaluated.
TTA_VIEWS = {"none": 1, "flip": 2, "shift": 5, "flip_shift": 10}

_DEVICE = Kind(
    "auto | cpu | cuda | cuda:N | mps",
    lambda value, key, where: _parse_device(value, key, where),
    lambda: {"type": "string", "pattern": r"^(auto|cpu|mps|cuda(:\d+)?)$"},
)


def _parse_device(value: Any, key: str, where: Where) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise where.error(
            f"{key} must be auto, cpu, cuda, cuda:N or mps. Received: {key}={value!r}", key
        )
    return value


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = param(10, kind=int_kind(1), doc="passes over the training set")
    batch_size: int = param(128, kind=int_kind(1), doc="images per step (the global batch)")
    optimizer: OptimizerConfig = section(OptimizerConfig, "the optimizer (or just its name)")
    scheduler: SchedulerConfig = section(SchedulerConfig, "the learning-rate schedule")
    loss: LossConfig = section(LossConfig, "the loss (or just its name)")
    seed: int = param(0, kind=int_kind(0), doc="seed for weights, data order and augmentation")
    device: str = param("auto", kind=_DEVICE, doc="auto: cuda, then mps, then cpu")
    precision: str = param(
        "auto", kind=choice_kind(["auto", "fp32", "bf16", "fp16"]),
        doc="auto: bf16 autocast where it is computed natively (GPUs that support it; CPUs "
        "with AMX or AVX512-BF16), fp32 otherwise",
    )
    time_budget: float | None = param(
        None, kind=optional(float_kind(1.0)),
        doc="seconds the training loop may take (steps, validation, checkpoints): the "
        "first steps are timed, then the run takes as many steps as fit (at most epochs) "
        "with the schedule fitted to them, and re-plans as the speed changes",
    )
    time_budget_replan: bool = param(
        True, kind=bool_kind(),
        doc="with time_budget: re-plan the steps left (and the schedule's rest) whenever "
        "the time spent plus the steps left at the recent speed misses the budget by more "
        "than 2%; false keeps the first plan",
    )
    channels_last: bool | str = param(
        "auto", kind=one_of(bool_kind(), choice_kind(["auto"])),
        doc="NHWC memory layout; auto: on for networks with convolutions on the CPU and on "
        "CUDA, where it is faster (oneDNN, tensor cores)",
    )
    compile: bool = param(False, kind=bool_kind(), doc="torch.compile the model")
    sync_batchnorm: bool = param(
        False, kind=bool_kind(), doc="in several processes (torchrun), batchnorm statistics "
        "over the global batch (SyncBatchNorm; GPUs only) instead of each process's share"
    )
    tta: str = param(
        "none", kind=choice_kind(list(TTA_VIEWS)),
        doc="test-time augmentation for evaluation (validation, test, eval, predict): flip "
        "averages the logits of the image and its mirror; shift of the image and its four "
        "one-pixel shifts (four of the crops that crop: 1 trains on); flip_shift of those "
        "five and their mirrors. Each view costs a forward pass",
    )
    eval_batch_size: int = param(1024, kind=int_kind(1), doc="images per evaluation step")
    divergence: DivergenceConfig = section(
        DivergenceConfig, "stop a run whose loss blew up but stayed finite"
    )
    ema: EmaConfig = section(
        EmaConfig, "an exponential moving average of the weights (Polyak averaging)"
    )
    lookahead: LookaheadConfig = section(
        LookaheadConfig, "lookahead: slow weights that follow the weights every few steps"
    )


@dataclass(frozen=True)
class Origin:
    """Where a config was read from, so later errors (shapes) can name the file and line."""

    source: str
    lines: dict[tuple[str | int, ...], int]
    overrides: dict[tuple[str | int, ...], str]  # key path -> the `--set` text that set it

    def locate(self, exc: ConfigError) -> ConfigError:
        for key_path, text in self.overrides.items():
            # An error at or below a key that --set wrote, or at a key the file never
            # had on the way to one (--set a.b.c=1 when there is no 'a').
            above = bool(exc.path) and key_path[: len(exc.path)] == exc.path and (
                tuple(exc.path) not in self.lines)
            if exc.path[: len(key_path)] == key_path or above:
                exc.source = f"--set {text}"
                return exc.located(None, None)
        return exc.located(self.source, self.lines)


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    name: str = param(
        "experiment", kind=str_kind(), doc="the run's name; defaults to the file's stem"
    )
    model: ModelConfig = param(kind=section(ModelConfig, "").metadata["kind"], doc="the network")
    data: DataConfig = section(DataConfig, "the dataset and its preprocessing")
    train: TrainConfig = section(TrainConfig, "how to train")
    versions: tuple[tuple[str, str], ...] | None = param(
        None, kind=optional(Kind(
            "mapping of names to versions",
            lambda value, key, where: _parse_versions(value, key, where),
            lambda: {"type": "object", "additionalProperties": {"type": "string"}},
            lambda value: dict(value),
        )),
        doc="written by cnnzoo train: the versions that produced a run (informational)",
    )
    origin: Origin | None = field(default=None, compare=False, repr=False)

    def check(self, where: Where) -> None:
        check_run_name(self.name, where)

    def to_yaml(self) -> str:
        """The fully resolved experiment as YAML; `parse_config` reads it back to an equal
        config (and `load_config` once written to a file)."""
        return dump_yaml(to_plain(self))


def _parse_versions(value: Any, key: str, where: Where) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise where.error(f"{key} must be a mapping of names to version strings", key)
    return tuple(value.items())


def to_plain(config: ExperimentConfig) -> dict[str, Any]:
    data = to_dict(config)
    data["model"] = {"layers": [spec.to_yaml(full=True) for spec in config.model.layers]}
    if data["versions"] is None:
        del data["versions"]
    return data


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file's path: an existing file, or the name of a bundled config."""
    path = Path(name_or_path)
    try:
        exists = path.exists()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ConfigError(f"no config file or bundled config named '{str(name_or_path)[:80]}"
                          f"{'...' if len(str(name_or_path)) > 80 else ''}' ({exc.strerror})",
                          fix="`cnnzoo zoo` lists the bundled configs") from None
    if path.is_file():
        return path
    from cnnzoo.config.bundled import bundled_configs, bundled_file

    bundled = bundled_configs()
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    if not exists and len(path.parts) == 1 and stem in bundled:
        return bundled[stem]
    nested = None if exists else bundled_file(str(name_or_path))
    if nested is not None:
        return nested
    if exists:
        return path  # a directory: read_config_text explains
    from cnnzoo.errors import did_you_mean

    text = str(name_or_path)
    if "\n" in text:  # a likely slip in Python; the CLI only ever passes names and paths
        raise ConfigError(f"no config file named '{text[:40]}...': this looks like YAML text",
                          fix="read YAML text with cnnzoo.parse_config(text)")
    raise ConfigError(
        f"no config file or bundled config named '{name_or_path}'"
        f"{did_you_mean(stem, bundled)}",
        fix="`cnnzoo zoo` lists the bundled configs",
    )


def load_config(
    path_or_name: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Read and validate an experiment file: a path, or the name of a bundled config.

    `overrides` are `key=value` strings (as `cnnzoo train --set`), applied before
    validation so they are checked exactly like the file. YAML text goes to `parse_config`.
    """
    path = resolve_config_path(path_or_name)
    doc = load_yaml(read_config_text(path), str(path))
    return config_from_document(doc, path.stem, overrides)


def parse_config(
    text: str, overrides: list[str] | tuple[str, ...] = (), source: str = "<string>"
) -> ExperimentConfig:
    """Validate an experiment given as YAML text; `source` names it in error messages."""
    return config_from_document(load_yaml(text, source), "experiment", overrides)


def config_from_document(
    doc: YamlDocument, default_name: str, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    if doc.data is None:
        raise ConfigError(
            "the file is empty", source=doc.source,
            fix="an experiment needs at least 'model: {layers: [...]}'",
        )
    if not isinstance(doc.data, dict):
        raise ConfigError(
            f"the file must be a mapping with model/data/train sections, got "
            f"{type(doc.data).__name__}",
            source=doc.source, line=1,
        )
    data = dict(doc.data)
    applied: dict[tuple[str | int, ...], str] = {}
    for text in overrides:
        key_path = apply_override(data, text)
        applied[key_path] = text
    data.setdefault("name", default_name)
    origin = Origin(doc.source, doc.lines, applied)
    try:
        config = parse_params(ExperimentConfig, data, Where("", ()))
    except ConfigError as exc:
        raise origin.locate(exc) from None
    return replace(config, origin=origin)


def with_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """A copy of `config` with `key=value` overrides applied and validated."""
    doc = load_yaml(config.to_yaml(), "<config>")
    return config_from_document(doc, config.name, overrides)


def rename(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """The same experiment under another name (a tuning trial's, the best trial's)."""
    return replace(config, name=name)
