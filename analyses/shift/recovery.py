"""SFT recovery (issue 15; DataAlchemy, arXiv 2508.01191, reports that a little shifted data in SFT restores
accuracy): sft is fine-tuned further on its own recipe's data with a share f of each batch drawn from a shifted
task (`interp.organism.recipes_shift`), for a few shifts under which it collapses and several f (f = 0 is the
control: the same continued fine-tune with no shifted data, shared by every shift). Each fine-tune is evaluated on
the shift battery's problems (greedy, graded as the battery grades): accuracy under its shift and in distribution
(nothing lost?), as a curve over f, with 95% bootstrap intervals over problems (the same resamples for every seed,
averaged over seeds) and every seed's value. Fine-tunes are cached under their recipe's hash and every measured
point under the recipe, the checkpoint's checksum and the evaluation config, so a stopped run resumes where it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from analyses.shift.analysis import Condition, Score, ShiftConfig, measure_many
from analyses.shift.transforms import DEFAULT_SHIFTS, IN_DISTRIBUTION, Shift
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.organism.recipes_shift import MixtureRecipe, mixture_member
from interp.organism.task import RENAMED_VARIABLES, TaskConfig
from interp.plots import save_figure, style
from interp.stats import percentile_ci

RESULT_VERSION = 1
# the training distribution of each battery shift that is a change of the task's knobs
SHIFT_TASKS: dict[str, TaskConfig] = {
    "longer (5-6 steps)": TaskConfig(min_steps=5, max_steps=6),
    "separator ,": TaskConfig(separator=","),
    "renamed variables": TaskConfig(variables=RENAMED_VARIABLES),
    "shuffled variables": TaskConfig(shuffle_variables=True),
    "2 distractors": TaskConfig(n_distractors=2),
}
CONTROL = ""  # the shift name of the f = 0 points (no shifted data: one control for every shift)


@dataclass(frozen=True)
class RecoveryConfig:
    """Which shifts, shares f and seeds; the fine-tune's length and learning rate; the battery's problems."""

    shifts: tuple[str, ...] = ("separator ,", "longer (5-6 steps)")
    fractions: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1, 0.25)
    seeds: tuple[int, ...] = (0, 1)
    init: str = "organism/sft"
    steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 10
    n_per_step: int = 25  # battery problems per step count
    battery_seed: int = ShiftConfig.seed
    n_boot: int = 1000
    max_new_tokens: int = 96
    cache_dir: str = field(default_factory=lambda: str(cache_dir("shift", "recovery")))

    def __post_init__(self) -> None:
        unknown = [s for s in self.shifts if s not in SHIFT_TASKS]
        if unknown:
            raise ValueError(f"no training distribution for shift(s) {unknown}; choose from {list(SHIFT_TASKS)}")
        if not self.fractions or any(not 0.0 <= f <= 1.0 for f in self.fractions):
            raise ValueError(f"fractions must be in [0, 1], got {self.fractions}")
        if not self.seeds:
            raise ValueError("need at least one seed")
        if self.n_per_step < 2:
            raise ValueError(f"n_per_step must be >= 2 for an interval, got {self.n_per_step}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecoveryConfig:
        d = dict(d)
        for k in ("shifts", "fractions", "seeds"):
            d[k] = tuple(d[k])
        return cls(**d)

    def battery(self) -> ShiftConfig:
        """The battery's config whose problems are evaluated (its seed, `n_per_step` per step count)."""
        return ShiftConfig(n_per_step=self.n_per_step, seed=self.battery_seed, max_new_tokens=self.max_new_tokens,
                           cache_dir=self.cache_dir)

    def recipe(self, shift: str, fraction: float, seed: int) -> MixtureRecipe:
        shifted = SHIFT_TASKS[shift] if shift else TaskConfig()
        return MixtureRecipe(shifted=shifted, shifted_share=fraction if shift else 0.0, init=self.init,
                             steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup, seed=seed)

    def points(self) -> list[tuple[str, float, int]]:
        """(shift, f, seed) of every fine-tune: f = 0 once per seed (shift CONTROL), then each shift's f > 0."""
        out = [(CONTROL, 0.0, s) for s in self.seeds] if 0.0 in self.fractions else []
        return out + [(sh, f, s) for sh in self.shifts for f in self.fractions if f > 0 for s in self.seeds]

    def eval_shifts(self, shift: str) -> tuple[Shift, ...]:
        """The battery conditions a point is measured on: in distribution and its own shift (all, for f = 0)."""
        by_name = {s.name: s for s in DEFAULT_SHIFTS}
        names = self.shifts if shift == CONTROL else (shift,)
        return (IN_DISTRIBUTION, *(by_name[n] for n in names))

    def point_key(self, recipe: MixtureRecipe, checksum: str, shift: str) -> str:
        d = {"recipe": recipe.to_dict(), "checksum": checksum, "version": RESULT_VERSION, "n_per_step": self.n_per_step,
             "battery_seed": self.battery_seed, "max_new_tokens": self.max_new_tokens,
             "eval": [s.name for s in self.eval_shifts(shift)]}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class RecoveryPoint:
    """One fine-tune: its recipe's shift, share and seed, the checkpoint's checksum, training cost, and the
    battery conditions measured on it. `seen`: evaluation prompts of its shift that were among its shifted training
    prompts (by condition)."""

    shift: str
    fraction: float
    seed: int
    recipe_key: str
    checksum: str
    shifted_examples: int
    examples: int
    train_seconds: float
    train_cpu_seconds: float
    eval_cpu_seconds: float
    conditions: tuple[Condition, ...]
    seen: dict[str, int]

    def get(self, shift: str) -> Condition:
        for c in self.conditions:
            if c.shift == shift:
                return c
        raise KeyError(f"point ({self.shift!r}, {self.fraction}, seed {self.seed}) has no condition {shift!r}")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["conditions"] = [c.to_dict() for c in self.conditions]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecoveryPoint:
        d = dict(d)
        d["conditions"] = tuple(Condition.from_dict(c) for c in d["conditions"])
        return cls(**d)


@dataclass(frozen=True)
class CurvePoint:
    """Accuracy at one f, averaged over seeds, with a bootstrap interval over problems (shared resamples)."""

    fraction: float
    shifted: Score
    in_distribution: Score
    shifted_by_seed: tuple[float, ...]
    in_distribution_by_seed: tuple[float, ...]
    shifted_examples: float  # mean over seeds

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "shifted": self.shifted.to_dict(),
                "in_distribution": self.in_distribution.to_dict(), "shifted_by_seed": list(self.shifted_by_seed),
                "in_distribution_by_seed": list(self.in_distribution_by_seed),
                "shifted_examples": self.shifted_examples}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CurvePoint:
        return cls(d["fraction"], Score.from_dict(d["shifted"]), Score.from_dict(d["in_distribution"]),
                   tuple(d["shifted_by_seed"]), tuple(d["in_distribution_by_seed"]), d["shifted_examples"])


@dataclass(frozen=True)
class RecoveryResult:
    config: RecoveryConfig
    init_checksum: str
    init: tuple[Condition, ...]  # sft itself (no further fine-tune) on the same conditions
    points: tuple[RecoveryPoint, ...]
    curves: dict[str, tuple[CurvePoint, ...]]
    libraries: dict[str, str]

    def init_condition(self, shift: str) -> Condition:
        return next(c for c in self.init if c.shift == shift)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "init_checksum": self.init_checksum,
                "init": [c.to_dict() for c in self.init], "points": [p.to_dict() for p in self.points],
                "curves": {k: [c.to_dict() for c in v] for k, v in self.curves.items()}, "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecoveryResult:
        return cls(RecoveryConfig.from_dict(d["config"]), d["init_checksum"],
                   tuple(Condition.from_dict(c) for c in d["init"]), tuple(RecoveryPoint.from_dict(p) for p in d["points"]),
                   {k: tuple(CurvePoint.from_dict(c) for c in v) for k, v in d["curves"].items()}, d["libraries"])


# ------------------------------------------------------------------------------------------------ measuring

def seed_mean_score(rows: Sequence[np.ndarray], n_boot: int, seed: int) -> Score:
    """Mean over seeds of each seed's accuracy on the same problems, with a 95% interval from resampling the
    problems (one set of resamples applied to every seed, so seeds stay paired)."""
    x = np.stack([np.asarray(r, dtype=float) for r in rows])  # [seed, problem]
    if x.shape[1] == 0:
        return Score(float("nan"), (float("nan"), float("nan")), 0)
    idx = np.random.default_rng(seed).integers(0, x.shape[1], size=(n_boot, x.shape[1]))
    boots = x[:, idx].mean(2).mean(0)
    return Score(float(x.mean()), percentile_ci(boots), x.shape[1])


def curves(points: Sequence[RecoveryPoint], config: RecoveryConfig) -> dict[str, tuple[CurvePoint, ...]]:
    """Per shift, accuracy under the shift and in distribution at every f (f = 0 from the control points)."""
    out = {}
    for si, sh in enumerate(config.shifts):
        row = []
        for f in sorted(config.fractions):
            ps = sorted((p for p in points if p.fraction == f and p.shift == (CONTROL if f == 0 else sh)),
                        key=lambda p: p.seed)
            if not ps:
                continue
            a_sh = [p.get(sh).arr("correct") for p in ps]
            a_in = [p.get(IN_DISTRIBUTION.name).arr("correct") for p in ps]
            row.append(CurvePoint(f, seed_mean_score(a_sh, config.n_boot, 31 + si),
                                  seed_mean_score(a_in, config.n_boot, 37 + si),
                                  tuple(float(a.mean()) for a in a_sh), tuple(float(a.mean()) for a in a_in),
                                  float(np.mean([p.shifted_examples for p in ps]))))
        out[sh] = tuple(row)
    return out


def measure_point(config: RecoveryConfig, shift: str, fraction: float, seed: int, progress: bool = False
                  ) -> RecoveryPoint:
    """Train (or reuse) one fine-tune and measure it (or reuse its cached measurement)."""
    from interp.models import load

    recipe = config.recipe(shift, fraction, seed)
    path = mixture_member(recipe, Path(config.cache_dir) / "models", progress)
    model = load(str(path))
    cached = Path(config.cache_dir) / "points" / f"{config.point_key(recipe, model.checksum, shift)}.json"
    if cached.exists():
        return RecoveryPoint.from_dict(read_json(cached))
    card = read_json(path / "card.json")
    battery = config.battery()
    cpu0 = time.process_time()
    named = [(s.name, battery.problems(s)) for s in config.eval_shifts(shift)]
    conds = tuple(measure_many(model, named, config.max_new_tokens, battery.batch_size))
    seen = {}
    if shift != CONTROL:
        trained = recipe.shifted_prompts()
        for name, problems in named[1:]:
            seen[name] = sum(" ".join(p.prompt) in trained for p in problems)
    point = RecoveryPoint(shift, fraction, seed, recipe.key(), model.checksum, int(card["shifted_examples"]),
                          int(card["examples"]), float(card["train_seconds"]), float(card["train_cpu_seconds"]),
                          round(time.process_time() - cpu0, 1), conds, seen)
    write_json(cached, point.to_dict(), indent=None)
    return point


def measure_init(config: RecoveryConfig) -> tuple[str, tuple[Condition, ...]]:
    """The init model (sft) itself on every condition the curve uses (cached by its checksum and the config)."""
    from interp.models import load

    init = load(config.init)
    battery = config.battery()
    key = config.point_key(config.recipe(CONTROL, 0.0, 0), init.checksum, CONTROL)
    path = Path(config.cache_dir) / "init" / f"{key}.json"
    if path.exists():
        return init.checksum, tuple(Condition.from_dict(c) for c in read_json(path)["conditions"])
    conds = tuple(measure_many(init, [(s.name, battery.problems(s)) for s in config.eval_shifts(CONTROL)],
                               config.max_new_tokens, battery.batch_size))
    write_json(path, {"checksum": init.checksum, "conditions": [c.to_dict() for c in conds]}, indent=None)
    return init.checksum, conds


def run(config: RecoveryConfig = RecoveryConfig(), progress: bool = True) -> RecoveryResult:
    """Every fine-tune of the config (cached and resumable), sft itself on the same conditions, and the curves."""
    torch.set_num_threads(1)
    checksum, init_conds = measure_init(config)
    points = [measure_point(config, sh, f, s)
              for sh, f, s in tqdm(config.points(), desc="recovery fine-tunes", disable=not progress)]
    return RecoveryResult(config, checksum, init_conds, tuple(points), curves(points, config), library_versions())


# ------------------------------------------------------------------------------------------------ reporting

def _err(scores: Sequence[Score]) -> dict[str, Any]:
    return {"type": "data", "symmetric": False, "array": [max(0.0, s.ci[1] - s.value) for s in scores],
            "arrayminus": [max(0.0, s.value - s.ci[0]) for s in scores]}


def figure(result: RecoveryResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """One panel per shift: accuracy under the shift and in distribution against the share f of shifted data."""
    shifts = list(result.curves)
    fig = make_subplots(rows=1, cols=len(shifts), shared_yaxes=True, subplot_titles=shifts)
    for i, sh in enumerate(shifts):
        cs = result.curves[sh]
        xs = [str(c.fraction) for c in cs]
        for key, color, label in (("shifted", "#E45756", "under the shift"),
                                  ("in_distribution", "#4C78A8", "in distribution")):
            sc = [getattr(c, key) for c in cs]
            fig.add_trace(go.Scatter(x=xs, y=[s.value for s in sc], error_y=_err(sc), mode="lines+markers",
                                     line={"color": color}, name=f"{label} (mean of seeds, 95% CI)",
                                     legendgroup=key, showlegend=i == 0), row=1, col=i + 1)
            for j in range(max(len(getattr(c, f"{key}_by_seed")) for c in cs)):
                fig.add_trace(go.Scatter(x=xs, y=[getattr(c, f"{key}_by_seed")[j] for c in cs], mode="markers",
                                         marker={"color": color, "symbol": "circle-open", "size": 7},
                                         name="each seed", legendgroup="seeds", showlegend=i == 0 and key == "shifted" and j == 0),
                              row=1, col=i + 1)
        base = result.init_condition(sh).scores(result.config.n_boot)["accuracy"]
        fig.add_hline(y=base.value, line_dash="dot", line_color="#E45756", row=1, col=i + 1)
        fig.update_xaxes(title_text="share f of shifted problems in the fine-tune", type="category", row=1, col=i + 1)
    c = result.config
    style(fig, f"SFT recovery: {c.init.removeprefix('organism/')} fine-tuned {c.steps} steps x {c.batch_size} with a "
               f"share f of shifted problems (dotted: {c.init.removeprefix('organism/')} before, under the shift)",
          "", "greedy accuracy")
    fig.update_layout(width=520 * len(shifts) + 120, height=460, title_font_size=13)
    fig.update_yaxes(range=[0, 1.05])
    return {"shift_recovery": save_figure(fig, Path(out_dir) / "shift_recovery", png=png)}


def sentences(result: RecoveryResult) -> list[str]:
    c = result.config
    nb = c.n_boot
    init = c.init.removeprefix("organism/")
    train = [p.train_cpu_seconds for p in result.points]
    evals = [p.eval_cpu_seconds for p in result.points]
    lines = [(f"SFT recovery: {init} fine-tuned {c.steps} more steps of {c.batch_size} problems (lr {c.lr}, its own "
              f"format mix) with a share f of each batch drawn from a shifted task, seeds {list(c.seeds)}; f = 0 is the "
              f"control (the same fine-tune without shifted data). Evaluated greedily on the battery's problems "
              f"({c.n_per_step} per step count); accuracy is the mean over seeds with a 95% bootstrap interval over "
              f"problems. Cost per fine-tune at one thread: training {np.mean(train):.0f} s CPU "
              f"({min(train):.0f}-{max(train):.0f}), evaluation {np.mean(evals):.0f} s CPU; "
              f"{len(result.points)} fine-tunes.")]
    for sh, cs in result.curves.items():
        before = result.init_condition(sh).scores(nb)["accuracy"]
        before_in = result.init_condition(IN_DISTRIBUTION.name).scores(nb)["accuracy"]
        parts = [f"f={cp.fraction:g} ({cp.shifted_examples:.0f} shifted examples): {cp.shifted.fmt()} under the shift "
                 f"(seeds {', '.join(f'{100 * v:.0f}%' for v in cp.shifted_by_seed)}), {cp.in_distribution.fmt()} in "
                 f"distribution" for cp in cs]
        target = 0.9 * before_in.value
        hit = next((cp for cp in cs if cp.fraction > 0 and cp.shifted.ci[0] >= target), None)
        verdict = (f"the smallest share whose interval lies above 90% of {init}'s in-distribution accuracy is "
                   f"f={hit.fraction:g} ({hit.shifted_examples:.0f} shifted examples of "
                   f"{c.steps * c.batch_size})" if hit else
                   f"no share reaches 90% of {init}'s in-distribution accuracy with its whole interval")
        seen = [p.seen.get(sh, 0) for p in result.points if p.shift == sh]
        n_eval = len(result.init_condition(sh).correct)
        lines.append(f"{sh}: {init} before fine-tuning {before.fmt()} (in distribution {before_in.fmt()}); "
                     + "; ".join(parts) + f". So {verdict}. Evaluation problems also among the shifted training "
                     f"problems: at most {max(seen, default=0)} of {n_eval}.")
    return lines


def section_parts(out: Path, n_per_step: int, png: bool, config: RecoveryConfig | None = None
                  ) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Run (cached) and write the recovery curve's JSON and figure for `interp report` (a section of its own: the
    fine-tunes take minutes, see the sentences for their cost). `n_per_step` does not change it: the curve keeps
    its own evaluation size, so the cached fine-tunes and measurements stay valid."""
    result = run(config or RecoveryConfig(), progress=False)
    write_json(Path(out) / "shift_recovery.json", result.to_dict(), indent=None)
    paths = figure(result, out, png=png)
    return ("Where reasoning breaks: how much shifted data restores it (SFT recovery)", tuple(sentences(result)),
            tuple(p[0].name for p in paths.values()), "")


__all__ = [
    "CONTROL",
    "SHIFT_TASKS",
    "CurvePoint",
    "RecoveryConfig",
    "RecoveryPoint",
    "RecoveryResult",
    "curves",
    "figure",
    "measure_init",
    "measure_point",
    "run",
    "section_parts",
    "seed_mean_score",
    "sentences",
]
