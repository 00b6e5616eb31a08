"""`precision: auto` picks bf16 on CPUs that compute it natively, so every layer must
train under bf16 autocast: gradients in the dtype of their parameters, close to fp32's."""

from __future__ import annotations

import pytest
import torch

import cnnzoo

LAYERS = {
    "local": "- local: {filters: 3, kernel: 3, padding: 1}",
    "local_strided": "- local: {filters: 2, kernel: [3, 2], stride: 2}",
    "conv_fft": "- conv: {filters: 3, kernel: 5, padding: same, impl: fft}",
    "freq_filter": "- freq_filter: {kind: lowpass, cutoff: 0.25}",
}


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_bf16_autocast_gradients_match_fp32(case: str) -> None:
    text = ("model:\n  layers:\n    - input: {width: 8, height: 8, depth: 2}\n"
            f"    {LAYERS[case]}\n    - fc: 4\n")
    torch.manual_seed(0)
    model = cnnzoo.build_model(cnnzoo.parse_config(text))
    x, y = torch.randn(5, 2, 8, 8), torch.tensor([0, 1, 2, 3, 0])

    def grads(autocast: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x)
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    exact, mixed = grads(False), grads(True)
    for name, param in model.named_parameters():
        assert mixed[name].dtype == param.dtype, name
        # bf16 keeps 8 bits of mantissa: a few parts in a hundred of the gradient's scale
        scale = exact[name].abs().max()
        assert (mixed[name] - exact[name]).abs().max() <= 0.05 * scale + 1e-6, name
