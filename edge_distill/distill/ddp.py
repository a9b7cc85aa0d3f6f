"""Distributed training on ``torch.distributed``: process groups, rank helpers, and the torchrun launcher.

Two ways a build becomes distributed, both on torch's own machinery (torchrun + DistributedDataParallel):

- ``edge-distill build --nproc N`` on one machine: the build runs in this process as usual; each training
  job (teacher, baseline, KD student) and the teacher-logit cache is handed to
  ``torchrun --standalone --nproc-per-node N -m edge_distill.distill.worker JOB`` as a child process.
  A rank that dies makes torchrun exit non-zero, which becomes one ``TrainingError`` naming the rank.
- ``torchrun ... -m edge_distill build ...`` on one or several machines: every rank enters ``build``;
  rank 0 runs the pipeline and, for each job, broadcasts it to the other ranks, which wait in
  ``follow`` and run it with rank 0.  This is the multi-machine form; the run directory must then be
  on storage every machine sees at the same path.

Only rank 0 writes files.  This module imports torch lazily: the pipeline asks it cheap questions first.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from ..errors import TrainingError

# Lines a worker's rank 0 prints with this prefix are shown by the parent as console lines;
# everything else a torchrun child prints goes only to the job's log file.
RELAY = "@edge-distill "
RELAY_ERROR = "@edge-distill-error "
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
    torch.set_num_threads(_threads_per_rank(local_size))
    world = current()
    if world is None:  # WORLD_SIZE=1 under torchrun: nothing to coordinate
        dist.destroy_process_group()
        raise TrainingError("torchrun started a single rank; distributed training needs at least 2.", "Use --nproc-per-node ≥ 2 (or no torchrun at all).")
    return world


def _threads_per_rank(local_size: int) -> int:
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


# ---- running one job ---------------------------------------------------------------------------


def run_job(payload: dict[str, Any], job_dir: Path, nproc: int, desc: str, hint: str) -> dict[str, Any]:
    """Run one worker job (see ``worker.execute``) on every rank; returns rank 0's result.

    Inside a torchrun world (the multi-machine form) the job is broadcast to the waiting followers and
    run here as rank 0.  Otherwise torchrun is started for this job alone, on this machine.
    """
    from .worker import execute

    world = current()
    if world is not None:
        import torch

        broadcast_object(payload, world)
        # The pipeline gave this process every core; the machine's other ranks need their share now.
        saved = torch.get_num_threads()
        torch.set_num_threads(_threads_per_rank(world.local_size))
        try:
            return execute(payload)
        finally:
            torch.set_num_threads(saved)
    import json

    job_dir.mkdir(parents=True, exist_ok=True)
    job_file, result_file = job_dir / "job.json", job_dir / "result.json"
    tmp = job_file.with_name(job_file.name + ".part")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, job_file)
    result_file.unlink(missing_ok=True)  # a stale result must never pass for this run's
    launch_torchrun(["-m", "edge_distill.distill.worker", str(job_file)], nproc, job_dir / "torchrun.log", desc, hint)
    if not result_file.exists():
        raise TrainingError(f"Distributed job '{desc}' finished without writing {result_file}.", f"See {job_dir / 'torchrun.log'}.")
    return json.loads(result_file.read_text())


def launch_torchrun(target: list[str], nproc: int, log_path: Path, desc: str, hint: str) -> None:
    """``torchrun --standalone --nproc-per-node nproc <target>``; a failed rank raises ``TrainingError``."""
    from ..console import get_console

    console = get_console()
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "--max-restarts=0",  # a crash fails the build; rerunning resumes from the checkpoint instead
        "--monitor-interval=0.5", *target,
    ]
    env = dict(os.environ)
    # Each rank picks its own thread count (init_from_env); torchrun would otherwise force 1 with a warning.
    env.setdefault("OMP_NUM_THREADS", str(_threads_per_rank(nproc)))
    env["PYTHONUNBUFFERED"] = "1"
    errors: list[str] = []
    console.info(f"{desc}: starting {nproc} ranks with torchrun (gloo on CPU, NCCL on GPUs); log: {log_path}")
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.startswith(RELAY):
                    console.info(line[len(RELAY):].rstrip("\n"))
                elif line.startswith(RELAY_ERROR):
                    errors.append(line[len(RELAY_ERROR):].strip())
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted while waiting: take the ranks down with us
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if code != 0:
        raise TrainingError(explain_failure(log_path.read_text(), errors, code, desc, nproc), f"{hint} Every rank's output is in {log_path}.")


def explain_failure(log: str, errors: list[str], code: int, desc: str, nproc: int) -> str:
    """One sentence from torchrun's failure summary and the ranks' own last words: which rank failed, and how.

    When one rank dies the others fail too, with secondary errors (gloo: "connection closed by peer").
    torchrun's "root cause" is only the earliest failure to the second, so blame goes, in order, to a
    rank killed by a signal, a rank's own error, torchrun's root cause, and last a communication error.
    """
    head = f"Distributed training '{desc}' failed"
    own: dict[int, str] = {}
    peer: dict[int, str] = {}
    for line in errors:
        m = re.match(r"rank (\d+)( \(peer\))?: (.*)", line)
        if m:
            (peer if m.group(2) else own).setdefault(int(m.group(1)), m.group(3))
    summary = log.split("FAILED", 1)[1] if "FAILED" in log else ""
    failures = [(int(r), int(c)) for r, c in re.findall(r"rank\s*:\s*(\d+)[^\n]*\n.*?exitcode\s*:\s*(-?\d+)", summary, re.S)]
    root = failures[-1] if "Root Cause" in summary and failures else None  # torchrun prints it last
    # SIGTERM is how torchrun stops the survivors, so a rank killed by another signal is the one to blame.
    killed = [(r, c) for r, c in failures if c < 0 and -c != signal.SIGTERM]
    if killed:
        rank, c = root if root in killed else min(killed)
        return f"{head}: rank {rank} of {nproc} was killed by signal {-c}{_signal_name(-c)}; torchrun stopped the other ranks."
    if own:
        rank, what = min(own.items())
        return f"{head}: rank {rank} of {nproc}: {what}"
    if root is not None and root[0] not in peer:
        how = f"was killed by signal {-root[1]}{_signal_name(-root[1])}" if root[1] < 0 else f"exited with code {root[1]}"
        return f"{head}: rank {root[0]} of {nproc} {how}."
    if peer:
        rank, what = min(peer.items())
        return f"{head}: rank {rank} of {nproc} lost contact with another rank: {what}"
    if errors:  # a rank that failed before it knew its rank
        return f"{head} on {nproc} ranks: {errors[0]}"
    return f"{head}: torchrun exited with code {code}."


def _signal_name(number: int) -> str:
    try:
        return f" ({signal.Signals(number).name})"
    except ValueError:
        return ""


# ---- the multi-machine form: every rank runs `build` -------------------------------------------


def build_on_all_ranks(build: Callable[[Any], dict[str, Any]], options: Any) -> dict[str, Any]:
    """Under ``torchrun -m edge_distill build``: rank 0 builds, the others serve its training jobs.

    Every rank returns rank 0's report.  When rank 0 fails it exits without releasing the followers;
    torchrun notices the failed rank and stops them, so nothing hangs.
    """
    world = init_from_env()
    if world.is_main:
        report = build(options)
        broadcast_object({"stop": report}, world)
    else:
        report = follow(world)
    shutdown()
    return report


def follow(world: World) -> dict[str, Any]:
    """A follower rank: run every job rank 0 broadcasts until it says stop."""
    from ..console import Console, set_console
    from .worker import execute

    set_console(Console(quiet=True))  # only rank 0 speaks
    while True:
        payload = broadcast_object(None, world)
        if "stop" in payload:
            return payload["stop"]
        execute(payload)
