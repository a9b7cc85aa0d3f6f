"""The process group of a distributed build: where this process stands, joining and leaving, and the
collectives training uses.  Imports torch lazily: the pipeline asks cheap questions (``wanted``,
``planned_world_size``) before any training starts.

``ddp`` runs whole jobs on top of this; ``train`` uses only this, so it never depends on the job machinery.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..errors import TrainingError

# Test-only fault injection, "RANK:EPOCH": that rank SIGKILLs itself at the start of that (0-based)
# epoch, after every rank finished the previous one, so the tests can check crash handling and resume.
FAULT_ENV = "EDGE_DISTILL_FAULT"
# Followers wait for rank 0 between jobs (data, sizing, conversion, benchmarks run on rank 0 alone),
# so the collective timeout must cover whole stages, not just one all-reduce.
WAIT_HOURS_ENV = "EDGE_DISTILL_DDP_WAIT_HOURS"


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int
    backend: str  # "gloo" (CPU) or "nccl" (GPUs)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ---- where are we ------------------------------------------------------------------------------


def launched_by_torchrun() -> bool:
    """True in a process torchrun started with more than one rank in the world."""
    return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0, or not distributed at all: the process that prints results and writes files."""
    return int(os.environ.get("RANK", "0")) == 0 if launched_by_torchrun() else True


def current() -> World | None:
    """The active world when a process group with more than one rank is initialized, else None."""
    if "torch" not in sys.modules:  # nothing can be initialized before torch is imported
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        backend=str(dist.get_backend()),
    )


def planned_world_size(nproc: int) -> int:
    """How many ranks will train: torchrun's world when launched by it, else ``--nproc``."""
    return int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else nproc


def wanted(nproc: int) -> bool:
    """Whether a training job should run distributed (through ``run_job``) rather than in-process."""
    return current() is not None or (nproc > 1 and not launched_by_torchrun())


# ---- process group -----------------------------------------------------------------------------


def init_from_env() -> World:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    import torch
    import torch.distributed as dist

    # NCCL only where every local rank can have its own GPU; otherwise gloo on CPU.
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    use_nccl = torch.cuda.is_available() and dist.is_nccl_available() and torch.cuda.device_count() >= local_size
    backend = "nccl" if use_nccl else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_nccl:
        torch.cuda.set_device(local_rank)
    hours = float(os.environ.get(WAIT_HOURS_ENV, "12"))
    dist.init_process_group(backend=backend, timeout=timedelta(hours=hours))
    torch.set_num_threads(threads_per_rank(local_size))
    world = current()
    if world is None:  # WORLD_SIZE=1 under torchrun: nothing to coordinate
        dist.destroy_process_group()
        raise TrainingError("torchrun started a single rank; distributed training needs at least 2.", "Use --nproc-per-node ≥ 2 (or no torchrun at all).")
    return world


def threads_per_rank(local_size: int) -> int:
    # Ranks on one machine share its cores; oversubscribed (spinning) OpenMP threads slow every rank down.
    return max(1, (os.cpu_count() or 1) // local_size)


def shutdown() -> None:
    """Leave the process group together: no rank tears gloo down while another still works (rank 0 writes the
    job's result after training).  Twice on one Intel Xeon VM (torch 2.13, gloo), never on the earlier EPYC ones, a
    rank that left without this barrier aborted at the end ("terminate called without an active exception") after
    its work was done: a 2-rank CLI build and tests/test_ddp.py's spawned ranks.  The race did not recur in 9 runs
    of that test alone, so the barrier is the likely fix, not a proven one."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device(world: World | None):
    import torch

    if world is not None and world.backend == "nccl":
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


# ---- sharding and collectives ------------------------------------------------------------------


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """Contiguous rows [start, stop) of ``n`` for ``rank``; sizes differ by at most one."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def batch_share(batch, rank: int, size: int):
    """This rank's part of one global batch: every ``size``-th sample, so the shares differ by at most one.

    All ranks draw the same seeded permutation, so the global batches — and the optimizer steps and
    learning-rate schedule — are the same as in single-process training; only who computes what differs.
    """
    return batch[rank::size]


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device(world))
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def broadcast_object(obj: Any, world: World) -> Any:
    """``obj`` from rank 0 on every rank (pickled inside the group; only our own processes send)."""
    import torch.distributed as dist

    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0, device=device(world) if world.backend == "nccl" else None)
    return box[0]


def sync_buffers(model, world: World) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them at the start of each forward, so after the last step of an epoch each rank holds
    statistics updated by its own share of the batch; evaluation and checkpoints must see one set.
    """
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def gather_rows(local, n: int, world: World):
    """Concatenate every rank's ``shard_bounds`` rows (a float32 array) on rank 0; None elsewhere."""
    import numpy as np
    import torch
    import torch.distributed as dist

    dev = device(world)
    sizes = [hi - lo for lo, hi in (shard_bounds(n, r, world.size) for r in range(world.size))]
    width = local.shape[1:]
    padded = torch.zeros((max(sizes), *width), dtype=torch.float32, device=dev)
    padded[: len(local)] = torch.from_numpy(local).to(dev)
    bucket = [torch.empty_like(padded) for _ in range(world.size)] if world.is_main else None
    dist.gather(padded, bucket, dst=0)
    if not world.is_main:
        return None
    return np.concatenate([b[:s].cpu().numpy() for b, s in zip(bucket, sizes)])


def inject_fault(epoch: int, world: World | None) -> None:
    """The test-only crash hook (see FAULT_ENV); does nothing unless that variable is set."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or world is None:
        return
    rank, at = (int(v) for v in spec.split(":"))
    if epoch != at:
        return
    import torch.distributed as dist

    dist.barrier()  # rank 0 has saved the previous epoch's checkpoint: the crash point is deterministic
    if world.rank == rank:
        os.kill(os.getpid(), signal.SIGKILL)
