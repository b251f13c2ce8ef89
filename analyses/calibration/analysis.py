"""Confidence and calibration: how far a model's own answer-span probability tracks whether it is right.

For each model and condition (forced direct answer, forced chain of thought, free), the completion is
graded and its final answer span located; confidence = the sequence probability of that span given the
prompt and everything written before it (`interp.scoring.completion_logprobs`, so multi-token answers are
one choice). Expected calibration error (equal-width bins) and AUROC of confidence for correctness come
with bootstrap intervals over problems, reliability diagrams with per-bin counts. A completion without a
parseable answer has confidence 0 (it commits to nothing) and is wrong. This is the signal RLSF (arXiv
2507.21931) uses as a label-free reward.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from analyses.routing.common import cached, sample_items
from interp.io import cache_dir, library_versions
from interp.stats import bootstrap_ci, paired_bootstrap
from interp.tasks.base import Item, Task
from interp.tasks.encode import encode_text

if TYPE_CHECKING:
    from interp.models import Model

RESULT_VERSION = 1
CONDITIONS = ("direct", "cot", "free")
ZOO = ("organism/base-s", "organism/base-m", "organism/base-l", "organism/sft", "organism/rl", "organism/dpo")


@dataclass(frozen=True)
class CalibrationConfig:
    models: tuple[str, ...] = ZOO
    task: str = "organism"
    conditions: tuple[str, ...] = CONDITIONS
    steps: tuple[int, ...] = (1, 2, 3, 4)
    n_per_step: int = 100
    eval_seed: int = 14_400_013
    n_bins: int = 10
    max_new_tokens: int = 72
    batch_size: int = 256
    n_boot: int = 1000
    seed: int = 0
    cache_dir: str = field(default_factory=lambda: str(cache_dir("calibration")))

    def __post_init__(self) -> None:
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad:
            raise ValueError(f"unknown conditions {bad}; known: {', '.join(CONDITIONS)}")
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {self.n_bins}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationConfig:
        d = dict(d)
        for k in ("models", "conditions", "steps"):
            d[k] = tuple(d[k])
        return cls(**d)

    def key(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "cache_dir"}


# ------------------------------------------------------------------------------------------ metrics

def reliability(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> list[dict[str, float]]:
    """Equal-width confidence bins: count, mean confidence, accuracy (a confidence of 1 falls in the top bin)."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        out.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int(m.sum()),
                    "confidence": float(conf[m].mean()) if m.any() else float("nan"),
                    "accuracy": float(correct[m].mean()) if m.any() else float("nan")})
    return out


def ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (share of problems) x |accuracy - mean confidence|."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    if len(conf) == 0:
        return float("nan")
    if ((conf < 0) | (conf > 1)).any():
        raise ValueError("confidences must lie in [0, 1]")
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(idx):
        m = idx == b
        total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def auroc(conf: np.ndarray, correct: np.ndarray) -> float:
    """P(confidence of a right answer > that of a wrong one), ties half; NaN with one class only."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, bool)
    pos, neg = conf[correct], conf[~correct]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):  # average ranks of ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


@dataclass(frozen=True)
class Calibration:
    """One model under one condition: per-problem confidence and correctness, and the summary with intervals."""

    model: str
    condition: str
    confidence: tuple[float, ...]
    correct: tuple[bool, ...]
    answered: tuple[bool, ...]
    accuracy: float
    accuracy_ci: tuple[float, float]
    mean_confidence: float
    ece: float
    ece_ci: tuple[float, float]
    auroc: float
    auroc_ci: tuple[float, float]
    brier: float
    bins: tuple[dict[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        d = dict(d)
        for k in ("confidence", "correct", "answered", "accuracy_ci", "ece_ci", "auroc_ci", "bins"):
            d[k] = tuple(d[k])
        return cls(**d)


def summarize(model: str, condition: str, conf: np.ndarray, correct: np.ndarray, answered: np.ndarray,
              n_bins: int, n_boot: int, seed: int) -> Calibration:
    conf, c = np.asarray(conf, float), np.asarray(correct, float)
    return Calibration(
        model, condition, tuple(float(x) for x in conf), tuple(bool(x) for x in correct),
        tuple(bool(x) for x in answered), float(c.mean()), bootstrap_ci(c, n_boot, seed), float(conf.mean()),
        ece(conf, c, n_bins), paired_bootstrap(lambda i: ece(conf[i], c[i], n_bins), len(c), n_boot, seed),
        auroc(conf, c), paired_bootstrap(lambda i: auroc(conf[i], c[i]), len(c), n_boot, seed),
        float(((conf - c) ** 2).mean()), tuple(reliability(conf, c, n_bins)))


# ------------------------------------------------------------------------------------------ confidence

def answer_split(completion: str, answer: str) -> tuple[str, str] | None:
    """(text before the final answer span, the span with its leading space) or None if the answer is absent."""
    at = completion.rfind(answer)
    if at < 0:
        return None
    if at > 0 and completion[at - 1] == " ":
        at -= 1
    return completion[:at], completion[at:at + len(answer) + (completion[at] == " ")]


@torch.no_grad()
def answer_confidence(model: Model, task: Task, items: Sequence[Item], completions: Sequence[str]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, correct, answered) per completion: confidence = P(final answer span | prompt, text before it)."""
    from interp.scoring import completion_logprobs

    grades = [task.grade(it, c) for it, c in zip(items, completions)]
    prefixes, spans, rows = [], [], []
    for i, (it, comp, g) in enumerate(zip(items, completions, grades)):
        split = answer_split(comp, g.answer) if g.valid and g.answer is not None else None
        if split is None:
            continue
        before, span = split
        ids = [int(t) for t in model.tokenizer(span, add_special_tokens=False)["input_ids"]]
        if not ids:
            continue
        if before and not before[0].isspace():  # decoded generations may lack the completion's leading space
            before = " " + before
        prefixes.append(list(encode_text(model, task.prompt(it), before).ids))
        spans.append(ids)
        rows.append(i)
    conf = np.zeros(len(items))
    if rows:
        conf[rows] = completion_logprobs(model, prefixes, spans).exp().numpy()
    answered = np.zeros(len(items), bool)
    answered[rows] = True
    return conf, np.array([g.correct for g in grades], bool), answered


def completions_for(model: Model, task: Task, items: list[Item], condition: str, cfg: CalibrationConfig
                    ) -> list[str]:
    from interp.evaluation import GenerationConfig, generate_completions

    force = {"direct": "direct", "cot": "cot", "free": "free"}[condition]
    texts, _ = generate_completions(model, task, items, GenerationConfig(force=force,  # type: ignore[arg-type]
                                                                         max_new_tokens=cfg.max_new_tokens,
                                                                         batch_size=cfg.batch_size))
    return texts


@dataclass(frozen=True)
class ModelCalibration:
    name: str
    checksum: str
    conditions: tuple[Calibration, ...]

    def get(self, condition: str) -> Calibration:
        for c in self.conditions:
            if c.condition == condition:
                return c
        raise KeyError(f"{self.name} has no condition {condition!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "conditions": [c.to_dict() for c in self.conditions]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCalibration:
        return cls(d["name"], d["checksum"], tuple(Calibration.from_dict(c) for c in d["conditions"]))


@dataclass(frozen=True)
class CalibrationResult:
    config: CalibrationConfig
    task: dict[str, Any]
    models: tuple[ModelCalibration, ...]
    n_steps: tuple[int, ...]
    seconds: float
    libraries: dict[str, str]

    def model(self, name: str) -> ModelCalibration:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r}; the models are {[m.name for m in self.models]}")

    def to_dict(self) -> dict[str, Any]:
        return {"version": RESULT_VERSION, "config": self.config.to_dict(), "task": self.task,
                "models": [m.to_dict() for m in self.models], "n_steps": list(self.n_steps), "seconds": self.seconds,
                "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationResult:
        return cls(CalibrationConfig.from_dict(d["config"]), d["task"],
                   tuple(ModelCalibration.from_dict(m) for m in d["models"]), tuple(d["n_steps"]), d["seconds"],
                   d["libraries"])


def ece_difference(a: Calibration, b: Calibration, n_bins: int, n_boot: int, seed: int
                   ) -> tuple[float, tuple[float, float]]:
    """ECE(a) - ECE(b) on the same problems, with a paired bootstrap interval."""
    ca, xa, cb, xb = (np.array(v, float) for v in (a.confidence, a.correct, b.confidence, b.correct))
    return (ece(ca, xa, n_bins) - ece(cb, xb, n_bins),
            paired_bootstrap(lambda i: ece(ca[i], xa[i], n_bins) - ece(cb[i], xb[i], n_bins), len(ca), n_boot, seed))


def measure(model: Model, task: Task, items: list[Item], cfg: CalibrationConfig) -> ModelCalibration:
    out = []
    for cond in cfg.conditions:
        texts = completions_for(model, task, items, cond, cfg)
        conf, correct, answered = answer_confidence(model, task, items, texts)
        out.append(summarize(model.name, cond, conf, correct, answered, cfg.n_bins, cfg.n_boot, cfg.seed))
    return ModelCalibration(model.name, model.checksum, tuple(out))


def run(config: CalibrationConfig = CalibrationConfig(), task: Task | None = None,
        models: Mapping[str, Model] | None = None) -> CalibrationResult:
    """Every model under every condition on the same problems."""
    from tqdm.auto import tqdm

    import interp

    t0 = time.time()
    task = task if task is not None else interp.task(config.task)
    items = sample_items(task, config.steps, config.n_per_step, config.eval_seed)
    given = dict(models or {})
    out = [measure(given.get(n) or interp.load(n), task, items, config)
           for n in tqdm(config.models, desc="calibration", leave=False)]
    return CalibrationResult(config, task.describe(), tuple(out), tuple(int(it.meta.get("n_steps", 0)) for it in items),
                             time.time() - t0, library_versions())


def run_cached(config: CalibrationConfig = CalibrationConfig(), task: Task | None = None,
               models: Mapping[str, Model] | None = None) -> CalibrationResult:
    """`run`, reusing a stored result when the config and every model's checksum are unchanged (`task` and
    `models`, e.g. already loaded on a GPU, default to the config's names)."""
    import interp

    given = dict(models or {})
    models = {n: given.get(n) or interp.load(n) for n in config.models}
    key = {"config": config.key(), "models": [m.checksum for m in models.values()], "version": RESULT_VERSION}
    return cached(config.cache_dir, key, lambda: run(config, task, models), CalibrationResult.to_dict,
                  CalibrationResult.from_dict)


__all__ = ["Calibration", "CalibrationConfig", "CalibrationResult", "ModelCalibration", "answer_confidence",
           "answer_split", "auroc", "ece", "ece_difference", "measure", "reliability", "run", "run_cached",
           "summarize"]
