"""Tasks: what differs between distilling an image classifier and a text classifier.

A ``Task`` owns everything the stages must not know about: which options make sense, how the data is prepared,
how the teacher is trained or loaded and what it reads, what the student reads, what the benchmark and the
bundle feed the model.  The stages (``stages/``) call these hooks and never ask which task they run.  A third
task is a new module here with a ``Task`` subclass, plus its line in ``TASK_MODULES``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # names for annotations only: importing them here would load torch for `--help`
    import numpy as np

    from ..bundle import BundleInput
    from ..data import DataResult, Splits
    from ..models.classical import ClassicalBaseline
    from ..options import BuildOptions
    from ..rundir import RunDir
    from ..sizing import SizingResult
    from ..stages.teacher import TeacherResult
    from ..stages.transfer import TransferSet

# name → module holding its Task subclass (imported on demand, so a vision build never imports the text code).
TASK_MODULES = {"vision": "edge_distill.tasks.vision", "text": "edge_distill.tasks.text"}
FALLBACK_TASK = "vision"  # what --task auto picks when no other task claims the data


class Task:
    """The hooks a task provides.  Defaults suit a task whose student reads the teacher's input as it is."""

    name: str = ""
    default_student: str = ""  # the student family --student auto picks
    device_test_npz: str = ""  # the test split in the .tflite file's input layout, written by bench_targets
    has_classical_baseline: bool = False  # whether classical_baseline gives a non-neural ledger row
    takes_modules: bool = False  # whether edge_distill.build takes nn.Module teachers and students (checked on a batch of the data)

    # ---- options and data
    def claims(self, data: str) -> bool:
        """Whether --task auto should pick this task for --data ``data``."""
        return False

    def refusal(self, data: str) -> tuple[str, str]:
        """The error (message, hint) when --task names this task but --data is not of it."""
        return f"--task {self.name} cannot read --data {data}.", "Leave --task out to let the data decide."

    def check_options(self, options: BuildOptions) -> None:
        """Refuse options that make no sense for this task, before anything runs."""

    def data_settings(self, options: BuildOptions) -> Any:
        """The data stage's settings (a frozen dataclass): only the options this task's data preparation reads."""
        raise NotImplementedError

    def data_inputs(self, options: BuildOptions) -> list[str]:
        """Keys of the data's content (a user's files), so editing them redoes the build."""
        return []

    def prepare_data(self, run: RunDir, settings: Any) -> tuple[DataResult, list[Path]]:
        raise NotImplementedError

    def input_contract(self, spec):
        """What the calibration and check samples must look like (``convert.InputContract``): dtype, range, statistics."""
        raise NotImplementedError

    # ---- teacher
    def teacher_settings(self, options: BuildOptions, world_size: int) -> Any:
        raise NotImplementedError

    def teacher_inputs(self, options: BuildOptions) -> list[str]:
        """Keys of a teacher file's (or directory's) content."""
        return []

    def make_teacher(self, run: RunDir, settings: Any, data: DataResult) -> tuple[TeacherResult, list[Path]]:
        raise NotImplementedError

    def load_teacher(self, run: RunDir, teacher: TeacherResult, data: DataResult):
        """The teacher as a torch module in eval mode (its files were vetted by the teacher stage)."""
        raise NotImplementedError

    def teacher_split_inputs(self, run: RunDir, teacher: TeacherResult, splits: Splits, split: str) -> np.ndarray:
        """What the teacher reads for ``split`` (the student may read something else: ``student_splits``)."""
        return getattr(splits, f"x_{split}")

    def check_teacher(self, teacher: TeacherResult, baseline_val_accuracy: float, data: DataResult) -> None:
        """Once the no-KD student is known: stop or warn when the teacher cannot teach it anything."""

    # ---- a transfer set (--unlabelled)
    def unlabelled_settings(self, options: BuildOptions) -> Any:
        """The transfer stage's settings (a frozen dataclass): --unlabelled and the options that say how this task reads it."""
        raise ConfigError(f"--unlabelled is not supported for {self.name} builds yet.", "Leave it out.")

    def check_unlabelled(self, options: BuildOptions, data: DataResult) -> None:
        """Read --unlabelled, if given, far enough to refuse a malformed file before the teacher trains (its samples
        are prepared, and their overlap with the splits found, after it).  Tasks without a transfer set refuse the
        option in ``unlabelled_settings``."""

    def prepare_unlabelled(self, run: RunDir, settings: Any, data: DataResult, teacher: TeacherResult) -> TransferSet:
        """The --unlabelled samples prepared exactly like the training split (same size, channels and normalization, or
        the same tokenizer), what the teacher reads of them, their labels where the file has them, and which of them the
        data stage's train / val / test splits already hold (``TransferSet.overlap``; the transfer stage leaves those out)."""
        raise NotImplementedError

    # ---- students
    def student_constants(self) -> dict[str, Any]:
        """Training settings of this task's students that are not options (batch size, learning rate, graph revision)."""
        return {}

    def student_splits(self, run: RunDir, data: DataResult, sizing: SizingResult) -> Splits:
        """The splits as the chosen student reads them."""
        from ..stages.data import load_splits

        return load_splits(run, data)

    def student_inputs(self, sizing: SizingResult, x: np.ndarray) -> np.ndarray:
        """Inputs as the data stage prepares them (a transfer set's too), as the chosen student reads them."""
        return x

    def student_reads_teacher(self, settings: Any) -> bool:
        """Whether even the no-KD student starts from something of the teacher's (then its key includes the teacher)."""
        return False

    def init_student(self, model, run: RunDir, settings: Any, teacher: TeacherResult | None, data: DataResult, sizing: SizingResult,
                     stage: str) -> None:
        """Give a fresh student its starting weights beyond the random ones (both students alike)."""

    def view_bank(self, run: RunDir, settings: Any, teacher: TeacherResult, data: DataResult, sizing: SizingResult, splits: Splits,
                  cfg, loss: str):
        """--teacher-views: (the teacher's outputs on fixed views of the training split, the train config to use with them)."""
        raise NotImplementedError

    def feature_bank(self, run: RunDir, teacher: TeacherResult, data: DataResult, splits: Splits, loss: str):
        """Cached teacher features served to a feature loss when the teacher cannot run on the student's batch; None: online."""
        return None

    # ---- after training
    def classical_baseline(self, run: RunDir, data: DataResult) -> tuple[ClassicalBaseline, np.ndarray]:
        """A non-neural reference model on the same splits (a ledger row beside the teacher) and its test-split scores."""
        raise NotImplementedError

    def export_for_device(self, run: RunDir, data: DataResult, sizing: SizingResult, teacher: TeacherResult) -> list[Path]:
        """Files that go with the converted student (the teacher's ONNX for its benchmark, a tokenizer, ...)."""
        raise NotImplementedError

    def bench_targets(self, run: RunDir, data: DataResult, sizing: SizingResult, teacher: TeacherResult, conversion) -> list[tuple[str, Path, str]]:
        """(label, model file, test .npz in that model's input layout) for every model the bench stage times."""
        raise NotImplementedError

    def bundle_input(self, run: RunDir, data: DataResult) -> tuple[tuple[int, ...], tuple[str, ...], BundleInput]:
        """The .tflite file's input shape (batch 1, as the device feeds it), extra files the bundle ships, and how the
        bundle describes and prepares that input."""
        raise NotImplementedError


def resolve_student(student: str, task: Task) -> str:
    """``auto`` → the task's default family; a family of the wrong task is refused before anything trains."""
    from ..models.students import STUDENT_FAMILIES, family_names

    if student == "auto":
        return task.default_student
    family = STUDENT_FAMILIES.get(student)
    if family.task != task.name:
        raise ConfigError(f"Student family {student!r} is for {family.task}, but this build is {task.name}.",
                          f"For {task.name} use one of: {', '.join(family_names(task.name))}.")
    return student


def input_contract(spec):
    """The input contract of a ``DataSpec``'s task (what the convert stage checks its samples against)."""
    return get_task(spec.task).input_contract(spec)


def task_names() -> list[str]:
    return sorted(TASK_MODULES)


def get_task(name: str) -> Task:
    if name not in TASK_MODULES:
        raise ConfigError(f"Unknown task {name!r}.", f"Known tasks: {', '.join(task_names())}.")
    return importlib.import_module(TASK_MODULES[name]).TASK


def resolve_task(task: str, data: str) -> Task:
    """``auto``: the task that claims ``data`` (text for a text dataset or a .csv/.jsonl file), else vision."""
    claimed = [name for name in task_names() if name != FALLBACK_TASK and get_task(name).claims(data)]
    if task == "auto":
        return get_task(claimed[0] if claimed else FALLBACK_TASK)
    chosen = get_task(task)
    if claimed and task not in claimed:
        raise ConfigError(f"--data {data} is {claimed[0]}, but --task {task} was given.", f"Use --task {claimed[0]} (or leave --task out).")
    if task != FALLBACK_TASK and not chosen.claims(data):
        raise ConfigError(*chosen.refusal(data))
    return chosen
