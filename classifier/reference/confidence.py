"""From intent scores to a confidence that means what it says.

The features are the best score and its margin over the second best; a logistic curve over
them was fitted on the training split of classifier/data/labelled.jsonl (every line but each
fifth; `fit` below, over each line's best and second score and whether the intent was right) so that, over messages, the
confidence roughly matches how often the intent is right. The figures per confidence bucket
are in the README.
"""

from __future__ import annotations

import math

# Fitted coefficients (see the module docstring): bias, best score, margin, no evidence at all.
# With few wrong answers in the training split the curve is steep: most messages land near 0.98.
BIAS = 2.383
BEST = -2.818
MARGIN = 6.335
NO_EVIDENCE = 3.041


def features(best: float, second: float) -> tuple[float, float, float]:
    return (min(best, 8.0) / 4.0, min(best - second, 8.0) / 4.0, 1.0 if best <= 0 else 0.0)


def confidence(best: float, second: float, coefficients: tuple[float, float, float, float] | None = None) -> float:
    bias, w_best, w_margin, w_none = coefficients or (BIAS, BEST, MARGIN, NO_EVIDENCE)
    f_best, f_margin, f_none = features(best, second)
    z = bias + w_best * f_best + w_margin * f_margin + w_none * f_none
    return round(1.0 / (1.0 + math.exp(-z)), 3)


def fit(samples: list[tuple[float, float, bool]], steps: int = 4000, rate: float = 0.5) -> tuple[float, ...]:
    """Logistic regression by gradient descent on (best, second, correct) samples."""
    weights = [0.0, 0.0, 0.0, 0.0]
    rows = [((1.0, *features(best, second)), 1.0 if correct else 0.0) for best, second, correct in samples]
    for _ in range(steps):
        gradient = [0.0] * 4
        for x, y in rows:
            p = 1.0 / (1.0 + math.exp(-sum(w * v for w, v in zip(weights, x, strict=True))))
            for i, v in enumerate(x):
                gradient[i] += (p - y) * v
        weights = [w - rate * g / len(rows) for w, g in zip(weights, gradient, strict=True)]
    return tuple(round(w, 3) for w in weights)
