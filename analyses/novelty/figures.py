"""Figures, sentences and report section of the novelty-vs-complexity analysis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.novelty.analysis import Effect, NoveltyConfig, NoveltyResult, run
from analyses.shift.analysis import Score
from interp.io import write_json
from interp.plots import color_for, save_figure, short_name, style

short = short_name  # one display name for every figure (interp.plots)


def _err(scores: list[Score] | list[Effect]) -> dict:
    return {"type": "data", "symmetric": False, "array": [max(0.0, s.ci[1] - s.value) if np.isfinite(s.value) else 0
                                                     for s in scores],
                "arrayminus": [max(0.0, s.value - s.ci[0]) if np.isfinite(s.value) else 0 for s in scores]}


SLOPES = {"seen": "seen problems", "unseen": "unseen problems", "unseen_in_length": "unseen, trained lengths"}


def figures(result: NoveltyResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Accuracy by steps for seen and unseen problems (one panel per member); the two effects per member."""
    out_dir = Path(out_dir)
    nb = result.config.n_boot
    figs: dict[str, go.Figure] = {}
    n = len(result.members)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[short(m.name) for m in result.members],
                        shared_yaxes=True)
    for i, m in enumerate(result.members):
        for seen in (True, False):
            cells = sorted((c for c in m.cells if c.seen == seen and c.correct), key=lambda c: c.n_steps)
            sc = [c.accuracy(nb, c.n_steps) for c in cells]
            fig.add_trace(go.Scatter(x=[c.n_steps for c in cells], y=[s.value for s in sc], error_y=_err(sc),
                                     mode="lines+markers", name="seen in training" if seen else "never seen",
                                     legendgroup=str(seen), showlegend=i == 0,
                                     line={"color": color_for(m.name), "dash": "solid" if seen else "dash"}),
                          row=i // cols + 1, col=i % cols + 1)
    style(fig, "Accuracy by number of steps, problems seen exactly in training vs never seen (95% CIs)", "", "")
    fig.update_layout(width=1000, height=330 * rows)
    fig.update_xaxes(dtick=1, title_text="steps")
    fig.update_yaxes(range=[-0.02, 1.05])
    figs["novelty_accuracy"] = fig

    ks = sorted({k for m in result.members for k in m.novelty_effect})
    fig = make_subplots(rows=1, cols=2, subplot_titles=[
        "at fixed steps: seen - unseen accuracy", "at fixed novelty: accuracy change per step"])
    for j, m in enumerate(result.members):
        dx = (j - n / 2) * 0.06
        ef = [m.novelty_effect[k] for k in ks if k in m.novelty_effect]
        fig.add_trace(go.Scatter(x=[k + dx for k in ks if k in m.novelty_effect], y=[e.value for e in ef],
                                 error_y=_err(ef), mode="markers", name=short(m.name), legendgroup=m.name,
                                 marker={"color": color_for(m.name), "size": 8}), row=1, col=1)
        sl = [m.complexity_slope[k] for k in SLOPES]
        fig.add_trace(go.Scatter(x=[i + dx for i in range(len(sl))], y=[e.value for e in sl], error_y=_err(sl), mode="markers",
                                 name=short(m.name), legendgroup=m.name, showlegend=False,
                                 marker={"color": color_for(m.name), "size": 8}), row=1, col=2)
    fig.add_hline(y=0, line_dash="dot")
    style(fig, "Novelty effect and complexity effect per member (95% CIs)", "", "")
    fig.update_layout(width=1000, height=420)
    fig.update_xaxes(tickvals=ks, ticktext=[f"{k} steps" for k in ks], row=1, col=1)
    fig.update_xaxes(tickvals=list(range(len(SLOPES))), ticktext=list(SLOPES.values()), row=1, col=2)
    figs["novelty_effects"] = fig
    return {name: save_figure(f, out_dir / name, png=png) for name, f in figs.items()}


def _pp(e: Effect) -> str:
    if not np.isfinite(e.value):
        return "n/a"
    return f"{100 * e.value:+.0f} points [{100 * e.ci[0]:+.0f}, {100 * e.ci[1]:+.0f}]"


def summary_sentences(result: NoveltyResult) -> list[str]:
    """Yes/no per member with intervals, plus what the bookkeeping says about the other novelty measures."""
    cfg = result.config
    ks = sorted(set(cfg.seen_steps) & set(cfg.unseen_steps))
    lines = [(f"Each member's training problems regenerated from its recipe's seeds (a post-trained member's include "
             f"base-s's); test problems from one seeded pool, sorted per member into cells of {cfg.n_per_cell} "
             f"problems: seen exactly in training at {', '.join(map(str, cfg.seen_steps))} steps, never seen at "
             f"{', '.join(map(str, cfg.unseen_steps))} steps (1-2-step problems are all seen, 5-6-step ones never). "
             f"Greedy free answers; 95% bootstrap intervals; 'yes' when the whole interval is on the claimed side.")]
    for m in result.members:
        nov = "; ".join(f"at {k} steps {_pp(m.novelty_effect[k])} ({m.novelty_effect[k].answer})" for k in ks
                        if k in m.novelty_effect)
        s, u, ui = (m.complexity_slope[k] for k in SLOPES)
        lines.append(f"{short(m.name)} ({m.n_training_problems:,} training problems): does accuracy fall with novelty "
                     f"at fixed steps (seen - unseen)? {nov}. Does it fall with steps at fixed novelty? seen problems "
                     f"{_pp(s)} per step ({s.answer}); unseen {_pp(u)} per step ({u.answer}), of which within the "
                     f"trained lengths {_pp(ui)} ({ui.answer}).")
    m0 = result.members[0]
    pre = "; ".join(f"{k} steps {_pp(e)} ({e.answer}; n = {'/'.join(map(str, e.n))})"
                    for k, e in sorted(m0.prefix_effect.items()))
    if pre:
        lines.append(f"A finer novelty measure, among never-seen problems ({short(m0.name)}): accuracy when all but the "
                     f"last step occurred as a training prefix minus when a shorter prefix did: {pre}.")
    nov = [n for c in m0.cells for n in c.novelty]
    in_dist = [n for c in m0.cells if c.n_steps <= 4 for n in c.novelty]
    if in_dist:
        lines.append(f"Coarser measures do not separate problems: within 1-4 steps every test problem's operator "
                     f"sequence occurred at least {min(n.op_sequence for n in in_dist):,} times in {short(m0.name)}'s "
                     f"training and every step triple at least {min(n.min_triple for n in nov):,} times; at 5-6 "
                     f"steps the operator sequences never occurred "
                     f"(max {max((n.op_sequence for c in m0.cells if c.n_steps > 4 for n in c.novelty), default=0)}).")
    rare = [c for c in m0.cells if c.seen and len(c.correct) < cfg.n_per_cell]
    for c in rare:
        lines.append(f"Only {len(c.correct)} seen {c.n_steps}-step problems among {c.n_candidates:,} candidates "
                     f"({short(m0.name)}).")
    return lines


def section_parts(out: Path, n_per_step: int, png: bool) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Run (cached) and write the novelty analysis's JSON and figures for `interp report`."""
    result = run(NoveltyConfig(n_per_cell=max(2, n_per_step // 2)), progress=False)
    write_json(Path(out) / "novelty.json", result.to_dict(), indent=None)
    paths = figures(result, out, png=png)
    return ("Where reasoning breaks: instance novelty vs complexity", tuple(summary_sentences(result)),
            tuple(p[0].name for p in paths.values()), "")


__all__ = ["figures", "section_parts", "summary_sentences"]
