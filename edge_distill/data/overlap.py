"""Which samples of a transfer set (``--unlabelled``) the build's own splits already hold.

A user's pool of unlabelled images easily contains the labelled ones (the whole camera folder) or the test set (the
parent folder of ``--data`` and ``--test-data``).  A test sample in the transfer set is the worst case: the teacher
labels it, the students train on its answer, and the test accuracy every decision reads is no longer held out.
These functions find exact copies -- the same file decoded the same way, the same array row, the same text -- so
the transfer stage can leave them out and say so; near-copies (a re-encoded JPEG) are not caught.
"""

from __future__ import annotations

import numpy as np

# Two prepared images count as one when no pixel differs by more than this (normalized units, ~1/4000 of a std):
# float rounding between preparation paths, never two real photos.
PIXEL_TOLERANCE = 2.5e-4


def same_images(candidates: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mask over ``candidates`` (N, ...): True where some image of ``reference`` (M, ...) equals it within
    ``PIXEL_TOLERANCE``.  Images are matched by their pixel sum first (sorted, so ~N log M), then compared whole."""
    found = np.zeros(len(candidates), bool)
    if len(candidates) == 0 or len(reference) == 0:
        return found
    pixels = int(np.prod(candidates.shape[1:]))
    ref_sums = reference.reshape(len(reference), -1).sum(1, dtype=np.float64)
    order = np.argsort(ref_sums)
    ref_sorted = ref_sums[order]
    sums = candidates.reshape(len(candidates), -1).sum(1, dtype=np.float64)
    slack = PIXEL_TOLERANCE * pixels
    lo, hi = np.searchsorted(ref_sorted, sums - slack, "left"), np.searchsorted(ref_sorted, sums + slack, "right")
    for i in np.flatnonzero(hi > lo):
        near = reference[order[lo[i] : hi[i]]]
        found[i] = bool((np.abs(near - candidates[i]).reshape(len(near), -1).max(1) <= PIXEL_TOLERANCE).any())
    return found


def text_key(text: str) -> str:
    """What makes two texts the same sample for a student: their words, whatever the spacing and case."""
    return " ".join(text.split()).casefold()


def same_texts(candidates: list[str], reference: list[str]) -> np.ndarray:
    """Mask over ``candidates``: True where ``reference`` holds the same text (``text_key``)."""
    known = {text_key(t) for t in reference}
    return np.array([text_key(t) in known for t in candidates], bool)
