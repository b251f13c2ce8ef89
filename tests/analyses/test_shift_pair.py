"""Distribution shift on any pair (`analyses.shift.pair`): the tasks' own shifts, the shipped natural-language
zoo under them, the drop statistics, and the report's shift section off the zoo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import interp
from analyses.shift import pair
from interp.tasks import TaskShift

torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["organism", "organism-nl"])
def test_the_organisms_shift_to_longer_chains_and_unseen_names(name):
    task = interp.task(name)
    shifts = {s.name: s for s in task.shifts()}
    assert set(shifts) == {"length", "variables"} | ({"symbols", "swapped"} if name == "organism-nl" else set())
    longer = pair.condition_items(task, shifts["length"], 7, seed=3)
    assert len(longer) == 7 and sorted({it.meta["n_steps"] for it in longer}) == [5, 6]
    renamed = pair.condition_items(task, shifts["variables"], 5, seed=3)
    trained = set(task.config.variables)
    assert all(not (set(task.prompt(it).replace("Let", "").replace("What", "").split()) & trained - {"a"})
               for it in renamed) if name == "organism-nl" else True
    assert all(it.prompt.split()[2] not in trained for it in renamed) if name == "organism" else True
    # every item under a shift is still one the task grades: its reference chain gets full marks
    for it in longer + renamed:
        fmt = task.cot_formats[0]
        assert task.grade(it, task.completion(it, fmt)).correct
    assert json.loads(json.dumps(shifts["variables"].to_dict()))["knobs"]["variables"]


def test_the_natural_language_task_defines_its_operations_in_the_question():
    """Semantics vs symbols as shifts: new words defined at the start, or plus and minus swapped by definition;
    the values follow the definition, and the positions still find the prompt's numbers."""
    from interp.organism_nl.task import item_problem

    task = interp.task("organism-nl")
    shifts = {s.name: s for s in task.shifts()}
    items = task.sample(40, 1, **shifts["swapped"].knobs)
    assert all(it.prompt.startswith("Here plus means minus and minus means plus. Let ") for it in items)
    step = next(s for it in items for s in item_problem(it).steps if s.op == "+")
    assert step.value == (step.source_value + step.operand) % 10  # the question writes this step as 'minus'
    shown = next(it for it in items if any(s.op == "+" for s in item_problem(it).steps))
    p = item_problem(shown)
    i = next(k for k, s in enumerate(p.steps, 1) if s.op == "+")
    assert f"Let {p.steps[i - 1].target} be {p.steps[i - 1].source} minus {p.steps[i - 1].operand}." in shown.prompt
    for it in items[:10] + task.sample(10, 2, **shifts["symbols"].knobs):
        c = task.completion(it, "think")
        g, sp = task.grade(it, c), task.spans(it, c)
        q = item_problem(it)
        assert g.correct and g.steps_correct == q.n_steps
        assert it.prompt[slice(*sp["value.start"])] == str(q.start_value)
        assert [it.prompt[slice(*sp[f"operand.step{k}"])] for k in range(1, q.n_steps + 1)] == [
            str(s.operand) for s in q.steps]
    symbols = task.sample(3, 2, **shifts["symbols"].knobs)
    assert all("zap means plus" in it.prompt and " plus " not in it.prompt.split("times.", 1)[1] for it in symbols)
    # the plain task is what the zoo was trained on: its items and config dicts are unchanged by the knob
    assert "words" not in task.config.to_dict() and "words" not in task.sample(1, 0)[0].data


def test_a_task_read_from_a_file_offers_no_shift_and_the_analysis_says_so():
    task = interp.task("jsonl:gsm_synth")
    assert task.shifts() == ()
    with pytest.raises(ValueError, match="offers no distribution shift"):
        pair.run(pair.PairShiftConfig(models=("a", "b"), task="jsonl:gsm_synth", n=2), task=task)
    with pytest.raises(ValueError, match="the base and at least one tuned model"):
        pair.PairShiftConfig(models=("a",))


def test_drop_statistics_resample_each_draw_and_match_the_point_estimates():
    d, (lo, hi) = pair.drop_ci([True] * 2 + [False] * 8, [True] * 9 + [False], n_boot=2000)
    assert d == pytest.approx(0.2 - 0.9) and lo < d < hi < 0
    # a drop computed from identical draws has a degenerate interval at zero
    assert pair.drop_ci([True, False] * 5, [True, False] * 5, n_boot=200)[0] == 0.0


def test_the_natural_language_zoo_under_shift(tmp_path):
    """Real generations of the shipped members on 12 items per condition: the base and sft, cached on rerun."""
    cfg = pair.PairShiftConfig(models=("organism-nl/base", "organism-nl/sft"), n=12, cache_dir=str(tmp_path))
    result = pair.run_cached(cfg)
    assert [c["name"] for c in result.conditions] == [pair.IN_DISTRIBUTION, "length", "variables", "symbols",
                                                      "swapped"]
    assert len(result.cells) == 2 * 5 and all(len(c.correct) == 12 for c in result.cells)
    sft_in = result.cell("organism-nl/sft", pair.IN_DISTRIBUTION)
    assert sft_in.accuracy() >= 0.9 and all(sft_in.cot)  # sft thinks and is right in distribution
    # the paired gap and the drop change are consistent with the cells they are computed from
    v, ci = pair.drop_change_ci(result, "organism-nl/sft", "length")
    acc = {(c.model, c.condition): c.accuracy() for c in result.cells}
    expect = ((acc["organism-nl/sft", "length"] - acc["organism-nl/sft", pair.IN_DISTRIBUTION])
              - (acc["organism-nl/base", "length"] - acc["organism-nl/base", pair.IN_DISTRIBUTION]))
    assert v == pytest.approx(expect) and ci[0] <= v <= ci[1]
    said = pair.summary_sentences(result)
    assert len(said) == 1 + 2 + 4 and said[1].startswith("base: in distribution") and "paired" in said[3]
    as_json = lambda r: json.loads(json.dumps(r.to_dict()))
    again = pair.run_cached(cfg)  # read back from the cache: the same numbers
    assert as_json(again) == as_json(result)
    assert as_json(pair.PairShiftResult.from_dict(as_json(result))) == as_json(result)
    paths = pair.figures(result, tmp_path / "figs", png=False)
    assert paths["shift_pair_accuracy"][0].is_file()
    assert np.isfinite([c.accuracy() for c in result.cells]).all()


def test_task_shift_is_a_value():
    s = TaskShift("length", "5-6 steps", steps=(5, 6))
    assert s.to_dict() == {"name": "length", "description": "5-6 steps", "knobs": {}, "steps": [5, 6]}
