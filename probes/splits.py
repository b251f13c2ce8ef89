"""Train/test splits by problem (never by token) and control tasks with consistent random labels.

Rows of the same problem (several positions, several layers) always fall on the same side, so a probe
cannot pass by recognising a problem it saw. The control task (Hewitt & Liang 2019) gives each problem
a random label drawn from the real labels' distribution, the same for all of its rows: a probe that
scores above the control reads the property, not the capacity to memorise inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from interp.stats import group_bootstrap


def split_by_group(groups: Sequence[str], test_fraction: float = 0.3, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean train and test masks over rows; whole groups go to one side."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise ValueError(f"need at least two problems to split, got {len(unique)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    test_groups = {unique[i] for i in order[:n_test]}
    test = np.array([g in test_groups for g in groups])
    return ~test, test


def control_labels(y: Sequence[Any], groups: Sequence[str], seed: int = 0) -> list[Any]:
    """Per problem, a label drawn by shuffling the problems' real labels: same marginal, no information."""
    first: dict[str, Any] = {}
    for label, g in zip(y, groups):
        first.setdefault(g, label)
    keys = sorted(first)
    rng = np.random.default_rng(seed + 7919)
    shuffled = [first[keys[i]] for i in rng.permutation(len(keys))]
    mapping = dict(zip(keys, shuffled))
    return [mapping[g] for g in groups]


__all__ = ["control_labels", "group_bootstrap", "split_by_group"]
