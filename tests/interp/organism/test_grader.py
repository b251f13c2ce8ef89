"""Behaviour of the grader: formats, steps, answers, and malformed text that never raises."""

from __future__ import annotations

import numpy as np
import pytest

from interp.organism.grader import STOP_TOKENS, Grade, grade
from interp.organism.task import FORMATS, Problem, Step, TaskConfig, sample_problems, vocabulary

# `Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A :` (DESIGN.md)
P = Problem("a", 3, (Step("b", "a", "+", 4, 3, 7), Step("c", "b", "*", 2, 7, 4)))

DIRECT = "4"
CONCISE = "b = 7 ; c = 4 ; so 4"
VERBOSE = "b = a + 4 = 3 + 4 = 7 ; c = b * 2 = 7 * 2 = 4 ; so c = 4"


def _property_problems() -> list[Problem]:
    """Many problems of 1-6 steps, plain, with distractors, with ',' and with renamed shuffled variables."""
    cfgs = [
        TaskConfig(min_steps=1, max_steps=6),
        TaskConfig(min_steps=1, max_steps=6, n_distractors=3),
        TaskConfig(min_steps=1, max_steps=6, separator=",", n_distractors=2),
        TaskConfig(min_steps=1, max_steps=6, variables="pqrstuvw", shuffle_variables=True),
    ]
    return [p for i, cfg in enumerate(cfgs) for p in sample_problems(100 + i, 150, cfg)]


PROPERTY_PROBLEMS = _property_problems()


# ---------------------------------------------------------------- correct answers


@pytest.mark.parametrize(
    "text, fmt, steps",
    [(DIRECT, "direct", 0), (CONCISE, "concise", 2), (VERBOSE, "verbose", 2)],
)
def test_grader_accepts_each_correct_format_of_design_problem(text, fmt, steps):
    g = grade(P, text)
    assert g == Grade(True, fmt, steps, steps, 4, True, len(text.split()), "")


def test_grader_accepts_a_list_of_tokens():
    for text in (DIRECT, CONCISE, VERBOSE):
        assert grade(P, text.split()) == grade(P, text)


def test_grader_accepts_comma_separator():
    g = grade(P, "b = 7 , c = 4 , so 4")
    assert g.valid and g.correct and g.format == "concise" and g.steps_written == 2


def test_every_rendered_format_of_every_sampled_problem_grades_correct():
    steps_seen = set()
    for p in PROPERTY_PROBLEMS:
        steps_seen.add(p.n_steps)
        for fmt in FORMATS:
            comp = p.completion_tokens(fmt)
            g = grade(p, p.completion(fmt))
            assert g.valid, (p.prompt(), p.completion(fmt), g.reason)
            assert g.correct and g.answer == p.answer
            assert g.format == fmt
            want_steps = 0 if fmt == "direct" else p.n_steps
            assert g.steps_written == want_steps and g.steps_correct == want_steps
            assert g.n_tokens == len(comp)
            assert g.reason == ""
            # the same as tokens, and followed by a stop token and junk after it
            assert grade(p, comp) == g
            assert grade(p, comp + ["<eos>", "7", "Q"]) == g
    assert steps_seen == {1, 2, 3, 4, 5, 6}


def test_changing_the_final_answer_of_any_sampled_problem_makes_it_wrong_but_valid():
    for p in PROPERTY_PROBLEMS[::3]:
        wrong = str((p.answer + 1) % 10)
        for fmt in FORMATS:
            toks = p.completion_tokens(fmt)
            toks[-1] = wrong
            g = grade(p, toks)
            assert g.valid and g.format == fmt
            assert not g.correct and g.answer == int(wrong)


# ---------------------------------------------------------------- wrong answers and steps


def test_wrong_direct_answer_is_valid_but_incorrect():
    g = grade(P, "5")
    assert g.valid and g.format == "direct" and g.answer == 5 and not g.correct


def test_wrong_concise_answer_is_valid_but_incorrect():
    g = grade(P, "b = 7 ; c = 5 ; so 5")
    assert g.valid and g.format == "concise"
    assert g.steps_written == 2 and g.steps_correct == 1
    assert g.answer == 5 and not g.correct


def test_wrong_verbose_final_step_counts_only_correct_steps():
    g = grade(P, "b = a + 4 = 3 + 4 = 7 ; c = b * 2 = 7 * 2 = 5 ; so c = 5")
    assert g.valid and g.format == "verbose"
    assert (g.steps_written, g.steps_correct, g.answer, g.correct) == (2, 1, 5, False)


def test_wrong_intermediate_concise_step_is_counted_but_right_answer_stays_correct():
    g = grade(P, "b = 8 ; c = 4 ; so 4")
    assert g.valid and g.steps_written == 2 and g.steps_correct == 1 and g.correct


def test_wrong_intermediate_verbose_step_is_counted():
    g = grade(P, "b = a + 4 = 3 + 4 = 8 ; c = b * 2 = 7 * 2 = 4 ; so c = 4")
    assert g.valid and g.format == "verbose" and g.steps_written == 2
    assert g.steps_correct < 2
    assert g.correct  # the final answer is still right


def test_verbose_step_with_wrong_operator_or_operand_is_not_correct():
    g = grade(P, "b = a - 4 = 3 - 4 = 9 ; c = b * 2 = 9 * 2 = 8 ; so c = 8")
    assert g.valid and g.steps_correct <= 1 and not g.correct
    g = grade(P, "b = a + 5 = 3 + 5 = 8 ; c = b * 2 = 8 * 2 = 6 ; so c = 6")
    assert g.valid and g.steps_correct <= 1 and not g.correct


def test_steps_not_in_the_problem_count_as_written_but_not_correct():
    g = grade(P, "x = 7 ; b = 7 ; c = 4 ; so 4")
    assert g.valid and g.steps_written == 3 and g.steps_correct == 2 and g.correct


def test_fewer_steps_than_the_problem_are_graded_by_their_answer():
    g = grade(P, "c = 4 ; so 4")
    assert g.valid and g.steps_written == 1 and g.steps_correct == 1 and g.correct


# ---------------------------------------------------------------- malformed text


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("<eos>", "empty"),
        ("Q", "not a digit"),
        ("12", "not a digit"),
        ("? ? = : A", "without a closing 'so'"),
        ("b = 7 ; c = 4 ;", "without a closing 'so'"),
        ("b = 7 ; c = 4 ; 4", "without a closing 'so'"),
        ("b = a + 4 = 3 + 4 =", "without a closing 'so'"),
        ("so 4", "'so' without any step"),
        ("b = 7 ; c = b * 2 = 7 * 2 = 4 ; so 4", "mixes concise and verbose"),
        ("b = a + 4 = 3 + 4 ; c = 4 ; so 4", "unparseable step 'b = a + 4 = 3 + 4'"),
        ("b = a + 4 = 3 * 4 = 7 ; so c = 7", "unparseable step"),
        ("b = 7 ; ; c = 4 ; so 4", "unparseable step ''"),
        ("b = 7 ; c = 4 ; so c = 4", "closing 'so c = 4' does not fit the concise format"),
        ("b = a + 4 = 3 + 4 = 7 ; c = b * 2 = 7 * 2 = 4 ; so 4", "does not fit the verbose format"),
        ("b = 7 ; c = 4 ; so", "closing 'so' does not fit"),
        ("b = 7 ; c = 4 ; so 4 4", "does not fit the concise format"),
        ("b = 7 ; c = 4 ; so 4 so 4", "does not fit"),
    ],
)
def test_malformed_text_is_invalid_with_a_reason(text, reason):
    g = grade(P, text)
    assert not g.valid and g.format == "invalid"
    assert g.answer is None and not g.correct
    assert g.steps_written == 0 and g.steps_correct == 0
    assert reason in g.reason


def test_grader_marks_text_without_so_invalid():
    g = grade(P, "b = 7 ; c = 4")
    assert not g.valid and "so" in g.reason


def test_invalid_grade_counts_tokens_before_the_stop():
    assert grade(P, "Q Q Q <eos> 4").n_tokens == 3


@pytest.mark.parametrize("stop", STOP_TOKENS)
def test_stop_tokens_cut_the_text(stop):
    g = grade(P, f"4 {stop} b = 7 ; so 9")
    assert g.valid and g.format == "direct" and g.correct and g.n_tokens == 1
    g = grade(P, f"{CONCISE} {stop} {stop} garbage")
    assert g.valid and g.format == "concise" and g.correct and g.n_tokens == len(CONCISE.split())


def test_text_after_the_first_stop_token_is_ignored_even_if_it_is_a_stop_token_again():
    g = grade(P, ["b", "=", "7", "<pad>", ";", "c", "=", "4", ";", "so", "4", "<eos>"])
    assert not g.valid and g.n_tokens == 3


def test_random_token_sequences_never_raise():
    rng = np.random.default_rng(0)
    words = vocabulary() + list(STOP_TOKENS) + ["<bos>", "<unk>", "zz", "10", "-1"]
    problems = PROPERTY_PROBLEMS[:50]
    for i in range(3000):
        p = problems[i % len(problems)]
        n = int(rng.integers(0, 30))
        toks = [words[int(j)] for j in rng.integers(0, len(words), size=n)]
        g = grade(p, toks)
        assert g.format in (*FORMATS, "invalid")
        assert g.valid == (g.format != "invalid")
        assert g.valid or g.reason
        assert g.correct <= g.valid
        assert 0 <= g.steps_correct <= g.steps_written


def test_every_strict_prefix_of_a_cot_is_invalid():
    """A chain of thought cut off anywhere (e.g. by max_new_tokens) never grades as a valid answer."""
    for p in PROPERTY_PROBLEMS[::4]:
        for fmt in ("concise", "verbose"):
            toks = p.completion_tokens(fmt)
            for cut in range(len(toks)):
                g = grade(p, toks[:cut])
                assert not g.valid and g.reason, (fmt, toks[:cut])


def test_corrupted_renderings_never_raise():
    """Deletions and duplications of single tokens: either a grade or an invalid reason, never an error."""
    rng = np.random.default_rng(1)
    for p in PROPERTY_PROBLEMS[::4]:
        for fmt in ("concise", "verbose"):
            toks = p.completion_tokens(fmt)
            for _ in range(5):
                k = int(rng.integers(0, len(toks)))
                for variant in (toks[:k] + toks[k + 1:], toks[:k] + [toks[k]] + toks[k:]):
                    g = grade(p, variant)
                    assert g.valid or g.reason


def test_grade_to_dict_has_all_fields():
    d = grade(P, VERBOSE).to_dict()
    assert d == {"valid": True, "format": "verbose", "steps_written": 2, "steps_correct": 2, "answer": 4,
                 "correct": True, "n_tokens": 28, "reason": ""}


def test_non_ascii_digit_characters_do_not_raise():
    for text in ("²", "b = ² ; so 1"):
        assert not grade(P, text).valid


def test_only_ascii_digits_count_as_digits():
    assert not grade(P, "٣").valid
