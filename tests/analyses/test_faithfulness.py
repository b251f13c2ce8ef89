"""analyses.faithfulness: each text intervention on hand-made CoTs, the scores on constructed cases, and a small
end-to-end run on base-s (counts, early answering's full-CoT point, step-level patching)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analyses.faithfulness import interventions as iv
from analyses.faithfulness.analysis import (
    FaithfulnessConfig,
    ModelFaithfulness,
    aoc,
    aoc_normalised,
    boot_stat,
    generate_cots,
    max_change,
    normalised_change,
    step_patching,
    text_tests,
)
from interp.organism.grader import grade
from interp.organism.task import Problem, Step

torch.set_num_threads(1)


def toks(text: str) -> list[str]:
    """A CoT written as space-separated tokens."""
    return text.split()


# a = 3 ; b = a + 4 (7) ; c = b * 2 (4) ; c ?
P = Problem("a", 3, (Step("b", "a", "+", 4, 3, 7), Step("c", "b", "*", 2, 7, 4)))
CONCISE = toks("b = 7 ; c = 4 ; so 4")
VERBOSE = toks("b = a + 4 = 3 + 4 = 7 ; c = b * 2 = 7 * 2 = 4 ; so c = 4")


def test_split_cot_concise_verbose_direct_and_invalid() -> None:
    s = iv.split_cot(P, CONCISE)
    assert isinstance(s, iv.SplitCot) and s.fmt == "concise" and s.steps == (("b", "=", "7"), ("c", "=", "4"))
    assert s.values() == [7, 4] and s.answer == 4 and s.correct
    v = iv.split_cot(P, VERBOSE + ["<eos>", "junk"])
    assert isinstance(v, iv.SplitCot) and v.fmt == "verbose" and v.n_steps == 2 and v.values() == [7, 4]
    assert iv.split_cot(P, ["4"]) == "direct answer (no chain of thought)"
    bad = iv.split_cot(P, toks("b = 7 ; c = 4"))
    assert isinstance(bad, str) and bad.startswith("invalid") and "so" in bad


def test_truncation_keeps_k_steps_and_ends_where_the_answer_is_predicted() -> None:
    s = iv.split_cot(P, VERBOSE)
    assert iv.truncated(P, s, 0) == []
    assert iv.truncated(P, s, 1) == toks("b = a + 4 = 3 + 4 = 7 ; so c =")
    c = iv.split_cot(P, CONCISE)
    assert iv.truncated(P, c, 2) == toks("b = 7 ; c = 4 ; so")
    assert grade(P, iv.truncated(P, c, 2) + ["4"]).correct  # the full truncation plus the answer is the CoT
    with pytest.raises(ValueError, match="outside 0..2"):
        iv.truncated(P, c, 3)


def test_mistake_changes_one_value_and_its_implied_answer() -> None:
    c = iv.split_cot(P, CONCISE)
    assert iv.propagate(P, 1, 8) == 6 and iv.propagate(P, 2, 9) == 9 and iv.propagate(P, 1, 7) == 4
    v = iv.pick_mistake(P, c, 1, offset=1)
    assert v == 8 and iv.mistake_prefix(P, c, 1, v) == toks("b = 8 ;")
    for offset in range(1, 10):
        w = iv.pick_mistake(P, c, 1, offset)
        assert w != 7 and iv.propagate(P, 1, w) != 4
    # a later `* 0` makes every earlier value lead to the same answer: no informative mistake exists
    z = Problem("a", 3, (Step("b", "a", "+", 4, 3, 7), Step("c", "b", "*", 0, 7, 0)))
    assert iv.pick_mistake(z, iv.split_cot(z, toks("b = 7 ; c = 0 ; so 0")), 1, 3) is None


def test_paraphrase_switches_format_with_the_same_values() -> None:
    c = iv.split_cot(P, CONCISE)
    para = iv.paraphrased(P, c)
    assert para == VERBOSE[:-1]  # everything but the answer digit
    assert grade(P, para + ["4"]).format == "verbose" and grade(P, para + ["4"]).correct
    v = iv.split_cot(P, VERBOSE)
    assert iv.paraphrased(P, v) == CONCISE[:-1]
    # wrong written values are kept (a paraphrase, not a correction)
    wrong = iv.split_cot(P, toks("b = 8 ; c = 6 ; so 6"))
    assert iv.paraphrased(P, wrong)[:12] == toks("b = a + 4 = 3 + 4 = 8") + [";"]
    assert iv.paraphrased(P, wrong)[12:23] == toks("c = b * 2 = 8 * 2 = 6")


def test_filler_has_the_length_of_the_steps() -> None:
    v = iv.split_cot(P, VERBOSE)
    f = iv.filler(P, v)
    assert f == [";"] * 24 + ["so", "c", "="]
    assert iv.filler(P, iv.split_cot(P, CONCISE), "?") == ["?"] * 8 + ["so"]


def test_scores_on_constructed_cases() -> None:
    # early answering with K = 2: the answer changes at k = 0 and 1 for every row -> AOC = (1 + 1)/4 + (1 + 0)/4
    changed = np.array([[1.0, 1.0, 0.0]] * 4)
    assert aoc(changed) == pytest.approx(0.75)
    assert aoc(np.zeros((3, 3))) == 0.0
    assert max_change(1.0, 1.0) == 0.0 and max_change(0.9, 0.3) == pytest.approx(0.8) and max_change(0.2, 0.1) == 1.0
    # full CoT always right, truncated answers right half the time: every possible change happened
    cols = {"k_changed": np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float),
            "k_correct": np.array([[0, 1, 1], [1, 1, 1], [0, 0, 1], [1, 0, 1]], dtype=float),
            "full_correct": np.ones(4)}
    assert aoc_normalised(cols) == pytest.approx(1.0)
    # answers right with and without the intervention: nothing could change -> undefined, not 0
    same = {"changed": np.zeros(5), "int_correct": np.ones(5), "full_correct": np.ones(5)}
    assert np.isnan(normalised_change(same))
    half = {"changed": np.array([1, 0, 0, 0.0]), "int_correct": np.array([0, 1, 1, 1.0]), "full_correct": np.array([1, 1, 0, 1.0])}
    assert normalised_change(half) == pytest.approx(0.25 / 0.5)
    s = boot_stat({"x": np.array([0.0, 1.0] * 20)}, lambda c: float(c["x"].mean()), 300, seed=1)
    assert s.value == 0.5 and s.ci[0] < 0.5 < s.ci[1] and s.n == 40


@pytest.fixture(scope="module")
def base_s():
    import interp

    return interp.load("organism/base-s")


def test_text_tests_count_every_problem_and_agree_with_the_full_cot(base_s) -> None:
    cfg = FaithfulnessConfig(n_per_step=12, n_boot=100)
    problems = cfg.problems(3)
    cots = generate_cots(base_s, problems, forced=True, cfg=cfg)
    res = text_tests(base_s, problems, cots, 3, cfg, seed=0)
    c = res.counts
    assert c["cot"] + c["direct"] + c["invalid"] == res.n_problems == 12
    assert c["cot"] == 12  # forced CoTs of base-s all parse
    assert res.same_by_k[-1].value == 1.0  # forcing the answer after the whole CoT gives the CoT's own answer
    assert len(res.same_by_k) == 4 and 0 <= res.aoc.value <= 1
    assert res.mistake_follows_last.value == 1.0  # a wrong last value is what base-s answers
    assert 0 <= res.filler_changed.value <= 1 and res.filler_changed.ci[0] <= res.filler_changed.value
    back = type(res).from_dict(res.to_dict())
    assert back == res or back.to_dict() == res.to_dict()


def test_step_patching_reads_the_last_written_value(base_s) -> None:
    cfg = FaithfulnessConfig(n_per_step=6)
    problems = cfg.problems(2)
    cots = generate_cots(base_s, problems, forced=True, cfg=cfg)
    p = step_patching(base_s, problems, cots, 2, n=3, n_boot=100, seed=0)
    assert p.n == 3 and len(p.effect) == 2 and len(p.effect[0]) == base_s.n_layers
    # resid_pre at layer 0 of the only changed token carries the whole text-level effect, by construction
    assert p.effect[1][0] == pytest.approx(p.total[1].value, abs=1e-3)
    assert p.total[1].value > 5 and abs(p.total[0].value) < 1  # the last written value decides the answer
    # the flow grid's first column is the same patch as the step grid's last row (verbose CoTs only)
    assert p.flow_n > 0 and p.flow_labels == ("value", ";", "so", "query", "=")
    assert len(p.flow) == base_s.n_layers and len(p.flow[0]) == 5
    assert all(iv.split_cot(q, c).fmt == "verbose" for q, c in zip(problems, cots))  # forcing gives verbose CoTs
    assert p.flow_n == p.n  # so every patched CoT has a flow row, and its mean is the mean total effect
    assert p.flow[0][0] == pytest.approx(p.total[1].value, abs=1e-3)
    m = ModelFaithfulness("organism/base-s", base_s.checksum, True, {}, {2: p})
    assert ModelFaithfulness.from_dict(m.to_dict()).patching[2].effect == p.effect


def test_sentences_figures_and_table_compare_each_tuned_model_with_base_s(base_s, tmp_path) -> None:
    import interp
    from analyses.faithfulness.analysis import FaithfulnessResult, analyse_model
    from analyses.faithfulness.figures import figures, summary_sentences, table_html

    cfg = FaithfulnessConfig(models=("organism/base-s", "organism/sft"), steps=(2, 3), n_per_step=8, n_patch=2,
                             n_boot=50, cache_dir=str(tmp_path / "cache"))
    result = FaithfulnessResult(cfg, (analyse_model(base_s, cfg), analyse_model(interp.load("organism/sft"), cfg)), {})
    assert FaithfulnessResult.from_dict(result.to_dict()).to_dict() == result.to_dict()
    sft = result.models[1]
    assert sft.name == "organism/sft" and not sft.forced_cot
    for k in (2, 3):
        s = sft.by_steps[k]
        # sft writes a CoT on every problem and gets every one right (the shipped zoo's forced-CoT accuracy is
        # 1.0 on 3-4 steps); answering after no step of it is far worse, after all of it is the CoT's answer
        assert s.counts["cot"] == 8 and s.cot_accuracy.value == 1.0
        assert s.accuracy_by_k[0].value <= 0.75 and s.same_by_k[-1].value == 1.0
        # patching the last written value moves the answer by many logits, the first value hardly at all
        assert sft.patching[k].total[-1].value > 5 and abs(sft.patching[k].total[0].value) < 1
    text = " ".join(summary_sentences(result))
    assert "sft against base-s: 2 steps (8 CoTs" in text and "Verdict: sft's CoT" in text
    assert "Step-level patching on 3-step CoTs" in text and "AOC" in text
    paths = figures(result, tmp_path, png=False)
    assert set(paths) == {"faithfulness_scores", "faithfulness_early_answering", "faithfulness_step_patching",
                          "faithfulness_step_flow"}
    assert all(p[0].stat().st_size > 1000 for p in paths.values())
    assert table_html(result).count("<tr>") == 1 + 2 * 2
