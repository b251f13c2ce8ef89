"""Scaling vs post-training on the zoo: accuracy and CoT rate by number of steps, and accuracy vs parameters.

The first section of the report. It evaluates every zoo member greedily, free and forced into a chain of
thought, and asks the question the toolkit exists for: does making the base bigger buy what reasoning
post-training buys?
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from tqdm.auto import tqdm

from interp.io import cache_dir, library_versions, read_json, write_json
from interp.organism.evaluate import EvalConfig, EvalResult, evaluate
from interp.plots import color_for, save_figure, style

HARD_STEPS = (3, 4)
LABEL_SIDE = {"sft": "top right", "rl": "middle right", "dpo": "bottom right"}  # they share one x


@dataclass(frozen=True)
class ZooEvalConfig:
    models: tuple[str, ...] = ("organism/base-s", "organism/base-m", "organism/base-l",
                               "organism/sft", "organism/rl", "organism/dpo")
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(n_per_step=200))
    cache_dir: str = field(default_factory=lambda: str(cache_dir("eval")))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ZooEvalConfig":
        return cls(tuple(d["models"]), EvalConfig.from_dict(d["eval"]), d.get("cache_dir", str(cache_dir("eval"))))


@dataclass(frozen=True)
class ModelEval:
    name: str
    n_params: int
    checksum: str
    free: EvalResult
    forced: EvalResult  # forced to start a chain of thought
    direct: EvalResult  # forced to answer directly (most likely digit at the answer position)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n_params": self.n_params, "checksum": self.checksum,
                "free": self.free.to_dict(), "forced": self.forced.to_dict(), "direct": self.direct.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelEval":
        return cls(d["name"], d["n_params"], d["checksum"], EvalResult.from_dict(d["free"]),
                   EvalResult.from_dict(d["forced"]), EvalResult.from_dict(d["direct"]))


@dataclass(frozen=True)
class ZooEvalResult:
    config: ZooEvalConfig
    models: tuple[ModelEval, ...]
    libraries: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "models": [m.to_dict() for m in self.models],
                "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ZooEvalResult":
        return cls(ZooEvalConfig.from_dict(d["config"]), tuple(ModelEval.from_dict(m) for m in d["models"]),
                   d["libraries"])

    def get(self, name: str) -> ModelEval:
        for m in self.models:
            if m.name == name or m.name == f"organism/{name}":
                return m
        raise KeyError(f"{name!r} was not evaluated; evaluated: {[m.name for m in self.models]}")


def _cache_key(checksum: str, cfg: EvalConfig) -> str:
    blob = json.dumps({"checksum": checksum, "eval": cfg.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def evaluate_cached(model: Any, cfg: EvalConfig, cache_dir: str | Path) -> EvalResult:
    """Evaluate a loaded `interp.Model`, reusing a cached result for the same weights and config."""
    path = Path(cache_dir) / f"{_cache_key(model.checksum, cfg)}.json"
    if path.exists():
        return EvalResult.from_dict(read_json(path))
    res = evaluate(model.hf, model.tokenizer, cfg, name=model.name, checksum=model.checksum)
    write_json(path, res.to_dict())
    return res


def run(config: ZooEvalConfig = ZooEvalConfig(), progress: bool = True) -> ZooEvalResult:
    from interp.models import load

    out = []
    for name in tqdm(config.models, desc="evaluating zoo", disable=not progress):
        model = load(name)
        free = evaluate_cached(model, dataclasses.replace(config.eval, force_cot=False), config.cache_dir)
        forced = evaluate_cached(model, dataclasses.replace(config.eval, force_cot=True), config.cache_dir)
        direct = evaluate_cached(model, dataclasses.replace(config.eval, force_direct=True), config.cache_dir)
        out.append(ModelEval(name, model.n_params, model.checksum, free, forced, direct))
    return ZooEvalResult(config, tuple(out), library_versions())


def figures(result: ZooEvalResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Accuracy and CoT rate vs steps per model; accuracy on 3-4-step problems vs parameter count."""
    out_dir = Path(out_dir)
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
                x=steps, y=ys, name=short, mode="lines+markers", line=dict(color=color_for(m.name)),
                error_y=dict(type="data", symmetric=False, array=[c[1] - y for c, y in zip(ci, ys)],
                             arrayminus=[y - c[0] for c, y in zip(ci, ys)])))
        if metric == "accuracy":
            base = next((m for m in result.models if m.name.endswith("base-s")), result.models[0])
            steps = sorted(base.forced.by_steps)
            fig.add_trace(go.Scatter(x=steps, y=[base.forced.by_steps[k].accuracy for k in steps],
                                     name=f"{base.name.removeprefix('organism/')} forced CoT", mode="lines+markers",
                                     line=dict(color=color_for(base.name), dash="dash")))
        style(fig, title, "number of steps", metric.replace("_", " "))
        fig.update_yaxes(range=[-0.02, 1.02])
        fig.update_xaxes(dtick=1)
        figs[f"zoo_{metric}_by_steps"] = fig

    fig = go.Figure()
    bases = [m for m in result.models if "base" in m.name]
    for m in result.models:
        short = m.name.removeprefix("organism/")
        fig.add_trace(go.Scatter(
            x=[m.n_params], y=[m.free.mean_over(HARD_STEPS, "accuracy")], name=short, mode="markers+text",
            text=[short], textposition="top center" if m in bases else LABEL_SIDE.get(short, "middle right"),
            marker=dict(size=12, color=color_for(m.name), symbol="circle" if m in bases else "diamond")))
    if bases:
        fig.add_trace(go.Scatter(x=[m.n_params for m in bases], y=[m.free.mean_over(HARD_STEPS, "accuracy") for m in bases],
                                 mode="lines", line=dict(color="#999", dash="dot"), name="base scaling (free)"))
        fig.add_trace(go.Scatter(x=[m.n_params for m in bases], y=[m.direct.mean_over(HARD_STEPS, "accuracy") for m in bases],
                                 mode="lines+markers", line=dict(color="#555", dash="dash"), marker=dict(symbol="x"),
                                 name="base scaling (forced direct)"))
    style(fig, "Scaling vs post-training: accuracy on 3-4-step problems", "parameters", "accuracy (3-4 steps)")
    fig.update_xaxes(type="log")
    fig.update_yaxes(range=[0, 1.12])
    figs["zoo_accuracy_vs_params"] = fig
    return {name: save_figure(f, out_dir / name, png=png) for name, f in figs.items()}


def summary_sentences(result: ZooEvalResult) -> list[str]:
    """The figures' numbers written out, one sentence per claim."""
    lines = []
    names = {m.name.removeprefix("organism/"): m for m in result.models}
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    if "base-s" in names:
        b = names["base-s"]
        lines.append(
            f"base-s on 3-4-step problems: {pct(b.free.mean_over(HARD_STEPS, 'accuracy'))} accurate with a CoT rate "
            f"of {pct(b.free.mean_over(HARD_STEPS, 'cot_rate'))} when free, but {pct(b.forced.mean_over(HARD_STEPS, 'accuracy'))} "
            f"when forced to start a chain of thought: the ability is there and unused.")
    for t in ("sft", "rl", "dpo"):
        if t in names:
            m = names[t]
            lines.append(
                f"{t} on 3-4-step problems: {pct(m.free.mean_over(HARD_STEPS, 'accuracy'))} accurate, CoT rate "
                f"{pct(m.free.mean_over(HARD_STEPS, 'cot_rate'))}; on 1-step problems CoT rate "
                f"{pct(m.free.by_steps[1].cot_rate) if 1 in m.free.by_steps else 'n/a'}.")
    bases = [names[k] for k in ("base-s", "base-m", "base-l") if k in names]
    if len(bases) > 1:
        parts = ", ".join(f"{m.name.removeprefix('organism/')} ({m.n_params / 1e6:.2f}M params) "
                          f"{pct(m.free.mean_over(HARD_STEPS, 'accuracy'))}" for m in bases)
        lines.append(f"Scaling the base on the same data: accuracy on 3-4-step problems {parts}.")
        direct = ", ".join(f"{m.name.removeprefix('organism/')} {pct(m.direct.mean_over(HARD_STEPS, 'accuracy'))}"
                           for m in bases)
        lines.append(f"Forced to answer directly (the best digit at the answer position, i.e. what the model "
                     f"composes internally), accuracy on 3-4-step problems is {direct}; chance is about 10%.")
    return lines


__all__ = ["ZooEvalConfig", "ZooEvalResult", "ModelEval", "run", "figures", "summary_sentences", "evaluate_cached"]
