"""Data-parallel training with PyTorch's own engine (torch.distributed, DDP, torchrun).

One process per device, started by torchrun (or by `cnnzoo train --nproc N`, which
starts torchrun). torchrun says who a process is in WORLD_SIZE, RANK and LOCAL_RANK;
`Distributed.from_environment` reads them and `connect` joins the process group:
nccl between GPUs, gloo between CPU processes. With a single process every method
here is a no-op, so the training loop has one path.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as torch_dist
from torch import nn

from cnnzoo.errors import CnnzooError, ConfigError

if TYPE_CHECKING:
    from cnnzoo.config.experiment import ExperimentConfig

JOB_KEY = "torchrun_job"  # in run.json: the torchrun job that began the run


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    attempt: int = 0  # how many times torchrun restarted the workers after a failure
    job: str | None = None  # torchrun's run id (--rdzv-id), the same on every node and restart

    @staticmethod
    def from_environment() -> Distributed:
        """Who this process is, from torchrun's variables; joins nothing yet."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        job = os.environ.get("TORCHELASTIC_RUN_ID")
        if world <= 1:
            return Distributed(attempt=attempt, job=job)
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return Distributed(rank, world, local_rank, attempt, job)

    def continues(self, run_dir: Path) -> bool:
        """Whether torchrun restarted this process into the unfinished run in `run_dir`,
        which the same torchrun job began (its run.json records the job's id)."""
        from cnnzoo.runs import rundir

        if self.job is None or not (run_dir / rundir.RUN).is_file():
            return False
        if (run_dir / rundir.RESULTS).exists():
            return False
        try:
            recorded = json.loads((run_dir / rundir.RUN).read_text()).get(JOB_KEY)
        except (OSError, ValueError, AttributeError):
            return False
        if recorded != self.job:
            return False
        # torchrun's default run id is "none" for every job; then only the restart count
        # tells a restart from a new job.
        return self.job != "none" or self.attempt > 0

    def connect(self, device: torch.device) -> None:
        """Join the process group with the backend for `device`: nccl for CUDA, gloo
        for the CPU."""
        if not self.active or torch_dist.is_initialized():
            return
        backend = backend_for(device)
        if backend == "nccl":
            if self.local_rank >= torch.cuda.device_count():
                raise CnnzooError(
                    f"process {self.rank} (local rank {self.local_rank}) has no GPU of its own: "
                    f"this machine has {torch.cuda.device_count()}; start at most that many "
                    "processes per node (--nproc / --nproc_per_node)"
                )
            torch.cuda.set_device(self.local_rank)
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and self.attempt > 0:
            # torchrun keeps its key-value store across restarts, where the new workers
            # would find the dead workers' addresses and fail to connect: each attempt
            # gets a namespace of its own.
            store, rank, world = next(torch_dist.rendezvous("env://"))
            store = torch_dist.PrefixStore(f"cnnzoo/attempt-{self.attempt}", store)
            torch_dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                          device_id=device if backend == "nccl" else None)
        else:
            torch_dist.init_process_group(backend, device_id=device if backend == "nccl" else None)

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

    def check_sync_batchnorm(self, config: ExperimentConfig, device: torch.device) -> None:
        """SyncBatchNorm computes batch statistics over the global batch; PyTorch
        implements it for GPUs only (on the CPU its forward raises)."""
        if not (config.train.sync_batchnorm and self.active and device.type != "cuda"):
            return
        error = ConfigError(
            f"sync_batchnorm needs GPUs: PyTorch's SyncBatchNorm does not run on "
            f"{device.type} (gloo). Received: sync_batchnorm=true with {self.world} "
            f"{device.type} processes",
            where="train", path=("train", "sync_batchnorm"),
            fix="set train.sync_batchnorm: false (each process then normalises over its "
                "own share of the batch) or train on GPUs",
        )
        raise config.origin.locate(error) if config.origin else error

    def prepare(self, model: nn.Module, sync_batchnorm: bool) -> nn.Module:
        """The model with its batchnorm layers synchronised across processes, if asked."""
        if sync_batchnorm and self.active:
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """The first process of each machine goes first (it may download a dataset into
        a shared folder), the others follow once it is done."""
        if self.active and self.local_rank != 0:
            self.barrier()
        yield
        if self.active and self.local_rank == 0:
            self.barrier()

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
            # Leave together: a process that tears down its process group while rank 0
            # is still writing the results can abort inside gloo.
            torch_dist.barrier()
            torch_dist.destroy_process_group()

    def _reduce_device(self) -> torch.device:
        if torch_dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_process(nproc: int) -> int:
    """CPU threads for each of `nproc` processes on this machine, so that together they
    use every core without oversubscribing them."""
    return max(1, available_cores() // nproc)


def backend_for(device: torch.device) -> str:
    """torch.distributed's backend for processes training on `device`."""
    if device.type == "cuda":
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    raise CnnzooError(
        f"training in several processes needs CUDA GPUs (nccl) or the CPU (gloo), not "
        f"{device.type}; use --device cpu or a single process"
    )


def check_nproc(nproc: int, device: torch.device) -> None:
    """One GPU per process: refuse more processes than this machine has GPUs."""
    if backend_for(device) == "nccl" and nproc > torch.cuda.device_count():
        raise CnnzooError(
            f"--nproc {nproc} needs a GPU per process but this machine has "
            f"{torch.cuda.device_count()}; use --nproc {torch.cuda.device_count()}, or "
            "--device cpu for CPU processes"
        )


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """torchrun on this machine alone (`--standalone`), running `cnnzoo ARGS` `nproc` times."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "cnnzoo", *args]


def launch(nproc: int, args: list[str]) -> int:
    """Run `cnnzoo ARGS` in `nproc` processes under torchrun and return its exit code.

    torchrun runs in a session of its own, so a Ctrl-C at the terminal reaches it once,
    through this process, and not a second time from the terminal; torchrun passes it on
    to the workers, which stop together and write a checkpoint.
    """
    if nproc < 1:
        raise CnnzooError(f"--nproc must be at least 1. Received: --nproc {nproc}")
    env = dict(os.environ)
    # torchrun would set 1 thread per process; use the cores this machine has.
    env.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    child = subprocess.Popen(torchrun_command(nproc, args), env=env, start_new_session=True)

    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code and received:
        # torchrun ends with an error of its own when signalled; say which signal it was,
        # as a single process would (130 for Ctrl-C, 143 for SIGTERM).
        return 128 + received[0]
    return 128 - code if code < 0 else code
