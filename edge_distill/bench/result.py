"""What one benchmark measured, and where: a frozen, JSON-round-trippable record built from the agent's JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from ..errors import BenchError

FORMATS = ("tflite", "onnx")


@dataclass(frozen=True)
class BenchResult:
    """One model, one runner, one thread count.  Times in ms, memory in MB (MiB), sizes in bytes.

    ``where`` says in words where the numbers were measured (host vs. device, emulated or not); a report
    must print it next to every figure.  RSS fields are ``None`` only where the OS exposes no
    ``/proc/self/status`` (e.g. macOS); ``peak_rss_mb`` then falls back to ``getrusage``.
    """

    model: str
    model_bytes: int
    format: str
    runtime: str
    runtime_version: str
    threads: int
    delegate: str
    # where it ran
    machine: str
    system: str
    release: str
    cpu_model: str
    cpu_count: int
    hostname: str
    python_version: str
    where: str
    runner: str
    # the model's interface (first input/output)
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    output_dtype: str
    # time
    load_ms: float
    first_inference_ms: float
    warmup: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    timed_call: str
    timing_input: str
    # memory (whole process: interpreter + runtime + model)
    rss_baseline_mb: float | None
    rss_after_load_mb: float | None
    peak_rss_mb: float | None
    rss_growth_mb: float | None
    peak_rss_source: str
    # quality on --npz data (None when no data was given)
    accuracy: float | None
    n_eval: int

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> BenchError:
            return BenchError(f"BenchResult.{name} = {getattr(self, name)!r} is invalid; expected {allowed}.",
                              "The device agent and the host library may be out of step; reinstall edge-distill.")

        if self.format not in FORMATS:
            raise bad("format", f"one of {', '.join(FORMATS)}")
        for name in ("threads", "runs"):
            if getattr(self, name) < 1:
                raise bad(name, ">= 1")
        for name in ("warmup", "n_eval", "model_bytes"):
            if getattr(self, name) < 0:
                raise bad(name, ">= 0")
        for name in ("load_ms", "first_inference_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
                     "min_ms", "max_ms"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise bad(name, "a finite number >= 0")
        if not (self.min_ms <= self.p50_ms <= self.p90_ms <= self.p99_ms <= self.max_ms):
            raise bad("p50_ms", "min <= p50 <= p90 <= p99 <= max")
        if self.accuracy is not None and not 0.0 <= self.accuracy <= 1.0:
            raise bad("accuracy", "None or a fraction in [0, 1]")
        if (self.accuracy is None) != (self.n_eval == 0):
            raise bad("n_eval", "> 0 exactly when accuracy is given")

    @classmethod
    def from_agent(cls, data: dict[str, Any], *, runner: str, where: str) -> "BenchResult":
        """Build from the device agent's JSON object (extra keys are ignored, missing keys are an error)."""
        values: dict[str, Any] = {"runner": runner, "where": where}
        missing = []
        for f in fields(cls):
            if f.name in values:
                continue
            if f.name not in data:
                missing.append(f.name)
                continue
            value = data[f.name]
            values[f.name] = tuple(value) if f.name.endswith("_shape") else value
        if missing:
            raise BenchError(f"The device agent's output lacks {', '.join(missing)}.",
                             "The agent on the device is from another edge-distill version; push the current one.")
        return cls(**values)


@dataclass(frozen=True)
class BenchSuite:
    """Several models benchmarked in one build: ``labels[i]`` names ``results[i]``; ``host`` says where
    the build ran (from ``describe_host()``), ``threads`` the thread count all of them used."""

    labels: tuple[str, ...]
    results: tuple[BenchResult, ...]
    threads: int
    host: str

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.results):
            raise BenchError(f"BenchSuite has {len(self.labels)} labels but {len(self.results)} results.")
        if self.threads < 1:
            raise BenchError(f"BenchSuite.threads = {self.threads!r} is invalid; expected >= 1.")
