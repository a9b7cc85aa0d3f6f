"""Which runtime and which kernels give an INT8 file its accuracy: one model, one test set, runtimes × kernels.

    matrix = fidelity_matrix(Path("student_int8.tflite"), Path("test_nhwc.npz"))
    print(format_matrix(matrix))

Every cell is the device agent (``export/agent.py``) scoring the same ``.npz`` with ``--predictions --logits``, so
all cells quantize the inputs with the same code and differ only in the runtime and its kernels:

* runtimes: ``converter`` (this process's Python and its LiteRT, the one onnx2tf pins), each device runtime set up
  with ``setup_device_runtime`` (``litert==2.3.0``, ``tflite-runtime==2.14.0``), and a runner such as
  ``qemu-arm64`` when it is set up;
* kernels: ``xnnpack`` (the default delegate every app gets), ``builtin`` (the runtime's optimized kernels, no
  delegate), ``reference`` (its reference kernels).

One reference for every cell: the converter's ``builtin`` run (LiteRT's optimized kernels, no delegate: what the
convert stage's quality gate calls "XNNPACK off"); when the converter is not among the runtimes, or that cell
failed, the first runtime whose ``builtin`` cell ran.  Why not the ``reference`` kernels, and why not each
runtime's own: measured here, reference kernels are wrong for ops our students use --
LiteRT's (2.1.0 and 2.3.0) int8 SUM puts a tiny-transformer student at 0.14 accuracy where every other cell of
every runtime scores 0.96-0.98, and tflite-runtime 2.14.0's int8 BATCH_MATMUL scores an attention block 0.03
where all else scores 0.99.  ``reference_kernels`` picks another reference mode.  One reference also makes the
numbers comparable across runtimes.  A cell is ``divergent`` when its top-1 agreement with the reference is
below ``min_agreement`` or its accuracy is more than ``max_accuracy_drop`` below the reference's; the reference
cell itself agrees 100 % with Δ = 0, so a reference that is itself wrong shows as every other cell diverging.
"""

from __future__ import annotations

import importlib.resources
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..console import get_console
from ..errors import BenchError, ConfigError, DataError, EdgeDistillError, ModelFileError
from .device_runtimes import DEVICE_RUNTIMES, device_runtime_python, names_device_runtime, parse_device_runtime
from .qemu import QemuRoot, find_qemu
from .runners import KERNELS, RUNNERS, AgentOptions, LocalRunner, Runner, make_runner

CONVERTER = "converter"
MIN_AGREEMENT = 0.99  # top-1 agreement with the reference below this: the kernels compute something else
MAX_ACCURACY_DROP = 0.01  # one point of accuracy below the reference's


@dataclass(frozen=True)
class MatrixCell:
    runtime: str  # "converter", a device runtime spec ("litert==2.3.0") or a runner spec ("qemu-arm64")
    kernels: str  # xnnpack | builtin | reference
    runtime_version: str | None  # what the agent imported, e.g. "ai_edge_litert 2.3.0"; None when it did not run
    where: str | None
    n: int  # samples scored (0 when the cell did not run)
    accuracy: float | None
    agreement: float | None  # share of samples whose top-1 class matches the reference cell's
    max_abs_delta: float | None  # max |Δ| of the dequantized outputs vs the reference cell's
    p50_ms: float | None  # batch-1 latency on the first sample; under qemu it describes the emulator
    delegate_nodes: int | None  # DELEGATE nodes in the plan: 0 for an xnnpack cell means no delegate took any op
    divergent: bool
    error: str | None = None  # why the cell could not run


@dataclass(frozen=True)
class FidelityMatrix:
    model: str
    npz: str
    threads: int
    n: int
    reference: str | None  # "runtime / kernels" of the reference cell; None when it could not run anywhere
    min_agreement: float
    max_accuracy_drop: float
    runtimes: tuple[str, ...]
    cells: tuple[MatrixCell, ...]
    n_available: int = 0  # samples in the .npz; more than n when eval_limit scored only the first n

    def cell(self, runtime: str, kernels: str) -> MatrixCell:
        for cell in self.cells:
            if (cell.runtime, cell.kernels) == (runtime, kernels):
                return cell
        raise KeyError(f"no cell {runtime} / {kernels}")

    @property
    def divergent(self) -> tuple[MatrixCell, ...]:
        return tuple(c for c in self.cells if c.divergent)

    @property
    def failed(self) -> tuple[MatrixCell, ...]:
        return tuple(c for c in self.cells if c.error is not None)


@dataclass
class _Target:
    """A runtime of the matrix: its name, and the runner that runs the agent there (or why there is none)."""

    name: str
    runner: Runner | None
    problem: str | None = None


def _qemu_ready() -> bool:
    try:
        QemuRoot.load()
    except BenchError:
        return False
    return find_qemu() is not None


def available_runtimes(cache_root: Path | str | None = None) -> list[str]:
    """What a matrix covers by default: the converter, every set-up device runtime, and qemu-arm64 if set up."""
    names = [CONVERTER] + [r.spec for r in DEVICE_RUNTIMES.values() if device_runtime_python(r, cache_root)]
    return names + (["qemu-arm64"] if _qemu_ready() else [])


def _device_target(spec: str, cache_root: Path | str | None) -> _Target:
    runtime = parse_device_runtime(spec)
    python = device_runtime_python(runtime, cache_root)
    if python is None:
        return _Target(runtime.spec, None, f"{runtime.spec} is not set up on this machine "
                                           f"(edge-distill runner setup {runtime.spec})")
    runner = LocalRunner(python)
    runner.spec = runtime.spec
    return _Target(runtime.spec, runner)


def resolve_target(spec: str, cache_root: Path | str | None = None) -> _Target:
    """``converter`` / a device runtime spec / a runner spec → where the agent runs.  An unknown spec is a
    ``ConfigError``; a known one that cannot run here becomes a target whose cells carry the reason."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"Runtime {spec!r} is invalid.", _runtimes_hint())
    spec = spec.strip()
    if spec in (CONVERTER, "local"):
        return _Target(CONVERTER, LocalRunner())
    name = spec.split("://", 1)[0] if "://" in spec else spec
    if names_device_runtime(spec):
        return _device_target(spec, cache_root)
    if name not in RUNNERS.names():
        raise ConfigError(f"Unknown runtime {spec!r} for the fidelity matrix.", _runtimes_hint())
    try:
        return _Target(spec, make_runner(spec))
    except BenchError as exc:
        return _Target(spec, None, exc.message)


def _runtimes_hint() -> str:
    runners = ", ".join(n for n in RUNNERS.names() if n != "local")
    return (f"Use {CONVERTER} (this machine's LiteRT), a device runtime ({', '.join(DEVICE_RUNTIMES)}) "
            f"or a runner ({runners}; ssh://user@host).")


def _run_cell(target: _Target, kernels: str, model: Path, npz: Path, options: AgentOptions, logits: Path,
              timeout_s: float) -> tuple[dict[str, Any] | None, np.ndarray | None, str | None]:
    """(agent JSON, logits or None, error text or None) of one cell."""
    if target.runner is None:
        return None, None, target.problem
    # A runner on another machine would write the file there: such cells get no max |Δ|.
    logits = logits if target.runner.shares_files else None
    opts = AgentOptions(threads=options.threads, warmup=options.warmup, runs=options.runs,
                        eval_limit=options.eval_limit, predictions=True, kernels=kernels,
                        logits=str(logits) if logits else None)
    agent = importlib.resources.files("edge_distill.export") / "agent.py"
    try:
        with importlib.resources.as_file(agent) as agent_path:
            data = target.runner.run_agent(agent_path, model, opts, npz, timeout_s)
    except EdgeDistillError as exc:
        text = exc.message.replace(f"Benchmark of {model.name} failed: ", "")
        return None, None, text + (f"\n{exc.hint}" if exc.hint else "")
    return data, (np.load(logits, allow_pickle=False) if logits else None), None


def _compare(data: dict, logits: np.ndarray | None, ref: tuple[dict, np.ndarray | None] | None
             ) -> tuple[float | None, float | None]:
    """(top-1 agreement, max |Δ|) of one cell against the reference cell."""
    if ref is None or len(ref[0]["predictions"]) != len(data["predictions"]):
        return None, None
    same = np.asarray(data["predictions"]) == np.asarray(ref[0]["predictions"])
    agreement = round(float(same.mean()), 6)
    if logits is None or ref[1] is None or logits.shape != ref[1].shape:
        return agreement, None
    return agreement, float(np.max(np.abs(logits.astype(np.float64) - ref[1].astype(np.float64))))


def _cell(target: _Target, kernels: str, raw: tuple, ref: tuple | None, ref_accuracy: float | None,
          min_agreement: float, max_drop: float) -> MatrixCell:
    data, logits, error = raw
    if data is None:
        return MatrixCell(target.name, kernels, None, None, 0, None, None, None, None, None, False, error)
    agreement, delta = _compare(data, logits, ref)
    accuracy = round(float(data["accuracy"]), 6)
    divergent = agreement is not None and (agreement < min_agreement or
                                           (ref_accuracy is not None and accuracy < ref_accuracy - max_drop - 1e-9))
    return MatrixCell(target.name, kernels, f"{data['runtime']} {data['runtime_version']}",
                      target.runner.where(data), int(data["n_eval"]), accuracy, agreement, delta,
                      data.get("p50_ms"), data.get("delegate_nodes"), divergent)


def _reference(raws: dict[tuple[str, str], tuple], kernels: str) -> tuple[str, str] | None:
    ran = [key for key, raw in raws.items() if key[1] == kernels and raw[0] is not None]
    preferred = [key for key in ran if key[0] == CONVERTER]
    return (preferred or ran or [None])[0]


def _check_inputs(model: Path, npz: Path, threads: int, min_agreement: float, max_drop: float) -> int:
    """Refuses what no cell could run; returns the .npz's sample count."""
    for path, what in ((model, "Model"), (npz, "Test data")):
        if not path.is_file():
            raise BenchError(f"{what} file not found: {path}", "Check the path." if what == "Model" else _NPZ_HINT)
    if model.suffix.lower() != ".tflite":
        raise ModelFileError(f"{model} is not a .tflite file: the matrix compares TFLite runtimes and their kernels.",
                             "Pass a converted file, e.g. a build's student/student_int8.tflite.")
    n_available = _check_npz(npz)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads = {threads!r} is invalid; expected an integer >= 1.")
    if not 0.0 <= min_agreement <= 1.0 or not 0.0 <= max_drop <= 1.0:
        raise ConfigError(f"min_agreement = {min_agreement!r} / max_accuracy_drop = {max_drop!r} are invalid; "
                          "expected fractions in [0, 1].")
    return n_available


_NPZ_HINT = "Pass a .npz with x (inputs in the model's input layout) and y (integer labels), e.g. a build's bench/test_nhwc.npz."


def _check_npz(npz: Path) -> int:
    """A bad file fails here, once, instead of as the same agent error in every cell; returns its sample count."""
    if not zipfile.is_zipfile(npz):
        raise DataError(f"{npz} is not a .npz file (a zip archive of arrays).", _NPZ_HINT)
    try:
        with np.load(npz, allow_pickle=False) as data:
            missing = [k for k in ("x", "y") if k not in data.files]
            if missing:
                raise DataError(f"{npz} lacks {' and '.join(missing)} (it has: {', '.join(data.files) or 'nothing'}).", _NPZ_HINT)
            y = data["y"].reshape(-1)  # as the agent reads it
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{npz} is not a readable .npz file ({exc}).", _NPZ_HINT) from None
    if not np.issubdtype(y.dtype, np.integer) or len(y) == 0:
        raise DataError(f"{npz}: y must hold integer class labels, got {len(y)} of dtype {y.dtype}.", _NPZ_HINT)
    return len(y)


def fidelity_matrix(model: Path, npz: Path, runtimes: Sequence[str] | None = None, threads: int = 1, *,
                    kernels: Sequence[str] = KERNELS, reference_kernels: str = "builtin", eval_limit: int = 0, runs: int = 10,
                    min_agreement: float = MIN_AGREEMENT, max_accuracy_drop: float = MAX_ACCURACY_DROP,
                    cache_root: Path | str | None = None, timeout_s: float = 900,
                    progress: Callable[[str], None] | None = None) -> FidelityMatrix:
    """Score ``model`` on ``npz`` under every runtime × kernel mode (see the module docstring).

    ``runtimes`` defaults to ``available_runtimes()``.  A cell that cannot run (runtime not set up, resolver
    missing, crash) carries its error text; an unknown runtime or kernel name is a ``ConfigError``."""
    model, npz = Path(model).resolve(), Path(npz).resolve()
    n_available = _check_inputs(model, npz, threads, min_agreement, max_accuracy_drop)
    if not kernels or any(k not in KERNELS for k in kernels) or reference_kernels not in kernels:
        raise ConfigError(f"Kernels {tuple(kernels)!r} with reference {reference_kernels!r} are invalid.",
                          f"Use some of: {', '.join(KERNELS)}, the reference's among them.")
    specs = available_runtimes(cache_root) if runtimes is None else list(runtimes)
    if not specs:
        raise ConfigError("The fidelity matrix needs at least one runtime.", _runtimes_hint())
    targets = list({t.name: t for t in (resolve_target(s, cache_root) for s in specs)}.values())  # once each
    say = progress or (lambda line: get_console().stage("fidelity", line))
    say(f"{model.name} on {npz.name}: {', '.join(t.name for t in targets)} × {', '.join(kernels)} kernels")
    options = AgentOptions(threads=threads, warmup=1, runs=runs, eval_limit=eval_limit)
    raws: dict[tuple[str, str], tuple] = {}
    with tempfile.TemporaryDirectory(prefix="edge-distill-fidelity-") as work:
        for i, target in enumerate(targets):
            for k in kernels:
                raw = raws[(target.name, k)] = _run_cell(target, k, model, npz, options, Path(work) / f"{i}-{k}.npy",
                                                         timeout_s)
                say(f"  {target.name} / {k}: " + (f"accuracy {raw[0]['accuracy']:.4f} on {raw[0]['n_eval']} "
                                                  f"({raw[0]['runtime']} {raw[0]['runtime_version']})"
                                                  if raw[0] else "error: " + raw[2].splitlines()[0]))
    ref_key = _reference(raws, reference_kernels)
    ref = raws[ref_key][:2] if ref_key else None
    ref_accuracy = round(float(ref[0]["accuracy"]), 6) if ref else None
    by_name = {t.name: t for t in targets}
    cells = tuple(_cell(by_name[name], k, raw, ref, ref_accuracy, min_agreement, max_accuracy_drop)
                  for (name, k), raw in raws.items())
    matrix = FidelityMatrix(model.name, npz.name, threads, max((c.n for c in cells), default=0),
                            f"{ref_key[0]} / {ref_key[1]}" if ref_key else None, min_agreement, max_accuracy_drop,
                            tuple(by_name), cells, n_available)
    say(f"reference {matrix.reference or 'none'}: {len(matrix.divergent)} divergent, {len(matrix.failed)} failed "
        f"of {len(cells)} cells")
    return matrix


# ---- tables -----------------------------------------------------------------------------------------------

_HEADER = ("runtime", "version", "kernels", "accuracy", "agreement", "max |Δ|", "p50 ms", "")


def _row(cell: MatrixCell) -> tuple[str, ...]:
    kernels = cell.kernels + (" (no delegate applied)" if cell.kernels == "xnnpack" and cell.delegate_nodes == 0 else "")
    if cell.error is not None:
        return (cell.runtime, "-", kernels, "-", "-", "-", "-", "error: " + cell.error.splitlines()[0])
    return (cell.runtime, cell.runtime_version or "-", kernels,
            f"{cell.accuracy:.4f}", "-" if cell.agreement is None else f"{100 * cell.agreement:.2f}%",
            "-" if cell.max_abs_delta is None else f"{cell.max_abs_delta:.4g}",
            "-" if cell.p50_ms is None else f"{cell.p50_ms:.3f}", "DIVERGENT" if cell.divergent else "")


def _title(matrix: FidelityMatrix) -> str:
    ref = matrix.reference or "none (no cell of the reference kernels ran)"
    first = f" (the first of {matrix.n_available})" if matrix.n_available > matrix.n else ""
    return (f"{matrix.model} on {matrix.npz}: n={matrix.n}{first}, {matrix.threads} thread{'s' if matrix.threads != 1 else ''}; "
            f"reference {ref}; divergent = agreement < {100 * matrix.min_agreement:g}% "
            f"or accuracy more than {100 * matrix.max_accuracy_drop:g} point(s) below the reference")


def format_matrix(matrix: FidelityMatrix) -> str:
    """The matrix as a console table, one line per cell."""
    rows = [_HEADER] + [_row(c) for c in matrix.cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = [_title(matrix)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    where = sorted({f"{c.runtime}: {c.where}" for c in matrix.cells if c.where})
    return "\n".join(lines + [f"where {w}" for w in where])


def matrix_rows(matrix: FidelityMatrix) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(header, one row per cell) as the console and Markdown tables show them, for other renderings (report.html)."""
    return tuple(h or "verdict" for h in _HEADER), [_row(c) for c in matrix.cells]


_KERNEL_NAMES = {"xnnpack": "XNNPACK", "builtin": "builtin kernels", "reference": "reference kernels"}
_RUNTIME_NAMES = {"ai_edge_litert": "LiteRT", "tflite_runtime": "tflite-runtime"}


def _cell_name(cell: MatrixCell) -> str:
    """``converter LiteRT 2.1.0 XNNPACK``; a device runtime's spec already names its release."""
    module, _, version = (cell.runtime_version or "").partition(" ")
    release = "" if "==" in cell.runtime or not version else f" {_RUNTIME_NAMES.get(module, module)} {version}"
    return f"{cell.runtime}{release} {_KERNEL_NAMES.get(cell.kernels, cell.kernels)}"


def divergence_verdict(matrix: FidelityMatrix) -> str:
    """One sentence: which cells diverge from the reference cell, and which could not run."""
    if matrix.reference is None:
        return "No cell of the reference kernels ran, so no cell could be compared."
    ref = matrix.cell(*matrix.reference.split(" / "))
    parts = [f"{_cell_name(c)} diverges from the reference ({_cell_name(ref)}): accuracy {c.accuracy:.2f} vs "
             f"{ref.accuracy:.2f}, top-1 agreement {100 * c.agreement:.1f}%" for c in matrix.divergent]
    text = "; ".join(parts) + "." if parts else (f"Every cell that ran agrees with the reference ({_cell_name(ref)}).")
    if matrix.failed:
        text += f" Could not run: {', '.join(f'{c.runtime} / {c.kernels}' for c in matrix.failed)}."
    return text


def matrix_markdown(matrix: FidelityMatrix) -> str:
    """The matrix as a Markdown table for a report (divergent cells in bold)."""
    lines = [_title(matrix) + ".", "", "| " + " | ".join((h or "verdict").replace("|", "\\|") for h in _HEADER) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * 4 + ["---"]) + "|"]
    for cell in matrix.cells:
        row = [v.replace("|", "\\|") for v in _row(cell)]
        if cell.divergent:
            row = [f"**{v}**" if v else v for v in row]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
