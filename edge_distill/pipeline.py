"""Runs the build stages in order, skipping the ones whose inputs did not change.

    profile ─► data ─► teacher ─► size ─► baseline/distill ─► convert ─► verify ─► bench ─► report

Each stage has a key: the hash of its own settings and of the keys of the stages it reads.  A stage
whose key matches a finished manifest entry (and whose files are intact) is reused; ``force`` redoes
everything.  Heavy libraries (torch, tensorflow) are imported inside the stages, so a fully cached
rerun never loads them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import __version__
from .console import Console, get_console, set_console
from .data import DataResult
from .errors import ConfigError
from .models.teacher_input import InputCandidate
from .profiles import DeviceProfile, load_profile
from .rundir import RunDir, hash_inputs, sha256_file
from .serde import from_jsonable, to_jsonable

T = TypeVar("T")


@dataclass(frozen=True)
class BuildOptions:
    profile: str = "rpi4"
    data: str = "digits"
    teacher: str = "auto"
    teacher_arch: str = "cnn"  # the built-in teacher's architecture (--teacher auto): cnn, or vgg for 28x28-class images
    teacher_members: int = 1  # built-in teacher: this many trained from seeds seed.. and averaged (models.teacher.Ensemble)
    teacher_flip_average: bool = False  # built-in teacher: mean of its logits on the image and its mirror (FlipAveraged)
    student: str = "auto"  # a student family; auto: cnn for images, tiny-transformer for text
    task: str = "auto"  # vision or text; auto decides from --data (a text dataset or a .csv/.jsonl file is text)
    text_field: str = "text"  # text files: the field holding the text ...
    label_field: str = "label"  # ... and the one holding its class name
    finetune_epochs: int = 2  # text teachers minilm / hf:DIR: epochs of fine-tuning (0: hf:DIR used as it is)
    out: str | None = None  # run directory; default runs/<profile>
    seed: int = 0
    teacher_epochs: int = 15
    student_epochs: int = 30
    kd_loss: str = "logit"
    temperature: float = 4.0
    alpha: float = 0.5
    beta: float = 1.0  # weight of the feature term (--kd-loss fitnet / attention)
    augment_shift: int = 0  # random shift in pixels for student training (online teacher)
    augment_flip: bool = False  # random horizontal flips (only for flip-invariant classes)
    teacher_views: int = 0  # > 0: precompute the teacher on this many augmented views (view bank) instead of running it online
    word_dropout: float = 0.0  # text views: each word of a training text dropped with this probability (views 1..K-1)
    student_embeddings: str = "teacher"  # text students (KD and baseline): embeddings start from the teacher's word vectors, or "random"
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
    # A teacher file's input: auto (its archive's edge_distill.json, else the build's normalization, checked against the
    # other usual scalings), or a contract such as unit, raw, normalized, mean=M,std=S[,nhwc] (models/teacher_input.py).
    teacher_input: str = "auto"
    if_kd_loses: str = "ship-baseline"  # KD student worse than its no-KD baseline on validation: ship-baseline or fail
    bench_all: bool = False  # device runners: bench every variant there, not only the file that ships
    nproc: int = 1  # training ranks on this machine (torchrun + DDP); 1 trains in this process
    # Image folders (export/imageprep.py): target size "N" or "WxH" (None: the folder's median, ≤ 64 px on the long
    # side), channels "auto" (3 if any image is colour) / "1" / "3", and whether undecodable files are skipped.
    image_size: str | None = None
    channels: str = "auto"
    skip_bad_images: bool = False
    test_data: str | None = None  # a separate test set (folder or .npz): the ledger's test split; --data gives train/val

    def __post_init__(self) -> None:
        if self.task not in ("auto", "vision", "text"):
            raise ConfigError(f"--task must be auto, vision or text, got {self.task!r}.", "auto decides from --data.")
        if self.finetune_epochs < 0:
            raise ConfigError(f"--finetune-epochs must be ≥ 0, got {self.finetune_epochs}.", "Use e.g. 2; 0 uses an hf: teacher as it is.")
        if self.nproc < 1:
            raise ConfigError(f"--nproc must be ≥ 1, got {self.nproc}.", "Use 1 to train in this process, or N ≥ 2 for N DDP ranks on this machine.")
        if self.min_compression < 1:
            raise ConfigError(f"--min-compression must be ≥ 1, got {self.min_compression}.", "Use 1 to let the student be as large as the teacher.")
        if self.search not in ("capacity", "proxy"):
            raise ConfigError(f"--search must be 'capacity' or 'proxy', got {self.search!r}.", "capacity is the default.")
        if self.proxy_top_k < 1 or self.proxy_epochs < 1:
            raise ConfigError("--proxy-top-k and --proxy-epochs must be ≥ 1.", "E.g. --proxy-top-k 3 --proxy-epochs 3.")
        from .models.teacher import TEACHER_ARCHS

        if self.teacher_arch not in TEACHER_ARCHS:
            raise ConfigError(f"--teacher-arch must be one of {', '.join(TEACHER_ARCHS)}, got {self.teacher_arch!r}.",
                              "cnn suits tiny inputs (8x8 digits); vgg suits 28x28 images such as Fashion-MNIST.")
        if self.teacher_members < 1:
            raise ConfigError(f"--teacher-members must be ≥ 1, got {self.teacher_members}.", "Use 1 (one teacher) or e.g. 2 (an ensemble of two).")
        if (self.teacher_members > 1 or self.teacher_flip_average) and self.teacher != "auto":
            raise ConfigError("--teacher-members and --teacher-flip-average shape the built-in teacher; this build loads its teacher "
                              f"from {self.teacher!r}.", "Use --teacher auto, or leave them out.")
        if self.teacher_flip_average and not self.augment_flip:
            raise ConfigError("--teacher-flip-average averages the teacher over mirrored images, but without --augment-flip it never "
                              "learns them.", "Add --augment-flip (only for classes that look the same mirrored), or leave it out.")
        if self.nproc > 1 and (self.teacher_members > 1 or self.teacher_flip_average):
            raise ConfigError("--nproc > 1 does not yet support --teacher-members > 1 or --teacher-flip-average.", "Use --nproc 1 with them.")
        if self.teacher_views < 0:
            raise ConfigError(f"--teacher-views must be ≥ 0, got {self.teacher_views}.", "Use 0 (teacher online) or e.g. 4.")
        if self.student_embeddings not in ("teacher", "random"):
            raise ConfigError(f"--student-embeddings must be teacher or random, got {self.student_embeddings!r}.",
                              "teacher (the default) starts a text KD student from the teacher's word vectors.")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ConfigError(f"--word-dropout must be within [0, 1), got {self.word_dropout}.", "Use e.g. 0.2 (one word in five dropped).")
        if self.teacher_views > 1 and not (self.augment_shift or self.augment_flip or self.word_dropout):
            raise ConfigError(f"--teacher-views {self.teacher_views} needs augmentation to make the views differ.",
                              "Add --augment-shift 2 and/or --augment-flip for images, --word-dropout 0.2 for text, or use --teacher-views 1.")
        if self.augment_shift < 0:
            raise ConfigError(f"--augment-shift must be ≥ 0, got {self.augment_shift}.", "Use 0 (off) or a few pixels, e.g. 2.")
        if self.nproc > 1 and (self.augment_shift or self.augment_flip or self.kd_loss in ("fitnet", "attention") or self.teacher_views):
            raise ConfigError(
                "--nproc > 1 does not yet support an online teacher (augmentation, fitnet or attention KD).",
                "Use --nproc 1 with these options, or logit KD without augmentation for distributed training.",
            )
        if self.teacher_input != "auto":
            from .models.teacher_input import parse_teacher_input

            parse_teacher_input(self.teacher_input)  # a malformed contract fails here, naming the syntax
            if self.teacher == "auto":
                raise ConfigError(f"--teacher-input {self.teacher_input!r} describes a teacher file's input, but --teacher is auto "
                                  "(the built-in teacher reads the build's own input).", "Leave --teacher-input out, or give --teacher FILE.")
        if self.if_kd_loses not in ("ship-baseline", "fail"):
            raise ConfigError(f"--if-kd-loses must be ship-baseline or fail, got {self.if_kd_loses!r}.",
                              "ship-baseline (the default) ships the no-KD student when distillation made it worse; fail stops the build.")
        if self.max_int8_drop < 0:
            raise ConfigError(f"--max-int8-drop must be ≥ 0, got {self.max_int8_drop}.", "It is in accuracy points, e.g. 1.0.")
        if self.bench_runs < 1 or self.bench_warmup < 0:
            raise ConfigError("--bench-runs must be ≥ 1 and --bench-warmup ≥ 0.", "Use e.g. --bench-warmup 20 --bench-runs 200.")
        if self.channels not in ("auto", "1", "3"):
            raise ConfigError(f"--channels must be auto, 1 or 3, got {self.channels!r}.",
                              "auto: 3 (RGB) if any image is in colour, else 1 (grey).")
        self.image_hw()  # a bad --image-size fails here, before anything is written
        if self.test_data is not None and (not self.test_data or Path(self.test_data).resolve() == Path(self.data).resolve()):
            raise ConfigError(f"--test-data must be a separate folder or .npz file, got {self.test_data!r} (--data is {self.data!r}).",
                              "Give images the build never trains on; without --test-data the test split is carved out of --data.")

    def image_hw(self) -> tuple[int, int] | None:
        """--image-size as (height, width), or None for the folder's median."""
        if self.image_size is None:
            return None
        from .export.imageprep import MAX_SIDE, MIN_SIDE, parse_size

        try:
            return parse_size(self.image_size)
        except ValueError:
            raise ConfigError(f"--image-size must be N or WxH (width x height) with sides {MIN_SIDE}..{MAX_SIDE}, got {self.image_size!r}.",
                              "E.g. --image-size 32 (32x32) or --image-size 48x32 (48 wide, 32 high); leave it out for the folder's "
                              "median size, at most 64 px on the long side.") from None

    def image_key(self) -> list:
        """The image-file settings that differ from the defaults: a data-stage key part (empty for older builds)."""
        from .data.user import fingerprint

        return [*(["image_size", list(self.image_hw() or ())] if self.image_size is not None else []),
                *(["channels", self.channels] if self.channels != "auto" else []),
                *(["skip_bad_images"] if self.skip_bad_images else []),
                *(["test_data", fingerprint(self.test_data)] if self.test_data else [])]

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
    arch: str = "cnn"  # the built-in teacher's architecture ("" for a user's file)
    members: int = 1  # built-in teacher: members averaged (an ensemble when > 1)
    flip_average: bool = False  # built-in teacher: averaged over the image and its mirror
    member_test_accuracy: tuple[float, ...] = ()  # each member alone, when members > 1
    input_contract: str = ""  # a teacher file's input (teacher_input.parse_teacher_input); "" = the build's normalized input
    input_source: str = ""  # where the contract came from: "--teacher-input", "file metadata", "default"
    input_description: str = ""
    input_candidates: tuple[InputCandidate, ...] = ()  # the file's validation accuracy under each usual input scaling


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
        self._drop_stale_checkpoints(name, key)
        result, files = compute()
        seconds = time.perf_counter() - t0
        self.run.record_stage(name, key, to_jsonable(result), files, seconds)
        self.times.append(StageTime(name, round(seconds, 3), False, round(seconds, 3)))
        self.console.stage(name, f"done in {seconds:.1f} s")
        return result, key

    def _drop_stale_checkpoints(self, name: str, key: str) -> None:
        """Resume only a computation that began with the same inputs; --force always starts afresh.

        A training checkpoint left by an interrupted run with other settings (another temperature, say)
        must not be resumed under the new ones, or the "redone" stage would silently keep the old model.
        """
        if self.force or self.run.started_key(name) not in (None, key):
            for rel in STAGE_CHECKPOINTS.get(name, ()):
                path = self.run.root / rel
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.run.mark_started(name, key)


# What each resumable stage leaves behind while it runs (relative to the run directory).
STAGE_CHECKPOINTS = {
    "teacher": ("teacher/train.ckpt",),
    "size": ("size/proxy",),
    "baseline": ("distill/student_nokd.ckpt",),
    "distill": ("distill/student_kd.ckpt",),
}


def build(options: BuildOptions) -> dict[str, Any]:
    """Run the whole pipeline; returns the report as a dict (also written to report.json / report.md)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:  # `torchrun ... -m edge_distill build`: every rank lands here
        from .distill import ddp

        if ddp.launched_by_torchrun() and ddp.current() is None:
            return ddp.build_on_all_ranks(build, options)  # rank 0 comes back here inside the process group
    started = time.perf_counter()
    profile = load_profile(options.profile)  # errors before anything is written
    run = RunDir(options.run_dir())
    console = Console(quiet=options.quiet, log_path=run.path("build.log"))
    set_console(console)
    console.info(f"edge-distill {__version__}: building for profile {profile.name!r} into {run.root}")
    stages = Stages(run, options.force, console)
    _limit_threads()
    ranks = _training_ranks(options)

    from .bench import make_runner

    make_runner(options.runner)  # unknown runner, no emulator root, no device: fail before hours of training

    console.stage("profile", f"{profile.name}: {profile.description}")
    profile_key = hash_inputs(to_jsonable(profile))

    from .data.user import fingerprint, is_user_data

    # A user's file or folder is keyed by its content, so editing the data redoes the build.
    data_source = fingerprint(options.data) if is_user_data(options.data) else options.data
    from .text_stages import resolve_student, resolve_task

    task = resolve_task(options.task, options.data)
    family = resolve_student(options.student, task)  # a wrong-task family fails here, before any training
    if task == "text":
        from .text_stages import check_text_options

        check_text_options(options)
        if options.teacher_input != "auto":
            raise ConfigError("--teacher-input describes an image teacher's pixels; a text teacher reads its own tokenizer's ids.",
                              "Leave --teacher-input out for text builds.")
    elif options.word_dropout:
        raise ConfigError("--word-dropout drops words of training texts; this build is vision.",
                          "Leave it out; image views come from --augment-shift / --augment-flip.")
    if task == "text" and options.image_key():
        raise ConfigError("--image-size, --channels, --skip-bad-images and --test-data are for image data; this build is text.",
                          "Leave them out (a text dataset's test split comes from --data).")
    # Text adds its own settings to the key; an image build's key stays what it always was.
    text_key = ["text", options.text_field, options.label_field] if task == "text" else []
    data, data_key = stages("data", [data_source, options.seed, options.calib_count, *text_key, *options.image_key()], DataResult,
                            lambda: _data_stage(run, options, task))
    console.stage("data", f"{data.spec.name}: {data.n_train} train / {data.n_val} val / {data.n_test} test / {data.n_calib} calibration")

    if task == "text":
        from .text_stages import teacher_source_key

        teacher_source = [teacher_source_key(options), options.finetune_epochs if options.teacher != "auto" else options.teacher_epochs, "text"]
    else:
        teacher_source = options.teacher if options.teacher == "auto" else sha256_file(_teacher_path(options))
    teacher, teacher_key = stages(
        "teacher",
        [data_key, teacher_source, options.teacher_epochs, options.seed, *ranks, *([options.teacher_arch] if options.teacher_arch != "cnn" else []),
         *_teacher_recipe_key(options)],
        TeacherResult,
        lambda: _teacher_stage(run, options, data) if task == "vision" else _text_teacher_stage(run, options, data),
    )
    console.stage("teacher", f"{teacher.params:,} params, test accuracy {teacher.test_accuracy:.4f} ({teacher.source})")

    from .sizing import SizingResult

    sizing, size_key = stages(
        "size",
        [data_key, profile_key, family, teacher.params, options.min_compression, options.search,
         options.proxy_top_k, options.proxy_epochs, options.seed],
        SizingResult,
        lambda: _size_stage(run, options, data, profile, teacher, family),
    )
    console.stage("size", sizing.reason)

    train_settings = [options.student_epochs, options.seed, *ranks, *(_text_student_settings() if task == "text" else [])]
    # With a view bank the baseline trains on the same views as the KD student, so it depends on the teacher too.
    view_settings = [teacher_key, options.teacher_views, options.augment_shift, options.augment_flip,
                     *([options.word_dropout] if options.word_dropout else [])] if options.teacher_views else []
    # So does a text baseline that starts from the teacher's word vectors, like its KD student.
    if task == "text" and options.student_embeddings == "teacher":
        view_settings += [teacher_key, "embeddings", options.student_embeddings]
    baseline, baseline_key = stages(
        "baseline", [size_key, train_settings, *view_settings], StudentResult, lambda: _student_stage(run, options, data, sizing, None, "ce", view_teacher=teacher)
    )
    console.stage("baseline", f"no-KD student: test accuracy {baseline.test_accuracy:.4f}")
    _check_teacher_against_baseline(teacher, baseline, data, console)
    kd_settings = [options.kd_loss, options.temperature, options.alpha, options.beta, options.augment_shift, options.augment_flip,
                   *([options.teacher_views] if options.teacher_views else []), *([options.word_dropout] if options.word_dropout else []),
                   *(["embeddings", options.student_embeddings] if task == "text" else [])]
    student, student_key = stages(
        "distill",
        [size_key, teacher_key, train_settings, kd_settings],
        StudentResult,
        lambda: _student_stage(run, options, data, sizing, teacher, options.kd_loss),
    )
    console.stage("distill", f"KD student: test accuracy {student.test_accuracy:.4f}")

    from .verify import choose_shipped_student

    choice = choose_shipped_student(student.val_accuracy, baseline.val_accuracy, options.max_int8_drop, options.if_kd_loses)
    (console.warn if choice.shipped == "nokd" else console.info)(choice.note)
    shipped, shipped_key = (student, student_key) if choice.shipped == "kd" else (baseline, baseline_key)

    from .convert import ConvertResult

    conversion, convert_key = stages(
        "convert",
        # max_int8_drop decides how far the quality gate escalates, so it is an input of the convert stage.
        [shipped_key, teacher_key, data_key, options.max_int8_drop],
        ConvertResult,
        lambda: _convert_stage(run, options, data, sizing, shipped, teacher),
    )
    classical = None
    if task == "text":  # what a linear model on word n-grams reaches on the same splits, beside the teacher
        from .models.classical import ClassicalBaseline

        classical, _ = stages("text-baseline", [data_key, "tfidf-logreg"], ClassicalBaseline, lambda: _text_baseline_stage(run, data))
        console.stage("text-baseline", f"{classical.description}: test accuracy {classical.test_accuracy:.4f}")
    from .verify import VerifyResult, enforce_gate, format_ledger

    verified, verify_key = stages(
        "verify",
        [convert_key, baseline_key, options.max_int8_drop, "gate-vs-nokd", choice.shipped, *(["tfidf-logreg"] if classical else [])],
        VerifyResult,
        lambda: _verify_stage(run, options, data, sizing, teacher, baseline, student, conversion, choice.shipped, classical),
    )
    console.info(format_ledger(verified))
    enforce_gate(verified, conversion)
    from .verify import check_against_nokd

    nokd_warning = check_against_nokd(verified, options.if_kd_loses)
    if nokd_warning:
        console.warn(nokd_warning)

    from .bench import BenchSuite

    bench, _ = stages(
        "bench",
        [verify_key, options.runner, options.bench_warmup, options.bench_runs, profile.threads,
         *(["bench-all"] if options.bench_all and options.runner != "local" else [])],
        BenchSuite,
        lambda: _bench_stage(run, options, profile, data, conversion, sizing, teacher),
    )

    from .bench import FidelityResult

    fidelity = None
    if options.runner != "local":  # a device runtime: do its INT8 answers match the host's?
        fidelity, _ = stages(
            "fidelity",
            [verify_key, options.runner],
            FidelityResult,
            lambda: _fidelity_stage(run, options, profile, conversion),
        )
    from .bundle import BundleResult

    bundle, _ = stages("bundle", [verify_key, data_key, profile_key], BundleResult,
                       lambda: _bundle_stage(run, profile, data, conversion, verified))
    console.stage("bundle", ", ".join(f"{b.archive} ({b.archive_bytes:,} B)" for b in bundle.bundles))

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
        fidelity=fidelity,
        bundle=bundle,
        choice=choice,
        times=stages.times,
        total_seconds=time.perf_counter() - started,
    )
    console.info(f"report: {run.path('report.md')}  ({time.perf_counter() - started:.1f} s in all)")
    return report


# ---- stages ------------------------------------------------------------------------------------


def _text_baseline_stage(run: RunDir, data: DataResult):
    import dataclasses as dc

    import numpy as np

    from .data.text import load_texts
    from .models.classical import tfidf_logistic_regression

    splits = _splits(run, data)
    result, probs = tfidf_logistic_regression(load_texts(run.path(data.texts_path)), splits.y_train, splits.y_val, splits.y_test,
                                              data.spec.num_classes, progress=get_console().progress)
    with run.atomic_path("verify/tfidf_test_scores.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, probs)
    result = dc.replace(result, scores_path="verify/tfidf_test_scores.npy")
    return result, [run.path(result.scores_path)]


def _check_teacher_against_baseline(teacher: TeacherResult, baseline: StudentResult, data: DataResult, console: Console) -> None:
    """A teacher below the student trained without it can only teach it mistakes: a teacher file stops the build
    (most often it reads another input than it was trained on), the built-in teacher gets a warning."""
    import math

    n_val = data.n_val
    # Two standard errors of the baseline's validation accuracy, at least a point: a teacher a few samples behind a
    # strong student on a small split is noise, not a broken teacher.
    margin = max(0.01, 2 * math.sqrt(max(baseline.val_accuracy * (1 - baseline.val_accuracy), 1e-6) / max(n_val, 1)))
    if data.spec.task != "vision" or teacher.val_accuracy >= baseline.val_accuracy - margin:
        return
    if teacher.kind == "file":
        from .models.teacher_input import weak_teacher_error

        raise weak_teacher_error(teacher.val_accuracy, baseline.val_accuracy, n_val, teacher.source, teacher.input_contract, teacher.input_candidates)
    console.warn(f"the built-in teacher ({teacher.val_accuracy:.4f} on validation) is below the no-KD student ({baseline.val_accuracy:.4f}); "
                 "distillation is unlikely to help (more --teacher-epochs, or --teacher-arch vgg for larger images).")


def _training_ranks(options: BuildOptions) -> list[int]:
    """``[N]`` when training runs on N > 1 ranks, else ``[]``: a stage-key part.

    DDP results differ from single-process ones at the level of seed noise (BatchNorm sees per-rank
    batches), so the rank count is an input; single-process keys stay what they always were.
    """
    from .distill import ddp

    n = ddp.planned_world_size(options.nproc)
    if ddp.launched_by_torchrun() and options.nproc > 1:
        get_console().warn(f"--nproc {options.nproc} is ignored under torchrun: the world has {n} ranks.")
    return [n] if n > 1 else []


def _limit_threads() -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)


def _data_stage(run: RunDir, options: BuildOptions, task: str = "vision") -> tuple[DataResult, list[Path]]:
    from .data import prepare

    if task == "text":
        from .text_stages import data_stage

        return data_stage(run, options)

    spec, splits = prepare(options.data, options.seed, options.calib_count, image_size=options.image_hw(),
                           channels=None if options.channels == "auto" else int(options.channels),
                           skip_bad_images=options.skip_bad_images, test_data=options.test_data)
    with run.atomic_path("data/splits.npz") as tmp:
        with open(tmp, "wb") as fh:
            splits.save(fh)
    path = run.path("data/splits.npz")
    result = DataResult(spec, run.relative(path), len(splits.y_train), len(splits.y_val), len(splits.y_test), len(splits.y_calib))
    return result, [path]


def _text_student_settings() -> tuple[int, float, str]:
    """The text students' training settings that are not options, and their graph's revision."""
    from .models.text import TEXT_STUDENT_REVISION
    from .text_stages import STUDENT_BATCH, STUDENT_LR

    return STUDENT_BATCH, STUDENT_LR, f"graph-r{TEXT_STUDENT_REVISION}"


def _student_splits(run: RunDir, data: DataResult, sizing):
    """The splits as the chosen student takes them: a text student reads ids of its own vocabulary and length."""
    from .models.text import student_inputs

    splits = _splits(run, data)
    if not sizing.chosen.seq_len:
        return splits
    return dataclasses.replace(splits, **{f"x_{s}": student_inputs(sizing.chosen, getattr(splits, f"x_{s}")) for s in ("train", "val", "test", "calib")})


def _text_teacher_stage(run: RunDir, options: BuildOptions, data: DataResult):
    from .text_stages import teacher_stage

    return teacher_stage(run, options, data)


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

    from .distill import KDConfig, TrainConfig, accuracy, ddp, predict_logits, train
    from .distill.worker import ModelRecipe, cache_teacher_logits, train_distributed
    from .models.cnn import count_params
    from .models.teacher import averaged_teacher, builtin_teacher, load_teacher_file

    from .models.teacher_input import TeacherInput

    splits = _splits(run, data)
    train_result, member_accuracy = None, ()
    contract, contract_source, candidates = TeacherInput(), "built-in", ()
    if options.teacher == "auto":
        members = []
        for k in range(options.teacher_members):
            torch.manual_seed(options.seed + k)
            member = builtin_teacher(data.spec, options.teacher_arch)
            name = "teacher" if options.teacher_members == 1 else f"teacher {k + 1}/{options.teacher_members}"
            get_console().stage("teacher", f"training the built-in {options.teacher_arch} {name} ({count_params(member):,} params) for {options.teacher_epochs} epochs")
            # The teacher learns the invariances the student is trained with (--augment-shift / --augment-flip).
            cfg = TrainConfig(epochs=options.teacher_epochs, seed=options.seed + k, augment_shift=options.augment_shift,
                              augment_flip=options.augment_flip, background=data.spec.background)
            checkpoint = "teacher/train.ckpt" if k == 0 else f"teacher/train-{k}.ckpt"  # member 0 keeps a one-teacher build's file
            if ddp.wanted(options.nproc):
                result = train_distributed(run, ModelRecipe("teacher", data.spec, teacher_arch=options.teacher_arch), member, data.splits_path,
                                           cfg, KDConfig(loss="ce"), None, checkpoint, "teacher", options.nproc)
            else:
                result = train(member, splits.x_train, splits.y_train, splits.x_val, splits.y_val, cfg, KDConfig(loss="ce"), None,
                               run.path(checkpoint), name)
            train_result = train_result or result  # the report plots the first member's curve
            members.append(member.eval())
        if len(members) > 1:
            member_accuracy = tuple(accuracy(m, splits.x_test, splits.y_test) for m in members)
        model = averaged_teacher(members, options.teacher_flip_average, data.spec.input_shape[-1]).eval()
        with run.atomic_path("teacher/teacher.pt") as tmp:
            torch.save(model.state_dict(), tmp)
        kind, source = "builtin", f"auto (built-in {options.teacher_arch} teacher{_teacher_recipe_label(options)})"
    else:
        path = _teacher_path(options)
        contract, contract_source, candidates = _vetted_teacher_input(options, path, data, splits)
        model = load_teacher_file(path, data.spec, options.trust_pickle, contract)
        with run.atomic_path("teacher/teacher.pt") as tmp:
            tmp.write_bytes(path.read_bytes())
        kind, source = "file", str(path)
    get_console().stage("teacher", "caching teacher logits on the training split")
    if ddp.wanted(options.nproc):  # each rank computes one shard; rank 0 writes the cache once
        recipe = ModelRecipe("teacher" if kind == "builtin" else "teacher_file", data.spec, "teacher/teacher.pt", trust_pickle=options.trust_pickle,
                             teacher_arch=options.teacher_arch, teacher_input=contract.text() if kind == "file" else "")
        cached = cache_teacher_logits(run, recipe, data.splits_path, "teacher/logits_train.npy", options.nproc)
        get_console().stage("teacher", f"{cached.rows} logits computed in {len(cached.rows_per_rank)} shards {list(cached.rows_per_rank)}")
    else:
        with run.atomic_path("teacher/logits_train.npy") as tmp:
            with open(tmp, "wb") as fh:
                # In chunks, so a large training split shows a progress bar instead of a silent pause.
                chunks = range(0, len(splits.x_train), 512)
                logits = [predict_logits(model, splits.x_train[i : i + 512]) for i in get_console().progress(chunks, len(chunks), "teacher logits")]
                np.save(fh, np.concatenate(logits))
    result = TeacherResult(
        source=source,
        path="teacher/teacher.pt",
        kind=kind,
        params=count_params(model),
        val_accuracy=accuracy(model, splits.x_val, splits.y_val),
        test_accuracy=accuracy(model, splits.x_test, splits.y_test),
        logits_path="teacher/logits_train.npy",
        train=to_jsonable(train_result),
        arch=options.teacher_arch if kind == "builtin" else "",
        members=options.teacher_members if kind == "builtin" else 1,
        flip_average=options.teacher_flip_average and kind == "builtin",
        member_test_accuracy=member_accuracy,
        input_contract=contract.text() if kind == "file" else "",
        input_source=contract_source if kind == "file" else "built-in",
        input_description=contract.describe(data.spec.pixel_scale),
        input_candidates=candidates if kind == "file" else (),
    )
    return result, [run.path(result.path), run.path(result.logits_path)]


def _vetted_teacher_input(options: BuildOptions, path: Path, data: DataResult, splits):
    """The teacher file's input contract (flag, else its metadata, else the build's normalization), its validation
    accuracy under that and the other usual scalings, and a stop when the file clearly reads another input."""
    import numpy as np

    from .models.teacher import score_input_contracts
    from .models.teacher_input import TeacherInput, candidate_contracts, contract_from_metadata, parse_teacher_input, vet_teacher_input

    if options.teacher_input != "auto":
        contract, source = parse_teacher_input(options.teacher_input), "--teacher-input"
    else:
        from_file = contract_from_metadata(path)
        contract, source = (from_file, "file metadata") if from_file is not None else (TeacherInput(), "default")
    contracts = [contract] + [c for c in candidate_contracts(data.spec.input_shape[0]) if c != contract]
    get_console().stage("teacher", f"scoring the teacher file on the validation split under {len(contracts)} input scalings")
    scores = score_input_contracts(path, data.spec, options.trust_pickle, contracts, splits.x_val, splits.y_val)
    candidates = tuple(InputCandidate(c.text(), c.describe(data.spec.pixel_scale), acc, err) for c, (acc, err) in zip(contracts, scores))
    majority = float(np.bincount(splits.y_val).max() / len(splits.y_val))
    vet_teacher_input(candidates, source, majority, str(path))
    get_console().stage("teacher", f"input: {contract.describe(data.spec.pixel_scale)} ({source}); validation accuracy {candidates[0].val_accuracy}")
    return contract, source, candidates


def _teacher_recipe_key(options: BuildOptions) -> list:
    """What shapes the built-in teacher beyond its epochs and arch; empty for the original recipe, so the keys
    of earlier builds (and their cached teachers) stay valid."""
    if options.teacher != "auto":
        # A teacher file's stage vets its input contract; the marker retires results cached before that check existed.
        return ["input", options.teacher_input]
    return [*(["augment", options.augment_shift, options.augment_flip] if options.augment_shift or options.augment_flip else []),
            *(["members", options.teacher_members] if options.teacher_members > 1 else []),
            *(["flip-average"] if options.teacher_flip_average else [])]


def _teacher_recipe_label(options: BuildOptions) -> str:
    parts = ([f"ensemble of {options.teacher_members}"] if options.teacher_members > 1 else []) + (
        ["flip-averaged"] if options.teacher_flip_average else [])
    return f", {', '.join(parts)}" if parts else ""


def load_teacher_model(run: RunDir, teacher: TeacherResult, spec, trust_pickle: bool = False):
    import torch

    from .models.teacher import averaged_teacher, builtin_teacher, load_teacher_file

    if spec.task == "text":
        from .text_stages import load_teacher

        return load_teacher(run, spec)
    if teacher.kind == "builtin":
        members = [builtin_teacher(spec, teacher.arch or "cnn") for _ in range(teacher.members)]
        model = averaged_teacher(members, teacher.flip_average, spec.input_shape[-1])
        model.load_state_dict(torch.load(run.path(teacher.path), weights_only=True))
        return model.eval()
    from .models.teacher_input import parse_teacher_input

    return load_teacher_file(run.path(teacher.path), spec, trust_pickle, parse_teacher_input(teacher.input_contract))


def _size_stage(run: RunDir, options: BuildOptions, data: DataResult, profile: DeviceProfile, teacher: TeacherResult, family: str):
    from .sizing import choose_student, proxy_select

    result = choose_student(data.spec, profile, family, teacher.params, options.min_compression)
    if options.search == "proxy":
        result = proxy_select(
            result, data.spec, _splits(run, data), options.proxy_top_k, options.proxy_epochs, options.seed, run.path("size/proxy")
        )
    return result, []


def _student_stage(run, options, data, sizing, teacher: TeacherResult | None, loss: str,
                   view_teacher: TeacherResult | None = None) -> tuple[StudentResult, list[Path]]:
    """Train the student with ``loss``; ``teacher`` is None for the no-KD baseline, which still trains on the
    teacher's view bank (``view_teacher``) when --teacher-views is set."""
    import numpy as np
    import torch

    from .distill import LOSSES, KDConfig, TrainConfig, accuracy, ddp, train
    from .models.cnn import count_params
    from .models.students import build_student

    splits = _student_splits(run, data, sizing)
    name = "student_kd" if teacher is not None else "student_nokd"
    torch.manual_seed(options.seed)  # same initial weights for the KD student and its baseline
    model = build_student(sizing.chosen, data.spec)
    if data.spec.task == "text" and options.student_embeddings == "teacher":
        # Both students start from the teacher's word vectors, so the baseline differs from the KD student in
        # its loss only and the KD gain is the soft targets' own (--student-embeddings random: both random).
        from .text_stages import start_from_teacher_embeddings

        get_console().stage("distill" if teacher is not None else "baseline", "starting the student's embeddings from the teacher's word vectors")
        start_from_teacher_embeddings(model, run, teacher or view_teacher, data, sizing.chosen)
    kd = KDConfig(loss=loss, temperature=options.temperature, alpha=options.alpha, beta=options.beta)
    what = f"KD ({loss}, T={kd.temperature}, alpha={kd.alpha})" if teacher is not None else "hard labels only (no-KD baseline)"
    get_console().stage("distill" if teacher is not None else "baseline", f"training {sizing.chosen.label()} with {what}")
    cfg = TrainConfig(
        epochs=options.student_epochs, seed=options.seed, augment_shift=options.augment_shift, augment_flip=options.augment_flip,
        background=data.spec.background,
    )
    if data.spec.task == "text":
        batch_size, lr, _revision = _text_student_settings()
        cfg = dataclasses.replace(cfg, batch_size=batch_size, lr=lr)
    views = None
    if options.teacher_views and data.spec.task == "text":
        # The text analogue: the teacher labels word-dropout copies of the training texts; the baseline trains
        # on the same copies with their hard labels.
        from .text_stages import teacher_view_bank

        views = teacher_view_bank(run, teacher or view_teacher, data, sizing.chosen, options.teacher_views, options.word_dropout, options.seed)
    elif options.teacher_views:
        # A bank of fixed augmented views with the teacher's outputs on each replaces the online teacher;
        # the no-KD baseline trains on the same views, so the comparison isolates the teacher's signal.
        from .distill.views import build_view_bank

        bank_teacher = load_teacher_model(run, teacher or view_teacher, data.spec, trust_pickle=True)
        views = build_view_bank(bank_teacher, splits.x_train, options.teacher_views, cfg.augment_shift, cfg.augment_flip,
                                cfg.background, options.seed, with_maps=LOSSES.get(loss).needs_features)
        cfg = TrainConfig(epochs=cfg.epochs, seed=cfg.seed)
    if teacher is not None and data.spec.task == "text" and LOSSES.get(loss).needs_features:
        # A text teacher reads its own token ids, so it cannot run on the student's batch: its pooled hidden
        # states are computed once and served, with its cached logits, as a one-view bank.
        from .distill.views import ViewBank
        from .text_stages import teacher_hidden_states

        hidden = teacher_hidden_states(run, teacher, data.spec, _splits(run, data))
        views = ViewBank(splits.x_train[None], np.load(run.path(teacher.logits_path))[None], hidden[None])
    # Augmented views and feature maps need the teacher itself, running on each batch beside the student.
    online = views is None and teacher is not None and (cfg.augment_shift > 0 or cfg.augment_flip or LOSSES.get(loss).needs_features)
    if ddp.wanted(options.nproc):  # DDP ranks read the splits and the cached teacher logits from the run directory
        from .distill.worker import ModelRecipe, train_distributed

        train_result = train_distributed(
            run, ModelRecipe("student", data.spec, student=sizing.chosen), model, data.splits_path, cfg, kd,
            teacher.logits_path if teacher is not None else None, f"distill/{name}.ckpt", name, options.nproc,
        )
    else:
        teacher_logits = np.load(run.path(teacher.logits_path)) if teacher is not None and not online else None
        teacher_model = load_teacher_model(run, teacher, data.spec, trust_pickle=True) if online else None
        train_result = train(
            model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, cfg, kd, teacher_logits, run.path(f"distill/{name}.ckpt"), name,
            teacher=teacher_model, views=views,
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


def _convert_stage(run, options, data, sizing, student, teacher):
    from .convert import contract_from_spec, convert_student, export_onnx
    from .data.splits import balanced_subset

    splits = _student_splits(run, data, sizing)
    model = load_student_model(run, student, sizing, data.spec)
    # The quality gate's "more calibration" rung: a larger, differently seeded class-balanced draw from the
    # training split (never validation or test data).
    more = balanced_subset(splits.y_train, min(len(splits.y_train), 4 * len(splits.y_calib)), options.seed + 2)
    result = convert_student(
        model, getattr(model, "input_shape", data.spec.input_shape), splits.x_calib, splits.x_val, run, subdir="student",
        check_y=splits.y_val, calib_y=splits.y_calib, contract=contract_from_spec(data.spec),
        more_calib_x=splits.x_train[more], max_int8_drop=options.max_int8_drop, threads=os.cpu_count() or 1,
    )
    # The teacher goes to ONNX too, so it can be benchmarked in the same kind of separate process.
    files = [run.path(f.path) for f in result.files]
    if data.spec.task == "text":
        from .text_stages import export_teacher_onnx, write_student_tokenizer

        files.append(write_student_tokenizer(run, data, sizing.chosen))  # ships with the model: the device tokenizes with it
        onnx_path = export_teacher_onnx(run, teacher, data.spec, _splits(run, data))
        return result, files + ([onnx_path] if onnx_path else [])
    teacher_model = load_teacher_model(run, teacher, data.spec, trust_pickle=True)  # already vetted in the teacher stage
    export_onnx(teacher_model, data.spec.input_shape, run.path("teacher/teacher.onnx"))
    return result, files + [run.path("teacher/teacher.onnx")]


def _verify_stage(run, options, data, sizing, teacher, baseline, student, conversion, shipped_student="kd", classical=None):
    from .convert import run_onnx, run_tflite
    from .distill import predict_logits
    from .verify import Scored, build_ledger, median_ms, torch_latency_ms

    splits = _splits(run, data)
    x = x_teacher = splits.x_test
    if data.spec.task == "text":  # the teacher reads its own token ids, the students theirs
        from .text_stages import teacher_inputs

        x_teacher, x = teacher_inputs(run, teacher, splits, "test"), _student_splits(run, data, sizing).x_test
    threads = os.cpu_count() or 1
    teacher_model = load_teacher_model(run, teacher, data.spec, trust_pickle=True)
    scored = []
    for name, variant, trained, model in (
        ("teacher", "teacher_torch_fp32", teacher, teacher_model),
        ("student (no KD)", "nokd_torch_fp32", baseline, load_student_model(run, baseline, sizing, data.spec)),
        ("student (KD)", "torch_fp32", student, load_student_model(run, student, sizing, data.spec)),
    ):
        xs = x_teacher if model is teacher_model else x
        scored.append(Scored(name, variant, "torch", predict_logits(model, xs), None, trained.params, "float32", torch_latency_ms(model, xs, threads=threads)))
    if classical is not None:
        import numpy as np

        scored.append(Scored("TF-IDF + logistic regression", "tfidf_logreg", "scikit-learn", np.load(run.path(classical.scores_path)), None,
                             classical.features * data.spec.num_classes, "float64 (sparse TF-IDF features)"))
    for f in conversion.files:
        path = run.path(f.path)
        latencies: list[float] = []
        if f.variant.startswith("onnx"):
            logits, runtime = run_onnx(path, x, threads, latencies), "onnxruntime"
        else:
            logits, runtime = run_tflite(path, x, threads, latencies), "litert"
        scored.append(Scored(f"student {f.variant}", f.variant, runtime, logits, f.bytes, student.params, f.integer_description, median_ms(latencies)))
    where = (
        f"host ({platform.machine()}, {threads} threads), in-process, batch 1: median over the {len(x)} test-split invokes "
        "(torch: the first 64 forward passes); not the target device -- see the bench section for separate-process timings"
    )
    # The converted files are the shipped student's: their drop is measured against its fp32 self, and the gate
    # also holds them to the no-KD student.
    reference = "torch_fp32" if shipped_student == "kd" else "nokd_torch_fp32"
    result = build_ledger(scored, splits.y_test, reference, "tflite_int8", options.max_int8_drop, conversion.deploy_variant, where,
                          baseline_variant="nokd_torch_fp32", shipped_student=shipped_student)
    run.write_json("verify/ledger.json", to_jsonable(result))
    return result, [run.path("verify/ledger.json")]


def _bench_stage(run, options, profile, data, conversion, sizing=None, teacher=None):
    if data.spec.task == "text":
        return _text_bench_stage(run, options, profile, data, conversion, sizing, teacher)
    splits = _splits(run, data)
    # The agent reads test data already in each model's input layout: NCHW for ONNX, NHWC for TFLite.
    _write_npz(run, "bench/test_nchw.npz", splits.x_test, splits.y_test)
    _write_npz(run, "bench/test_nhwc.npz", splits.x_test.transpose(0, 2, 3, 1), splits.y_test)
    targets = [("teacher (ONNX Runtime fp32)", run.path("teacher/teacher.onnx"), "bench/test_nchw.npz")]
    targets += [(f"student {f.variant}", run.path(f.path), "bench/test_nhwc.npz") for f in conversion.files if f.variant.startswith("tflite")]
    return _bench_targets(run, options, profile, targets, run.path(_int8_file(conversion).path))


def _text_bench_stage(run, options, profile, data, conversion, sizing, teacher):
    """As ``_bench_stage``, with integer token ids: the student's (int32) and, when it exported, the teacher's own."""
    from .text_stages import teacher_inputs

    splits = _splits(run, data)
    _write_npz(run, TEXT_TEST_NPZ, _student_splits(run, data, sizing).x_test, splits.y_test)
    targets = []
    if run.path("teacher/teacher.onnx").is_file():
        _write_npz(run, "bench/teacher_test_ids.npz", teacher_inputs(run, teacher, splits, "test"), splits.y_test)
        targets.append(("teacher (ONNX Runtime fp32)", run.path("teacher/teacher.onnx"), "bench/teacher_test_ids.npz"))
    targets += [(f"student {f.variant}", run.path(f.path), TEXT_TEST_NPZ) for f in conversion.files if f.variant.startswith("tflite")]
    return _bench_targets(run, options, profile, targets, run.path(_int8_file(conversion).path))


def _write_npz(run: RunDir, relative: str, x, y) -> None:
    import numpy as np

    with run.atomic_path(relative) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x=x, y=y)


def _bench_targets(run: RunDir, options: BuildOptions, profile: DeviceProfile, targets: list[tuple[str, Path, str]], shipped: Path):
    """Benchmark each (label, model, test npz) with the device agent and save the suite.

    On a device runner only the file that ships is benchmarked there (all TFLite variants with --bench-all): each
    emulated fp32 variant costs minutes under qemu, and the others answer no deployment question.  The teacher (ONNX;
    devices rarely have onnxruntime) and the other variants run on this host; each result says where it ran.
    """
    from .bench import BenchSuite, bench_model, describe_host

    results = []
    for label, path, npz in get_console().progress(targets, len(targets), "bench models"):
        on_device = path.suffix != ".onnx" and (options.bench_all or path == shipped)
        runner = options.runner if on_device else "local"
        results.append(bench_model(path, runner_threads(runner, profile), options.bench_warmup, options.bench_runs, run.path(npz), runner=runner))
    suite = BenchSuite(labels=tuple(t[0] for t in targets), results=tuple(results), threads=runner_threads(options.runner, profile),
                       host=describe_host())
    run.write_json("bench/results.json", to_jsonable(suite))
    return suite, [run.path("bench/results.json")]


TEXT_TEST_NPZ = "bench/test_ids.npz"  # the student's int32 token ids and labels of the test split


def _int8_file(conversion):
    """The quantized file that passed the quality gate (full INT8 unless the gate had to escalate)."""
    return conversion.file(conversion.deploy_variant or "tflite_int8")


def runner_threads(runner: str, profile: DeviceProfile) -> int:
    """The profile's threads on a real device (ssh, adb); capped at this machine's cores where the agent runs here
    (local, and qemu-arm64, whose emulated threads are this host's)."""
    if runner.startswith(("ssh://", "adb")):
        return profile.threads
    return min(profile.threads, os.cpu_count() or 1)


def _fidelity_stage(run, options, profile, conversion):
    from .bench import cross_runtime_fidelity

    threads = runner_threads(options.runner, profile)
    npz = TEXT_TEST_NPZ if run.path(TEXT_TEST_NPZ).is_file() and run.path("student/tokenizer.json").is_file() else "bench/test_nhwc.npz"
    result = cross_runtime_fidelity(run.path(_int8_file(conversion).path), run.path(npz), options.runner, threads)
    run.write_json("bench/fidelity.json", to_jsonable(result))
    return result, [run.path("bench/fidelity.json")]


def _bundle_stage(run, profile, data, conversion, verified):
    from .bundle import ModelFacts, build_bundles

    spec, int8 = data.spec, _int8_file(conversion)
    shape = tuple(spec.input_shape)
    # Images are (C, H, W) for torch and NHWC in the .tflite file; other inputs keep their shape.
    nhwc = (1, shape[1], shape[2], shape[0]) if spec.task == "vision" and len(shape) == 3 else (1, *shape)
    extra: tuple[str, ...] = ()
    if spec.task == "text":  # the device tokenizes with the student's tokenizer file and export/tokenizer.py
        import importlib.resources

        from .data.tokenizer import WordTokenizer

        tokenizer = run.path("student/tokenizer.json")
        nhwc = (1, WordTokenizer.load(tokenizer).seq_len)
        extra = (str(tokenizer), str(importlib.resources.files("edge_distill.export") / "tokenizer.py"))
    facts = ModelFacts(
        extra_files=extra,
        name=f"{Path(spec.name).stem or spec.name}-{profile.name}", task=spec.task, class_names=tuple(spec.class_names), input_shape_nhwc=nhwc,
        pixel_scale=getattr(spec, "pixel_scale", 1.0), mean=getattr(spec, "mean", 0.0), std=getattr(spec, "std", 1.0),
        variant=int8.variant,
        variant_description=int8.integer_description, accuracy=verified.row(int8.variant).accuracy, n_test=verified.n_test,
        profile=profile.name, resize=getattr(spec, "resize", ""),
    )
    return build_bundles(run, run.path(int8.path), facts)


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"edge-distill": __version__, "python": platform.python_version()}
    for pkg in ("torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "ai-edge-litert", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
