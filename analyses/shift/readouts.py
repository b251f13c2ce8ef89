"""Mechanistic readout under shift: a linear probe for the first step's value, trained on in-distribution
residual streams at the end of the first step's clause (the separator after `b = a + 4`, where the value can first
be computed), applied to the battery's shifted prompts (shifts that keep the clause structure). Does the intermediate
value stay decodable when the answer fails? Split by whether the member answered right, with a shuffled-label
control probe for the chance level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots

from analyses.shift.analysis import Score, ShiftConfig, ShiftResult
from analyses.shift.transforms import IN_DISTRIBUTION, ShiftedProblem, as_shown
from interp.io import library_versions
from interp.organism.task import TaskConfig, sample_problems
from interp.plots import save_figure, style
from interp.sites import Hooks, add_capture, sites
from probes import fit
from probes.splits import control_labels

DEFAULT_SHIFTS = ("separator ,", "renamed variables", "shuffled variables", "operand first", "longer (5-6 steps)")
SEPARATORS = (";", ",")


@dataclass(frozen=True)
class ReadoutConfig:
    models: tuple[str, ...] = ("organism/base-s", "organism/sft")
    shifts: tuple[str, ...] = DEFAULT_SHIFTS
    n_train: int = 1500
    n_val: int = 300
    seed: int = 818_000
    n_boot: int = 1000
    position: str = "step1_end"  # or "last" (the prompt's last token, `:` of `A :`)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReadoutConfig:
        d = dict(d)
        d["models"], d["shifts"] = tuple(d["models"]), tuple(d["shifts"])
        return cls(**d)


def read_position(problem: ShiftedProblem, position: str) -> int:
    """Index in the prompt words (no BOS) of `last` or `step1_end` (the second separator: the end of step 1's
    clause when the prompt starts `Q : a = 3 ; b = a + 4 ;`)."""
    if position == "last":
        return len(problem.prompt) - 1
    if position == "step1_end":
        seps = [i for i, w in enumerate(problem.prompt) if w in SEPARATORS]
        if len(seps) < 2:
            raise ValueError(f"prompt {' '.join(problem.prompt)!r} has no second separator")
        return seps[1]
    raise ValueError(f"unknown read position {position!r}; valid: last, step1_end")


@torch.no_grad()
def last_token_resid(model: Any, problems: Sequence[ShiftedProblem], batch_size: int = 256, position: str = "last"
                     ) -> Float[torch.Tensor, "layer row d"]:
    """resid_post of every layer at each prompt's `position` (see `read_position`; default its last token)."""
    tok, s = model.tokenizer, sites(model)
    out = []
    for start in range(0, len(problems), batch_size):
        ids = [[tok.bos_token_id, *tok.convert_tokens_to_ids(list(p.prompt))] for p in problems[start:start + batch_size]]
        width = max(len(x) for x in ids)
        x = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(x)
        for i, row in enumerate(ids):
            x[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        store: dict[int, torch.Tensor] = {}
        with Hooks() as hk:
            for layer in range(model.n_layers):
                add_capture(hk, s, "resid_post", layer, store)
            model.hf(input_ids=x, attention_mask=mask)
        last = torch.tensor([1 + read_position(p, position) for p in problems[start:start + batch_size]])
        out.append(torch.stack([store[la][torch.arange(len(ids)), last] for la in range(model.n_layers)]).float())
    return torch.cat(out, dim=1)


@dataclass(frozen=True)
class ModelReadout:
    """Probe accuracy for the step-1 value at the best layer (chosen on in-distribution validation problems)."""

    name: str
    checksum: str
    layer: int
    val_by_layer: tuple[float, ...]
    control: Score  # shuffled-label probe on the validation problems (chance level)
    in_distribution: Score  # battery's in-distribution problems with >= 2 steps
    by_shift: dict[str, dict[str, Score]]  # shift -> {"right": ..., "wrong": ...} (by the member's answer)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "layer": self.layer, "val_by_layer": list(self.val_by_layer),
                "control": self.control.to_dict(), "in_distribution": self.in_distribution.to_dict(),
                "by_shift": {k: {g: s.to_dict() for g, s in v.items()} for k, v in self.by_shift.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelReadout:
        return cls(d["name"], d["checksum"], d["layer"], tuple(d["val_by_layer"]), Score.from_dict(d["control"]),
                   Score.from_dict(d["in_distribution"]),
                   {k: {g: Score.from_dict(s) for g, s in v.items()} for k, v in d["by_shift"].items()})


@dataclass(frozen=True)
class ReadoutResult:
    config: ReadoutConfig
    battery: ShiftConfig
    models: tuple[ModelReadout, ...]
    libraries: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "battery": self.battery.to_dict(),
                "models": [m.to_dict() for m in self.models], "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReadoutResult:
        return cls(ReadoutConfig.from_dict(d["config"]), ShiftConfig.from_dict(d["battery"]),
                   tuple(ModelReadout.from_dict(m) for m in d["models"]), d["libraries"])


def readout_model(model: Any, battery: ShiftResult, cfg: ReadoutConfig) -> ModelReadout:
    """Fit per-layer probes in distribution, pick the best layer on validation, score it on the battery."""
    task = TaskConfig(min_steps=2, max_steps=4)
    train = [as_shown(p) for p in sample_problems(cfg.seed, cfg.n_train + cfg.n_val, task)]
    y = [p.truth[0][1] for p in train]
    acts = last_token_resid(model, train, position=cfg.position)
    tr, va = slice(0, cfg.n_train), slice(cfg.n_train, None)
    probes_, val = [], []
    for layer in range(model.n_layers):
        pr = fit(acts[layer, tr], y[tr])
        probes_.append(pr)
        val.append(float(np.mean(pr.predict(acts[layer, va]) == np.array(y[va], dtype=object))))
    best = int(np.argmax(val))
    groups = [str(i) for i in range(len(y))]
    ctrl_y = control_labels(y, groups, cfg.seed)
    ctrl = fit(acts[best, tr], ctrl_y[tr])
    ctrl_hit = (ctrl.predict(acts[best, va]) == np.array(y[va], dtype=object)).astype(float)
    member = battery.member(model.name)
    bcfg = battery.config
    shifts = {s.name: s for s in bcfg.shifts}
    scores: dict[str, dict[str, Score]] = {}
    in_dist = None
    for name in (IN_DISTRIBUTION.name, *cfg.shifts):
        if name not in shifts:
            raise ValueError(f"the battery has no shift {name!r}; it has {list(shifts)}")
        problems = bcfg.problems(shifts[name])
        correct = member.get(name).arr("correct")
        keep = [i for i, p in enumerate(problems) if p.n_steps >= 2]
        ps = [problems[i] for i in keep]
        x = last_token_resid(model, ps, position=cfg.position)[best]
        hit = (probes_[best].predict(x) == np.array([p.truth[0][1] for p in ps], dtype=object)).astype(float)
        ok = correct[keep] == 1
        if name == IN_DISTRIBUTION.name:
            in_dist = Score.mean(hit, cfg.n_boot, 0)
            continue
        scores[name] = {"right": Score.mean(hit[ok], cfg.n_boot, 1), "wrong": Score.mean(hit[~ok], cfg.n_boot, 2)}
    assert in_dist is not None
    return ModelReadout(model.name, model.checksum, best, tuple(val), Score.mean(ctrl_hit, cfg.n_boot, 3), in_dist,
                        scores)


def run(battery: ShiftResult, config: ReadoutConfig = ReadoutConfig()) -> ReadoutResult:
    """Readouts for each model the battery measured (probes are refit: seconds per model)."""
    from interp.models import load

    torch.manual_seed(config.seed)
    out = []
    for name in config.models:
        out.append(readout_model(load(name), battery, config))
    return ReadoutResult(config, battery.config, tuple(out), library_versions())


def figure(result: ReadoutResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Per model: probe accuracy in distribution and under each shift, split by whether the answer was right."""
    n = len(result.models)
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True,
                        subplot_titles=[f"{m.name.removeprefix('organism/')} (layer {m.layer})" for m in result.models])
    for i, m in enumerate(result.models):
        xs = list(m.by_shift)
        for g, color in (("right", "#4C78A8"), ("wrong", "#E45756")):
            sc = [m.by_shift[s][g] for s in xs]
            fig.add_trace(go.Bar(x=xs, y=[s.value for s in sc], name=f"answer {g}", marker_color=color,
                                 legendgroup=g, showlegend=i == 0,
                                 error_y={"type": "data", "symmetric": False,
                                              "array": [max(0, s.ci[1] - s.value) if s.n else 0 for s in sc],
                                              "arrayminus": [max(0, s.value - s.ci[0]) if s.n else 0 for s in sc]}),
                          row=1, col=i + 1)
        fig.add_hline(y=m.in_distribution.value, line_dash="dash", line_color="black", row=1, col=i + 1)
        fig.add_hline(y=m.control.value, line_dash="dot", line_color="grey", row=1, col=i + 1)
    style(fig, "Step-1 value probe (trained in distribution) on shifted prompts; dashed: in distribution, "
               "dotted: shuffled-label control", "", "probe accuracy")
    fig.update_layout(barmode="group", width=560 * n, height=480, title_font_size=13)
    fig.update_yaxes(range=[0, 1.05])
    return {"shift_readouts": save_figure(fig, Path(out_dir) / "shift_readouts", png=png)}


def sentences(result: ReadoutResult) -> list[str]:
    out = []
    for m in result.models:
        parts = "; ".join(f"{s}: right answers {v['right'].fmt()} (n={v['right'].n}), wrong {v['wrong'].fmt()} "
                          f"(n={v['wrong'].n})" for s, v in m.by_shift.items())
        out.append(f"{m.name.removeprefix('organism/')}: a probe for the first step's value at "
                   f"{'the end of its clause' if result.config.position == 'step1_end' else 'the last prompt token'} "
                   f"(layer {m.layer}, trained on in-distribution problems) reads it {m.in_distribution.fmt()} in "
                   f"distribution (shuffled-label control {m.control.fmt()}); under shift, {parts}.")
    return out


__all__ = [
    "ModelReadout",
    "ReadoutConfig",
    "ReadoutResult",
    "figure",
    "last_token_resid",
    "readout_model",
    "run",
    "sentences",
]
