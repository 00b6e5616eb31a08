"""One optimisation step, and the one place the training loss is computed."""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.data.mix import Mix
from cnnzoo.model.build import Network
from cnnzoo.model.devices import autocast
from cnnzoo.training.losses import LossFn


class TrainStep:
    """One optimisation step: forward, the loss, backward, the update. The trainer and
    the zoo's step timer both use it, so they time and train the same arithmetic."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                 device: torch.device, precision: str, network: Network | None = None) -> None:
        self.model = model
        # The unwrapped network (`model` may be DDP or compiled): its auxiliary loss.
        self.network = network if network is not None else model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.device = device
        self.precision = precision
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def loss(self, x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
             mix: Mix | None = None) -> torch.Tensor:
        """The training loss of a batch: the one place it is computed. A mixed batch
        (mixup, CutMix) mixes the losses of both images' labels by the same share. Layers
        that learn from the labels too (a capsule decoder) add their own term."""
        scores = logits.float()
        loss = self.loss_fn(scores, labels)
        if mix is not None:
            loss = mix.lam * loss + (1.0 - mix.lam) * self.loss_fn(scores, labels[mix.partner])
        return loss + self.network.auxiliary_loss(x)

    def forward_backward(self, x: torch.Tensor, labels: torch.Tensor,
                         mix: Mix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradients of the batch's loss; (loss, logits). With fp16 the scaled
        update is made here too (GradScaler skips it on overflow). With `mix`, `x` is
        the mixed batch."""
        with autocast(self.device, self.precision):
            logits = self.model(x, labels)
            loss = self.loss(x, logits, labels, mix)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
        return loss, logits

    def update(self) -> None:
        """The optimizer step, after the loss was read (a NaN stops before it)."""
        if self.scaler is None:
            self.optimizer.step()

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss, _ = self.forward_backward(x, labels)
        self.update()
        return loss
