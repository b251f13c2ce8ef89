"""Novelty vs complexity: at a fixed number of steps, is a problem the member saw in training answered better
than one it never saw? At fixed novelty, does accuracy fall with the number of steps?

Each member's training problems are regenerated from its recipe (analyses.novelty.bookkeeping). Test problems
are drawn from one seeded pool and sorted, per member, into cells (steps, seen or unseen exactly in training);
greedy answers are graded value by value (analyses.shift.grading). Intervals are percentile bootstraps over
problems, resampled within each cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from analyses.novelty.bookkeeping import Novelty, TrainingIndex, exact_key, member_chain, recipe_draws
from analyses.shift.analysis import ZOO, Score, measure_many
from analyses.shift.transforms import as_shown
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.organism.task import Problem, TaskConfig, sample_problems
from interp.stats import percentile_ci

RESULT_VERSION = 1


@dataclass(frozen=True)
class NoveltyConfig:
    """Members, the (steps) cells of seen and unseen problems, and problems per cell."""

    models: tuple[str, ...] = ZOO
    seen_steps: tuple[int, ...] = (1, 2, 3, 4)
    unseen_steps: tuple[int, ...] = (3, 4, 5, 6)
    n_per_cell: int = 100
    seed: int = 616_000
    pool_chunk: int = 4000
    max_pool: int = 60_000  # candidates drawn per step count at most, to fill the rare cells (4-step seen)
    n_boot: int = 1000
    max_new_tokens: int = 96
    cache_dir: str = field(default_factory=lambda: str(cache_dir("novelty")))

    def __post_init__(self) -> None:
        if self.n_per_cell < 2:
            raise ValueError(f"n_per_cell must be >= 2, got {self.n_per_cell}")
        if not set(self.seen_steps) & set(self.unseen_steps):
            raise ValueError("seen_steps and unseen_steps need a step count in common (the fixed-complexity test)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoveltyConfig:
        d = dict(d)
        for k in ("models", "seen_steps", "unseen_steps"):
            d[k] = tuple(d[k])
        return cls(**d)

    def key(self, name: str, checksum: str) -> str:
        d = {k: v for k, v in self.to_dict().items() if k not in ("models", "cache_dir")}
        blob = json.dumps({"name": name, "checksum": checksum, "version": RESULT_VERSION, **d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Cell:
    """Problems with `n_steps` steps that the member saw exactly in training (`seen`) or not, and its answers."""

    n_steps: int
    seen: bool
    n_candidates: int  # pool problems of this step count looked at to fill the cell
    prompts: tuple[str, ...]
    novelty: tuple[Novelty, ...]
    correct: tuple[int, ...]
    cot: tuple[int, ...]

    def accuracy(self, n_boot: int, seed: int = 0) -> Score:
        return Score.mean(np.asarray(self.correct, dtype=float), n_boot, seed)

    def to_dict(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "seen": self.seen, "n_candidates": self.n_candidates,
                "prompts": list(self.prompts), "novelty": [n.to_dict() for n in self.novelty],
                "correct": list(self.correct), "cot": list(self.cot)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        return cls(d["n_steps"], d["seen"], d["n_candidates"], tuple(d["prompts"]),
                   tuple(Novelty(**n) for n in d["novelty"]), tuple(d["correct"]), tuple(d["cot"]))


@dataclass(frozen=True)
class Effect:
    """A difference or slope with its 95% interval and the yes/no it answers (interval entirely on one side)."""

    value: float
    ci: tuple[float, float]
    answer: str  # yes | no (interval across 0) | reversed (interval on the other side) | n/a (too few problems)
    n: tuple[int, ...] = ()  # problems behind each side (or each cell, for a slope)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci": list(self.ci), "answer": self.answer, "n": list(self.n)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Effect:
        return cls(float(d["value"]), (float(d["ci"][0]), float(d["ci"][1])), d["answer"], tuple(d.get("n", ())))


@dataclass(frozen=True)
class MemberNovelty:
    """One member's cells and the two answers: seen minus unseen accuracy at each shared step count (yes: > 0), and
    the accuracy slope per step among seen and among unseen problems (yes: < 0)."""

    name: str
    checksum: str
    n_training_problems: int
    cells: tuple[Cell, ...]
    novelty_effect: dict[int, Effect]
    complexity_slope: dict[str, Effect]  # "seen" | "unseen" | "unseen_in_length" (unseen up to the longest seen)
    prefix_effect: dict[int, Effect]  # unseen problems: longest seen prefix = k-1 minus shorter, at each k

    def cell(self, n_steps: int, seen: bool) -> Cell:
        for c in self.cells:
            if c.n_steps == n_steps and c.seen == seen:
                return c
        raise KeyError(f"{self.name} has no cell ({n_steps} steps, seen={seen})")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "n_training_problems": self.n_training_problems,
                "cells": [c.to_dict() for c in self.cells],
                "novelty_effect": {str(k): v.to_dict() for k, v in self.novelty_effect.items()},
                "complexity_slope": {k: v.to_dict() for k, v in self.complexity_slope.items()},
                "prefix_effect": {str(k): v.to_dict() for k, v in self.prefix_effect.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemberNovelty:
        return cls(d["name"], d["checksum"], d["n_training_problems"], tuple(Cell.from_dict(c) for c in d["cells"]),
                   {int(k): Effect.from_dict(v) for k, v in d["novelty_effect"].items()},
                   {k: Effect.from_dict(v) for k, v in d["complexity_slope"].items()},
                   {int(k): Effect.from_dict(v) for k, v in d["prefix_effect"].items()})


@dataclass(frozen=True)
class NoveltyResult:
    config: NoveltyConfig
    members: tuple[MemberNovelty, ...]
    libraries: dict[str, str]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "members": [m.to_dict() for m in self.members],
                "libraries": self.libraries, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoveltyResult:
        return cls(NoveltyConfig.from_dict(d["config"]), tuple(MemberNovelty.from_dict(m) for m in d["members"]),
                   d["libraries"], d["seed"])

    def member(self, name: str) -> MemberNovelty:
        for m in self.members:
            if m.name in (name, f"organism/{name}"):
                return m
        raise KeyError(f"{name!r} was not measured; measured: {[m.name for m in self.members]}")


# --------------------------------------------------------------------------------------------- cells

Pool = dict[tuple[int, int], list[tuple[Problem, str]]]  # (steps, chunk) -> the chunk's problems and exact keys


def select_cells(index: TrainingIndex, cfg: NoveltyConfig, pool: Pool | None = None
                 ) -> list[tuple[int, bool, int, list[Problem]]]:
    """(steps, seen, candidates looked at, problems) per cell: the pool of each step count is drawn in seeded
    chunks until both of its cells hold `n_per_cell` problems or `max_pool` candidates were seen. The pool is the
    same for every member: pass one `pool` dict to draw each chunk once for all of them."""
    pool = {} if pool is None else pool
    out = []
    for k in sorted(set(cfg.seen_steps) | set(cfg.unseen_steps)):
        want = {True: k in cfg.seen_steps, False: k in cfg.unseen_steps}
        got: dict[bool, list[Problem]] = {True: [], False: []}
        looked, chunk = 0, 0
        task = TaskConfig(min_steps=1, max_steps=max(4, k))
        while looked < cfg.max_pool and any(want[s] and len(got[s]) < cfg.n_per_cell for s in (True, False)):
            if (k, chunk) not in pool:
                pool[(k, chunk)] = [(p, exact_key(p)) for p in
                                    sample_problems(cfg.seed + 1000 * k + chunk, cfg.pool_chunk, task, n_steps=k)]
            for p, key in pool[(k, chunk)]:
                looked += 1
                s = index.exact[key] > 0
                if want[s] and len(got[s]) < cfg.n_per_cell:
                    got[s].append(p)
            chunk += 1
        out += [(k, s, looked, got[s]) for s in (True, False) if want[s]]
    return out


MIN_GROUP = 10  # fewer problems on a side of a difference: no answer (n/a)


def _diff(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, positive_is_yes: bool = True) -> Effect:
    """mean(a) - mean(b), a and b resampled independently."""
    if len(a) < MIN_GROUP or len(b) < MIN_GROUP:
        return Effect(float("nan"), (float("nan"), float("nan")), "n/a", (len(a), len(b)))
    rng = np.random.default_rng(seed)
    reps = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    return _effect(float(a.mean() - b.mean()), percentile_ci(reps), positive_is_yes, (len(a), len(b)))


def _effect(value: float, ci: tuple[float, float], positive_is_yes: bool, n: tuple[int, ...] = ()) -> Effect:
    lo, hi = ci
    if positive_is_yes:
        answer = "yes" if lo > 0 else "reversed" if hi < 0 else "no"
    else:
        answer = "yes" if hi < 0 else "reversed" if lo > 0 else "no"
    return Effect(value, ci, answer, n)


def slope(cells: Sequence[Cell], n_boot: int, seed: int) -> Effect:
    """Least-squares slope of correctness on the number of steps (accuracy per extra step), cells resampled
    within themselves; 'yes' when the whole interval is below 0."""
    cells = [c for c in cells if len(c.correct) >= MIN_GROUP]
    if len(cells) < 2:
        return Effect(float("nan"), (float("nan"), float("nan")), "n/a", tuple(len(c.correct) for c in cells))
    ks = [np.full(len(c.correct), c.n_steps, dtype=float) for c in cells]
    ys = [np.asarray(c.correct, dtype=float) for c in cells]

    def fit(x: np.ndarray, y: np.ndarray) -> float:
        xc = x - x.mean()
        return float((xc * (y - y.mean())).sum() / (xc ** 2).sum())

    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        idx = [rng.integers(0, len(y), len(y)) for y in ys]
        reps.append(fit(np.concatenate(ks), np.concatenate([y[i] for y, i in zip(ys, idx)])))
    return _effect(fit(np.concatenate(ks), np.concatenate(ys)), percentile_ci(reps), False,
                   tuple(len(c.correct) for c in cells))


def effects(name: str, checksum: str, n_train: int, cells: list[Cell], cfg: NoveltyConfig) -> MemberNovelty:
    """The novelty effect at each shared step count, the complexity slopes, and the prefix effect."""
    by = {(c.n_steps, c.seen): c for c in cells}
    nb = cfg.n_boot
    arr = lambda c: np.asarray(c.correct, dtype=float)
    nov = {k: _diff(arr(by[(k, True)]), arr(by[(k, False)]), nb, cfg.seed + k)
           for k in sorted(set(cfg.seen_steps) & set(cfg.unseen_steps)) if (k, True) in by and (k, False) in by}
    top = max(cfg.seen_steps)  # the longest problems seen: beyond it the unseen slope mixes in the length shift
    slopes = {"seen": slope([c for c in cells if c.seen], nb, cfg.seed + 101),
              "unseen": slope([c for c in cells if not c.seen], nb, cfg.seed + 102),
              "unseen_in_length": slope([c for c in cells if not c.seen and c.n_steps <= top], nb, cfg.seed + 103)}
    prefix = {}
    for c in cells:
        if c.seen or c.n_steps < 2:
            continue
        longest = np.array([n.longest_seen_prefix for n in c.novelty])
        near = longest >= c.n_steps - 1
        y = arr(c)
        prefix[c.n_steps] = _diff(y[near], y[~near], nb, cfg.seed + 200 + c.n_steps)
    return MemberNovelty(name, checksum, n_train, tuple(cells), nov, slopes, prefix)


def analyse_member(model: Any, index: TrainingIndex, cfg: NoveltyConfig, pool: Pool | None = None) -> MemberNovelty:
    """Cells for one loaded member against its training index, its greedy answers (one generation for every
    cell), and the effects."""
    chosen = select_cells(index, cfg, pool)
    conds = iter(measure_many(model, [(f"{k}-{seen}", [as_shown(p) for p in problems])
                                      for k, seen, _, problems in chosen if problems], cfg.max_new_tokens))
    cells = []
    for k, seen, looked, problems in chosen:
        cond = next(conds) if problems else None
        cells.append(Cell(k, seen, looked, tuple(p.prompt() for p in problems),
                          tuple(index.novelty(p) for p in problems),
                          cond.correct if cond else (), cond.cot if cond else ()))
    return effects(model.name, model.checksum, index.n_problems, cells, cfg)


def run(config: NoveltyConfig = NoveltyConfig(), progress: bool = True) -> NoveltyResult:
    """Every member; each recipe's training problems are regenerated and counted once (a member's index is the sum
    of its recipes'), the test pool is drawn once, results cached per member."""
    from interp.models import load
    from interp.organism.zoo import RECIPES

    out = []
    parts: dict[str, TrainingIndex] = {}
    pool: Pool = {}
    for name in tqdm(config.models, desc="novelty", disable=not progress):
        model = load(name)
        path = Path(config.cache_dir) / f"{config.key(name, model.checksum)}-{name.replace('/', '_')}.json"
        if path.exists():  # the cells are cached; effects are recomputed from them (seconds)
            m = MemberNovelty.from_dict(read_json(path))
            out.append(effects(m.name, m.checksum, m.n_training_problems, list(m.cells), config))
            continue
        chain = member_chain(name)
        for short in chain:
            if short not in parts:
                parts[short] = TrainingIndex.build(recipe_draws(RECIPES[short]))
        res = analyse_member(model, TrainingIndex.merged([parts[s] for s in chain]), config, pool)
        write_json(path, res.to_dict(), indent=None)
        out.append(res)
    return NoveltyResult(config, tuple(out), library_versions(), config.seed)


__all__ = [
    "Cell",
    "Effect",
    "MemberNovelty",
    "NoveltyConfig",
    "NoveltyResult",
    "analyse_member",
    "effects",
    "run",
    "select_cells",
    "slope",
]
