"""`interp report --seeds`: the "What holds across seeds" section comes first and every headline sentence of
the other sections carries its seed verdict, replaced (never repeated) when the report is rerun."""

from __future__ import annotations

import json

import pytest

import analyses.report as rep
from analyses.replication import section as repl
from analyses.replication.analysis import ReplicationConfig, ReplicationResult, aggregate
from analyses.replication.findings import Measure


def _result(tmp_path, gaps):
    metrics = {s: {"layers.rl.top_gap": Measure(g, (g - 0.1, g + 0.1)), "layers.rl.top_is_best": Measure(1.0)}
               for s, g in gaps.items()}
    return ReplicationResult(ReplicationConfig(cache_dir=str(tmp_path)), {s: {} for s in gaps}, {}, metrics,
                             aggregate(metrics), {}, {s: {} for s in gaps}, {s: {} for s in gaps}, {})


def headline_section(config, out):
    """A zoo section with one headline sentence (analyses.fake)."""
    return rep.Section("Layers", ("Answer for rl vs base-s: it sits in layer 3.", "Unchecked sentence."), ())


def other_section(config, out):
    """A zoo section whose findings the replicas do not recheck (analyses.fake)."""
    return rep.Section("Other", ("Something measured once.",), ())


def test_seed_verdicts_are_appended_to_headlines_and_replaced_on_a_rerun(tmp_path, monkeypatch):
    gaps = {0: 0.96, 1: 0.71, 2: 0.30}

    def fake_replication(config, out, seeds):
        sentences, figs, table = repl.write(_result(tmp_path, {s: gaps[s] for s in seeds}), out, png=False)
        return rep.Section(rep.SEEDS_TITLE, tuple(sentences), tuple(figs), table)

    monkeypatch.setattr(repl, "replication_section", fake_replication)
    monkeypatch.setattr(rep, "SECTIONS", (rep.seeds_section, headline_section, other_section))
    out = tmp_path / "figures"
    rep.build_report(out, png=False, results=None, config=rep.ReportConfig(png=False, seeds=(0, 1, 2)))
    data = json.loads((out / "report.json").read_text())
    assert data["section_names"] == ["seeds", "headline", "other"] and data["sections"][0]["title"] == rep.SEEDS_TITLE
    first, second = data["sections"][1]["sentences"]
    assert first.endswith("Across seeds: rl's behaviour sits in the top layer: 2 of 3 seeds (most seeds).")
    assert second == "Unchecked sentence."
    assert data["sections"][2]["sentences"] == [rep.ONE_RUN, "Something measured once."]
    gaps[2] = 0.9  # a rerun of the seeds section alone: the verdict is replaced in the kept section
    rep.build_report(out, png=False, results=None, config=rep.ReportConfig(png=False, seeds=(0, 1, 2),
                                                                           sections=("seeds",)))
    first = json.loads((out / "report.json").read_text())["sections"][1]["sentences"][0]
    assert first.count("Across seeds") == 1 and first.endswith("3 of 3 seeds (every seed).")
    assert json.loads((out / "report.json").read_text())["sections"][2]["sentences"].count(rep.ONE_RUN) == 1
    # without --seeds the section says how to get the verdicts, and no sentence claims one
    rep.build_report(out, png=False, results=None, config=rep.ReportConfig(png=False))
    data = json.loads((out / "report.json").read_text())
    assert "--seeds 0,1,2" in data["sections"][0]["skipped"]
    assert "Across seeds" not in data["sections"][1]["sentences"][0]
    assert data["sections"][2]["sentences"] == ["Something measured once."]


def test_seeds_are_checked():
    with pytest.raises(ValueError, match="distinct"):
        rep.ReportConfig(seeds=(0, 0))
    assert rep.ReportConfig.from_dict(rep.ReportConfig(seeds=(0, 2)).to_dict()).seeds == (0, 2)


def test_faithfulness_routing_and_calibration_sections_carry_verdicts_not_the_one_run_sentence(tmp_path):
    metrics = {s: {"faith.rl.aoc_diff": Measure(d), "faith.rl.mistake_last": Measure(1.0),
                   "route.sft.first_gap": Measure(1.0, (1.0, 1.0)), "route.sft.random_gap": Measure(0.0),
                   "calib.dpo.ece_diff": Measure(-0.09, (-0.12, -0.06))} for s, d in {0: 0.03, 1: -0.08, 2: 0.0}.items()}
    result = ReplicationResult(ReplicationConfig(cache_dir=str(tmp_path)), {s: {} for s in metrics}, {}, metrics,
                               aggregate(metrics), {}, {s: {} for s in metrics}, {s: {} for s in metrics}, {})
    repl.write(result, tmp_path, png=False)
    sections = [("seeds", rep.Section(rep.SEEDS_TITLE, ("x",), ())),
                ("faithfulness", rep.Section("F", ("rl against base-s: 3 steps ...", "Other."), ())),
                ("routing", rep.Section("R", ("Routing only the first completion token to sft (a position) ...",), ())),
                ("calibration", rep.Section("C", ("Free-generation ECE of dpo minus base-s: -0.09.",), ())),
                ("sae", rep.Section("S", ("Features.",), ()))]
    got = {n: s.sentences for n, s in rep.with_seed_verdicts(sections, tmp_path)}
    assert got["faithfulness"][0].endswith("Across seeds: Post-training does not make rl's chain of thought less "
                                           "causally used than base-s's: 2 of 3 seeds (most seeds).")
    assert got["routing"][0].endswith("3 of 3 seeds (every seed).") and rep.ONE_RUN not in got["routing"]
    assert got["calibration"][0].endswith("Across seeds: dpo's free answers are better calibrated than base-s's: "
                                          "3 of 3 seeds (every seed).")
    assert got["sae"] == (rep.ONE_RUN, "Features.")
