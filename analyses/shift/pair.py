"""Distribution shift on any pair: each model's greedy accuracy in distribution and under every shift the task
offers (`Task.shifts()`: longer chains, unseen variable names, ...), the drop the shift costs it, and whether
post-training changes that drop (each tuned model's drop minus the base's).

Every model answers the same items in each condition, so differences between models within a condition are
paired; a drop compares two independent draws of items, and its bootstrap resamples each draw on its own. The
first zoo's own battery (`analyses.shift.analysis`) goes further on that organism (format, noise, distractors,
chain validity); this one needs nothing but a task that can shift.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analyses.routing.common import cached, short
from interp.io import cache_dir, library_versions
from interp.stats import bootstrap_ci, paired_bootstrap, percentile_ci

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks import Item, Task, TaskShift

RESULT_VERSION = 1
IN_DISTRIBUTION = "in-distribution"


@dataclass(frozen=True)
class PairShiftConfig:
    """The models (the base first), the task and how many items each condition draws."""

    models: tuple[str, ...] = ("organism-nl/base", "organism-nl/sft", "organism-nl/rl")
    task: str = "organism-nl"
    n: int = 200  # items per condition (a shift over several step counts splits them evenly)
    seed: int = 15_000_017
    max_new_tokens: int = 96
    batch_size: int = 256
    n_boot: int = 1000
    cache_dir: str = field(default_factory=lambda: str(cache_dir("shift_pair")))

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise ValueError(f"give the base and at least one tuned model, got {list(self.models)}")
        if self.n < 2:
            raise ValueError(f"n must be at least 2 items per condition, got {self.n}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairShiftConfig:
        return cls(**{**d, "models": tuple(d["models"])})

    def key(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "cache_dir"}


@dataclass(frozen=True)
class Cell:
    """One model under one condition: per item, right or not, whether it wrote a chain, and its tokens."""

    model: str
    condition: str
    correct: tuple[bool, ...]
    cot: tuple[bool, ...]
    tokens: tuple[int, ...]

    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    def accuracy_ci(self, n_boot: int) -> tuple[float, float]:
        """95% bootstrap interval of the accuracy over items."""
        return bootstrap_ci(np.asarray(self.correct, float), n_boot)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "condition": self.condition, "correct": [int(c) for c in self.correct],
                "cot": [int(c) for c in self.cot], "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cell:
        return cls(d["model"], d["condition"], tuple(bool(c) for c in d["correct"]), tuple(bool(c) for c in d["cot"]),
                   tuple(int(t) for t in d["tokens"]))


@dataclass(frozen=True)
class PairShiftResult:
    config: PairShiftConfig
    task: dict[str, Any]
    conditions: tuple[dict[str, Any], ...]  # in-distribution first, then each TaskShift.to_dict()
    cells: tuple[Cell, ...]
    seconds: float
    libraries: dict[str, str]

    def cell(self, model: str, condition: str) -> Cell:
        for c in self.cells:
            if c.model == model and c.condition == condition:
                return c
        raise KeyError(f"no cell for {model!r} under {condition!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "task": self.task, "conditions": list(self.conditions),
                "cells": [c.to_dict() for c in self.cells], "seconds": self.seconds, "libraries": self.libraries,
                "version": RESULT_VERSION}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairShiftResult:
        return cls(PairShiftConfig.from_dict(d["config"]), dict(d["task"]), tuple(d["conditions"]),
                   tuple(Cell.from_dict(c) for c in d["cells"]), d["seconds"], dict(d["libraries"]))


def condition_items(task: Task, shift: TaskShift | None, n: int, seed: int) -> list[Item]:
    """`n` items in distribution (`shift` None) or under `shift` (split evenly over its step counts)."""
    if shift is None:
        return task.sample(n, seed)
    if shift.steps is None:
        return task.sample(n, seed, **shift.knobs)
    per = [n // len(shift.steps) + (i < n % len(shift.steps)) for i in range(len(shift.steps))]
    return [it for k, m in zip(shift.steps, per) if m for it in task.sample(m, seed + 1009 * k, n_steps=k, **shift.knobs)]


def run(config: PairShiftConfig = PairShiftConfig(), task: Task | None = None,
        models: Mapping[str, Model] | None = None) -> PairShiftResult:
    """Every model, greedy, on the same items in distribution and under each of the task's shifts."""
    from tqdm.auto import tqdm

    import interp
    from interp.evaluation import GenerationConfig, generate_completions

    t0 = time.time()
    task = task if task is not None else interp.task(config.task)
    shifts = task.shifts()
    if not shifts:
        raise ValueError(f"task {task.name!r} offers no distribution shift to draw items under (Task.shifts() is "
                         f"empty; a task read from a file has only its own items)")
    conds: list[tuple[dict[str, Any], list[Item]]] = [
        ({"name": IN_DISTRIBUTION, "description": "the task's own distribution", "knobs": {}, "steps": None},
         condition_items(task, None, config.n, config.seed))]
    conds += [(s.to_dict(), condition_items(task, s, config.n, config.seed + 7919 * (i + 1)))
              for i, s in enumerate(shifts)]
    given = dict(models or {})
    gen = GenerationConfig(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                           chat=bool(getattr(task, "chat", False)))
    cells = []
    for name in tqdm(config.models, desc="shift", leave=False):
        model = given.get(name) or interp.load(name)
        for cond, items in conds:
            texts, n_tokens = generate_completions(model, task, items, gen)
            grades = [task.grade(it, t) for it, t in zip(items, texts)]
            cells.append(Cell(name, cond["name"], tuple(g.correct for g in grades), tuple(g.cot for g in grades),
                              tuple(int(k) for k in n_tokens)))
    return PairShiftResult(config, task.describe(), tuple(c for c, _ in conds), tuple(cells), time.time() - t0,
                           library_versions())


def run_cached(config: PairShiftConfig = PairShiftConfig(), task: Task | None = None,
               models: Mapping[str, Model] | None = None) -> PairShiftResult:
    """`run`, reusing a stored result when the config, the task and every model's checksum are unchanged."""
    import interp

    given = dict(models or {})
    models = {n: given.get(n) or interp.load(n) for n in config.models}
    task = task if task is not None else interp.task(config.task)
    key = {"config": config.key(), "task": task.describe(), "models": [m.checksum for m in models.values()],
           "version": RESULT_VERSION}
    return cached(config.cache_dir, key, lambda: run(config, task, models), PairShiftResult.to_dict,
                  PairShiftResult.from_dict)


# ------------------------------------------------------------------------------------------ statistics

def drop_ci(shifted: Sequence[bool], base: Sequence[bool], n_boot: int, seed: int = 0
            ) -> tuple[float, tuple[float, float]]:
    """Accuracy under the shift minus in distribution, with an interval that resamples each draw on its own."""
    a, b = np.asarray(shifted, float), np.asarray(base, float)
    rng = np.random.default_rng(seed)
    reps = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    return float(a.mean() - b.mean()), percentile_ci(reps)


def drop_change_ci(result: PairShiftResult, tuned: str, condition: str, seed: int = 0
                   ) -> tuple[float, tuple[float, float]]:
    """The tuned model's drop minus the base's under `condition` (negative: post-training made the shift cost
    more), resampling the in-distribution and shifted items separately, each draw shared by both models."""
    base = result.config.models[0]
    t_in, t_sh = (np.asarray(result.cell(tuned, c).correct, float) for c in (IN_DISTRIBUTION, condition))
    b_in, b_sh = (np.asarray(result.cell(base, c).correct, float) for c in (IN_DISTRIBUTION, condition))
    rng = np.random.default_rng(seed)
    n_boot = result.config.n_boot
    i = rng.integers(0, len(t_in), (n_boot, len(t_in)))
    j = rng.integers(0, len(t_sh), (n_boot, len(t_sh)))
    reps = (t_sh[j].mean(1) - t_in[i].mean(1)) - (b_sh[j].mean(1) - b_in[i].mean(1))
    value = (t_sh.mean() - t_in.mean()) - (b_sh.mean() - b_in.mean())
    return float(value), percentile_ci(reps)


def _pct(v: float, ci: tuple[float, float]) -> str:
    return f"{100 * v:.0f}% [{100 * ci[0]:.0f}%, {100 * ci[1]:.0f}%]"


def _pts(v: float, ci: tuple[float, float]) -> str:
    return f"{100 * v:+.0f} points [{100 * ci[0]:+.0f}, {100 * ci[1]:+.0f}]"


def summary_sentences(result: PairShiftResult) -> list[str]:
    """One sentence per model (accuracy per condition, the drop each shift costs), then one per tuned model and
    shift: how post-training changed the drop."""
    cfg = result.config
    shifts = [c for c in result.conditions if c["name"] != IN_DISTRIBUTION]
    named = "; ".join(f"{c['name']}: {c['description']}" for c in shifts)
    out = [(f"Greedy accuracy on {cfg.n} items per condition, up to {cfg.max_new_tokens} new tokens, in distribution "
            f"and under each shift ({named}); 95% bootstrap intervals; a drop is the accuracy under the shift minus "
            f"in distribution.")]
    for m in cfg.models:
        ind = result.cell(m, IN_DISTRIBUTION)
        parts = [(f"in distribution {_pct(ind.accuracy(), ind.accuracy_ci(cfg.n_boot))} "
                 f"(CoT rate {100 * np.mean(ind.cot):.0f}%)")]
        for c in shifts:
            cell = result.cell(m, c["name"])
            d, dci = drop_ci(cell.correct, ind.correct, cfg.n_boot)
            parts.append(f"{c['name']} {_pct(cell.accuracy(), cell.accuracy_ci(cfg.n_boot))}"
                         f" ({_pts(d, dci)}; CoT rate {100 * np.mean(cell.cot):.0f}%)")
        out.append(f"{short(m)}: {'; '.join(parts)}.")
    for m in cfg.models[1:]:
        for c in shifts:
            v, ci = drop_change_ci(result, m, c["name"])
            verdict = ("a smaller drop than the base's" if ci[0] > 0 else "a larger drop than the base's" if ci[1] < 0
                       else "not distinguishable from the base's drop")
            t, b = (np.asarray(result.cell(x, c["name"]).correct, float) for x in (m, cfg.models[0]))
            gap = paired_bootstrap(lambda i, t=t, b=b: float(t[i].mean() - b[i].mean()), len(t), cfg.n_boot)
            out.append(f"{short(m)} vs {short(cfg.models[0])} under {c['name']}: accuracy "
                       f"{_pts(float(t.mean() - b.mean()), gap)} (paired, same items); its drop minus the base's is "
                       f"{_pts(v, ci)} ({verdict}).")
    return out


def figures(result: PairShiftResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Accuracy per condition, one bar per model, with 95% bootstrap intervals."""
    import plotly.graph_objects as go

    from interp.plots import color_for, save_figure, style

    fig = go.Figure()
    names = [c["name"] for c in result.conditions]
    for m in result.config.models:
        cells = [result.cell(m, n) for n in names]
        acc = [c.accuracy() for c in cells]
        cis = [c.accuracy_ci(result.config.n_boot) for c in cells]
        fig.add_trace(go.Bar(x=names, y=acc, name=short(m), marker_color=color_for(m),
                             error_y={"type": "data", "symmetric": False, "array": [h - a for a, (_, h) in zip(acc, cis)],
                                      "arrayminus": [a - lo for a, (lo, _) in zip(acc, cis)]}))
    style(fig, "Greedy accuracy in distribution and under each shift of the task", "condition", "accuracy")
    fig.update_layout(barmode="group", yaxis_range=[0, 1.05])
    return {"shift_pair_accuracy": save_figure(fig, Path(out_dir) / "shift_pair_accuracy", png=png)}


__all__ = [
    "IN_DISTRIBUTION",
    "Cell",
    "PairShiftConfig",
    "PairShiftResult",
    "condition_items",
    "drop_change_ci",
    "drop_ci",
    "figures",
    "run",
    "run_cached",
    "summary_sentences",
]
