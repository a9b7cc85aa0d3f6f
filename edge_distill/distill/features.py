"""Feature distillation: match what the student *sees*, not only what it outputs.

Two registered hint losses build on the logit KD loss (both add a ``feat`` part):
- ``fitnet`` (Romero et al. 2015, FitNets): a learned 1x1-conv projection maps the student's last
  feature map to the teacher's channel count, and the student is pulled towards the teacher's map (MSE).
- ``attention`` (Zagoruyko & Komodakis 2017, attention transfer): both maps are reduced to a spatial
  attention map (mean of squared activations over channels, L2-normalised) and compared; no parameters,
  no channel matching needed.
- ``hidden``: hidden-state distillation on the pooled representation the classifier head reads — a learned
  linear projection maps the student's vector to the teacher's width, and the cosine distance between them
  is minimised (DistilBERT's cosine loss, Sanh et al. 2019).  Pooled, because a text student and its
  teacher tokenize differently: their token positions do not line up, their sentence vectors do.  Image
  feature maps are average-pooled to vectors first, so the loss serves both tasks.

Maps of different spatial size are compared after average-pooling the larger one to the smaller size.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def feature_module(model: nn.Module) -> nn.Module:
    """The module whose output is the model's last feature map (before global pooling), or for text models
    the pooled sentence vector."""
    if hasattr(model, "features") and isinstance(model.features, nn.Module):
        return model.features
    if isinstance(model, nn.Sequential):
        for child in reversed(list(model.children())):
            if hasattr(child, "features"):
                return child.features
    raise ConfigError(
        f"Feature distillation needs a model with a `.features` module (the last convolutional map); "
        f"{type(model).__name__} has none.",
        "Use logit KD (--kd-loss logit) with this teacher, or give the model a `features` attribute.",
    )


@contextlib.contextmanager
def capture_features(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collects the feature map of every forward pass made inside the block."""
    captured: list[torch.Tensor] = []
    handle = feature_module(model).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        yield captured
    finally:
        handle.remove()


def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = min(a.shape[-2], b.shape[-2])
    w = min(a.shape[-1], b.shape[-1])
    if a.shape[-2:] != (h, w):
        a = F.adaptive_avg_pool2d(a, (h, w))
    if b.shape[-2:] != (h, w):
        b = F.adaptive_avg_pool2d(b, (h, w))
    return a, b


class HintProjection(nn.Module):
    """FitNets' regressor: a 1x1 conv + BN from the student's channels to the teacher's."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 1, bias=False), nn.BatchNorm2d(teacher_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def hint_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, projection: HintProjection) -> torch.Tensor:
    s, t = match_spatial(projection(student_map), teacher_map.detach())
    return F.mse_loss(s, t)


def attention_map(feature_map: torch.Tensor) -> torch.Tensor:
    return F.normalize(feature_map.pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    s, t = match_spatial(student_map, teacher_map.detach())
    # Squared L2 distance of normalised maps per sample; Zagoruyko & Komodakis weight it by β/2 with β≈1000
    # over the *sum*; the mean-over-positions form here is scale-free and weighted by KDConfig.beta instead.
    return (attention_map(s) - attention_map(t)).pow(2).sum(1).mean()


class HiddenProjection(nn.Module):
    """A linear map from the student's pooled width to the teacher's."""

    def __init__(self, student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(student_width, teacher_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def pooled(features: torch.Tensor) -> torch.Tensor:
    """(B, D) vectors as they are; (B, C, H, W) maps averaged over positions."""
    return features.flatten(2).mean(2) if features.dim() > 2 else features


def hidden_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, projection: HiddenProjection) -> torch.Tensor:
    s = projection(pooled(student_features))
    t = pooled(teacher_features.detach().float())
    return (1 - F.cosine_similarity(s, t, dim=1)).mean()


def feature_channels(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> int:
    """Channels (or width) of the model's feature output, from one dummy input of ``dtype`` (int for token ids)."""
    with capture_features(model) as maps, torch.no_grad():
        was_training = model.training
        model.eval()(torch.zeros((1, *input_shape), dtype=dtype))
        model.train(was_training)
    return int(maps[0].shape[1])
