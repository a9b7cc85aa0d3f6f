"""What a pruned student is: the teacher's plain conv chain with its own width per convolution.

Kept apart from ``prune.py`` (which needs the sizing module to judge budgets) so that ``students.build_student``
can rebuild a pruned student from its ``StudentConfig`` without importing the pruner.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data.spec import DataSpec
from ..errors import ConfigError
from .cnn import ConvClassifier, conv_bn_relu

POOL = "M"  # a 2x2 max-pool in ``PrunedArch.layers`` (torchvision's VGG configurations write it the same way)


@dataclass(frozen=True)
class PrunedArch:
    """A ``ConvClassifier`` with its own width per convolution: ``layers`` lists, in order, each 3x3 conv's output
    channels or ``POOL``; global average pooling, dropout and the linear head follow."""

    layers: tuple[int | str, ...]
    dropout: float = 0.0

    def __post_init__(self) -> None:
        bad = [v for v in self.layers if v != POOL and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1)]
        if bad or not self.convs or self.layers[0] == POOL or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"Invalid pruned architecture {self.layers} (dropout {self.dropout}).",
                f"Layers are positive channel counts or {POOL!r} (a 2x2 max-pool), starting with a conv; dropout in [0, 1).",
            )

    @property
    def convs(self) -> tuple[int, ...]:
        return tuple(v for v in self.layers if v != POOL)

    def label(self) -> str:
        return f"pruned({'-'.join(map(str, self.layers))})"


def build_pruned(arch: PrunedArch, spec: DataSpec) -> ConvClassifier:
    """A freshly initialised model of ``arch`` for ``spec``'s images and classes."""
    c = spec.input_shape[0]
    # ConvClassifier's constructor takes one width per stage; the features are rebuilt here with one width per conv
    # in the same Sequential layout, so the state_dict keys stay the teacher's.
    model = ConvClassifier(c, spec.input_shape[1], spec.num_classes, (arch.convs[-1],), dropout=arch.dropout)
    layers: list[nn.Module] = []
    for v in arch.layers:
        if v == POOL:
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(conv_bn_relu(c, v))
            c = v
    model.features = nn.Sequential(*layers)
    return model
