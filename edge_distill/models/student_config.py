"""The size of one student: its family and the knobs the sizing search turns.  Every family (vision in
students.py, text in text.py) builds from it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .archs import MOBILE_FAMILIES

PRUNED_FAMILY = "pruned"  # --init prune: the teacher's conv chain with fewer channels (models/pruned_arch.py)


@dataclass(frozen=True)
class StudentConfig:
    family: str
    width: int  # channels of the first stage; later stages double it
    depth: int  # number of stages
    resolution: int = 0  # side length the convolutions see; 0 = the full image
    # Text families (models/text.py): input tokens and vocabulary size; 0 for images.
    seq_len: int = 0
    vocab: int = 0
    # The pruned family: one entry per layer of the teacher's chain, a conv's output channels or "M" (a 2x2
    # max-pool), and the teacher's dropout before the head; width/depth then describe the first conv and the conv count.
    layers: tuple[int | str, ...] = ()
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 1 or self.resolution < 0 or self.seq_len < 0 or self.vocab < 0:
            raise ConfigError(
                f"Student width and depth must be ≥ 1 and resolution ≥ 0, got width={self.width}, "
                f"depth={self.depth}, resolution={self.resolution}.",
                "Use positive integers (resolution 0 means the full image).",
            )

    def label(self) -> str:
        if self.family == PRUNED_FAMILY:
            return f"{PRUNED_FAMILY}({'-'.join(map(str, self.layers))})"
        res = f", resolution={self.resolution}" if self.resolution else ""
        if self.family in MOBILE_FAMILIES:  # width and depth are percentages of the reference network
            return f"{self.family}(width={self.width / 100:g}x, depth={self.depth / 100:g}x{res})"
        text = f", seq_len={self.seq_len}, vocab={self.vocab}" if self.seq_len else ""
        return f"{self.family}(width={self.width}, depth={self.depth}{res}{text})"
