"""Small statistics, pure: bootstrap confidence intervals of a rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ci(outcomes: Sequence[bool | float], n_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `outcomes` (resampled with replacement, seeded)."""
    values = np.asarray(outcomes, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
