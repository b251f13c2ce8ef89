"""The report page sizes each figure's frame to the figure."""

from __future__ import annotations

import plotly.graph_objects as go

from analyses.report import MAX_FIGURE_WIDTH, Section, figure_size, render
from interp.plots import save_figure, style


def test_frames_fit_their_figures(tmp_path):
    fig = style(go.Figure(go.Scatter(x=[1, 2], y=[3, 4], line=dict(width=3))), "t", "x", "y")
    fig.update_layout(width=640, height=700)
    save_figure(fig, tmp_path / "tall", png=False)
    assert figure_size(tmp_path / "tall.html") == (660, 720)
    fig.update_layout(width=3000)
    save_figure(fig, tmp_path / "wide", png=False)
    assert figure_size(tmp_path / "wide.html")[0] == MAX_FIGURE_WIDTH
    assert figure_size(tmp_path / "missing.html") == (800, 480)
    page = render([Section("S", ("a sentence",), ("tall.html",))], 1.0, tmp_path)
    assert 'src="tall.html" width="660" height="720"' in page
