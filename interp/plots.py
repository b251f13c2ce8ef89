"""Plotly helpers: one look for every figure, and every figure saved as HTML and PNG."""

from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go

# Colours by the role a model name states (any family: `organism/sft`, `my-run/dpo-3`, `base-l`), so a
# figure reads the same for every pair; other names get a stable colour from the qualitative palette.
ROLE_COLORS = (("base-s", "#4C78A8"), ("base-m", "#72B7B2"), ("base-l", "#2E4A62"), ("base", "#4C78A8"),
               ("sft", "#E45756"), ("distill", "#E45756"), ("dpo", "#B279A2"), ("rl", "#F58518"),
               ("grpo", "#F58518"))
QUALITATIVE = ("#54A24B", "#EECA3B", "#9D755D", "#BAB0AC", "#FF9DA6", "#79706E", "#D67195", "#439894")
TEMPLATE = "plotly_white"


def short_name(name: str) -> str:
    """A model's name in figures and sentences: the last part of its name or path (`organism/sft` -> `sft`)."""
    return name.removeprefix("organism/").rstrip("/").rsplit("/", 1)[-1]


def color_for(name: str) -> str:
    """The colour of a model in every figure: by the role in its last path part, else stable by name."""
    import hashlib
    import re

    short = name.rstrip("/").rsplit("/", 1)[-1].lower()
    for role, color in ROLE_COLORS:
        if re.search(rf"(^|[^a-z]){re.escape(role)}($|[^a-z])", short):
            return color
    return QUALITATIVE[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(QUALITATIVE)]


def style(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title=x, yaxis_title=y,
                      width=760, height=460, legend_title_text="", margin=dict(l=60, r=20, t=60, b=50))
    return fig


def ensure_plotlyjs(folder: Path) -> Path:
    """One shared `plotly.min.js` per folder: pages work offline without embedding 4 MB each."""
    target = folder / "plotly.min.js"
    if not target.exists():
        from plotly.offline import get_plotlyjs

        tmp = target.with_name(".plotly.min.js.tmp")
        tmp.write_text(get_plotlyjs())
        os.replace(tmp, target)
    return target


def save_figure(fig: go.Figure, path_stem: str | Path, png: bool = True, scale: float = 1.25) -> list[Path]:
    """Write `<stem>.html` (self-contained) and `<stem>.png`; both atomically. Returns the paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    html = stem.with_suffix(".html")
    tmp = html.with_name(f".{html.name}.tmp")
    ensure_plotlyjs(stem.parent)
    fig.write_html(tmp, include_plotlyjs="directory", full_html=True)
    os.replace(tmp, html)
    out = [html]
    if png:
        p = stem.with_suffix(".png")
        tmp = p.with_name(f".{p.stem}.tmp.png")
        try:
            fig.write_image(tmp, scale=scale)
        except Exception as e:  # kaleido needs a Chrome; say which one works here
            raise RuntimeError(f"PNG export of {p.name} failed ({e}). Install a Chrome for kaleido, e.g. "
                               "`apt-get install -y chromium` on Debian, or pass png=False") from e
        os.replace(tmp, p)
        out.append(p)
    return out


__all__ = ["QUALITATIVE", "ROLE_COLORS", "color_for", "ensure_plotlyjs", "save_figure", "short_name", "style"]
