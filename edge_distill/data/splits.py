"""Seeded, stratified splits and the class-balanced calibration subset."""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def stratified_split(y: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Index arrays per split; every class is spread over the splits in proportion to ``fractions``."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in fractions}
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        bounds = np.cumsum([round(f * len(idx)) for f in fractions.values()])[:-1]
        for name, chunk in zip(fractions, np.split(idx, bounds)):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def balanced_subset(y: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` indices with (as near as possible) the same number from every class."""
    classes = np.unique(y)
    if count < len(classes):
        raise DataError(
            f"Asked for {count} calibration samples, fewer than the {len(classes)} classes.",
            f"Use at least {len(classes)} (a few hundred is typical).",
        )
    if count > len(y):
        raise DataError(
            f"Asked for {count} calibration samples but the training split has only {len(y)}.",
            f"Use at most {len(y)}.",
        )
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    picked: list[int] = []
    # Round-robin over classes so small classes are not crowded out.
    depth = 0
    while len(picked) < count:
        for pool in pools:
            if depth < len(pool) and len(picked) < count:
                picked.append(int(pool[depth]))
        depth += 1
    return np.sort(np.array(picked))
