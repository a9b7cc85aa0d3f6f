"""The teacher stage's result; the task trains or loads the teacher (``Task.make_teacher``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models.teacher_input import InputCandidate


@dataclass(frozen=True)
class TeacherResult:
    source: str  # "auto (built-in CNN)" or the user's file
    path: str  # the teacher inside the run directory
    kind: str  # "builtin" (state_dict), "file" (TorchScript / torch.export / trusted pickle), or a text teacher's kind
    params: int
    val_accuracy: float
    test_accuracy: float
    logits_path: str  # cached teacher logits on the training split
    train: Any = None  # TrainResult for a teacher trained here
    arch: str = "cnn"  # the built-in teacher's architecture ("" for a user's file)
    members: int = 1  # built-in teacher: members averaged (an ensemble when > 1)
    flip_average: bool = False  # built-in teacher: averaged over the image and its mirror
    member_test_accuracy: tuple[float, ...] = ()  # each member alone, when members > 1
    input_contract: str = ""  # a teacher file's input (teacher_input.parse_teacher_input); "" = the build's normalized input
    input_source: str = ""  # where the contract came from: "--teacher-input", "file metadata", "default"
    input_description: str = ""
    input_candidates: tuple[InputCandidate, ...] = ()  # the file's validation accuracy under each usual input scaling
