"""The torch backend's network as one call, for the server: traced and frozen with
TorchScript, so that a batch's forward pass releases the GIL once rather than around
every operation. In the server the forward thread otherwise takes the GIL back from a
busy event loop between operations; measured on lenet5 (docs/serving.md), the slowest
forward passes took 3.8 ms one-call against 8-9.5 ms eager, and the p99 at half the
saturated rate halved.

The traced network serves only if it computes what the module does, checked on random
batches of two other sizes than the one it was traced with (a trace records one run's
operations: a network whose operations depended on its input would differ). If
tracing fails or the check does, the eager module serves and the reason is said.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cnnzoo.tools.predict.predictor import Predictor

TOLERANCE = 1e-5  # of the largest logit, as open_onnx checks an exported network
TRACED_BATCH, CHECKED_BATCHES = 4, (1, 7)
ONE_CALL = "one call"


def one_call(predictor: Predictor) -> str:
    """Serve `predictor`'s torch network as one call when it computes the same; returns
    how the network runs now (also in `predictor.runs_as`)."""
    if predictor.backend != "torch":
        return predictor.runs_as
    module = predictor.network
    volume = predictor.volume
    generator = torch.Generator().manual_seed(0)

    def batch(size: int) -> torch.Tensor:
        shape = (size, volume.depth, volume.height, volume.width)
        return torch.randn(shape, generator=generator).to(predictor.device)

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer notes
            traced = torch.jit.freeze(torch.jit.trace(module, batch(TRACED_BATCH),
                                                      check_trace=False))
            for size in CHECKED_BATCHES:
                x = batch(size)
                expected = module(x).float()
                difference = float((traced(x).float() - expected).abs().max())
                if not difference <= TOLERANCE * max(1.0, float(expected.abs().max())):
                    predictor.runs_as = (f"eager (the traced network differs by "
                                         f"{difference:.3g} on a batch of {size})")
                    return predictor.runs_as
    except Exception as exc:  # any layer TorchScript cannot take: the module serves
        predictor.runs_as = f"eager (tracing failed: {type(exc).__name__}: {exc})"[:200]
        return predictor.runs_as
    predictor.network = traced
    predictor.runs_as = ONE_CALL
    return predictor.runs_as
