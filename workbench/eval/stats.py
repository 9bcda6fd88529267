"""Small statistics, pure: intervals for compliance rates and for differences between interventions.

- `wilson_interval`: the Wilson score interval of a binomial rate k/n. Unlike the percentile bootstrap it has close
  to nominal coverage at small n and is not zero-width at 0/n or n/n (the bootstrap of 24 prompts all refused is
  [0, 0]; Wilson gives [0, 0.138]). Compliance rates in `evaluation.csv` use it.
- `bootstrap_ci`: the percentile bootstrap of a mean, for statistics without a closed form (e.g. the paired
  difference of two interventions' compliance on the same prompts, `paired_difference_ci`).
- `newcombe_paired_interval`: a closed-form interval for the difference of two rates on the same prompts (a
  `PairedCounts` table, e.g. one intervention in two runs), Newcombe's square-and-add of Wilson intervals.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

Outcomes = Sequence[bool | float] | np.ndarray
"""Per-prompt outcomes (complied: True/1, refused: False/0), or their differences."""


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the rate successes/n at confidence `level`."""
    if n <= 0:
        raise ValueError("an interval of an empty sample")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At k = 0 or n the bound is exactly 0 or 1 (rounding can leave 1e-17).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def bootstrap_ci(outcomes: Outcomes, n_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `outcomes` (resampled with replacement, seeded)."""
    values = np.asarray(outcomes, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_difference_ci(a: Outcomes, b: Outcomes, n_resamples: int = 1000,
                         level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of mean(a) − mean(b) for outcomes on the same prompts (resampled as pairs)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes of different lengths: {len(a)} and {len(b)}")
    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return bootstrap_ci(diffs, n_resamples, level, seed)


@dataclass(frozen=True)
class PairedCounts:
    """The 2×2 table of two binary outcomes on the same prompts (e.g. complied under run B, under run A)."""

    both: int
    """Prompts with outcome 1 under both."""
    first_only: int
    """Prompts with outcome 1 under the first only."""
    second_only: int
    """Prompts with outcome 1 under the second only."""
    neither: int
    """Prompts with outcome 0 under both."""

    @property
    def n(self) -> int:
        return self.both + self.first_only + self.second_only + self.neither

    @property
    def difference(self) -> float:
        """rate(first) − rate(second) = (first_only − second_only) / n."""
        return (self.first_only - self.second_only) / self.n


def paired_counts(first: Outcomes, second: Outcomes) -> PairedCounts:
    """The 2×2 table of two equally long sequences of 0/1 outcomes, paired by position."""
    if len(first) != len(second):
        raise ValueError(f"paired outcomes of different lengths: {len(first)} and {len(second)}")
    x, y = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    return PairedCounts(int((x & y).sum()), int((x & ~y).sum()), int((~x & y).sum()), int((~x & ~y).sum()))


def newcombe_paired_interval(counts: PairedCounts, level: float = 0.95) -> tuple[float, float]:
    """Newcombe's square-and-add interval (1998, method 10) for rate(first) − rate(second) on paired outcomes: the
    Wilson intervals of the two marginal rates combined with their estimated correlation ψ (continuity-corrected:
    0 where the cross-product difference is in [0, n/2]). Not zero-width when both agree everywhere, unlike Wald."""
    n = counts.n
    if n <= 0:
        raise ValueError("an interval of an empty sample")
    k1, k2 = counts.both + counts.first_only, counts.both + counts.second_only
    p1, p2 = k1 / n, k2 / n
    l1, u1 = wilson_interval(k1, n, level)
    l2, u2 = wilson_interval(k2, n, level)
    margins = k1 * (n - k1) * k2 * (n - k2)
    cross = counts.both * counts.neither - counts.first_only * counts.second_only
    if margins == 0 or 0 <= cross <= n / 2:
        psi = 0.0
    else:
        psi = (cross - n / 2 if cross > n / 2 else cross) / math.sqrt(margins)
    d = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * psi * (p1 - l1) * (u2 - p2)))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 + (p2 - l2) ** 2 - 2 * psi * (u1 - p1) * (p2 - l2)))
    return max(-1.0, d - below), min(1.0, d + above)
