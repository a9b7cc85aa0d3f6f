"""The classical-baseline stage: a non-neural model on the same splits (text: TF-IDF + logistic regression), for the ledger."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..data import DataResult
from ..rundir import RunDir
from .data import write_npy


@dataclass(frozen=True)
class ClassicalSettings:
    method: str = "tfidf-logreg"  # TF-IDF word 1-2-grams + logistic regression, C chosen on validation (models/classical.py)


def fit_classical(run: RunDir, task, data: DataResult):
    result, test_scores = task.classical_baseline(run, data)
    write_npy(run, "verify/tfidf_test_scores.npy", test_scores)
    result = dataclasses.replace(result, scores_path="verify/tfidf_test_scores.npy")
    return result, [run.path(result.scores_path)]
