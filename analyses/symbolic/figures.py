"""Figures, sentences and report section of the semantics-vs-symbols analysis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.shift.analysis import Score
from analyses.symbolic.analysis import (
    CONTRASTS,
    Contrast,
    SymbolicConfig,
    SymbolicResult,
    run,
)
from interp.io import write_json
from interp.plots import color_for, save_figure, short_name, style

short = short_name  # one display name for every figure (interp.plots)


def _err(scores: list[Score] | list[Contrast]) -> dict:
    return {"type": "data", "symmetric": False, "array": [max(0.0, s.ci[1] - s.value) if np.isfinite(s.value) else 0
                                                     for s in scores],
                "arrayminus": [max(0.0, s.value - s.ci[0]) if np.isfinite(s.value) else 0 for s in scores]}


def figures(result: SymbolicResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Accuracy per variant and member; the paired contrasts per member."""
    out_dir = Path(out_dir)
    nb = result.config.n_boot
    variants = list(result.config.variants)
    figs: dict[str, go.Figure] = {}
    fig = go.Figure()
    for m in result.members:
        sc = [m.get(v).scores(nb)["accuracy"] for v in variants]
        fig.add_trace(go.Bar(x=variants, y=[s.value for s in sc], error_y=_err(sc), name=short(m.name),
                             marker_color=color_for(m.name) or "#54A24B"))
    style(fig, "Accuracy with familiar meaning kept, stripped or contradicted (95% CIs)", "", "accuracy")
    fig.update_layout(barmode="group", width=1100, height=480)
    fig.update_yaxes(range=[0, 1.05])
    figs["symbolic_accuracy"] = fig

    names = [c[0] for c in CONTRASTS]
    fig = make_subplots(rows=1, cols=1)
    for j, m in enumerate(result.members):
        cs = [m.contrast(n) for n in names if any(c.name == n for c in m.contrasts)]
        dx = (j - len(result.members) / 2) * 0.07
        fig.add_trace(go.Scatter(x=[i + dx for i in range(len(cs))], y=[c.value for c in cs], error_y=_err(cs),
                                 mode="markers", name=short(m.name),
                                 marker={"color": color_for(m.name) or "#54A24B", "size": 8}))
    fig.add_hline(y=0, line_dash="dot")
    style(fig, "Paired accuracy costs (same problems; > 0: the variant hurts; 95% CIs)", "", "accuracy difference")
    fig.update_layout(width=1100, height=460)
    fig.update_xaxes(tickvals=list(range(len(names))), ticktext=[n.split(":")[0] + ":<br>" + n.split(":")[1]
                                                                  for n in names])
    figs["symbolic_contrasts"] = fig
    return {name: save_figure(f, out_dir / name, png=png) for name, f in figs.items()}


def _pp(c: Contrast) -> str:
    return f"{100 * c.value:+.0f} points [{100 * c.ci[0]:+.0f}, {100 * c.ci[1]:+.0f}]"


def summary_sentences(result: SymbolicResult) -> list[str]:
    """Per member: accuracy under each variant, the contradiction and symbol costs, and the familiar-meaning rate."""
    cfg = result.config
    nb = cfg.n_boot
    members = "; ".join(f"'{r.name}' continued sft for {r.steps} steps (lr {r.lr:g}) with {100 * r.def_share:.0f}% "
                        f"of problems written with definitions" for r in cfg.recipes)
    held = (f" (symbols {' '.join(cfg.recipes[0].train_symbols)} or familiar operators, random meanings; never "
            f"'+ = -' or '- = +', never {' '.join(cfg.recipes[0].held_out_symbols)})" if cfg.recipes else "")
    lines = [
        (f"{cfg.n_per_step} problems per step count ({', '.join(map(str, cfg.steps))} steps, each with a + or -), "
        f"shown in {len(cfg.variants)} variants built from the organism's own words (its word-level tokenizer has no "
        f"'means', so a definition is a clause `x = +` after `Q :`; '+ = - ; - = + ;' swaps the two). What could not "
        f"be tested: symbols outside the vocabulary (every 'unseen' symbol is an organism word the zoo never saw in "
        f"that role: n u v x y z are variable letters it never saw at all), and definitions in words. The zoo never "
        f"saw a definition clause; {members}{held}.")]
    for m in result.members:
        acc = {v: m.get(v).scores(nb)["accuracy"] for v in cfg.variants}
        parts = ", ".join(f"{v} {acc[v].fmt()}" for v in cfg.variants)
        con = "; ".join(f"{c.name.split(':')[0]} {_pp(c)}" for c in m.contrasts)
        lines.append(f"{short(m.name)}: accuracy {parts}. Paired costs: {con}. Under the swap, among problems whose "
                     f"answer the swap changes, {m.familiar_answer_rate.fmt()} of answers are the familiar-meaning "
                     f"answer.")
    try:
        s = result.member("sft")
    except KeyError:
        return lines
    for path in result.definitions_members:
        d = result.member(Path(path).name)
        name = "contradiction cost: identity - swapped definitions"
        acc = {v: d.get(v).scores(nb)["accuracy"] for v in cfg.variants}
        sacc = {v: s.get(v).scores(nb)["accuracy"] for v in cfg.variants}
        trained = "trained symbols defined (x y z)"
        lines.append(f"Fair test, {short(d.name)} against sft: trained-symbol definitions (its own training "
                     f"distribution) {acc[trained].fmt()} vs {sacc[trained].fmt()}; identity definitions "
                     f"{acc['identity definitions'].fmt()} vs {sacc['identity definitions'].fmt()}; contradiction "
                     f"cost {_pp(d.contrast(name))} vs {_pp(s.contrast(name))}; familiar-meaning answers under the "
                     f"swap {d.familiar_answer_rate.fmt()} vs {s.familiar_answer_rate.fmt()}.")
    return lines


def section_parts(out: Path, n_per_step: int, png: bool) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Run (cached) and write the symbolic analysis's JSON and figures for `interp report`."""
    result = run(SymbolicConfig(n_per_step=max(2, n_per_step // 2)), progress=False)
    write_json(Path(out) / "symbolic.json", result.to_dict(), indent=None)
    paths = figures(result, out, png=png)
    return ("Where reasoning breaks: semantics vs symbols", tuple(summary_sentences(result)),
            tuple(p[0].name for p in paths.values()), "")


__all__ = ["figures", "section_parts", "summary_sentences"]
