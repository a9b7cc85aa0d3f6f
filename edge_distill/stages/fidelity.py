"""The fidelity-matrix stage: the shipped INT8 file and the fp32 file scored on the test split under every runtime
this machine has set up × every kernel mode (``bench/fidelity_matrix.py``), so each report says under which
runtime and kernels a device gets the ledger's accuracy.

Nothing is installed here: a device runtime counts once its venv exists (``edge-distill runner setup``, or a build
whose --device-runtime it is).
Not the "fidelity" stage of ``bench.py``, which compares a device runner's answers with this host's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bench.device_runtimes import DEFAULT_DEVICE_RUNTIME
from ..bench.fidelity_matrix import FidelityMatrix
from ..console import get_console
from ..rundir import RunDir
from ..serde import to_jsonable
from .convert import shipped_file

MATRIX_RUNS = 10  # timed runs per cell: its p50 is a hint, the bench stage measures latency
# The matrix compares answers, not speed: one thread keeps its agent processes from contending with the host's
# other work (the demo's 18 cells on the 2-vCPU build VM: 7 s with 1 thread, 17 s with 2).
MATRIX_THREADS = 1
# 18 cells each score the samples one invoke at a time, the reference kernels slowly: on the 16,413 WordNet test
# glosses that took 8 min on the build VM.  A larger test split is sampled (seeded, uniformly: its first rows can be
# one kind of sample -- the first 4,000 WordNet glosses scored 4 points above the whole split); the sample's file name
# says so, e.g. bench/fidelity_sample_4000_of_16413.npz.  Most image test splits are scored whole.
MATRIX_MAX_SAMPLES = 4000


@dataclass(frozen=True)
class FidelityMatrixSettings:
    # Resolved when the build runs, with what is not set up kept apart: setting a runtime up later changes the key,
    # so only this stage is redone.
    runtimes: tuple[str, ...]
    not_set_up: tuple[str, ...]  # asked for (or the default device runtime) but not set up here: the report says how
    threads: int
    eval_limit: int  # at most this many test samples, drawn uniformly (MATRIX_MAX_SAMPLES); a smaller split is scored whole
    runs: int

    @classmethod
    def from_options(cls, options) -> FidelityMatrixSettings:
        from ..bench.device_runtimes import device_runtime_python
        from ..bench.fidelity_matrix import CONVERTER, available_runtimes, resolve_target

        targets = {t.name: t for t in map(resolve_target, options.fidelity_runtime_list() or available_runtimes())}
        ready = tuple(name for name, t in targets.items() if t.runner is not None) or (CONVERTER,)
        missing = tuple(name for name, t in targets.items() if t.runner is None)
        if device_runtime_python(DEFAULT_DEVICE_RUNTIME) is None and DEFAULT_DEVICE_RUNTIME not in missing:
            missing += (DEFAULT_DEVICE_RUNTIME,)
        return cls(ready, missing, MATRIX_THREADS, MATRIX_MAX_SAMPLES, min(options.bench_runs, MATRIX_RUNS))


@dataclass(frozen=True)
class FileMatrix:
    variant: str  # the conversion's variant name, e.g. "tflite_int8"
    path: str  # relative to the run directory
    shipped: bool
    matrix: FidelityMatrix


@dataclass(frozen=True)
class FidelityMatrices:
    files: tuple[FileMatrix, ...]  # the shipped file first
    setup_hint: str | None  # which runtimes are not set up here, and the commands that set them up

    @property
    def shipped(self) -> FileMatrix:
        return next(f for f in self.files if f.shipped)


def setup_hint(not_set_up: tuple[str, ...]) -> str | None:
    if not not_set_up:
        return None
    names = [spec + (" (the runtime a device installs today)" if spec == DEFAULT_DEVICE_RUNTIME else "") for spec in not_set_up]
    commands = " and ".join(f"`edge-distill runner setup {spec}`" for spec in not_set_up)
    return (f"Not set up on this machine, so not in the matrix: {', '.join(names)}. The matrix installs no runtime (a build sets up only its "
            f"--device-runtime): run {commands} once and build again; only this stage is redone.")


def fidelity_matrices(run: RunDir, task, settings: FidelityMatrixSettings, conversion):
    """The matrix of the shipped file and of the fp32 file, on the test split the bench stage wrote."""
    from ..bench.fidelity_matrix import fidelity_matrix

    shipped = shipped_file(conversion)
    # --peer litert-torch: its INT8 file gets a matrix too, so the report compares both toolchains' INT8 under every runtime.
    models = [shipped] + [f for f in conversion.files if f.variant in ("tflite_fp32", "tflite_int8_litert_torch") and f.path != shipped.path]
    files, npz = [], _matrix_samples(run, task.device_test_npz, settings.eval_limit)
    for model_file in models:
        matrix = fidelity_matrix(run.path(model_file.path), npz, settings.runtimes, settings.threads, runs=settings.runs,
                                 progress=lambda line: get_console().stage("fidelity-matrix", line))
        files.append(FileMatrix(model_file.variant, model_file.path, model_file is shipped, matrix))
    result = FidelityMatrices(tuple(files), setup_hint(settings.not_set_up))
    run.write_json("bench/fidelity_matrix.json", to_jsonable(result))
    return result, [run.path("bench/fidelity_matrix.json")]


def _matrix_samples(run: RunDir, test_npz: str, limit: int):
    """The test split as the bench stage wrote it, or a seeded uniform sample of ``limit`` of its rows."""
    import numpy as np

    from .data import write_npz

    with np.load(run.path(test_npz)) as npz:
        x, y = npz["x"], npz["y"]
    if not limit or len(y) <= limit:
        return run.path(test_npz)
    rows = np.sort(np.random.default_rng(0).choice(len(y), limit, replace=False))
    return write_npz(run, f"bench/fidelity_sample_{limit}_of_{len(y)}.npz", x=x[rows], y=y[rows])


def announce(matrices: FidelityMatrices) -> None:
    """The shipped file's table, a one-line verdict for the others, and a warning when the shipped file diverges."""
    from ..bench.fidelity_matrix import divergence_verdict, format_matrix

    console, shipped = get_console(), matrices.shipped
    console.info(f"fidelity matrix of the shipped file {shipped.path}:\n{format_matrix(shipped.matrix)}")
    for other in matrices.files:
        if not other.shipped:
            console.info(f"fidelity matrix of {other.path}: {divergence_verdict(other.matrix)}")
    if shipped.matrix.divergent:
        console.warn(f"the shipped file {shipped.path} gives other answers under some runtimes or kernels: "
                     f"{divergence_verdict(shipped.matrix)} See the fidelity matrix in the report.")
    if matrices.setup_hint:
        console.info(matrices.setup_hint)
