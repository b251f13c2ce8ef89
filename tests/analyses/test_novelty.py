"""analyses.novelty: the bookkeeping on a constructed training set, the regenerated draws against the training
loop's own draws, cell selection, and the yes/no effects on constructed outcomes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from analyses.novelty import bookkeeping as bk
from analyses.novelty.analysis import Cell, NoveltyConfig, effects, select_cells, slope
from interp.organism import training
from interp.organism.task import Problem, Step, TaskConfig, sample_problems
from interp.organism.tokenizer import build_tokenizer
from interp.organism.training import TrainConfig

torch.set_num_threads(1)


def _p(start: int, *steps: tuple[str, int]) -> Problem:
    names, value, out = "abcdefgh", start, []
    for i, (op, x) in enumerate(steps):
        from interp.organism.task import apply_op

        new = apply_op(value, op, x)
        out.append(Step(names[i + 1], names[i], op, x, value, new))
        value = new
    return Problem("a", start, tuple(out))


def test_index_counts_exact_problems_prefixes_op_sequences_and_triples() -> None:
    train = [_p(3, ("+", 4), ("*", 2)), _p(3, ("+", 4), ("*", 2)), _p(3, ("+", 4), ("-", 1)), _p(5, ("*", 2))]
    idx = bk.TrainingIndex(*(bk.Counter() for _ in range(4)), 0)  # type: ignore[arg-type]
    idx.add(train)
    assert idx.n_problems == 4
    seen = idx.novelty(_p(3, ("+", 4), ("*", 2)))
    assert (seen.exact, seen.longest_seen_prefix, seen.op_sequence) == (2, 2, 2)
    assert seen.min_triple == 2  # 3+4 three times, 7*2 twice
    new = idx.novelty(_p(3, ("+", 4), ("*", 2), ("+", 1)))  # extends a seen problem by one step
    assert (new.exact, new.longest_seen_prefix, new.op_sequence, new.min_triple) == (0, 2, 0, 0)
    far = idx.novelty(_p(4, ("*", 3)))  # a seen operator sequence, an unseen step
    assert (far.exact, far.longest_seen_prefix, far.op_sequence) == (0, 0, 1) and far.min_triple == 0
    renamed = dataclasses.replace(_p(5, ("*", 2)), start_var="p", steps=(Step("q", "p", "*", 2, 5, 0),))
    assert idx.novelty(renamed).exact == 0 and idx.novelty(renamed).longest_seen_prefix == 1  # names count exactly


def test_build_counts_overlapping_draws_once_each() -> None:
    task = TaskConfig()
    idx = bk.TrainingIndex.build([(7, 5, task), (7, 3, task), (8, 2, task)])
    assert idx.n_problems == 10
    first = sample_problems(7, 5, task)
    assert idx.exact[bk.exact_key(first[0])] >= 2 and idx.exact[bk.exact_key(first[4])] >= 1


def test_merged_index_of_recipes_is_the_index_of_all_their_draws() -> None:
    task, longer = TaskConfig(), TaskConfig(min_steps=2, max_steps=4)
    a, b = [(7, 40, task), (8, 30, task)], [(7, 20, task), (9, 25, longer)]  # b repeats a prefix of a's first draw
    whole = bk.TrainingIndex.build(a + b)
    merged = bk.TrainingIndex.merged([bk.TrainingIndex.build(a), bk.TrainingIndex.build(b)])
    assert merged.n_problems == whole.n_problems == 115
    for field in ("exact", "prefixes", "op_sequences", "triples"):
        assert getattr(merged, field) == getattr(whole, field)
    assert bk.member_chain("organism/sft") == ["sft", "base-s"]
    from interp.organism.zoo import RECIPES

    assert bk.member_draws("organism/sft") == [d for r in ("sft", "base-s") for d in bk.recipe_draws(RECIPES[r])]


def test_recipe_draws_are_the_training_loops_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = training.sample_problems

    def spy(seed: int, n: int, cfg: TaskConfig | None = None, n_steps: int | None = None) -> list[Problem]:
        calls.append((seed, n))
        return real(seed, n, cfg or TaskConfig(), n_steps)

    monkeypatch.setattr(training, "sample_problems", spy)
    monkeypatch.setattr(training, "completion_logprobs",
                        lambda model, seqs, starts, pad: [torch.zeros(len(s) - st) for s, st in zip(seqs, starts)])
    cfg = TrainConfig(kind="sft", steps=3, batch_size=4, seed=5)
    tok = build_tokenizer()
    for step in range(cfg.steps):
        training.lm_loss(None, tok, cfg, step)  # type: ignore[arg-type]
    assert calls == [(s, n) for s, n, _ in bk.recipe_draws(cfg)]
    dpo = TrainConfig(kind="dpo", seed=5)
    assert bk.recipe_draws(dpo) == [(5 + 7919, dpo.dpo.pool_problems, dpo.task)]


def test_member_draws_follow_init_and_match_the_zoo() -> None:
    base = TrainConfig(kind="pretrain", steps=2, batch_size=3, seed=1)
    tuned = TrainConfig(kind="sft", steps=1, batch_size=2, seed=2, init="organism/base")
    draws = bk.member_draws("organism/tuned", {"base": base, "tuned": tuned})
    assert draws == bk.recipe_draws(tuned) + bk.recipe_draws(base)
    with pytest.raises(ValueError, match="no recipe"):
        bk.member_draws("organism/nope", {"base": base})
    zoo_sft = bk.member_draws("organism/sft")
    from interp.organism.zoo import RECIPES

    assert len(zoo_sft) == RECIPES["sft"].steps + RECIPES["base-s"].steps


def test_cells_hold_what_they_say() -> None:
    train = sample_problems(9, 3000, TaskConfig(min_steps=1, max_steps=2))
    idx = bk.TrainingIndex.build([])
    idx.add(train)
    cfg = NoveltyConfig(seen_steps=(1, 2), unseen_steps=(2, 3), n_per_cell=5, pool_chunk=50, max_pool=2000)
    cells = select_cells(idx, cfg)
    assert [(k, s) for k, s, _, _ in cells] == [(1, True), (2, True), (2, False), (3, False)]
    for k, seen, looked, probs in cells:
        assert len(probs) == 5 and all(p.n_steps == k for p in probs) and looked >= 5
        assert all((idx.exact[bk.exact_key(p)] > 0) == seen for p in probs)
    assert cells == select_cells(idx, cfg)
    pool: dict = {}  # a pool shared by members: drawn once, the same cells
    assert select_cells(idx, cfg, pool) == cells and pool and select_cells(idx, cfg, pool) == cells


def _cell(k: int, seen: bool, correct: list[int], prefix: list[int] | None = None) -> Cell:
    nov = tuple(bk.Novelty(int(seen), (prefix or [k] * len(correct))[i], 1, 1) for i in range(len(correct)))
    return Cell(k, seen, len(correct), ("",) * len(correct), nov, tuple(correct), (0,) * len(correct))


def test_effects_answer_yes_no_on_constructed_outcomes() -> None:
    cfg = NoveltyConfig(seen_steps=(1, 2), unseen_steps=(2, 3), n_per_cell=50, n_boot=400)
    cells = [_cell(1, True, [1] * 50), _cell(2, True, [1] * 50),
             _cell(2, False, [1, 0] * 25, prefix=[1, 0] * 25), _cell(3, False, [1, 0] * 25)]
    m = effects("m", "x", 10, cells, cfg)
    assert m.novelty_effect[2].value == pytest.approx(0.5) and m.novelty_effect[2].answer == "yes"
    assert m.complexity_slope["seen"].value == 0 and m.complexity_slope["seen"].answer == "no"
    assert m.complexity_slope["unseen"].answer == "no"
    assert m.prefix_effect[2].value == pytest.approx(1.0) and m.prefix_effect[2].answer == "yes"
    falling = slope([_cell(1, True, [1] * 40), _cell(2, True, [1, 0] * 20), _cell(3, True, [0] * 40)], 300, 0)
    assert falling.value == pytest.approx(-0.5) and falling.answer == "yes"
    rt = type(m).from_dict(m.to_dict())
    assert rt.novelty_effect == m.novelty_effect and rt.cells[0].novelty == m.cells[0].novelty
    assert np.isnan(slope([_cell(1, True, [1])], 10, 0).value)
