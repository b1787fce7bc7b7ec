"""From intent scores to a confidence that means what it says.

A logistic curve over two features, the margin of the best intent's score over the second best
and whether any intent had evidence at all, fitted (`fit` below) on the training lines of the
labelled set's "blind" part: messages written after the rules were frozen, so the curve learns
how often the rules are right on messages they were not written against, not on the ones they
were tuned on (there they are right 98% of the time, and a curve fitted there said 0.99 for
answers right three times in four). The figures per confidence bucket are in the README.
"""

from __future__ import annotations

import math

# Fitted coefficients (see the module docstring): bias, margin, no evidence at all.
BIAS = 1.387
MARGIN = 2.334
NO_EVIDENCE = -1.611


def features(best: float, second: float) -> tuple[float, float]:
    return (min(best - second, 8.0) / 4.0, 1.0 if best <= 0 else 0.0)


def confidence(best: float, second: float, coefficients: tuple[float, ...] | None = None) -> float:
    bias, w_margin, w_none = coefficients or (BIAS, MARGIN, NO_EVIDENCE)
    f_margin, f_none = features(best, second)
    z = bias + w_margin * f_margin + w_none * f_none
    return round(1.0 / (1.0 + math.exp(-z)), 3)


def fit(samples: list[tuple[float, float, bool]], steps: int = 4000, rate: float = 0.5) -> tuple[float, ...]:
    """Logistic regression by gradient descent on (best score, second score, was right) samples."""
    weights = [0.0, 0.0, 0.0]
    rows = [((1.0, *features(best, second)), 1.0 if correct else 0.0) for best, second, correct in samples]
    for _ in range(steps):
        gradient = [0.0] * len(weights)
        for x, y in rows:
            p = 1.0 / (1.0 + math.exp(-sum(w * v for w, v in zip(weights, x, strict=True))))
            for i, v in enumerate(x):
                gradient[i] += (p - y) * v
        weights = [w - rate * g / len(rows) for w, g in zip(weights, gradient, strict=True)]
    return tuple(round(w, 3) for w in weights)
