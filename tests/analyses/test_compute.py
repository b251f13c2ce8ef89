"""Compute-matched curves: selectors on constructed samples, curves on a constructed model, and a small run
whose greedy and full-chain points equal the generic evaluation's accuracies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import interp
from analyses.compute.analysis import (
    ComputeConfig,
    ComputeResult,
    ModelCompute,
    best_of,
    curve_points,
    majority,
    pass_at,
    per_problem,
    run,
)
from analyses.compute.figures import figures, summary_sentences
from analyses.routing.common import sample_items
from interp.evaluation import GenerationConfig, evaluate

torch.set_num_threads(1)


def test_majority_vote_on_constructed_samples() -> None:
    assert majority(["3", "4", "3"], [True, False, True])
    assert not majority(["4", "3", "4", None, None], [False, True, False, False, False])
    assert majority(["3", "4"], [True, False])  # a tie goes to the answer seen first
    assert not majority(["4", "3"], [False, True])
    assert majority([None, None, "7"], [False, False, True])  # unparsed answers do not vote
    assert not majority([None, None], [False, False])


def test_best_of_and_pass_at_on_constructed_samples() -> None:
    assert best_of([-1.0, -0.2, -3.0], [False, True, False])
    assert not best_of([-0.5, -0.5, -0.1], [True, True, False])
    assert best_of([-0.5, -0.5], [True, False])  # first on ties
    assert best_of([-np.inf, -2.0], [False, True])  # an empty completion never wins against a scored one
    assert pass_at([False, False, True]) and not pass_at([False, False])


def constructed() -> tuple[ModelCompute, ComputeConfig]:
    cfg = ComputeConfig(models=("a", "b"), bases=("a",), reference="b", n_samples=4, budgets=(4, 8),
                        max_new_tokens=8, n_boot=100, cache_dir="/nonexistent")
    answers = (("1", "2", "2", "2"), ("5", None, "6", "6"), ("3", "3", "3", "3"))
    correct = ((True, False, False, False), (False, False, True, True), (True, True, True, True))
    mc = ModelCompute("a", "", 10, (), answers, correct, ((2, 2, 2, 2), (3, 1, 3, 3), (2, 2, 2, 2)),
                      ((-0.1, -0.5, -0.6, -0.7), (-0.2, -0.1, -0.9, -0.3), (-1.0, -1.0, -1.0, -1.0)),
                      (True, False, True), (2, 2, 2), {"4": (False, False, False), "8": (True, True, False)},
                      {"4": (4, 4, 4), "8": (6, 7, 8)})
    return mc, cfg


def test_curves_on_a_constructed_model() -> None:
    mc, cfg = constructed()
    assert per_problem(mc, "majority", 1)[0].tolist() == [1, 0, 1]  # k=1 is the first sample
    assert per_problem(mc, "majority", 4)[0].tolist() == [0, 1, 1]
    assert per_problem(mc, "best_oracle", 4)[0].tolist() == [1, 1, 1]
    assert per_problem(mc, "best_logprob", 2)[0].tolist() == [1, 0, 1]
    assert per_problem(mc, "majority", 2)[1].tolist() == [4, 4, 4]  # tokens of the first k samples
    pts = {(p.method, p.k): p for p in curve_points(mc, cfg)}
    assert pts[("greedy", 1)].accuracy == pytest.approx(2 / 3)
    assert pts[("chain", 8)].accuracy == pytest.approx(2 / 3) and pts[("chain", 8)].tokens == pytest.approx(7)
    oracle = [pts[("best_oracle", k)].accuracy for k in cfg.ks]
    assert oracle == sorted(oracle)  # pass@k never falls with k
    with pytest.raises(ValueError, match="power of two"):
        ComputeConfig(n_samples=6)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> ComputeResult:
    cfg = ComputeConfig(models=("organism/base-s", "organism/rl"), bases=("organism/base-s",), steps=(2, 4),
                        n_per_step=4, n_samples=2, budgets=(8, 72), n_boot=100,
                        forcing_models=("organism/base-s", "organism/rl"), extensions=(1, 2),
                        cache_dir=str(tmp_path_factory.mktemp("compute")))
    return run(cfg)


def test_small_run_matches_the_generic_evaluation(small: ComputeResult, tmp_path) -> None:
    cfg = small.config
    task = interp.task("organism")
    items = sample_items(task, cfg.steps, cfg.n_per_step, cfg.eval_seed)
    for name in cfg.models:
        m, model = small.model(name), interp.load(name)
        free = evaluate(model, task, items, GenerationConfig())
        cot = evaluate(model, task, items, GenerationConfig(force="cot"))
        assert m.greedy_correct == tuple(g.correct for g in free.grades)
        assert m.chain_correct["72"] == tuple(g.correct for g in cot.grades)
        f = m.forcing
        assert f is not None and f.chain_end == " so" and f.continuation == task.cot_prefix(items[0])
        assert f.extend_correct["0"] == tuple(g.correct for g in cot.grades)  # no extension: the forced chain
        assert f.extend_answer_correct["0"] == f.extend_correct["0"]
        assert f.extend_valid["0"] == tuple(g.valid for g in cot.grades)
        assert all(s <= k for k in (1, 2) for s in f.extend_suppressed[str(k)])
        assert all(b >= a for a, b in zip(f.extend_tokens["0"], f.extend_tokens["2"]))
        assert m.checksum == model.checksum and m.n_params == model.n_params
        assert all(len(row) == cfg.n_samples for row in m.sample_correct)
        assert all(lp <= 0 for row in m.sample_logprob for lp in row)
    d = json.loads(json.dumps(small.to_dict()))
    assert json.loads(json.dumps(ComputeResult.from_dict(d).to_dict())) == d
    assert any("Width vs depth" in s for s in summary_sentences(small))
    assert sum("Budget forcing" in s for s in summary_sentences(small)) == 4
    assert all(p[0].is_file() for p in figures(small, tmp_path, png=False).values())
