"""The percent-format example scripts run top to bottom as plain scripts."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.py"))
# what each script must print and write (a script not listed here must at least run)
EXPECT = {
    "zoo_tour.py": (("forced CoT", "logit-lens accuracy by layer"), ("logit_lens_base_s.html",)),
    "probing.py": (("selectivity by layer", "on sft (all problems)"), ("probe_selectivity_base_s.html",)),
    "steering.py": (("held-out AUROC", "verbosity direction, gamma 0.625"), ("steering_length_vs_accuracy.html",
                                                                           "verbosity_direction.json")),
}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_script_runs(script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert script.read_text().startswith("# %%"), "examples are percent-format notebooks"
    monkeypatch.setenv("TOUR_N", "20")
    monkeypatch.setenv("TOUR_OUT", str(tmp_path))
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    printed, written = EXPECT.get(script.name, ((), ()))
    assert all(p in out for p in printed), out[-2000:]
    assert all((tmp_path / f).exists() for f in written)


def test_there_is_at_least_one_example():
    assert EXAMPLES
