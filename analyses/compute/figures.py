"""Figures, sentences and report section of the compute-matched curves."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.compute.analysis import ComputeConfig, ComputeResult, ModelCompute, Point
from analyses.routing.common import short
from interp.plots import color_for, save_figure, style

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks import Task

LABELS = {"majority": "majority vote", "best_logprob": "best-of-k, own mean log-prob",
          "best_oracle": "best-of-k, oracle (pass@k)", "chain": "one forced chain cut at a budget",
          "cut_forced": "chain cut at a budget, answer forced", "extend": "chain extended k times",
          "extend_answer": "chain extended k times, its answer alone"}
DASH = {"majority": "solid", "best_logprob": "dash", "best_oracle": "dot", "chain": "dashdot", "cut_forced": "dashdot",
        "extend": "solid", "extend_answer": "dot"}


def _err(ps: list[Point]) -> dict:
    return {"type": "data", "symmetric": False, "array": [max(0.0, p.accuracy_ci[1] - p.accuracy) for p in ps],
            "arrayminus": [max(0.0, p.accuracy - p.accuracy_ci[0]) for p in ps]}


def _pct(p: Point) -> str:
    return f"{100 * p.accuracy:.0f}% [{100 * p.accuracy_ci[0]:.0f}%, {100 * p.accuracy_ci[1]:.0f}%]"


def _trace(m: ModelCompute, method: str, show: bool, name: str | None = None) -> go.Scatter:
    ps = sorted((p for p in m.points if p.method == method), key=lambda p: p.tokens)
    return go.Scatter(x=[p.tokens for p in ps], y=[p.accuracy for p in ps], error_y=_err(ps), mode="lines+markers",
                      name=name or f"{short(m.name)} {LABELS[method]}", legendgroup=m.name, showlegend=show,
                      text=[f"k={p.k}" for p in ps], line={"color": color_for(m.name), "dash": DASH[method]},
                      marker={"symbol": "diamond" if method.startswith("extend") else "circle"})


def figures(result: ComputeResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Accuracy vs tokens per problem (sampling, for every model; depth vs width for the bases) and accuracy vs
    parameters for the bases with the post-trained models' greedy accuracy as lines; budget forcing (a chain
    cut with its answer forced, a chain extended k times) in a third panel when it was measured."""
    out_dir = Path(out_dir)
    cfg = result.config
    forced = [m for m in result.models if m.forcing is not None]
    titles = ["width: majority vote over k samples (solid), verifier-free best-of-k (dash)",
              "bases: width (majority) vs depth (one chain)"]
    if forced:
        titles.append("budget forcing: cut, answer forced (dashdot); extended (solid)")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    for m in result.models:
        fig.add_trace(_trace(m, "majority", True, short(m.name)), row=1, col=1)
        fig.add_trace(_trace(m, "best_logprob", False), row=1, col=1)
        g = m.point("greedy")
        fig.add_trace(go.Scatter(x=[g.tokens], y=[g.accuracy], mode="markers", marker={"symbol": "star", "size": 12,
                                 "color": color_for(m.name)}, legendgroup=m.name, showlegend=False,
                                 name=f"{short(m.name)} greedy"), row=1, col=1)
    for m in result.models:
        if m.name in cfg.bases:
            fig.add_trace(_trace(m, "majority", False), row=1, col=2)
            fig.add_trace(_trace(m, "chain", False), row=1, col=2)
    for m in forced:
        fig.add_trace(_trace(m, "cut_forced", False), row=1, col=3)
        fig.add_trace(_trace(m, "extend", False), row=1, col=3)
        fig.add_trace(_trace(m, "extend_answer", False), row=1, col=3)
    ref = result.model(cfg.reference).point("greedy")
    for col in range(1, len(titles) + 1):
        fig.add_hline(y=ref.accuracy, line_dash="dot", line_color="gray", row=1, col=col,
                      annotation_text=f"{short(cfg.reference)} greedy", annotation_position="bottom right")
        fig.update_xaxes(type="log", title_text="generated tokens per problem (log)", row=1, col=col)
    note = "; forcing: diamonds = k extensions, dotted = their answer alone" if forced else ""
    style(fig, f"Does inference compute let a base catch up? (T={cfg.temperature}, stars: greedy; 95% CIs{note})", "",
          "accuracy")
    fig.update_layout(width=550 * len(titles), height=500)
    figs = {"compute_curves": fig}

    fig = go.Figure()
    bases = sorted((result.model(n) for n in cfg.bases if n in {m.name for m in result.models}), key=lambda m: m.n_params)
    k = cfg.n_samples
    for label, get in (("greedy", lambda m: m.point("greedy")), (f"majority@{k}", lambda m: m.point("majority", k)),
                       (f"best-of-{k}, own log-prob", lambda m: m.point("best_logprob", k)),
                       (f"best-of-{k}, oracle", lambda m: m.point("best_oracle", k)),
                       ("forced chain (full)", lambda m: m.point("chain", max(cfg.budgets)))):
        ps = [get(m) for m in bases]
        fig.add_trace(go.Scatter(x=[m.n_params for m in bases], y=[p.accuracy for p in ps], error_y=_err(ps),
                                 mode="lines+markers", name=label))
    for m in result.models:
        if m.name not in cfg.bases:
            fig.add_hline(y=m.point("greedy").accuracy, line_dash="dot", line_color=color_for(m.name),
                          annotation_text=f"{short(m.name)} greedy ({m.n_params:,} params)")
    style(fig, "Scale vs sampling vs post-training", "parameters (log)", "accuracy")
    fig.update_xaxes(type="log")
    figs["compute_scale"] = fig
    return {k: save_figure(f, out_dir / k, png=png) for k, f in figs.items()}


def summary_sentences(result: ComputeResult) -> list[str]:
    cfg = result.config
    k = cfg.n_samples
    ref = result.model(cfg.reference)
    rg = ref.point("greedy")
    out = [(f"Over {len(result.n_steps)} problems, {short(ref.name)} answers {_pct(rg)} greedily with "
           f"{rg.tokens:.1f} tokens per problem; samples at T={cfg.temperature}, k up to {k}.")]
    for name in cfg.bases:
        try:
            m = result.model(name)
        except KeyError:
            continue
        g, maj, blp, orc = (m.point("greedy"), m.point("majority", k), m.point("best_logprob", k),
                            m.point("best_oracle", k))
        chain = m.point("chain", max(cfg.budgets))
        c = result.comparisons
        dm = c[f"{name} majority@{k} - {cfg.reference} greedy"]
        db = c[f"{name} best_logprob@{k} - {cfg.reference} greedy"]
        out.append(f"{short(name)} ({m.n_params:,} params): greedy {_pct(g)} at {g.tokens:.1f} tokens; majority@{k} "
                   f"{_pct(maj)} and verifier-free best-of-{k} {_pct(blp)} at {maj.tokens:.0f} tokens "
                   f"(vs {short(cfg.reference)} greedy: {dm['diff']:+.2f} [{dm['diff_ci'][0]:+.2f}, "
                   f"{dm['diff_ci'][1]:+.2f}] and {db['diff']:+.2f} [{db['diff_ci'][0]:+.2f}, {db['diff_ci'][1]:+.2f}]); "
                   f"oracle best-of-{k} {_pct(orc)}; one forced chain {_pct(chain)} at {chain.tokens:.1f} tokens.")
        wd = [(key, v) for key, v in c.items() if key.startswith(f"{name} width")]
        if wd:
            matched = min(wd, key=lambda kv: abs(kv[1]["width_tokens"] - kv[1]["depth_tokens"]))
            parts = [f"{key.split(' ', 1)[1]} = {v['diff']:+.2f} [{v['diff_ci'][0]:+.2f}, {v['diff_ci'][1]:+.2f}] "
                     f"({v['width_tokens']:.0f} vs {v['depth_tokens']:.0f} tokens per problem)"
                     for key, v in dict([matched, wd[-1]]).items()]
            out.append(f"Width vs depth for {short(name)} (accuracy difference, paired): closest token match "
                       + "; most samples ".join(parts) + ".")
    for m in result.models:
        if m.name not in cfg.bases and m.name != cfg.reference:
            g = m.point("greedy")
            out.append(f"{short(m.name)}: greedy {_pct(g)} at {g.tokens:.1f} tokens, majority@{k} "
                       f"{_pct(m.point('majority', k))}.")
    return out + forcing_sentences(result)


def forcing_sentences(result: ComputeResult) -> list[str]:
    """Budget forcing: each forcing model's chain extended k times (from its own end, paired over problems), and
    cut at each budget with the answer forced (next to the cut as written)."""
    out = []
    for m in result.models:
        f = m.forcing
        if f is None:
            continue
        p0 = m.point("extend", 0)
        parts = []
        for key in f.extend_correct:
            if key == "0":
                continue
            pk, c = m.point("extend", int(key)), result.comparisons[f"{m.name} extend@{key} - extend@0"]
            pa = m.point("extend_answer", int(key))
            parts.append(f"by {key}: {_pct(pk)} at {pk.tokens:.1f} tokens ({c['diff']:+.2f} [{c['diff_ci'][0]:+.2f}, "
                         f"{c['diff_ci'][1]:+.2f}], {c['tokens_diff']:+.1f} [{c['tokens_diff_ci'][0]:+.1f}, "
                         f"{c['tokens_diff_ci'][1]:+.1f}] tokens; {100 * c['valid']:.0f}% of extended chains parse; "
                         f"{100 * c['extended_fully']:.0f}% reached all {key} extension{'s' * (key != '1')}; the "
                         f"answer alone {_pct(pa)}, {c['answer_diff']:+.2f} [{c['answer_diff_ci'][0]:+.2f}, "
                         f"{c['answer_diff_ci'][1]:+.2f}])")
        out.append(f"Budget forcing, extension ({short(m.name)}): its greedy forced chain, {f.continuation!r} put in "
                   f"place of the end marker {f.chain_end!r} each time the model writes it, then left to close: from "
                   f"{_pct(p0)} at {p0.tokens:.1f} tokens per problem (no extension) to " + "; ".join(parts)
                   + ". Differences are paired over problems; 'the answer alone' grades the answer written after the "
                   "extended chain in place of the unextended chain's answer.")
        cuts = []
        for b in f.cut_correct:
            pc, pw = m.point("cut_forced", int(b)), m.point("chain", int(b))
            valid = 100 * sum(f.cut_valid[b]) / len(f.cut_valid[b])
            cuts.append(f"{b}: {_pct(pc)} at {pc.tokens:.1f} tokens ({valid:.0f}% parse; as cut {_pct(pw)})")
        out.append(f"Budget forcing, cut ({short(m.name)}): the chain cut at a budget, {f.chain_end!r} appended and "
                   "the answer forced, by budget: " + "; ".join(cuts) + ".")
    return out


def section_parts(out: Path, n_per_step: int, png: bool, config: ComputeConfig | None = None,
                  task: Task | None = None, models: Mapping[str, Model] | None = None) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Run (or reuse) the analysis on the zoo, or with `config` on its models and task (`task` and `models`
    already loaded, e.g. on a GPU); title, sentences, figure files for the report."""
    import dataclasses

    from analyses.compute.analysis import run_cached
    from interp.io import write_json

    cfg = config or dataclasses.replace(ComputeConfig(), n_per_step=min(n_per_step, 50))
    result = run_cached(cfg, task, models)
    write_json(Path(out) / "compute.json", result.to_dict())
    paths = figures(result, out, png=png)
    return ("Compute-matched curves: sampling, budget and scale against post-training", tuple(summary_sentences(result)),
            tuple(p[0].name for p in paths.values()), "")


__all__ = ["figures", "forcing_sentences", "section_parts", "summary_sentences"]
