"""Figures, sentences and report section of the routing analysis."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.routing.analysis import PairRouting, RouterOutcome, RoutingConfig, RoutingResult
from analyses.routing.common import short
from interp.plots import save_figure, style

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks import Task

LEAKY, CLEAN, STEER = "#E45756", "#4C78A8", "#54A24B"


def _ci(v: float, ci: tuple[float, float], pct: bool = True) -> str:
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.2f}")
    return f"{f(v)} [{f(ci[0])}, {f(ci[1])}]"


def _color(o: RouterOutcome) -> str:
    return STEER if not o.uses_tuned_tokens else (LEAKY if o.consults_tuned else CLEAN)


def figures(result: RoutingResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Gap recovered against share of tokens routed (one panel per pair), and the token distribution shift."""
    out_dir = Path(out_dir)
    pairs = result.pairs
    fig = make_subplots(rows=1, cols=len(pairs), subplot_titles=[f"{short(p.base)} -> {short(p.tuned)}" for p in pairs])
    for j, p in enumerate(pairs):
        for o in p.routers:
            if o.name in ("never", "always"):
                continue
            fig.add_trace(go.Scatter(
                x=[o.share_routed], y=[o.gap_recovered], mode="markers+text", text=[o.name], textposition="top center",
                marker={"size": 10, "color": _color(o)}, showlegend=False,
                error_y={"type": "data", "symmetric": False, "array": [max(0, o.gap_recovered_ci[1] - o.gap_recovered)],
                             "arrayminus": [max(0, o.gap_recovered - o.gap_recovered_ci[0])]},
                error_x={"type": "data", "symmetric": False, "array": [max(0, o.share_routed_ci[1] - o.share_routed)],
                             "arrayminus": [max(0, o.share_routed - o.share_routed_ci[0])]}), row=1, col=j + 1)
        fig.update_xaxes(type="log", title_text="share of tokens routed (log)", row=1, col=j + 1)
    for name, color in (("decides without the tuned model", CLEAN), ("consults the tuned model to decide", LEAKY),
                        ("steering vector, no tuned tokens", STEER)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker={"size": 10, "color": color}, name=name))
    style(fig, "Hybrid decoding: gap recovered = (hybrid - base) / (tuned - base), 95% paired bootstrap CIs",
          "", "gap recovered")
    fig.update_layout(width=max(760, 520 * len(pairs)), height=500)
    figs = {"routing_gap": fig}

    kinds = ("first", "format", "value", "all")
    fig = go.Figure()
    for p in pairs:
        for k in (1, 3):
            ys = [p.shift[kind][f"top{k}"] for kind in kinds]
            err = {"type": "data", "symmetric": False,
                       "array": [p.shift[kd][f"top{k}_ci"][1] - y for kd, y in zip(kinds, ys)],
                       "arrayminus": [y - p.shift[kd][f"top{k}_ci"][0] for kd, y in zip(kinds, ys)]}
            fig.add_trace(go.Bar(x=[f"{kd} (n={p.shift[kd]['n']})" if len(pairs) == 1 else kd for kd in kinds], y=ys,
                                 error_y=err, name=f"{short(p.tuned)}: base ranks it top-{k}"))
    style(fig, "Token distribution shift: the base's rank of the tuned model's greedy tokens", "tuned tokens",
          "share of positions")
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.05])
    figs["routing_shift"] = fig
    return {k: save_figure(f, out_dir / k, png=png) for k, f in figs.items()}


def pair_sentences(p: PairRouting) -> list[str]:
    b, t = p.router("never"), p.router("always")
    first = p.router("first")
    out = [(f"{short(p.base)} -> {short(p.tuned)}: greedy accuracy {_ci(b.accuracy, b.accuracy_ci)} for the base and "
           f"{_ci(t.accuracy, t.accuracy_ci)} for the tuned model over {len(b.correct)} problems.")]
    if abs(t.accuracy - b.accuracy) < 1e-9:
        return out + ["The two models are equally accurate here, so no gap is left to recover."]
    rnd = p.router("random@first")
    c = p.contrasts["first vs random@first"]
    out.append(f"Routing only the first completion token to {short(p.tuned)} (a position fixed in advance, no tuned "
               f"model needed to decide) recovers {_ci(first.gap_recovered, first.gap_recovered_ci)} of the gap while "
               f"routing {_ci(first.share_routed, first.share_routed_ci)} of tokens; a random router at that per-token "
               f"rate recovers {_ci(rnd.gap_recovered, rnd.gap_recovered_ci)} (accuracy difference "
               f"{_ci(c['accuracy_diff'], c['accuracy_diff_ci'], pct=False)}, paired).")
    clf = p.router("classifier")
    crnd = p.router("random@classifier")
    out.append(f"The leak-free classifier on the base's own layer-{p.classifier['layer']} residual stream (held-out "
               f"AUROC {p.classifier['auroc_held_out']:.3f} for 'the tuned model would write another token') recovers "
               f"{_ci(clf.gap_recovered, clf.gap_recovered_ci)} routing {_ci(clf.share_routed, clf.share_routed_ci)} "
               f"of tokens, against {_ci(crnd.gap_recovered, crnd.gap_recovered_ci)} for its random control.")
    d, kl, g = p.router("differ"), p.router("kl"), p.router("guardrail")
    out.append(f"Routers that consult the tuned model to decide: where greedy tokens differ "
               f"{_ci(d.gap_recovered, d.gap_recovered_ci)} at {_ci(d.share_routed, d.share_routed_ci)} of tokens "
               f"(its output equals the tuned model's); KL > {kl.params.get('threshold')} "
               f"{_ci(kl.gap_recovered, kl.gap_recovered_ci)} at {100 * kl.share_routed:.1f}%; the Venhoff-style "
               f"guardrail (top-{g.params.get('k')} base candidates, the tuned model picks) "
               f"{_ci(g.gap_recovered, g.gap_recovered_ci)} at {100 * g.share_routed:.1f}%.")
    if p.steering.get("skipped"):
        out.append(f"No steering variant: {p.steering['skipped']}.")
    elif p.steering:
        s = p.router("steer@first")
        out.append(f"Adding a base-space vector (tuned-CoT minus tuned-direct problems, layer {p.steering['layer']}, "
                   f"norm {p.steering['norm']:.2f}, scale {p.steering['scale']}) at the prompt's last position only, "
                   f"with no tuned tokens at all, recovers {_ci(s.gap_recovered, s.gap_recovered_ci)} "
                   f"(CoT rate {100 * s.cot_rate:.0f}% against {100 * b.cot_rate:.0f}% unsteered; training accuracy by "
                   f"scale, 0 unsteered: {', '.join(f'{k}: {v:.2f}' for k, v in p.steering['train_accuracy_by_scale'].items())}).")
    sh = p.shift
    top = ", ".join(f"'{x['token']}' ({x['not_top1']}/{x['count']})" for x in sh["shifted_tokens"][:3])
    out.append(f"Token shift over {short(p.tuned)}'s own generations: the base ranks the tuned token first at "
               f"{_ci(sh['all']['top1'], sh['all']['top1_ci'])} of {sh['n_positions']} positions and in its top 3 at "
               f"{_ci(sh['all']['top3'], sh['all']['top3_ci'])}; value tokens {_ci(sh['value']['top1'], sh['value']['top1_ci'])}, "
               f"format tokens {_ci(sh['format']['top1'], sh['format']['top1_ci'])}, the first completion token "
               f"{_ci(sh['first']['top1'], sh['first']['top1_ci'])}. Most often not the base's first choice: {top}.")
    return out


def summary_sentences(result: RoutingResult) -> list[str]:
    return [s for p in result.pairs for s in pair_sentences(p)]


def table_html(result: RoutingResult) -> str:
    rows = []
    for p in result.pairs:
        for o in p.routers:
            rows.append(f"<tr><td>{short(p.tuned)}</td><td>{o.name}</td><td>{'yes' if o.consults_tuned else 'no'}</td>"
                        f"<td>{_ci(o.accuracy, o.accuracy_ci)}</td><td>{_ci(o.gap_recovered, o.gap_recovered_ci)}</td>"
                        f"<td>{_ci(o.share_routed, o.share_routed_ci)}</td><td>{100 * o.cot_rate:.0f}%</td>"
                        f"<td>{o.mean_tokens:.1f}</td></tr>")
    head = ("<tr><th>tuned</th><th>router</th><th>consults tuned to decide</th><th>accuracy</th><th>gap recovered</th>"
            "<th>tokens routed</th><th>CoT rate</th><th>mean tokens</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def section_parts(out: Path, n_per_step: int, png: bool, config: RoutingConfig | None = None,
                  task: Task | None = None, models: Mapping[str, Model] | None = None) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Run (or reuse) the analysis on the zoo, or with `config` on its models and task (`task` and `models`
    already loaded, e.g. on a GPU); title, sentences, figure files and table for the report."""
    import dataclasses

    from analyses.routing.analysis import run_cached
    from interp.io import write_json

    cfg = config or dataclasses.replace(RoutingConfig(), n_per_step=min(n_per_step, 100))
    result = run_cached(cfg, task, models)
    write_json(Path(out) / "routing.json", result.to_dict())
    paths = figures(result, out, png=png)
    return ("When, not how: hybrid decoding of base and post-trained models", tuple(summary_sentences(result)),
            tuple(p[0].name for p in paths.values()), table_html(result))


__all__ = ["figures", "pair_sentences", "section_parts", "summary_sentences", "table_html"]
