"""Muon (`train.optimizer: {name: muon}`): momentum whose update of each conv and fc
weight matrix is orthogonalised, and SGD or AdamW for every other parameter.

Muon (Keller Jordan, 2024; "Muon is Scalable for LLM Training", Liu et al., 2025) takes
the Nesterov momentum of a weight matrix's gradient, replaces it by the nearest
(semi-)orthogonal matrix, computed approximately by five steps of a quintic
Newton-Schulz iteration, and steps along that. A conv weight (out, in, kh, kw) is the
matrix out x (in*kh*kw). The update's singular values all come out near 1, so every
direction the gradient points in moves the weights about as far, however small its
share of the gradient.

Only matrices are orthogonalised: biases, norm layers' scales and shifts, the network's
last conv or fc layer (its classifier, as the Muon authors recommend), and parameters
of layers that are neither conv nor fc (capsules, locally connected filters) go to the
fallback, SGD or AdamW. Everything is one `torch.optim.Optimizer` with a param group per
kind, so the schedule, the checkpoint (`state_dict`), resume and the time budget treat
it like any other optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

# The quintic's coefficients (Keller Jordan's): chosen to make the slope at zero as
# steep as possible, so that five steps bring even small singular values up; they then
# oscillate in a band around 1 (about 0.7 to 1.2) instead of converging to it.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
MATRIX_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@torch.no_grad()
def orthogonalise(update: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """The quintic Newton-Schulz iteration on a 2-d `update`, in float32: about U V^T of
    its SVD U S V^T (singular values in a band around 1 rather than exactly 1).

    float32 rather than bf16: on a CPU the matrices of a small network are cheap next to
    its forward and backward passes, and float32 keeps the step reproducible across
    machines with and without native bf16."""
    a, b, c = NS_COEFFICIENTS
    x = update.to(torch.float32, copy=True)
    x /= x.norm() + eps  # the Frobenius norm bounds the largest singular value by 1
    tall = x.size(0) > x.size(1)
    if tall:  # x @ x.T is then the smaller of the two Gram matrices
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b*A + c*A@A
        x = torch.addmm(x, poly, x, beta=a)  # a*X + (b*A + c*A@A) @ X
    return x.T if tall else x


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(matrices, the rest): the trainable weights of conv and fc layers but the last
    such layer (the classifier), and every other trainable parameter."""
    layers = [m for m in model.modules() if isinstance(m, MATRIX_LAYERS)]
    matrices = {id(m.weight) for m in layers[:-1] if m.weight.requires_grad}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return ([p for p in trainable if id(p) in matrices],
            [p for p in trainable if id(p) not in matrices])


class Muon(torch.optim.Optimizer):
    """Muon for the param groups whose `kind` is "muon", SGD (momentum, Nesterov, L2
    weight decay as torch.optim.SGD) or AdamW (as torch.optim.AdamW) for those whose
    kind is "sgd" or "adamw".

    Muon's step for a weight W with gradient G, momentum m and learning rate lr:
    B = m*B + G; U = G + m*B (Nesterov) or B; W *= 1 - lr*weight_decay (decoupled, as
    in Liu et al.); W -= lr * max(1, rows/cols)**0.5 * NS(U), with U viewed as
    rows x cols = out x (in*kh*kw). The scale keeps the root-mean-square of a tall
    matrix's update that of a square one's.
    """

    def __init__(self, groups: Iterable[dict[str, Any]]) -> None:
        defaults = {"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0,
                    "beta2": 0.999, "eps": 1e-8, "kind": "muon"}
        super().__init__(list(groups), defaults)
        for group in self.param_groups:
            if group["kind"] not in ("muon", "sgd", "adamw"):
                raise ValueError(f"unknown param group kind {group['kind']!r}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("Muon takes no closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["kind"] == "adamw":
                self._adamw(group, params)
            else:
                self._momentum(group, params)

    def _momentum(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """Muon's and SGD's step: the same heavy-ball buffer (torch.optim.SGD's, no
        dampening), then the orthogonalised or the plain direction."""
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        muon = group["kind"] == "muon"
        for p in params:
            grad = p.grad
            if decay and not muon:
                grad = grad.add(p, alpha=decay)
            if momentum:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.detach().clone()
                else:
                    state["momentum_buffer"].mul_(momentum).add_(grad)
                buf = state["momentum_buffer"]
                grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
            if not muon:
                p.add_(grad, alpha=-lr)
                continue
            rows = grad.size(0)
            cols = grad.numel() // rows
            direction = orthogonalise(grad.reshape(rows, cols)).view_as(p).to(p.dtype)
            if decay:
                p.mul_(1 - lr * decay)
            p.add_(direction, alpha=-lr * max(1.0, rows / cols) ** 0.5)

    def _adamw(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """torch.optim.AdamW's arithmetic (beta1 is the group's momentum), over the
        group's tensors at once."""
        lr, beta1, beta2 = group["lr"], group["momentum"], group["beta2"]
        grads = [p.grad for p in params]
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
        step = self.state[params[0]]["step"]  # the group's tensors step together
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, (1 - beta2**step) ** 0.5)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denom, -lr / (1 - beta1**step))
