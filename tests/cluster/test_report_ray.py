"""`interp report --ray`: the sections run as Ray tasks, their files come back from the node that ran them, and
the report is the one a single process writes."""

from __future__ import annotations

import json

import analyses.report as rep


def figure_section(config, out):
    """A section that writes a figure file (analyses.fake)."""
    (out / "fig_a.html").write_text(f"<html>{config.n_per_step * 2}</html>")
    return rep.Section("With a figure", (f"measured {config.n_per_step * 2}",), ("fig_a.html",))


def plain_section(config, out):
    """A section with sentences only (analyses.fake)."""
    return rep.Section("Plain", (f"measured {config.n_per_step - 1}",), ())


def _sections(path):
    data = json.loads((path / "report.json").read_text())
    return data["section_names"], [{k: v for k, v in s.items() if k not in rep.COST_FIELDS} for s in data["sections"]]


def test_report_sections_on_ray_match_one_process(ray_local, tmp_path, monkeypatch):
    monkeypatch.setattr(rep, "SECTIONS", (figure_section, plain_section))
    rep.build_report(tmp_path / "one", n_per_step=5, png=False, results=None, jobs=1)
    rep.build_report(tmp_path / "ray", n_per_step=5, png=False, results=None, ray=True)
    assert _sections(tmp_path / "one") == _sections(tmp_path / "ray")
    assert (tmp_path / "ray" / "fig_a.html").read_text() == "<html>10</html>"  # carried back from the task's node
    assert json.loads((tmp_path / "ray" / "report.json").read_text())["jobs"] == "ray"
