"""The bench and fidelity stages: latency and memory of each model in a separate process, where the runner says,
and whether a device runtime answers like this host's."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..console import get_console
from ..profiles import DeviceProfile
from ..rundir import RunDir
from ..serde import to_jsonable
from .convert import shipped_file


def runner_threads(runner: str, profile: DeviceProfile) -> int:
    """The profile's threads on a real device (ssh, adb); capped at this machine's cores where the agent runs here
    (local, and qemu-arm64, whose emulated threads are this host's)."""
    if runner.startswith(("ssh://", "adb")):
        return profile.threads
    return min(profile.threads, os.cpu_count() or 1)


@dataclass(frozen=True)
class BenchSettings:
    runner: str
    threads: int
    warmup: int
    runs: int
    bench_all: bool  # device runners: every variant there, not only the file that ships
    device_runtime: str  # local TFLite runs use this runtime's venv (what the device installs), or the converter's

    @classmethod
    def from_options(cls, options, profile: DeviceProfile) -> BenchSettings:
        return cls(options.runner, runner_threads(options.runner, profile), options.bench_warmup, options.bench_runs,
                   options.bench_all and options.runner != "local", options.device_runtime)


def bench(run: RunDir, task, settings: BenchSettings, data, sizing, teacher, conversion):
    """Benchmark each (label, model, test npz) of the task with the device agent and save the suite.

    On a device runner only the file that ships is benchmarked there (all TFLite variants with --bench-all): each
    emulated fp32 variant costs minutes under qemu, and the others answer no deployment question.  The teacher (ONNX;
    devices rarely have onnxruntime) and the other variants run on this host; each result says where it ran.
    """
    from ..bench import BenchSuite, bench_model, describe_host
    from ..bench.device_scoring import device_python

    python = device_python(settings.device_runtime)
    targets = task.bench_targets(run, data, sizing, teacher, conversion)
    shipped = run.path(shipped_file(conversion).path)
    results = []
    for label, path, npz in get_console().progress(targets, len(targets), "bench models"):
        on_device = path.suffix != ".onnx" and (settings.bench_all or path == shipped)
        runner = settings.runner if on_device else "local"
        threads = settings.threads if on_device else min(settings.threads, os.cpu_count() or 1)
        local_tflite = runner == "local" and path.suffix == ".tflite"  # ONNX files need this venv's onnxruntime
        results.append(bench_model(path, threads, settings.warmup, settings.runs, run.path(npz), runner=runner,
                                   python=python if local_tflite else None))
    suite = BenchSuite(labels=tuple(t[0] for t in targets), results=tuple(results), threads=settings.threads, host=describe_host())
    run.write_json("bench/results.json", to_jsonable(suite))
    return suite, [run.path("bench/results.json")]


@dataclass(frozen=True)
class FidelitySettings:
    runner: str
    threads: int

    @classmethod
    def from_options(cls, options, profile: DeviceProfile) -> FidelitySettings:
        return cls(options.runner, runner_threads(options.runner, profile))


def fidelity(run: RunDir, task, settings: FidelitySettings, conversion):
    """Do the device runtime's INT8 answers match the host's, on the test split?"""
    from ..bench import cross_runtime_fidelity

    result = cross_runtime_fidelity(run.path(shipped_file(conversion).path), run.path(task.device_test_npz), settings.runner, settings.threads)
    run.write_json("bench/fidelity.json", to_jsonable(result))
    return result, [run.path("bench/fidelity.json")]

