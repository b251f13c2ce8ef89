"""Scaling vs post-training: accuracy and CoT rate by number of steps, and accuracy vs parameters, for a
list of models on one task (the shipped zoo on the organism task by default).

The first section of the report. It evaluates every model greedily, free, forced into a chain of
thought and forced to answer directly, and asks the question the toolkit exists for: does making the
base bigger buy what reasoning post-training buys? A mode the task cannot force (no chain-of-thought
prefix, no list of answer candidates) is recorded with the reason instead of a number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from tqdm.auto import tqdm

from interp.io import cache_dir, library_versions, read_json, write_json
from interp.organism.evaluate import (
    EvalConfig,
    EvalResult,
    generation_config,
)
from interp.plots import color_for, save_figure, style

if TYPE_CHECKING:
    from interp.evaluation import TaskEval
    from interp.models import Model
    from interp.tasks import Item, Task

HARD_STEPS = (3, 4)
LABEL_SIDE = {"sft": "top right", "rl": "middle right", "dpo": "bottom right"}  # they share one x
ZOO = ("organism/base-s", "organism/base-m", "organism/base-l", "organism/sft", "organism/rl", "organism/dpo")
NO_STEPS = 0  # the group key of items whose task records no number of steps
MODES = ("free", "forced", "direct")


@dataclass(frozen=True)
class ZooEvalConfig:
    """Which models, on which task (a name for `interp.task`; "organism" uses `eval.task`'s knobs), how many
    items per step count and how they are generated."""

    models: tuple[str, ...] = ZOO
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(n_per_step=200))
    cache_dir: str = field(default_factory=lambda: str(cache_dir("eval")))
    task: str = "organism"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ZooEvalConfig:
        return cls(tuple(d["models"]), EvalConfig.from_dict(d["eval"]), d.get("cache_dir", str(cache_dir("eval"))),
                   d.get("task", "organism"))


@dataclass(frozen=True)
class ModelEval:
    """One model's free, forced-CoT and forced-direct evaluation; a mode the task cannot force is None, with
    the reason in `skipped`."""

    name: str
    n_params: int
    checksum: str
    free: EvalResult
    forced: EvalResult | None  # forced to start a chain of thought
    direct: EvalResult | None  # forced to answer directly (most likely answer candidate after the prompt)
    skipped: dict[str, str] = field(default_factory=dict)  # mode -> why it could not run

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n_params": self.n_params, "checksum": self.checksum,
                "free": self.free.to_dict(), "forced": self.forced.to_dict() if self.forced else None,
                "direct": self.direct.to_dict() if self.direct else None, "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelEval:
        opt = lambda k: EvalResult.from_dict(d[k]) if d.get(k) else None
        return cls(d["name"], d["n_params"], d["checksum"], EvalResult.from_dict(d["free"]), opt("forced"),
                   opt("direct"), dict(d.get("skipped", {})))


@dataclass(frozen=True)
class ZooEvalResult:
    config: ZooEvalConfig
    models: tuple[ModelEval, ...]
    libraries: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "models": [m.to_dict() for m in self.models],
                "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ZooEvalResult:
        return cls(ZooEvalConfig.from_dict(d["config"]), tuple(ModelEval.from_dict(m) for m in d["models"]),
                   d["libraries"])

    def get(self, name: str) -> ModelEval:
        for m in self.models:
            if m.name == name or m.name == f"organism/{name}":
                return m
        raise KeyError(f"{name!r} was not evaluated; evaluated: {[m.name for m in self.models]}")


# ------------------------------------------------------------------------------------------ any task

def resolve_task(name: str, cfg: EvalConfig) -> Task:
    """The task a config names; "organism" is built with `cfg.task`'s knobs (steps, separators, ...)."""
    if name == "organism":
        from interp.organism.reasoning_task import OrganismTask  # the default task

        return OrganismTask(cfg.task)
    from interp.registry import task

    return task(name)


def sample_items(task: Task, cfg: EvalConfig) -> list[Item]:
    """`cfg.n_per_step` items per step count (seed `cfg.seed + k`, as the organism's evaluation draws them)
    from a task that samples by steps; otherwise `cfg.n_per_step * len(cfg.steps)` items from `cfg.seed`."""
    if len(set(cfg.steps)) != len(cfg.steps):
        raise ValueError(f"steps {cfg.steps} repeat a step count")
    if task.has_steps:
        return [it for k in cfg.steps for it in task.sample(cfg.n_per_step, cfg.seed + k, n_steps=k)]
    return task.sample(cfg.n_per_step * len(cfg.steps), cfg.seed)


def as_eval_result(run: TaskEval, cfg: EvalConfig) -> EvalResult:
    """A task evaluation as the per-step `EvalResult` (groups are step counts; items without one form
    group `NO_STEPS`)."""
    by_steps = {}
    for k, st in run.by_group.items():
        key = int(k) if k.lstrip("-").isdigit() else NO_STEPS
        by_steps[key] = st
    return EvalResult(run.model, cfg, dict(sorted(by_steps.items())), run.checksum)


def evaluate_on(model: Model, task: Task, items: Sequence[Item], cfg: EvalConfig) -> EvalResult:
    """`interp.evaluate` of `items` with this config's mode and decoding settings, grouped by steps."""
    from interp.evaluation import evaluate

    return as_eval_result(evaluate(model, task, items, generation_config(cfg), n_boot=cfg.n_boot), cfg)


def cannot_force(task: Task, items: Sequence[Item], cfg: EvalConfig) -> str | None:
    """Why the task cannot run this config's forced mode (None when it can)."""
    if cfg.force_cot and not all(task.cot_prefix(it) for it in items):
        return f"task {task.name!r} has no chain-of-thought prefix to force a chain of thought with"
    if cfg.force_direct and getattr(task, "answer_candidates", None) is None:
        return f"task {task.name!r} lists no answer candidates to force a direct answer with"
    return None


def _cache_key(checksum: str, cfg: EvalConfig, task: Task | None = None) -> str:
    described = {} if task is None or task.name == "organism" else {"task": task.describe()}
    blob = json.dumps({"checksum": checksum, "eval": cfg.to_dict(), **described}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def evaluate_cached(model: Model, cfg: EvalConfig, cache_dir: str | Path, task: Task | None = None) -> EvalResult:
    """Evaluate a model on a task (the organism with `cfg.task` by default), reusing a cached result for the
    same weights, task and config."""
    task = task if task is not None else resolve_task("organism", cfg)
    path = Path(cache_dir) / f"{_cache_key(model.checksum, cfg, task)}.json"
    if path.exists():
        return EvalResult.from_dict(read_json(path))
    res = evaluate_on(model, task, sample_items(task, cfg), cfg)
    write_json(path, res.to_dict())
    return res


def evaluate_model(model: Model, task: Task, cfg: EvalConfig, cache_dir: str | Path) -> ModelEval:
    """Free, forced-CoT and forced-direct evaluation of one model (a mode the task cannot force says why)."""
    items = sample_items(task, cfg)
    results: dict[str, EvalResult | None] = {}
    skipped: dict[str, str] = {}
    modes = {"free": dataclasses.replace(cfg, force_cot=False, force_direct=False),
             "forced": dataclasses.replace(cfg, force_cot=True, force_direct=False),
             "direct": dataclasses.replace(cfg, force_cot=False, force_direct=True)}
    for mode, c in modes.items():
        why = cannot_force(task, items, c)
        if why:
            results[mode] = None
            skipped[mode] = why
        else:
            results[mode] = evaluate_cached(model, c, cache_dir, task)
    free = results["free"]
    assert free is not None
    return ModelEval(model.name, model.n_params, model.checksum, free, results["forced"], results["direct"], skipped)


def run(config: ZooEvalConfig = ZooEvalConfig(), progress: bool = True,
        models: Sequence[Model] | None = None, task: Task | None = None) -> ZooEvalResult:
    """Evaluate every model (loaded `models`, or `config.models` by name) on `task` (or `config.task`)."""
    from interp.models import load

    task = task if task is not None else resolve_task(config.task, config.eval)
    if models is not None:
        config = dataclasses.replace(config, models=tuple(m.name for m in models))
        if task.name != config.task:
            config = dataclasses.replace(config, task=task.name)
    out = []
    for i, name in enumerate(tqdm(config.models, desc="evaluating models", disable=not progress)):
        model = models[i] if models is not None else load(name)
        out.append(evaluate_model(model, task, config.eval, config.cache_dir))
    return ZooEvalResult(config, tuple(out), library_versions())


def hard_steps(result: ZooEvalResult) -> tuple[int, ...]:
    """The step counts called hard: 3 and 4 when every model was evaluated on them, else the two largest
    step counts all models share (a task drawn by other step counts, or with none)."""
    shared = set.intersection(*(set(m.free.by_steps) for m in result.models))
    if set(HARD_STEPS) <= shared:
        return HARD_STEPS
    return tuple(sorted(shared)[-2:])


def _steps_label(steps: tuple[int, ...]) -> str:
    return "-".join(str(k) for k in steps) + "-step"


def figures(result: ZooEvalResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Accuracy and CoT rate vs steps per model; accuracy on 3-4-step problems vs parameter count."""
    out_dir = Path(out_dir)
    hard = hard_steps(result)
    figs: dict[str, go.Figure] = {}
    for metric, title in (("accuracy", "Accuracy by number of steps (greedy)"),
                          ("cot_rate", "Chain-of-thought rate by number of steps (greedy)")):
        fig = go.Figure()
        for m in result.models:
            short = m.name.removeprefix("organism/")
            steps = sorted(m.free.by_steps)
            ys = [getattr(m.free.by_steps[k], metric) for k in steps]
            ci = [getattr(m.free.by_steps[k], f"{metric}_ci") for k in steps]
            fig.add_trace(go.Scatter(
                x=steps, y=ys, name=short, mode="lines+markers", line={"color": color_for(m.name)},
                error_y={"type": "data", "symmetric": False, "array": [c[1] - y for c, y in zip(ci, ys)],
                             "arrayminus": [y - c[0] for c, y in zip(ci, ys)]}))
        base = next((m for m in result.models if m.name.endswith("base-s")), result.models[0])
        if metric == "accuracy" and base.forced is not None:
            steps = sorted(base.forced.by_steps)
            fig.add_trace(go.Scatter(x=steps, y=[base.forced.by_steps[k].accuracy for k in steps],
                                     name=f"{base.name.removeprefix('organism/')} forced CoT", mode="lines+markers",
                                     line={"color": color_for(base.name), "dash": "dash"}))
        style(fig, title, "number of steps", metric.replace("_", " "))
        fig.update_yaxes(range=[-0.02, 1.02])
        fig.update_xaxes(dtick=1)
        figs[f"zoo_{metric}_by_steps"] = fig

    fig = go.Figure()
    bases = [m for m in result.models if "base" in m.name]
    for m in result.models:
        short = m.name.removeprefix("organism/")
        fig.add_trace(go.Scatter(
            x=[m.n_params], y=[m.free.mean_over(hard, "accuracy")], name=short, mode="markers+text",
            text=[short], textposition="top center" if m in bases else LABEL_SIDE.get(short, "middle right"),
            marker={"size": 12, "color": color_for(m.name), "symbol": "circle" if m in bases else "diamond"}))
    if bases:
        fig.add_trace(go.Scatter(x=[m.n_params for m in bases], y=[m.free.mean_over(hard, "accuracy") for m in bases],
                                 mode="lines", line={"color": "#999", "dash": "dot"}, name="base scaling (free)"))
    if bases and all(m.direct is not None for m in bases):
        fig.add_trace(go.Scatter(x=[m.n_params for m in bases], y=[m.direct.mean_over(hard, "accuracy")  # type: ignore[union-attr]
                                                                   for m in bases],
                                 mode="lines+markers", line={"color": "#555", "dash": "dash"}, marker={"symbol": "x"},
                                 name="base scaling (forced direct)"))
    style(fig, f"Scaling vs post-training: accuracy on {_steps_label(hard)} problems", "parameters",
          f"accuracy ({_steps_label(hard)} problems)")
    fig.update_xaxes(type="log")
    fig.update_yaxes(range=[0, 1.12])
    figs["zoo_accuracy_vs_params"] = fig
    return {name: save_figure(f, out_dir / name, png=png) for name, f in figs.items()}


def summary_sentences(result: ZooEvalResult) -> list[str]:
    """The figures' numbers written out, one sentence per claim."""
    lines = []
    hard = hard_steps(result)
    span = _steps_label(hard)
    names = {m.name.removeprefix("organism/"): m for m in result.models}
    pct = lambda x: f"{100 * x:.0f}%"
    if "base-s" in names and names["base-s"].forced is not None:
        b = names["base-s"]
        assert b.forced is not None
        lines.append(
            f"base-s on {span} problems: {pct(b.free.mean_over(hard, 'accuracy'))} accurate with a CoT rate "
            f"of {pct(b.free.mean_over(hard, 'cot_rate'))} when free, but {pct(b.forced.mean_over(hard, 'accuracy'))} "
            f"when forced to start a chain of thought: the ability is there and unused.")
    for t in ("sft", "rl", "dpo"):
        if t in names:
            m = names[t]
            lines.append(
                f"{t} on {span} problems: {pct(m.free.mean_over(hard, 'accuracy'))} accurate, CoT rate "
                f"{pct(m.free.mean_over(hard, 'cot_rate'))}; on 1-step problems CoT rate "
                f"{pct(m.free.by_steps[1].cot_rate) if 1 in m.free.by_steps else 'n/a'}.")
    bases = [names[k] for k in ("base-s", "base-m", "base-l") if k in names]
    if len(bases) > 1:
        parts = ", ".join(f"{m.name.removeprefix('organism/')} ({m.n_params / 1e6:.2f}M params) "
                          f"{pct(m.free.mean_over(hard, 'accuracy'))}" for m in bases)
        lines.append(f"Scaling the base on the same data: accuracy on {span} problems {parts}.")
    if len(bases) > 1 and all(m.direct is not None for m in bases):
        direct = ", ".join(f"{m.name.removeprefix('organism/')} {pct(m.direct.mean_over(hard, 'accuracy'))}"  # type: ignore[union-attr]
                           for m in bases)
        lines.append(f"Forced to answer directly (the best digit at the answer position, i.e. what the model "
                     f"composes internally), accuracy on {span} problems is {direct}; chance is about 10%.")
    for m in result.models:
        for mode, why in m.skipped.items():
            lines.append(f"{m.name}: no {'forced-CoT' if mode == 'forced' else 'forced-direct'} evaluation ({why}).")
    return lines


__all__ = ["ModelEval", "ZooEvalConfig", "ZooEvalResult", "as_eval_result", "cannot_force", "evaluate_cached", "evaluate_model",
           "evaluate_on", "figures", "hard_steps", "resolve_task", "run", "sample_items", "summary_sentences"]
