"""analyses.shift: each transform changes exactly what it says (seeded), the chain grader on constructed chains,
the drop bookkeeping on constructed outcomes, and a tiny end-to-end run on base-s."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import numpy as np
import pytest
import torch

from analyses.shift.analysis import Condition, MemberShift, ShiftConfig, drops, measure, measure_many
from analyses.shift.grading import chain_distance, edit_distance, grade_chain
from analyses.shift.transforms import (
    DEFAULT_SHIFTS,
    IN_DISTRIBUTION,
    Shift,
    as_shown,
    noise_words,
    operand_first,
    perturb,
    shifted_problems,
)
from interp.organism.grader import grade
from interp.organism.task import Problem, Step, apply_op, sample_problems

torch.set_num_threads(1)
SHIFTS = {s.name: s for s in DEFAULT_SHIFTS}
# a = 3 ; b = a + 4 (7) ; c = b * 2 (4) ; c ?
P = Problem("a", 3, (Step("b", "a", "+", 4, 3, 7), Step("c", "b", "*", 2, 7, 4)))
TRUTH = (("b", 7), ("c", 4))


def test_separator_and_renaming_change_only_separators_and_names() -> None:
    base = shifted_problems(IN_DISTRIBUTION, 3, 20, seed=5)
    sep = shifted_problems(SHIFTS["separator ,"], 3, 20, seed=5)
    ren = shifted_problems(SHIFTS["renamed variables"], 3, 20, seed=5)
    rename = dict(zip("abcd", "pqrs"))
    for b, s, r in zip(base, sep, ren):
        assert [("," if w == ";" else w) for w in b.prompt] == list(s.prompt)
        assert [rename.get(w, w) for w in b.prompt] == list(r.prompt)
        assert b.answer == s.answer == r.answer and [v for _, v in b.truth] == [v for _, v in r.truth]
        assert [rename[n] for n, _ in b.truth] == [n for n, _ in r.truth]


def test_operand_first_reverses_each_step_and_recomputes_values() -> None:
    s = operand_first(P)
    assert " ".join(s.prompt) == "Q : a = 3 ; b = 4 + a ; c = 2 * b ; c ? A :"
    assert s.truth == (("b", 7), ("c", 4))  # + and * commute
    q = Problem("a", 3, (Step("b", "a", "-", 9, 3, 4),))  # 3 - 9 = 4, but 9 - 3 = 6
    t = operand_first(q)
    assert t.truth == (("b", 6),) and t.answer == 6 and apply_op(9, "-", 3) == 6
    assert " ".join(t.reference("verbose")) == "b = 9 - a = 9 - 3 = 6 ; so b = 6"
    assert grade_chain(t.truth, t.answer, t.reference("verbose")).chain_correct


@pytest.mark.parametrize("kind", ["insertion", "deletion", "substitution"])
def test_noise_edits_only_the_body_with_task_words_at_the_rate(kind: str) -> None:
    problems = sample_problems(3, 400)
    rng = np.random.default_rng(0)
    edits, body_total = 0, 0
    for p in problems:
        words, vocab = p.prompt_tokens(), noise_words(p)
        out = perturb(words, kind, 0.2, rng, vocab)
        assert out[:2] == ("Q", ":") and out[-2:] == ("A", ":")
        body, new = words[2:-2], list(out[2:-2])
        body_total += len(body)
        if kind == "substitution":
            assert len(new) == len(body)
            changed = [(a, b) for a, b in zip(body, new) if a != b]
            assert all(b in vocab for _, b in changed)
            edits += len(changed)
        else:
            short_, long_ = (new, body) if kind == "deletion" else (body, new)
            it = iter(long_)
            assert all(w in it for w in short_), "the shorter sequence must be a subsequence of the longer"
            if kind == "insertion":  # what was added is task words
                assert all(w in vocab for w in (Counter(new) - Counter(body)).elements())
            edits += abs(len(new) - len(body))
    assert 0.17 < edits / body_total < 0.23
    again = perturb(problems[0].prompt_tokens(), kind, 0.2, np.random.default_rng(7), noise_words(problems[0]))
    assert again == perturb(problems[0].prompt_tokens(), kind, 0.2, np.random.default_rng(7), noise_words(problems[0]))
    with pytest.raises(ValueError, match="noise kind"):
        perturb(problems[0].prompt_tokens(), "swap", 0.1, rng, noise_words(problems[0]))


def test_shifted_problems_are_seeded_and_paired_where_said() -> None:
    for s in DEFAULT_SHIFTS:
        a = shifted_problems(s, s.steps[-1], 10, seed=11)
        assert a == shifted_problems(s, s.steps[-1], 10, seed=11)
        assert all(p.n_steps == s.steps[-1] for p in a)
    noisy = shifted_problems(SHIFTS["deletion 0.1"], 4, 50, seed=11)
    clean = shifted_problems(IN_DISTRIBUTION, 4, 50, seed=11)
    assert [p.answer for p in noisy] == [p.answer for p in clean] and noisy != clean
    assert SHIFTS["deletion 0.1"].paired and not SHIFTS["shuffled variables"].paired
    assert {n for p in shifted_problems(SHIFTS["2 distractors"], 2, 20, 0) for n in p.prompt} >= {"x", "y"}


def test_chain_grader_counts_answer_and_chain_apart() -> None:
    right = grade_chain(TRUTH, 4, ["b", "=", "7", ";", "c", "=", "4", ";", "so", "4"])
    assert right.chain_correct and right.correct and right.outcome == "right_chain_right_answer"
    lucky = grade_chain(TRUTH, 4, ["b", "=", "8", ";", "c", "=", "4", ";", "so", "4"])  # a wrong step, right answer
    assert lucky.correct and not lucky.chain_correct and lucky.outcome == "wrong_chain_right_answer"
    slip = grade_chain(TRUTH, 4, ["b", "=", "7", ";", "c", "=", "4", ";", "so", "5"])  # right chain, wrong answer
    assert slip.chain_correct and not slip.correct and slip.outcome == "right_chain_wrong_answer"
    short = grade_chain(TRUTH, 4, ["c", "=", "4", ";", "so", "4"])  # a missing step is not a right chain
    assert not short.chain_correct and short.steps_written == 1
    bad = grade_chain(TRUTH, 4, ["b", "=", "a", "+", "4", "=", "3", "+", "4", "=", "8", ";", "c", "=", "b", "*", "2", "=", "8", "*", "2", "=", "6", ";", "so", "c", "=", "6"])
    assert bad.format == "verbose" and bad.inconsistent_steps == 1 and bad.steps_correct == 0
    renamed = grade_chain((("q", 7), ("r", 4)), 4, ["b", "=", "7", ";", "c", "=", "4", ";", "so", "4"])
    assert renamed.chain_correct and renamed.names_right == 0
    assert grade_chain(TRUTH, 4, ["4"]).outcome is None and grade_chain(TRUTH, 4, ["so"]).format == "invalid"


def test_chain_grader_agrees_with_the_organism_grader_on_unshifted_answers() -> None:
    rng = np.random.default_rng(0)
    for p in sample_problems(1, 200):
        fmt = ("direct", "concise", "verbose")[int(rng.integers(3))]
        words = p.completion_tokens(fmt)
        if rng.random() < 0.5:  # corrupt one word with a task word
            words[int(rng.integers(len(words)))] = str(rng.choice(["3", "b", "so", ";", "+", "="]))
        mine, theirs = grade_chain(as_shown(p).truth, p.answer, words), grade(p, words)
        assert (mine.format, mine.answer, mine.correct) == (theirs.format, theirs.answer, theirs.correct), words


def test_edit_distance_equals_the_dynamic_programme_on_random_word_sequences() -> None:
    def table(a: list[str], b: list[str]) -> int:  # the textbook DP, row by row
        prev = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            cur = [i]
            for j, y in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
            prev = cur
        return prev[-1]

    rng = random.Random(0)
    for _ in range(2000):  # lengths 0-80 cross Python's machine-word boundary of the bit vectors
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 80))]
        b = [rng.choice(["a", "b", "c", "f", "so"]) for _ in range(rng.randint(0, 80))]
        assert edit_distance(a, b) == table(a, b)


def test_edit_distance() -> None:
    assert edit_distance(["a", "b", "c"], ["a", "b", "c"]) == 0
    assert edit_distance(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert edit_distance(["a", "b"], ["a", "b", "c", "d"]) == 2
    refs = {f: as_shown(P).reference(f) for f in ("concise", "verbose")}
    assert chain_distance(list(refs["verbose"]) + ["<eos>", "junk"], refs) == 0.0
    assert chain_distance(["b", "=", "8", ";", "c", "=", "4", ";", "so", "4"], refs) == pytest.approx(1 / 10)  # one substitution in 10 words


def _cond(name: str, correct: list[int]) -> Condition:
    n = len(correct)
    return Condition(name, (1,) * n, tuple(correct), (0,) * n, (0,) * n, (0,) * n, (0,) * n, (0,) * n,
                     (float("nan"),) * n, ())


def test_drops_compare_each_member_with_the_baseline_on_shared_resamples() -> None:
    shift = Shift("noisy", "format", "noise", noise="deletion", rate=0.1)
    cfg = ShiftConfig(models=("b", "t", "u"), shifts=(IN_DISTRIBUTION, shift), baseline="b", n_per_step=2,
                      n_boot=500)
    ones = [1] * 100
    members = [MemberShift("b", "x", (_cond("in-distribution", ones), _cond("noisy", [1, 0] * 50))),  # drop 0.5
               MemberShift("t", "x", (_cond("in-distribution", ones), _cond("noisy", [0] * 100))),  # drop 1.0
               MemberShift("u", "x", (_cond("in-distribution", ones), _cond("noisy", [1, 0] * 50)))]  # same
    d = {x.model: x for x in drops(members, cfg)}
    assert d["t"].drop.value == pytest.approx(1.0) and d["t"].vs_baseline.value == pytest.approx(0.5)
    assert d["t"].verdict == "more" and d["b"].verdict == "baseline"
    assert d["u"].vs_baseline.value == 0 and d["u"].vs_baseline.ci == (0.0, 0.0) and d["u"].verdict == "same"
    assert d["b"].retention.value == pytest.approx(0.5)


def test_measure_on_base_s_is_deterministic_and_counts_every_problem() -> None:
    import interp

    model = interp.load("organism/base-s")
    probs = shifted_problems(IN_DISTRIBUTION, 2, 6, seed=3) + shifted_problems(SHIFTS["renamed variables"], 2, 6, 3)
    a = measure(model, probs, "mixed", max_new_tokens=40)
    assert a.to_dict() == measure(model, probs, "mixed", max_new_tokens=40).to_dict()  # NaN distances: dicts
    assert len(a.correct) == 12 and set(a.n_steps) == {2}
    sc = a.scores(100)
    assert sc["accuracy"].n == 12 and 0 <= sc["accuracy"].value <= 1
    rt = Condition.from_dict(a.to_dict())
    assert rt.correct == a.correct and np.array_equal(np.isnan(rt.arr("distance")), np.isnan(a.arr("distance")))
    with pytest.raises(ValueError, match="does not know"):
        measure(model, [dataclasses.replace(probs[0], prompt=("Q", ":", "zz", "A", ":"))], "x")


def test_measure_many_gives_each_condition_as_measure_does() -> None:
    import interp

    model = interp.load("organism/base-s")
    named = [("in", shifted_problems(IN_DISTRIBUTION, 3, 5, seed=4)),
             ("sep", shifted_problems(SHIFTS["separator ,"], 1, 4, seed=4)),
             ("distr", shifted_problems(SHIFTS["2 distractors"], 2, 3, seed=4))]
    many = measure_many(model, named, max_new_tokens=40, batch_size=4)  # batches cut across conditions
    assert [c.shift for c in many] == ["in", "sep", "distr"]
    for (name, probs), c in zip(named, many):
        assert json.dumps(c.to_dict()) == json.dumps(measure(model, probs, name, max_new_tokens=40).to_dict())
