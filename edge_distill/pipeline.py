"""The build: the stages in order, each run or reused by ``stages.runner.Stages``.

    profile ─► data ─► teacher (─► transfer) ─► size ─► baseline / distill (/ pseudo-label) ─► convert ─► verify ─► bench (+ fidelity matrix) ─► bundle ─► report

Each stage's key is the hash of its name, its settings (only the options it reads: ``stages/*.py``) and the keys of the
stages it reads.  A stage whose key matches a finished manifest entry (and whose files are intact) is reused; ``--force``
redoes everything.  What differs between images and text sits behind the ``Task`` (``tasks/``).  Heavy libraries (torch,
tensorflow) are imported inside the stages, so a fully cached rerun never loads them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from .bench import BenchSuite, FidelityResult
from .bundle import BundleResult
from .console import Console, set_console
from .convert import ConvertResult
from .data import DataResult
from .models.classical import ClassicalBaseline
from .options import BuildOptions
from .profiles import DeviceProfile, load_profile
from .report import write_report
from .rundir import RunDir, hash_inputs
from .serde import to_jsonable
from .stages import bench as bench_stage, bundle as bundle_stage, classical as classical_stage, convert as convert_stage
from .stages import fidelity as fidelity_stage, size as size_stage, train as train_stage, transfer as transfer_stage, verify as verify_stage
from .stages.data import path_content_key
from .stages.runner import Stages
from .stages.teacher import TeacherResult
from .stages.train import PseudoLabelSettings, StudentResult, Students, StudentSettings
from .tasks import Task, resolve_student, resolve_task
from .verify import VerifyResult, check_against_nokd, choose_shipped_student, enforce_gate, format_ledger
from .versions import __version__


@dataclass
class Build:
    """One build's fixed context: what every stage call needs besides its own settings and inputs."""

    options: BuildOptions
    profile: DeviceProfile
    profile_key: str
    task: Task
    run: RunDir
    stages: Stages
    console: Console


def build(options: BuildOptions) -> dict[str, Any]:
    """Run the whole pipeline; returns the report as a dict (also written to report.json / .md / .html)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:  # `torchrun ... -m edge_distill build`: every rank lands here
        from .distill import ddp

        if ddp.launched_by_torchrun() and ddp.current() is None:
            return ddp.build_on_all_ranks(build, options)  # rank 0 comes back here inside the process group
    started = time.perf_counter()
    b = _start(options)
    data, data_key = _data(b)
    teacher, teacher_key = _teacher(b, data, data_key)
    transfer, transfer_key = _transfer(b, data, data_key, teacher, teacher_key)
    sizing, size_key = _size(b, data, data_key, teacher, teacher_key)
    arms = _students(b, data, sizing, size_key, teacher, teacher_key, transfer, transfer_key)
    choice = choose_shipped_student(arms.kd.val_accuracy, arms.baseline.val_accuracy, options.max_int8_drop, options.if_kd_loses)
    (b.console.warn if choice.shipped == "nokd" else b.console.info)(choice.note)
    conversion, convert_key = _convert(b, data, data_key, sizing, *arms.shipped(choice), teacher, teacher_key)
    verified, verify_key = _verify(b, data, data_key, sizing, teacher, arms, conversion, choice, [convert_key, teacher_key, *arms.keys()])
    bench, fidelity, matrices = _bench(b, data, sizing, teacher, conversion, verify_key)
    bundle_settings = bundle_stage.BundleSettings.from_options(options, b.profile)
    bundle, _ = b.stages("bundle", bundle_settings, [verify_key, data_key, b.profile_key], BundleResult,
                         lambda: bundle_stage.bundle(b.run, b.task, bundle_settings, b.profile, data, conversion, verified))
    b.console.stage("bundle", ", ".join(f"{x.archive} ({x.archive_bytes:,} B)" for x in bundle.bundles))
    report = write_report(b.run, options=options, profile=b.profile, data=data, teacher=teacher, sizing=sizing, students=arms, transfer=transfer,
                          conversion=conversion, verified=verified, bench=bench, fidelity=fidelity, bundle=bundle, choice=choice,
                          fidelity_matrix=matrices, times=b.stages.times, total_seconds=time.perf_counter() - started)
    b.console.info(f"report: {b.run.path('report.md')}  ({time.perf_counter() - started:.1f} s in all)")
    return report


def _start(options: BuildOptions) -> Build:
    """Check all that can be checked before a file is written or a minute is spent."""
    profile = load_profile(options.profile)
    task = resolve_task(options.task, options.data)
    task.check_options(options)
    resolve_student(options.student, task)  # a wrong-task family fails here, before any training
    run = RunDir(options.run_dir())
    console = Console(quiet=options.quiet, log_path=run.path("build.log"))
    set_console(console)
    console.info(f"edge-distill {__version__}: building for profile {profile.name!r} into {run.root}")
    from .bench import device_scoring, make_runner
    from .distill.devices import select_training_device

    console.stage("device", select_training_device(options.device, os.cpu_count() or 1))  # --device cuda without a GPU stops here
    make_runner(options.runner)  # unknown runner, no emulator root, no device: fail before hours of training
    device_scoring.device_python(options.device_runtime)  # its venv, made once (pip): offline fails here, not after training
    console.stage("profile", f"{profile.name}: {profile.description}")
    return Build(options, profile, hash_inputs(to_jsonable(profile)), task, run, Stages(run, options.force, console), console)


def _data(b: Build) -> tuple[DataResult, str]:
    data, key = b.stages("data", b.task.data_settings(b.options), b.task.data_inputs(b.options), DataResult,
                         lambda: b.task.prepare_data(b.run, b.task.data_settings(b.options)))
    b.console.stage("data", f"{data.spec.name}: {data.n_train} train / {data.n_val} val / {data.n_test} test / {data.n_calib} calibration")
    b.task.check_unlabelled(b.options, data)  # a malformed --unlabelled file is refused now, not after the teacher trains
    return data, key


def _teacher(b: Build, data: DataResult, data_key: str) -> tuple[TeacherResult, str]:
    settings = b.task.teacher_settings(b.options, train_stage.world_size(b.options))
    teacher, key = b.stages("teacher", settings, [data_key, *b.task.teacher_inputs(b.options)], TeacherResult,
                            lambda: b.task.make_teacher(b.run, settings, data))
    b.console.stage("teacher", f"{teacher.params:,} params, test accuracy {teacher.test_accuracy:.4f} ({teacher.source})")
    return teacher, key


def _transfer(b: Build, data: DataResult, data_key: str, teacher: TeacherResult, teacher_key: str):
    """--unlabelled: the teacher labels the transfer set once; (None, None) without it."""
    if b.options.unlabelled is None:
        return None, None
    settings = b.task.unlabelled_settings(b.options)
    return b.stages("transfer", settings, [data_key, teacher_key, path_content_key(b.options.unlabelled)], transfer_stage.TransferResult,
                    lambda: transfer_stage.label_transfer_set(b.run, b.task, settings, data, teacher))


def _size(b: Build, data: DataResult, data_key: str, teacher: TeacherResult, teacher_key: str):
    from .sizing import SizingResult

    settings = size_stage.settings_from_options(b.options, b.task, teacher.params, data.spec)  # a family's largest fit, or the teacher cut down
    inputs = [data_key, b.profile_key, *([teacher_key] if settings.reads_teacher else [])]
    sizing, key = b.stages(settings.stage, settings, inputs, SizingResult, lambda: size_stage.size(b.run, b.task, settings, data, b.profile, teacher))
    b.console.stage("size", sizing.reason)
    return sizing, key


def _students(b: Build, data, sizing, size_key: str, teacher: TeacherResult, teacher_key: str, transfer, transfer_key) -> Students:
    """No-KD baseline (the teacher only if its settings read it, never the transfer set), KD student, pseudo-label student (--unlabelled),
    the pruned or pretrained KD student (--init prune, --student-init)."""
    world = train_stage.world_size(b.options)
    settings = train_stage.baseline_settings(b.options, b.task, world, data, transfer)
    reads_teacher = settings.views is not None or b.task.student_reads_teacher(settings)
    baseline = _student(b, "no-KD", settings, [size_key, *([teacher_key] if reads_teacher else [])], data, sizing, teacher, None)
    b.task.check_teacher(teacher, baseline[0].val_accuracy, data)
    kd_settings = train_stage.kd_settings(StudentSettings, b.options, b.task, world, transfer)
    kd_inputs = [size_key, teacher_key, *([transfer_key] if transfer else [])]
    kd = _student(b, "KD from scratch" if train_stage.has_twin(b.options) else "KD", kd_settings, kd_inputs, data, sizing, teacher, transfer)
    pseudo_settings = PseudoLabelSettings.from_options(b.options, b.task, world, distill=False)
    pseudo = _student(b, "pseudo-label", pseudo_settings, [size_key, transfer_key], data, sizing, teacher, transfer) if transfer else (None, None)
    if twin := train_stage.twin_settings(b.options, b.task, world, transfer):  # the pruned / pretrained student ships; kd is its from-scratch twin
        return Students(*baseline, *_student(b, twin[0], twin[1], kd_inputs, data, sizing, teacher, transfer), *pseudo, *kd, twin[0])
    return Students(*baseline, *kd, *pseudo)


def _student(b: Build, what: str, settings: StudentSettings, inputs: list[str], data, sizing, teacher: TeacherResult, transfer):
    student, key = b.stages(settings.stage, settings, inputs, StudentResult,
                            lambda: train_stage.train_student(b.run, b.task, settings, data, sizing, teacher, transfer))
    b.console.stage(settings.stage, f"{what} student: test accuracy {student.test_accuracy:.4f}")
    return student, key


def _convert(b: Build, data, data_key: str, sizing, shipped: StudentResult, shipped_key: str, teacher: TeacherResult, teacher_key: str):
    settings = convert_stage.ConvertSettings.from_options(b.options)
    return b.stages("convert", settings, [shipped_key, teacher_key, data_key], ConvertResult,
                    lambda: convert_stage.convert(b.run, b.task, settings, data, sizing, shipped, teacher))


def _verify(b: Build, data, data_key: str, sizing, teacher, arms: Students, conversion, choice, inputs: list[str]):
    classical = None
    if b.task.has_classical_baseline:
        classical, _ = b.stages("classical-baseline", classical_stage.ClassicalSettings(), [data_key], ClassicalBaseline,
                                lambda: classical_stage.fit_classical(b.run, b.task, data))
        b.console.stage("classical-baseline", f"{classical.description}: test accuracy {classical.test_accuracy:.4f}")
    settings = verify_stage.VerifySettings.from_options(b.options, choice.shipped, classical is not None)
    verified, key = b.stages("verify", settings, inputs, VerifyResult,
                             lambda: verify_stage.verify(b.run, b.task, settings, data, sizing, teacher, arms, conversion, classical))
    b.console.info(format_ledger(verified))
    enforce_gate(verified, conversion)
    if warning := check_against_nokd(verified, b.options.if_kd_loses):
        b.console.warn(warning)
    return verified, key


def _bench(b: Build, data, sizing, teacher, conversion, verify_key: str):
    settings = bench_stage.BenchSettings.from_options(b.options, b.profile)
    suite, _ = b.stages("bench", settings, [verify_key], BenchSuite,
                        lambda: bench_stage.bench(b.run, b.task, settings, data, sizing, teacher, conversion))
    matrix_settings = fidelity_stage.FidelityMatrixSettings.from_options(b.options)
    matrices, _ = b.stages("fidelity-matrix", matrix_settings, [verify_key], fidelity_stage.FidelityMatrices,
                           lambda: fidelity_stage.fidelity_matrices(b.run, b.task, matrix_settings, conversion))
    fidelity_stage.announce(matrices)
    fidelity = None
    if b.options.runner != "local":  # a device runtime: do its INT8 answers match the host's?
        fidelity_settings = bench_stage.FidelitySettings.from_options(b.options, b.profile)
        fidelity, _ = b.stages("fidelity", fidelity_settings, [verify_key], FidelityResult,
                               lambda: bench_stage.fidelity(b.run, b.task, fidelity_settings, conversion))
    return suite, fidelity, matrices
