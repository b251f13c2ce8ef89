"""Bootstrap intervals, in one place: every effect in the toolkit is reported with one of these.

`percentile_ci` turns bootstrap replicates into an interval; `bootstrap_ci` resamples a per-problem
vector for its mean; `paired_bootstrap` resamples problem indices for any statistic, so several
conditions measured on the same problems share their resamples; `group_bootstrap` gives row weights
that draw whole problems (for rows that come several per problem).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def percentile_ci(replicates: np.ndarray | Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap replicates (NaN replicates ignored; NaN if none are left)."""
    vals = np.asarray(replicates, dtype=float)
    if vals.size == 0 or np.isnan(vals).all():
        return (float("nan"), float("nan"))
    lo, hi = np.nanquantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(x: np.ndarray, n_boot: int, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `x`."""
    if len(x) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    return percentile_ci(x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1), level)


def paired_bootstrap(fn: Callable[[np.ndarray], float], n: int, n_boot: int, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a statistic of resampled problem indices (paired across conditions)."""
    rng = np.random.default_rng(seed)
    return percentile_ci([fn(rng.integers(0, n, size=n)) for _ in range(n_boot)], level)


def group_bootstrap(groups: Sequence[str], n_boot: int, seed: int = 0) -> np.ndarray:
    """Bootstrap row weights [n_boot, n_rows]: whole problems drawn with replacement, each row weighted
    by how often its problem was drawn (for intervals over problems, not over tokens)."""
    keys, gid = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keys), size=(n_boot, len(keys)))
    counts = np.zeros((n_boot, len(keys)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, gid]


__all__ = ["bootstrap_ci", "group_bootstrap", "paired_bootstrap", "percentile_ci"]
