"""split_thinking, final_number, number_span and steps on hand-written R1-style and GSM8K-style texts."""

from __future__ import annotations

import pytest

from interp.tasks.text import (
    Thinking,
    final_number,
    normalize_number,
    number_span,
    split_thinking,
    steps,
)

R1 = ("<think>\nOkay, so Natalia sold 48 clips in April. In May she sold half as many, so 48 / 2 = 24.\n"
      "Altogether that is 48 + 24 = 72.\n</think>\n\nNatalia sold **72** clips.\n\n\\boxed{72}")
GSM = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
       "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")


def test_split_thinking_reads_an_r1_completion_with_spans_into_the_text():
    t = split_thinking(R1)
    assert t.closed and t.thinking is not None
    assert t.thinking.startswith("Okay, so") and t.thinking.endswith("= 72.")
    assert R1[slice(*t.thinking_span)] == t.thinking
    assert t.answer == "Natalia sold **72** clips.\n\n\\boxed{72}"
    assert R1[slice(*t.answer_span)] == t.answer


def test_split_thinking_without_open_tag_starts_inside_the_block():
    # R1-distilled chat templates end the prompt with "<think>\n": the completion has only the close tag
    text = "48 / 2 = 24, 48 + 24 = 72.\n</think>\nThe answer is 72."
    t = split_thinking(text)
    assert t.closed and t.thinking == "48 / 2 = 24, 48 + 24 = 72." and t.thinking_span == (0, 26)
    assert t.answer == "The answer is 72."


def test_split_thinking_reports_an_unclosed_block_instead_of_raising():
    text = "<think>\nLet me compute 48 / 2 = 24 and then"
    t = split_thinking(text)
    assert not t.closed
    assert t.thinking == "Let me compute 48 / 2 = 24 and then"
    assert t.answer == "" and t.answer_span == (len(text), len(text))


def test_split_thinking_without_any_tag_is_all_answer_and_empty_block_has_no_span():
    t = split_thinking("  72  ")
    assert t.thinking is None and t.thinking_span is None and t.answer == "72" and t.answer_span == (2, 4)
    e = split_thinking("<think>\n\n</think>\n\n5")
    assert e.thinking == "" and e.thinking_span is None and e.closed and e.answer == "5"


def test_split_thinking_with_custom_tags_and_round_trip():
    t = split_thinking("[R] 2 + 2 = 4 [/R] 4", open="[R]", close="[/R]")
    assert (t.thinking, t.answer) == ("2 + 2 = 4", "4")
    assert Thinking.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="non-empty"):
        split_thinking("x", open="")


@pytest.mark.parametrize("written, canonical", [
    ("72", "72"), ("3.0", "3"), ("3.50", "3.5"), ("-1,200", "-1200"), ("$1,000.00", "1000"), ("50%", "50"),
    ("\\frac{1}{2}", "0.5"), ("3/4", "0.75"), (" 3 / 4 ", "0.75"), ("1/3", "1/3"), ("-0.0", "0"), ("7.", "7"), ("\\$18", "18"),
])
def test_normalize_number_gives_equal_strings_for_equal_values(written, canonical):
    assert normalize_number(written) == canonical


def test_normalize_number_rejects_text_that_is_not_one_number():
    for bad in ("seventy", "1 2", "", "x+1", "inf"):
        with pytest.raises(ValueError, match="not a number"):
            normalize_number(bad)


def test_final_number_priority_boxed_then_hashes_then_after_think_then_last():
    assert final_number("The answer is \\boxed{1,234}. Check: 5 + 6 = 11") == "1234"
    assert final_number("#### 18\nwe used 3 steps") == "18"
    assert final_number(GSM) == "72"
    # inside the block the model computed 99; after it, 72
    assert final_number("<think>\nmaybe 99\n</think>\nSo 72 clips, in 2 months") == "2"
    assert final_number("<think>\nmaybe 99\n</think>\n\\boxed{72} in 2 months") == "72"
    assert final_number("<think>\n\\boxed{99}\n</think>\nIt is 72.") == "72"
    # an answer part with no number falls back to the whole text
    assert final_number("<think>\n40 + 2 = 42\n</think>\nDone.") == "42"
    assert final_number("She had 5 apples and ate 2, leaving 3.") == "3"
    assert final_number(R1) == "72"


def test_final_number_keeps_signs_and_reads_subtraction():
    assert final_number("The temperature is -4 degrees") == "-4"
    assert final_number("10-3") == "3"
    assert final_number("x = (2)-3") == "3"
    assert final_number("#### -15") == "-15"


def test_final_number_of_malformed_text():
    assert final_number("") is None
    assert final_number("I do not know.") is None
    assert final_number("\\boxed{x}") is None
    assert final_number("\\boxed{72 clips}") == "72"    # not one number: the box's last number
    assert final_number("\\boxed{72") == "72"          # unbalanced brace: not a box, the last number
    assert final_number("\\boxed{\\frac{3}{4}}") == "0.75"
    assert final_number("3,4,5") == "5"                  # a list, not a thousands-separated number
    assert final_number("#### ") is None


def test_number_span_points_at_the_final_number():
    for text in (R1, GSM, "It is -1,200 dollars.", "\\boxed{ 18 }"):
        a, b = number_span(text)
        assert normalize_number(text[a:b]) == final_number(text)
    assert number_span(R1) == (R1.rindex("72"), R1.rindex("72") + 2)
    assert number_span("no number") is None
    for boxed, digits in (("\\boxed{\\$18.}", "18"), ("\\boxed{ 1,234 }", "1,234"), ("\\boxed{\\frac{3}{4}}", "3}{4")):
        a, b = number_span(boxed)
        assert boxed[a:b] == digits


def test_steps_segment_sentences_and_lines_robust_to_decimals_and_abbreviations():
    text = ("1. First, she has 3.5 apples. Then Dr. Smith gives e.g. 2 more, i.e. 5.5 total! "
            "So she pays $5.50. Is that right? Yes.\n\nStep 2: 5.5 * 2 = 11\n#### 11")
    got = [text[a:b] for a, b in steps(text)]
    assert got == ["1. First, she has 3.5 apples.", "Then Dr. Smith gives e.g. 2 more, i.e. 5.5 total!",
                   "So she pays $5.50.", "Is that right?", "Yes.", "Step 2: 5.5 * 2 = 11", "#### 11"]


def test_steps_of_gsm_and_r1_thinking():
    assert len(steps(GSM)) == 3
    t = split_thinking(R1)
    got = [t.thinking[a:b] for a, b in steps(t.thinking)]
    assert got == ["Okay, so Natalia sold 48 clips in April.", "In May she sold half as many, so 48 / 2 = 24.",
                   "Altogether that is 48 + 24 = 72."]


def test_steps_of_blank_or_unpunctuated_text():
    assert steps("") == [] and steps("  \n\n ") == []
    assert steps("no punctuation at all") == [(0, 21)]
    assert steps('He said "stop." Then left.') == [(0, 15), (16, 26)]
    assert steps("It costs 3 vs. 4 now") == [(0, 20)]
