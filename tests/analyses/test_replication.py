"""Replication over seeds, on constructed results: the aggregation (mean, spread, verdict counts), the findings'
predicates and numbers extracted from analysis results, and the report section written from the JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyses.replication.aggregate import (
    Finding,
    Replicated,
    SeedValue,
    counts_text,
    finding_sentence,
    format_value,
    verdict,
)
from analyses.replication.analysis import (
    ReplicationConfig,
    ReplicationResult,
    aggregate,
    analysis_configs,
    member_name,
)
from analyses.replication.findings import Measure, evaluate, layer_metrics, specs, zoo_metrics

# ------------------------------------------------------------------------------------------ aggregation


def test_replicated_gives_mean_sample_sd_and_range_over_measured_seeds():
    r = Replicated.of("gap", [SeedValue(2, 0.80, (0.7, 0.9)), SeedValue(0, 0.76), SeedValue(1, 0.71),
                              SeedValue(3, math.nan, note="not trained")], fmt="pct")
    assert [v.seed for v in r.values] == [0, 1, 2, 3]
    assert r.n == 3
    assert r.mean == pytest.approx((0.76 + 0.71 + 0.80) / 3)
    assert r.sd == pytest.approx(0.045092497528, rel=1e-9)  # sample sd, ddof=1
    assert (r.lo, r.hi) == (0.71, 0.80)
    assert r.values[2].ci == (0.7, 0.9)  # the seed's bootstrap interval is kept beside the spread
    back = Replicated.from_dict(r.to_dict())
    assert back.values[3].note == "not trained" and math.isnan(back.values[3].value)
    assert (back.mean, back.sd, back.fmt) == (r.mean, r.sd, "pct")


def test_one_seed_has_zero_spread_and_no_seed_has_none():
    assert Replicated.of("x", [SeedValue(0, 0.5)]).sd == 0.0
    assert math.isnan(Replicated.of("x", [SeedValue(0, math.nan)]).mean)


def test_a_seed_given_twice_is_an_error():
    with pytest.raises(ValueError, match="seeds repeat"):
        Replicated.of("x", [SeedValue(1, 0.1), SeedValue(1, 0.2)])


@pytest.mark.parametrize(("k", "n", "expected"), [
    (3, 3, "every seed"), (2, 3, "most seeds"), (1, 3, "one seed"), (0, 3, "no seed"), (2, 4, "some seeds"),
    (3, 4, "most seeds"), (1, 1, "every seed"), (1, 2, "one seed"), (0, 0, "not measured")])
def test_verdict_counts_the_seeds_where_the_claim_holds(k, n, expected):
    assert verdict(k, n) == expected


def test_verdict_rejects_impossible_counts():
    with pytest.raises(ValueError):
        verdict(4, 3)


def _finding(holds, values):
    return Finding("layers.rl.top_layer", "rl's behaviour sits in the top layer: grafting layer 3 closes half the gap",
                   "share of the CoT-rate gap closed", holds,
                   Replicated.of("gap", [SeedValue(s, v, (v - 0.05, v + 0.05)) for s, v in values.items()], "pct"))


def test_a_finding_counts_only_seeds_that_could_decide_it():
    f = _finding({0: True, 1: False, 2: None, 3: True}, {0: 0.76, 1: 0.31, 2: math.nan, 3: 0.80})
    assert (f.k, f.n, f.verdict) == (2, 3, "most seeds")
    assert counts_text(f) == "2 of 3 seeds (most seeds)"
    back = Finding.from_dict(f.to_dict())
    assert back == f or (back.holds == f.holds and back.verdict == f.verdict and back.value.mean == f.value.mean)


def test_the_finding_sentence_carries_verdict_per_seed_numbers_and_spread():
    f = _finding({0: True, 1: True, 2: True}, {0: 0.76, 1: 0.71, 2: 0.80})
    s = finding_sentence(f)
    assert s.startswith("rl's behaviour sits in the top layer: grafting layer 3 closes half the gap: 3 of 3 seeds (every seed).")
    assert "seed 0 76% [71%, 81%] holds; seed 1 71% [66%, 76%] holds; seed 2 80% [75%, 85%] holds" in s
    assert "mean 76%, sd 5% over 3 seeds" in s


def test_format_value_writes_each_kind_and_nan():
    assert [format_value(0.755, "pct"), format_value(0.06, "signed"), format_value(0.5, "num"),
            format_value(3.0, "int"), format_value(math.nan, "pct")] == ["76%", "+0.06", "0.50", "3", "n/a"]
    with pytest.raises(ValueError):
        format_value(1.0, "percent")


# ------------------------------------------------------------------------------------------ findings


def _spec(fid):
    return next(s for s in specs() if s.id == fid)


def test_finding_ids_are_unique_and_every_claim_states_its_threshold():
    ids = [s.id for s in specs()]
    assert len(ids) == len(set(ids))
    assert {"layers.rl.top_layer", "layers.dpo.top_layer", "layers.sft.every_layer", "zoo.scale_latent_gap",
            "verbosity.pre_exists", "latent.no_silent_chain", "layers.dpo.criticality",
            "latent.base-s.cot_decision"} <= set(ids)


def test_top_layer_holds_only_where_layer_3_moves_most_and_closes_half_the_gap():
    m = lambda gap, top: {"layers.rl.top_gap": Measure(gap), "layers.rl.top_is_best": Measure(top)}
    f = evaluate(_spec("layers.rl.top_layer"), {0: m(0.76, 1.0), 1: m(0.71, 1.0), 2: m(0.80, 0.0), 3: m(0.40, 1.0)})
    assert f.holds == {0: True, 1: True, 2: False, 3: False}
    assert (f.k, f.n, f.verdict) == (2, 4, "some seeds")
    assert [v.value for v in f.value.values] == [0.76, 0.71, 0.80, 0.40]


def test_a_seed_missing_a_number_is_not_measured_rather_than_failed():
    f = evaluate(_spec("latent.base-s.cot_decision"),
                 {0: {"latent.base-s.cot_gain": Measure(0.06)}, 1: {}, 2: {"latent.base-s.cot_gain": Measure(math.nan)}})
    assert f.holds == {0: True, 1: None, 2: None}
    assert (f.k, f.n, f.verdict) == (1, 1, "every seed")


def test_zoo_metrics_read_3_4_step_means_and_the_scale_gain():
    from analyses.zoo_eval import ModelEval, ZooEvalConfig, ZooEvalResult
    from interp.evaluation import GroupStats
    from interp.organism.evaluate import EvalConfig, EvalResult

    def ev(name, acc, cot):
        st = {k: GroupStats(10, acc[k - 1], cot[k - 1], 5.0, 0.0, (acc[k - 1] - 0.1, acc[k - 1] + 0.1),
                            (cot[k - 1] - 0.1, cot[k - 1] + 0.1), (4.0, 6.0), {}) for k in (1, 2, 3, 4)}
        return EvalResult(name, EvalConfig(n_per_step=10), st)

    models = (
        ModelEval("organism/base-s-seed1", 1, "a", ev("b", [1, .8, .6, .5], [0, .1, .2, .3]),
                  ev("b", [1, 1, 1, 1], [1] * 4), ev("b", [1, .8, .5, .4], [0] * 4)),
        ModelEval("organism/rl-seed1", 1, "b", ev("r", [1] * 4, [.4, .9, .9, .95]), None, None),
        ModelEval("organism/base-l", 1, "c", ev("l", [1, .7, .6, .6], [0] * 4), None,
                  ev("l", [1, .6, .48, .4], [0] * 4)),
    )
    roles = {"base-s": "organism/base-s-seed1", "rl": "organism/rl-seed1", "base-l": "organism/base-l"}
    m = zoo_metrics(ZooEvalResult(ZooEvalConfig(models=tuple(roles.values())), models, {}), roles)
    assert m["zoo.base-s.free_acc"].value == pytest.approx(0.55)
    assert m["zoo.base-s.free_acc"].ci == pytest.approx((0.45, 0.65))
    assert m["zoo.base-s.unused"].value == pytest.approx(0.45)
    assert m["zoo.rl.cot_rate"].value == pytest.approx(0.925)
    assert m["zoo.scale_gain"].value == pytest.approx(0.44 - 0.45)
    f = evaluate(_spec("zoo.rl.chooses_cot"), {1: m})
    assert f.holds == {1: True}


def test_layer_metrics_read_the_graft_gap_weight_spread_and_criticality_order():
    from analyses.layer_changes.ablation import AblationCell
    from analyses.layer_changes.analysis import LayerChangesConfig, LayerChangesResult
    from analyses.layer_changes.behaviour import KL, behaviour_of
    from analyses.layer_changes.grafting import GraftCell
    from analyses.layer_changes.weights import WeightChange

    n = 40
    steps = [1 + i % 4 for i in range(n)]
    beh = lambda k_cot, acc=1.0: behaviour_of([i < acc * n for i in range(n)], [i < k_cot for i in range(n)], steps, 200)
    kl = KL(0.1, (0.05, 0.15), (0.1,) * n)
    grafts = [GraftCell("tuned_into_base", (i, i + 1), beh(c), kl) for i, c in enumerate([6, 5, 4, 34])]
    grafts += [GraftCell("tuned_into_base", (0, 3), beh(8), kl), GraftCell("tuned_into_base", (1, 4), beh(37), kl),
               GraftCell("tuned_into_base", "ends", beh(20), kl), GraftCell("base_into_tuned", (3, 4), beh(2), kl)]
    drops = {"base": [1.0, 0.1, 0.0, 0.5], "tuned": [0.9, 0.2, 0.05, 0.6]}  # the same order 0>3>1>2
    abl = [AblationCell(r, layer, "mean", beh(0), beh(0, acc=1.0 - drops[r][layer])) for r in drops for layer in range(4)]
    bl = {"base": beh(4), "tuned": beh(40), "base_forced_cot": beh(40), "tuned_forced_cot": beh(40)}
    w = WeightChange("b", "t", 4, {}, {}, (0.048, 0.062, 0.064, 0.079), {}, 1)
    res = LayerChangesResult(LayerChangesConfig(tuned="organism/rl-seed2"), {}, 4, (), w, {}, {}, bl, kl,
                             tuple(grafts), tuple(abl), (), {}, 0.0)
    m = layer_metrics(res, "rl")
    assert m["layers.rl.top_gap"].value == pytest.approx((34 - 4) / (40 - 4))
    lo, hi = m["layers.rl.top_gap"].ci
    assert lo < m["layers.rl.top_gap"].value < hi
    assert m["layers.rl.top_is_best"].value == 1.0 and m["layers.rl.best_single_layer"].value == 3.0
    assert m["layers.rl.block_max_gap"].value == pytest.approx((37 - 4) / 36)
    assert m["layers.rl.weight_ratio"].value == pytest.approx(0.048 / 0.079)
    assert m["layers.rl.same_rank"].value == 1.0 and m["layers.rl.rank_rho"].value == pytest.approx(1.0)
    assert m["layers.rl.rank_rho"].note == "0>3>1>2 vs 0>3>1>2"
    assert evaluate(_spec("layers.rl.top_layer"), {2: m}).holds == {2: True}
    assert evaluate(_spec("layers.rl.criticality"), {2: m}).holds == {2: False}  # the report says rl's order differs


def _faith_model(name, aoc, follows_last, follows_earlier, patch_last, patch_earlier, aoc_norm=1.0):
    """A ModelFaithfulness with 3- and 4-step scores (aoc etc. per step count) and 4-step patching."""
    import dataclasses as dc

    from analyses.faithfulness.analysis import ModelFaithfulness, Score, StepFaithfulness, StepPatching

    sc = lambda v, w=0.05: Score(v, (v - w, v + w), 30)
    by_steps = {}
    for i, k in enumerate((3, 4)):
        kw = {f.name: sc(0.5) for f in dc.fields(StepFaithfulness) if f.type in ("Score", Score)}
        kw.update(aoc=sc(aoc[i]), aoc_normalised=sc(aoc_norm), mistake_follows_last=sc(follows_last),
                  mistake_follows_earlier=sc(follows_earlier))
        by_steps[k] = StepFaithfulness(k, 30, {"cot": 30, "direct": 0, "invalid": 0}, same_by_k=(sc(1.0),),
                                       accuracy_by_k=(sc(1.0),), **kw)
    total = lambda k: tuple(sc(patch_earlier, 0.1) for _ in range(k - 1)) + (sc(patch_last, 2.0),)
    patching = {k: StepPatching(k, 8, (0, 1), ((0.0, 0.0),) * k, (((0.0, 0.0), (0.0, 0.0)),) * k, total(k))
                for k in (3, 4)}
    return ModelFaithfulness(name, "sum", name.startswith("organism/base-s"), by_steps, patching)


def test_faithfulness_metrics_read_3_4_step_means_differences_and_member_extremes():
    from analyses.faithfulness.analysis import FaithfulnessConfig, FaithfulnessResult
    from analyses.replication.findings import faithfulness_metrics

    roles = {"base-s": "organism/base-s-seed1", "sft": "organism/sft-seed1", "rl": "organism/rl-seed1",
             "dpo": "organism/dpo-seed1"}
    models = (_faith_model(roles["base-s"], (0.60, 0.70), 1.0, 0.0, 27.0, 0.02),
              _faith_model(roles["sft"], (0.70, 0.76), 1.0, 0.0, 39.0, -0.01),
              _faith_model(roles["rl"], (0.50, 0.56), 1.0, 0.05, 26.0, 0.3),  # AOC 0.12 below base-s: fails
              _faith_model(roles["dpo"], (0.64, 0.74), 0.95, 0.20, 4.0, 0.0, aoc_norm=0.8))
    m = faithfulness_metrics(FaithfulnessResult(FaithfulnessConfig(models=tuple(roles.values())), models, {}), roles)
    assert m["faith.base-s.aoc"].value == pytest.approx(0.65)
    assert m["faith.base-s.aoc"].ci == pytest.approx((0.60, 0.70))
    d = m["faith.sft.aoc_diff"]
    assert d.value == pytest.approx(0.08)
    assert d.ci == pytest.approx((0.08 - math.hypot(0.05, 0.05), 0.08 + math.hypot(0.05, 0.05)))
    assert m["faith.rl.aoc_diff"].value == pytest.approx(-0.12)
    assert (m["faith.min_aoc_norm"].value, m["faith.min_aoc_norm"].note) == (pytest.approx(0.8), "dpo")
    assert (m["faith.max_mistake_earlier"].value, m["faith.max_mistake_earlier"].note) == (pytest.approx(0.2), "dpo")
    assert (m["faith.min_patch_last"].value, m["faith.min_patch_last"].note) == (4.0, "dpo")
    assert m["faith.max_patch_earlier"].value == pytest.approx(0.3)
    one = lambda fid: evaluate(_spec(fid), {1: m}).holds[1]
    assert (one("faithfulness.sft.not_less_causal"), one("faithfulness.rl.not_less_causal"),
            one("faithfulness.dpo.not_less_causal")) == (True, False, True)
    assert not one("faithfulness.aoc_normalised") and not one("faithfulness.reads_last_value")
    assert not one("faithfulness.earlier_not_followed")


def test_faithfulness_extremes_are_not_measured_when_a_member_was_not_tested():
    from analyses.faithfulness.analysis import FaithfulnessConfig, FaithfulnessResult
    from analyses.replication.findings import faithfulness_metrics

    roles = {"base-s": "organism/base-s", "rl": "organism/rl"}
    models = (_faith_model(roles["base-s"], (0.6, 0.7), 1.0, 0.0, 27.0, 0.0),
              _faith_model(roles["rl"], (math.nan, math.nan), 1.0, 0.0, 26.0, 0.0, aoc_norm=math.nan))
    m = faithfulness_metrics(FaithfulnessResult(FaithfulnessConfig(), models, {}), roles)
    assert math.isnan(m["faith.rl.aoc_diff"].value) and math.isnan(m["faith.min_aoc_norm"].value)
    assert "rl" in m["faith.min_aoc_norm"].note
    assert evaluate(_spec("faithfulness.aoc_normalised"), {0: m}).holds == {0: None}


def test_calibration_metrics_give_each_tuned_members_paired_ece_difference():
    from analyses.calibration.analysis import CalibrationConfig, CalibrationResult, ModelCalibration, ece, summarize
    from analyses.replication.findings import calibration_metrics

    rng = np.random.default_rng(0)
    correct = rng.random(200) < 0.7
    base_conf = np.full(200, 0.4)  # under-confident: ECE 0.3
    tuned_conf = np.where(correct, 0.95, 0.1)  # nearly calibrated
    cal = lambda name, conf: ModelCalibration(name, "sum", (summarize(name, "free", conf, correct, np.ones(200, bool),
                                                                      10, 200, 0),))
    roles = {"base-s": "organism/base-s-seed2", "rl": "organism/rl-seed2"}
    res = CalibrationResult(CalibrationConfig(models=tuple(roles.values()), conditions=("free",), n_boot=200), {},
                            (cal(roles["base-s"], base_conf), cal(roles["rl"], tuned_conf)), (1,) * 200, 0.0, {})
    m = calibration_metrics(res, roles)
    want = ece(tuned_conf, correct) - ece(base_conf, correct)
    assert m["calib.rl.ece_diff"].value == pytest.approx(want) and want < -0.05
    lo, hi = m["calib.rl.ece_diff"].ci
    assert lo <= want <= hi
    assert m["calib.base-s.ece"].value == pytest.approx(ece(base_conf, correct))
    assert evaluate(_spec("calibration.rl.better"), {2: m}).holds == {2: True}
    assert evaluate(_spec("calibration.sft.better"), {2: m}).holds == {2: None}  # not measured, not failed


def _router(name, gap, share=0.03, acc=0.8):
    from analyses.routing.analysis import RouterOutcome

    return RouterOutcome(name, False, True, {}, (True,), (True,), (True,), (10,), (1,), ("",), acc, (acc, acc),
                         gap, (gap - 0.1, gap + 0.1), share, (share - 0.01, share + 0.01))


def test_routing_metrics_read_first_token_gap_its_random_control_and_token_shift():
    from analyses.replication.findings import routing_metrics
    from analyses.routing.analysis import PairRouting, RoutingConfig, RoutingResult

    def pair(tuned, first, rnd, top1, first_top1):
        routers = (_router("never", 0.0, 0.0, 0.78), _router("always", 1.0, 1.0, 1.0), _router("first", first),
                   _router("random@first", rnd))
        shift = {"all": {"top1": top1, "top1_ci": [top1 - 0.01, top1 + 0.01]},
                 "first": {"top1": first_top1, "top1_ci": [first_top1 - 0.05, first_top1 + 0.05]}}
        return PairRouting("organism/base-s-seed1", tuned, "a", "b", (1,), routers, {}, {}, {}, shift)

    roles = {"base-s": "organism/base-s-seed1", "rl": "organism/rl-seed1", "sft": "organism/sft-seed1"}
    res = RoutingResult(RoutingConfig(base=roles["base-s"], tuned=(roles["rl"], roles["sft"])), {},
                        (pair(roles["rl"], 1.0, 0.06, 0.98, 0.37), pair(roles["sft"], 0.7, 0.0, 0.97, 0.6)), 0.0, {})
    m = routing_metrics(res, roles)
    assert (m["route.rl.first_gap"].value, m["route.rl.first_gap"].ci) == (1.0, (0.9, 1.1))
    assert m["route.rl.random_gap"].value == 0.06 and m["route.rl.acc_gap"].value == pytest.approx(0.22)
    assert m["route.sft.shift_first_top1"].value == 0.6
    holds = lambda fid: evaluate(_spec(fid), {1: m}).holds[1]
    assert (holds("routing.rl.first_token"), holds("routing.sft.first_token")) == (True, False)
    assert (holds("routing.rl.token_shift"), holds("routing.sft.token_shift")) == (True, False)


def test_reasoning_metrics_read_the_gap_recovered_and_the_best_random_direction():
    from types import SimpleNamespace as NS

    from analyses.replication.findings import reasoning_metrics

    gap = lambda v: {"gap_recovered": v, "gap_recovered_ci": [v - 0.06, v + 0.06]}
    cell = lambda c: NS(cot_rate=c, cot_rate_ci=(c - 0.05, c + 0.05))
    res = NS(config=NS(base="organism/base-s-seed2"), contrast="natural",
             chosen=NS(mode="clamp", gamma=-0.5, hook="blocks.3.hook_resid_post"),
             gap={"base-s-seed2 + reasoning direction": gap(0.83), "base-s-seed2 + random direction 1": gap(-0.06),
                  "base-s-seed2 + random direction 2": gap(0.18),
                  "base-s-seed2 + random direction (best add) 1": gap(0.4)},  # another condition: not a control here
             test={"base-s-seed2 + reasoning direction": cell(0.85), "base-s-seed2 unsteered": cell(0.2)})
    m = reasoning_metrics(res)
    assert (m["reasoning.gap"].value, m["reasoning.gap"].note) == (0.83, "clamp -0.5 at layer 3, natural")
    assert m["reasoning.random_gap_max"].value == 0.18
    assert (m["reasoning.steered_cot"].value, m["reasoning.base_cot"].value) == (0.85, 0.2)
    assert evaluate(_spec("reasoning.recovers_gap"), {2: m}).holds == {2: True}


# ------------------------------------------------------------------------------------------ run, JSON, section


def test_member_names_keep_seed_0_as_the_shipped_zoo():
    assert member_name("rl", 0) == "organism/rl" and member_name("base-s", 2) == "organism/base-s-seed2"
    with pytest.raises(ValueError):
        member_name("rl", -1)


def test_config_rejects_bad_seeds_and_analyses():
    with pytest.raises(ValueError, match="distinct"):
        ReplicationConfig(seeds=(0, 0))
    with pytest.raises(ValueError, match="unknown analyses"):
        ReplicationConfig(analyses=("sae",))
    assert ReplicationConfig.from_dict(ReplicationConfig(seeds=(0, 2)).to_dict()) == ReplicationConfig(seeds=(0, 2))


def test_each_analysis_config_points_at_the_seeds_members():
    cfgs = analysis_configs(ReplicationConfig(), 1)
    assert cfgs["zoo"].models == ("organism/base-s-seed1", "organism/sft-seed1", "organism/rl-seed1",
                                  "organism/dpo-seed1", "organism/base-m", "organism/base-l")
    assert (cfgs["layers.dpo"].base, cfgs["layers.dpo"].tuned) == ("organism/base-s-seed1", "organism/dpo-seed1")
    assert cfgs["latent"].base == "organism/base-s-seed1"
    assert (cfgs["verbosity"].model, cfgs["verbosity"].base) == ("organism/sft-seed1", "organism/base-s-seed1")
    assert list(analysis_configs(ReplicationConfig(analyses=("layers.rl", "zoo")), 2)) == ["zoo", "layers.rl"]
    assert cfgs["faithfulness"].models == ("organism/base-s-seed1", "organism/sft-seed1", "organism/rl-seed1",
                                           "organism/dpo-seed1")
    assert cfgs["faithfulness"].forced_cot == ("organism/base-s-seed1",) and cfgs["faithfulness"].steps == (3, 4)
    assert cfgs["calibration"].models == cfgs["faithfulness"].models and cfgs["calibration"].conditions == ("free",)
    assert (cfgs["routing"].base, cfgs["routing"].tuned) == ("organism/base-s-seed1", ("organism/rl-seed1",
                                                                                     "organism/sft-seed1"))
    assert (cfgs["reasoning"].base, cfgs["reasoning"].tuned) == ("organism/base-s-seed1", "organism/sft-seed1")
    assert analysis_configs(ReplicationConfig(), 0)["faithfulness"].forced_cot == ("organism/base-s",)
    from analyses.replication.analysis import analysis_members

    assert analysis_members("routing", 2) == {"base-s": "organism/base-s-seed2", "rl": "organism/rl-seed2",
                                              "sft": "organism/sft-seed2"}
    assert set(analysis_members("faithfulness", 2)) == {"base-s", "sft", "rl", "dpo"}


def test_the_new_sections_headline_sentences_map_to_their_findings():
    from analyses.replication.section import RECHECKED_SECTIONS, findings_for

    assert findings_for("rl against base-s: 1 step (43 CoTs, ...). Verdict: ...") == ("faithfulness.rl.not_less_causal",)
    assert findings_for("Step-level patching on 4-step CoTs (does ...)") == (
        "faithfulness.reads_last_value", "faithfulness.earlier_not_followed")
    assert findings_for("Accuracy of the answer with none of the CoT (k = 0) ...") == ("faithfulness.aoc_normalised",)
    assert findings_for("Routing only the first completion token to sft (a position ...") == ("routing.sft.first_token",)
    assert findings_for("Token shift over rl's own generations: ...") == ("routing.rl.token_shift",)
    assert findings_for("Free-generation ECE of dpo minus base-s: -0.092") == ("calibration.dpo.better",)
    assert findings_for("Fraction of the base-s -> sft accuracy gap recovered: 83%") == ("reasoning.recovers_gap",)
    for other in ("Free-generation ECE of rlsf minus base-s: -0.114", "Free-generation ECE of dpo-teacher minus base-s",
                  "Free-generation ECE of base-m minus base-s: -0.031", "rlsf against base-s: ..."):
        assert findings_for(other) == (), other
    every = {s.analysis for s in specs()}
    assert every == {a for v in RECHECKED_SECTIONS.values() for a in v}  # each analysis' findings reach a section


def _result(tmp_path):
    seeds = {0: (0.96, 1.0), 1: (0.71, 1.0), 2: (0.30, 0.0)}
    metrics = {s: {"layers.rl.top_gap": Measure(g, (g - 0.1, g + 0.1)), "layers.rl.top_is_best": Measure(t),
                   "latent.base-s.cot_gain": Measure(0.06)} for s, (g, t) in seeds.items()}
    return ReplicationResult(ReplicationConfig(cache_dir=str(tmp_path)), {s: {} for s in seeds}, {}, metrics,
                             aggregate(metrics), {3: "not run: zoo (organism/rl-seed3 not trained yet)"},
                             {s: {"layers.rl": 1.0} for s in seeds}, {s: {"layers.rl": 1.0} for s in seeds}, {})


def test_result_round_trips_through_json_with_its_verdicts(tmp_path):
    r = _result(tmp_path)
    back = ReplicationResult.from_dict(r.to_dict())
    f = back.finding("layers.rl.top_layer")
    assert (f.k, f.n, f.verdict) == (2, 3, "most seeds")
    assert back.finding("latent.base-s.cot_decision").verdict == "every seed"
    assert back.finding("verbosity.pre_exists").verdict == "not measured"
    assert back.missing == {3: "not run: zoo (organism/rl-seed3 not trained yet)"}
    with pytest.raises(KeyError, match="no finding"):
        back.finding("nope")


def test_section_text_is_generated_from_the_json_and_annotates_headlines(tmp_path):
    from analyses.replication.section import annotate, findings_for, load_result, write

    sentences, figs, table = write(_result(tmp_path), tmp_path, png=False)
    assert (tmp_path / "replication.json").is_file() and figs == ["replication_findings.html"]
    assert any(s.startswith("rl's behaviour sits in the top layer") and "2 of 3 seeds (most seeds)" in s
               and "seed 2 30% [20%, 40%] fails" in s for s in sentences)
    assert "Seed 3: not run: zoo (organism/rl-seed3 not trained yet)." in sentences
    assert "most seeds" in table
    r = load_result(tmp_path)
    assert findings_for("Answer for rl vs base-s: the weights change ...") == (
        "layers.rl.weights_every_layer", "layers.rl.top_layer", "layers.rl.criticality")
    assert findings_for("sft vs base-s, grafting sft's layers into base-s: ...") == ("layers.sft.every_layer",)
    out = annotate(["Answer for rl vs base-s: it sits in layer 3.", "Something else."], r, unreplicated=" (one run)")
    assert out[0] == ("Answer for rl vs base-s: it sits in layer 3. Across seeds: rl's behaviour sits in the top layer: "
                      "2 of 3 seeds (most seeds).")  # findings no seed measured are left out
    assert out[1] == "Something else. (one run)"


def test_run_resumes_from_cached_seed_results_and_names_what_is_not_trained(tmp_path):
    from analyses.replication.analysis import analysis_members, cache_key, run
    from interp.io import write_json
    from interp.models import load

    cfg = ReplicationConfig(seeds=(0, 7), analyses=("layers",), cache_dir=str(tmp_path))
    for key, c in analysis_configs(cfg, 0).items():  # seed 0's numbers as a killed run left them
        own = {n: load(n).checksum for n in analysis_members(key, 0).values()}
        t = key.removeprefix("layers.")
        write_json(tmp_path / f"seed0-{key}-{cache_key(c, own)}.json",
                   {"metrics": {f"layers.{t}.top_gap": {"value": 0.7, "ci": [0.6, 0.8], "note": ""},
                                f"layers.{t}.top_is_best": {"value": 1.0, "ci": None, "note": ""}},
                    "seconds": 5.0, "cpu_seconds": 4.0})
    r = run(cfg, progress=False)  # nothing is computed: seed 0 is cached, seed 7 is not trained
    assert r.seeds == (0,)
    assert r.missing[7].startswith("not run: layers.sft (organism/base-s-seed7, organism/sft-seed7 not trained yet)")
    f = r.finding("layers.rl.top_layer")
    assert (f.holds, f.value.values[0].ci) == ({0: True}, (0.6, 0.8))
    assert r.cpu_seconds[0] == {"layers.sft": 4.0, "layers.rl": 4.0, "layers.dpo": 4.0}
    with pytest.raises(FileNotFoundError, match="seed 7: not trained yet"):
        run(ReplicationConfig(seeds=(7,), analyses=("layers",), cache_dir=str(tmp_path), skip_missing=False))
