"""Runs or reuses one stage: the key is the hash of the stage's name, its settings and its inputs' keys."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..console import Console
from ..rundir import RunDir, hash_inputs
from ..serde import from_jsonable, to_jsonable
from ..versions import __version__

T = TypeVar("T")

# What each resumable stage leaves behind while it runs (relative to the run directory).
STAGE_CHECKPOINTS = {
    "teacher": ("teacher/train.ckpt",),
    "size": ("size/proxy",),
    "baseline": ("distill/student_nokd.ckpt",),
    "distill": ("distill/student_kd.ckpt",),
    "pseudo-label": ("distill/student_pseudo.ckpt",),
}


@dataclass(frozen=True)
class StageTime:
    stage: str
    seconds: float  # wall time in this invocation
    reused: bool  # true when the result came from the manifest
    original_seconds: float  # wall time when the stage was computed


@dataclass
class Stages:
    """Drives one build: runs or reuses stages and keeps their timing for the report."""

    run: RunDir
    force: bool
    console: Console
    times: list[StageTime] = field(default_factory=list)

    def __call__(self, name: str, settings: Any, inputs: list[str], cls: type[T], compute: Callable[[], tuple[T, list[Path]]]) -> tuple[T, str]:
        """``compute`` the stage unless a finished one had the same settings and inputs; returns (result, key)."""
        key = hash_inputs(__version__, name, to_jsonable(settings), inputs)
        t0 = time.perf_counter()
        entry = None if self.force else self.run.finished_stage(name, key)
        if entry is not None:
            self.console.stage(name, f"reused (inputs unchanged, computed in {entry['seconds']:.1f} s)")
            result = from_jsonable(cls, entry["result"])
            self.times.append(StageTime(name, round(time.perf_counter() - t0, 3), True, entry["seconds"]))
            return result, key
        self._drop_stale_checkpoints(name, key)
        result, files = compute()
        seconds = time.perf_counter() - t0
        self.run.record_stage(name, key, to_jsonable(result), files, seconds)
        self.times.append(StageTime(name, round(seconds, 3), False, round(seconds, 3)))
        self.console.stage(name, f"done in {seconds:.1f} s")
        return result, key

    def _drop_stale_checkpoints(self, name: str, key: str) -> None:
        """Resume only a computation that began with the same inputs; --force always starts afresh.

        A training checkpoint left by an interrupted run with other settings (another temperature, say)
        must not be resumed under the new ones, or the "redone" stage would silently keep the old model.
        """
        if self.force or self.run.started_key(name) not in (None, key):
            for rel in STAGE_CHECKPOINTS.get(name, ()):
                path = self.run.root / rel
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.run.mark_started(name, key)
