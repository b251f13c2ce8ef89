"""Static, offline HTML feature dashboards: one page per feature plus an index, no scripts, no network.

Each page shows the feature's top contexts with every token shaded by the feature's activation (hover
for the value; the peak token is outlined), a histogram of its nonzero activations (inline SVG), its top
logit effects (W_dec[i] @ W_U: tokens promoted and suppressed) and any scores given for it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from interp.io import atomic_dir
from saes.features import (
    Context,
    FeatureTable,
    check_feature,
    logit_effects,
    top_contexts,
)

if TYPE_CHECKING:
    from interp.models import Model

STYLE = ("body{font-family:sans-serif;max-width:980px;margin:1.5em auto;color:#222}"
         ".ctx{font-family:monospace;line-height:2;margin:.4em 0;padding:.3em;border-bottom:1px solid #eee}"
         ".ctx span{padding:1px 2px;border-radius:2px}.peak{outline:2px solid #c00}"
         "table{border-collapse:collapse;margin-right:2em;display:inline-table;vertical-align:top}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}.muted{color:#888}")


def _esc(x: Any) -> str:
    return html.escape(str(x))


def context_html(ctx: Context, vmax: float) -> str:
    """One context: tokens as spans shaded by activation / vmax (orange), the peak outlined."""
    parts = []
    for p, (tok, a) in enumerate(zip(ctx.tokens, ctx.acts)):
        alpha = 0.0 if not a else min(1.0, a / vmax) if vmax > 0 else 0.0
        title = "not stored" if a is None else f"{a:.3f}"
        cls = ' class="peak"' if p == ctx.position else ""
        parts.append(f'<span{cls} style="background:rgba(255,140,0,{alpha:.2f})" title="{_esc(tok)}: {title}">'
                     f"{_esc(tok)}</span>")
    return (f'<div class="ctx"><span class="muted">#{ctx.example} @ {ctx.position} ({ctx.activation:.2f})</span> '
            + " ".join(parts) + "</div>")


def histogram_svg(values: np.ndarray, bins: int = 30, width: int = 460, height: int = 140) -> str:
    """Inline SVG bar chart of the nonzero activations (counts on a log scale)."""
    v = values[values > 0]
    if len(v) == 0:
        return '<p class="muted">never fires on these activations</p>'
    counts, edges = np.histogram(v, bins=bins)
    top = np.log1p(counts.max())
    bw = width / bins
    bars = []
    for i, c in enumerate(counts):
        h = 0 if c == 0 else max(1.0, (height - 20) * np.log1p(c) / top)
        bars.append(f'<rect x="{i * bw:.1f}" y="{height - 20 - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" '
                    f'fill="#4C78A8"><title>{edges[i]:.2f}-{edges[i + 1]:.2f}: {c}</title></rect>')
    axis = (f'<text x="0" y="{height - 5}" font-size="11">{edges[0]:.2f}</text>'
            f'<text x="{width}" y="{height - 5}" font-size="11" text-anchor="end">{edges[-1]:.2f}</text>')
    return f'<svg width="{width}" height="{height}" role="img">{"".join(bars)}{axis}</svg>'


def feature_page(feature: int, contexts: Sequence[Context], acts: np.ndarray, up: Sequence[tuple[str, float]],
                 down: Sequence[tuple[str, float]], title: str, scores: Mapping[str, Any] | None = None) -> str:
    """The whole HTML page of one feature."""
    vmax = max([c.activation for c in contexts], default=0.0)
    rate = float((acts > 0).mean()) if len(acts) else 0.0
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v if not isinstance(v, float) else f'{v:.3f}')}</td></tr>"
                   for k, v in {"firing rate": rate, "max activation": float(acts.max()) if len(acts) else 0.0,
                                **(scores or {})}.items())
    eff = lambda xs, h: (f"<table><tr><th>{h}</th><th>logit</th></tr>"
                         + "".join(f"<tr><td>{_esc(t)}</td><td>{v:+.3f}</td></tr>" for t, v in xs) + "</table>")
    ctx = "".join(context_html(c, vmax) for c in contexts) or '<p class="muted">no context where it fires</p>'
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>feature {feature}</title>"
            f"<style>{STYLE}</style></head><body><p><a href='index.html'>all features</a></p>"
            f"<h1>Feature {feature}</h1><p class='muted'>{_esc(title)}</p><table>{rows}</table>"
            f"<h2>Activation histogram (nonzero, log counts)</h2>{histogram_svg(acts)}"
            f"<h2>Top contexts</h2>{ctx}"
            f"<h2>Top logit effects (W_dec @ W_U)</h2>{eff(up, 'promotes')}{eff(down, 'suppresses')}</body></html>")


def write_dashboard(sae: Any, model: Model, table: FeatureTable, dataset: Any, features: Sequence[int],
                    out: str | Path, title: str = "", scores: Mapping[int, Mapping[str, Any]] | None = None,
                    k_contexts: int = 8) -> Path:
    """Write `<out>/feature-<i>.html` for each feature and `<out>/index.html`; returns the index path."""
    feats = [check_feature(sae, f) for f in features]
    if not feats:
        raise ValueError("no features to show: give at least one feature index")
    out = Path(out)
    with atomic_dir(out) as tmp:
        items = []
        for f in feats:
            ctx = top_contexts(table, dataset, model.tokenizer, f, k_contexts)
            up, down = logit_effects(sae, model, f)
            col = table.acts[:, f].numpy()
            page = feature_page(f, ctx, col, up, down, title, (scores or {}).get(f))
            (tmp / f"feature-{f}.html").write_text(page)
            extra = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in ((scores or {}).get(f) or {}).items())
            items.append(f"<li><a href='feature-{f}.html'>feature {f}</a> <span class='muted'>firing rate "
                         f"{(col > 0).mean():.3f}{'; ' + _esc(extra) if extra else ''}</span></li>")
        (tmp / "index.html").write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>SAE features</title><style>{STYLE}</style>"
            f"</head><body><h1>SAE features</h1><p class='muted'>{_esc(title)}</p><ul>{''.join(items)}</ul>"
            f"</body></html>")
    return out / "index.html"


__all__ = ["context_html", "feature_page", "histogram_svg", "write_dashboard"]
