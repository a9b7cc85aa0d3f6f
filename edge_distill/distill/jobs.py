"""What every rank does with a distributed job: a training job or the sharded teacher-logit cache.

A job is plain JSON (``{"kind", "run_dir", "job"}``) naming files inside the run directory; ``worker`` and
``ddp`` deliver it (a file for ``torchrun -m edge_distill.distill.worker``, or a broadcast from rank 0), and
every rank hands it to ``execute``.  Only rank 0 writes: the checkpoint every epoch, then the best weights and
a result JSON that the parent reads back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..console import get_console
from ..data.spec import DataSpec, Splits
from ..errors import TrainingError
from ..models.students import StudentConfig
from ..rundir import RunDir
from ..serde import from_jsonable, to_jsonable
from . import procgroup
from .losses import KDConfig
from .train import TrainConfig, predict_logits, train


@dataclass(frozen=True)
class ModelRecipe:
    """How every rank rebuilds the same model: an architecture plus a weights (or model) file in the run dir."""

    kind: str  # "teacher" (the built-in CNN), "student", or "teacher_file" (the user's TorchScript / export / pickle)
    spec: DataSpec
    path: str = ""  # state_dict for "teacher"/"student" (train_distributed fills in the initial weights); the model file for "teacher_file"
    student: StudentConfig | None = None
    trust_pickle: bool = False  # the parent already vetted the file; followers only repeat its decision
    teacher_arch: str = "cnn"  # the built-in teacher's architecture
    teacher_input: str = ""  # "teacher_file": its input contract (teacher_input.parse_teacher_input); empty = the build's

    def build(self, run: RunDir) -> nn.Module:
        from ..models.students import build_student
        from ..models.teacher import builtin_teacher, load_teacher_file

        if self.kind == "teacher_file":
            from ..models.teacher_input import parse_teacher_input

            return load_teacher_file(run.path(self.path), self.spec, self.trust_pickle, parse_teacher_input(self.teacher_input))
        model = build_student(self.student, self.spec) if self.kind == "student" else builtin_teacher(self.spec, self.teacher_arch)
        model.load_state_dict(torch.load(run.path(self.path), map_location="cpu", weights_only=True))
        return model


@dataclass(frozen=True)
class TrainJob:
    model: ModelRecipe  # initial weights
    splits: str
    teacher_logits: str | None
    cfg: TrainConfig
    kd: KDConfig
    checkpoint: str
    weights: str  # rank 0 writes the best weights here
    desc: str


@dataclass(frozen=True)
class LogitsJob:
    teacher: ModelRecipe
    splits: str
    out: str  # the cache, e.g. teacher/logits_train.npy


@dataclass(frozen=True)
class LogitsResult:
    rows: int
    rows_per_rank: tuple[int, ...]  # each rank computed only its own shard
    seconds: float


def execute(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one job on this rank (all ranks call it together); rank 0 returns the JSON-able result."""
    world = procgroup.current()
    if world is None:
        raise TrainingError("A distributed job ran outside a process group.", "Start it with torchrun (edge-distill build --nproc N does).")
    root = Path(payload["run_dir"])
    if not root.is_dir():
        raise TrainingError(
            f"Rank {world.rank} cannot see the run directory {root}.",
            "On several machines the run directory must be on shared storage mounted at the same path on each.",
        )
    # Only rank 0 may write (RunDir's constructor probes writability with a file: ranks would race on it).
    run = RunDir(root) if world.is_main else _ReadOnlyRun(root)
    if payload["kind"] == "train":
        return _train(run, from_jsonable(TrainJob, payload["job"]), world)
    if payload["kind"] == "logits":
        return _logits(run, from_jsonable(LogitsJob, payload["job"]), world)
    raise TrainingError(f"Unknown distributed job kind {payload['kind']!r}.", "The job file was not written by this version of edge-distill.")


class _ReadOnlyRun:
    """What a rank other than 0 sees of the run directory: paths to read, confined to the directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, relative: str) -> Path:
        target = (self.root / relative).resolve()
        if self.root not in target.parents:
            raise TrainingError(f"Job path {relative!r} leaves the run directory {self.root}.", "The job file is damaged; rerun the build.")
        return target


def _train(run: RunDir, job: TrainJob, world: procgroup.World) -> dict[str, Any]:
    splits = Splits.load(run.path(job.splits))
    model = job.model.build(run).to(procgroup.device(world))
    logits = np.load(run.path(job.teacher_logits)) if job.teacher_logits else None
    result = train(
        model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, job.cfg, job.kd, logits, run.path(job.checkpoint), job.desc,
        distributed=True,
    )
    if world.is_main:
        with run.atomic_path(job.weights) as tmp:
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    return to_jsonable(result)


def _logits(run: RunDir, job: LogitsJob, world: procgroup.World) -> dict[str, Any]:
    t0 = time.perf_counter()
    x = Splits.load(run.path(job.splits)).x_train
    model = job.teacher.build(run).to(procgroup.device(world))
    lo, hi = procgroup.shard_bounds(len(x), world.rank, world.size)
    # An empty shard still needs the row width for the gather: take it from one sample.
    mine = predict_logits(model, x[lo:hi]) if hi > lo else predict_logits(model, x[:1])[:0]
    get_console().info(f"teacher logits: rank {world.rank} computed rows {lo}..{hi - 1} of {len(x)}")
    full = procgroup.gather_rows(mine, len(x), world)
    if not world.is_main:
        return {}
    with run.atomic_path(job.out) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, full)
    sizes = tuple(b - a for a, b in (procgroup.shard_bounds(len(x), r, world.size) for r in range(world.size)))
    return to_jsonable(LogitsResult(len(full), sizes, round(time.perf_counter() - t0, 3)))
