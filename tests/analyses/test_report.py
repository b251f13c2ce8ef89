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


def test_results_md_is_rendered_from_report_json_and_rerenders_identically(tmp_path, monkeypatch):
    """build_report writes report.json; RESULTS.md (sentences, table, PNG links relative to it) comes from that
    JSON, and render_only rewrites the very same file without running a section."""
    import analyses.report as rep

    calls = []

    def fake_section(out, n_per_step, png):
        calls.append(n_per_step)
        fig = style(go.Figure(go.Bar(x=["a"], y=[n_per_step])), "t", "x", "y")
        save_figure(fig, out / "fake_fig", png=False)
        return Section("Fake section", (f"measured {n_per_step / 7:.3f}",), ("fake_fig.html",), "<table></table>")

    monkeypatch.setattr(rep, "SECTIONS", (fake_section,))
    figures, results = tmp_path / "figures", tmp_path / "RESULTS.md"
    rep.build_report(figures, n_per_step=11, png=False, results=results)
    md = results.read_text()
    assert "## Fake section" in md and "- measured 1.571" in md and "![fake_fig](figures/fake_fig.png)" in md
    assert "<table></table>" in md and "report.json" in md
    data = rep.read_json(figures / "report.json")
    assert data["sections"][0]["sentences"] == ["measured 1.571"]
    results.unlink()
    (figures / "report.html").unlink()
    rep.render_only(figures, results)
    assert results.read_text() == md and calls == [11]
    assert "measured 1.571" in (figures / "report.html").read_text()
