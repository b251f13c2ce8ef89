"""Evaluate a model on the organism task, per number of steps, with bootstrap CIs: the organism's defaults
(its seeded problems per step count, its forced-CoT and forced-direct modes) over the core's `interp.evaluate`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from interp.evaluation import GenerationConfig, GroupStats, TaskEval
from interp.organism.grader import Grade
from interp.organism.reasoning_task import OrganismTask, problem_item
from interp.organism.task import Problem, TaskConfig, sample_problems
from interp.stats import bootstrap_ci
from interp.tasks.base import Item

if TYPE_CHECKING:
    from interp.models import Model

EVAL_SEED = 1_000_003  # problems for evaluation come from their own seed stream


@dataclass(frozen=True)
class EvalConfig:
    """Which problems, how many, and whether the prompt forces a chain of thought."""

    steps: tuple[int, ...] = (1, 2, 3, 4)
    n_per_step: int = 200
    force_cot: bool = False
    force_direct: bool = False
    temperature: float = 0.0
    seed: int = EVAL_SEED
    task: TaskConfig = field(default_factory=TaskConfig)
    max_new_tokens: int = 72
    n_boot: int = 1000
    batch_size: int = 400

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalConfig:
        d = dict(d)
        d["steps"] = tuple(d.get("steps", (1, 2, 3, 4)))
        d["task"] = TaskConfig.from_dict(d.get("task", {}))
        return cls(**d)

    def __post_init__(self) -> None:
        if self.force_cot and self.force_direct:
            raise ValueError("force_cot and force_direct exclude each other: pick one (or neither for free answers)")

    def problems(self, n_steps: int) -> list[Problem]:
        top = max(self.task.max_steps, n_steps)
        task = self.task.shifted(min_steps=min(self.task.min_steps, n_steps), max_steps=top)
        return sample_problems(self.seed + n_steps, self.n_per_step, task, n_steps=n_steps)


StepStats = GroupStats
"""One step count's accuracy, CoT rate and length with intervals: the core's `GroupStats`."""


@dataclass(frozen=True)
class EvalResult:
    model: str
    config: EvalConfig
    by_steps: dict[int, StepStats]
    checksum: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "checksum": self.checksum, "config": self.config.to_dict(),
                "by_steps": {str(k): v.to_dict() for k, v in self.by_steps.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        return cls(d["model"], EvalConfig.from_dict(d["config"]),
                   {int(k): StepStats.from_dict(v) for k, v in d["by_steps"].items()}, d.get("checksum", ""))

    def summary(self) -> dict[str, Any]:
        """The stable JSON shape scripts read: model and per-step n, accuracy, cot_rate, mean_tokens."""
        return {"model": self.model, "by_steps": {
            str(k): {"n": s.n, "accuracy": s.accuracy, "cot_rate": s.cot_rate, "mean_tokens": s.mean_tokens}
            for k, s in self.by_steps.items()}}

    def mean_over(self, steps: tuple[int, ...], metric: str) -> float:
        return float(np.mean([getattr(self.by_steps[k], metric) for k in steps]))


def stats(grades: list[Grade], n_boot: int, seed: int = 0) -> StepStats:
    acc = np.array([g.correct for g in grades], dtype=float)
    cot = np.array([g.format in ("concise", "verbose") for g in grades], dtype=float)
    ntok = np.array([g.n_tokens for g in grades], dtype=float)
    formats: dict[str, int] = {}
    for g in grades:
        formats[g.format] = formats.get(g.format, 0) + 1
    return StepStats(
        n=len(grades), accuracy=float(acc.mean()), cot_rate=float(cot.mean()), mean_tokens=float(ntok.mean()),
        invalid_rate=float(np.mean([not g.valid for g in grades])),
        accuracy_ci=bootstrap_ci(acc, n_boot, seed), cot_rate_ci=bootstrap_ci(cot, n_boot, seed),
        mean_tokens_ci=bootstrap_ci(ntok, n_boot, seed), formats=formats,
    )


def cot_prefix(problem: Problem) -> list[str]:
    """The first chain-of-thought token (the first step's variable): appending it forces a CoT."""
    return [problem.steps[0].target]


def eval_items(cfg: EvalConfig) -> list[Item]:
    """The evaluation's problems as task items, step count by step count (`cfg.problems(k)` for each k)."""
    return [problem_item(p) for k in cfg.steps for p in cfg.problems(k)]


def generation_config(cfg: EvalConfig) -> GenerationConfig:
    """How `interp.evaluate` produces the completions this config asks for (free, forced CoT, forced direct)."""
    force = "cot" if cfg.force_cot else "direct" if cfg.force_direct else "free"
    return GenerationConfig(force=force, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,  # type: ignore[arg-type]
                            seed=cfg.seed, batch_size=cfg.batch_size)


def result_of(run: TaskEval, cfg: EvalConfig, name: str, checksum: str) -> EvalResult:
    """An `interp.evaluate` run as the organism's per-step `EvalResult` (the shape the cards and reports store)."""
    by_steps = {k: run.by_group[str(k)] for k in cfg.steps}
    return EvalResult(name, cfg, by_steps, checksum)


def evaluate(model: Model, cfg: EvalConfig = EvalConfig(), name: str | None = None,
             checksum: str | None = None) -> EvalResult:
    """Greedy (or sampled) answers to `cfg.n_per_step` organism problems per step count, graded: the core's
    `interp.evaluate` on the organism task with this config's problems (name and checksum default to the model's)."""
    from interp.evaluation import evaluate as evaluate_task

    if len(set(cfg.steps)) != len(cfg.steps):
        raise ValueError(f"steps {cfg.steps} repeat a step count")
    run = evaluate_task(model, OrganismTask(cfg.task), eval_items(cfg), generation_config(cfg), n_boot=cfg.n_boot)
    return result_of(run, cfg, model.name if name is None else name, model.checksum if checksum is None else checksum)


__all__ = ["EVAL_SEED", "EvalConfig", "EvalResult", "StepStats", "bootstrap_ci", "cot_prefix", "eval_items", "evaluate", "generation_config", "result_of"]
