"""Figures, sentences and report section of the calibration analysis."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.calibration.analysis import Calibration, CalibrationConfig, CalibrationResult, ece_difference
from analyses.calibration.rlsf import RLSFComparison
from analyses.routing.common import short
from interp.plots import save_figure, style

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks import Task

COND_COLOR = {"direct": "#4C78A8", "cot": "#E45756", "free": "#54A24B"}
COND_LABEL = {"direct": "forced direct", "cot": "forced CoT", "free": "free"}


def _ci(v: float, ci: tuple[float, float], nd: int = 3) -> str:
    return f"{v:.{nd}f} [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def figures(result: CalibrationResult, out_dir: str | Path, png: bool = True, prefix: str = "calibration"
            ) -> dict[str, list[Path]]:
    """Reliability diagrams (one panel per model, a line per condition, marker size ~ bin count) and ECE bars."""
    out_dir = Path(out_dir)
    n = len(result.models)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[short(m.name) for m in result.models],
                        horizontal_spacing=0.06, vertical_spacing=0.12)
    for i, m in enumerate(result.models):
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": "gray", "dash": "dot"},
                                 showlegend=False), row=r, col=c)
        for cal in m.conditions:
            bins = [b for b in cal.bins if b["n"] > 0]
            fig.add_trace(go.Scatter(
                x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins], mode="lines+markers",
                marker={"size": [4 + 14 * math.sqrt(b["n"] / len(cal.correct)) for b in bins],
                        "color": COND_COLOR[cal.condition]}, line={"color": COND_COLOR[cal.condition]},
                name=COND_LABEL[cal.condition], legendgroup=cal.condition, showlegend=i == 0,
                text=[f"n={b['n']}" for b in bins]), row=r, col=c)
        fig.update_xaxes(range=[0, 1.02], row=r, col=c)
        fig.update_yaxes(range=[-0.02, 1.02], row=r, col=c)
    style(fig, "Reliability: accuracy per confidence bin (answer-span probability; marker size ~ bin share)",
          "", "")
    fig.update_layout(width=1000, height=330 * rows + 80)
    figs = {f"{prefix}_reliability": fig}

    fig = go.Figure()
    for cond in result.config.conditions:
        cs = [m.get(cond) for m in result.models]
        fig.add_trace(go.Bar(x=[short(m.name) for m in result.models], y=[c.ece for c in cs],
                             name=COND_LABEL[cond], marker_color=COND_COLOR[cond],
                             error_y={"type": "data", "symmetric": False,
                                      "array": [max(0.0, c.ece_ci[1] - c.ece) for c in cs],
                                      "arrayminus": [max(0.0, c.ece - c.ece_ci[0]) for c in cs]}))
    style(fig, f"Expected calibration error ({result.config.n_bins} bins, 95% bootstrap CIs)", "model", "ECE")
    fig.update_layout(barmode="group")
    figs[f"{prefix}_ece"] = fig
    return {k: save_figure(f, out_dir / k, png=png) for k, f in figs.items()}


def _line(c: Calibration) -> str:
    auc = "undefined (one class)" if math.isnan(c.auroc) else _ci(c.auroc, c.auroc_ci, 2)
    return (f"{COND_LABEL[c.condition]}: accuracy {c.accuracy:.2f}, mean confidence {c.mean_confidence:.2f}, "
            f"ECE {_ci(c.ece, c.ece_ci)}, AUROC {auc}")


def summary_sentences(result: CalibrationResult, base: str = "organism/base-s") -> list[str]:
    cfg = result.config
    out = [(f"Confidence is the probability of the final answer span given everything before it, over "
           f"{len(result.n_steps)} problems; in the forced-direct condition it includes the mass a model puts on "
           f"other formats, so a model that prefers a chain looks under-confident there.")]
    for m in result.models:
        out.append(f"{short(m.name)}: " + "; ".join(_line(c) for c in m.conditions) + ".")
    names = {m.name for m in result.models}
    if base in names and "free" in cfg.conditions:
        b = result.model(base).get("free")
        for m in result.models:
            if m.name == base:
                continue
            d, ci = ece_difference(m.get("free"), b, cfg.n_bins, cfg.n_boot, cfg.seed)
            out.append(f"Free-generation ECE of {short(m.name)} minus {short(base)}: {_ci(d, ci)} (paired over problems).")
    return out


def section_parts(out: Path, n_per_step: int, png: bool, config: CalibrationConfig | None = None,
                  task: Task | None = None, models: Mapping[str, Model] | None = None) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Run (or reuse) the analysis on the zoo, or with `config` on its models and task (`task` and `models`
    already loaded, e.g. on a GPU); title, sentences and figure files for the report."""
    import dataclasses

    from analyses.calibration.analysis import run_cached
    from interp.io import write_json

    cfg = config or dataclasses.replace(CalibrationConfig(), n_per_step=min(n_per_step, 100))
    result = run_cached(cfg, task, models)
    write_json(Path(out) / "calibration.json", result.to_dict())
    paths = figures(result, out, png=png)
    return ("Confidence and calibration of the answer span", tuple(summary_sentences(result)),
            tuple(p[0].name for p in paths.values()), "")


def rlsf_sentences(c: RLSFComparison) -> list[str]:
    """The trained model against its initial model and rl/dpo: behaviour, ECE, whether the ECE intervals separate."""
    m_ = c.member
    name, init = m_.name, m_.init
    cal = CalibrationResult.from_dict(c.calibration)
    b = c.behaviour
    if m_.rank == "confidence":
        how = (f"ranked only by {short(m_.source or init)}'s own answer confidence (no labels; in hindsight the "
               f"chosen sample was right {100 * m_.pool['chosen_correct']:.0f}% of the time and the rejected "
               f"one {100 * m_.pool['rejected_correct']:.0f}%)")
    else:
        how = f"of {short(m_.source or init)}'s samples, a right one against a wrong one (labels used)"
    out = [(f"{short(name)} (shipped zoo member): DPO from {short(init)} for {m_.steps} steps on {m_.pool['n_pairs']} "
           f"pairs {how}.")]
    for m in b:
        x = b[m]
        out.append(f"{short(m)}: free accuracy {100 * x['accuracy']:.0f}% [{100 * x['accuracy_ci'][0]:.0f}%, "
                   f"{100 * x['accuracy_ci'][1]:.0f}%], CoT rate {100 * x['cot_rate']:.0f}%, invalid "
                   f"{100 * x['invalid_rate']:.1f}%, {x['mean_tokens']:.1f} tokens; free ECE "
                   f"{_ci(cal.model(m).get('free').ece, cal.model(m).get('free').ece_ci)}.")
    r, i = cal.model(name).get("free"), cal.model(init).get("free")
    d = c.ece_vs_init["free"]
    apart = r.ece_ci[1] < i.ece_ci[0]
    out.append(f"Free-generation ECE of {short(name)} minus {short(init)}: {_ci(d['diff'], d['diff_ci'])} (paired); the "
               f"two ECE intervals {'do not overlap: ' + short(name) + ' is better calibrated' if apart else 'overlap'}.")
    return out


def rlsf_section_parts(out: Path, n_per_step: int, png: bool, teacher: bool = False
                       ) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Compare the shipped rlsf (or dpo-teacher) member; title, sentences and figure files for the report."""
    from analyses.calibration.rlsf import run_cached
    from interp.io import write_json

    c = run_cached("organism/dpo-teacher" if teacher else "organism/rlsf", n_per_step=min(n_per_step, 100))
    stem = "dpo_teacher" if teacher else "rlsf"
    write_json(Path(out) / f"{stem}.json", c.to_dict())
    paths = figures(CalibrationResult.from_dict(c.calibration), out, png=png, prefix=stem)
    title = ("DPO on a larger model's right vs wrong samples (dpo-teacher) against rl and dpo" if teacher else
             "Label-free self-confidence fine-tuning (RLSF-like) against rl and dpo")
    return title, tuple(rlsf_sentences(c)), tuple(p[0].name for p in paths.values()), ""


__all__ = ["figures", "rlsf_section_parts", "rlsf_sentences", "section_parts", "summary_sentences"]
