"""Text student families: token ids (batch, seq_len) int32 → class logits.

Both convert through ONNX → onnx2tf → full-INT8 TFLite with an *integer* input: the embedding lookup is a
Gather on the int32 ids (its table is quantized to int8 like any weight), everything after it is float
in torch and int8 in the deployed file.  Choices that keep INT8 accurate:

- the transformer ignores [PAD] through a *bounded* key bias (-8, not -1e4) that is itself a Gather from a
  constant per-token table, so it stays an exact int8 value with no bool→float cast; a -1e4 mask would
  stretch the int8 range of the attention scores until real scores collapse to a few levels;
- it averages real tokens only, as a softmax over that same bias: int8 SOFTMAX does the division by the
  token count, which a plain ``sum / count`` would leave as a float DIV in the file.  Averaging the [PAD]
  rows too (our first design) cost 1.3 points in full INT8 on wordnet-nouns;
- the [PAD] embedding row keeps a random unit-variance start: it is masked out everywhere, so it never
  trains, and a zero row makes LayerNorm's variance ~0 there — int8 RSQRT then saturates;
- no GELU/tanh where ReLU does: ReLU is exact in int8.

Knobs the sizing search turns (``StudentConfig``): ``width`` (embedding and model dimension), ``depth``
(conv or encoder layers), ``seq_len`` (input tokens) and ``vocab`` (vocabulary size; the embedding table
usually dominates the parameter count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.spec import DataSpec
from ..data.tokenizer import PAD_ID, restrict_ids
from ..errors import ConfigError
from .student_config import StudentConfig

HEAD_DIM = 32  # attention heads have 32 dimensions (width 64 → 2 heads, 128 → 4)
PAD_BIAS = -8.0  # exp(-8) = 3e-4: [PAD] keys get ~nothing, and -8 costs the scores' int8 range little
# Bumped whenever a family's graph changes, so cached students of the old graph are not reused.
TEXT_STUDENT_REVISION = 2


class Pool(nn.Module):
    """Pools token positions to one sentence vector.  A module of its own (no weights) so that hidden-state
    distillation can hook the vector the head reads (``model.features``)."""

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        self.kind, self.dim = kind, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=self.dim) if self.kind == "max" else x.mean(dim=self.dim)


class RealTokenMean(nn.Module):
    """Mean over the real (non-[PAD]) tokens: (B, L, D), key bias (B, L) → (B, D).

    softmax over the bias gives 1/n on the n real tokens and ~0 on [PAD]; in the INT8 file that division is
    the SOFTMAX kernel's, so no float op remains.  Hidden-state distillation hooks this module's output."""

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(key_bias, dim=-1)
        return (x * weights.unsqueeze(-1)).sum(dim=1)


class TextCNN(nn.Module):
    """Embedding → ``depth`` 1-D convolutions (kernel 3, residual) → global max pool → linear (Kim 2014, deeper)."""

    def __init__(self, vocab: int, seq_len: int, width: int, depth: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.input_shape = (seq_len,)
        self.embed = nn.Embedding(vocab, width)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, 3, padding=1) for _ in range(depth))
        self.features = Pool("max", dim=2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids).transpose(1, 2)  # (B, width, L): Conv1d's layout
        for conv in self.convs:
            x = x + torch.relu(conv(x))
        return self.head(self.dropout(self.features(x)))


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5 + key_bias[:, None, None, :]
        att = torch.softmax(scores, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, d))

    def matmul_macs(self, x: torch.Tensor) -> int:
        """The two activation x activation matmuls (scores and weighted sum), which no Linear counts."""
        n, d = x.shape[-2], x.shape[-1]
        return 2 * n * n * d


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ff = nn.Sequential(nn.Linear(width, ffn), nn.ReLU(), nn.Linear(ffn, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), key_bias))  # pre-norm: trains without warm-up tricks at this size
        return x + self.dropout(self.ff(self.norm2(x)))


class TinyTransformer(nn.Module):
    """Token + learned position embeddings → ``depth`` pre-norm encoder layers → mean of real tokens → linear."""

    def __init__(self, vocab: int, seq_len: int, width: int, depth: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.input_shape = (seq_len,)
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(1, seq_len, width))
        nn.init.normal_(self.position, std=0.02)
        heads = max(1, width // HEAD_DIM)
        self.layers = nn.ModuleList(EncoderLayer(width, heads, 2 * width, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.features = RealTokenMean()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)
        # A per-token constant looked up like an embedding (a Gather on the ids in the deployed file).
        pad_bias = torch.zeros(vocab, 1)
        pad_bias[PAD_ID] = PAD_BIAS
        self.register_buffer("pad_bias", pad_bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        key_bias = nn.functional.embedding(ids, self.pad_bias).squeeze(-1)  # (B, L): 0 real, PAD_BIAS [PAD]
        x = self.dropout(self.embed(ids) + self.position)
        for layer in self.layers:
            x = layer(x, key_bias)
        return self.head(self.dropout(self.features(self.norm(x), key_bias)))


def student_inputs(config, x: np.ndarray) -> np.ndarray:
    """The data stage's token ids as ``config``'s student takes them (its vocabulary and length); images unchanged."""
    if not getattr(config, "seq_len", 0):
        return x
    return restrict_ids(x, config.vocab, config.seq_len)


# ---- the families (students.py registers them) ------------------------------------------------------

VOCAB_SIZES = (4_096, 8_192, 16_384)


@dataclass(frozen=True)
class TextStudentFamily:
    name: str
    model: type
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    description: str
    task: str = "text"

    def build(self, config: StudentConfig, spec: DataSpec) -> nn.Module:
        _check_text(config, spec)
        return self.model(config.vocab, config.seq_len, config.width, config.depth, spec.num_classes)

    def candidates(self, spec: DataSpec) -> list[StudentConfig]:
        _check_text(None, spec)
        longest = spec.input_shape[0]
        # The data stage's length covers 99% of training texts; half of it (in steps of 8) is the cheaper option.
        seq_lens = sorted({longest, min(longest, max(8, -(-longest // 2 // 8) * 8))})
        vocabs = sorted({min(v, spec.vocab_size) for v in VOCAB_SIZES})
        return [StudentConfig(self.name, w, d, seq_len=n, vocab=v) for v in vocabs for n in seq_lens for d in self.depths for w in self.widths]


def _check_text(config: StudentConfig | None, spec: DataSpec) -> None:
    if spec.task != "text":
        raise ConfigError(f"Student family {config.family if config else ''!r} takes token ids, but dataset {spec.name!r} is {spec.task}.",
                          "Use a vision family (cnn, dscnn, vgg) for images.")
    if config is not None and not (1 <= config.seq_len <= spec.input_shape[0] and 3 <= config.vocab <= spec.vocab_size):
        raise ConfigError(
            f"Student {config.label()} does not fit dataset {spec.name!r} (at most {spec.input_shape[0]} tokens and {spec.vocab_size} ids).",
            "seq_len and vocab must be within the data stage's tokenizer.",
        )


TEXT_FAMILIES = (
    TextStudentFamily("textcnn", TextCNN, widths=(32, 48, 64, 96, 128, 192), depths=(1, 2, 3),
                      description="token embedding, residual 1-D convolutions (kernel 3), global max pool"),
    TextStudentFamily("tiny-transformer", TinyTransformer, widths=(32, 64, 96, 128, 192), depths=(1, 2, 3, 4),
                      description="token + position embedding, pre-norm encoder layers (32-dim heads, ReLU FFN), mean pool"),
)
