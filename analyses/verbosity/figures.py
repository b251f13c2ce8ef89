"""Figures, sentences and report sections of the verbosity and reasoning-direction analyses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.verbosity.analysis import VerbosityResult
from analyses.verbosity.common import Cell
from analyses.verbosity.reasoning import ReasoningResult
from interp.plots import save_figure, style

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks.base import Task


def _err(cells: list[Cell], metric: str) -> dict:
    vals = [getattr(c, metric) for c in cells]
    cis = [getattr(c, f"{metric}_ci") for c in cells]
    return {"type": "data", "symmetric": False, "array": [hi - v for (lo, hi), v in zip(cis, vals)],
                "arrayminus": [v - lo for (lo, hi), v in zip(cis, vals)]}


_COLORS: dict[str, str] = {}


def _color(name: str) -> str:
    """One colour per series name, the same in every panel."""
    from plotly.colors import qualitative

    return _COLORS.setdefault(name, qualitative.Plotly[len(_COLORS) % len(qualitative.Plotly)])


def _layer(hook: str) -> int:
    return int(hook.split(".")[1])


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def verbosity_figures(r: VerbosityResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Length and accuracy vs signed gamma and vs layer (validation), test conditions, direction AUROC per layer."""
    out_dir = Path(out_dir)
    figs: dict[str, go.Figure] = {}
    ref = r.chosen or r.aggressive
    base = r.val_unsteered
    if ref is not None:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("mean CoT tokens", "accuracy"))
        for v in r.config.variants:
            for layer_hook in sorted({s.hook for s in r.sweep if s.variant == v}, key=_layer):
                cells = sorted((s for s in r.sweep if s.variant == v and s.hook == layer_hook), key=lambda s: s.gamma)
                xs = [0.0] + [s.gamma for s in cells]
                order = sorted(range(len(xs)), key=lambda i: xs[i])
                toks = [base.mean_tokens] + [s.cell.mean_tokens for s in cells]
                accs = [base.accuracy] + [s.cell.accuracy for s in cells]
                name = f"{v}, layer {_layer(layer_hook)}"
                show = v == ref.variant
                for col, ys in ((1, toks), (2, accs)):
                    fig.add_trace(go.Scatter(x=[xs[i] for i in order], y=[ys[i] for i in order], mode="lines+markers",
                                             name=name, legendgroup=name, showlegend=col == 1,
                                             line={"color": _color(name)},
                                             visible=True if show else "legendonly"), row=1, col=col)
        style(fig, f"Verbosity steering of {r.config.model.removeprefix('organism/')} (validation): "
                   f"negative gamma subtracts verbose - concise", "signed gamma", "")
        fig.update_layout(width=1000)
        figs["verbosity_vs_gamma"] = fig

        fig = make_subplots(rows=1, cols=2, subplot_titles=("mean CoT tokens", "accuracy"))
        for g in sorted({s.gamma for s in r.sweep if s.variant == ref.variant and s.gamma < 0}, reverse=True):
            cells = sorted((s for s in r.sweep if s.variant == ref.variant and s.gamma == g), key=lambda s: _layer(s.hook))
            for col, m in ((1, "mean_tokens"), (2, "accuracy")):
                fig.add_trace(go.Scatter(x=[_layer(s.hook) for s in cells], y=[getattr(s.cell, m) for s in cells],
                                         mode="lines+markers", name=f"gamma {g:+g}", legendgroup=str(g),
                                         line={"color": _color(f"gamma {g:+g}")}, showlegend=col == 1), row=1, col=col)
        style(fig, f"Subtracting the {ref.variant} direction, by layer (validation; unsteered "
                   f"{base.mean_tokens:.1f} tokens, accuracy {base.accuracy:.2f})", "layer (resid_post)", "")
        fig.update_layout(width=1000)
        fig.update_xaxes(dtick=1)
        figs["verbosity_vs_layer"] = fig

    names = list(r.test)
    cells = [r.test[k] for k in names]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean CoT tokens (95% CI)", "accuracy (95% CI)"))
    fig.add_trace(go.Bar(x=names, y=[c.mean_tokens for c in cells], error_y=_err(cells, "mean_tokens"),
                         showlegend=False, marker_color="#4C78A8"), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[c.accuracy for c in cells], error_y=_err(cells, "accuracy"),
                         showlegend=False, marker_color="#E45756"), row=1, col=2)
    style(fig, f"Test split: steered vs baselines ({r.test['unsteered'].n} problems)", "", "")
    fig.update_layout(width=1100, height=520)
    figs["verbosity_test"] = fig

    fig = go.Figure()
    for key, d in r.directions.items():
        hooks = d["hooks"]
        fig.add_trace(go.Scatter(x=[_layer(h["hook"]) for h in hooks], y=[h["auroc_mean_diff"] for h in hooks],
                                 mode="lines+markers", name=key.removeprefix("organism/")))
    first = next(iter(r.directions.values()))["hooks"]
    fig.add_trace(go.Scatter(x=[_layer(h["hook"]) for h in first], y=[h["auroc_random"] for h in first],
                             mode="lines", line={"dash": "dot", "color": "#999"}, name="random direction (mean)"))
    style(fig, "Held-out separation of verbose vs concise texts by the direction", "layer (resid_post)",
          "projection AUROC")
    fig.update_xaxes(dtick=1)
    figs["verbosity_auroc"] = fig
    return {k: save_figure(f, out_dir / k, png=png) for k, f in figs.items()}


def verbosity_sentences(r: VerbosityResult) -> list[str]:
    t, red = r.test, r.reduction
    u = t["unsteered"]
    acc = lambda c: f"{c.accuracy:.2f} [{c.accuracy_ci[0]:.2f}, {c.accuracy_ci[1]:.2f}]"
    tok = lambda c: f"{c.mean_tokens:.1f} [{c.mean_tokens_ci[0]:.1f}, {c.mean_tokens_ci[1]:.1f}]"
    rd = lambda k: (f"{_pct(red[k]['reduction'])} [{_pct(red[k]['reduction_ci'][0])}, "
                    f"{_pct(red[k]['reduction_ci'][1])}]")
    m = r.config.model.removeprefix("organism/")
    bn = r.config.base.removeprefix("organism/")
    steps = r.config.steps
    span = f", {min(steps)}-{max(steps)} steps" if steps else ""
    lines = [f"Unsteered {m} on the test split ({u.n} problems{span}): {tok(u)} CoT tokens, accuracy {acc(u)}."]
    p = t.get("prompt: concise first step")
    lines += [] if p is None else [
        f"Prompting the concise format (its first step forced, with the model's own best digit): {tok(p)} "
                 f"tokens ({rd('prompt: concise first step')} fewer), accuracy {acc(p)}"
                 + (f": the model's concise chains are less accurate than its verbose ones ({p.accuracy:.2f} vs "
                    f"{u.accuracy:.2f}), which bounds what any compression to that format keeps."
                    if p.accuracy_ci[1] < u.accuracy else
                    f": within its interval of unsteered accuracy ({u.accuracy:.2f}), so compression to that format can keep accuracy.")]
    tf = {fmt: x for fmt, x in r.teacher_forced.items() if "step_accuracy" in x}
    if tf:
        lines.append("Teacher-forced on a correct chain (test problems), the most likely digit is each step's value for "
                     + "; ".join(f"{_pct(t['step_accuracy'])} [{_pct(t['step_accuracy_ci'][0])}, "
                                 f"{_pct(t['step_accuracy_ci'][1])}] of {fmt} steps (every step of a problem: "
                                 f"{_pct(t['all_steps'])})" for fmt, t in tf.items()) + ".")
    for label in ("chosen", "aggressive"):
        pt = getattr(r, label)
        if pt is None:
            lines.append(f"No {label} point: no validation cell met its rule "
                         f"(accuracy within {r.config.accuracy_tolerance:.2f} and KL <= {r.config.kl_bound})."
                         if label == "chosen" else "No aggressive point (no cell under the KL bound shortened the CoT).")
            continue
        c = t[label]
        rule = (f"largest reduction with validation accuracy within {r.config.accuracy_tolerance:.2f} and KL <= "
                f"{r.config.kl_bound}" if label == "chosen" else
                f"largest reduction under the KL bound with <= {_pct(r.config.max_invalid_aggressive)} unparseable")
        rnd, bs = t[f"{label}: random direction"], t[f"{label}: {bn} direction"]
        lines.append(f"{label.capitalize()} point ({rule}): {pt.variant} direction at layer {_layer(pt.hook)}, "
                     f"gamma {pt.gamma:+g} (KL {c.kl:.3f}): {tok(c)} tokens, {rd(label)} fewer, accuracy {acc(c)} "
                     f"(change {red[label]['accuracy_change']:+.2f} [{red[label]['accuracy_change_ci'][0]:+.2f}, "
                     f"{red[label]['accuracy_change_ci'][1]:+.2f}]); random directions of equal norm: {tok(rnd)} tokens, "
                     f"accuracy {acc(rnd)}; the same direction read from {bn}: {tok(bs)} tokens "
                     f"({rd(label + f': {bn} direction')} fewer), accuracy {acc(bs)}.")
        if f"{label}_wall_clock_speedup" in r.speed:
            lines.append(f"Speed ({label}, batched greedy generation of the test split): "
                         f"{r.speed[f'{label}_wall_clock_speedup']:.2f}x wall clock"
                         + (f" ({r.speed[f'{label}_cpu_speedup']:.2f}x in process CPU time)"
                            if f"{label}_cpu_speedup" in r.speed else "") + ", "
                         f"{r.speed[f'{label}_tokens_per_s']:.0f} vs {r.speed['unsteered_tokens_per_s']:.0f} "
                         f"generated tokens/s"
                         + (f"; one problem at a time ({r.speed['latency_problems']} problems), "
                            f"{r.speed[f'{label}_per_problem_speedup']:.2f}x ({1000 * r.speed[f'{label}_seconds_per_problem']:.0f} "
                            f"vs {1000 * r.speed['unsteered_seconds_per_problem']:.0f} ms per problem; "
                            f"{r.speed.get(f'{label}_per_problem_cpu_speedup', float('nan')):.2f}x CPU)"
                            if f"{label}_per_problem_speedup" in r.speed else "") + ".")
    pt = r.aggressive or r.chosen
    if pt is not None:
        same = {s.gamma: s.cell for s in r.sweep if s.variant == pt.variant and s.hook == pt.hook}
        g = abs(pt.gamma)
        if -g in same and g in same:
            lines.append(f"Sign check (validation, {pt.variant} direction, layer {_layer(pt.hook)}, |gamma| = {g:g}): "
                         f"subtracting verbose - concise gives {same[-g].mean_tokens:.1f} mean tokens "
                         f"({same[-g].formats.get('concise', 0)} of {same[-g].n} concise), adding it "
                         f"{same[g].mean_tokens:.1f} ({same[g].formats.get('concise', 0)} concise), unsteered "
                         f"{r.val_unsteered.mean_tokens:.1f}: the compressing sign is the one ASC uses.")
    base_tokens = r.val_unsteered.mean_tokens
    for v in r.config.variants:
        ok = [s for s in r.sweep if s.variant == v and s.cell.kl is not None and s.cell.kl <= r.config.kl_bound
              and s.cell.formats.get("invalid", 0) / s.cell.n <= r.config.max_invalid_aggressive]
        if ok:
            b = min(ok, key=lambda s: s.cell.mean_tokens)
            lines.append(f"Best validation cell of the {v} direction (KL bound, <= "
                         f"{_pct(r.config.max_invalid_aggressive)} unparseable): layer {_layer(b.hook)}, gamma "
                         f"{b.gamma:+g}, {_pct(1 - b.cell.mean_tokens / base_tokens)} fewer tokens, accuracy "
                         f"{b.cell.accuracy:.2f}.")
    cos = "; ".join(f"{v}: " + ", ".join(f"layer {_layer(h)} {c:.2f}" for h, c in sorted(d.items(), key=lambda x: _layer(x[0])))
                    for v, d in r.base_cosines.items())
    lines.append(f"Cosine between the directions read from {m} and from {bn} per layer ({cos}).")
    return lines


def reasoning_figures(r: ReasoningResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    out_dir = Path(out_dir)
    figs: dict[str, go.Figure] = {}
    bn, tn = r.config.base.removeprefix("organism/"), r.config.tuned.removeprefix("organism/")
    modes = [m for m in ("add", "clamp") if any(s.mode == m for s in r.sweep)]
    titles = [f"{m}: {t}" for m in modes for t in ("accuracy (3-4 steps)", "CoT rate")]
    fig = make_subplots(rows=len(modes), cols=2, subplot_titles=titles, vertical_spacing=0.14)
    for row, mode in enumerate(modes, 1):
        for w in r.config.wheres:
            for hook in sorted({s.hook for s in r.sweep}, key=_layer):
                cells = sorted((s for s in r.sweep if s.mode == mode and s.where == w and s.hook == hook),
                               key=lambda s: s.gamma)
                if not cells:
                    continue
                name = f"{mode}, {w}, layer {_layer(hook)}"
                for col, m in ((1, "accuracy"), (2, "cot_rate")):
                    pts = [(s.gamma, getattr(s.cell, m)) for s in cells]
                    if mode == "add":
                        pts = sorted(pts + [(0.0, getattr(r.val_unsteered, m))])
                    fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                             name=name, legendgroup=name, showlegend=col == 1,
                                             line={"color": _color(name.split(", ", 1)[1])},
                                             visible=True if w == r.chosen.where else "legendonly"), row=row, col=col)
            fig.add_hline(y=r.val_unsteered.accuracy, line_dash="dot", line_color="#999", row=row, col=1)
        fig.update_xaxes(title_text="gamma" if mode == "add" else "k (CoT-mode mean + k std)", row=row)
    style(fig, f"{bn} steered along CoT-mode - direct-mode at the prompt's last token (validation; dotted: unsteered)",
          "", "")
    fig.update_layout(width=1000, height=380 * len(modes) + 80)
    figs["reasoning_direction_sweep"] = fig
    names = list(r.test)
    cells = [r.test[k] for k in names]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy (95% CI)", "CoT rate (95% CI)"))
    fig.add_trace(go.Bar(x=names, y=[c.accuracy for c in cells], error_y=_err(cells, "accuracy"), showlegend=False,
                         marker_color="#4C78A8"), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[c.cot_rate for c in cells], error_y=_err(cells, "cot_rate"), showlegend=False,
                         marker_color="#E45756"), row=1, col=2)
    style(fig, f"Reasoning-mode direction on 3-4-step problems (test, {r.test[f'{tn} unsteered'].n} problems)", "", "")
    fig.update_layout(width=1100, height=520)
    figs["reasoning_direction_test"] = fig
    return {k: save_figure(f, out_dir / k, png=png) for k, f in figs.items()}


def reasoning_sentences(r: ReasoningResult) -> list[str]:
    t, g, c = r.test, r.gap, r.chosen
    bn, tn = r.config.base.removeprefix("organism/"), r.config.tuned.removeprefix("organism/")
    f = lambda k: (f"accuracy {t[k].accuracy:.2f} [{t[k].accuracy_ci[0]:.2f}, {t[k].accuracy_ci[1]:.2f}], "
                   f"CoT rate {t[k].cot_rate:.2f}")
    gr = lambda k: f"{_pct(g[k]['gap_recovered'])} [{_pct(g[k]['gap_recovered_ci'][0])}, {_pct(g[k]['gap_recovered_ci'][1])}]"
    rand = [k for k in g if k.startswith(f"{bn} + random direction") and "(best add)" not in k]
    rand_add = [k for k in g if k.startswith(f"{bn} + random direction (best add)")]
    steps = f"{', '.join(map(str, r.config.train_steps))}-step problems" if r.config.train_steps else "problems"
    aurocs = (", ".join(f"{h['auroc_mean_diff']:.2f}" for h in r.directions["hooks"])
              + f" (random directions {r.directions['hooks'][0]['auroc_random']:.2f})")
    if r.contrast == "forced":
        first = (f"The direction (forced contrast, not the model's own choice): {bn} chose a chain of thought on "
                 f"{round(r.train_cot_rate * r.n_cot)} of its {r.n_cot} training prompts ({steps}; fewer than "
                 f"{r.config.min_per_mode} of one kind), so the contrast is the same {r.n_cot} prompts with thinking "
                 f"forced (the task's chain-of-thought prefix) vs a direct answer forced (its most likely candidate "
                 f"answer), difference of means at the first token where the two differ; held-out AUROC per layer "
                 f"{aurocs}.")
    else:
        first = (f"The direction (natural contrast, the model's own choice): {r.n_cot} CoT-mode vs {r.n_direct} "
                 f"direct-mode prompts of {bn} (its greedy choice, CoT rate {r.train_cot_rate:.2f} on {steps}), "
                 f"difference of means at the prompt's last token; held-out AUROC per layer {aurocs}.")
    return [
        first,
        "Chosen on validation (highest accuracy over layer, position and gamma, both modes): "
        + (f"add gamma {c.gamma:+g} x the direction" if c.mode == "add" else
           f"clamp the component to the CoT-mode mean projection {c.gamma:+g} std")
        + f" at layer {_layer(c.hook)}, {c.where} position(s) (validation accuracy {c.cell.accuracy:.2f}, CoT rate "
        f"{c.cell.cot_rate:.2f}; unsteered {r.val_unsteered.accuracy:.2f}, {r.val_unsteered.cot_rate:.2f}).",
        (f"Test, 3-4-step problems: {bn} {f(f'{bn} unsteered')}; + reasoning direction {f(f'{bn} + reasoning direction')}; "
        f"+ random directions ({'equal norm' if c.mode == 'add' else 'clamped the same way'}) {f(f'{bn} + random direction')}; {tn} {f(f'{tn} unsteered')}; {bn} forced "
        f"into a CoT {f(f'{bn} forced CoT')}."),
        f"Fraction of the {bn} -> {tn} accuracy gap recovered: {gr(f'{bn} + reasoning direction')} by the direction, "
        + ", ".join(gr(k) for k in rand) + " by the random directions; steering touched "
        f"{r.tokens_steered['positions_per_problem']:.0f} position(s) per problem, {_pct(r.tokens_steered['of_prompt_and_completion'])} "
        f"of prompt + completion tokens ({_pct(r.tokens_steered['of_generated'])} of generated tokens).",
    ] + ([
        f"Adding a constant multiple instead (the best add cell on validation: layer {_layer(r.best_add.hook)}, gamma "
        f"{r.best_add.gamma:+g}, {r.best_add.where} position(s)) on the same test problems: "
        f"{f(f'{bn} + reasoning direction (best add)')}, gap recovered {gr(f'{bn} + reasoning direction (best add)')}; "
        f"random directions of equal norm {f(f'{bn} + random direction (best add)')}, gap recovered "
        + ", ".join(gr(k) for k in rand_add) + "."] if r.best_add is not None else [])


def verbosity_section_parts(out: Path, n_per_step: int, png: bool, base: Model | None = None,
                            tuned: Model | None = None, task: Task | None = None, max_new_tokens: int | None = None
                            ) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Run (or read from the cache) ASC on the zoo's sft, or on `tuned` (with `base`) on `task` (generating up to
    `max_new_tokens` when given)."""
    import dataclasses

    from analyses.verbosity import analysis
    from interp.io import write_json

    cfg = dataclasses.replace(analysis.VerbosityConfig(), n_test_per_step=min(n_per_step, 50))
    if task is not None and task.name != "organism":  # only the last-token direction exists off the organism
        cfg = dataclasses.replace(cfg, variants=("last",), steps=cfg.steps if task.has_steps else ())
    if max_new_tokens is not None:
        cfg = dataclasses.replace(cfg, max_new_tokens=max_new_tokens)
    r = analysis.run_cached(cfg, model=tuned, base=base, task=task)
    write_json(out / "verbosity.json", r.to_dict())
    paths = verbosity_figures(r, out, png)
    name = r.config.model.removeprefix("organism/")
    return (f"Verbosity: activation-steered compression of {name}'s chains of thought", tuple(verbosity_sentences(r)),
            tuple(p[0].name for p in paths.values()))


# Off the first zoo the sweep is coarser (the last position only, 4 offsets and 4 clamp levels: 32 cells on a 4-layer
# model instead of 136) so that the section fits a pair report's 20 minutes on 2 cores.
PAIR_SWEEP: dict[str, Any] = {"wheres": ("last",), "gammas": (0.5, 1.0, 2.0, 4.0), "clamp_ks": (-0.5, 0.0, 0.5, 1.0),
                              "n_train_per_step": 200}


def reasoning_section_parts(out: Path, n_per_step: int, png: bool, base: Model | None = None,
                            tuned: Model | None = None, task: Task | None = None, max_new_tokens: int | None = None
                            ) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Run (or read from the cache) the reasoning-mode direction of base-s, or of `base` against `tuned` on `task`
    (generating up to `max_new_tokens` when given)."""
    import dataclasses

    from analyses.verbosity import reasoning
    from interp.io import write_json

    cfg = dataclasses.replace(reasoning.ReasoningConfig(), n_test_per_step=n_per_step)
    if task is not None and task.name != "organism":  # a pair's report: a coarser sweep fits its time budget
        cfg = dataclasses.replace(cfg, **PAIR_SWEEP, n_val_per_step=min(cfg.n_val_per_step, max(n_per_step, 25)))
    if task is not None and not task.has_steps:
        cfg = dataclasses.replace(cfg, train_steps=(), eval_steps=())
    if max_new_tokens is not None:
        cfg = dataclasses.replace(cfg, max_new_tokens=max_new_tokens)
    r = reasoning.run_cached(cfg, base=base, tuned=tuned, task=task)
    write_json(out / "reasoning_direction.json", r.to_dict())
    paths = reasoning_figures(r, out, png)
    name = r.config.base.removeprefix("organism/")
    return (f"Reasoning-mode direction: steering {name} into a chain of thought", tuple(reasoning_sentences(r)),
            tuple(p[0].name for p in paths.values()))


__all__ = [
    "reasoning_figures",
    "reasoning_section_parts",
    "reasoning_sentences",
    "verbosity_figures",
    "verbosity_section_parts",
    "verbosity_sentences",
]
