"""Verbosity (ASC) and reasoning-direction analyses: pair positions, the choice rule, KL and prefixes on the zoo,
and small end-to-end runs whose results round-trip and render."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import interp
from analyses.verbosity import analysis, reasoning
from analyses.verbosity.common import (
    Cell,
    cell_of,
    forced_concise_prefixes,
    generate_graded,
    generate_graded_many,
    steered_kl,
)
from analyses.verbosity.figures import (
    reasoning_figures,
    reasoning_sentences,
    verbosity_figures,
    verbosity_sentences,
)
from interp.organism.reasoning_task import item_problem
from interp.steering import Add, Subtract

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sft() -> interp.Model:
    return interp.load("organism/sft")


@pytest.fixture(scope="module")
def organism() -> interp.tasks.Task:
    return interp.task("organism")


def test_decision_positions_are_the_equals_before_each_steps_format_choice(sft: interp.Model, organism) -> None:
    items = organism.sample(6, 0, min_steps=2)
    probs = [item_problem(it) for it in items]
    verbose, concise = analysis.pair_datasets(sft, organism, items)
    for p, v, c in zip(probs, verbose, concise):
        vt, ct = (sft.tokenizer.convert_ids_to_tokens(list(e.ids)) for e in (v, c))
        for i, s in enumerate(p.steps, 1):
            for toks, e in ((vt, v), (ct, c)):
                j = e.positions[f"step{i}.eq"]
                assert (toks[j - 1], toks[j]) == (s.target, "=")
                assert e.positions[f"step{i}.target"] == j - 1  # the next token is `=` in both formats
            # the contexts are the same up to step 1's choice, and differ from step 2 on
        assert v.ids[:v.positions["step1.eq"] + 1] == c.ids[:c.positions["step1.eq"] + 1]
    sel = analysis.selector("decision", 4)
    assert sel.names == ("step2.eq", "step3.eq", "step4.eq") and sel.missing == "skip"
    assert analysis.selector("target", 3).names == ("step2.target", "step3.target")
    assert analysis.selector("last", 4).names == ("final.value",)


def _cell(tokens: float, acc: float, kl: float, invalid: int = 0) -> Cell:
    return Cell("x", 100, tokens, (tokens, tokens), acc, (acc, acc), 1.0, (1.0, 1.0),
                {"verbose": 100 - invalid, "invalid": invalid}, 1.0, 1.0, kl)


def test_choice_rule_keeps_accuracy_and_kl_and_says_when_nothing_qualifies() -> None:
    cfg = analysis.VerbosityConfig()
    base = _cell(34.0, 1.0, 0.0)
    sweep = [analysis.SweepCell("decision", "blocks.3.hook_resid_post", g, c) for g, c in [
        (-0.125, _cell(33.0, 0.995, 0.01)), (-0.25, _cell(25.0, 0.98, 0.05)), (-0.5, _cell(12.0, 0.5, 0.4)),
        (-1.0, _cell(5.0, 0.0, 3.0, invalid=90)), (0.5, _cell(60.0, 1.0, 0.2))]]
    chosen, aggressive = analysis.choose(sweep, base, cfg)
    assert chosen.gamma == -0.125  # 25 tokens loses 2 points: outside the 1-point tolerance
    assert aggressive.gamma == -0.5  # -1.0 breaks the KL bound and is mostly unparseable
    assert analysis.choose(sweep[2:], base, cfg)[0] is None
    with pytest.raises(ValueError, match="unknown direction variants"):
        analysis.VerbosityConfig(variants=("middle",))
    with pytest.raises(ValueError, match="at least 4 pairs"):
        analysis.VerbosityConfig(n_pairs=2)
    with pytest.raises(ValueError, match="positive"):
        analysis.VerbosityConfig(gammas=(-1.0,))


def test_kl_is_zero_without_a_change_and_prefixes_force_the_concise_format(sft: interp.Model, organism) -> None:
    items = organism.sample(6, 1, min_steps=2)
    probs = [item_problem(it) for it in items]
    v = analysis.directions(sft, dataclasses.replace(analysis.VerbosityConfig(), n_pairs=12, variants=("decision",)),
                            organism)
    vec = v["decision"].get("blocks.3.hook_resid_post").mean_diff
    zero = [Subtract(vec, scale=0.0)]
    run0 = generate_graded(sft, organism, items, zero)
    assert steered_kl(sft, organism, items, run0, zero) == 0.0
    strong = [Subtract(vec, scale=0.5)]
    run = generate_graded(sft, organism, items, strong)
    assert steered_kl(sft, organism, items, run, strong) > 0.01
    assert sum(g.n_tokens for g in run.grades) < sum(g.n_tokens for g in run0.grades)
    pre = [p.split() for p in forced_concise_prefixes(sft, organism, items)]
    assert all(p[:2] == [q.steps[0].target, "="] and p[2].isdigit() and p[3] == ";" for p, q in zip(pre, probs))
    forced = generate_graded(sft, organism, items, prefixes=[" " + " ".join(p) for p in pre])
    assert {g.format for g in forced.grades} <= {"concise", "invalid"}
    c = cell_of("forced", forced, 50)
    assert c.n == 6 and c.mean_tokens < cell_of("free", run0, 50).mean_tokens


def test_many_conditions_in_one_generation_give_each_conditions_own_completions(sft: interp.Model, organism) -> None:
    """`generate_graded_many` (conditions on their own rows, several per call, items split into batch_size chunks)
    gives the completions and grades `generate_graded` gives one condition at a time."""
    items = organism.sample(7, 2, min_steps=2)
    v = analysis.directions(sft, dataclasses.replace(analysis.VerbosityConfig(), n_pairs=12, variants=("decision",)),
                            organism)["decision"]
    conds = [[Subtract(v.get("blocks.3.hook_resid_post").mean_diff, scale=0.5, where="generated")], [],
             [Add(v.get("blocks.1.hook_resid_post").mean_diff, scale=1.0, where="generated")],
             [Subtract(v.get("blocks.2.hook_resid_post").mean_diff, scale=1.0, where="generated")]]
    many = generate_graded_many(sft, organism, items, conds, batch_size=4, max_rows=9, max_new_tokens=40)
    for ivs, got in zip(conds, many):
        one = generate_graded(sft, organism, items, ivs, batch_size=4, max_new_tokens=40)
        assert got.completions == one.completions and got.grades == one.grades
    assert len({r.completions for r in many}) == len(conds)  # each condition really steered its own rows
    with pytest.raises(ValueError, match="already names rows"):
        generate_graded_many(sft, organism, items, [[dataclasses.replace(conds[0][0], rows=(0,))]])


def test_small_verbosity_run_round_trips_and_renders(tmp_path: Path) -> None:
    cfg = analysis.VerbosityConfig(n_pairs=8, steps=(1, 2), n_val_per_step=3, n_test_per_step=3, variants=("decision",),
                                   gammas=(0.5,), n_boot=50, timing_repeats=1, latency_problems=2,
                                   cache_dir=str(tmp_path / "cache"))
    r = analysis.run_cached(cfg, progress=False)
    assert len(r.sweep) == 2 * 4 and {s.gamma for s in r.sweep} == {-0.5, 0.5}
    assert r.test["unsteered"].n == 6 and "prompt: concise first step" in r.test
    assert r.model_checksum == interp.load("organism/sft").checksum
    assert r.teacher_forced["verbose"]["step_accuracy"] == 1.0  # sft's verbose chains: every value right
    assert r.teacher_forced["concise"]["n"] == 6
    assert r.speed["latency_problems"] == 2 and r.speed["unsteered_seconds_per_problem"] > 0
    # numbers of the token-level code before the task interface (commit ae1693a), reproduced since
    assert (r.val_unsteered.mean_tokens, r.test["unsteered"].mean_tokens,
            r.test["prompt: concise first step"].mean_tokens) == (22.0, 22.0, 8.0)
    assert [s.cell.mean_tokens for s in r.sweep] == pytest.approx(
        [22.0, 22.0, 21.666666666666668, 22.0, 21.666666666666668, 22.0, 8.0, 72.0], abs=1e-9)
    assert [s.cell.kl for s in r.sweep] == pytest.approx(
        [2e-06, 1e-06, 0.118695, 0.002077, 0.118843, 0.00031, 0.038393, 13.755809], abs=2e-6)
    assert (r.chosen.hook, r.chosen.gamma) == ("blocks.3.hook_resid_post", -0.5)
    again = analysis.VerbosityResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.to_dict() == r.to_dict()
    assert analysis.run_cached(cfg, progress=False).to_dict() == r.to_dict()  # from the cache
    paths = verbosity_figures(r, tmp_path, png=False)
    assert all(p[0].is_file() for p in paths.values())
    assert any("Unsteered sft" in s for s in verbosity_sentences(r))


def test_small_reasoning_direction_run_round_trips_and_renders(tmp_path: Path) -> None:
    cfg = reasoning.ReasoningConfig(train_steps=(3, 4), n_train_per_step=30, n_val_per_step=4, n_test_per_step=4,
                                    gammas=(1.0,), clamp_ks=(0.0,), wheres=("last",), n_boot=50,
                                    cache_dir=str(tmp_path / "cache"))
    r = reasoning.run(cfg, progress=False)
    assert r.n_cot >= 2 and r.n_direct >= 2
    # numbers of the token-level code before the task interface (commit ae1693a), reproduced since
    assert (r.n_cot, r.n_direct, r.train_cot_rate) == (13, 47, pytest.approx(0.21666666666666667))
    assert [s.cell.accuracy for s in r.sweep] == [0.5, 0.625, 0.5, 0.625, 0.375, 0.5, 0.625, 1.0]
    assert {k: v.accuracy for k, v in r.test.items()} == pytest.approx({
        "base-s unsteered": 0.75, "base-s + reasoning direction": 1.0, "base-s + random direction": 0.6666666666666666,
        "base-s + reasoning direction (best add)": 0.875, "base-s + random direction (best add)": 0.7083333333333334,
        "base-s forced CoT": 1.0, "sft unsteered": 1.0})
    assert {(s.mode, s.gamma) for s in r.sweep} == {("add", 1.0), ("clamp", 0.0)} and len(r.sweep) == 2 * 4
    assert r.test["sft unsteered"].accuracy == 1.0 and r.test["base-s forced CoT"].cot_rate == 1.0
    assert r.tokens_steered["positions_per_problem"] == 1.0
    assert set(r.gap) >= {"base-s + reasoning direction", "base-s + random direction 1"}
    again = reasoning.ReasoningResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.to_dict() == r.to_dict()
    paths = reasoning_figures(r, tmp_path, png=False)
    assert all(p[0].is_file() for p in paths.values())
    assert any("gap recovered" in s for s in reasoning_sentences(r))
    with pytest.raises(ValueError, match="unknown positions"):
        reasoning.ReasoningConfig(wheres=("middle",))
    with pytest.raises(ValueError, match="modes must be"):
        reasoning.ReasoningConfig(modes=("scale",))


@pytest.fixture(scope="module")
def gsm_bpe(tmp_path_factory):
    """Two random-init GPT-2s (base and "tuned") with a GPT-2-style BPE trained on the shipped gsm_synth task."""
    from tests.bpe import gpt2_style, save_checkpoint

    task = interp.task("jsonl:gsm_synth")
    pool = task.sample(len(task), seed=0)
    tok = gpt2_style([task.prompt(it) + task.completion(it, f) for it in pool for f in task.formats], vocab_size=800)
    models = [interp.load(save_checkpoint(tmp_path_factory.mktemp(f"gpt2-gsm-{s}"), tok, "gpt2", seed=s, max_len=256))
              for s in (0, 1)]
    return task.for_model(models[0]), models


def test_verbosity_runs_end_to_end_on_a_bpe_model_with_the_tasks_cot_and_direct_pairs(gsm_bpe, tmp_path: Path) -> None:
    task, (base, tuned) = gsm_bpe
    assert analysis.pair_formats(task, analysis.VerbosityConfig()) == ("cot", "direct")
    with pytest.raises(ValueError, match="need the organism's step positions"):
        analysis.directions(tuned, analysis.VerbosityConfig(task="jsonl:gsm_synth", n_pairs=4), task)
    cfg = analysis.VerbosityConfig(task="jsonl:gsm_synth", n_pairs=6, steps=(), n_val_per_step=3, n_test_per_step=3,
                                   variants=("last",), gammas=(0.5,), n_boot=20, max_new_tokens=6, timing_repeats=1,
                                   latency_problems=1, batch_size=8, cache_dir=str(tmp_path / "cache"))
    r = analysis.run(cfg, progress=False, model=tuned, base=base, task=task)
    d = r.directions[f"{tuned.name}/last"]
    assert len(d["hooks"]) == tuned.n_layers and all(h["norm_mean_diff"] > 0 for h in d["hooks"])
    assert len(r.sweep) == 2 * tuned.n_layers and {s.gamma for s in r.sweep} == {-0.5, 0.5}
    assert all(s.cell.kl > 0 for s in r.sweep) and r.val_unsteered.kl == 0.0  # a nonzero push changes the next token
    assert r.test["unsteered"].n == 3 and "prompt: concise first step" not in r.test  # organism-only condition
    # lengths are generated tokens, accuracy and CoT are the task's grade: a random model writes no valid answer
    assert 0 < r.test["unsteered"].mean_tokens <= 6 and r.test["unsteered"].accuracy == 0.0
    assert all("unsupported" in v for v in r.teacher_forced.values()) and set(r.teacher_forced) == {"cot", "direct"}
    assert analysis.VerbosityResult.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()
    assert any("Unsteered" in s for s in verbosity_sentences(r))
    # the pair texts are the task's reference completions, read at their last token
    long, short = analysis.pair_datasets(tuned, task, task.sample(2, seed=1), ("cot", "direct"))
    for a, b, it in zip(long, short, task.sample(2, seed=1)):
        assert tuned.tokenizer.decode(list(a.ids)).endswith(task.completion(it, "cot"))
        assert tuned.tokenizer.decode(list(b.ids)).endswith(task.completion(it, "direct"))
