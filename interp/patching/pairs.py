"""Exact patching over many prompt pairs: one grid per pair, in this process or one Ray task per pair.

A pair is (clean, corrupted, metric); every pair is patched at the same hook, layers, positions and heads.
With `ray=...` each pair's grid is computed on a worker that reloads the model from its folder; the grids
are the ones a run in this process gives (only `seconds`, the time each took, differs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from interp.cluster import model_spec, ray_enabled, run_tasks, worker_model
from interp.patching.metrics import Metric, MetricFn
from interp.patching.patch import Tokens, exact_patch
from interp.patching.result import PatchResult

if TYPE_CHECKING:
    from interp.models import Model

Pair = tuple[Tokens, Tokens, "Metric | MetricFn"]


def _pair_task(spec: tuple[str, str, str, str, str], clean: Tokens, corrupted: Tokens, metric: Metric | MetricFn,
               kw: dict[str, Any]) -> PatchResult:
    """One Ray task: the grid of one pair."""
    return exact_patch(worker_model(spec), clean, corrupted, metric, **kw)


def patch_pairs(model: Model, pairs: Sequence[Pair], hook: str = "blocks.*.hook_resid_pre",
                layers: Sequence[int] | None = None, positions: Any = None, heads: Sequence[int] | None = None,
                max_batch: int = 512, ray: str | bool | None = None, num_cpus: float = 1, num_gpus: float = 0,
                progress: Callable[[int, int], None] | None = None) -> list[PatchResult]:
    """`exact_patch(model, clean, corrupted, metric, hook, ...)` for every pair, in order; `ray` (see
    `interp.cluster`) runs each pair as a Ray task declaring `num_cpus`/`num_gpus`."""
    pairs = [tuple(p) for p in pairs]
    bad = [i for i, p in enumerate(pairs) if len(p) != 3]
    if bad:
        raise ValueError(f"pairs {bad[:5]} are not (clean, corrupted, metric) triples")
    kw = {"hook": hook, "layers": layers, "positions": positions, "heads": heads, "max_batch": max_batch}
    if not ray_enabled(ray):
        return run_tasks(functools.partial(exact_patch, model, **kw), pairs, progress=progress)
    spec = model_spec(model)
    return run_tasks(_pair_task, [(spec, c, x, m, kw) for c, x, m in pairs], ray=ray, num_cpus=num_cpus,
                     num_gpus=num_gpus, progress=progress)


__all__ = ["Pair", "patch_pairs"]
