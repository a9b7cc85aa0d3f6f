"""The student's tokenizer: simple enough to reimplement exactly on a device, saved as JSON with the model.

The rule (format ``edge-distill-words-1``), which ``export/tokenizer.py`` implements again without this
package, so the device computes the very ids the student was trained on:

1. ``unicodedata.normalize("NFKC", text).lower()``;
2. words are the maximal runs of letters and digits: ``re.findall(r"[^\\W_]+", text)``;
3. each word's id is its index in ``vocab``; a word not in it is ``[UNK]`` (id 1);
4. the ids are cut to ``seq_len`` and padded with ``[PAD]`` (id 0) at the end.

The vocabulary is built from the *training* split only: ``[PAD]``, ``[UNK]``, then the words by falling
count (ties alphabetical).  Because that order is fixed, the first ``V`` entries of a large vocabulary are
the vocabulary of size ``V``, and the first ``L`` ids of a long encoding are the encoding at length ``L``:
``restrict`` turns ids of the data stage's tokenizer into the ids of a smaller student's, without the text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError

FORMAT = "edge-distill-words-1"
PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
WORD_PATTERN = r"[^\W_]+"  # letters and digits; punctuation and underscores separate words
_WORDS = re.compile(WORD_PATTERN)


def words(text: str) -> list[str]:
    return _WORDS.findall(unicodedata.normalize("NFKC", text).lower())


@dataclass(frozen=True)
class WordTokenizer:
    vocab: tuple[str, ...]  # vocab[0] is [PAD], vocab[1] is [UNK]
    seq_len: int

    def __post_init__(self) -> None:
        if len(self.vocab) < 3 or self.vocab[PAD_ID] != PAD or self.vocab[UNK_ID] != UNK:
            raise DataError(
                f"A tokenizer vocabulary must start with {PAD!r}, {UNK!r} and hold at least one word (got {list(self.vocab[:3])}).",
                "Build it with WordTokenizer.fit, or load a file written by edge-distill.",
            )
        if self.seq_len < 1:
            raise DataError(f"Tokenizer seq_len must be ≥ 1, got {self.seq_len}.", "Use e.g. 32 or 64.")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def fit(cls, texts: Iterable[str], max_vocab: int, seq_len: int, min_count: int = 1) -> "WordTokenizer":
        """The most frequent words of ``texts`` (at least ``min_count`` times), ``max_vocab`` ids in all."""
        counts = Counter(w for text in texts for w in words(text))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if not ranked:
            raise DataError("The training texts contain no words (letters or digits).", "Check the text field of the data.")
        return cls((PAD, UNK, *ranked[: max(1, max_vocab - 2)]), seq_len)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """(N, seq_len) int32 ids."""
        index = {w: i for i, w in enumerate(self.vocab)}
        texts = list(texts)
        out = np.full((len(texts), self.seq_len), PAD_ID, np.int32)
        for row, text in enumerate(texts):
            ids = [index.get(w, UNK_ID) for w in words(text)[: self.seq_len]]
            out[row, : len(ids)] = ids
        return out

    def restrict(self, vocab_size: int, seq_len: int) -> "WordTokenizer":
        """The tokenizer of a student with a smaller vocabulary and/or shorter input (see the module docstring)."""
        if not (3 <= vocab_size <= self.vocab_size and 1 <= seq_len <= self.seq_len):
            raise DataError(
                f"Cannot restrict a tokenizer of {self.vocab_size} ids / length {self.seq_len} to {vocab_size} / {seq_len}.",
                "A student's vocabulary and length must not exceed the data stage's.",
            )
        return WordTokenizer(self.vocab[:vocab_size], seq_len)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "normalize": "NFKC",
            "lowercase": True,
            "word_pattern": WORD_PATTERN,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "seq_len": self.seq_len,
            "vocab": list(self.vocab),
        }

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "WordTokenizer":
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read tokenizer file {path}: {exc}.", "Rerun the data stage (--force).") from None
        if spec.get("format") != FORMAT:
            raise DataError(f"Tokenizer file {path} has format {spec.get('format')!r}, expected {FORMAT!r}.", "Rerun the data stage (--force).")
        return cls(tuple(spec["vocab"]), int(spec["seq_len"]))


def restrict_ids(ids: np.ndarray, vocab_size: int, seq_len: int) -> np.ndarray:
    """Ids of the data stage's tokenizer → ids of ``tokenizer.restrict(vocab_size, seq_len)``, same texts."""
    cut = np.ascontiguousarray(ids[:, :seq_len])
    return np.where(cut < vocab_size, cut, UNK_ID).astype(ids.dtype, copy=False)
