"""Starting a training run from trained weights (`cnnzoo train --init-from`).

Every layer whose tensors all match the new network by name and shape is copied; the
rest stay at the new network's initialisation (say, a last layer with another number
of classes). A layer is copied whole or not at all.
The start line says which is which, so a fine-tuning run never silently trains from
scratch, and weights that fit nothing at all are an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnzoo.errors import CnnzooError
from cnnzoo.model.build import Network
from cnnzoo.runs import rundir
from cnnzoo.runs.checkpoint import load_weights
from cnnzoo.runs.fit import Fit, tensor_fit


@dataclass(frozen=True)
class InitReport:
    source: str
    loaded: tuple[str, ...]  # state_dict names copied from the source
    kept: tuple[str, ...]  # names left at initialisation, each with why

    def line(self) -> str:
        kept = "; ".join(self.kept) if self.kept else "nothing"
        return (f"init from {self.source}: loaded {len(self.loaded)} tensors "
                f"({', '.join(_layers(self.loaded))}); left at initialisation: {kept}")


def _layer(name: str) -> str:
    """The module a state_dict name belongs to: layers.1.weight -> layers.1."""
    return name.rsplit(".", 1)[0]


def _layers(names: tuple[str, ...]) -> list[str]:
    """Module names in first-seen order: layers.1.weight and layers.1.bias -> layers.1."""
    return list(dict.fromkeys(_layer(name) for name in names))


def _optional(model: Network, tensors: dict[str, torch.Tensor]) -> set[str]:
    """Tensors a layer may lack and still be loaded whole: batchnorm's step counter and
    frozen parameters, which the config rebuilds by itself (packed weights leave both
    out)."""
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    return {name for name in model.state_dict()
            if name not in tensors and (name.endswith("num_batches_tracked") or name in frozen)}


def source_tensors(source: str) -> dict[str, torch.Tensor]:
    """Verified tensors of a run directory, a cnnzoo weights file (packed or a run's),
    a bundled config's pretrained weights or an https://...#sha256= URL."""
    from cnnzoo.runs.packed import PACKED_FORMAT
    from cnnzoo.runs.pretrained import open_packed

    path = Path(source)
    if path.is_dir():
        if (path / rundir.CONFIG).is_file():
            rundir.warn_if_training(rundir.open_run(path))
        weights = path / rundir.WEIGHTS
        if not weights.exists():
            raise CnnzooError(f"--init-from {source}: the run directory has no {rundir.WEIGHTS} "
                              "(training never finished an epoch)")
        return load_weights(weights)[0]
    if path.is_file():
        tensors, meta = load_weights(path)
        if meta.get("format") != PACKED_FORMAT:
            return tensors
    return open_packed(source).tensors


def match_tensors(model: Network, tensors: dict[str, torch.Tensor],
                  source: str) -> InitReport:
    """Copy into `model` every layer of which `tensors` hold each tensor, by name and
    shape. A layer is loaded whole or not at all: a conv whose bias fits but whose
    weight has another input depth keeps both at initialisation, since half a trained
    layer is neither the trained layer nor a fresh one."""
    state = model.state_dict()
    fit = tensor_fit(model, tensors, _optional(model, tensors))
    misfits = {_layer(n) for n in fit.missing() + fit.wrong_shape() + fit.unexpected()}
    loaded = [n for n in fit.matching() if _layer(n) not in misfits]
    with torch.no_grad():
        for name in loaded:
            state[name].copy_(tensors[name])
    copied = set(loaded)
    kept = [f"{name} ({_why_kept(name, fit)})" for name in fit.model if name not in copied]
    if not [n for n in loaded if not n.endswith("num_batches_tracked")]:
        theirs = ", ".join(f"{n} {list(t.shape)}" for n, t in list(tensors.items())[:6])
        ours = ", ".join(f"{n} {list(t.shape)}" for n, t in list(state.items())[:6])
        raise CnnzooError(
            f"--init-from {source}: no layer of {model.plan.name} matches the weights by name "
            f"and shape (the weights have {theirs or 'no tensors'}; the model has {ours}); "
            "start from weights of a network with some of the same layers"
        )
    return InitReport(source, tuple(loaded), tuple(kept))


def _why_kept(name: str, fit: Fit) -> str:
    given, shape = fit.given.get(name), fit.model[name]
    if given is None:
        return "not in the weights"
    if given != shape:
        return f"weights {list(given)}, model {list(shape)}"
    return f"the rest of {_layer(name)} does not fit"


def initialise_from(model: Network, source: str | None, say: bool = True) -> InitReport | None:
    """Load the matching layers of `source` into a freshly built `model` and print the
    start line (when `say`); nothing to do when `source` is None."""
    if source is None:
        return None
    report = match_tensors(model, source_tensors(source), source)
    if say:
        print(report.line(), flush=True)
    return report
