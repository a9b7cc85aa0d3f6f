"""The size stage: the largest student of the family that fits the profile's budgets (or the best of a brief trial)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..data import DataResult
from ..profiles import DeviceProfile
from ..rundir import RunDir


@dataclass(frozen=True)
class SizeSettings:
    family: str
    teacher_params: int  # the student has at most teacher_params / min_compression parameters
    min_compression: float
    search: str  # capacity or proxy
    proxy_top_k: int
    proxy_epochs: int
    seed: int
    stage: ClassVar[str] = "size"
    reads_teacher: ClassVar[bool] = False  # only its size

    @classmethod
    def from_options(cls, options, family: str, teacher_params: int) -> SizeSettings:
        return cls(family, teacher_params, options.min_compression, options.search, options.proxy_top_k, options.proxy_epochs, options.seed)


def settings_from_options(options, task, teacher_params: int, spec) -> SizeSettings | PruneSettings:
    if options.init == "prune":
        return PruneSettings.from_options(options, teacher_params)
    from ..models.students import auto_families
    from ..sizing import AUTO
    from ..tasks import resolve_student

    family = resolve_student(options.student, task)
    if family == AUTO and options.student_init == "imagenet":
        family = "efficientnet-lite"  # the one family with ImageNet weights; its width is the pruning ratio the budget allows
    if family == AUTO and len(auto_families(spec)) == 1:
        family = auto_families(spec)[0]  # one family to search (cnn on small images): the stage key names it, as it always has
    return SizeSettings.from_options(options, family, teacher_params)


def size(run: RunDir, task, settings: SizeSettings | PruneSettings, data: DataResult, profile: DeviceProfile, teacher):
    """The size stage (a family's largest student that fits) or the prune stage (the teacher cut down to fit)."""
    if isinstance(settings, PruneSettings):
        return prune_teacher(run, task, settings, data, profile, teacher)
    return choose_size(run, settings, data, profile)


def choose_size(run: RunDir, settings: SizeSettings, data: DataResult, profile: DeviceProfile):
    from ..sizing import choose_student, proxy_select
    from .data import load_splits

    result = choose_student(data.spec, profile, settings.family, settings.teacher_params, settings.min_compression)
    if settings.search == "proxy":
        result = proxy_select(result, data.spec, load_splits(run, data), settings.proxy_top_k, settings.proxy_epochs, settings.seed,
                              run.path("size/proxy"))
    return result, []


@dataclass(frozen=True)
class PruneSettings:
    """--init prune: the student is the teacher with channels removed until it fits (models/prune.py)."""

    teacher_params: int  # the bound is min(profile budget, teacher_params / min_compression)
    min_compression: float
    criterion: str
    channel_multiple: int
    stage: ClassVar[str] = "prune"
    reads_teacher: ClassVar[bool] = True  # its weights

    @classmethod
    def from_options(cls, options, teacher_params: int) -> PruneSettings:
        return cls(teacher_params, options.min_compression, options.prune_criterion, options.prune_channel_multiple)


PRUNED_INIT = "size/pruned_init.pt"


def prune_teacher(run: RunDir, task, settings: PruneSettings, data: DataResult, profile: DeviceProfile, teacher):
    """Cut the teacher down to the profile's budgets; its weights are the KD student's starting point."""
    import torch

    from ..console import get_console
    from ..distill import accuracy
    from ..models.prune import prune_to_budget
    from ..sizing import PruneRecord, SizingResult
    from .data import load_splits

    console = get_console()
    splits = load_splits(run, data)
    bound = int(settings.teacher_params / settings.min_compression)
    console.stage("prune", f"cutting the teacher to at most {bound:,} params and the profile's budgets ({settings.criterion!r} importance)")
    pruned = prune_to_budget(task.load_teacher(run, teacher, data), data.spec, profile, bound, calib_x=splits.x_calib,
                             criterion=settings.criterion, channel_multiple=settings.channel_multiple,
                             progress=lambda line: console.stage("prune", line))
    with run.atomic_path(PRUNED_INIT) as tmp:
        torch.save(pruned.model.state_dict(), tmp)
    record = PruneRecord(pruned.source, pruned.teacher_params, pruned.criterion, tuple((s.params, s.channels) for s in pruned.steps),
                         PRUNED_INIT, accuracy(pruned.model, splits.x_val, splits.y_val))
    reason = (f"{pruned.summary()}; validation accuracy right after the cut (BatchNorm statistics re-estimated, no training): "
              f"{record.val_accuracy_at_cut:.4f}")
    sizing = SizingResult(pruned.config(), pruned.cost, (), reason, pruned.max_params, pruning=record)
    return sizing, [run.path(PRUNED_INIT)]
