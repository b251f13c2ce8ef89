"""Behaviour of the synthetic task: seeded generation, values mod 10, exact rendering, shift knobs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from interp.organism.task import (
    DEFAULT_VARIABLES,
    DISTRACTOR_VARIABLES,
    FORMATS,
    MOD,
    OPS,
    RENAMED_VARIABLES,
    FormatMix,
    Problem,
    Step,
    TaskConfig,
    all_op_pairs,
    apply_op,
    sample_problem,
    sample_problems,
    vocabulary,
)

# `Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A :` (DESIGN.md)
DESIGN_PROBLEM = Problem(
    start_var="a",
    start_value=3,
    steps=(Step("b", "a", "+", 4, 3, 7), Step("c", "b", "*", 2, 7, 4)),
)


def _op_pairs(p: Problem) -> set[tuple[str, str]]:
    ops = [s.op for s in p.steps]
    return set(itertools.pairwise(ops))


# ---------------------------------------------------------------- rendering


def test_prompt_renders_exactly_as_in_design_doc():
    assert DESIGN_PROBLEM.prompt() == "Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A :"
    assert DESIGN_PROBLEM.prompt_tokens() == DESIGN_PROBLEM.prompt().split()


def test_completions_render_exactly_as_in_design_doc():
    assert DESIGN_PROBLEM.completion("direct") == "4"
    assert DESIGN_PROBLEM.completion("concise") == "b = 7 ; c = 4 ; so 4"
    assert DESIGN_PROBLEM.completion("verbose") == "b = a + 4 = 3 + 4 = 7 ; c = b * 2 = 7 * 2 = 4 ; so c = 4"
    for fmt in FORMATS:
        assert DESIGN_PROBLEM.completion_tokens(fmt) == DESIGN_PROBLEM.completion(fmt).split()


def test_text_is_prompt_then_completion():
    assert DESIGN_PROBLEM.text("direct") == "Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A : 4"


def test_problem_properties_of_design_problem():
    p = DESIGN_PROBLEM
    assert p.n_steps == 2
    assert p.answer == 4
    assert p.query_var == "c"
    assert p.values == {"a": 3, "b": 7, "c": 4}


def test_unknown_format_raises_naming_valid_formats():
    with pytest.raises(ValueError, match="unknown format 'terse'.*direct"):
        DESIGN_PROBLEM.completion_tokens("terse")  # type: ignore[arg-type]


def test_distractors_are_inserted_at_their_slots():
    p = Problem("a", 3, DESIGN_PROBLEM.steps, distractors=(("x", 5), ("y", 1)), distractor_slots=(0, 2))
    assert p.prompt() == "Q : x = 5 ; a = 3 ; b = a + 4 ; y = 1 ; c = b * 2 ; c ? A :"
    assert p.completion("concise") == "b = 7 ; c = 4 ; so 4"


def test_separator_comma_renders_in_prompt_and_completions():
    p = Problem("a", 3, DESIGN_PROBLEM.steps, separator=",")
    assert p.prompt() == "Q : a = 3 , b = a + 4 , c = b * 2 , c ? A :"
    assert p.completion("concise") == "b = 7 , c = 4 , so 4"
    assert p.completion("verbose") == "b = a + 4 = 3 + 4 = 7 , c = b * 2 = 7 * 2 = 4 , so c = 4"


# ---------------------------------------------------------------- apply_op and generator


def test_apply_op_is_mod_10():
    assert apply_op(7, "+", 5) == 2
    assert apply_op(3, "-", 5) == 8
    assert apply_op(7, "*", 2) == 4
    for x in range(MOD):
        for y in range(MOD):
            for op in OPS:
                assert 0 <= apply_op(x, op, y) < MOD


def test_apply_op_rejects_unknown_operator_naming_valid_ones():
    with pytest.raises(ValueError, match=r"unknown operator '/'.*\+"):
        apply_op(1, "/", 2)


def test_same_seed_gives_same_problems():
    assert sample_problems(5, 50) == sample_problems(5, 50)


def test_different_seeds_give_different_problems():
    assert sample_problems(5, 50) != sample_problems(6, 50)


def test_sampled_values_follow_the_chain_mod_10():
    for p in sample_problems(0, 300, TaskConfig(min_steps=1, max_steps=6)):
        prev_var, prev_val = p.start_var, p.start_value
        assert 0 <= p.start_value < MOD
        for s in p.steps:
            assert s.source == prev_var
            assert s.source_value == prev_val
            assert s.op in OPS and 0 <= s.operand < MOD
            assert s.value == apply_op(s.source_value, s.op, s.operand)
            prev_var, prev_val = s.target, s.value
        assert p.answer == prev_val and p.query_var == prev_var


def test_steps_fall_in_configured_range_and_cover_it():
    counts = {p.n_steps for p in sample_problems(1, 300, TaskConfig(min_steps=2, max_steps=4))}
    assert counts == {2, 3, 4}


def test_n_steps_argument_fixes_the_number_of_steps():
    assert {p.n_steps for p in sample_problems(1, 50, TaskConfig(), n_steps=3)} == {3}


def test_fixed_variable_order_by_default():
    for p in sample_problems(2, 50, TaskConfig(max_steps=5)):
        names = [p.start_var] + [s.target for s in p.steps]
        assert "".join(names) == DEFAULT_VARIABLES[: p.n_steps + 1]


def test_operands_and_values_cover_all_digits():
    ps = sample_problems(3, 300)
    assert {s.operand for p in ps for s in p.steps} == set(range(MOD))
    assert {p.answer for p in ps} == set(range(MOD))
    assert {s.op for p in ps for s in p.steps} == set(OPS)


# ---------------------------------------------------------------- shift knobs


def test_more_steps_than_training_via_shifted():
    cfg = TaskConfig().shifted(min_steps=5, max_steps=7)
    assert {p.n_steps for p in sample_problems(0, 200, cfg)} == {5, 6, 7}


def test_shifted_returns_a_changed_copy():
    base = TaskConfig()
    new = base.shifted(separator=",")
    assert new.separator == "," and base.separator == ";"
    assert new.max_steps == base.max_steps


def test_held_out_op_pairs_exclude_mode_never_yields_them():
    held = (("+", "*"), ("*", "-"))
    cfg = TaskConfig(min_steps=2, max_steps=6, held_out_op_pairs=held, op_pairs_mode="exclude")
    ps = sample_problems(0, 400, cfg)
    for p in ps:
        assert not _op_pairs(p) & set(held), p
    # the rest of the pairs still occur
    seen = set().union(*(_op_pairs(p) for p in ps))
    assert seen == set(all_op_pairs()) - set(held)


def test_held_out_op_pairs_require_mode_always_contains_one():
    held = (("+", "*"), ("*", "-"))
    cfg = TaskConfig(min_steps=2, max_steps=5, held_out_op_pairs=held, op_pairs_mode="require")
    for p in sample_problems(0, 300, cfg):
        assert _op_pairs(p) & set(held), p


def test_held_out_op_pairs_any_mode_ignores_them():
    held = (("+", "*"),)
    cfg = TaskConfig(min_steps=2, max_steps=4, held_out_op_pairs=held, op_pairs_mode="any")
    ps = sample_problems(0, 300, cfg)
    assert any(_op_pairs(p) & set(held) for p in ps)
    assert any(not _op_pairs(p) & set(held) for p in ps)


def test_require_mode_with_impossible_draw_raises_clear_error():
    # a one-step problem has no consecutive op pair, so 'require' can never be met
    with pytest.raises(ValueError, match="min_steps >= 2"):
        TaskConfig(min_steps=1, max_steps=2, held_out_op_pairs=(("+", "+"),), op_pairs_mode="require")
    cfg = TaskConfig(min_steps=2, max_steps=3, held_out_op_pairs=(("+", "+"),), op_pairs_mode="require")
    with pytest.raises(ValueError, match="cannot draw a 1-step problem"):
        sample_problem(np.random.default_rng(0), cfg, n_steps=1)


def test_require_mode_without_pairs_is_rejected():
    with pytest.raises(ValueError, match="require.*needs held_out_op_pairs"):
        TaskConfig(op_pairs_mode="require")


def test_comma_separator_is_used_everywhere():
    cfg = TaskConfig(separator=",", n_distractors=2, max_steps=5)
    for p in sample_problems(0, 100, cfg):
        for toks in [p.prompt_tokens()] + [p.completion_tokens(f) for f in FORMATS]:
            assert ";" not in toks
        assert p.prompt_tokens().count(",") == p.n_steps + 1 + 2
        assert p.completion_tokens("concise").count(",") == p.n_steps
        assert p.completion_tokens("verbose").count(",") == p.n_steps


def test_renamed_variables_come_from_renamed_set():
    cfg = TaskConfig(variables=RENAMED_VARIABLES)
    ps = sample_problems(0, 100, cfg)
    for p in ps:
        names = [p.start_var] + [s.target for s in p.steps]
        assert "".join(names) == RENAMED_VARIABLES[: p.n_steps + 1]
        letters = {t for t in p.text("verbose").split() if t.isalpha() and len(t) == 1}
        assert letters <= set(RENAMED_VARIABLES) | {"Q", "A"}
        assert not letters & set(DEFAULT_VARIABLES)


def test_shuffle_variables_draws_distinct_names_in_varied_order():
    cfg = TaskConfig(shuffle_variables=True, max_steps=4)
    ps = sample_problems(0, 200, cfg)
    orders = set()
    for p in ps:
        names = [p.start_var] + [s.target for s in p.steps]
        assert len(set(names)) == len(names)
        assert set(names) <= set(DEFAULT_VARIABLES)
        orders.add("".join(names))
    assert len(orders) > 20
    assert any(not o.startswith("a") for o in orders)


def test_distractors_appear_in_prompt_but_not_in_chain():
    cfg = TaskConfig(n_distractors=3, max_steps=4)
    slots_seen = set()
    for p in sample_problems(0, 200, cfg):
        names = [n for n, _ in p.distractors]
        assert names == list(DISTRACTOR_VARIABLES[:3])
        prompt = p.prompt_tokens()
        for (name, value), slot in zip(p.distractors, p.distractor_slots):
            i = prompt.index(name)
            assert prompt[i + 1: i + 3] == ["=", str(value)]
            assert 0 <= slot <= p.n_steps + 1
            slots_seen.add(slot)
        for fmt in FORMATS:
            assert not set(p.completion_tokens(fmt)) & set(names)
        assert not set(p.values) & set(names)
        assert not {s.source for s in p.steps} & set(names)
        # 1 start clause + steps + distractors, each followed by the separator
        assert prompt.count(";") == 1 + p.n_steps + 3
    assert 0 in slots_seen and 5 in slots_seen


def test_no_distractors_by_default():
    for p in sample_problems(0, 50):
        assert p.distractors == () and p.distractor_slots == ()
        assert not set(p.prompt_tokens()) & set(DISTRACTOR_VARIABLES)


def test_every_rendered_token_is_in_vocabulary():
    vocab = set(vocabulary())
    cfgs = [TaskConfig(max_steps=7), TaskConfig(separator=",", n_distractors=5),
            TaskConfig(variables=RENAMED_VARIABLES, shuffle_variables=True)]
    for cfg in cfgs:
        for p in sample_problems(0, 50, cfg):
            for fmt in FORMATS:
                assert set(p.text(fmt).split()) <= vocab


def test_vocabulary_has_no_duplicates():
    v = vocabulary()
    assert len(v) == len(set(v))


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ops=("+", "/")), r"unknown operators \['/'\]"),
        (dict(max_steps=8), r"max_steps=8 needs 9 variables.*has 8"),
        (dict(variables="abc", max_steps=3), r"max_steps=3 needs 4 variables"),
        (dict(separator="|"), r"separator '\|' not in the vocabulary"),
        (dict(min_steps=0), r"1 <= min_steps <= max_steps"),
        (dict(min_steps=3, max_steps=2), r"1 <= min_steps <= max_steps"),
        (dict(n_distractors=6), r"at most 5 distractors"),
        (dict(variables="abcxyz", max_steps=3, n_distractors=1), r"clash"),
    ],
)
def test_invalid_config_raises_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskConfig(**kwargs)


# ---------------------------------------------------------------- serialisation


def test_task_config_round_trips_through_json():
    cfg = TaskConfig(min_steps=2, max_steps=5, ops=("+", "*"), variables=RENAMED_VARIABLES,
                     shuffle_variables=True, separator=",", n_distractors=2,
                     held_out_op_pairs=(("+", "*"),), op_pairs_mode="require")
    assert TaskConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TaskConfig.from_dict(cfg.to_dict()) == cfg
    assert TaskConfig.from_dict({}) == TaskConfig()


def test_problem_round_trips_through_json():
    ps = sample_problems(0, 30, TaskConfig(n_distractors=2, separator=",", max_steps=5)) + [DESIGN_PROBLEM]
    for p in ps:
        q = Problem.from_dict(json.loads(json.dumps(p.to_dict())))
        assert q == p
        assert q.text("verbose") == p.text("verbose")


# ---------------------------------------------------------------- FormatMix


def test_format_mix_probs_are_normalised():
    assert np.allclose(FormatMix(2, 1, 1).probs(), [0.5, 0.25, 0.25])
    assert np.allclose(FormatMix().probs().sum(), 1.0)


def test_format_mix_sampling_follows_shares_and_is_seeded():
    mix = FormatMix(0.6, 0.3, 0.1)
    draws = [mix.sample(np.random.default_rng(7)) for _ in range(3)]
    assert len(set(draws)) == 1
    rng = np.random.default_rng(0)
    fmts = [mix.sample(rng) for _ in range(4000)]
    share = {f: fmts.count(f) / len(fmts) for f in FORMATS}
    assert share["direct"] == pytest.approx(0.6, abs=0.04)
    assert share["concise"] == pytest.approx(0.3, abs=0.04)
    assert share["verbose"] == pytest.approx(0.1, abs=0.03)


def test_format_mix_with_zero_share_never_samples_it():
    rng = np.random.default_rng(0)
    assert {FormatMix(0, 0, 1).sample(rng) for _ in range(50)} == {"verbose"}


@pytest.mark.parametrize("mix", [FormatMix(-1, 1, 1), FormatMix(0, 0, 0)])
def test_format_mix_rejects_negative_or_all_zero_shares(mix):
    with pytest.raises(ValueError, match="format shares"):
        mix.probs()


def test_format_mix_round_trips():
    mix = FormatMix(0.5, 0.2, 0.3)
    assert FormatMix.from_dict(json.loads(json.dumps(mix.to_dict()))) == mix
