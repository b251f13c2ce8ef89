"""Figures (weight-change heatmap, CKA/cosine curves, logit lens, grafting matrices, ablation curves, EFT bars)
and the sentences that state, in numbers, where fine-tuning acts for one pair."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.layer_changes.analysis import LayerChangesResult
from analyses.layer_changes.grafting import ENDS
from interp.plots import TEMPLATE, color_for, save_figure, short_name, style

OUTSIDE = ("embed", "pos_embed", "final_norm", "unembed")


short = short_name  # one display name for every figure (interp.plots)


def _err(values: list[float], cis: list[tuple[float, float]]) -> dict:
    return {"type": "data", "symmetric": False, "array": [c[1] - v for v, c in zip(values, cis)],
                "arrayminus": [v - c[0] for v, c in zip(values, cis)]}


def _point_axis(points: tuple[str, ...]) -> list[str]:
    return ["embed" if p.endswith("resid_pre") else f"L{p.split('.')[1]}" for p in points]


def gap_closed(value: float, base: float, tuned: float) -> float:
    """(value - base) / (tuned - base): 0 at the base, 1 at the tuned model; nan when they do not differ."""
    return (value - base) / (tuned - base) if abs(tuned - base) > 1e-9 else math.nan


def figures(result: LayerChangesResult, out_dir: str | Path, png: bool = True, prefix: str = "") -> dict[str, list[Path]]:
    """Write every figure of one pair as HTML (+PNG); names start with `prefix` (default layers_<tuned>)."""
    out_dir = Path(out_dir)
    prefix = prefix or f"layers_{short(result.config.tuned)}"
    pair = f"{short(result.config.tuned)} vs {short(result.config.base)}"
    figs: dict[str, go.Figure] = {}
    if result.weights is not None:
        w = result.weights
        kinds = w.kinds()
        outside = [k for k in OUTSIDE if k in w.outside]
        cols = kinds + outside
        z = [[w.per_layer_kind[str(i)].get(k, np.nan) if k in kinds else np.nan for k in cols] for i in range(w.n_layers)]
        z.append([w.outside.get(k, np.nan) if k in outside else np.nan for k in cols])
        rows = [f"L{i}" for i in range(w.n_layers)] + ["outside"]
        fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, colorscale="Viridis", colorbar={"title": "rel. change"},
                                   text=[[f"{v:.3f}" if not np.isnan(v) else "" for v in r] for r in z],
                                   texttemplate="%{text}"))
        style(fig, f"Relative weight change ||Wt-Wb|| / mean(||Wt||,||Wb||): {pair}", "matrix", "layer")
        figs["weights"] = fig
    if result.representations:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("1 - linear CKA (log scale)", "mean cosine"))
        x = _point_axis(result.points)
        for pos, r in result.representations.items():
            dash = "solid" if pos == "prompt" else "dot"
            dist = [1 - v for v in r.cka]
            fig.add_trace(go.Scatter(x=x, y=dist, error_y=_err(dist, [(1 - hi, 1 - lo) for lo, hi in r.cka_ci]),
                                     mode="lines+markers", name=f"base vs tuned, {pos} tokens",
                                     line={"dash": dash, "color": "#4C78A8"}), 1, 1)
            fig.add_trace(go.Scatter(x=x, y=[1 - v for v in r.cka_shuffled], mode="lines",
                                     name=f"shuffled-token control, {pos}", line={"dash": dash, "color": "#bbb"}), 1, 1)
            if r.cka_base_adjacent:
                fig.add_trace(go.Scatter(x=x[1:], y=[1 - v for v in r.cka_base_adjacent], mode="lines+markers",
                                         name=f"base: layer vs previous layer, {pos}",
                                         line={"dash": dash, "color": "#72B7B2"}), 1, 1)
            fig.add_trace(go.Scatter(x=x, y=list(r.cosine), error_y=_err(list(r.cosine), list(r.cosine_ci)),
                                     mode="lines+markers", name=f"cosine base vs tuned, {pos} tokens",
                                     line={"dash": dash, "color": "#E45756"}), 1, 2)
        fig.update_layout(template=TEMPLATE, title=f"Representation change base vs tuned per layer: {pair}",
                          width=1000, height=460)
        fig.update_yaxes(type="log", row=1, col=1)
        figs["representations"] = fig
    if result.lens:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("at the prompt end", "where the model writes its answer"))
        x = _point_axis(result.points)
        for role, lens in result.lens.items():
            name = result.config.base if role == "base" else result.config.tuned
            for col, pos in enumerate(("prompt_end", "answer"), 1):
                if pos in lens.at:
                    a = lens.at[pos]
                    fig.add_trace(go.Scatter(x=x, y=list(a.accuracy), error_y=_err(list(a.accuracy), list(a.accuracy_ci)),
                                             mode="lines+markers", name=f"{short(name)}", showlegend=col == 1,
                                             line={"color": color_for(name)}), 1, col)
        for col in (1, 2):
            fig.add_hline(y=0.1, line={"dash": "dot", "color": "#999"}, row=1, col=col)
        fig.update_layout(template=TEMPLATE, title=f"Logit lens: top answer candidate = correct answer: {pair}",
                          width=900, height=440)
        fig.update_yaxes(range=[-0.02, 1.02])
        figs["logit_lens"] = fig
    if result.grafts:
        n = result.n_layers
        metrics: tuple[tuple[str, str], ...] = (("cot_rate", "CoT rate"), ("accuracy", "accuracy"), ("kl", "KL to tuned"))
        if all(g.behaviour is None for g in result.grafts):  # measured on free texts: KL only
            metrics = metrics[2:]
        fig = make_subplots(rows=2, cols=len(metrics), subplot_titles=[f"{t}: {d}" for d in ("tuned into base", "base into tuned")
                                                                        for _, t in metrics],
                            horizontal_spacing=0.08, vertical_spacing=0.16)
        for row, direction in enumerate(("tuned_into_base", "base_into_tuned"), 1):
            for col, (metric, _) in enumerate(metrics, 1):
                z = np.full((n, n), np.nan)
                for g in result.grafts:
                    if g.direction == direction and g.block != ENDS:
                        s, e = g.block  # type: ignore[misc]
                        z[s, e - 1] = g.kl.mean if metric == "kl" else getattr(g.behaviour, metric, np.nan)
                fig.add_trace(go.Heatmap(z=z, x=[str(i) for i in range(n)], y=[str(i) for i in range(n)],
                                         colorscale="Viridis", showscale=col == len(metrics) and row == 1,
                                         zmin=0, zmax=1 if metric != "kl" else None,
                                         text=[[f"{v:.2f}" if not np.isnan(v) else "" for v in r] for r in z],
                                         texttemplate="%{text}"), row, col)
                fig.update_xaxes(title_text="last layer of block", row=row, col=col)
                fig.update_yaxes(title_text="first layer", row=row, col=col)
        fig.update_layout(template=TEMPLATE, title=f"Layer grafting, every contiguous block: {pair}",
                          width=400 + 350 * len(metrics), height=720)
        figs["grafting"] = fig
    if result.ablations:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("free answers: accuracy", "forced CoT: accuracy"))
        for role in ("base", "tuned"):
            name = result.config.base if role == "base" else result.config.tuned
            for mode, dash in (("zero", "solid"), ("mean", "dot")):
                cells = sorted((a for a in result.ablations if a.model == role and a.mode == mode), key=lambda a: a.layer)
                for col, what in enumerate(("free", "forced_cot"), 1):
                    ys = [getattr(a, what).accuracy for a in cells]
                    fig.add_trace(go.Scatter(x=[a.layer for a in cells], y=ys, mode="lines+markers",
                                             error_y=_err(ys, [getattr(a, what).accuracy_ci for a in cells]),
                                             name=f"{short(name)} {mode}-ablated", showlegend=col == 1,
                                             line={"color": color_for(name), "dash": dash}), 1, col)
            for col, key in ((1, role), (2, f"{role}_forced_cot")):
                fig.add_hline(y=result.baselines[key].accuracy, line={"color": color_for(name) or "#333", "dash": "dash",
                                                                          "width": 1}, row=1, col=col)
        fig.update_xaxes(title_text="ablated layer", dtick=1)
        fig.update_yaxes(range=[-0.02, 1.02])
        fig.update_layout(template=TEMPLATE, title=f"Layer ablation (dashed: unablated): {pair}", width=900, height=440)
        figs["ablation"] = fig
    if result.eft:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "CoT rate"))
        for e in result.eft:
            bars = [(short(k), v) for k, v in e.references.items()] + [(f"EFT ({e.direction})", e.eft)]
            for col, metric in enumerate(("accuracy", "cot_rate"), 1):
                ys = [getattr(b, metric) for _, b in bars]
                fig.add_trace(go.Bar(x=[n for n, _ in bars], y=ys, error_y=_err(ys, [getattr(b, f"{metric}_ci") for _, b in bars]),
                                     marker_color=[color_for(n) or "#555" for n, _ in bars], showlegend=False), 1, col)
        fig.update_yaxes(range=[0, 1.05])
        fig.update_layout(template=TEMPLATE, title=f"Emulated fine-tuning: log p_base-L + (log p_tuned-S - log p_base-S): {pair}",
                          width=900, height=440)
        figs["eft"] = fig
    return {f"{prefix}_{k}": save_figure(f, out_dir / f"{prefix}_{k}", png=png) for k, f in figs.items()}


def _ci(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def summary_sentences(result: LayerChangesResult) -> list[str]:
    """One sentence per measurement with its numbers, and a closing answer: which layers carry the change."""
    c = result.config
    t, b = short(c.tuned), short(c.base)
    labels = _point_axis(result.points)
    out = [answer_sentence(result)]
    w = result.weights
    if w is not None:
        half = w.n_layers // 2
        lower, upper = float(np.mean(w.per_layer[:half])), float(np.mean(w.per_layer[half:]))
        kinds = {k: float(np.mean([w.per_layer_kind[str(i)][k] for i in range(w.n_layers) if k in w.per_layer_kind[str(i)]]))
                 for k in w.kinds()}
        top_kind = max(kinds, key=kinds.get)  # type: ignore[arg-type]
        outside = ", ".join(f"{k} {v:.3f}" for k, v in w.outside.items() if k in OUTSIDE)
        out.append(f"{t} vs {b}, weights: relative change per layer "
                   f"{' / '.join(f'{x:.3f}' for x in w.per_layer)} (layers 0-{w.n_layers - 1}; lower half mean "
                   f"{lower:.3f}, upper half {upper:.3f}); largest at layer {w.top_layer()}; the matrix kind that changed "
                   f"most is {top_kind} ({kinds[top_kind]:.3f} on average); outside the layers: {outside}.")
    for pos, r in result.representations.items():
        low = int(np.nanargmin(r.cka)) if np.isfinite(r.cka).any() else 0
        adj = list(r.cka_base_adjacent)
        scale = (f"; for scale, the base's CKA between consecutive layers is {min(adj):.3f}-{max(adj):.3f}"
                 if adj else "")
        out.append(f"{t} vs {b}, representations on {'prompt' if pos == 'prompt' else f'{t} own-generation'} tokens "
                   f"({r.n_tokens} tokens, {r.n_problems} problems): CKA {' / '.join(f'{x:.4f}' for x in r.cka)} from "
                   f"{labels[0]} to {labels[-1]}, lowest at {labels[low]} ({r.cka[low]:.4f} "
                   f"[{r.cka_ci[low][0]:.4f}, {r.cka_ci[low][1]:.4f}]; "
                   f"shuffled-token control {max(r.cka_shuffled):.3f} at most{scale}); mean cosine at {labels[-1]} "
                   f"{r.cosine[-1]:.3f} {_ci(r.cosine_ci[-1])}.")
    for pos in ("answer", "prompt_end"):
        parts = []
        for role, lens in result.lens.items():
            if pos in lens.at:
                a = lens.at[pos]
                parts.append(f"{short(lens.model)} from point {a.decodable_point:.2f} {_ci(a.decodable_ci)} (0 = embedding, "
                             f"{len(labels) - 1} = last layer; lens accuracy {' / '.join(f'{x:.2f}' for x in a.accuracy)})")
        if parts:
            where = "where each model writes its answer" if pos == "answer" else "at the prompt end (a direct answer)"
            out.append(f"{t} vs {b}, logit lens {where}: the model's own answer becomes decodable " + "; ".join(parts) + ".")
    bl = result.baselines
    singles = [g for g in result.grafts if g.direction == "tuned_into_base" and g.block != ENDS
               and g.block[1] - g.block[0] == 1]  # type: ignore[index]
    if singles and bl:  # the sentence compares single-layer grafts
        base, tuned = bl["base"], bl["tuned"]
        best = max(singles, key=lambda g: g.behaviour.cot_rate)
        kl0 = result.kl_base.mean if result.kl_base else math.nan
        ends = result.graft("tuned_into_base", ENDS)
        out.append(
            f"{t} vs {b}, grafting {t}'s layers into {b}: base CoT rate {base.cot_rate:.2f} {_ci(base.cot_rate_ci)}, accuracy "
            f"{base.accuracy:.2f}; {t} {tuned.cot_rate:.2f} / {tuned.accuracy:.2f}. The single layer that moves most is "
            f"layer {best.block[0]}: CoT rate {best.behaviour.cot_rate:.2f} {_ci(best.behaviour.cot_rate_ci)}, accuracy "
            f"{best.behaviour.accuracy:.2f} {_ci(best.behaviour.accuracy_ci)}, KL to {t} {best.kl.mean:.3f} against "
            f"{kl0:.3f} for the unmodified base ({100 * (1 - best.kl.mean / kl0):.0f}% of the KL closed). Per single layer, "
            f"CoT rate {' / '.join(f'{g.behaviour.cot_rate:.2f}' for g in sorted(singles, key=lambda g: g.block))}; "
            f"the embeddings, final norm and unembedding alone (control) give CoT rate {ends.behaviour.cot_rate:.2f}, "
            f"KL {ends.kl.mean:.3f}.")
        steps = sorted(set(base.steps))
        if len(steps) > 1:
            by = lambda x: "/".join(f"{x.subset((k,), 'cot'):.2f}" for k in steps)
            eft = next((e.eft for e in result.eft if e.direction == "up"), None)
            out.append(f"{t} vs {b}, when to reason: CoT rate by number of steps {'/'.join(map(str, steps))} is "
                       f"{by(base)} for {b}, {by(tuned)} for {t}, {by(best.behaviour)} with {t}'s layer "
                       f"{best.block[0]} grafted in" + (f", {by(eft)} under EFT" if eft else "") + ".")
        rev = [g for g in result.grafts if g.direction == "base_into_tuned" and g.block != ENDS
               and g.block[1] - g.block[0] == 1]  # type: ignore[index]
        worst = min(rev, key=lambda g: g.behaviour.cot_rate)
        out.append(f"{t} vs {b}, the reverse graft ({b}'s layer into {t}): per single layer CoT rate "
                   f"{' / '.join(f'{g.behaviour.cot_rate:.2f}' for g in sorted(rev, key=lambda g: g.block))}, "
                   f"KL to {t} {' / '.join(f'{g.kl.mean:.3f}' for g in sorted(rev, key=lambda g: g.block))}; "
                   f"the largest drop is at layer {worst.block[0]}.")
        blocks = [g for g in result.grafts if g.direction == "tuned_into_base" and g.block != ENDS]
        enough = [g for g in blocks if gap_closed(g.behaviour.cot_rate, base.cot_rate, tuned.cot_rate) >= 0.9]
        if enough:
            g = min(enough, key=lambda g: (g.block[1] - g.block[0], -g.behaviour.cot_rate))  # type: ignore[index]
            out.append(f"{t} vs {b}: the smallest block of {t}'s layers that closes at least 90% of the CoT-rate gap "
                       f"is layers {g.block[0]}-{g.block[1] - 1} "  # type: ignore[index]
                       f"({100 * gap_closed(g.behaviour.cot_rate, base.cot_rate, tuned.cot_rate):.0f}% closed).")
        else:
            out.append(f"{t} vs {b}: no block of {t}'s layers short of all of them closes 90% of the CoT-rate gap.")
    elif result.grafts:  # measured on free texts: KL to the tuned model only
        kl0 = result.kl_base.mean if result.kl_base else math.nan
        singles = sorted((g for g in result.grafts if g.direction == "tuned_into_base" and g.block != ENDS
                          and g.block[1] - g.block[0] == 1), key=lambda g: g.block)  # type: ignore[index]
        if singles:
            best = min(singles, key=lambda g: g.kl.mean)
            out.append(f"{t} vs {b}, grafting {t}'s layers into {b} (on the given texts, KL to {t} along its own "
                       f"continuations; {kl0:.3f} for the unmodified base): per single layer KL "
                       f"{' / '.join(f'{g.kl.mean:.3f}' for g in singles)}; layer {best.block[0]} closes most "
                       f"({100 * (1 - best.kl.mean / kl0):.0f}% of the KL, {_ci(best.kl.ci)}).")
    if result.ablations:
        for what, label in (("forced_cot", "forced-CoT accuracy"), ("free", "free accuracy")):
            crit = {}
            for role in ("base", "tuned"):
                cells = sorted((a for a in result.ablations if a.model == role and a.mode == "mean"), key=lambda a: a.layer)
                ref = bl[f"{role}_forced_cot" if what == "forced_cot" else role].accuracy
                drops = [ref - getattr(a, what).accuracy for a in cells]
                crit[role] = (drops, int(np.argmax(drops)), ref)
            out.append(f"{t} vs {b}, mean ablation of one layer, drop in {label} per layer: {b} "
                       f"{' / '.join(f'{d:.2f}' for d in crit['base'][0])} (from {crit['base'][2]:.2f}), {t} "
                       f"{' / '.join(f'{d:.2f}' for d in crit['tuned'][0])} (from {crit['tuned'][2]:.2f}); "
                       f"ranked by drop, {b}'s layers are {_rank(crit['base'][0])} and {t}'s {_rank(crit['tuned'][0])}"
                       f" ({'same' if _rank(crit['base'][0]) == _rank(crit['tuned'][0]) else 'different'} order; "
                       f"Spearman rho of the drops {_spearman(crit['base'][0], crit['tuned'][0]):.2f}).")
    for e in result.eft:
        refs = "; ".join(f"{short(k)} {v.accuracy:.2f} {_ci(v.accuracy_ci)} / {v.cot_rate:.2f}" for k, v in e.references.items())
        m = e.models
        formula = f"log p_{short(m['scale'])} + (log p_{short(m['tuned'])} - log p_{short(m['base'])})"
        out.append(f"Emulated fine-tuning ({e.direction}-scaling, {formula}): accuracy {e.eft.accuracy:.2f} "
                   f"{_ci(e.eft.accuracy_ci)}, CoT rate {e.eft.cot_rate:.2f} {_ci(e.eft.cot_rate_ci)}; accuracy / CoT rate "
                   f"of the ingredients: {refs}.")
    for part, why in result.skipped.items():
        out.append(f"{t} vs {b}, {part.replace('_', ' ')}: not measured ({why}).")
    return out


def answer_sentence(result: LayerChangesResult) -> str:
    """The pair's answer in one sentence: where the weights moved, which layers carry the behaviour, whether the
    critical layers agree, and what EFT transfers."""
    c, bl = result.config, result.baselines
    t, b = short(c.tuned), short(c.base)
    parts = [f"Answer for {t} vs {b}:"]
    w = result.weights
    if w is not None:
        spread = min(w.per_layer) >= 0.5 * max(w.per_layer)
        parts.append(f"the weights change {'in every layer' if spread else f'mostly in layer {w.top_layer()}'} "
                     f"(relative change {min(w.per_layer):.3f}-{max(w.per_layer):.3f}, largest at layer {w.top_layer()}),")
    singles = [g for g in result.grafts if g.direction == "tuned_into_base" and g.block != ENDS
               and g.block[1] - g.block[0] == 1]  # type: ignore[index]
    if singles and bl:
        best = max(singles, key=lambda g: g.behaviour.cot_rate)
        top = best.block[0]  # type: ignore[index]
        n = result.n_layers
        rest = (0, n - 1) if top == n - 1 else (1, n) if top == 0 else None
        rest_txt = ""
        if rest is not None and rest[1] > rest[0] and any(g.block == rest for g in result.grafts):
            g = result.graft("tuned_into_base", rest)
            rest_txt = f", layers {rest[0]}-{rest[1] - 1} together only to {g.behaviour.cot_rate:.2f}"
        where = "top" if top == n - 1 else "bottom" if top == 0 else f"middle (layer {top})"
        parts.append(f"but the behaviour post-training changed sits in the {where} layer: grafting layer {top} alone "
                     f"into {b} moves the CoT rate from {bl['base'].cot_rate:.2f} to {best.behaviour.cot_rate:.2f} "
                     f"({t}: {bl['tuned'].cot_rate:.2f}){rest_txt};")
    if result.ablations and bl:
        ranks = {}
        for role in ("base", "tuned"):
            cells = sorted((a for a in result.ablations if a.model == role and a.mode == "mean"), key=lambda a: a.layer)
            ranks[role] = _rank([bl[f"{role}_forced_cot"].accuracy - a.forced_cot.accuracy for a in cells])
        same = ranks["base"] == ranks["tuned"]
        parts.append(f"the layers critical for forced-CoT accuracy rank {ranks['base']} in {b} and {ranks['tuned']} in "
                     f"{t} ({'the same' if same else 'a different'} order);")
    for e in result.eft:
        if e.direction == "up":
            scale = e.references[e.models["scale"]]
            parts.append(f"EFT puts {t}'s behaviour on {short(e.models['scale'])}: accuracy {e.eft.accuracy:.2f} "
                         f"(vs {scale.accuracy:.2f}), CoT rate {e.eft.cot_rate:.2f} (vs {scale.cot_rate:.2f}).")
    return " ".join(parts).rstrip(";,") + ("" if parts[-1].endswith(".") else ".")


def _spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (ties share their mean rank); nan when either side is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _rank(drops: list[float]) -> str:
    return ">".join(str(i) for i in np.argsort(-np.array(drops), kind="stable"))


__all__ = ["answer_sentence", "figures", "gap_closed", "pair_table_html", "summary_sentences"]


def pair_table_html(results: list[LayerChangesResult]) -> str:
    """One row per pair: where weights changed most, lowest CKA, the single-layer graft that moves CoT most, EFT."""
    import html

    rows = []
    for r in results:
        t = short(r.config.tuned)
        w = r.weights
        rep = r.representations.get("prompt")
        singles = [g for g in r.grafts if g.direction == "tuned_into_base" and g.block != ENDS
                   and g.block[1] - g.block[0] == 1]  # type: ignore[index]
        best = max(singles, key=lambda g: g.behaviour.cot_rate) if singles else None
        kl0 = r.kl_base.mean if r.kl_base else math.nan
        e = r.eft[0] if r.eft else None
        cells = [
            html.escape(f"{t} vs {short(r.config.base)}"),
            " / ".join(f"{x:.3f}" for x in w.per_layer) if w else "",
            f"{min(rep.cka):.3f} at {_point_axis(r.points)[int(np.argmin(rep.cka))]}" if rep else "",
            (f"L{best.block[0]}: {best.behaviour.cot_rate:.2f} / {best.behaviour.accuracy:.2f}, "
             f"{100 * (1 - best.kl.mean / kl0):.0f}%") if best else "",
            f"{r.baselines['base'].cot_rate:.2f} / {r.baselines['tuned'].cot_rate:.2f}" if r.baselines else "",
            f"{e.eft.accuracy:.2f} / {e.eft.cot_rate:.2f}" if e else "",
            f"{r.seconds:.0f} s",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ("<tr><th>pair</th><th>rel. weight change per layer</th><th>lowest CKA (prompts)</th>"
            "<th>best single-layer graft into base: CoT rate / accuracy, KL closed</th><th>CoT rate base / tuned</th>"
            "<th>EFT accuracy / CoT rate</th><th>analysis time</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"
