"""analyses.shift recovery, SAE comparison and chain patching: the bookkeeping on constructed cases (mixture
batches, curve averaging over seeds, firing-rate comparisons, chain edits), and chain patching on sft end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from analyses.shift.analysis import Condition
from analyses.shift.chain_patch import (
    ChainPatchConfig,
    PatchCondition,
    change_value,
    clause_values,
    difference,
    follow_columns,
    measure_condition,
)
from analyses.shift.recovery import CONTROL, RecoveryConfig, RecoveryPoint, curves, seed_mean_score
from analyses.shift.sae_shift import SAEShiftConfig, compare, eval_problems, per_example_counts
from analyses.shift.transforms import DEFAULT_SHIFTS, IN_DISTRIBUTION
from interp.organism.recipes_shift import MixtureRecipe
from interp.organism.task import TaskConfig

torch.set_num_threads(1)
LONG = TaskConfig(min_steps=5, max_steps=6)


# ------------------------------------------------------------------------------------------ mixture recipe

def test_mixture_batches_hold_the_share_and_reuse_in_distribution_problems() -> None:
    none = MixtureRecipe(shifted=LONG, shifted_share=0.0, batch_size=64)
    every = MixtureRecipe(shifted=LONG, shifted_share=1.0, batch_size=64)
    some = MixtureRecipe(shifted=LONG, shifted_share=0.25, batch_size=64)
    assert not any(sh for _, _, sh in none.batch(3))
    assert all(sh and p.n_steps >= 5 for p, _, sh in every.batch(3))
    n_sh = [sum(sh for _, _, sh in some.batch(s)) for s in range(40)]
    assert 0.18 < np.mean(n_sh) / 64 < 0.32 and len(set(n_sh)) > 1  # Binomial, not a fixed count
    for s in range(5):  # common random numbers: the in-distribution problems are the share-0 batch's first ones
        kept = [p for p, _, sh in some.batch(s) if not sh]
        assert kept == [p for p, _, _ in none.batch(s)][:len(kept)]
        assert all(p.n_steps <= 4 for p in kept)
    assert some.batch(7) == some.batch(7)
    assert some.key() != none.key() and MixtureRecipe.from_dict(some.to_dict()) == some
    assert MixtureRecipe(shifted=LONG, shifted_share=0.01, steps=10, batch_size=8).shifted_prompts() <= {
        p.prompt() for s in range(10) for p, _, sh in MixtureRecipe(shifted=LONG, shifted_share=0.01, steps=10,
                                                                      batch_size=8).batch(s) if sh}
    with pytest.raises(ValueError, match="shifted_share"):
        MixtureRecipe(shifted=LONG, shifted_share=1.5)


# ------------------------------------------------------------------------------------------ recovery curve

def _cond(name: str, correct: list[int]) -> Condition:
    n = len(correct)
    return Condition(name, (2,) * n, tuple(correct), (1,) * n, (0,) * n, tuple(correct), (0,) * n, (2,) * n,
                     (0.0,) * n, ())


def _point(shift: str, f: float, seed: int, acc_in: list[int], acc: dict[str, list[int]]) -> RecoveryPoint:
    conds = (_cond(IN_DISTRIBUTION.name, acc_in), *(_cond(k, v) for k, v in acc.items()))
    return RecoveryPoint(shift, f, seed, "k", "c", int(64 * f), 64, 1.0, 1.0, 1.0, conds, {})


def test_recovery_points_share_one_control_and_curves_average_seeds() -> None:
    cfg = RecoveryConfig(shifts=("separator ,", "renamed variables"), fractions=(0.0, 0.1), seeds=(0, 1), n_boot=200)
    pts = cfg.points()
    assert pts[:2] == [(CONTROL, 0.0, 0), (CONTROL, 0.0, 1)] and len(pts) == 2 + 2 * 2
    assert [s.name for s in cfg.eval_shifts(CONTROL)] == ["in-distribution", "separator ,", "renamed variables"]
    assert [s.name for s in cfg.eval_shifts("separator ,")] == ["in-distribution", "separator ,"]
    assert cfg.recipe(CONTROL, 0.0, 1).shifted_share == 0.0 and cfg.recipe("separator ,", 0.1, 1).shifted.separator == ","
    ones, zeros, half = [1] * 10, [0] * 10, [1, 0] * 5
    points = [_point(CONTROL, 0.0, 0, ones, {"separator ,": zeros, "renamed variables": half}),
              _point(CONTROL, 0.0, 1, ones, {"separator ,": half, "renamed variables": half}),
              _point("separator ,", 0.1, 0, ones, {"separator ,": ones}),
              _point("separator ,", 0.1, 1, half, {"separator ,": ones}),
              _point("renamed variables", 0.1, 0, ones, {"renamed variables": zeros}),
              _point("renamed variables", 0.1, 1, ones, {"renamed variables": zeros})]
    c = curves(points, cfg)
    sep, ren = c["separator ,"], c["renamed variables"]
    assert [p.fraction for p in sep] == [0.0, 0.1]
    assert sep[0].shifted.value == pytest.approx(0.25) and sep[0].shifted_by_seed == (0.0, 0.5)
    assert sep[1].shifted.value == 1.0 and sep[1].in_distribution.value == pytest.approx(0.75)
    assert ren[0].shifted.value == pytest.approx(0.5) and ren[1].shifted.value == 0.0
    assert sep[1].shifted_examples == pytest.approx(6.0)
    with pytest.raises(ValueError, match="no training distribution"):
        RecoveryConfig(shifts=("operand first",))


def test_seed_mean_score_resamples_problems_paired_across_seeds() -> None:
    a = np.array([1, 1, 0, 0] * 25, dtype=float)
    s = seed_mean_score([a, 1 - a], 300, 0)  # paired: every resample averages to exactly 0.5
    assert s.value == 0.5 and s.ci == (0.5, 0.5) and s.n == 100
    t = seed_mean_score([a, a], 300, 0)
    assert t.ci[0] < 0.5 < t.ci[1]


# ------------------------------------------------------------------------------------------ SAE comparison

def test_compare_flags_features_that_stop_firing_against_sampling_noise() -> None:
    rng = np.random.default_rng(0)
    n, f = 200, 4
    base = (rng.random((n, f)) < [0.3, 0.05, 0.0, 0.2]).astype(float)
    other = (rng.random((n, f)) < [0.3, 0.05, 0.0, 0.2]).astype(float)
    shifted = other.copy()
    shifted[:, 0] = 0  # feature 0 stops firing
    shifted[:, 2] = (rng.random(n) < 0.3)  # feature 2 starts
    lengths = np.ones(n)
    ctrl = compare("control", (base, lengths), (other, lengths), 0.01, 0.8, 300, 0)
    sh = compare("shift", (base, lengths), (shifted, lengths), 0.01, 0.8, 300, 0)
    assert ctrl.stopped == () and ctrl.started == ()
    assert sh.stopped == (0,) and sh.started == (2,)
    assert sh.diff_ci[0][1] < 0 < sh.diff_ci[2][0]


def test_per_example_counts_and_paired_eval_problems() -> None:
    fired = np.array([[1, 0], [1, 1], [0, 1]], dtype=float)
    counts, lengths = per_example_counts(fired, np.array([0, 0, 2]), 3)
    assert counts.tolist() == [[2, 1], [0, 0], [0, 1]] and lengths.tolist() == [2, 0, 1]
    cfg = SAEShiftConfig(n_eval=12)
    by = {s.name: s for s in DEFAULT_SHIFTS}
    base = eval_problems(cfg, IN_DISTRIBUTION)
    for name in cfg.shifts:
        sh = eval_problems(cfg, by[name])
        assert [p.answer for p in sh] != [] and len(sh) == len(base) == 12
        assert [len(p.prompt) + len(p.reference("verbose")) for p in sh] == \
            [len(p.prompt) + len(p.reference("verbose")) for p in base]
    with pytest.raises(ValueError, match="hook"):
        SAEShiftConfig(hook="blocks.2.hook_resid_post")


# ------------------------------------------------------------------------------------------ chain patching

VERBOSE = ["b", "=", "a", "+", "4", "=", "3", "+", "4", "=", "7", ",", "c", "=", "b", "*", "2", "=", "7", "*", "2", "=", "4", ",", "so", "c", "=", "4", "<eos>", ";"]
RENAMED = ["b", "=", "7", ";", "c", "=", "4", ";", "so", "4"]


def test_change_value_edits_the_last_value_before_the_answer_and_keeps_the_closing() -> None:
    assert clause_values(VERBOSE[:VERBOSE.index("<eos>")]) == [10, 22]
    e = change_value(VERBOSE, None, 1)
    assert e is not None and e.step == 2 and e.at == 22 and e.own == "4"
    assert e.as_written == tuple(VERBOSE[:VERBOSE.index("<eos>") - 1])  # ends `so c =`
    assert e.changed[22] == e.implied != "4" and e.changed[:22] == e.as_written[:22]
    c = change_value(RENAMED, None, 6)  # written 4 + 6 = 0
    assert c is not None and c.changed == ("b", "=", "7", ";", "c", "=", "0", ";", "so") and c.implied == "0"
    skip = change_value(RENAMED, None, 10)  # 4 + 10 = 4 is the written value: the next digit is taken
    assert skip is not None and skip.implied == "5"
    assert change_value(["4"], None, 1) is None and change_value(["b", "=", "7", ";", "so"], None, 1) is None


def test_change_value_of_an_earlier_step_cuts_after_its_clause_and_needs_the_implied_answer() -> None:
    with pytest.raises(ValueError, match="implied_of"):
        change_value(RENAMED, 1, 1)
    e = change_value(RENAMED, 1, 1, implied_of=lambda v: v * 2 % 10)  # 7+1 = 8 -> 6 (not the own answer 4)
    assert e is not None and e.changed == ("b", "=", "8", ";") and e.implied == "6" and e.value == 8
    assert change_value(RENAMED, 1, 1, implied_of=lambda v: 4) is None  # no value changes the answer
    assert change_value(RENAMED, 3, 1, implied_of=lambda v: v) is None


def test_follow_columns_and_difference() -> None:
    cols = follow_columns(["4", "4", "4"], ["5", "6", "7"], ["4", "4", "1"], ["5", "4", None])
    assert cols == {"consistent": (1, 1, 0), "follows": (1, 0, 0), "kept": (0, 1, 0)}
    with pytest.raises(ValueError, match="one entry per chain"):
        follow_columns(["4"], [], ["4"], ["4"])
    from analyses.shift.analysis import Score

    d = difference(Score(0.9, (0.8, 1.0), 50), Score(0.5, (0.4, 0.6), 50))
    assert d.value == pytest.approx(-0.4) and d.ci[0] < -0.4 < d.ci[1]


def test_chain_patching_on_sft_follows_the_written_last_value() -> None:
    from interp.models import load

    cfg = ChainPatchConfig(n_problems=6, n_patch=2)
    model = load("organism/sft")
    res = measure_condition(model, PatchCondition("in-distribution", 3), cfg)
    assert res.n_cot == 6 and len(res.follows) == 6
    assert res.scores(100)["consistent"].value == 1.0 and res.scores(100)["follows"].value == 1.0
    prof, total = res.patch_profile(100)
    assert len(prof) == model.n_layers and total.value > 0 and prof[0].value == pytest.approx(1.0, abs=1e-4)
    sep = measure_condition(model, dataclasses.replace(PatchCondition("separator ,", 3, (("separator", ","),))), cfg)
    assert sep.n_problems == 6 and len(sep.follows) <= sep.n_cot


# ------------------------------------------------------------------------------------------ results render

def test_results_round_trip_and_render_sentences_and_figures(tmp_path) -> None:
    from analyses.shift import chain_patch, recovery, sae_shift

    cfg = RecoveryConfig(shifts=("separator ,",), fractions=(0.0, 0.1), seeds=(0,), n_boot=50)
    pts = (_point(CONTROL, 0.0, 0, [1] * 10, {"separator ,": [0] * 10}),
           _point("separator ,", 0.1, 0, [1] * 10, {"separator ,": [1] * 10}))
    init = (_cond(IN_DISTRIBUTION.name, [1] * 10), _cond("separator ,", [0, 1] * 5))
    rec = recovery.RecoveryResult(cfg, "c", init, pts, recovery.curves(pts, cfg), {})
    assert recovery.RecoveryResult.from_dict(rec.to_dict()) == rec
    text = " ".join(recovery.sentences(rec))
    assert "f=0.1" in text and "smallest share whose interval lies above 90% of sft's in-distribution accuracy is f=0.1" in text
    assert recovery.figure(rec, tmp_path, png=False)["shift_recovery"][0].exists()

    cp = chain_patch.ConditionPatch("in-distribution", 4, 3, (1, 1, 1), (1, 1, 0), (0, 0, 1), (1, 1, 0), early_follows=(0, 1),
                                    early_kept=(1, 0), written=(4, 4, 1), effects=((2.0, 0.0), (4.0, 2.0)),
                                    totals=(2.0, 4.0))
    prof, total = cp.patch_profile(50)
    assert [p.value for p in prof] == pytest.approx([1.0, 0.25]) and total.value == 3.0
    ccfg = ChainPatchConfig(models=("organism/sft",), conditions=(PatchCondition("in-distribution", 4),
                                                                  PatchCondition("separator ,", 4, (("separator", ","),))))
    res = chain_patch.ChainPatchResult(ccfg, (chain_patch.ModelChainPatch("organism/sft", "c", (
        cp, dataclasses.replace(cp, condition="separator ,"))),), {})
    assert chain_patch.ChainPatchResult.from_dict(res.to_dict()) == res
    assert "chains write 3.0 of 4 steps, 33% a single step" in " ".join(chain_patch.sentences(res))
    assert chain_patch.figure(res, tmp_path, png=False)["shift_chain_patch"][0].exists()

    scfg = SAEShiftConfig(shifts=("separator ,",))
    lengths = np.ones(50)
    a = np.zeros((50, 3))
    a[:, 0] = 1
    comps = (compare(sae_shift.CONTROL, (a, lengths), (a, lengths), 0.01, 0.8, 50, 0),
             compare("separator ,", (a, lengths), (np.zeros((50, 3)), lengths), 0.01, 0.8, 50, 0))
    sres = sae_shift.SAEShiftResult(scfg, "c", "p", {"explained_variance": 0.9}, (1.0, 0.0, 0.0), comps,
                                    {sae_shift.CONTROL: 50}, {})
    assert sae_shift.SAEShiftResult.from_dict(sres.to_dict()) == sres
    assert sres.chain_features() == [0]
    assert "1 features stop firing (control 0), 1 of them chain features" in " ".join(sae_shift.sentences(sres))
    assert sae_shift.figure(sres, tmp_path, png=False)["shift_sae"][0].exists()
