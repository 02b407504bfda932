"""Macro-F1 and the row-normalised confusion matrix, computed with torch (no sklearn)."""
from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "macro_f1_score"]


def confusion_matrix(y_true: list[int], y_pred: list[int], labels: list[int]) -> torch.Tensor:
    """Counts ``[len(labels), len(labels)]``: row = true label, column = predicted label.

    Pairs whose true or predicted label is not in ``labels`` are left out.
    """
    index = {label: i for i, label in enumerate(labels)}
    cmat = torch.zeros(len(labels), len(labels), dtype=torch.float64)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            cmat[index[t], index[p]] += 1
    return cmat


def macro_f1_score(y_true: list[int], y_pred: list[int]) -> float:
    """Unweighted mean over the labels present in ``y_true`` of 2TP / (2TP + FP + FN); 0 when undefined.

    Matches sklearn's ``f1_score(average="macro", labels=np.unique(y_true))``.
    """
    labels = sorted(set(y_true))
    if not labels:
        return 0.0
    true = torch.tensor(y_true)
    pred = torch.tensor(y_pred)
    scores = []
    for label in labels:
        tp = ((pred == label) & (true == label)).sum().item()
        fp = ((pred == label) & (true != label)).sum().item()
        fn = ((pred != label) & (true == label)).sum().item()
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom > 0 else 0.0)
    return sum(scores) / len(scores)
