"""Distributed training on ``torch.distributed``: running a job on every rank, and the torchrun launcher.

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
The process group and collectives live in ``procgroup`` (re-exported here); what a rank does with a job
lives in ``jobs``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import TrainingError
# Re-exported: the pipeline and the tests reach the process group through ``ddp``.
from .procgroup import (
    FAULT_ENV, WAIT_HOURS_ENV, World, all_reduce_sum, batch_share, broadcast_object, current, device, gather_rows,
    init_from_env, inject_fault, is_main_process, launched_by_torchrun, planned_world_size, shard_bounds, shutdown,
    sync_buffers, threads_per_rank, wanted,
)

__all__ = [
    "FAULT_ENV", "RELAY", "RELAY_ERROR", "WAIT_HOURS_ENV", "World", "all_reduce_sum", "batch_share", "broadcast_object",
    "build_on_all_ranks", "current", "device", "explain_failure", "follow", "gather_rows", "init_from_env",
    "inject_fault", "is_main_process", "launch_torchrun", "launched_by_torchrun", "planned_world_size", "run_job",
    "shard_bounds", "shutdown", "sync_buffers", "wanted",
]

# Lines a worker's rank 0 prints with this prefix are shown by the parent as console lines;
# everything else a torchrun child prints goes only to the job's log file.
RELAY = "@edge-distill "
RELAY_ERROR = "@edge-distill-error "


# ---- running one job ---------------------------------------------------------------------------


def run_job(payload: dict[str, Any], job_dir: Path, nproc: int, desc: str, hint: str) -> dict[str, Any]:
    """Run one worker job (see ``jobs.execute``) on every rank; returns rank 0's result.

    Inside a torchrun world (the multi-machine form) the job is broadcast to the waiting followers and
    run here as rank 0.  Otherwise torchrun is started for this job alone, on this machine.
    """
    from .jobs import execute  # here, not at the top: jobs imports torch, and the pipeline imports this module early

    world = current()
    if world is not None:
        import torch

        broadcast_object(payload, world)
        # The pipeline gave this process every core; the machine's other ranks need their share now.
        saved = torch.get_num_threads()
        torch.set_num_threads(threads_per_rank(world.local_size))
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
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
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
    from .jobs import execute

    set_console(Console(quiet=True))  # only rank 0 speaks
    while True:
        payload = broadcast_object(None, world)
        if "stop" in payload:
            return payload["stop"]
        execute(payload)
