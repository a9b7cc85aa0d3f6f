"""Runs the build stages in order, skipping the ones whose inputs did not change.

    profile ─► data ─► teacher ─► size ─► baseline/distill ─► convert ─► verify ─► bench ─► report

Each stage has a key: the hash of its own settings and of the keys of the stages it reads.  A stage
whose key matches a finished manifest entry (and whose files are intact) is reused; ``force`` redoes
everything.  Heavy libraries (torch, tensorflow) are imported inside the stages, so a fully cached
rerun never loads them.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import __version__
from .console import Console, get_console, set_console
from .data import DataResult
from .errors import ConfigError
from .profiles import DeviceProfile, load_profile
from .rundir import RunDir, hash_inputs, sha256_file
from .serde import from_jsonable, to_jsonable

T = TypeVar("T")


@dataclass(frozen=True)
class BuildOptions:
    profile: str = "rpi4"
    data: str = "digits"
    teacher: str = "auto"
    student: str = "cnn"
    out: str | None = None  # run directory; default runs/<profile>
    seed: int = 0
    teacher_epochs: int = 15
    student_epochs: int = 30
    kd_loss: str = "logit"
    temperature: float = 4.0
    alpha: float = 0.5
    min_compression: float = 4.0  # the student has at most teacher_params / min_compression parameters
    search: str = "capacity"  # "capacity": largest fitting candidate; "proxy": brief training of the top-k
    proxy_top_k: int = 3
    proxy_epochs: int = 3
    calib_count: int = 200
    max_int8_drop: float = 1.0  # accuracy points
    bench_warmup: int = 20
    bench_runs: int = 200
    runner: str = "local"
    force: bool = False
    quiet: bool = False
    trust_pickle: bool = False

    def __post_init__(self) -> None:
        if self.min_compression < 1:
            raise ConfigError(f"--min-compression must be ≥ 1, got {self.min_compression}.", "Use 1 to let the student be as large as the teacher.")
        if self.search not in ("capacity", "proxy"):
            raise ConfigError(f"--search must be 'capacity' or 'proxy', got {self.search!r}.", "capacity is the default.")
        if self.proxy_top_k < 1 or self.proxy_epochs < 1:
            raise ConfigError("--proxy-top-k and --proxy-epochs must be ≥ 1.", "E.g. --proxy-top-k 3 --proxy-epochs 3.")
        if self.max_int8_drop < 0:
            raise ConfigError(f"--max-int8-drop must be ≥ 0, got {self.max_int8_drop}.", "It is in accuracy points, e.g. 1.0.")
        if self.bench_runs < 1 or self.bench_warmup < 0:
            raise ConfigError("--bench-runs must be ≥ 1 and --bench-warmup ≥ 0.", "Use e.g. --bench-warmup 20 --bench-runs 200.")

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / Path(self.profile).stem


@dataclass(frozen=True)
class StageTime:
    stage: str
    seconds: float  # wall time in this invocation
    reused: bool  # true when the result came from the manifest
    original_seconds: float  # wall time when the stage was computed


@dataclass(frozen=True)
class TeacherResult:
    source: str  # "auto (built-in CNN)" or the user's file
    path: str  # the teacher inside the run directory
    kind: str  # "builtin" (state_dict) or "file" (TorchScript / torch.export / trusted pickle)
    params: int
    val_accuracy: float
    test_accuracy: float
    logits_path: str  # cached teacher logits on the training split
    train: Any = None  # TrainResult for the built-in teacher


@dataclass(frozen=True)
class StudentResult:
    label: str
    path: str
    params: int
    loss: str
    val_accuracy: float
    test_accuracy: float
    train: Any = None


@dataclass
class Stages:
    """Drives one build: runs or reuses stages and keeps their timing for the report."""

    run: RunDir
    force: bool
    console: Console
    times: list[StageTime] = field(default_factory=list)

    def __call__(self, name: str, key_parts: Any, cls: type[T], compute: Callable[[], tuple[T, list[Path]]]) -> tuple[T, str]:
        key = hash_inputs(__version__, name, key_parts)
        t0 = time.perf_counter()
        entry = None if self.force else self.run.finished_stage(name, key)
        if entry is not None:
            self.console.stage(name, f"reused (inputs unchanged, computed in {entry['seconds']:.1f} s)")
            result = from_jsonable(cls, entry["result"])
            self.times.append(StageTime(name, round(time.perf_counter() - t0, 3), True, entry["seconds"]))
            return result, key
        result, files = compute()
        seconds = time.perf_counter() - t0
        self.run.record_stage(name, key, to_jsonable(result), files, seconds)
        self.times.append(StageTime(name, round(seconds, 3), False, round(seconds, 3)))
        self.console.stage(name, f"done in {seconds:.1f} s")
        return result, key


def build(options: BuildOptions) -> dict[str, Any]:
    """Run the whole pipeline; returns the report as a dict (also written to report.json / report.md)."""
    started = time.perf_counter()
    profile = load_profile(options.profile)  # errors before anything is written
    run = RunDir(options.run_dir())
    console = Console(quiet=options.quiet, log_path=run.path("build.log"))
    set_console(console)
    console.info(f"edge-distill {__version__}: building for profile {profile.name!r} into {run.root}")
    stages = Stages(run, options.force, console)
    _limit_threads()

    from .bench import runner_names

    if options.runner not in runner_names():
        raise ConfigError(f"Unknown runner {options.runner!r}.", f"Known runners: {', '.join(runner_names())}.")

    console.stage("profile", f"{profile.name}: {profile.description}")
    profile_key = hash_inputs(to_jsonable(profile))

    data, data_key = stages("data", [options.data, options.seed, options.calib_count], DataResult, lambda: _data_stage(run, options))
    console.stage("data", f"{data.spec.name}: {data.n_train} train / {data.n_val} val / {data.n_test} test / {data.n_calib} calibration")

    teacher_source = options.teacher if options.teacher == "auto" else sha256_file(_teacher_path(options))
    teacher, teacher_key = stages(
        "teacher",
        [data_key, teacher_source, options.teacher_epochs, options.seed],
        TeacherResult,
        lambda: _teacher_stage(run, options, data),
    )
    console.stage("teacher", f"{teacher.params:,} params, test accuracy {teacher.test_accuracy:.4f} ({teacher.source})")

    from .sizing import SizingResult

    sizing, size_key = stages(
        "size",
        [data_key, profile_key, options.student, teacher.params, options.min_compression, options.search,
         options.proxy_top_k, options.proxy_epochs, options.seed],
        SizingResult,
        lambda: _size_stage(run, options, data, profile, teacher),
    )
    console.stage("size", sizing.reason)

    train_settings = [options.student_epochs, options.seed]
    baseline, baseline_key = stages(
        "baseline", [size_key, train_settings], StudentResult, lambda: _student_stage(run, options, data, sizing, None, "ce")
    )
    console.stage("baseline", f"no-KD student: test accuracy {baseline.test_accuracy:.4f}")
    kd_settings = [options.kd_loss, options.temperature, options.alpha]
    student, student_key = stages(
        "distill",
        [size_key, teacher_key, train_settings, kd_settings],
        StudentResult,
        lambda: _student_stage(run, options, data, sizing, teacher, options.kd_loss),
    )
    console.stage("distill", f"KD student: test accuracy {student.test_accuracy:.4f}")

    from .convert import ConvertResult

    conversion, convert_key = stages(
        "convert", [student_key, teacher_key, data_key], ConvertResult, lambda: _convert_stage(run, data, sizing, student, teacher)
    )
    from .verify import VerifyResult, enforce_gate, format_ledger

    verified, verify_key = stages(
        "verify",
        [convert_key, baseline_key, options.max_int8_drop],
        VerifyResult,
        lambda: _verify_stage(run, options, data, sizing, teacher, baseline, student, conversion),
    )
    console.info(format_ledger(verified))
    enforce_gate(verified)

    from .bench import BenchSuite

    bench, _ = stages(
        "bench",
        [verify_key, options.runner, options.bench_warmup, options.bench_runs, profile.threads],
        BenchSuite,
        lambda: _bench_stage(run, options, profile, data, conversion),
    )

    from .report import write_report

    report = write_report(
        run,
        options=options,
        profile=profile,
        data=data,
        teacher=teacher,
        sizing=sizing,
        baseline=baseline,
        student=student,
        conversion=conversion,
        verified=verified,
        bench=bench,
        times=stages.times,
        total_seconds=time.perf_counter() - started,
    )
    console.info(f"report: {run.path('report.md')}  ({time.perf_counter() - started:.1f} s in all)")
    return report


# ---- stages ------------------------------------------------------------------------------------


def _limit_threads() -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)


def _data_stage(run: RunDir, options: BuildOptions) -> tuple[DataResult, list[Path]]:
    from .data import prepare

    spec, splits = prepare(options.data, options.seed, options.calib_count)
    with run.atomic_path("data/splits.npz") as tmp:
        with open(tmp, "wb") as fh:
            splits.save(fh)
    path = run.path("data/splits.npz")
    result = DataResult(spec, run.relative(path), len(splits.y_train), len(splits.y_val), len(splits.y_test), len(splits.y_calib))
    return result, [path]


def _splits(run: RunDir, data: DataResult):
    from .data import Splits

    return Splits.load(run.path(data.splits_path))


def _teacher_path(options: BuildOptions) -> Path:
    from .errors import TeacherError

    path = Path(options.teacher)
    if not path.is_file():
        raise TeacherError(
            f"Teacher {options.teacher!r} is neither 'auto' nor an existing file.",
            "Use --teacher auto (train the built-in CNN) or the path of a TorchScript (.pt) / torch.export (.pt2) file.",
        )
    return path


def _teacher_stage(run: RunDir, options: BuildOptions, data: DataResult) -> tuple[TeacherResult, list[Path]]:
    import numpy as np
    import torch

    from .distill import KDConfig, TrainConfig, accuracy, predict_logits, train
    from .models.cnn import count_params
    from .models.teacher import builtin_teacher, load_teacher_file

    splits = _splits(run, data)
    train_result = None
    if options.teacher == "auto":
        torch.manual_seed(options.seed)
        model = builtin_teacher(data.spec)
        get_console().stage("teacher", f"training the built-in CNN ({count_params(model):,} params) for {options.teacher_epochs} epochs")
        train_result = train(
            model, splits.x_train, splits.y_train, splits.x_val, splits.y_val,
            TrainConfig(epochs=options.teacher_epochs, seed=options.seed), KDConfig(loss="ce"), None,
            run.path("teacher/train.ckpt"), "teacher",
        )
        with run.atomic_path("teacher/teacher.pt") as tmp:
            torch.save(model.state_dict(), tmp)
        kind, source = "builtin", "auto (built-in CNN)"
    else:
        path = _teacher_path(options)
        model = load_teacher_file(path, data.spec, options.trust_pickle)
        with run.atomic_path("teacher/teacher.pt") as tmp:
            tmp.write_bytes(path.read_bytes())
        kind, source = "file", str(path)
    get_console().stage("teacher", "caching teacher logits on the training split")
    with run.atomic_path("teacher/logits_train.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, predict_logits(model, splits.x_train))
    result = TeacherResult(
        source=source,
        path="teacher/teacher.pt",
        kind=kind,
        params=count_params(model),
        val_accuracy=accuracy(model, splits.x_val, splits.y_val),
        test_accuracy=accuracy(model, splits.x_test, splits.y_test),
        logits_path="teacher/logits_train.npy",
        train=to_jsonable(train_result),
    )
    return result, [run.path(result.path), run.path(result.logits_path)]


def load_teacher_model(run: RunDir, teacher: TeacherResult, spec, trust_pickle: bool = False):
    import torch

    from .models.teacher import builtin_teacher, load_teacher_file

    if teacher.kind == "builtin":
        model = builtin_teacher(spec)
        model.load_state_dict(torch.load(run.path(teacher.path), weights_only=True))
        return model.eval()
    return load_teacher_file(run.path(teacher.path), spec, trust_pickle)


def _size_stage(run: RunDir, options: BuildOptions, data: DataResult, profile: DeviceProfile, teacher: TeacherResult):
    from .sizing import choose_student, proxy_select

    result = choose_student(data.spec, profile, options.student, teacher.params, options.min_compression)
    if options.search == "proxy":
        result = proxy_select(
            result, data.spec, _splits(run, data), options.proxy_top_k, options.proxy_epochs, options.seed, run.path("size/proxy")
        )
    return result, []


def _student_stage(run, options, data, sizing, teacher: TeacherResult | None, loss: str) -> tuple[StudentResult, list[Path]]:
    import numpy as np
    import torch

    from .distill import KDConfig, TrainConfig, accuracy, train
    from .models.cnn import count_params
    from .models.students import build_student

    splits = _splits(run, data)
    name = "student_kd" if teacher is not None else "student_nokd"
    torch.manual_seed(options.seed)  # same initial weights for the KD student and its baseline
    model = build_student(sizing.chosen, data.spec)
    teacher_logits = np.load(run.path(teacher.logits_path)) if teacher is not None else None
    kd = KDConfig(loss=loss, temperature=options.temperature, alpha=options.alpha)
    what = f"KD ({loss}, T={kd.temperature}, alpha={kd.alpha})" if teacher is not None else "hard labels only (no-KD baseline)"
    get_console().stage("distill" if teacher is not None else "baseline", f"training {sizing.chosen.label()} with {what}")
    train_result = train(
        model, splits.x_train, splits.y_train, splits.x_val, splits.y_val,
        TrainConfig(epochs=options.student_epochs, seed=options.seed), kd, teacher_logits,
        run.path(f"distill/{name}.ckpt"), name,
    )
    with run.atomic_path(f"distill/{name}.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    result = StudentResult(
        label=sizing.chosen.label(),
        path=f"distill/{name}.pt",
        params=count_params(model),
        loss=loss,
        val_accuracy=train_result.best_val_accuracy,
        test_accuracy=accuracy(model, splits.x_test, splits.y_test),
        train=to_jsonable(train_result),
    )
    return result, [run.path(result.path)]


def load_student_model(run: RunDir, student: StudentResult, sizing, spec):
    import torch

    from .models.students import build_student

    model = build_student(sizing.chosen, spec)
    model.load_state_dict(torch.load(run.path(student.path), weights_only=True))
    return model.eval()


def _convert_stage(run, data, sizing, student, teacher):
    from .convert import convert_student, export_onnx

    splits = _splits(run, data)
    model = load_student_model(run, student, sizing, data.spec)
    result = convert_student(model, data.spec.input_shape, splits.x_calib, splits.x_val, run, subdir="student")
    # The teacher goes to ONNX too, so it can be benchmarked in the same kind of separate process.
    teacher_model = load_teacher_model(run, teacher, data.spec, trust_pickle=True)  # already vetted in the teacher stage
    export_onnx(teacher_model, data.spec.input_shape, run.path("teacher/teacher.onnx"))
    files = [run.path(f.path) for f in result.files] + [run.path("teacher/teacher.onnx")]
    return result, files


def _verify_stage(run, options, data, sizing, teacher, baseline, student, conversion):
    from .convert import run_onnx, run_tflite
    from .distill import predict_logits
    from .verify import Scored, build_ledger

    splits = _splits(run, data)
    x = splits.x_test
    threads = os.cpu_count() or 1
    teacher_model = load_teacher_model(run, teacher, data.spec, trust_pickle=True)
    scored = [
        Scored("teacher", "teacher_torch_fp32", "torch", predict_logits(teacher_model, x), None, teacher.params, "float32"),
        Scored("student (no KD)", "nokd_torch_fp32", "torch", predict_logits(load_student_model(run, baseline, sizing, data.spec), x), None, baseline.params, "float32"),
        Scored("student (KD)", "torch_fp32", "torch", predict_logits(load_student_model(run, student, sizing, data.spec), x), None, student.params, "float32"),
    ]
    for f in conversion.files:
        path = run.path(f.path)
        logits = run_onnx(path, x, threads) if f.variant.startswith("onnx") else run_tflite(path, x, threads)
        runtime = "onnxruntime" if f.variant.startswith("onnx") else "litert"
        scored.append(Scored(f"student {f.variant}", f.variant, runtime, logits, f.bytes, student.params, f.integer_description))
    result = build_ledger(scored, splits.y_test, "torch_fp32", "tflite_int8", options.max_int8_drop)
    run.write_json("verify/ledger.json", to_jsonable(result))
    return result, [run.path("verify/ledger.json")]


def _bench_stage(run, options, profile, data, conversion):
    import numpy as np

    from .bench import BenchSuite, bench_model, describe_host

    splits = _splits(run, data)
    # The agent reads test data already in each model's input layout: NCHW for ONNX, NHWC for TFLite.
    with run.atomic_path("bench/test_nchw.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x=splits.x_test, y=splits.y_test)
    with run.atomic_path("bench/test_nhwc.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x=splits.x_test.transpose(0, 2, 3, 1), y=splits.y_test)
    threads = min(profile.threads, os.cpu_count() or 1)
    targets = [("teacher (ONNX Runtime fp32)", run.path("teacher/teacher.onnx"), "bench/test_nchw.npz")]
    for f in conversion.files:
        if f.variant.startswith("tflite"):
            targets.append((f"student {f.variant}", run.path(f.path), "bench/test_nhwc.npz"))
    results = []
    for label, path, npz in targets:
        results.append(bench_model(path, threads, options.bench_warmup, options.bench_runs, run.path(npz), runner=options.runner))
    suite = BenchSuite(labels=tuple(t[0] for t in targets), results=tuple(results), threads=threads, host=describe_host())
    run.write_json("bench/results.json", to_jsonable(suite))
    return suite, [run.path("bench/results.json")]


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"edge-distill": __version__, "python": platform.python_version()}
    for pkg in ("torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "ai-edge-litert", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
