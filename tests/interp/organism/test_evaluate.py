"""Behaviour of evaluation: stable summary shape, serialisation, bootstrap CIs, forced chain of thought."""

from __future__ import annotations

import json

import numpy as np
import pytest

import interp.evaluation as evaluation_mod
from interp.models import Model, load
from interp.organism.evaluate import (
    EvalConfig,
    EvalResult,
    StepStats,
    bootstrap_ci,
    cot_prefix,
    evaluate,
    stats,
)
from interp.organism.grader import grade
from interp.organism.task import Problem, Step, TaskConfig, sample_problems

SMALL_EVAL = EvalConfig(steps=(1, 2), n_per_step=6, n_boot=50, max_new_tokens=8, batch_size=5)


@pytest.fixture(scope="module")
def model(random_model, tok, tmp_path_factory) -> Model:
    """The tiny random model saved and loaded as an `interp.Model` (what `evaluate` takes)."""
    path = tmp_path_factory.mktemp("tiny-random")
    random_model.save_pretrained(path)
    tok.save_pretrained(path)
    return load(path)


@pytest.fixture(scope="module")
def result(model) -> EvalResult:
    return evaluate(model, SMALL_EVAL, name="tiny-random", checksum="abc123")


class FakeGenerator:
    """Stands in for `generate_ids`: records the prompts and answers every problem correctly,
    continuing a forced chain of thought with the rest of a concise CoT, otherwise answering directly."""

    def __init__(self, tok, cfg: EvalConfig):
        self.tok = tok
        self.by_prompt = {tuple(p.prompt_tokens()): p for k in cfg.steps for p in cfg.problems(k)}
        self.prompts: list[list[int]] = []
        self.args: tuple = ()

    def __call__(self, model, tokenizer, prompts, *args):
        self.prompts, self.args = prompts, args
        out = []
        for ids in prompts:
            toks = self.tok.convert_ids_to_tokens(ids)
            end = len(toks) - 1 - toks[::-1].index(":")  # the ':' of 'A :'
            problem = self.by_prompt[tuple(toks[1:end + 1])]
            forced = toks[end + 1:]
            comp = problem.completion_tokens("concise")[len(forced):] if forced else [str(problem.answer)]
            out.append(self.tok.convert_tokens_to_ids(comp))
        return out


# ---------------------------------------------------------------- the summary


def test_summary_has_the_exact_stable_shape(result):
    s = result.summary()
    assert set(s) == {"model", "by_steps"}
    assert s["model"] == "tiny-random"
    assert list(s["by_steps"]) == ["1", "2"]
    for v in s["by_steps"].values():
        assert set(v) == {"n", "accuracy", "cot_rate", "mean_tokens"}
        assert v["n"] == 6 and isinstance(v["n"], int)
        for k in ("accuracy", "cot_rate", "mean_tokens"):
            assert isinstance(v[k], float)
        assert 0.0 <= v["accuracy"] <= 1.0 and 0.0 <= v["cot_rate"] <= 1.0
        assert 0.0 <= v["mean_tokens"] <= SMALL_EVAL.max_new_tokens
    assert json.loads(json.dumps(s)) == s


def test_summary_values_equal_the_per_step_stats(result):
    s = result.summary()
    for k, st in result.by_steps.items():
        assert s["by_steps"][str(k)] == {"n": st.n, "accuracy": st.accuracy, "cot_rate": st.cot_rate,
                                         "mean_tokens": st.mean_tokens}


def test_eval_result_round_trips_through_json(result):
    d = json.loads(json.dumps(result.to_dict()))
    back = EvalResult.from_dict(d)
    assert back == result
    assert back.checksum == "abc123"
    assert json.loads(json.dumps(back.to_dict())) == d


def test_eval_config_round_trips_through_json():
    cfg = EvalConfig(steps=(2, 5), n_per_step=3, force_cot=True, temperature=0.7, seed=3,
                     task=TaskConfig(separator=",", held_out_op_pairs=(("+", "*"),)), max_new_tokens=10)
    assert EvalConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_evaluation_is_deterministic(model, result):
    assert evaluate(model, SMALL_EVAL, name="tiny-random", checksum="abc123") == result


def test_name_and_checksum_default_to_the_models(model, result):
    r = evaluate(model, SMALL_EVAL)
    assert (r.model, r.checksum) == (model.name, model.checksum) and r.by_steps == result.by_steps


def test_mean_over_averages_a_metric_over_steps(result):
    want = (result.by_steps[1].accuracy + result.by_steps[2].accuracy) / 2
    assert result.mean_over((1, 2), "accuracy") == pytest.approx(want)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    rng = np.random.default_rng(0)
    for n in (5, 50, 400):
        x = (rng.random(n) < 0.3).astype(float)
        lo, hi = bootstrap_ci(x, 500, seed=1)
        assert lo <= x.mean() <= hi
        assert bootstrap_ci(x, 500, seed=1) == (lo, hi)
        assert isinstance(lo, float) and isinstance(hi, float)


def test_bootstrap_ci_narrows_with_more_data_and_widens_with_level():
    rng = np.random.default_rng(0)
    small, big = rng.normal(size=20), rng.normal(size=2000)
    w = lambda ci: ci[1] - ci[0]
    assert w(bootstrap_ci(big, 500)) < w(bootstrap_ci(small, 500))
    assert w(bootstrap_ci(small, 500, level=0.99)) > w(bootstrap_ci(small, 500, level=0.5))


def test_bootstrap_ci_of_constant_data_is_a_point():
    assert bootstrap_ci(np.full(10, 0.7), 100) == pytest.approx((0.7, 0.7))


def test_bootstrap_ci_of_no_data_is_nan():
    lo, hi = bootstrap_ci(np.array([]), 100)
    assert np.isnan(lo) and np.isnan(hi)


# ---------------------------------------------------------------- stats from grades


def test_stats_count_accuracy_cot_tokens_and_formats():
    p = Problem("a", 3, (Step("b", "a", "+", 4, 3, 7), Step("c", "b", "*", 2, 7, 4)))
    grades = [grade(p, t) for t in ("4", "5", "b = 7 ; c = 4 ; so 4", "garbage")]
    st = stats(grades, n_boot=100)
    assert st.n == 4
    assert st.accuracy == 0.5
    assert st.cot_rate == 0.25
    assert st.mean_tokens == (1 + 1 + 10 + 1) / 4
    assert st.invalid_rate == 0.25
    assert st.formats == {"direct": 2, "concise": 1, "invalid": 1}
    assert st.accuracy_ci[0] <= 0.5 <= st.accuracy_ci[1]
    assert StepStats.from_dict(json.loads(json.dumps(st.to_dict()))) == st


# ---------------------------------------------------------------- problems and forced CoT


def test_eval_problems_are_seeded_per_step_count():
    cfg = EvalConfig(n_per_step=20)
    assert cfg.problems(3) == cfg.problems(3)
    assert all(p.n_steps == 3 for p in cfg.problems(3))
    assert cfg.problems(2) != EvalConfig(n_per_step=20, seed=cfg.seed + 1).problems(2)


def test_eval_problems_beyond_the_training_range_are_drawn():
    cfg = EvalConfig(n_per_step=10, task=TaskConfig(min_steps=2, max_steps=4))
    assert {p.n_steps for p in cfg.problems(6)} == {6}
    assert {p.n_steps for p in cfg.problems(1)} == {1}


def test_cot_prefix_is_the_first_steps_variable():
    for p in sample_problems(0, 50, TaskConfig(shuffle_variables=True, n_distractors=2)):
        assert cot_prefix(p) == [p.steps[0].target]


def test_forced_cot_prompts_end_in_the_first_steps_variable(model, tok, monkeypatch):
    cfg = EvalConfig(steps=(1, 3), n_per_step=5, n_boot=20, force_cot=True,
                     task=TaskConfig(shuffle_variables=True, n_distractors=1))
    fake = FakeGenerator(tok, cfg)
    monkeypatch.setattr(evaluation_mod, "generate_ids", fake)
    res = evaluate(model, cfg)
    problems = cfg.problems(1) + cfg.problems(3)
    assert len(fake.prompts) == len(problems)
    for ids, p in zip(fake.prompts, problems):
        toks = tok.convert_ids_to_tokens(ids)
        assert toks[0] == tok.bos_token
        assert toks[1:] == p.prompt_tokens() + [p.steps[0].target]
    assert fake.args == (cfg.max_new_tokens, cfg.temperature, cfg.seed, cfg.batch_size)
    # the forced prefix counts as part of the answer: the graded text is a full concise CoT
    for k in (1, 3):
        st = res.by_steps[k]
        assert (st.accuracy, st.cot_rate, st.invalid_rate) == (1.0, 1.0, 0.0)
        assert st.formats == {"concise": 5}
        assert st.mean_tokens == 4 * k + 2


def test_unforced_prompts_end_in_a_colon(model, tok, monkeypatch):
    cfg = EvalConfig(steps=(2,), n_per_step=5, n_boot=20)
    fake = FakeGenerator(tok, cfg)
    monkeypatch.setattr(evaluation_mod, "generate_ids", fake)
    res = evaluate(model, cfg)
    for ids, p in zip(fake.prompts, cfg.problems(2)):
        assert tok.convert_ids_to_tokens(ids) == [tok.bos_token, *p.prompt_tokens()]
        assert tok.convert_ids_to_tokens(ids)[-2:] == ["A", ":"]
    assert res.summary()["by_steps"]["2"] == {"n": 5, "accuracy": 1.0, "cot_rate": 0.0, "mean_tokens": 1.0}


def test_forced_cot_on_a_real_model_grades_the_prefix_as_part_of_the_answer(model):
    cfg = EvalConfig(steps=(2,), n_per_step=4, n_boot=20, max_new_tokens=6, force_cot=True)
    res = evaluate(model, cfg)
    assert res.by_steps[2].n == 4
    # every graded text starts with the forced variable, so it can never be a lone direct digit
    assert res.by_steps[2].formats.get("direct", 0) == 0
