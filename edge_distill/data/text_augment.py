"""Word dropout: augmented copies of texts for distillation on teacher-labelled views.

A text student sees each training text once per epoch and memorizes it (train loss far below validation
loss), so a teacher's soft targets on the *same* texts add little.  Teacher-labelled perturbed copies widen
what the student learns the teacher's function on (Tang et al. 2019, "Distilling task-specific knowledge
from BERT into simple neural networks"; Beyer et al. 2022 call it function matching).  Dropping words is the
perturbation that needs no model of the language and tokenizes the same for every tokenizer: the copy is
still a string, which the teacher and the student each encode with their own vocabulary.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import ConfigError
from .tokenizer import WORD_PATTERN

_WORDS = re.compile(WORD_PATTERN)
_SPACES = re.compile(r"\s+")


def drop_words(texts: list[str], p: float, seed: int) -> list[str]:
    """Each text with every word removed with probability ``p`` (at least one word kept); punctuation stays.

    Deterministic in ``seed``: the same texts, ``p`` and seed give the same copies (a resumed build re-creates
    the views its cached teacher outputs belong to).
    """
    if not 0.0 < p < 1.0:
        raise ConfigError(f"Word dropout must be within (0, 1), got {p}.", "Use e.g. 0.2 (one word in five dropped).")
    rng = np.random.default_rng(seed)
    out = []
    for text in texts:
        spans = [m.span() for m in _WORDS.finditer(text)]
        keep = rng.random(len(spans)) >= p
        if spans and not keep.any():
            keep[rng.integers(len(spans))] = True
        pieces, last = [], 0
        for (start, end), kept in zip(spans, keep):
            if not kept:
                pieces.append(text[last:start])
                last = end
        pieces.append(text[last:])
        out.append(_SPACES.sub(" ", "".join(pieces)).strip())
    return out
