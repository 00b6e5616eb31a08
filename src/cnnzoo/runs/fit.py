"""The one answer to "do these tensors fit this model": name by name, which tensors
match the model's state_dict in shape, which are missing, which the model lacks and
which have another shape. A checkpoint and packed weights must fit exactly (packed
weights may leave out what the config rebuilds); `--init-from` copies what matches.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnzoo.errors import CheckpointError

# How many mismatches one error message lists before it counts the rest.
SHOWN = 12

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Fit:
    """How a set of tensors lines up with a model's state_dict."""

    model: Shapes  # the model's tensors and their shapes, in state_dict order
    given: Shapes  # the tensors offered, and their shapes
    optional: frozenset[str] = frozenset()  # model tensors the offer may leave out

    def matching(self) -> list[str]:
        """The model's names that the tensors hold with the same shape, in model order."""
        return [n for n, shape in self.model.items() if self.given.get(n) == shape]

    def missing(self) -> list[str]:
        return [n for n in self.model if n not in self.given and n not in self.optional]

    def unexpected(self) -> list[str]:
        return [n for n in self.given if n not in self.model]

    def wrong_shape(self) -> list[str]:
        return [n for n, shape in self.model.items() if self.given.get(n, shape) != shape]

    def problems(self) -> list[str]:
        """Every mismatch in one sentence each, sorted by name."""
        model, given = self.model, self.given
        return sorted(
            [f"{n} {list(model[n])} is missing from the weights" for n in self.missing()]
            + [f"{n} {list(given[n])} is not in the model" for n in self.unexpected()]
            + [f"{n}: the weights have {list(given[n])}, the model {list(model[n])}"
               for n in self.wrong_shape()]
        )

    def require(self, source: Path | str) -> None:
        """Refuse tensors that do not fit exactly, naming every mismatch."""
        problems = self.problems()
        if problems:
            more = len(problems) - SHOWN
            shown = "; ".join(problems[:SHOWN]) + (f"; and {more} more" if more > 0 else "")
            raise CheckpointError(
                f"the weights in {source} do not fit the model of the config: {shown}"
            )


def tensor_fit(model: nn.Module, tensors: Mapping[str, torch.Tensor],
               optional: Collection[str] = ()) -> Fit:
    """How `tensors` line up with `model`'s state_dict (`optional`: names they may lack)."""
    return Fit({n: tuple(v.shape) for n, v in model.state_dict().items()},
               {n: tuple(v.shape) for n, v in tensors.items()}, frozenset(optional))


def check_fit(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: Path | str,
              optional: Collection[str] = ()) -> None:
    """Refuse `tensors` unless they fit `model` exactly (but for `optional` names)."""
    tensor_fit(model, tensors, optional).require(source)
