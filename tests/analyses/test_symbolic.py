"""analyses.symbolic and its recipe: definitions change exactly the values they say, training never shows the
held-out definitions, every variant's reference chain grades as right, and the paired costs on constructed
outcomes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from analyses.shift.analysis import Condition
from analyses.shift.grading import grade_chain
from analyses.symbolic.analysis import (
    VARIANTS,
    SymbolicConfig,
    contrasts,
    familiar_rate,
    variant,
)
from interp.organism.recipes_symbolic import (
    HELD_OUT_MEANINGS,
    SymbolicRecipe,
    redefine,
    sample_defined,
    with_symbols,
)
from interp.organism.task import OPS, Problem, Step, sample_problems

# a = 3 ; b = a + 4 (7) ; c = b - 9 (8) ; c ?
P = Problem("a", 3, (Step("b", "a", "+", 4, 3, 7), Step("c", "b", "-", 9, 7, 8)))


def test_swap_definition_recomputes_values_and_shows_familiar_symbols() -> None:
    d = redefine(P, {"+": "-", "-": "+"})
    assert " ".join(d.prompt_tokens()) == "Q : + = - ; - = + ; a = 3 ; b = a + 4 ; c = b - 9 ; c ? A :"
    assert [s.value for s in d.problem.steps] == [9, 8]  # 3 - 4 = 9, 9 + 9 = 8
    assert " ".join(d.completion_tokens("verbose")) == "b = a + 4 = 3 + 4 = 9 ; c = b - 9 = 9 - 9 = 8 ; so c = 8"
    ident = redefine(P, {})
    assert ident.problem == P and ident.definitions == (("+", "+"), ("-", "-"))
    assert redefine(P, {"+": "*"}, define_all=False).definitions == (("+", "*"),)


def test_symbols_defined_in_context_keep_values() -> None:
    d = with_symbols(P, {"+": "n", "-": "u", "*": "v"})
    assert " ".join(d.prompt_tokens()) == "Q : n = + ; u = - ; a = 3 ; b = a n 4 ; c = b u 9 ; c ? A :"
    assert d.problem == P and d.completion_tokens("concise") == ["b", "=", "7", ";", "c", "=", "8", ";", "so", "8"]


def test_training_definitions_avoid_the_held_out_ones_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    pairs: Counter = Counter()
    for p in sample_problems(0, 2000):
        d = sample_defined(rng, p)
        pairs.update(d.definitions)
        assert {s for s, _ in d.definitions} == set(d.symbols) and len(set(d.symbols)) == len(d.definitions)
        assert all(dict(d.definitions)[sym] == s.op for sym, s in zip(d.symbols, d.problem.steps))
    assert not set(pairs) & set(HELD_OUT_MEANINGS)
    assert {s for s, _ in pairs} <= set(OPS) | {"x", "y", "z", "m"}
    assert pairs[("*", "-")] > 0 and pairs[("x", "+")] > 0  # familiar symbols are redefined, fresh ones defined
    r = SymbolicRecipe(batch_size=200, def_share=0.1)
    batch = r.batch(3)
    assert batch == r.batch(3)
    share = np.mean([p[2] != "a" for p, _ in batch])  # a definition clause comes before `a = ...`
    assert 0.03 < share < 0.2
    with pytest.raises(ValueError, match="overlap"):
        SymbolicRecipe(train_symbols=("x", "y", "n"))


def test_every_variant_reference_grades_as_right_and_digit_names_are_distinct() -> None:
    rng = np.random.default_rng(1)
    for p in sample_problems(4, 40):
        for v in VARIANTS:
            s = variant(p, v, rng)
            for fmt in ("concise", "verbose"):
                g = grade_chain(s.truth, s.answer, s.reference(fmt), dict(s.ops) if s.ops else None)
                assert g.chain_correct and g.correct and g.inconsistent_steps == 0, (v, fmt, s.reference(fmt))
        digits = variant(p, "digit variable names", rng)
        names = [digits.prompt[2], *(n for n, _ in digits.truth)]
        assert all(n.isdigit() for n in names) and len(set(names)) == len(names)
        assert [x for _, x in digits.truth] == [s.value for s in p.steps]
    with pytest.raises(ValueError, match="unknown variant"):
        variant(P, "reversed", rng)


def test_config_problems_all_contain_plus_or_minus() -> None:
    cfg = SymbolicConfig(n_per_step=10, steps=(1, 3))
    probs = cfg.problems()
    assert len(probs) == 20 and all(any(s.op in "+-" for s in p.steps) for p in probs)
    assert cfg.shown()["plain"] == cfg.shown()["plain"]
    with pytest.raises(ValueError, match="first variant"):
        SymbolicConfig(variants=("identity definitions", "plain"))


def _cond(name: str, correct: list[int], answers: list[int] | None = None) -> Condition:
    n = len(correct)
    return Condition(name, (1,) * n, tuple(correct), (0,) * n, (0,) * n, (0,) * n, (0,) * n, (0,) * n,
                     (float("nan"),) * n, (), tuple(answers or [0] * n))


def test_contrasts_and_familiar_rate_on_constructed_outcomes() -> None:
    conds = {"plain": _cond("plain", [1] * 40), "identity definitions": _cond("i", [1, 0] * 20),
             "swap + - (defined)": _cond("s", [0] * 40)}
    cs = {c.name.split(":")[0]: c for c in contrasts(conds, 300, 0)}
    assert cs["format cost"].value == pytest.approx(0.5) and cs["format cost"].ci[0] > 0
    assert cs["contradiction cost"].value == pytest.approx(0.5)
    assert "symbol cost" not in cs
    plain = [variant(P, "plain", np.random.default_rng(0))] * 4
    swapped = [variant(P, "swap + - (defined)", np.random.default_rng(0))] * 4
    fam = familiar_rate(plain, swapped, _cond("s", [0, 0, 0, 1], [8, 8, 3, 8]), 100, 0)
    assert plain[0].answer == swapped[0].answer == 8  # this problem's swap leaves the answer: not counted
    assert fam.n == 0
    q = Problem("a", 3, (Step("b", "a", "+", 4, 3, 7),))
    fam = familiar_rate([variant(q, "plain", np.random.default_rng(0))] * 4,
                        [variant(q, "swap + - (defined)", np.random.default_rng(0))] * 4,
                        _cond("s", [0, 0, 0, 1], [7, 7, 5, 9]), 100, 0)
    assert fam.n == 4 and fam.value == pytest.approx(0.5)
