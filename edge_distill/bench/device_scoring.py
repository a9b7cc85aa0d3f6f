"""A .tflite file's logits on the device's runtime: the agent run in that runtime's venv, on this machine.

The convert stage's quality gate and the ledger judge INT8 files with this instead of the converter's LiteRT
(the version onnx2tf pins), so a runtime defect that a device does not have -- or a fix a device does have --
decides what ships.  It has ``convert.run_tflite``'s signature: NCHW float32 samples in, float32 logits out.
"""

from __future__ import annotations

import importlib.resources
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BenchError
from .device_runtimes import DeviceRuntime, device_runtime_python, parse_device_runtime, setup_device_runtime
from .runners import AgentOptions, LocalRunner

CONVERTER = "converter"  # --device-runtime converter: judge with this process's LiteRT, as before device runtimes existed
# The ledger's latency for a file judged here: the p50 of this many warm invokes in the agent.
TIMED_RUNS, WARMUP_RUNS = 200, 20


class DeviceRuntimeLogits:
    """``run_tflite`` on a device runtime's venv (set up on first use: ``setup_device_runtime`` is cached)."""

    def __init__(self, runtime: DeviceRuntime, python: Path, timeout_s: float = 900) -> None:
        self.runtime, self.python, self.timeout_s = runtime, Path(python), timeout_s

    def describe(self) -> str:
        return f"{self.runtime.label} (device runtime, its own venv)"

    def __call__(self, path: Path, x_nchw: np.ndarray, threads: int = 2, latencies: list[float] | None = None,
                 xnnpack: bool = True) -> np.ndarray:
        from ..convert.runtimes import nchw_to_model_layout, tflite_interpreter

        shape = tuple(int(d) for d in tflite_interpreter(path, threads=1).get_input_details()[0]["shape"])
        x = nchw_to_model_layout(np.asarray(x_nchw), shape)
        with tempfile.TemporaryDirectory(prefix="edge-distill-device-") as tmp:
            npz, out = Path(tmp) / "x.npz", Path(tmp) / "logits.npy"
            np.savez(npz, x=x, y=np.zeros(len(x), np.int64))  # labels unused: the caller scores the logits
            options = AgentOptions(threads=threads, warmup=WARMUP_RUNS if latencies is not None else 0,
                                   runs=TIMED_RUNS if latencies is not None else 1, predictions=True,
                                   kernels="xnnpack" if xnnpack else "builtin", logits=str(out))
            agent = importlib.resources.files("edge_distill.export") / "agent.py"
            with importlib.resources.as_file(agent) as agent_path:
                facts = LocalRunner(self.python).run_agent(agent_path, Path(path).resolve(), options, npz, self.timeout_s)
            if not out.is_file():
                raise BenchError(f"The agent on {self.runtime.spec} wrote no logits for {Path(path).name}.",
                                 "Rerun `edge-distill runner setup " + self.runtime.spec + " --force` to rebuild its venv.")
            logits = np.load(out)
        if latencies is not None:  # seconds, as run_tflite appends them (the ledger turns them into ms)
            latencies.append(float(facts["p50_ms"]) / 1000.0)
        return logits


def device_python(spec: str, progress=None) -> Path | None:
    """The interpreter of ``--device-runtime spec``'s venv (set up once, then quiet); None for the converter's LiteRT."""
    if spec == CONVERTER:
        return None
    runtime = parse_device_runtime(spec)
    return device_runtime_python(runtime) or setup_device_runtime(runtime.spec, progress=progress)


def device_logits(spec: str, progress=None):
    """(``run_tflite``-like callable, its description, a short name for tables) for ``--device-runtime spec``;
    ``converter`` is this process's LiteRT."""
    from importlib.metadata import version

    from ..convert.runtimes import converter_runtime, run_tflite

    if spec == CONVERTER:
        return run_tflite, converter_runtime(), f"litert {version('ai-edge-litert')}"
    runtime = parse_device_runtime(spec)
    scorer = DeviceRuntimeLogits(runtime, device_python(spec, progress))
    return scorer, scorer.describe(), f"{runtime.module.replace('ai_edge_', '')} {runtime.version}"
