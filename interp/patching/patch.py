"""Public patching API: `exact_patch` (every cell its own patched run, batched) and `attribution_patch`
(gradient x activation difference: two forwards and one backward for the whole grid)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from interp.patching.engine import (
    Grid,
    Hooks,
    add_capture,
    as_ids,
    capture,
    exact_values,
    first_output,
    heads_view,
    hidden_of,
    make_grid,
    replace_first_output,
    sites,
    with_hidden,
)
from interp.patching.metrics import Metric, MetricFn, as_metric, check_metric
from interp.patching.result import PatchResult
from interp.positions import PositionsLike

if TYPE_CHECKING:
    from interp.models import Model

Tokens = str | torch.Tensor | Sequence[int]


def _labels(model: Model, ids: torch.Tensor, positions: Sequence[int]) -> tuple[str, ...]:
    toks = model.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    return tuple(str(toks[p]) for p in positions)


def _prepare(model: Model, clean: Tokens, corrupted: Tokens, hook: str, layers: Sequence[int] | None,
             positions: PositionsLike, heads: Sequence[int] | None, align: Sequence[int] | None,
             readout: int | None) -> tuple[torch.Tensor, torch.Tensor, Grid]:
    src, tgt = as_ids(model, clean), as_ids(model, corrupted)
    return src, tgt, make_grid(model, src, tgt, hook, layers, positions, heads, align, readout)


def _result(model: Model, grid: Grid, tgt: torch.Tensor, values: torch.Tensor, metric: Metric, clean: float,
            corrupt: float, method: str, seconds: float) -> PatchResult:
    return PatchResult(values=values.float(), hook=grid.kind, layers=grid.layers, positions=grid.positions,
                       heads=grid.heads, position_labels=_labels(model, tgt, grid.positions), metric=metric.name,
                       clean=clean, corrupt=corrupt, method=method, model=model.name, checksum=model.checksum,
                       readout=grid.readout, seconds=seconds)


def exact_patch(model: Model, clean: Tokens, corrupted: Tokens, metric: Metric | MetricFn,
                hook: str = "blocks.*.hook_resid_pre", layers: Sequence[int] | None = None,
                positions: PositionsLike = None, heads: Sequence[int] | None = None, align: PositionsLike = None,
                readout: int | None = None, max_batch: int = 512, overhead_tokens: float = 48.0) -> PatchResult:
    """Patch each (layer, position[, head]) cell of `hook` from the clean run into the corrupted run, one run
    per cell, all batched; the metric reads the logits at `readout` (default: the corrupted prompt's last token).

    `hook` is a TransformerLens name (`blocks.3.hook_resid_pre`), a pattern over layers (`blocks.*.hook_z`), or
    a kind (`resid_pre`) with `layers`. `metric` maps logits `[batch, vocab]` to `[batch]`. Positions (any
    `interp.positions` form, negatives from the end) index the corrupted prompt; `align` gives each one's
    clean position when the prompts differ in length. Defaults: every layer, every position, every head.
    """
    metric = as_metric(metric)
    src, tgt, grid = _prepare(model, clean, corrupted, hook, layers, positions, heads, align, readout)
    t0 = time.perf_counter()
    values, clean, corrupt = exact_values(model, src, tgt, grid, metric, max_batch, overhead_tokens)
    return _result(model, grid, tgt, values, metric, clean, corrupt, "exact", time.perf_counter() - t0)


def attribution_patch(model: Model, clean: Tokens, corrupted: Tokens, metric: Metric | MetricFn,
                      hook: str = "blocks.*.hook_resid_pre", layers: Sequence[int] | None = None,
                      positions: PositionsLike = None, heads: Sequence[int] | None = None,
                      align: PositionsLike = None, readout: int | None = None) -> PatchResult:
    """First-order estimate of every cell's patched metric: corrupt + grad_corrupted . (clean - corrupted), from
    one clean forward, one corrupted forward and one backward (Nanda's attribution patching); arguments as in
    `exact_patch`."""
    metric = as_metric(metric)
    src, tgt, grid = _prepare(model, clean, corrupted, hook, layers, positions, heads, align, readout)
    t0 = time.perf_counter()
    src_readout = grid.readout if src.shape[1] == tgt.shape[1] else src.shape[1] - 1
    src_logits, src_acts, _ = capture(model, src, grid.kind, grid.layers, readout=src_readout)
    clean = float(check_metric(metric, src_logits[:, -1])[0])
    s = sites(model)
    store: dict[int, torch.Tensor] = {}
    with Hooks() as hk, torch.enable_grad():
        for layer in grid.layers:
            add_capture(hk, s, grid.kind, layer, store)
        logits = model.hf(input_ids=tgt[:, : grid.readout + 1]).logits
        m = check_metric(metric, logits[:, grid.readout])
        acts = [store[layer] for layer in grid.layers]
        grads = torch.autograd.grad(m.sum(), acts, allow_unused=True)
    corrupt = float(m[0].detach())
    if grid.kind == "z":
        acts = [heads_view(a, s) for a in acts]
        grads = [heads_view(g, s) if g is not None else None for g in grads]
    pos = torch.tensor(grid.positions)
    spos = torch.tensor(grid.src_positions)
    rows = []
    for layer, act, g in zip(grid.layers, acts, grads):
        if g is None:  # the readout does not depend on this activation
            g = torch.zeros_like(act)
        diff = src_acts[layer][0, spos] - act.detach()[0, pos]  # [pos, d] or [pos, head, d_head]
        est = (diff * g[0, pos]).sum(-1)
        if grid.heads is not None:
            est = est[:, list(grid.heads)]
        rows.append(est)
    values = corrupt + torch.stack(rows).float()
    # positions after the readout cannot affect it: the estimate is exactly zero there already (zero gradient)
    return _result(model, grid, tgt, values.detach().cpu(), metric, clean, corrupt, "attribution",
                   time.perf_counter() - t0)


def spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped arrays (flattened), ties given their mean rank."""
    from scipy.stats import spearmanr

    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"cannot correlate arrays of {x.size} and {y.size} values")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def attribution_agreement(exact: PatchResult, attribution: PatchResult) -> dict[str, float]:
    """How well attribution patching ranks and sizes the cells exact patching measured: Spearman and Pearson
    of the effects, and the share of the exact top-10% cells that attribution also puts in its top 10%."""
    if exact.values.shape != attribution.values.shape:
        raise ValueError(f"grids differ: exact {list(exact.values.shape)}, attribution {list(attribution.values.shape)}")
    x, y = exact.effects.flatten().numpy(), attribution.effects.flatten().numpy()
    k = max(1, len(x) // 10)
    top = len(set(np.argsort(-np.abs(x))[:k]) & set(np.argsort(-np.abs(y))[:k])) / k
    pearson = float(np.corrcoef(x, y)[0, 1]) if np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")
    moved = (x != 0) | (y != 0)  # cells where source and target differ (elsewhere both are exactly 0)
    return {"spearman": spearman(x, y), "spearman_changed_cells": spearman(x[moved], y[moved]) if moved.sum() > 2
            else float("nan"), "pearson": pearson, "top10_overlap": top, "n_cells": float(len(x)),
            "n_changed_cells": float(moved.sum())}


@torch.no_grad()
def run_with_patch(model: Model, clean: Tokens, corrupted: Tokens, hook: str, layer: int | None,
                   positions: PositionsLike, align: PositionsLike = None) -> torch.Tensor:
    """Logits `[pos, vocab]` of ONE corrupted run with the clean run's `hook` activation at `layer` written into
    all `positions` at once (e.g. every position at layer 0 resid_pre: the run becomes the clean run). `hook`
    may name the layer itself (`blocks.0.hook_resid_pre`, layer None)."""
    src, tgt, grid = _prepare(model, clean, corrupted, hook, None if layer is None else [layer], positions, None,
                              align, None)
    if grid.kind == "z":
        raise ValueError("run_with_patch patches whole vectors; use exact_patch for per-head z")
    _, acts, _ = capture(model, src, grid.kind, [layer])
    s = sites(model)
    vals = acts[layer][0, list(grid.src_positions)]
    pos = list(grid.positions)
    resid_in: dict[str, torch.Tensor] = {}
    with Hooks() as hk:
        def pre(m: Any, a: tuple, k: dict) -> tuple[tuple, dict]:
            h = hidden_of(a, k)
            resid_in["h"] = h
            if grid.kind == "resid_pre":
                h = h.clone()
                h[0, pos] = vals
            return with_hidden(a, k, h)

        hk.pre(s.layers[layer], pre)
        if grid.kind != "resid_pre":
            mod = {"resid_post": s.layers, "attn_out": s.attn, "mlp_out": s.mlp, "resid_mid": s.attn}[grid.kind][layer]

            def post(m: Any, a: tuple, o: Any) -> Any:
                x = first_output(o).clone()
                x[0, pos] = vals - resid_in["h"][0, pos] if grid.kind == "resid_mid" else vals
                return replace_first_output(o, x)

            hk.post(mod, post)
        return model.hf(input_ids=tgt).logits[0]


__all__ = ["Tokens", "attribution_agreement", "attribution_patch", "exact_patch", "run_with_patch", "spearman"]
