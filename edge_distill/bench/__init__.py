"""Benchmark a .tflite/.onnx model: the device agent runs it in a separate process, somewhere a runner decides.

    result = bench_model(Path("runs/rpi4/student_int8.tflite"), threads=4)
    result.p50_ms, result.peak_rss_mb, result.where

The measurement protocol lives in ``export/agent.py`` (shipped as ``edge_distill.export``) so the host
and every device measure the same way: load (+ allocate) timed once, one first inference, ``warmup``
untimed runs, then ``runs`` timed batch-1 inferences on seeded random input (or the first ``eval_npz``
sample); peak RSS is read before any evaluation data is loaded.
"""

from __future__ import annotations

import importlib.resources
import os
import platform
from pathlib import Path

from ..console import get_console
from ..errors import BenchError, ConfigError
from .result import BenchResult, BenchSuite
from .runners import RUNNERS, AgentOptions, LocalRunner, Runner, make_runner, parse_agent_output
from . import adb, qemu, ssh  # noqa: F401  (registers the adb, qemu-arm64 and ssh runners)
from .device_runtimes import DEFAULT_DEVICE_RUNTIME, DEVICE_RUNTIMES, device_runtime_python, names_device_runtime, setup_device_runtime
from .fidelity import FidelityResult, cross_runtime_fidelity
from .fidelity_matrix import FidelityMatrix, MatrixCell, fidelity_matrix, format_matrix, matrix_markdown

__all__ = ["BenchResult", "BenchSuite", "bench_model", "bench_in_rounds", "runner_names", "describe_host", "RUNNERS", "Runner",
           "LocalRunner", "AgentOptions", "parse_agent_output", "agent_path", "make_runner", "setup_runner",
           "FidelityResult", "cross_runtime_fidelity", "FidelityMatrix", "MatrixCell", "fidelity_matrix", "format_matrix",
           "matrix_markdown", "DEFAULT_DEVICE_RUNTIME", "setup_device_runtime", "device_runtime_python"]


def runner_names() -> list[str]:
    return RUNNERS.names()


def setup_runner(name: str, **kwargs):
    """Prepare a runner that needs a one-time setup: ``qemu-arm64`` (the arm64 root, see qemu.py) or a device
    runtime such as ``litert==2.3.0`` (its venv, see device_runtimes.py: ``root`` is the venv cache, ``force``
    rebuilds, the qemu-only ``suite``/``mirror`` are ignored)."""
    if names_device_runtime(name):
        return setup_device_runtime(name, kwargs.get("root"), progress=kwargs.get("progress"), force=kwargs.get("force", False))
    from ..convert.peer_litert_torch import names_peer, setup_peer

    if names_peer(name):  # --peer litert-torch's venv: set up ahead of a build, like a device runtime
        return setup_peer(kwargs.get("root"), progress=kwargs.get("progress"), force=kwargs.get("force", False), spec=name)
    if name not in qemu.SETUPS:
        raise ConfigError(f"Runner {name!r} has no setup step.",
                          f"Runners with one: {', '.join(sorted(qemu.SETUPS))}, and the device runtimes "
                          f"({', '.join(DEVICE_RUNTIMES)}); ssh and adb need only a reachable device.")
    return qemu.SETUPS[name](**kwargs)


def describe_host() -> str:
    """This machine in one line, e.g. ``x86_64 Linux 6.1, AMD EPYC, 2 CPUs, Python 3.11.7``."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    cpu = value.strip()
                    break
    except OSError:
        pass
    return (f"{platform.machine()} {platform.system()} {platform.release()}, {cpu}, "
            f"{os.cpu_count() or 1} CPUs, Python {platform.python_version()}")


def agent_path():
    """The device agent script shipped in the wheel (a Traversable; use with ``importlib.resources.as_file``)."""
    return importlib.resources.files("edge_distill.export") / "agent.py"


def bench_in_rounds(paths: list[Path], threads: int, repeats: int, warmup: int = 10, runs: int = 200) -> list[list[BenchResult]]:
    """Every model timed ``repeats`` times, in rounds: each round times each model once, in its own agent process.

    Returns one list of results per path, in round order.  Measured on the 2-vCPU build VM: the same model's
    p50 moves by 1.2-1.6x from one process to the next, even with 3000 runs each, and slow spells last longer
    than one model's measurement.  Rounds spread each model's samples over the whole session, so a slow spell
    costs many models one sample each (which a median over rounds discards) instead of costing one model all
    of them — and models compared with each other are measured minutes, not hours, apart.
    """
    _check_int("repeats", repeats, 1)
    results: list[list[BenchResult]] = [[] for _ in paths]
    console = get_console()
    for round_ in range(repeats):
        console.stage("timing", f"round {round_ + 1}/{repeats}: {len(paths)} models, {runs} runs each")
        for i, path in enumerate(paths):
            results[i].append(bench_model(path, threads, warmup=warmup, runs=runs))
    return results


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"bench {name} = {value!r} is invalid; expected an integer >= {minimum}.")
    return value


def bench_model(model_path: Path, threads: int, warmup: int = 20, runs: int = 200,
                eval_npz: Path | None = None, runner: str = "local", timeout_s: float = 600,
                eval_limit: int = 0, xnnpack: bool = True, kernels: str = "xnnpack", python: Path | None = None) -> BenchResult:
    """Benchmark one model with the device agent via ``runner``; with ``eval_npz`` also its accuracy.

    ``eval_npz`` holds ``x`` (float32, already in the model's input layout and normalized; int8/uint8
    inputs are quantized by the agent) and ``y`` (integer labels).  ``eval_limit`` caps how many of its
    samples are scored (0 = all).  ``kernels`` picks the TFLite kernels: ``xnnpack`` (the runtime's default
    delegate), ``builtin`` (its optimized kernels without it; ``xnnpack=False`` is the old spelling) or ``reference``
    (its reference kernels).  ``python``: a local run uses that interpreter (a device runtime's venv).  Raises ``BenchError`` with the agent's own message on any failure.
    """
    model_path = Path(model_path)
    _check_int("threads", threads, 1)
    _check_int("warmup", warmup, 0)
    _check_int("runs", runs, 1)
    _check_int("eval_limit", eval_limit, 0)
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ConfigError(f"bench timeout_s = {timeout_s!r} is invalid; expected a number of seconds > 0.")
    if not model_path.is_file():
        raise BenchError(f"Model file not found: {model_path}", "Pass the path of a .tflite or .onnx file.")
    if eval_npz is not None:
        eval_npz = Path(eval_npz)
        if not eval_npz.is_file():
            raise BenchError(f"Evaluation data not found: {eval_npz}",
                             "Pass a .npz with x (model input layout) and y (integer labels).")

    # Unknown names → ConfigError listing the known runners; a runner that cannot work here → BenchError.
    impl = make_runner(runner)
    if python is not None and runner == "local":  # a device runtime's venv (device_runtimes.py) instead of this Python
        impl = LocalRunner(python)
    console = get_console()
    options = AgentOptions(threads=threads, warmup=warmup, runs=runs, eval_limit=eval_limit, xnnpack=xnnpack, kernels=kernels)
    kernels = options.effective_kernels
    what = f"{runs} runs, {threads} thread{'s' if threads != 1 else ''}, runner {runner}" + \
        ("" if kernels == "xnnpack" else f", {kernels} kernels (XNNPACK off)")
    # With its folder: the suites convert teacher and student into subfolders whose files share names.
    label = f"{model_path.parent.name}/{model_path.name}" if model_path.parent.name else model_path.name
    console.stage("bench", f"{label}: {what}" + (f", scoring {eval_npz.name}" if eval_npz else ""))
    with importlib.resources.as_file(agent_path()) as agent:
        data = impl.run_agent(agent, model_path.resolve(), options, eval_npz.resolve() if eval_npz else None,
                              timeout_s)
    result = BenchResult.from_agent(data, runner=runner, where=impl.where(data))
    acc = f", accuracy {result.accuracy:.4f} on {result.n_eval}" if result.accuracy is not None else ""
    peak = f"{result.peak_rss_mb:.1f} MB" if result.peak_rss_mb is not None else "n/a"
    console.stage("bench", f"{label}: p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms, "
                           f"load {result.load_ms:.1f} ms, peak RSS {peak}{acc} [{result.where}]")
    return result
