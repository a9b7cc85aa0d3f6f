"""The transfer stage (``--unlabelled``): the task prepares the unlabelled samples like the training split, and the
teacher labels them once; its logits are cached in the run directory for the KD and pseudo-label students.

Its key is its settings (``Task.unlabelled_settings``) with the data's, the teacher's and the file's content keys, so
the teacher stage's own key never depends on ``--unlabelled``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..console import get_console
from ..errors import DataError
from ..data import DataResult
from ..rundir import RunDir
from .data import write_npy, write_npz
from .teacher import TeacherResult

# In the tasks' transfer settings, so that a cached transfer stage made before a change of what this stage checks or
# leaves out is redone.  2: copies of the build's own samples left out, npz pixel scales checked (2026-12-02).
TRANSFER_REVISION = 2
TRANSFER_NPZ = "transfer/transfer.npz"
TRANSFER_LOGITS = "transfer/teacher_logits.npy"


@dataclass(frozen=True)
class TransferSet:
    """What ``Task.prepare_unlabelled`` returns."""

    x: Any  # np.ndarray prepared like the data stage's splits (``Task.student_inputs`` cuts it for the chosen student)
    teacher_x: Any  # what the teacher reads (a text teacher with its own tokenizer: its ids; images: x itself)
    y: Any  # int64 labels where the file has them, UNLABELLED elsewhere: only for the teacher's agreement
    source: str
    # Per split of the data stage ("train", "val", "test"): a mask of the samples that split already holds
    # (``data/overlap.py``); they are left out before the teacher sees them.
    overlap: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TransferResult:
    source: str
    n: int
    n_labelled: int  # samples the file gives a label
    teacher_agreement: float | None  # of those, the share where the teacher's top-1 class is the label; None: no labels
    teacher_class_counts: tuple[int, ...]  # the teacher's top-1 classes over the transfer set (its pseudo-labels' balance)
    path: str  # TRANSFER_NPZ: x, and the file's labels (never read by training)
    logits_path: str  # TRANSFER_LOGITS
    left_out: dict[str, int] = field(default_factory=dict)  # samples of the file left out: split → how many it already held


def label_transfer_set(run: RunDir, task, settings: Any, data: DataResult, teacher: TeacherResult) -> tuple[TransferResult, list[Path]]:
    import numpy as np

    from ..data.spec import UNLABELLED
    from ..distill import predict_logits

    transfer, left_out = leave_out_split_samples(task.prepare_unlabelled(run, settings, data, teacher))
    get_console().stage("transfer", f"{len(transfer.y):,} unlabelled samples from {transfer.source}; the teacher labels them once")
    model = task.load_teacher(run, teacher, data)
    chunks = range(0, len(transfer.teacher_x), 512)
    logits = np.concatenate([predict_logits(model, transfer.teacher_x[i : i + 512]) for i in get_console().progress(chunks, len(chunks), "teacher logits")])
    labelled = transfer.y != UNLABELLED
    agreement = float((logits.argmax(1)[labelled] == transfer.y[labelled]).mean()) if labelled.any() else None
    counts = np.bincount(logits.argmax(1), minlength=data.spec.num_classes)
    files = [write_npz(run, TRANSFER_NPZ, x=transfer.x, y=transfer.y), write_npy(run, TRANSFER_LOGITS, logits.astype(np.float32))]
    result = TransferResult(transfer.source, len(transfer.y), int(labelled.sum()), None if agreement is None else round(agreement, 6),
                            tuple(int(c) for c in counts), TRANSFER_NPZ, TRANSFER_LOGITS, left_out)
    get_console().stage("transfer", describe(result))
    return result, files


_SPLIT_WORDS = {"test": "the test split (the students would train on the teacher's answers for the samples they are scored on)",
                "val": "the validation split (it picks the students' epochs and the shipped model)",
                "train": "the labelled training split (they already train with their labels)"}


def leave_out_split_samples(transfer: TransferSet) -> tuple[TransferSet, dict[str, int]]:
    """``transfer`` without the samples the build's own splits hold, and how many each split held; said on the console,
    refused when nothing is left."""
    import numpy as np

    held = np.zeros(len(transfer.y), bool)
    counts = {}
    for split in ("test", "val", "train"):  # a sample in two splits is counted under the first, the worse leak
        new = transfer.overlap.get(split, np.zeros_like(held)) & ~held
        if new.any():
            counts[split] = int(new.sum())
            held |= new
    if not counts:
        return transfer, {}
    listing = "; ".join(f"{n:,} of {_SPLIT_WORDS[s]}" for s, n in counts.items())
    if held.all():
        raise DataError(f"--unlabelled: all {len(held):,} samples are samples of this build's own data: {listing}.",
                        "Give samples that --data and --test-data do not hold: a transfer set adds what the labelled data lacks.")
    get_console().warn(f"--unlabelled: left out {int(held.sum()):,} of its {len(held):,} samples, exact copies of {listing}.")
    keep = ~held
    note = ", ".join(f"{n:,} {s}" for s, n in counts.items())
    source = f"{transfer.source}; {int(held.sum()):,} left out as copies of this build's splits ({note})"
    return TransferSet(transfer.x[keep], transfer.teacher_x[keep], transfer.y[keep], source), counts


def load_transfer(run: RunDir, transfer: TransferResult):
    """(x as the data stage prepared it, the teacher's logits)."""
    import numpy as np

    with np.load(run.path(transfer.path)) as npz:
        x = npz["x"]
    return x, np.load(run.path(transfer.logits_path))


def describe(transfer: TransferResult) -> str:
    """One line: the transfer set's size and the teacher's agreement with its labels, where there are any."""
    agreement = ("no labels" if transfer.teacher_agreement is None else
                 f"the teacher agrees with {100 * transfer.teacher_agreement:.2f}% of the {transfer.n_labelled:,} labels the file gives")
    return f"transfer set: {transfer.n:,} samples ({agreement})"
