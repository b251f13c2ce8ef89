"""The report's sections run in parallel processes give the same report as one process, with a progress line."""

from __future__ import annotations

import io
import json
import os
import re
import time

import pytest

import analyses.report as rep
from analyses.report_jobs import TYPICAL_SECONDS, Progress, expected_seconds


def slow_section(config, out):
    """A section standing in for a long analysis (analyses.fake)."""
    (out / f"pid_slow_{os.getpid()}").touch()
    time.sleep(0.3)  # long enough to be timed (the page states each timed section's time)
    return rep.Section("Slow", (f"measured {config.n_per_step * 3}",), ())


def quick_section(config, out):
    """A section standing in for a short analysis (analyses.fake)."""
    (out / f"pid_quick_{os.getpid()}").touch()
    return rep.Section("Quick", (f"measured {config.n_per_step + 1}",), ())


def zoo_only_section(out, n_per_step, png):
    """A section written for the zoo only (analyses.fake)."""
    return rep.Section("Zoo only", (f"n {n_per_step}",), ())


def broken_section(config, out):
    """A section whose analysis fails (analyses.fake)."""
    raise RuntimeError("the analysis broke")


def _sections(path):
    data = json.loads((path / "report.json").read_text())
    return data["section_names"], [{k: v for k, v in s.items() if k not in rep.COST_FIELDS} for s in data["sections"]]


def test_parallel_sections_give_the_report_one_process_gives(tmp_path, monkeypatch):
    monkeypatch.setattr(rep, "SECTIONS", (slow_section, quick_section, zoo_only_section))
    rep.build_report(tmp_path / "one", n_per_step=4, png=False, results=None, jobs=1)
    rep.build_report(tmp_path / "two", n_per_step=4, png=False, results=None, jobs=2)
    assert _sections(tmp_path / "one") == _sections(tmp_path / "two")
    assert _sections(tmp_path / "two")[0] == ["slow", "quick", "zoo_only"]  # report order, not finishing order
    pids = {p.name.split("_")[-1] for p in (tmp_path / "two").glob("pid_*")}
    assert os.getpid() not in {int(p) for p in pids}  # the sections ran in worker processes
    assert json.loads((tmp_path / "two" / "report.json").read_text())["jobs"] == 2
    page = (tmp_path / "two" / "report.html").read_text()
    assert re.search(r"This section took \d\.\d s[.;]", page)  # the slow section (0.3 s) is timed


def test_a_failing_section_fails_the_parallel_zoo_report(tmp_path, monkeypatch):
    monkeypatch.setattr(rep, "SECTIONS", (quick_section, broken_section))
    with pytest.raises(RuntimeError, match="the analysis broke"):
        rep.build_report(tmp_path, n_per_step=2, png=False, results=None, jobs=2)


def test_progress_line_counts_sections_and_rescales_its_estimate():
    stream = io.StringIO()
    p = Progress(expected_seconds(["a", "b", "c"], {"a": 10, "b": 20, "c": 30}), jobs=2, stream=stream)
    assert p.seconds_left() == 30  # (10 + 20 + 30) / 2 workers, no less than the longest
    p.start("a")
    p.finish("a", 20.0)  # took twice its expectation: the rest is expected to as well
    assert p.scale() == 2.0 and p.seconds_left() == 60  # max((40 + 60) / 2, 60)
    line = stream.getvalue().strip()
    assert line.startswith("report: 1/3 sections done (a 20 s)") and "about 1m00s left" in line
    p.finish("b", 0.2)  # skipped at once: it does not rescale the estimate
    assert p.scale() == 2.0
    p.done["b"] = 40.0
    p.finish("c", 60.0)
    assert "left" not in p.line("c") and "3/3 sections done" in p.line("c")
    assert expected_seconds(["x"], {}) == {"x": 120.0}  # unknown sections get a flat guess


def test_expected_seconds_never_trust_a_time_read_from_the_cache():
    typical = TYPICAL_SECONDS["verbosity"]
    assert expected_seconds(["verbosity"], {"verbosity": 5.0}) == {"verbosity": typical}  # a cached run's time
    assert expected_seconds(["verbosity"], {"verbosity": typical + 60}) == {"verbosity": typical + 60}
    assert expected_seconds(["verbosity"], {}) == {"verbosity": typical}
    order = sorted(TYPICAL_SECONDS, key=lambda n: -expected_seconds([n])[n])
    assert order[0] == "verbosity"  # an empty cache starts the longest section first
