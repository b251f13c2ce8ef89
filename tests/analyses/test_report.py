"""The report page sizes each figure's frame to the figure."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

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


TODAYS_SECTIONS = ("seeds", "zoo", "layers", "latent", "faithfulness", "verbosity", "reasoning_direction", "sae", "routing",
                   "compute", "calibration", "rlsf", "shift", "shift_recovery", "novelty", "symbolic")


def test_the_default_config_is_the_first_zoos_report_with_its_sections_and_cache_keys():
    """No --base/--tuned: organism/base-s against sft, rl, dpo with base-m and base-l on the organism task, every
    section of the zoo's report in its order, and the analyses' configs (hence their cache keys) unchanged."""
    import dataclasses

    import analyses.report as rep
    from analyses import latent_reasoning as lr
    from analyses import sae_reasoning as sr
    from analyses import zoo_eval

    config = rep.ReportConfig(n_per_step=7)
    assert config.is_zoo and config.title() == rep.TITLE
    assert config.models == zoo_eval.ZOO
    assert tuple(rep.section_name(m) for m in rep.SECTIONS)[:len(TODAYS_SECTIONS)] == TODAYS_SECTIONS
    zoo = zoo_eval.ZooEvalConfig()
    assert rep.zoo_eval_config(config) == dataclasses.replace(zoo, eval=dataclasses.replace(zoo.eval, n_per_step=7))
    assert rep.latent_config(config) == dataclasses.replace(lr.LatentConfig(), n_per_step=14)
    assert rep.latent_config(config).key() == dataclasses.replace(lr.LatentConfig(), n_per_step=14).key()
    assert rep.sae_config(config) == dataclasses.replace(sr.SAEReasoningConfig(), n_test_per_step=7, n_val_per_step=7)
    # off the zoo the same builders name the report's models and task instead
    pair = rep.ReportConfig("a/base", ("a/tuned",), "jsonl:x.jsonl", ("a/large",), n_per_step=3, max_new_tokens=99)
    assert not pair.is_zoo and pair.models == ("a/base", "a/large", "a/tuned")
    ev = rep.zoo_eval_config(pair)
    assert ev.models == pair.models and ev.task == "jsonl:x.jsonl" and (ev.eval.n_per_step, ev.eval.max_new_tokens) == (3, 99)
    lat = rep.latent_config(pair)
    assert (lat.base, lat.models, lat.task, lat.n_per_step, lat.max_new_tokens) == ("a/base", pair.models, "jsonl:x.jsonl", 6, 99)
    sae = rep.sae_config(pair, n_layers=28)
    assert sae.hook == sae.sae.hook == "blocks.13.hook_resid_post" and sae.tuned == ("a/tuned",) and sae.task == "jsonl:x.jsonl"
    assert sae.max_new_tokens == 99 and sae.n_problems == sr.SAEReasoningConfig().n_problems
    assert rep.sae_config(pair, n_layers=28, task_items=1319).n_problems == 1319  # GSM8K's test split holds 1,319
    # the zoo's cached results keep their keys: a field added with its old value is left out of the key
    assert "max_new_tokens" not in sr.SAEReasoningConfig().key() and "max_new_tokens" in sae.key()


def test_zoo_sections_call_the_analyses_as_the_zoo_report_always_has(tmp_path, monkeypatch):
    """On the default config each section hands its analysis (out, n_per_step, png) and no pair or task."""
    import analyses.calibration.figures as cf
    import analyses.compute.figures as kf
    import analyses.faithfulness.figures as ff
    import analyses.layer_changes.section as ls
    import analyses.report as rep
    import analyses.routing.figures as rf
    import analyses.verbosity.figures as vf

    seen = {}

    def fake(name):
        def parts(out, n_per_step, png, *args, **kw):
            seen[name] = (out, n_per_step, png, args, kw)
            return (name, (f"{name} ran",), ())
        return parts

    monkeypatch.setattr(ls, "section_parts", fake("layers"))
    monkeypatch.setattr(ff, "section_parts", fake("faithfulness"))
    monkeypatch.setattr(vf, "verbosity_section_parts", fake("verbosity"))
    monkeypatch.setattr(vf, "reasoning_section_parts", fake("reasoning"))
    for mod, name in ((rf, "routing"), (kf, "compute"), (cf, "calibration")):
        monkeypatch.setattr(mod, "section_parts", lambda *a, name=name, **kw: (*fake(name)(*a, **kw), ""))
    config = rep.ReportConfig(n_per_step=150, png=False)
    for make in (rep.layers_section, rep.faithfulness_section, rep.verbosity_section, rep.reasoning_direction_section,
                 rep.routing_section, rep.compute_section, rep.calibration_section):
        assert rep.run_section(make, config, tmp_path).skipped == ""
    assert seen == {"layers": (tmp_path, 150, False, (), {}), "faithfulness": (tmp_path, 100, False, (), {}),
                    "verbosity": (tmp_path, 150, False, (), {}), "reasoning": (tmp_path, 150, False, (), {}),
                    "routing": (tmp_path, 150, False, (), {}), "compute": (tmp_path, 150, False, (), {}),
                    "calibration": (tmp_path, 150, False, (), {})}


def test_sections_written_for_the_zoo_only_are_skipped_on_a_pair_with_a_title(tmp_path):
    import analyses.report as rep

    pair = rep.ReportConfig("a/base", ("a/tuned",), "organism", ())
    def organism_only_section(out, n_per_step, png):
        """Something measured on the organism zoo (analyses.fake)."""
        raise AssertionError("a zoo-only section must not run on a pair")

    zoo_only = [m for m in rep.SECTIONS if not rep.takes_config(m)] + [organism_only_section]
    for make in zoo_only:
        s = rep.run_section(make, pair, tmp_path)
        assert "first zoo only" in s.skipped and s.title.endswith("(not run)") and s.figures == ()
        assert "analyses." not in s.title and s.sentences == (f"Not run: {s.skipped}.",)
    assert s.title == "Something measured on the organism zoo (not run)"
    assert s.skipped.endswith("it takes no pair or task")  # a section with no reason of its own
    # each of the report's zoo-only sections says why it cannot run on another pair
    assert {rep.section_name(m) for m in rep.SECTIONS if not rep.takes_config(m)} == set(rep.ZOO_ONLY)
    symbolic = rep.run_section(rep.symbolic_section, pair, tmp_path)
    assert "the shift section measures semantics vs symbols" in symbolic.skipped


def test_report_config_round_trips_and_refuses_what_cannot_be_a_report():
    import analyses.report as rep

    c = rep.ReportConfig.pair("organism/base-s", "organism/sft", scale=["organism/base-l"], n_per_step=5,
                              sections=("zoo",))
    assert c.task == "organism" and c.tuned == ("organism/sft",) and not c.is_zoo
    assert rep.ReportConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="at least one tuned"):
        rep.ReportConfig("organism/base-s", ())
    with pytest.raises(ValueError, match="named twice"):
        rep.ReportConfig("organism/base-s", ("organism/sft", "organism/sft"))
    with pytest.raises(TypeError, match="tuples"):
        rep.ReportConfig("organism/base-s", "organism/sft")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no task given"):
        rep.ReportConfig.pair("/some/folder", "/other/folder")


def test_a_sections_run_updates_those_sections_and_keeps_the_others(tmp_path, monkeypatch):
    """`--sections b` into a folder that holds the same report redoes b and keeps a and c, in report order;
    a report with another config starts afresh."""
    import analyses.report as rep

    runs = []

    def make(name, value):
        def section(config, out):
            runs.append(name)
            return Section(f"Section {name}", (f"{name} measured {value}",), ())
        section.__name__ = f"{name}_section"
        return section

    monkeypatch.setattr(rep, "SECTIONS", (make("a", 1), make("b", 2), make("c", 3)))
    rep.build_report(tmp_path, n_per_step=5, png=False, results=None)
    monkeypatch.setattr(rep, "SECTIONS", (make("a", 1), make("b", 20), make("c", 3)))
    rep.build_report(tmp_path, n_per_step=5, png=False, only=["b"], results=None)
    data = rep.read_json(tmp_path / "report.json")
    assert data["section_names"] == ["a", "b", "c"] and runs == ["a", "b", "c", "b"]
    assert [s["sentences"][0] for s in data["sections"]] == ["a measured 1", "b measured 20", "c measured 3"]
    rep.build_report(tmp_path, n_per_step=6, png=False, only=["c"], results=None)
    assert rep.read_json(tmp_path / "report.json")["section_names"] == ["c"]


def test_sections_of_a_report_written_before_newer_config_fields_are_kept(tmp_path, monkeypatch):
    """A report.json whose config predates fields added later (device, dtype, seeds) is the same report: a
    `--sections` run updates its sections instead of dropping the others."""
    import analyses.report as rep

    def a_section(config, out):
        """A (analyses.fake)."""
        return rep.Section("A", ("a",), ())

    def b_section(config, out):
        """B (analyses.fake)."""
        return rep.Section("B", (f"b {config.n_per_step}",), ())

    monkeypatch.setattr(rep, "SECTIONS", (a_section, b_section))
    rep.build_report(tmp_path, n_per_step=5, png=False, results=None)
    data = rep.read_json(tmp_path / "report.json")
    for k in ("device", "dtype", "seeds"):
        del data["config"][k]
    rep.write_json(tmp_path / "report.json", data)
    rep.build_report(tmp_path, n_per_step=5, png=False, only=["b"], results=None)
    assert rep.read_json(tmp_path / "report.json")["section_names"] == ["a", "b"]


def test_each_section_records_its_time_and_peak_memory(tmp_path):
    """The process's peak resident memory is taken afresh for each section, so a section that holds 300 MB
    shows it and the next, small one does not inherit it; the report's sentence names both figures."""
    import numpy as np

    import analyses.report as rep

    def big_section(config, out):
        """Holds 300 MB for a moment (analyses.fake)."""
        block = np.ones(300 * 2**20 // 8)  # written, so resident
        return rep.Section("big", (f"{block.sum():.0f}",), ())

    def small_section(config, out):
        """Holds nothing (analyses.fake)."""
        return rep.Section("small", ("ok",), ())

    from interp.benchmark import peak_rss_bytes

    config = rep.ReportConfig(png=False)
    before = peak_rss_bytes()
    big = rep.run_section(big_section, config, tmp_path)
    small = rep.run_section(small_section, config, tmp_path)
    assert big.peak_rss_bytes > small.peak_rss_bytes + 250 * 2**20 and small.peak_rss_bytes > 0
    assert small.peak_rss_bytes < max(before, big.peak_rss_bytes)
    assert big.peak_gpu_bytes == small.peak_gpu_bytes == 0  # on the CPU: no GPU figure, and none shown
    assert rep.Section.from_dict(big.to_dict()) == big
    said = rep.section_time(big)
    assert said.startswith("This section took ") and f"peak memory {big.peak_rss_bytes / 1e9:.1f} GB resident." in said
    # a section from a report.json written before memory was measured says only its time
    assert rep.section_time(rep.Section.from_dict({"title": "t", "sentences": [], "figures": [], "seconds": 3})) == (
        "This section took 3.0 s.")
