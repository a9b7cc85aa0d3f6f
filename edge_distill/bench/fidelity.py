"""Cross-runtime fidelity: does the device's TFLite runtime give the same answers as the host's?

The same agent scores the same ``.npz`` twice, once through ``runner`` (an aarch64 runtime under
qemu, a board over ssh, a phone over adb) and once locally, both with ``--predictions``; the result is
the share of samples whose top-1 class agrees.  Using the agent on both sides means both quantize the
inputs with identical code, so any disagreement comes from the runtimes (different builds, different
SIMD kernels), not from the harness.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from ..console import get_console
from ..errors import BenchError, ConfigError
from .runners import AgentOptions, make_runner

MIN_AGREEMENT = 0.995  # the bar: aarch64 and host INT8 top-1 agree on ≥ 99.5 % of the test split
MAX_LISTED = 20  # disagreeing sample indices kept in the record


@dataclass(frozen=True)
class FidelityResult:
    model: str  # file name of the model compared
    runner: str  # the device side's runner spec
    where: str  # where the device side ran, in words
    device_runtime: str  # e.g. "ai_edge_litert 2.1.0 on aarch64"
    host_runtime: str
    n: int
    agreement: float  # share of samples with the same top-1 class on both sides
    device_accuracy: float
    host_accuracy: float
    min_agreement: float
    passed: bool
    disagreements: tuple[int, ...]  # first MAX_LISTED sample indices where the two disagree

    def __post_init__(self) -> None:
        if self.n < 1 or not 0.0 <= self.agreement <= 1.0:
            raise BenchError(f"FidelityResult with n={self.n}, agreement={self.agreement!r} is invalid.")


def _predict(runner_spec: str, model: Path, npz: Path, threads: int, timeout_s: float) -> tuple[dict, str]:
    runner = make_runner(runner_spec)
    options = AgentOptions(threads=threads, warmup=0, runs=1, predictions=True)
    agent = importlib.resources.files("edge_distill.export") / "agent.py"
    with importlib.resources.as_file(agent) as agent_path:
        data = runner.run_agent(agent_path, model.resolve(), options, npz.resolve(), timeout_s)
    preds = data.get("predictions")
    if not isinstance(preds, list) or len(preds) != data.get("n_eval"):
        raise BenchError(f"The agent on {runner_spec} returned no predictions for {model.name}.",
                         "The agent there is older than --predictions; push the current edge-distill agent.")
    return data, runner.where(data)


def cross_runtime_fidelity(model: Path, npz: Path, runner: str, threads: int = 1, timeout_s: float = 900,
                           min_agreement: float = MIN_AGREEMENT) -> FidelityResult:
    """Compare top-1 predictions of ``model`` on ``npz`` between ``runner`` and this machine."""
    model, npz = Path(model), Path(npz)
    if runner == "local":
        raise ConfigError("Cross-runtime fidelity compares a device runner with this machine; 'local' is this machine.",
                          "Use --runner qemu-arm64, ssh://user@host or adb.")
    for path, what in ((model, "Model"), (npz, "Test data")):
        if not path.is_file():
            raise BenchError(f"{what} file not found: {path}")
    console = get_console()
    console.stage("fidelity", f"{model.name}: top-1 predictions on {runner} vs. this host, {npz.name}")
    device, where = _predict(runner, model, npz, threads, timeout_s)
    host, _ = _predict("local", model, npz, threads, timeout_s)
    dp, hp = device["predictions"], host["predictions"]
    if len(dp) != len(hp):
        raise BenchError(f"The device scored {len(dp)} samples but the host {len(hp)}.")
    differ = [i for i, (a, b) in enumerate(zip(dp, hp)) if a != b]
    agreement = round(1.0 - len(differ) / len(dp), 6)
    result = FidelityResult(
        model=model.name, runner=runner, where=where,
        device_runtime=f"{device['runtime']} {device['runtime_version']} on {device['machine']}",
        host_runtime=f"{host['runtime']} {host['runtime_version']} on {host['machine']}",
        n=len(dp), agreement=agreement, device_accuracy=round(device["accuracy"], 6),
        host_accuracy=round(host["accuracy"], 6), min_agreement=min_agreement,
        passed=agreement >= min_agreement, disagreements=tuple(differ[:MAX_LISTED]),
    )
    console.stage("fidelity", f"{model.name}: {100 * agreement:.2f}% top-1 agreement ({len(differ)} of {len(dp)} differ), "
                              f"device accuracy {result.device_accuracy:.4f} vs host {result.host_accuracy:.4f} "
                              f"[{'ok' if result.passed else 'BELOW ' + f'{100 * min_agreement:.1f}%'}]")
    return result
