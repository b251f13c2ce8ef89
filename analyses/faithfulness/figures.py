"""Figures, sentences and table of the faithfulness analysis (each model against the reference: base-s on the zoo)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.faithfulness.analysis import FaithfulnessResult, ModelFaithfulness, Score
from interp.plots import color_for, save_figure, style

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks.base import Task

BASE = "organism/base-s"
PANELS = (("aoc", "early answering: AOC"), ("mistake_follows", "mistake: answer follows it"),
          ("paraphrase_changed", "paraphrase: answer changes"), ("filler_changed", "filler: answer changes"))


def short(name: str) -> str:
    return name.removeprefix("organism/")


def _group(k: int, noun: str = "problems") -> str:
    """A group of problems by its step count (0: a task's items without one)."""
    return f"{k}-step {noun}" if k else f"all {noun}"


def reference(result: FaithfulnessResult) -> ModelFaithfulness:
    """The model the others are compared with: base-s when analysed (the zoo), else the first model."""
    return next((m for m in result.models if m.name == BASE), result.models[0])


def _label(m: ModelFaithfulness) -> str:
    return short(m.name) + (" (forced CoT)" if m.forced_cot else "")


def _err(scores: list[Score]) -> dict:
    return {"type": "data", "symmetric": False, "array": [max(0.0, s.ci[1] - s.value) for s in scores],
                "arrayminus": [max(0.0, s.value - s.ci[0]) for s in scores]}


def figures(result: FaithfulnessResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Scores by number of steps (four tests), the early-answering curve, and step x layer patching heatmaps."""
    out_dir = Path(out_dir)
    figs: dict[str, go.Figure] = {}
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in PANELS])
    for i, (key, _) in enumerate(PANELS):
        for m in result.models:
            steps = sorted(m.by_steps)
            sc = [getattr(m.by_steps[k], key) for k in steps]
            fig.add_trace(go.Scatter(x=steps, y=[s.value for s in sc], error_y=_err(sc), mode="lines+markers",
                                     name=_label(m), legendgroup=m.name, showlegend=i == 0,
                                     line={"color": color_for(m.name)}), row=i // 2 + 1, col=i % 2 + 1)
    style(fig, "Text interventions on self-generated CoTs (raw rates, 95% bootstrap CIs)", "", "")
    fig.update_layout(height=640, width=900)
    fig.update_xaxes(dtick=1, title_text="number of steps")
    fig.update_yaxes(range=[-0.03, 1.03])
    figs["faithfulness_scores"] = fig

    k_max = max(result.models[0].by_steps)
    fig = go.Figure()
    for m in result.models:
        s = m.by_steps[k_max]
        K = max(len(s.same_by_k) - 1, 1)  # the group's step grid (free text: its most common written count)
        xs = [k / K for k in range(len(s.same_by_k))]
        fig.add_trace(go.Scatter(x=xs, y=[x.value for x in s.same_by_k], error_y=_err(list(s.same_by_k)),
                                 mode="lines+markers", name=_label(m), line={"color": color_for(m.name)}))
    style(fig, f"Early answering on {_group(k_max)}: answer after k of K steps = full-CoT answer",
          "fraction of the CoT kept (k / K)", "same answer as with the full CoT")
    fig.update_yaxes(range=[-0.03, 1.03])
    figs["faithfulness_early_answering"] = fig

    fig = make_subplots(rows=1, cols=len(result.models), subplot_titles=[_label(m) for m in result.models],
                        shared_yaxes=True)
    lim = max((abs(v) for m in result.models for row in m.patching[k_max].effect for v in row if np.isfinite(v)),
              default=1.0)
    for i, m in enumerate(result.models):
        p = m.patching[k_max]
        fig.add_trace(go.Heatmap(z=[list(r) for r in p.effect], x=[f"L{layer}" for layer in p.layers],
                                 y=[f"step {j + 1}" for j in range(p.n_steps)], zmid=0, zmin=-lim, zmax=lim,
                                 colorscale="RdBu", showscale=i == 0, colorbar={"title": "logit diff"}),
                      row=1, col=i + 1)
    style(fig, f"Step-level patching ({_group(k_max, 'CoTs')}): resid_pre of one step's value token from a run where "
               f"that value differs", "layer", "")
    fig.update_layout(width=260 * len(result.models) + 120, height=380, title_font_size=13)
    fig.update_yaxes(autorange="reversed")  # step 1 on top
    figs["faithfulness_step_patching"] = fig

    with_flow = [m for m in result.models if m.patching[k_max].flow_n]
    if with_flow:
        fig = make_subplots(rows=1, cols=len(with_flow), shared_yaxes=True,
                            subplot_titles=[f"{_label(m)} (n={m.patching[k_max].flow_n})" for m in with_flow])
        lim = max(abs(v) for m in with_flow for row in m.patching[k_max].flow for v in row) or 1.0
        for i, m in enumerate(with_flow):
            p = m.patching[k_max]
            fig.add_trace(go.Heatmap(z=[list(r) for r in p.flow], x=list(p.flow_labels), y=[f"L{x}" for x in p.layers],
                                     zmid=0, zmin=-lim, zmax=lim, colorscale="RdBu", showscale=i == 0,
                                     colorbar={"title": "logit diff"}), row=1, col=i + 1)
        style(fig, f"Where the last written value travels ({_group(k_max, 'verbose CoTs')}): resid_pre patched at each "
                   f"position from the value to the readout", "position", "layer")
        fig.update_layout(width=260 * len(with_flow) + 120, height=380, title_font_size=13)
        fig.update_yaxes(autorange="reversed")
        figs["faithfulness_step_flow"] = fig
    return {name: save_figure(f, out_dir / name, png=png) for name, f in figs.items()}


def _pct(s: Score) -> str:
    return s.fmt(pct=True)


def _hard(m: ModelFaithfulness, key: str, steps: tuple[int, ...]) -> tuple[float, float, float]:
    """Mean over step counts of a score and of its interval ends."""
    sc = [getattr(m.by_steps[k], key) for k in steps if k in m.by_steps]
    return (float(np.mean([s.value for s in sc])), float(np.mean([s.ci[0] for s in sc])),
            float(np.mean([s.ci[1] for s in sc])))


def compare(t: ModelFaithfulness, b: ModelFaithfulness, key: str) -> list[tuple[int, str]]:
    """Per step count: 'more' / 'less' when the 95% intervals do not overlap, else 'same'."""
    out = []
    for k in sorted(t.by_steps):
        x, y = getattr(t.by_steps[k], key), getattr(b.by_steps[k], key)
        if np.isnan(x.value) or np.isnan(y.value):
            continue
        out.append((k, "more" if x.ci[0] > y.ci[1] else "less" if x.ci[1] < y.ci[0] else "same"))
    return out


def summary_sentences(result: FaithfulnessResult) -> list[str]:
    """One paragraph per model against the reference (base-s on the zoo, else the first model), plus the
    step-patching finding; numbers in text."""
    cfg = result.config
    base = reference(result)
    bname = short(base.name)
    forced = ", ".join(short(m.name) for m in result.models if m.forced_cot) or "no model"
    lines = [(f"Tests on each model's own greedy CoTs ({cfg.n_per_step} problems per step count; {forced} forced to "
             f"start a CoT, the others free, problems they answered directly or unparseably are "
             f"counted, not tested). Raw rates with 95% bootstrap intervals; 'normalised' divides a change rate by "
             f"the largest one the accuracies with and without the intervention allow (Bentham et al.'s concern): "
             f"when a model's CoT answers are all correct, 'changed' and 'wrong after the intervention' coincide and "
             f"the normalised score is 100% by construction, so the raw rates and the mistake-following rates carry "
             f"the comparison.")]
    for m in result.models:
        if m.name == base.name:
            continue
        ref = base
        parts = []
        for k in sorted(m.by_steps):
            s = m.by_steps[k]
            b = ref.by_steps.get(k) if ref else None
            c = s.counts
            parts.append(
                (f"{k} step{'s' if k > 1 else ''}" if k else "all problems") + f" ({c['cot']} CoTs, {c['direct']} direct, {c['invalid']} invalid): "
                f"AOC {s.aoc.fmt(False)}" + (f" vs {bname} {b.aoc.fmt(False)}" if b else "")
                + f"; a mistake in the last step is followed {_pct(s.mistake_follows_last)}"
                + (f" ({bname} {_pct(b.mistake_follows_last)})" if b else "")
                + f", one in an earlier step {_pct(s.mistake_follows_earlier)}"
                + (f" ({bname} {_pct(b.mistake_follows_earlier)})" if b else "")
                + f"; filler changes the answer {_pct(s.filler_changed)}" + (f" ({bname} {_pct(b.filler_changed)})" if b else "")
                + f"; paraphrase {_pct(s.paraphrase_changed)}")
        verdict = ""
        if ref is not None:
            keys = ("aoc", "mistake_follows_last", "mistake_follows_earlier", "filler_changed")
            cmps = {key: compare(m, ref, key) for key in keys}
            more = sorted({k for c in cmps.values() for k, v in c if v == "more"})
            less = sorted({k for c in cmps.values() for k, v in c if v == "less"})
            which = "; ".join(f"{key} {v} on {k} steps" for key, c in cmps.items() for k, v in c if v != "same")
            if not any(cmps.values()):
                verdict = " No verdict: no step count has scores for both models (no chain of thought was tested)."
            elif not more and not less:
                verdict = (f" Verdict: {short(m.name)}'s CoT is used about as causally as {bname}'s on every problem "
                           f"size: the 95% intervals of AOC, mistake-following (last and earlier step) and filler "
                           f"change overlap at every step count.")
            else:
                sides = [f"more causally used than {bname}'s on {', '.join(map(str, more))}-step problems"] if more else []
                sides += [(f"less on {', '.join(map(str, less))}-step problems" if more else
                           f"less causally used than {bname}'s on {', '.join(map(str, less))}-step problems")] if less else []
                verdict = (f" Verdict: {short(m.name)}'s CoT is {' and '.join(sides)} (non-overlapping 95% intervals: "
                           f"{which}); at every other step count the intervals overlap.")
        lines.append(f"{short(m.name)} against {bname}: " + "; ".join(parts) + "." + verdict)
    groups = sorted(base.by_steps)
    multi = [k for k in groups if k > 1]
    if multi:
        def pct0(x: float) -> str:
            return f"{100 * x:.0f}%" if np.isfinite(x) else "n/a"

        direct = "; ".join(f"{short(m.name)} " + "/".join(pct0(m.by_steps[k].accuracy_by_k[0].value) for k in multi)
                           for m in result.models)
        norms = [m.by_steps[k].aoc_normalised.value for m in result.models for k in multi
                 if np.isfinite(m.by_steps[k].aoc_normalised.value)]
        if norms:
            lines.append(
                f"Accuracy of the answer with none of the CoT (k = 0, the direct answer) on "
                f"{'/'.join(map(str, multi))}-step problems: {direct}. The raw AOC follows it (the lower a model's "
                f"accuracy without its CoT, the higher its AOC), while the accuracy-normalised AOC lies between "
                f"{min(norms):.2f} and {max(norms):.2f} for every model: every answer that could change when the CoT "
                f"is cut did change.")
    k_max = max(groups)
    pat = []
    for m in result.models:
        p = m.patching[k_max]
        if p.n == 0:
            continue
        last, earlier = p.total[-1], p.total[:-1]
        early_mean = float(np.mean([t.value for t in earlier])) if earlier else float("nan")
        l1 = p.effect[-1][1] if len(p.layers) > 1 else float("nan")
        pat.append(f"{short(m.name)}: changing the last written value moves the final answer's logit difference by "
                   f"{last.fmt(False)}, an earlier written value by {early_mean:.2f} on average; patching only the "
                   f"last value token's resid_pre carries {p.effect[-1][0]:.2f} at layer 0 and {l1:.2f} at layer 1 "
                   f"(n={p.n})")
    flows = [(m, m.patching[k_max]) for m in result.models if m.patching[k_max].flow_n]
    if flows:
        parts = []
        for m, p in flows:
            f = np.array(p.flow)
            mid = float(np.abs(f[:, 1:-1]).max()) if f.shape[1] > 2 else 0.0
            parts.append(f"{short(m.name)} {f[0, 0]:.1f} at the value token at layer 0, {f[1:, -1].min():.1f}-"
                         f"{f[1:, -1].max():.1f} at the readout from layer 1 on, at most {mid:.2f} at the tokens "
                         f"in between (n={p.flow_n})")
        pat.append("the same patch at every position from the last value to the readout (verbose CoTs) carries "
                   + "; ".join(parts) + ": the readout attends to the written value itself in layer 0")
    if pat:
        lines.append(f"Step-level patching on {_group(k_max, 'CoTs')} (does the answer read the written value?): "
                     + "; ".join(pat) + ". So the final answer reads the last written value (it is moved out of its "
                     "token position by layer 0's attention: patching it at layer 1 or later does nothing), and an earlier "
                     "written value matters only through the later steps the model writes, which the mistake test shows "
                     "it computes correctly even after a wrong earlier value (in the verbose format the next step "
                     "writes the variable's correct value, not the written one).")
    return lines


def table_html(result: FaithfulnessResult) -> str:
    head = ("<tr><th>model</th><th>steps</th><th>CoTs / direct / invalid</th><th>CoT acc</th><th>AOC [95% CI]</th>"
            "<th>AOC norm.</th><th>mistake followed (last / earlier)</th><th>filler changes</th>"
            "<th>filler norm.</th><th>paraphrase changes</th></tr>")
    rows = []
    for m in result.models:
        for k, s in sorted(m.by_steps.items()):
            c = s.counts
            rows.append(
                f"<tr><td>{html.escape(_label(m))}</td><td>{k}</td><td>{c['cot']} / {c['direct']} / {c['invalid']}</td>"
                f"<td>{_pct(s.cot_accuracy)}</td><td>{s.aoc.fmt(False)}</td><td>{s.aoc_normalised.fmt(False)}</td>"
                f"<td>{_pct(s.mistake_follows_last)} / {_pct(s.mistake_follows_earlier)}</td>"
                f"<td>{_pct(s.filler_changed)}</td><td>{_pct(s.filler_normalised)}</td>"
                f"<td>{_pct(s.paraphrase_changed)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"




def section_parts(out: Path, n_per_step: int, png: bool, models: Sequence[Model] | None = None,
                  task: Task | None = None, max_new_tokens: int | None = None
                  ) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Run (or read from the cache) the analysis (the zoo by default, or the given models on the given task,
    generating up to `max_new_tokens` when given) and return title, sentences, figures and table."""
    import dataclasses

    from analyses.faithfulness.analysis import FaithfulnessConfig, run
    from interp.io import write_json

    cfg = dataclasses.replace(FaithfulnessConfig(), n_per_step=n_per_step)
    if models is not None:  # a pair: the base is forced into a chain of thought, as base-s is on the zoo
        cfg = dataclasses.replace(cfg, forced_cot=(models[0].name,))
    if task is not None and not task.has_steps:
        cfg = dataclasses.replace(cfg, steps=())
    if max_new_tokens is not None:
        cfg = dataclasses.replace(cfg, max_new_tokens=max_new_tokens)
    result = run(cfg, models=models, task=task)
    write_json(Path(out) / "faithfulness.json", result.to_dict())
    paths = figures(result, out, png=png)
    return ("Is the chain of thought causally used? Text interventions and step-level patching",
            tuple(summary_sentences(result)), tuple(p[0].name for p in paths.values()), table_html(result))


__all__ = ["compare", "figures", "section_parts", "summary_sentences", "table_html"]
