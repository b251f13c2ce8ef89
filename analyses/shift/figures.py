"""Figures, sentences, table and report section of the shift battery."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.shift.analysis import Score, ShiftConfig, ShiftResult, run
from interp.io import write_json
from interp.plots import color_for, save_figure, short_name, style

short = short_name  # one display name for every figure (interp.plots)


def _err(scores: list[Score]) -> dict:
    return {"type": "data", "symmetric": False, "array": [max(0.0, s.ci[1] - s.value) if np.isfinite(s.value) else 0
                                                     for s in scores],
                "arrayminus": [max(0.0, s.value - s.ci[0]) if np.isfinite(s.value) else 0 for s in scores]}


def figures(result: ShiftResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Accuracy per shift and member; drop relative to base-s; chain validity cells; accuracy by length."""
    out_dir = Path(out_dir)
    cfg = result.config
    names = [s.name for s in cfg.shifts]
    nb = cfg.n_boot
    figs: dict[str, go.Figure] = {}

    fig = go.Figure()
    for m in result.members:
        sc = [m.get(s).scores(nb)["accuracy"] for s in names]
        fig.add_trace(go.Bar(x=names, y=[s.value for s in sc], error_y=_err(sc), name=short(m.name),
                             marker_color=color_for(m.name)))
    style(fig, "Greedy accuracy in distribution and under each shift (95% bootstrap CIs)", "", "accuracy")
    fig.update_layout(barmode="group", width=1100, height=480)
    fig.update_yaxes(range=[0, 1.05])
    figs["shift_accuracy"] = fig

    fig = go.Figure()
    others = [m for m in result.members if m.name != cfg.baseline]
    for j, m in enumerate(others):
        ds = [result.drop(m.name, s) for s in names[1:]]
        sc = [d.vs_baseline for d in ds]
        fig.add_trace(go.Scatter(x=[i + (j - len(others) / 2) * 0.08 for i in range(len(ds))], y=[s.value for s in sc],
                                 error_y=_err(sc), mode="markers", name=short(m.name),
                                 marker={"color": color_for(m.name), "size": 8}))
    fig.add_hline(y=0, line_dash="dot")
    style(fig, f"Accuracy drop under each shift minus {short(cfg.baseline)}'s drop (> 0: degrades more; 95% CIs)",
          "", "drop - baseline drop")
    fig.update_layout(width=1100, height=480)
    fig.update_xaxes(tickvals=list(range(len(names) - 1)), ticktext=names[1:])
    figs["shift_vs_base"] = fig

    cells = (("wrong_chain_right_answer", "right answer from a wrong chain"),
             ("right_chain_wrong_answer", "wrong answer from a right chain"),
             ("chain_valid", "chain right (all steps)"))
    fig = make_subplots(rows=len(cells), cols=1, shared_xaxes=True, subplot_titles=[t for _, t in cells],
                        vertical_spacing=0.07)
    for i, (key, _) in enumerate(cells):
        for m in result.members:
            sc = [m.get(s).scores(nb)[key] for s in names]
            fig.add_trace(go.Bar(x=names, y=[s.value for s in sc], error_y=_err(sc), name=short(m.name),
                                 marker_color=color_for(m.name), legendgroup=m.name, showlegend=i == 0),
                          row=i + 1, col=1)
    style(fig, "Chain validity among answers with a chain of thought (95% CIs)", "", "")
    fig.update_layout(barmode="group", width=1100, height=820)
    fig.update_yaxes(range=[0, 1.05])
    figs["shift_chain_validity"] = fig

    length = [s for s in cfg.shifts if s.kind in ("none", "length")]
    fig = go.Figure()
    for m in result.members:
        xs, sc = [], []
        for s in length:
            c = m.get(s.name)
            k_arr = np.asarray(c.n_steps)
            for k in s.steps:
                xs.append(k)
                sc.append(Score.mean(c.arr("correct")[k_arr == k], nb, k))
        order = np.argsort(xs)
        fig.add_trace(go.Scatter(x=[xs[i] for i in order], y=[sc[i].value for i in order],
                                 error_y=_err([sc[i] for i in order]), mode="lines+markers", name=short(m.name),
                                 line={"color": color_for(m.name)}))
    fig.add_vrect(x0=4.5, x1=max(max(s.steps) for s in length) + 0.5, fillcolor="grey", opacity=0.12, line_width=0)
    style(fig, "Accuracy by number of steps (shaded: longer than trained)", "number of steps", "accuracy")
    fig.update_yaxes(range=[-0.02, 1.05])
    fig.update_xaxes(dtick=1)
    figs["shift_length"] = fig
    return {name: save_figure(f, out_dir / name, png=png) for name, f in figs.items()}


def table_html(result: ShiftResult) -> str:
    """Accuracy [95% CI] per member (rows) and shift (columns)."""
    names = [s.name for s in result.config.shifts]
    head = "<tr><th>model</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    rows = []
    for m in result.members:
        cells = []
        for n in names:
            a = m.get(n).scores(result.config.n_boot)["accuracy"]
            cells.append(f"<td>{a.value:.2f} [{a.ci[0]:.2f}, {a.ci[1]:.2f}]</td>")
        rows.append(f"<tr><td>{html.escape(short(m.name))}</td>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def summary_sentences(result: ShiftResult) -> list[str]:
    """The DataAlchemy pattern per member, which shifts hurt post-trained members more or less than base-s, and
    what the chains look like when they fail."""
    cfg = result.config
    nb = cfg.n_boot
    shifts = cfg.shifts[1:]
    base = short(cfg.baseline)
    lines = [
        (f"Greedy answers of each zoo member to {cfg.n_per_step} problems per step count (1-4 in distribution; "
        f"5-6 for the length shift), in distribution and under {len(shifts)} shifts: length (more steps than "
        f"trained; fewer than trained cannot be tested, the zoo is trained on 1-4 steps), task (every step written "
        f"operand first, `b = 4 - a` meaning 4 - a, a composition the zoo never saw; held-out operator pairs need a "
        f"member trained without them, and the zoo saw all nine), format (separator `,`; DataAlchemy's prompt noise: "
        f"insertion, deletion, substitution of task words at rates 0.1 and 0.2, the original answer kept as target) "
        f"and variables (renamed p..w, never seen; shuffled order; two distractor assignments). Paired shifts show "
        f"the in-distribution problems themselves, so their drops are paired; every member answers the same "
        f"problems, so drops are compared with {base}'s on shared resamples.")]
    for m in result.members:
        acc_in = m.get(cfg.shifts[0].name).scores(nb)["accuracy"]
        accs = {s.name: m.get(s.name).scores(nb)["accuracy"] for s in shifts}
        worst = min(accs, key=lambda k: accs[k].value)
        sig = [s.name for s in shifts if result.drop(m.name, s.name).drop.ci[0] > 0]
        lines.append(f"{short(m.name)}: {acc_in.fmt()} accurate in distribution; it drops significantly under "
                     f"{len(sig)} of {len(shifts)} shifts; worst: {worst} ({accs[worst].fmt()}).")
    for s in shifts:
        parts = []
        for m in result.members:
            if m.name == cfg.baseline:
                continue
            d = result.drop(m.name, s.name)
            b = result.drop(cfg.baseline, s.name)
            parts.append(f"{short(m.name)} {d.verdict} ({100 * d.drop.value:+.0f} points vs {base}'s "
                         f"{100 * b.drop.value:+.0f}; difference {100 * d.vs_baseline.value:+.0f} "
                         f"[{100 * d.vs_baseline.ci[0]:+.0f}, {100 * d.vs_baseline.ci[1]:+.0f}]; keeps "
                         f"{d.retention.fmt()} of its accuracy vs {b.retention.fmt()})")
        lines.append(f"{s.name}: degrades more or less than {base}? " + "; ".join(parts) + ".")
    for m in result.members:
        c_in = m.get(cfg.shifts[0].name).scores(nb)
        if c_in["cot_rate"].value < 0.5:
            continue
        pooled = {k: np.concatenate([m.get(s.name).arr(k) for s in shifts]) for k in ("cot", "correct", "chain_correct")}
        cot = pooled["cot"].astype(bool)
        wc_ra = Score.mean(((pooled["chain_correct"] == 0) & (pooled["correct"] == 1))[cot].astype(float), nb, 1)
        rc_wa = Score.mean(((pooled["chain_correct"] == 1) & (pooled["correct"] == 0))[cot].astype(float), nb, 1)
        valid = Score.mean(pooled["chain_correct"][cot], nb, 1)
        dist = Score.mean(np.concatenate([m.get(s.name).arr("distance")[m.get(s.name).arr("cot") == 1]
                                          for s in shifts]), nb, 1)
        verbose_rows = [(m.get(s.name).arr("inconsistent"), m.get(s.name).arr("steps_written"), m.get(s.name).arr("cot"))
                        for s in shifts]
        inc = np.concatenate([i[c == 1] for i, _, c in verbose_rows]).sum()
        written = np.concatenate([w[c == 1] for _, w, c in verbose_rows]).sum()
        lines.append(f"{short(m.name)}'s chains under shift (all shifts pooled, {int(cot.sum())} chains): "
                     f"{valid.fmt()} fully right (in distribution {c_in['chain_valid'].fmt()}); right answer from a "
                     f"wrong chain {wc_ra.fmt()}, wrong answer from a right chain {rc_wa.fmt()}; normalised edit "
                     f"distance to the reference chain {dist.fmt(pct=False)} (in distribution "
                     f"{c_in['edit_distance'].fmt(pct=False)}); {int(inc)} of {int(written)} written steps "
                     f"({100 * inc / max(written, 1):.1f}%) state arithmetic that is wrong in itself: wrong chains stay "
                     f"well-formed, their errors are in what they compute on (values, operands, missing steps).")
    return lines


def section_parts(out: Path, n_per_step: int, png: bool) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Run (cached) and write the shift battery's JSON and figures for `interp report`, with the step-1 probe, the
    SAE feature comparison and chain patching under shift (the SFT recovery curve is a section of its own:
    `analyses.shift.recovery.section_parts`)."""
    from analyses.shift import chain_patch, readouts, sae_shift

    result = run(ShiftConfig(n_per_step=max(2, n_per_step // 2)), progress=False)
    write_json(Path(out) / "shift.json", result.to_dict(), indent=None)
    paths = figures(result, out, png=png)
    probe = readouts.run(result)
    write_json(Path(out) / "shift_readouts.json", probe.to_dict(), indent=None)
    paths.update(readouts.figure(probe, out, png=png))
    sae = sae_shift.run(sae_shift.SAEShiftConfig())
    write_json(Path(out) / "shift_sae.json", sae.to_dict(), indent=None)
    paths.update(sae_shift.figure(sae, out, png=png))
    cp = chain_patch.run(chain_patch.ChainPatchConfig())
    write_json(Path(out) / "shift_chain_patch.json", cp.to_dict(), indent=None)
    paths.update(chain_patch.figure(cp, out, png=png))
    return ("Where reasoning breaks: distribution shift",
            (*summary_sentences(result), *readouts.sentences(probe), *sae_shift.sentences(sae),
             *chain_patch.sentences(cp)),
            tuple(p[0].name for p in paths.values()), table_html(result))


__all__ = ["figures", "section_parts", "summary_sentences", "table_html"]
