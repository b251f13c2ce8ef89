"""The natural-language task: rendering, grading any completion, named spans, config round trips."""

from __future__ import annotations

import pytest

from interp.organism_nl.task import (
    FORMATS,
    PHRASINGS,
    NLTask,
    NLTaskConfig,
    grade_problem,
    item_problem,
    sample_problems,
)


def test_prompt_reads_as_english_and_answers_follow_the_chain() -> None:
    p = sample_problems(0, 1, NLTaskConfig(), n_steps=3)[0]
    assert p.prompt().startswith(f"Let a be {p.start_value}. Let b be a ")
    assert p.prompt().endswith("What is d?")
    value = p.start_value
    for s in p.steps:
        assert s.source_value == value
        value = s.value
    assert p.answer == value
    assert p.completion("direct") == f" The answer is {p.answer}."


def test_every_reference_completion_grades_correct_with_all_steps() -> None:
    task = NLTask()
    for it in task.sample(40, seed=1):
        for fmt in FORMATS:
            g = task.grade(it, task.completion(it, fmt))
            assert g.valid and g.correct and g.format == fmt, (fmt, g)
            assert g.cot == (fmt != "direct")
            if g.cot:
                assert g.steps_written == g.steps_correct == it.meta["n_steps"]


def test_each_phrasing_grades_correct() -> None:
    p = sample_problems(3, 1, NLTaskConfig(), n_steps=4)[0]
    for ph in range(len(PHRASINGS)):
        g = grade_problem(p, p.completion("think", (ph,) * 4))
        assert g.correct and g.steps_correct == 4


@pytest.mark.parametrize("text,reason", [
    (" <think>\nb = 3.", "never closed"),
    (" The answer is unknown.", "no number"),
    ("", "no number"),
])
def test_unparseable_completions_are_invalid_with_a_reason(text: str, reason: str) -> None:
    it = NLTask().sample(1, seed=2)[0]
    g = NLTask().grade(it, text)
    assert not g.valid and not g.correct and reason in g.reason


def test_wrong_answer_and_wrong_step_are_counted() -> None:
    task = NLTask()
    it = task.sample(1, seed=4, n_steps=2)[0]
    p = item_problem(it)
    wrong = (p.answer + 1) % 10
    text = f" <think>\nb = {(p.steps[0].value + 1) % 10}.\nc = {p.answer}.\n</think> The answer is {wrong}."
    g = task.grade(it, text)
    assert g.valid and not g.correct and g.steps_written == 2 and g.steps_correct == 1


def test_spans_name_prompt_digits_steps_and_answer() -> None:
    task = NLTask()
    it = task.sample(1, seed=5, n_steps=3)[0]
    comp = task.completion(it, "think")
    text = it.prompt + comp
    sp = task.spans(it, comp)
    p = item_problem(it)
    assert text[slice(*sp["answer"])] == "?"
    assert text[slice(*sp["value.start"])] == str(p.start_value)
    for i, s in enumerate(p.steps, 1):
        assert text[slice(*sp[f"operand.step{i}"])] == str(s.operand)
        assert text[slice(*sp[f"value.step{i}"])] == str(s.value)
        assert text[slice(*sp[f"step{i}"])].endswith(".")
    assert text[slice(*sp["think_open"])] == "<think>" and text[slice(*sp["think_close"])] == "</think>"
    assert text[slice(*sp["answer_number"])] == str(p.answer)
    assert set(task.spans(it)) == {"answer", "value.start", "operand.step1", "operand.step2", "operand.step3"}


def test_sampling_is_seeded_and_reference_phrasing_fixed_per_item() -> None:
    task = NLTask()
    a, b = task.sample(10, seed=7), task.sample(10, seed=7)
    assert [i.to_dict() for i in a] == [i.to_dict() for i in b]
    assert [task.completion(i, "think") for i in a] == [task.completion(i, "think") for i in b]
    assert {i.meta["n_steps"] for i in task.sample(50, seed=0, n_steps=6)} == {6}


def test_config_round_trips_and_rejects_bad_knobs() -> None:
    cfg = NLTaskConfig(min_steps=2, max_steps=5, ops=("+",), phrasings=(1, 3))
    assert NLTaskConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="min_steps"):
        NLTaskConfig(min_steps=3, max_steps=2)
    with pytest.raises(ValueError, match="phrasings"):
        NLTaskConfig(phrasings=(9,))
    with pytest.raises(ValueError, match="unknown task knobs"):
        NLTaskConfig.from_dict({"steps": 3})
    with pytest.raises(ValueError, match="variables"):
        NLTaskConfig(max_steps=8)
