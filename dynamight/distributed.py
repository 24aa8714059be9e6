"""Data-parallel runs across processes with :mod:`torch.distributed`.

A run is distributed when it was started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)
or by ``mpirun`` (OpenMPI's ``OMPI_COMM_WORLD_*`` or PMI's ``PMI_*`` variables, as under RELION's
queue submission), one process per GPU. The backend is NCCL on GPUs and gloo on the CPU.

Conventions of every distributed step:

- every process reads the same inputs and derives the same seeded order of batches; each batch is
  split between the processes (:func:`shard`), so a step with ``P`` processes sees the same
  particles as a step of a single process, and gradients are averaged by
  :class:`~torch.nn.parallel.DistributedDataParallel`;
- only rank 0 writes files (outputs, checkpoints, logs, RELION's exit files); the others wait for
  it where they read what it wrote (:func:`barrier`);
- an abort request is seen by rank 0 and shared with the others at the next progress step
  (:class:`dynamight.runtime.Progress`), so that every process leaves at the same step.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
T = TypeVar("T")

_MPI_VARIABLES = (  # (rank, world size, local rank) of the MPI launchers RELION's queue scripts use
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


@dataclass(frozen=True)
class Launch:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_from_environment(environ: dict[str, str] | None = None) -> Launch:
    """The process layout that ``torchrun`` or ``mpirun`` gave this process (one process: rank 0 of 1)."""
    env = os.environ if environ is None else environ
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])))
    for rank, size, local in _MPI_VARIABLES:
        if int(env.get(size, "1")) > 1:
            return Launch(int(env[rank]), int(env[size]), int(env.get(local, env[rank])))
    return Launch()


def initialise(device: torch.device) -> Launch:
    """Join the process group if this process was launched as one of several (idempotent).

    ``device`` is this process's device (see :func:`dynamight.runtime.resolve_device`): NCCL
    when it is a GPU, gloo otherwise. For ``mpirun`` launches the rendezvous is
    ``MASTER_ADDR:MASTER_PORT`` (default ``127.0.0.1:29500``, i.e. one node).
    """
    launch = launch_from_environment()
    if launch.world == 1 or dist.is_initialized():
        return launch
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.update(RANK=str(launch.rank), WORLD_SIZE=str(launch.world), LOCAL_RANK=str(launch.local_rank))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30),
                            device_id=device if device.type == "cuda" else None)
    log.info("process %d of %d (%s, %s)", launch.rank, launch.world, backend, device)
    return launch


def current() -> Launch:
    """The layout of the joined process group (rank 0 of 1 when there is none)."""
    if not dist.is_initialized():
        return Launch()
    return Launch(dist.get_rank(), dist.get_world_size(), launch_from_environment().local_rank)


def is_main() -> bool:
    """``True`` on the one process that writes files."""
    return current().is_main


def shard(indices: np.ndarray) -> np.ndarray:
    """This process's share of one batch: every ``world``-th particle from its rank on."""
    launch = current()
    return indices[launch.rank::launch.world]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the processes, in place (no-op with one process); returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """``True`` on every process when ``flag`` is true on any."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` run by rank 0 alone, its result (or its exception) given to every process."""
    if not dist.is_initialized():
        return compute()
    holder: list = [None]
    if dist.get_rank() == 0:
        try:
            holder[0] = (True, compute())
        except Exception as exc:  # every process must fail alike, not wait for rank 0 forever
            holder[0] = (False, exc)
    dist.broadcast_object_list(holder, src=0)
    ok, value = holder[0]
    if not ok:
        raise value
    return value


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def finish() -> None:
    """Leave the process group (at the end of a command), all processes together: one that left
    early while rank 0 still wrote the outputs could take the group down under it."""
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
