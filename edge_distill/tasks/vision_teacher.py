"""The image teacher: the built-in CNN (one, an ensemble, flip-averaged) trained here, or a user's file whose input
contract is vetted before anything learns from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..console import get_console
from ..errors import TeacherError
from ..models.teacher_input import InputCandidate
from ..rundir import RunDir
from ..serde import to_jsonable
from ..stages.data import load_splits, write_npy
from ..stages.teacher import TeacherResult


@dataclass(frozen=True)
class VisionTeacherSettings:
    teacher: str  # "auto" or the teacher file
    arch: str  # built-in: cnn or vgg
    epochs: int
    members: int
    flip_average: bool
    augment_shift: int  # the built-in teacher learns the invariances the student is trained with
    augment_flip: bool
    seed: int
    nproc: int
    world_size: int
    teacher_input: str  # a file's input contract, or auto
    trust_pickle: bool

    @classmethod
    def from_options(cls, options, world_size: int) -> VisionTeacherSettings:
        return cls(options.teacher, options.teacher_arch, options.teacher_epochs, options.teacher_members, options.teacher_flip_average,
                   options.augment_shift, options.augment_flip, options.seed, options.nproc, world_size, options.teacher_input,
                   options.trust_pickle)

    def recipe_label(self) -> str:
        parts = ([f"ensemble of {self.members}"] if self.members > 1 else []) + (["flip-averaged"] if self.flip_average else [])
        return f", {', '.join(parts)}" if parts else ""


def teacher_file(teacher: str) -> Path:
    path = Path(teacher)
    if not path.is_file():
        raise TeacherError(
            f"Teacher {teacher!r} is neither 'auto' nor an existing file.",
            "Use --teacher auto (train the built-in CNN) or the path of a TorchScript (.pt) / torch.export (.pt2) file.",
        )
    return path


def make_vision_teacher(run: RunDir, settings: VisionTeacherSettings, data) -> tuple[TeacherResult, list[Path]]:
    from ..distill import accuracy
    from ..models.cnn import count_params

    splits = load_splits(run, data)
    if settings.teacher == "auto":
        model, train_result, member_accuracy = _train_builtin(run, settings, data, splits)
        candidates, contract_text, contract_source, description = (), "", "built-in", _builtin_description(data)
        source = f"auto (built-in {settings.arch} teacher{settings.recipe_label()})"
    else:
        path = teacher_file(settings.teacher)
        contract, contract_source, candidates = _vetted_teacher_input(settings, path, data, splits)
        model = _load_file(path, data.spec, settings.trust_pickle, contract)
        with run.atomic_path("teacher/teacher.pt") as tmp:
            tmp.write_bytes(path.read_bytes())
        train_result, member_accuracy = None, ()
        contract_text, description, source = contract.text(), contract.describe(data.spec.pixel_scale), str(path)
    _cache_logits(run, settings, data, splits, model, contract_text)
    builtin = settings.teacher == "auto"
    result = TeacherResult(
        source=source,
        path="teacher/teacher.pt", kind="builtin" if builtin else "file", params=count_params(model),
        val_accuracy=accuracy(model, splits.x_val, splits.y_val), test_accuracy=accuracy(model, splits.x_test, splits.y_test),
        logits_path="teacher/logits_train.npy", train=to_jsonable(train_result), arch=settings.arch if builtin else "",
        members=settings.members if builtin else 1, flip_average=settings.flip_average and builtin, member_test_accuracy=member_accuracy,
        input_contract=contract_text, input_source=contract_source, input_description=description, input_candidates=candidates,
    )
    return result, [run.path(result.path), run.path(result.logits_path)]


def _builtin_description(data) -> str:
    from ..models.teacher_input import TeacherInput

    return TeacherInput().describe(data.spec.pixel_scale)


def _train_builtin(run: RunDir, settings: VisionTeacherSettings, data, splits):
    """Train the built-in teacher's members and average them; returns (model, first member's TrainResult, each member's test accuracy)."""
    import torch

    from ..distill import KDConfig, TrainConfig, accuracy, ddp, train
    from ..distill.worker import ModelRecipe, train_distributed
    from ..models.cnn import count_params
    from ..models.teacher import averaged_teacher, builtin_teacher

    train_result, members = None, []
    for k in range(settings.members):
        torch.manual_seed(settings.seed + k)
        member = builtin_teacher(data.spec, settings.arch)
        name = "teacher" if settings.members == 1 else f"teacher {k + 1}/{settings.members}"
        get_console().stage("teacher", f"training the built-in {settings.arch} {name} ({count_params(member):,} params) for {settings.epochs} epochs")
        cfg = TrainConfig(epochs=settings.epochs, seed=settings.seed + k, augment_shift=settings.augment_shift,
                          augment_flip=settings.augment_flip, background=data.spec.background)
        checkpoint = "teacher/train.ckpt" if k == 0 else f"teacher/train-{k}.ckpt"  # member 0 keeps a one-teacher build's file
        if ddp.wanted(settings.nproc):
            result = train_distributed(run, ModelRecipe("teacher", data.spec, teacher_arch=settings.arch), member, data.splits_path,
                                       cfg, KDConfig(loss="ce"), None, checkpoint, "teacher", settings.nproc)
        else:
            result = train(member, splits.x_train, splits.y_train, splits.x_val, splits.y_val, cfg, KDConfig(loss="ce"), None,
                           run.path(checkpoint), name)
        train_result = train_result or result  # the report plots the first member's curve
        members.append(member.eval())
    member_accuracy = tuple(accuracy(m, splits.x_test, splits.y_test) for m in members) if len(members) > 1 else ()
    model = averaged_teacher(members, settings.flip_average, data.spec.input_shape[-1]).eval()
    with run.atomic_path("teacher/teacher.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    return model, train_result, member_accuracy


def _cache_logits(run: RunDir, settings: VisionTeacherSettings, data, splits, model, contract_text: str) -> None:
    """The teacher's logits on the training split, which logit KD reads instead of running the teacher."""
    import numpy as np

    from ..distill import ddp, predict_logits
    from ..distill.worker import ModelRecipe, cache_teacher_logits

    get_console().stage("teacher", "caching teacher logits on the training split")
    if ddp.wanted(settings.nproc):  # each rank computes one shard; rank 0 writes the cache once
        builtin = settings.teacher == "auto"
        recipe = ModelRecipe("teacher" if builtin else "teacher_file", data.spec, "teacher/teacher.pt", trust_pickle=settings.trust_pickle,
                             teacher_arch=settings.arch, teacher_input=contract_text)
        cached = cache_teacher_logits(run, recipe, data.splits_path, "teacher/logits_train.npy", settings.nproc)
        get_console().stage("teacher", f"{cached.rows} logits computed in {len(cached.rows_per_rank)} shards {list(cached.rows_per_rank)}")
        return
    # In chunks, so a large training split shows a progress bar instead of a silent pause.
    chunks = range(0, len(splits.x_train), 512)
    logits = [predict_logits(model, splits.x_train[i : i + 512]) for i in get_console().progress(chunks, len(chunks), "teacher logits")]
    write_npy(run, "teacher/logits_train.npy", np.concatenate(logits))


def _vetted_teacher_input(settings: VisionTeacherSettings, path: Path, data, splits):
    """The teacher file's input contract (flag, else its metadata, else the build's normalization), its validation
    accuracy under that and the other usual scalings, and a stop when the file clearly reads another input."""
    import numpy as np

    from ..models.teacher import score_input_contracts
    from ..models.teacher_input import (TeacherInput, candidate_contracts, contract_from_metadata, parse_teacher_input, size_candidates,
                                        vet_teacher_input)

    if settings.teacher_input != "auto":
        contract, source = parse_teacher_input(settings.teacher_input), "--teacher-input"
    else:
        from_file = contract_from_metadata(path)
        contract, source = (from_file, "file metadata") if from_file is not None else (TeacherInput(), "default")
    contracts = [contract] + [c for c in candidate_contracts(data.spec.input_shape[0]) if c != contract]
    contracts += size_candidates(contract, tuple(data.spec.input_shape[1:]))  # a teacher trained at another image size
    get_console().stage("teacher", f"scoring the teacher file on the validation split under {len(contracts)} input scalings")
    scores = score_input_contracts(path, data.spec, settings.trust_pickle, contracts, splits.x_val, splits.y_val)
    candidates = tuple(InputCandidate(c.text(), c.describe(data.spec.pixel_scale), acc, err) for c, (acc, err) in zip(contracts, scores))
    majority = float(np.bincount(splits.y_val).max() / len(splits.y_val))
    vet_teacher_input(candidates, source, majority, str(path))
    get_console().stage("teacher", f"input: {contract.describe(data.spec.pixel_scale)} ({source}); validation accuracy {candidates[0].val_accuracy}")
    return contract, source, candidates


def _load_file(path: Path, spec, trust_pickle: bool, contract):
    from ..models.teacher import load_teacher_file

    return load_teacher_file(path, spec, trust_pickle, contract)


def load_vision_teacher(run: RunDir, teacher: TeacherResult, spec):
    """The teacher of a finished teacher stage (a file was vetted there, so pickles it allowed load again)."""
    import torch

    from ..models.teacher import averaged_teacher, builtin_teacher
    from ..models.teacher_input import parse_teacher_input

    if teacher.kind == "builtin":
        members = [builtin_teacher(spec, teacher.arch or "cnn") for _ in range(teacher.members)]
        model = averaged_teacher(members, teacher.flip_average, spec.input_shape[-1])
        model.load_state_dict(torch.load(run.path(teacher.path), weights_only=True))
        return model.eval()
    return _load_file(run.path(teacher.path), spec, True, parse_teacher_input(teacher.input_contract))


def check_teacher_against_baseline(teacher: TeacherResult, baseline_val_accuracy: float, data) -> None:
    """A teacher below the student trained without it can only teach it mistakes: a teacher file stops the build
    (most often it reads another input than it was trained on), the built-in teacher gets a warning."""
    n_val = data.n_val
    # Two standard errors of the baseline's validation accuracy, at least a point: a teacher a few samples behind a
    # strong student on a small split is noise, not a broken teacher.
    margin = max(0.01, 2 * math.sqrt(max(baseline_val_accuracy * (1 - baseline_val_accuracy), 1e-6) / max(n_val, 1)))
    if teacher.val_accuracy >= baseline_val_accuracy - margin:
        return
    if teacher.kind == "file":
        from ..models.teacher_input import weak_teacher_error

        raise weak_teacher_error(teacher.val_accuracy, baseline_val_accuracy, n_val, teacher.source, teacher.input_contract, teacher.input_candidates)
    get_console().warn(f"the built-in teacher ({teacher.val_accuracy:.4f} on validation) is below the no-KD student ({baseline_val_accuracy:.4f}); "
                       "distillation is unlikely to help (more --teacher-epochs, or --teacher-arch vgg for larger images).")
