"""Distillation losses.  Each returns its named parts so logging and the report get them for free.

Registered names:
- ``ce``: hard labels only — the no-KD baseline, and how the built-in teacher is trained.
- ``logit``: Hinton et al.'s soft targets, ``α·CE(y, p_s) + (1−α)·T²·KL(p_t^T ‖ p_s^T)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class KDConfig:
    loss: str = "logit"
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the hard-label term

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"KD temperature must be > 0, got {self.temperature}.", "Typical values are 2-8.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"KD alpha must be within [0, 1], got {self.alpha}.", "alpha weights the hard-label term; 0.5 is typical.")


LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", KDConfig], dict[str, torch.Tensor]]
LOSSES: Registry[LossFn] = Registry("KD loss")


@LOSSES.register("ce")
def hard_label_loss(student: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None, cfg: KDConfig) -> dict[str, torch.Tensor]:
    ce = F.cross_entropy(student, target)
    return {"loss": ce, "ce": ce}


@LOSSES.register("logit")
def logit_kd_loss(student: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None, cfg: KDConfig) -> dict[str, torch.Tensor]:
    if teacher is None:
        raise ConfigError("The 'logit' KD loss needs teacher logits.", "Pass a teacher, or use the 'ce' loss.")
    t = cfg.temperature
    ce = F.cross_entropy(student, target)
    kd = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean", log_target=True)
    kd = kd * t**2  # keeps the KD gradient scale independent of T (Hinton et al. 2015)
    return {"loss": cfg.alpha * ce + (1 - cfg.alpha) * kd, "ce": ce, "kd": kd}
