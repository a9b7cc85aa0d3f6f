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
from .memory import RssSampler
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
    # stages/memory.py: the build process's peak resident set while the stage ran, and ru_maxrss (the peak so far)
    # at its end, in MiB; None for a reused stage (it did not run: its peak is in `original_peak_rss_mb`).
    peak_rss_mb: float | None = None
    process_peak_mb: float | None = None
    children_peak_mb: float | None = None
    original_peak_rss_mb: float | None = None


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
            before = entry.get("memory", {}).get("peak_rss_mb")
            self.times.append(StageTime(name, round(time.perf_counter() - t0, 3), True, entry["seconds"], original_peak_rss_mb=before))
            return result, key
        self._drop_stale_checkpoints(name, key)
        with RssSampler() as rss:
            result, files = compute()
        seconds, mem = time.perf_counter() - t0, rss.result
        self.run.record_stage(name, key, to_jsonable(result), files, seconds, memory=to_jsonable(mem))
        self.times.append(StageTime(name, round(seconds, 3), False, round(seconds, 3), mem.peak_rss_mb, mem.process_peak_mb,
                                    mem.children_peak_mb, mem.peak_rss_mb))
        self.console.stage(name, f"done in {seconds:.1f} s, peak RSS {mem.peak_rss_mb:.0f} MiB")
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
