"""The torchrun entry point of a distributed job, and the pipeline's calls that start one.

A job is plain JSON (``{"kind", "run_dir", "job"}``) naming files inside the run directory, so the same
payload works as a file handed to ``torchrun -m edge_distill.distill.worker JOB`` and as a message rank 0
broadcasts to its followers; every rank runs it with ``jobs.execute``.  Only rank 0 writes: the checkpoint
every epoch, then the best weights and a result JSON that the parent reads back.

``train_distributed`` and ``cache_teacher_logits`` are what the pipeline calls when ``--nproc`` > 1.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..console import Console, set_console
from ..errors import EdgeDistillError
from ..rundir import RunDir
from ..serde import from_jsonable, to_jsonable
from . import ddp
from .jobs import LogitsJob, LogitsResult, ModelRecipe, TrainJob, execute
from .losses import KDConfig
from .train import TrainConfig, TrainResult


# ---- the pipeline's side ---------------------------------------------------------------------------


def train_distributed(
    run: RunDir, recipe: ModelRecipe, model: nn.Module, splits: str, cfg: TrainConfig, kd: KDConfig,
    teacher_logits: str | None, checkpoint: str, desc: str, nproc: int,
) -> TrainResult:
    """Like ``train`` but on ``nproc`` ranks (or the current torchrun world); ``model`` ends with the best weights."""
    job_dir = f"ddp/{desc}"
    with run.atomic_path(f"{job_dir}/init.pt") as tmp:
        torch.save(model.state_dict(), tmp)  # every rank starts from the parent's seeded initialization
    job = TrainJob(
        model=ModelRecipe(recipe.kind, recipe.spec, f"{job_dir}/init.pt", recipe.student),
        splits=splits, teacher_logits=teacher_logits, cfg=cfg, kd=kd, checkpoint=checkpoint,
        weights=f"{job_dir}/best.pt", desc=desc,
    )
    hint = "Rerun the same command: training resumes from the last finished epoch."
    result = _run(run, "train", job, job_dir, nproc, desc, hint)
    model.load_state_dict(torch.load(run.path(job.weights), map_location="cpu", weights_only=True))
    model.eval()
    return from_jsonable(TrainResult, result)


def cache_teacher_logits(run: RunDir, teacher: ModelRecipe, splits: str, out: str, nproc: int) -> LogitsResult:
    """Teacher logits on the training split, each rank computing one shard, written once by rank 0."""
    hint = "Rerun the same command; finished stages are kept."
    return from_jsonable(LogitsResult, _run(run, "logits", LogitsJob(teacher, splits, out), "ddp/teacher_logits", nproc, "teacher logits", hint))


def _run(run: RunDir, kind: str, job: Any, job_dir: str, nproc: int, desc: str, hint: str) -> dict[str, Any]:
    payload = {"kind": kind, "run_dir": str(run.root), "job": to_jsonable(job)}
    return ddp.run_job(payload, run.path(job_dir), nproc, desc, hint)


# ---- torchrun entry point --------------------------------------------------------------------------


def _is_communication_error(exc: Exception) -> bool:
    """A collective that failed because another rank went away: a consequence, not the cause."""
    import torch.distributed as dist

    if isinstance(exc, (dist.DistBackendError, dist.DistNetworkError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(w in text for w in ("gloo", "NCCL", "Connection closed by peer", "Connection reset"))


class _RelayConsole(Console):
    """Rank 0's console inside a torchrun child: lines go to the parent, which shows and logs them."""

    def info(self, message: str) -> None:
        print(ddp.RELAY + message, flush=True)

    def warn(self, message: str) -> None:
        print(ddp.RELAY + "WARNING: " + message, flush=True)

    def progress(self, items, total=None, desc="", closing_line=True):  # bars would garble the parent's line-based relay
        yield from items


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: torchrun --nproc-per-node N -m edge_distill.distill.worker JOB.json", file=sys.stderr)
        return 2
    import json

    try:
        world = ddp.init_from_env()
    except EdgeDistillError as exc:
        print(f"{ddp.RELAY_ERROR}{exc.message}", flush=True)
        return 1
    set_console(_RelayConsole() if world.is_main else Console(quiet=True))
    try:
        result = execute(json.loads(Path(argv[0]).read_text()))
        if world.is_main:
            job_dir = Path(argv[0]).parent
            RunDir(job_dir).write_json("result.json", result)
    except EdgeDistillError as exc:
        print(f"{ddp.RELAY_ERROR}rank {world.rank}: {exc.message}", flush=True)
        return 1
    except Exception as exc:  # the traceback goes to the job's log; the parent shows the one-line cause
        traceback.print_exc()
        tag = " (peer)" if _is_communication_error(exc) else ""
        print(f"{ddp.RELAY_ERROR}rank {world.rank}{tag}: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
        return 1
    ddp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
