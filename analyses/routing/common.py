"""Pieces the "when, not how" analyses share (routing, compute, calibration): prompts of a task's items,
paired intervals over problems, and a result cache keyed by config and model checksums."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from interp.io import read_json, write_json
from interp.plots import short_name
from interp.stats import paired_bootstrap
from interp.tasks.base import Item, Task
from interp.tasks.encode import encode_text

if TYPE_CHECKING:
    from interp.models import Model

R = TypeVar("R")


def sample_items(task: Task, steps: Sequence[int], n_per_step: int, seed: int) -> list[Item]:
    """`n_per_step` items for each step count (seed offset by the step count, so the sets are disjoint draws);
    from a task that does not sample by steps (a JSONL file), `n_per_step * len(steps)` items from `seed`."""
    if n_per_step < 1:
        raise ValueError(f"n_per_step must be at least 1, got {n_per_step}")
    if not task.has_steps:
        return task.sample(n_per_step * len(steps), seed)
    return [it for k in steps for it in task.sample(n_per_step, seed=seed + 1009 * k, n_steps=k)]


def prompt_ids(model: Model, task: Task, items: Sequence[Item], prefix: bool = False) -> list[list[int]]:
    """Token ids of each item's prompt (plus the task's chain-of-thought prefix if `prefix`), as evaluate sees them."""
    return [list(encode_text(model, task.prompt(it), task.cot_prefix(it) if prefix else "").ids) for it in items]


def ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int, seed: int) -> tuple[float, tuple[float, float]]:
    """sum(num) / sum(den) with a bootstrap interval over problems (rows)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    value = float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")

    def fn(i: np.ndarray) -> float:
        d = den[i].sum()
        return float(num[i].sum() / d) if d > 0 else float("nan")

    return value, paired_bootstrap(fn, len(num), n_boot, seed)


def gap_recovered(hybrid: np.ndarray, base: np.ndarray, tuned: np.ndarray, n_boot: int, seed: int
                  ) -> tuple[float, tuple[float, float]]:
    """(hybrid - base) / (tuned - base) of mean accuracy, with an interval paired over problems (NaN when the
    resampled gap is zero)."""
    h, b, t = (np.asarray(x, float) for x in (hybrid, base, tuned))

    def stat(i: np.ndarray) -> float:
        gap = t[i].mean() - b[i].mean()
        return float((h[i].mean() - b[i].mean()) / gap) if abs(gap) > 1e-12 else float("nan")

    return stat(np.arange(len(h))), paired_bootstrap(stat, len(h), n_boot, seed)


def mean_diff(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, tuple[float, float]]:
    """mean(a) - mean(b) over the same problems, with a paired bootstrap interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a.mean() - b.mean()), paired_bootstrap(lambda i: float(a[i].mean() - b[i].mean()), len(a), n_boot,
                                                        seed)


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(folder: str | Path, key: Mapping[str, Any], make: Callable[[], R], to_dict: Callable[[R], dict],
           from_dict: Callable[[dict], R]) -> R:
    """The result stored under `key` in `folder`, else `make()` (then stored)."""
    path = Path(folder) / f"result-{digest(dict(key))}.json"
    if path.is_file():
        return from_dict(read_json(path))
    result = make()
    write_json(path, to_dict(result))
    return result


short = short_name  # one display name for every figure (interp.plots)


__all__ = ["cached", "digest", "gap_recovered", "mean_diff", "prompt_ids", "ratio_ci", "sample_items", "short"]
