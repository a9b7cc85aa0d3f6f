"""The Python API: ``build``, ``convert`` and ``bench`` over the user's own objects, and what they return.

The CLI is a client of these functions (``cli.py``).  In-memory data and models become files in the run directory
first (``inputs.py``), named by their content, so the stages' content-keyed cache reuses a stage when the same objects
come back and redoes it when they changed.  Heavy libraries (torch, numpy, tensorflow) load inside the functions:
``import edge_distill`` stays instant.
"""

from __future__ import annotations

import functools
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ConversionError, DataError

if TYPE_CHECKING:
    from torch import nn

    from ..bench.result import BenchResult
    from ..convert.results import ConvertResult, HopCheck, QualityGate
    from ..options import BuildOptions
    from ..verify import LedgerRow

# The arguments of build() that are BuildOptions fields too, but take objects as well as the CLI's strings.
_OBJECT_ARGUMENTS = ("profile", "data", "teacher", "student", "test_data", "unlabelled", "out")


@dataclass(frozen=True)
class Build:
    """One finished build.

    ``shipped`` is the quantized file that passed the quality gate (full INT8 unless the gate escalated);
    ``ledger`` every model's row on the test split (teacher, students, each converted file); ``report`` the
    report.json contents; ``run_dir`` the run directory holding all of it.
    """

    run_dir: Path
    shipped: Path
    ledger: tuple[LedgerRow, ...]
    report: dict[str, Any]
    options: BuildOptions

    def row(self, variant: str) -> LedgerRow:
        """The ledger row of one variant, e.g. ``"tflite_int8"``, ``"torch_fp32"`` (the KD student) or ``"teacher_torch_fp32"``."""
        for r in self.ledger:
            if r.variant == variant:
                return r
        raise KeyError(f"No ledger row {variant!r} (have: {', '.join(r.variant for r in self.ledger)})")

    @property
    def reused(self) -> dict[str, bool]:
        """Stage name → whether this run reused it from an earlier one (inputs unchanged)."""
        return {t["stage"]: t["reused"] for t in self.report["stage_times"]}


@dataclass(frozen=True)
class Conversion:
    """``convert()``'s result: each file it wrote, the check of every hop, and the INT8 quality gate's verdict.

    ``shipped`` is the quantized file that passed the gate (None when none did: see ``gate`` and ``attempts``).
    ``ledger`` holds one row per hop (``torch->onnx``, ``onnx->tflite_fp32``, ``tflite_fp32->tflite_int8``) with its
    largest logit difference and top-1 agreement against the hop before.
    """

    out: Path
    files: dict[str, Path]
    shipped: Path | None
    ledger: tuple[HopCheck, ...]
    gate: QualityGate | None
    result: ConvertResult


def build(profile: str | Path = "rpi4", data: Any = "digits", teacher: Any = None, student: Any = None, test_data: Any = None,
          unlabelled: Any = None, out: str | Path | None = None, **options: Any) -> Build:
    """Distil, convert, verify, benchmark and bundle a student for a device ``profile`` (``edge-distill build``).

    ``data`` / ``test_data``: a path (image folder, .npz, text .csv/.jsonl, or a built-in name such as ``"digits"``),
    an ``(x, y)`` pair of numpy arrays (x: (N, H, W), (N, C, H, W) or (N, H, W, C), uint8 or float; y: labels 0..K-1)
    or a torch ``Dataset`` of ``(image, label)``.  ``unlabelled``: the same, or ``x`` alone.
    ``teacher``: None (the built-in teacher), a TorchScript / torch.export path, or an ``nn.Module`` whose input is
    described by ``teacher_input=`` (the values of ``--teacher-input``; default: the build's normalized NCHW input).
    ``student``: None (sized from the profile), a family name (``"dscnn"``), or your own ``nn.Module`` taking the
    build's normalized NCHW input; it is distilled as it is, and the report warns when it breaks the profile's budgets.
    ``out``: the run directory (default ``runs/<profile>``).  Every other option is a keyword named like its CLI flag
    (``student_epochs=3`` for ``--student-epochs 3``).  Raises ``EdgeDistillError`` with what was wrong and how to fix it.
    """
    from ..options import BuildOptions
    from ..pipeline import build as run_pipeline
    from ..rundir import RunDir

    _check_keywords(options)
    profile, out = str(profile), None if out is None else str(out)
    # inputs/ goes into the build's own run directory, made only when an object needs writing there
    run = functools.cache(lambda: RunDir(BuildOptions(profile=profile, out=out, quiet=True).run_dir()))
    given = {"profile": profile, "out": out, **options}
    given.update(_data_arguments(run, data, test_data, unlabelled))
    given["teacher"] = _teacher_argument(run, teacher, given["data"], options)
    given["student"] = _student_argument(student, given["data"], options)
    opts = BuildOptions(**given)
    report = run_pipeline(opts)
    return _build_result(opts, report)


def _check_keywords(options: dict[str, Any]) -> None:
    """Unknown keywords and values of the wrong type are refused by name, before anything runs."""
    from ..options import option_fields

    known = {f.name: f for f in option_fields() if f.name not in _OBJECT_ARGUMENTS}
    for name, value in options.items():
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"build() got an unknown option {name!r}.", f"Did you mean {close[0]!r}?" if close else
                              "The options are the CLI flags with underscores: " + ", ".join(sorted(known)) + ".")
        default = known[name].default
        kind = str if default is None or default is MISSING else type(default)
        if not _of_kind(value, kind, default is None):
            raise ConfigError(f"build() option {name}={value!r} is {type(value).__name__}; expected {kind.__name__}"
                              f"{' or None' if default is None else ''}.",
                              f"Pass it as on the CLI: --{name.replace('_', '-')} (default {default!r}).")


def _of_kind(value: Any, kind: type, nullable: bool) -> bool:
    """A flag's value as argparse would have made it: bool, int (not bool), float (int too), str (or None where the default is)."""
    if value is None:
        return nullable
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _data_arguments(run, data: Any, test_data: Any, unlabelled: Any) -> dict[str, str | None]:
    """Each data argument as the path the stages read: a path as given, arrays and Datasets as a content-named .npz."""
    from .inputs import is_path, to_arrays, write_arrays

    paths: dict[str, str | None] = {}
    for name, value, labelled in (("data", data, True), ("test_data", test_data, True), ("unlabelled", unlabelled, False)):
        if value is None or is_path(value):
            if name == "data" and value is None:
                raise DataError("build() got data=None.", "Give a path, a built-in name (e.g. 'digits'), (x, y) arrays or a torch Dataset.")
            paths[name] = None if value is None else str(value)
            continue
        what = f"{name}=" + ("(x, y)" if isinstance(value, (tuple, list)) else type(value).__name__)
        paths[name] = write_arrays(run(), name.replace("_", "-"), to_arrays(value, what, labelled), what, train=paths.get("data"))
    return paths


def _images_only(data: str, options: dict[str, Any], what: str) -> None:
    from ..tasks import resolve_task

    task = resolve_task(options.get("task", "auto"), data)
    if not task.takes_modules:
        raise ConfigError(f"{what}=<nn.Module> is supported for image builds; this one is {task.name}.",
                          "For text give teacher='minilm' or 'hf:DIR', and a student family name (textcnn, tiny-transformer).")


def _teacher_argument(run, teacher: Any, data: str, options: dict[str, Any]) -> str:
    """None → the built-in teacher; a path as given; an ``nn.Module`` → a content-named TorchScript file."""
    if teacher is None:
        return "auto"
    from .inputs import is_path, raw_data, teacher_sample, write_teacher

    if is_path(teacher):
        return str(teacher)
    _images_only(data, options, "teacher")
    raw = raw_data(data, options)
    teacher_input = options.get("teacher_input", "auto")
    return write_teacher(run(), teacher, teacher_sample(raw, teacher_input), len(raw.class_names), teacher_input)


def _student_argument(student: Any, data: str, options: dict[str, Any]) -> str:
    """None → auto; a family name as given; an ``nn.Module`` → a family of one, registered in this process under its content hash."""
    if student is None:
        return "auto"
    if isinstance(student, str):
        return student
    from .inputs import check_module, normalized_sample, raw_data

    _images_only(data, options, "student")
    hint = "Your student must take the build's normalized NCHW float32 images and return one logit per class."
    raw = raw_data(data, options)
    check_module(student, normalized_sample(raw)[0], len(raw.class_names), "The student module", hint, ConfigError)
    if options.get("nproc", 1) > 1:
        raise ConfigError("student=<nn.Module> trains in this process; nproc > 1 would rebuild it in other processes.", "Use nproc=1.")
    return register_student(student)


def register_student(module: nn.Module) -> str:
    """A user's module as a student family of one (``user-<content hash>``): every student trained from it starts from a copy
    of its weights as given, and the size stage measures its cost without a search."""
    import copy

    from ..models.students import STUDENT_FAMILIES, StudentFamily
    from .inputs import module_key

    name = f"user-{module_key(module)[:12]}"
    if name not in STUDENT_FAMILIES.names():
        snapshot = copy.deepcopy(module).eval()  # the user's object stays untouched by training
        STUDENT_FAMILIES.register(name)(StudentFamily(
            name, lambda config, spec, m=snapshot: copy.deepcopy(m), widths=(1,), depths=(1,), resolutions=lambda spec: (0,),
            description=f"your own student module {type(module).__name__} ({name})", fixed=True))
    return name


def _build_result(options: BuildOptions, report: dict[str, Any]) -> Build:
    from ..serde import from_jsonable
    from ..verify import LedgerRow

    run_dir = Path(report["run_dir"])
    ledger = report["ledger"]
    shipped = ledger.get("gated_variant") or "tflite_int8"
    files = {f["variant"]: f["path"] for f in report["conversion"]["files"]}
    rows = tuple(from_jsonable(LedgerRow, r) for r in ledger["rows"])
    return Build(run_dir, run_dir / files[shipped], rows, report, options)


def convert(model: nn.Module, calibration: Any, *, check: Any = None, out: str | Path = "runs/convert", max_int8_drop: float = 1.0,
            device_runtime: str = "converter", threads: int | None = None) -> Conversion:
    """Convert an already-trained classifier: torch → ONNX → TFLite fp32 → INT8 (and fp16, dynamic range, int16x8, ONNX
    Runtime QDQ), every hop verified against the one before, the INT8 file behind the quality gate.

    ``model``: an ``nn.Module`` taking float32 NCHW inputs (batch first) and returning logits.  ``calibration``:
    representative inputs, as the model reads them -- ``x``, ``(x, y)`` or a torch ``Dataset``; labels make the gate
    compare accuracy instead of agreement.  ``check``: held-out samples (same forms) for the hop checks and the gate;
    default: the calibration samples (then the gate is judged on the data it calibrated on).  ``device_runtime``: the
    TFLite runtime that judges the INT8 candidates (``"converter"``: this environment's LiteRT; ``"litert==2.3.0"``:
    a cached venv, as in ``build``).  Files go to ``out/student/``.
    """
    import os

    import torch

    from ..bench.device_scoring import device_logits
    from ..convert import convert_student
    from ..convert.results import HOPS
    from ..rundir import RunDir
    from .inputs import check_module, to_arrays

    calib = to_arrays(calibration, "calibration", labelled=False)
    held = calib if check is None else to_arrays(check, "check", labelled=False)
    if calib.x.ndim < 2:
        raise DataError(f"calibration has shape {calib.x.shape}; expected a batch of inputs (N, ...).", "Stack the samples along axis 0.")

    check_module(model, torch.from_numpy(calib.x[:2].astype("float32")), _num_classes(model, calib.x), "The model",
                 "convert() takes a classifier: float32 inputs shaped like calibration[0], logits out.", ConversionError)
    tflite_logits, gate_runtime, _ = device_logits(device_runtime)
    run = RunDir(Path(out))
    result = convert_student(model.eval(), tuple(calib.x.shape[1:]), calib.x, held.x, run, check_y=held.y, calib_y=calib.y,
                             max_int8_drop=max_int8_drop, threads=threads or os.cpu_count() or 1, tflite_logits=tflite_logits,
                             gate_runtime=gate_runtime, layer_analysis=False)
    files = {f.variant: run.root / f.path for f in result.files}
    shipped = files.get(result.deploy_variant) if result.deploy_variant else None
    hops = tuple(c for hop in HOPS for c in result.checks if c.hop == hop)
    return Conversion(run.root, files, shipped, hops, result.gate, result)


def _num_classes(model, x) -> int:
    """The number of logits the model returns (convert() has no labels to count classes from)."""
    import torch

    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(x[:1].astype("float32")))
    except Exception:
        return -1  # check_module runs it again and says what failed
    return int(out.shape[-1]) if isinstance(out, torch.Tensor) and out.ndim == 2 else -1


def bench(path: str | Path, runner: str = "local", *, threads: int = 2, warmup: int = 20, runs: int = 200,
          data: str | Path | None = None, xnnpack: bool = True) -> BenchResult:
    """Benchmark a .tflite or .onnx file in a separate process (``edge-distill bench``): latency p50/p90/p99, load time,
    peak RSS, size, and where it was measured.  ``runner``: ``local``, ``qemu-arm64``, ``ssh://user@host[:port]`` or
    ``adb[://SERIAL]``.  ``data``: a .npz with ``x`` in the model's input layout and ``y`` labels, for its accuracy
    (a build writes ``bench/test_nhwc.npz``)."""
    from ..bench import bench_model

    return bench_model(Path(path), threads, warmup, runs, Path(data) if data else None, runner=runner, xnnpack=xnnpack)


def option_names() -> list[str]:
    """Every keyword ``build()`` takes besides its named arguments (the CLI's flags, with underscores)."""
    from ..options import option_fields

    return [f.name for f in option_fields() if f.name not in _OBJECT_ARGUMENTS]


__all__ = ["Build", "Conversion", "bench", "build", "convert", "option_names", "register_student"]
