"""Data-parallel training with PyTorch's own engine (torch.distributed, DDP).

One process per device, started by torchrun (or `cnnzoo train --nproc N`). With a
single process every method here is a no-op, so the training loop has one path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    restarted: bool = False  # torchrun restarted the workers after a failure

    @staticmethod
    def from_environment() -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        if world <= 1:
            return Distributed(restarted=restarted)
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if not torch_dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local_rank)
            torch_dist.init_process_group(backend=backend)
        return Distributed(rank, world, local_rank, restarted)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, device: torch.device) -> torch.device:
        """Each process takes its own GPU; CPUs are shared."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            tensor = tensor.clone()
            torch_dist.all_reduce(tensor)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over the processes (each process's batch is the same size)."""
        return self.all_sum(tensor) / self.world if self.active else tensor

    def sum_int(self, tensor: torch.Tensor) -> int:
        return int(self.all_sum(tensor))

    def agree_stop(self, signum: int) -> int:
        """The signal any process received, so every process stops at the same step."""
        if not self.active:
            return signum
        flag = torch.tensor([signum], dtype=torch.int64, device=self._reduce_device())
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        return int(flag)

    def broadcast_path(self, path: Path) -> Path:
        """Rank 0's choice of path (a timestamped run directory), on every process."""
        if not self.active:
            return path
        holder = [str(path)]
        torch_dist.broadcast_object_list(holder, src=0)
        return Path(holder[0])

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def close(self) -> None:
        if self.active and torch_dist.is_initialized():
            torch_dist.destroy_process_group()

    def _reduce_device(self) -> torch.device:
        if torch_dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")
