"""The baseline and distill stages: the sized student trained on hard labels alone, and with the teacher.

With ``--unlabelled`` the KD student trains on the training split followed by the transfer set (no labels there:
the teacher's soft targets alone teach it), and a third stage, ``pseudo-label``, trains the same student on the same
samples with plain CE on the teacher's top-1 classes; the no-KD baseline keeps to the labelled split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from ..console import get_console
from ..data import DataResult
from ..data.pixels import take_rows
from ..errors import ConfigError
from ..rundir import RunDir
from ..serde import to_jsonable
from .teacher import TeacherResult
from .transfer import TransferResult, load_transfer


@dataclass(frozen=True)
class KDSettings:
    loss: str
    temperature: float
    alpha: float
    beta: float
    ce_average: ClassVar[str] = "batch"  # a fully labelled batch: either average is the plain mean


@dataclass(frozen=True)
class TransferKDSettings(KDSettings):
    """--unlabelled: the KD student's batches mix labelled and transfer samples, and ``ce_average`` says what the hard-label
    term averages over (``losses.hard_label_ce``).  A subclass, so that builds without a transfer set keep their keys."""

    ce_average: str = "batch"


@dataclass(frozen=True)
class ViewSettings:
    """--teacher-views: the teacher's outputs on fixed augmented views replace the online teacher (for both students)."""

    views: int
    augment_shift: int
    augment_flip: bool
    word_dropout: float


@dataclass(frozen=True)
class StudentSettings:
    epochs: int
    seed: int
    augment_shift: int
    augment_flip: bool
    nproc: int
    world_size: int  # DDP results differ from single-process ones at the level of seed noise
    kd: KDSettings | None  # None: the no-KD baseline
    views: ViewSettings | None
    student_embeddings: str  # text students: "teacher" (start from the teacher's word vectors) or "random"
    task_constants: dict[str, Any] = field(default_factory=dict)  # Task.student_constants()
    pseudo_labels: ClassVar[bool] = False  # a class constant, not a field: the two existing stages' keys stay as they were
    from_pruned: ClassVar[bool] = False  # start from the weights the prune stage cut out of the teacher (--init prune)

    @classmethod
    def from_options(cls, options, task, world_size: int, distill: bool) -> StudentSettings:
        kd = KDSettings(options.kd_loss, options.temperature, options.alpha, options.beta) if distill else None
        views = (ViewSettings(options.teacher_views, options.augment_shift, options.augment_flip, options.word_dropout)
                 if options.teacher_views else None)
        return cls(options.student_epochs, options.seed, options.augment_shift, options.augment_flip, options.nproc, world_size, kd, views,
                   options.student_embeddings, task.student_constants())

    def epoch_rows(self, n_train: int) -> int:
        """Training rows an epoch passes over: the split as it is (the --unlabelled baseline repeats it)."""
        return n_train

    @property
    def loss(self) -> str:
        return self.kd.loss if self.kd else "ce"

    @property
    def name(self) -> str:
        return "student_kd" if self.kd else "student_nokd"

    @property
    def stage(self) -> str:
        return "distill" if self.kd else "baseline"


@dataclass(frozen=True)
class PseudoLabelSettings(StudentSettings):
    """The pseudo-label student: the KD student's samples (labelled split + transfer set) and seed, plain CE on the
    teacher's top-1 class where there is no label -- so the report shows what the teacher's *soft* targets add."""

    pseudo_labels: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "student_pseudo"

    @property
    def stage(self) -> str:
        return "pseudo-label"


@dataclass(frozen=True)
class EqualStepsBaselineSettings(StudentSettings):
    """--unlabelled: the no-KD baseline passes over its labelled split repeatedly, ``samples_per_epoch`` samples an epoch
    (the KD student's labelled + transfer samples), so it takes the same optimizer steps as the students it is compared
    with; alone, a 5 % label split gets 20x fewer steps, which flatters them (digits, 140 labels: 73 % at 8 epochs)."""

    samples_per_epoch: int = 0

    def epoch_rows(self, n_train: int) -> int:
        return max(n_train, self.samples_per_epoch)


def kd_settings(cls: type[StudentSettings], options, task, world_size: int, transfer: TransferResult | None) -> StudentSettings:
    """A KD student's settings (``cls``: StudentSettings, or PrunedKDSettings for the student cut out of the teacher); with a
    transfer set, its KD part also says how the hard-label term averages a batch that mixes labelled and transfer samples."""
    settings = cls.from_options(options, task, world_size, distill=True)
    if transfer is None:
        return settings
    return replace(settings, kd=TransferKDSettings(**asdict(settings.kd), ce_average=options.transfer_ce_average))


def baseline_settings(options, task, world_size: int, data: DataResult, transfer: TransferResult | None) -> StudentSettings:
    """The no-KD baseline's settings: the same steps as the KD student when a transfer set adds samples to its epochs."""
    settings = started(StudentSettings.from_options(options, task, world_size, distill=False), options)
    if transfer is None:
        return settings  # unchanged, so the stage keys of builds without --unlabelled stay as they were
    return EqualStepsBaselineSettings(**{f.name: getattr(settings, f.name) for f in fields(settings)},
                                      samples_per_epoch=data.n_train + transfer.n)


@dataclass(frozen=True)
class PrunedKDSettings(StudentSettings):
    """--init prune: the KD student starts from the teacher's surviving weights; the plain ``distill`` stage then trains the
    same architecture from scratch with the same KD, a comparison row in the ledger."""

    from_pruned: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "student_kd_pruned"

    @property
    def stage(self) -> str:
        return "distill-pruned"


@dataclass(frozen=True)
class StartedSettings(StudentSettings):
    """--student-init imagenet|FILE: a student that starts from those weights.  The no-KD baseline fine-tunes them on labels,
    the KD student (its own stage, ``distill-pretrained``) distils into them, and the plain ``distill`` stage trains the same
    architecture from random weights: the report's from zero / pretrained / pretrained + KD on one budget."""

    init: str = "scratch"  # imagenet or the file's path (where to read it)
    init_content: str = "scratch"  # imagenet or file:<sha256> (what the stage key must change with)

    @property
    def name(self) -> str:
        return "student_kd_pretrained" if self.kd else "student_nokd"

    @property
    def stage(self) -> str:
        return "distill-pretrained" if self.kd else "baseline"


def started(settings: StudentSettings, options) -> StudentSettings:
    """The settings with --student-init's starting weights; unchanged (and so the stage keys) with --student-init scratch."""
    if options.student_init == "scratch":
        return settings
    from ..models.pretrained import describe_init

    return StartedSettings(**{f.name: getattr(settings, f.name) for f in fields(settings)}, init=options.student_init,
                           init_content=describe_init(options.student_init))


def has_twin(options) -> bool:
    """Whether the KD student that ships starts from other weights than random ones, with a from-scratch twin beside it."""
    return options.init == "prune" or options.student_init != "scratch"


def twin_settings(options, task, world_size: int, transfer: TransferResult | None) -> tuple[str, StudentSettings] | None:
    """--init prune / --student-init: what the shipping KD student is called and its settings (``kd`` becomes its twin)."""
    if options.init == "prune":
        return "pruned + KD", kd_settings(PrunedKDSettings, options, task, world_size, transfer)
    if options.student_init != "scratch":
        return "pretrained + KD", started(kd_settings(StudentSettings, options, task, world_size, transfer), options)
    return None


@dataclass(frozen=True)
class StudentResult:
    label: str
    path: str
    params: int
    loss: str
    val_accuracy: float
    test_accuracy: float
    train: Any = None


@dataclass(frozen=True)
class Students:
    """The build's trained students and their stage keys; ``pseudo`` only with --unlabelled, ``scratch_kd`` (the same
    architecture distilled from random weights) only with --init prune or --student-init, where ``kd`` is the pruned or
    pretrained one (and, with --student-init, ``baseline`` the pretrained one fine-tuned on labels)."""

    baseline: StudentResult
    baseline_key: str
    kd: StudentResult
    kd_key: str
    pseudo: StudentResult | None = None
    pseudo_key: str | None = None
    scratch_kd: StudentResult | None = None
    scratch_kd_key: str | None = None
    kd_label: str = "KD"  # "pruned + KD" / "pretrained + KD" beside a from-scratch twin

    def keys(self) -> list[str]:
        return [self.baseline_key, self.kd_key, *(key for key in (self.pseudo_key, self.scratch_kd_key) if key)]

    def shipped(self, choice) -> tuple[StudentResult, str]:
        """The student the build converts (``verify.StudentChoice``), and its key."""
        return (self.kd, self.kd_key) if choice.shipped == "kd" else (self.baseline, self.baseline_key)


def world_size(options) -> int:
    """How many ranks train: DDP results differ from single-process ones at the level of seed noise."""
    from ..distill import ddp

    n = ddp.planned_world_size(options.nproc)
    if ddp.launched_by_torchrun() and options.nproc > 1:
        get_console().warn(f"--nproc {options.nproc} is ignored under torchrun: the world has {n} ranks.")
    return n


def train_student(run: RunDir, task, settings: StudentSettings, data: DataResult, sizing, teacher: TeacherResult,
                  transfer: TransferResult | None = None) -> tuple[StudentResult, list[Path]]:
    """Train the sized student; the no-KD baseline (``settings.kd`` None) still uses ``teacher`` for a view bank or
    starting embeddings when its settings ask for them, never for its loss.  ``transfer``: the KD or pseudo-label
    student's extra samples."""
    import torch

    from ..distill import KDConfig, accuracy
    from ..models.cnn import count_params
    from ..models.students import build_student

    splits = task.student_splits(run, data, sizing)
    torch.manual_seed(settings.seed)  # same initial weights for the KD student and its baseline
    model = build_student(sizing.chosen, data.spec)
    task.init_student(model, run, settings, teacher, data, sizing, settings.stage)
    if settings.from_pruned:
        model.load_state_dict(torch.load(run.path(sizing.pruning.init_path), weights_only=True))
    start = getattr(settings, "init", "scratch")
    if start != "scratch":
        from ..models.pretrained import start_from

        start = start_from(model, start, sizing.chosen, data.spec, splits.x_train[:512])
    kd = KDConfig(loss="ce") if settings.kd is None else KDConfig(loss=settings.kd.loss, temperature=settings.kd.temperature,
                                                                   alpha=settings.kd.alpha, beta=settings.kd.beta,
                                                                   ce_average=settings.kd.ce_average)
    what = (f"KD ({kd.loss}, T={kd.temperature}, alpha={kd.alpha})" + (", from the weights cut out of the teacher" if settings.from_pruned else "")
            if settings.kd else
            "hard labels and the teacher's top-1 class (pseudo-labels)" if settings.pseudo_labels else "hard labels only (no-KD baseline)")
    extra = f", on {splits.y_train.size:,} labelled + {transfer.n:,} transfer samples" if transfer is not None else ""
    extra += f", starting from {start}" if start != "scratch" else ""
    rows = settings.epoch_rows(splits.y_train.size)
    if rows > splits.y_train.size:
        extra = f", its {splits.y_train.size:,} labelled samples repeated to {rows:,} an epoch (the KD student's steps)"
    get_console().stage(settings.stage, f"training {sizing.chosen.label()} with {what}{extra}")
    train_result = _fit(run, task, settings, data, sizing, teacher, model, splits, kd, transfer)
    with run.atomic_path(f"distill/{settings.name}.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    result = StudentResult(label=sizing.chosen.label(), path=f"distill/{settings.name}.pt", params=count_params(model), loss=kd.loss,
                           val_accuracy=train_result.best_val_accuracy, test_accuracy=accuracy(model, splits.x_test, splits.y_test),
                           train=to_jsonable(train_result))
    _warn_at_the_floor(settings.stage, result.val_accuracy, splits.y_val, settings.epochs)
    return result, [run.path(result.path)]


def _warn_at_the_floor(stage: str, val_accuracy: float, y_val, epochs: int) -> None:
    """A student no better than always answering the most frequent class has learned nothing: say so, whichever ships."""
    import numpy as np

    majority = float(np.bincount(y_val[y_val >= 0]).max() / max(1, (y_val >= 0).sum()))
    if val_accuracy <= majority + 0.005:
        get_console().warn(f"[{stage}] the student's validation accuracy {val_accuracy:.4f} is no better than always answering the "
                           f"most frequent class ({majority:.4f}): it has not learned the task in {epochs} epochs. Train longer "
                           "(--student-epochs), or pick a smaller --student family for this much data.")


def _train_config(settings: StudentSettings, data: DataResult):
    from ..distill import TrainConfig

    constants = {k: v for k, v in settings.task_constants.items() if k in ("batch_size", "lr")}
    return TrainConfig(epochs=settings.epochs, seed=settings.seed, augment_shift=settings.augment_shift, augment_flip=settings.augment_flip,
                       background=data.spec.background, **constants)


def _fit(run: RunDir, task, settings: StudentSettings, data: DataResult, sizing, teacher: TeacherResult, model, splits, kd,
         transfer: TransferResult | None):
    """The training run itself: with a view bank, cached features, the teacher online, or its cached logits."""
    import numpy as np

    from ..distill import LOSSES, ddp, train

    cfg = _train_config(settings, data)
    if transfer is not None and (settings.views or ddp.wanted(settings.nproc)):
        raise ConfigError("--unlabelled does not yet combine with --teacher-views or DDP training (--nproc > 1, torchrun).",
                          "Leave those out with --unlabelled: one process, the teacher's cached logits or the teacher online.")
    views = None
    if settings.views:
        views, cfg = task.view_bank(run, settings, teacher, data, sizing, splits, cfg, kd.loss)
    distilling = settings.kd is not None
    if distilling and views is None:
        views = task.feature_bank(run, teacher, data, splits, kd.loss)
    # Augmented views and feature maps need the teacher itself, running on each batch beside the student.
    online = views is None and distilling and (cfg.augment_shift > 0 or cfg.augment_flip or LOSSES.get(kd.loss).needs_features)
    checkpoint = f"distill/{settings.name}.ckpt"
    if ddp.wanted(settings.nproc):  # DDP ranks read the splits and the cached teacher logits from the run directory
        from ..distill.worker import ModelRecipe, train_distributed

        return train_distributed(run, ModelRecipe("student", data.spec, student=sizing.chosen), model, data.splits_path, cfg, kd,
                                 teacher.logits_path if distilling else None, checkpoint, settings.name, settings.nproc)
    teacher_logits = np.load(run.path(teacher.logits_path)) if distilling and not online else None
    teacher_model = task.load_teacher(run, teacher, data) if online else None
    x_train, y_train = splits.x_train, splits.y_train
    rows = settings.epoch_rows(len(y_train))
    if rows > len(y_train):  # the --unlabelled baseline: as many steps as the KD student
        repeat = np.resize(np.arange(len(y_train)), rows)
        x_train, y_train = take_rows(x_train, repeat), y_train[repeat]  # uint8 photos stay uint8
    if transfer is not None:
        x_train, y_train, teacher_logits = _with_transfer(run, task, settings, sizing, transfer, x_train, y_train, teacher_logits)
    return train(model, x_train, y_train, splits.x_val, splits.y_val, cfg, kd, teacher_logits, run.path(checkpoint),
                 settings.name, teacher=teacher_model, views=views)


def _with_transfer(run: RunDir, task, settings: StudentSettings, sizing, transfer: TransferResult, x, y, teacher_logits):
    """The training split followed by the transfer set, whose labels are UNLABELLED for the KD student (its CE skips
    them, its KD term does not) and the teacher's top-1 classes for the pseudo-label student; the file's own labels
    never train."""
    import numpy as np

    from ..data.spec import UNLABELLED

    x_transfer, logits = load_transfer(run, transfer)
    y_transfer = logits.argmax(1).astype(np.int64) if settings.pseudo_labels else np.full(len(logits), UNLABELLED, np.int64)
    x = np.concatenate([x, task.student_inputs(sizing, x_transfer).astype(x.dtype)])
    y = np.concatenate([y, y_transfer])
    return x, y, None if teacher_logits is None else np.concatenate([teacher_logits, logits.astype(teacher_logits.dtype)])


def load_student_model(run: RunDir, student: StudentResult, sizing, spec):
    import torch

    from ..models.students import build_student

    model = build_student(sizing.chosen, spec)
    model.load_state_dict(torch.load(run.path(student.path), weights_only=True))
    return model.eval()
