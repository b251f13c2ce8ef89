"""Routing: the lock-step decoder's bookkeeping (never = base greedy, always = tuned greedy, token for token),
router rates, gap recovered on constructed vectors, the classifier fit, and a small end-to-end run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import interp
from analyses.routing.analysis import RoutingConfig, RoutingResult, fit_classifier, run
from analyses.routing.common import gap_recovered, prompt_ids, ratio_ci, sample_items
from analyses.routing.decode import (
    Always,
    Differ,
    FirstToken,
    Guardrail,
    KLAbove,
    Never,
    RandomRate,
    lockstep,
)
from analyses.routing.figures import figures, summary_sentences
from interp.evaluation import GenerationConfig, evaluate
from interp.generate import generate_ids

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair() -> tuple[interp.Model, interp.Model]:
    return interp.load("organism/base-s"), interp.load("organism/rl")


@pytest.fixture(scope="module")
def prompts(pair: tuple[interp.Model, interp.Model]) -> list[list[int]]:
    task = interp.task("organism")
    return prompt_ids(pair[0], task, sample_items(task, (1, 2, 3, 4), 6, seed=5))


def test_never_is_the_base_and_always_the_tuned_model_token_for_token(pair, prompts) -> None:
    base, tuned = pair
    never = lockstep(base, tuned, prompts, Never(), 72, batch_size=7)  # batches of odd size, several prompt lengths
    always = lockstep(base, tuned, prompts, Always(), 72)
    assert [list(t.ids) for t in never] == generate_ids(base.hf, base.tokenizer, prompts, 72)
    assert [list(t.ids) for t in always] == generate_ids(tuned.hf, tuned.tokenizer, prompts, 72)
    assert not any(any(t.routed) for t in never)
    assert all(all(t.routed) and len(t.routed) == len(t.ids) + 1 for t in always)  # EOS step counted, routed
    assert [list(t.ids) for t in never] != [list(t.ids) for t in always]  # the pair differs on these problems


def test_differ_writes_the_tuned_output_routing_only_disagreements(pair, prompts) -> None:
    base, tuned = pair
    always = lockstep(base, tuned, prompts, Always())
    differ = lockstep(base, tuned, prompts, Differ())
    assert [t.ids for t in differ] == [t.ids for t in always]
    share = sum(sum(t.routed) for t in differ) / sum(len(t.routed) for t in differ)
    assert 0 < share < 0.5


def test_first_token_router_routes_exactly_the_first_step(pair, prompts) -> None:
    base, tuned = pair
    first = lockstep(base, tuned, prompts, FirstToken())
    always = lockstep(base, tuned, prompts, Always())
    assert all(t.routed[0] and sum(t.routed) == 1 for t in first)
    assert [t.ids[0] for t in first] == [t.ids[0] for t in always]


def test_random_router_rates(pair, prompts) -> None:
    base, tuned = pair
    never = lockstep(base, tuned, prompts, Never())
    always = lockstep(base, tuned, prompts, Always())
    assert [t.ids for t in lockstep(base, tuned, prompts, RandomRate(0.0))] == [t.ids for t in never]
    assert [t.ids for t in lockstep(base, tuned, prompts, RandomRate(1.0))] == [t.ids for t in always]
    half = lockstep(base, tuned, prompts, RandomRate(0.5, seed=3))
    share = sum(sum(t.routed) for t in half) / sum(len(t.routed) for t in half)
    assert 0.35 < share < 0.65
    again = lockstep(base, tuned, prompts, RandomRate(0.5, seed=3), batch_size=5)  # same draws whatever the batching
    assert [t.routed for t in again] == [t.routed for t in half]


def test_kl_and_guardrail_extremes(pair, prompts) -> None:
    base, tuned = pair
    never = [t.ids for t in lockstep(base, tuned, prompts, Never())]
    assert [t.ids for t in lockstep(base, tuned, prompts, KLAbove(threshold=1e9))] == never
    assert [t.ids for t in lockstep(base, tuned, prompts, KLAbove(threshold=-1.0))] == \
        [t.ids for t in lockstep(base, tuned, prompts, Always())]
    g = lockstep(base, tuned, prompts, Guardrail(k=base.d_vocab))  # every token a candidate: the tuned model picks
    assert [t.ids for t in g] == [t.ids for t in lockstep(base, tuned, prompts, Always())]


def test_gap_recovered_and_ratio_on_constructed_vectors() -> None:
    b = np.array([0, 0, 1, 1, 0, 1, 0, 0], float)
    t = np.ones(8)
    assert gap_recovered(b, b, t, 200, 0)[0] == 0.0
    assert gap_recovered(t, b, t, 200, 0) == (1.0, (1.0, 1.0))
    h = b.copy()
    h[[0, 1]] = 1  # two of the five missing problems recovered
    assert gap_recovered(h, b, t, 200, 0)[0] == pytest.approx(0.4)
    v, ci = ratio_ci(np.array([1, 0, 2]), np.array([4, 4, 2]), 500, 0)
    assert v == pytest.approx(0.3) and ci[0] <= v <= ci[1]


def test_classifier_threshold_matches_the_positive_rate_and_separable_data_scores_auroc_one() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.1
    x = rng.normal(size=(400, 6)) + 3.0 * y[:, None]
    clf, info = fit_classifier(x, y, np.arange(400) // 4, layer=1, c=1.0, seed=0)
    assert info["auroc_held_out"] > 0.99
    pred = clf.weight.numpy() @ x.T + clf.bias
    rate = (1 / (1 + np.exp(-pred)) > clf.threshold).mean()
    assert abs(rate - y.mean()) < 0.02
    with pytest.raises(ValueError, match="one class"):
        fit_classifier(x, np.zeros(400, bool), np.arange(400), layer=1, c=1.0, seed=0)


@pytest.fixture(scope="module")
def small(pair, tmp_path_factory) -> RoutingResult:
    cfg = RoutingConfig(tuned=("organism/rl",), steps=(2, 4), n_per_step=6, train_per_step=10,
                        steer_scales=(1.0,), n_boot=200, cache_dir=str(tmp_path_factory.mktemp("routing")))
    return run(cfg, models={"organism/base-s": pair[0], "organism/rl": pair[1]})


def test_small_run_pins_base_and_tuned_accuracy_and_round_trips(pair, small: RoutingResult, tmp_path) -> None:
    p = small.pairs[0]
    task = interp.task("organism")
    items = sample_items(task, (2, 4), 6, small.config.eval_seed)
    for model, name in ((pair[0], "never"), (pair[1], "always")):
        ev = evaluate(model, task, items, GenerationConfig())
        assert p.router(name).correct == tuple(g.correct for g in ev.grades)
        assert p.router(name).completions == ev.completions
    assert p.router("always").gap_recovered == 1.0 and p.router("never").gap_recovered == 0.0
    assert p.router("always").share_routed == 1.0 and p.router("never").share_routed == 0.0
    consult = {o.name: o.consults_tuned for o in p.routers}
    assert consult["differ"] and consult["kl"] and consult["guardrail"]
    assert not (consult["first"] or consult["classifier"] or consult["random@first"])
    rnd, first = p.router("random@first"), p.router("first")
    assert rnd.params["rate"] == first.share_routed
    assert p.base_checksum == pair[0].checksum and p.tuned_checksum == pair[1].checksum
    d = json.loads(json.dumps(small.to_dict()))
    assert json.loads(json.dumps(RoutingResult.from_dict(d).to_dict())) == d
    assert RoutingResult.from_dict(d).pairs[0].routers == p.routers
    assert len(summary_sentences(small)) >= 5
    paths = figures(small, tmp_path, png=False)
    assert all(p[0].is_file() for p in paths.values())


def test_same_seed_same_numbers(pair, small: RoutingResult) -> None:
    cfg = dataclasses.replace(small.config, steer=False)
    again = run(cfg, models={"organism/base-s": pair[0], "organism/rl": pair[1]})
    a, b = again.pairs[0], small.pairs[0]
    for o in a.routers:
        assert o == b.router(o.name)
