"""Evaluate a model on the task: batched greedy generation, graded, per number of steps, with bootstrap CIs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from interp.generate import generate_ids, left_pad
from interp.organism.grader import Grade, grade
from interp.organism.task import Problem, TaskConfig, sample_problems
from interp.organism.tokenizer import digit_ids
from interp.stats import bootstrap_ci

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
    def from_dict(cls, d: dict[str, Any]) -> "EvalConfig":
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


@dataclass(frozen=True)
class StepStats:
    n: int
    accuracy: float
    cot_rate: float
    mean_tokens: float
    invalid_rate: float
    accuracy_ci: tuple[float, float]
    cot_rate_ci: tuple[float, float]
    mean_tokens_ci: tuple[float, float]
    formats: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepStats":
        d = dict(d)
        for k in ("accuracy_ci", "cot_rate_ci", "mean_tokens_ci"):
            d[k] = tuple(d[k])
        return cls(**d)


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
    def from_dict(cls, d: dict[str, Any]) -> "EvalResult":
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


@torch.no_grad()
def best_digits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
                batch_size: int = 400) -> list[list[int]]:
    """Forced direct answers: the most likely digit at the answer position (what the model computed
    internally, whatever format it would have chosen)."""
    digits = digit_ids(tokenizer)
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start:start + batch_size], tokenizer.pad_token_id)
        dev = next(model.parameters()).device
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[:, -1].cpu()
        out += [[int(d)] for d in digits[logits[:, digits].argmax(-1)]]
    return out


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: EvalConfig = EvalConfig(),
             name: str = "", checksum: str = "") -> EvalResult:
    """Greedy (or sampled) answers to `cfg.n_per_step` problems per step count, graded."""
    problems: list[Problem] = []
    for k in cfg.steps:
        problems += cfg.problems(k)
    prompts, prefixes = [], []
    for p in problems:
        pre = cot_prefix(p) if cfg.force_cot else []
        prefixes.append(pre)
        prompts.append([tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(p.prompt_tokens() + pre)])
    if cfg.force_direct:
        comps = best_digits(model, tokenizer, prompts, cfg.batch_size)
    else:
        comps = generate_ids(model, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, cfg.seed, cfg.batch_size)
    grades = [grade(p, pre + tokenizer.convert_ids_to_tokens(c)) for p, pre, c in zip(problems, prefixes, comps)]
    by_steps = {}
    for i, k in enumerate(cfg.steps):
        chunk = grades[i * cfg.n_per_step:(i + 1) * cfg.n_per_step]
        by_steps[k] = stats(chunk, cfg.n_boot, seed=k)
    return EvalResult(name, cfg, by_steps, checksum)


__all__ = ["EvalConfig", "EvalResult", "StepStats", "evaluate", "bootstrap_ci", "cot_prefix", "best_digits", "EVAL_SEED"]
