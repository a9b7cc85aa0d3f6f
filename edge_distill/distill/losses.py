"""Distillation losses.  Each returns its named parts so logging and the report get them for free.

Registered names:
- ``ce``: hard labels only — the no-KD baseline, and how the built-in teacher is trained.
- ``logit``: Hinton et al.'s soft targets, ``α·CE(y, p_s) + (1−α)·T²·KL(p_t^T ‖ p_s^T)``.
- ``fitnet``: logit KD + β·FitNets hint (learned 1x1 projection of the student's last feature map).
- ``attention``: logit KD + β·attention transfer on the last feature maps.
- ``hidden``: logit KD + β·cosine distance between the pooled hidden states (learned projection); the one
  feature loss for text, where teacher and student tokens do not align.

Every hard-label term skips samples labelled ``UNLABELLED`` (-1): the transfer set of ``--unlabelled`` joins the
KD student's training split with no label, so it is taught by the teacher's soft targets alone.  ``KDConfig.ce_average``
says what the term is averaged over in such a batch (see ``hard_label_ce``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.spec import UNLABELLED
from ..errors import ConfigError
from ..registry import Registry
from .features import HiddenProjection, HintProjection, attention_loss, hidden_loss, hint_loss


CE_AVERAGES = ("batch", "labelled")  # how hard_label_ce averages a batch that holds transfer samples


@dataclass(frozen=True)
class KDConfig:
    loss: str = "logit"
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the hard-label term
    beta: float = 1.0  # weight of the feature term (fitnet, attention)
    ce_average: str = "batch"  # a batch with transfer samples: "batch" or "labelled" (see hard_label_ce)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"KD temperature must be > 0, got {self.temperature}.", "Typical values are 2-8.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"KD alpha must be within [0, 1], got {self.alpha}.", "alpha weights the hard-label term; 0.5 is typical.")
        if self.beta < 0:
            raise ConfigError(f"KD beta must be ≥ 0, got {self.beta}.", "beta weights the feature term; 1.0 is typical.")
        if self.ce_average not in CE_AVERAGES:
            raise ConfigError(f"Unknown hard-label average {self.ce_average!r}.", f"Use one of: {', '.join(CE_AVERAGES)}.")


@dataclass
class KDBatch:
    """What one training step hands the loss."""

    student: torch.Tensor  # student logits
    target: torch.Tensor  # hard labels; UNLABELLED (-1) for a transfer-set sample
    teacher: torch.Tensor | None = None  # teacher logits on the same view
    student_map: torch.Tensor | None = None  # last feature maps, for feature losses
    teacher_map: torch.Tensor | None = None


@dataclass(frozen=True)
class Loss:
    fn: Callable[[KDBatch, KDConfig, "nn.Module | None"], dict[str, torch.Tensor]]
    needs_teacher: bool = False
    needs_features: bool = False
    # Builds the loss's own trainable parts (e.g. a projection) from (student channels, teacher channels).
    make_module: Callable[[int, int], nn.Module] | None = None


LOSSES: Registry[Loss] = Registry("KD loss")


def hard_label_ce(student: torch.Tensor, target: torch.Tensor, average: str) -> torch.Tensor:
    """Cross-entropy over the batch's labelled samples; 0 (still part of the graph) when it has none.

    ``average`` matters only for a batch that mixes labelled and transfer samples:
    - ``"batch"``: the labelled samples' losses summed and divided by the batch size, so every sample weighs the same
      in ``α·CE + (1−α)·KD`` and a transfer sample simply has no CE part;
    - ``"labelled"``: the mean over the labelled samples, so each label weighs batch/labelled times a transfer sample
      (about 90x at 1 % labels: the few labels' noise then pulls as hard as the whole transfer set's soft targets).
    A fully labelled batch takes the plain ``F.cross_entropy`` call either way, so builds without a transfer set train
    bit for bit as before; a batch of transfer samples alone would otherwise average over no sample and give NaN.
    """
    labelled = target != UNLABELLED
    if bool(labelled.all()):
        return F.cross_entropy(student, target)
    if not bool(labelled.any()):
        return student.sum() * 0.0
    if average == "batch":
        return F.cross_entropy(student, target, ignore_index=UNLABELLED, reduction="sum") / len(target)
    return F.cross_entropy(student, target, ignore_index=UNLABELLED)


def _ce(batch: KDBatch, cfg: KDConfig, module: nn.Module | None) -> dict[str, torch.Tensor]:
    ce = hard_label_ce(batch.student, batch.target, cfg.ce_average)
    return {"loss": ce, "ce": ce}


def _logit(batch: KDBatch, cfg: KDConfig, module: nn.Module | None) -> dict[str, torch.Tensor]:
    if batch.teacher is None:
        raise ConfigError("The KD losses need teacher logits.", "Pass a teacher, or use the 'ce' loss.")
    t = cfg.temperature
    ce = hard_label_ce(batch.student, batch.target, cfg.ce_average)
    kd = F.kl_div(F.log_softmax(batch.student / t, dim=1), F.log_softmax(batch.teacher / t, dim=1), reduction="batchmean", log_target=True)
    kd = kd * t**2  # keeps the KD gradient scale independent of T (Hinton et al. 2015)
    return {"loss": cfg.alpha * ce + (1 - cfg.alpha) * kd, "ce": ce, "kd": kd}


def _with_feature_term(feature: Callable[[KDBatch, nn.Module | None], torch.Tensor]):
    def fn(batch: KDBatch, cfg: KDConfig, module: nn.Module | None) -> dict[str, torch.Tensor]:
        if batch.student_map is None or batch.teacher_map is None:
            raise ConfigError("Feature distillation needs the feature maps of student and teacher.", "Use --kd-loss logit.")
        parts = _logit(batch, cfg, module)
        feat = feature(batch, module)
        parts["feat"] = feat
        parts["loss"] = parts["loss"] + cfg.beta * feat
        return parts

    return fn


LOSSES.register("ce")(Loss(_ce))
LOSSES.register("logit")(Loss(_logit, needs_teacher=True))
LOSSES.register("fitnet")(
    Loss(
        _with_feature_term(lambda b, m: hint_loss(b.student_map, b.teacher_map, m)),
        needs_teacher=True, needs_features=True, make_module=HintProjection,
    )
)
LOSSES.register("attention")(
    Loss(_with_feature_term(lambda b, m: attention_loss(b.student_map, b.teacher_map)), needs_teacher=True, needs_features=True)
)
LOSSES.register("hidden")(
    Loss(
        _with_feature_term(lambda b, m: hidden_loss(b.student_map, b.teacher_map, m)),
        needs_teacher=True, needs_features=True, make_module=HiddenProjection,
    )
)
