"""The baseline and distill stages: the sized student trained on hard labels alone, and with the teacher."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..console import get_console
from ..data import DataResult
from ..rundir import RunDir
from ..serde import to_jsonable
from .teacher import TeacherResult


@dataclass(frozen=True)
class KDSettings:
    loss: str
    temperature: float
    alpha: float
    beta: float


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

    @classmethod
    def from_options(cls, options, task, world_size: int, distill: bool) -> StudentSettings:
        kd = KDSettings(options.kd_loss, options.temperature, options.alpha, options.beta) if distill else None
        views = (ViewSettings(options.teacher_views, options.augment_shift, options.augment_flip, options.word_dropout)
                 if options.teacher_views else None)
        return cls(options.student_epochs, options.seed, options.augment_shift, options.augment_flip, options.nproc, world_size, kd, views,
                   options.student_embeddings, task.student_constants())

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
class StudentResult:
    label: str
    path: str
    params: int
    loss: str
    val_accuracy: float
    test_accuracy: float
    train: Any = None


def train_student(run: RunDir, task, settings: StudentSettings, data: DataResult, sizing, teacher: TeacherResult) -> tuple[StudentResult, list[Path]]:
    """Train the sized student; the no-KD baseline (``settings.kd`` None) still uses ``teacher`` for a view bank or
    starting embeddings when its settings ask for them, never for its loss."""
    import torch

    from ..distill import KDConfig, accuracy
    from ..models.cnn import count_params
    from ..models.students import build_student

    splits = task.student_splits(run, data, sizing)
    torch.manual_seed(settings.seed)  # same initial weights for the KD student and its baseline
    model = build_student(sizing.chosen, data.spec)
    task.init_student(model, run, settings, teacher, data, sizing, settings.stage)
    kd = KDConfig(loss="ce") if settings.kd is None else KDConfig(loss=settings.kd.loss, temperature=settings.kd.temperature,
                                                                   alpha=settings.kd.alpha, beta=settings.kd.beta)
    what = f"KD ({kd.loss}, T={kd.temperature}, alpha={kd.alpha})" if settings.kd else "hard labels only (no-KD baseline)"
    get_console().stage(settings.stage, f"training {sizing.chosen.label()} with {what}")
    train_result = _fit(run, task, settings, data, sizing, teacher, model, splits, kd)
    with run.atomic_path(f"distill/{settings.name}.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    result = StudentResult(label=sizing.chosen.label(), path=f"distill/{settings.name}.pt", params=count_params(model), loss=kd.loss,
                           val_accuracy=train_result.best_val_accuracy, test_accuracy=accuracy(model, splits.x_test, splits.y_test),
                           train=to_jsonable(train_result))
    return result, [run.path(result.path)]


def _train_config(settings: StudentSettings, data: DataResult):
    from ..distill import TrainConfig

    constants = {k: v for k, v in settings.task_constants.items() if k in ("batch_size", "lr")}
    return TrainConfig(epochs=settings.epochs, seed=settings.seed, augment_shift=settings.augment_shift, augment_flip=settings.augment_flip,
                       background=data.spec.background, **constants)


def _fit(run: RunDir, task, settings: StudentSettings, data: DataResult, sizing, teacher: TeacherResult, model, splits, kd):
    """The training run itself: with a view bank, cached features, the teacher online, or its cached logits."""
    import numpy as np

    from ..distill import LOSSES, ddp, train

    cfg = _train_config(settings, data)
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
    return train(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, cfg, kd, teacher_logits, run.path(checkpoint),
                 settings.name, teacher=teacher_model, views=views)


def load_student_model(run: RunDir, student: StudentResult, sizing, spec):
    import torch

    from ..models.students import build_student

    model = build_student(sizing.chosen, spec)
    model.load_state_dict(torch.load(run.path(student.path), weights_only=True))
    return model.eval()
