"""The rlsf and dpo-teacher zoo members: recipes in code, pairs ranked without labels (rlsf) or from another
model's samples (dpo-teacher), and exact resume of their training after a kill."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from interp.organism import training
from interp.organism.arch import ArchConfig
from interp.organism.grader import STOP_TOKENS, Grade
from interp.organism.task import TaskConfig
from interp.organism.training import DPOConfig, TrainConfig, completion_logprobs, load_init, pick_pair, train
from interp.organism.zoo import RECIPES, card_config, dependencies, lanes, recipe

TINY_ARCH = ArchConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64)  # as in conftest.py
TINY_TASK = TaskConfig(max_steps=1)


def tiny(name: str, init: Path, source: Path | None = None) -> TrainConfig:
    """The member's recipe shrunk to a tiny model: same kind, same pair ranking, a few steps."""
    cfg = RECIPES[name]
    return dataclasses.replace(
        cfg, arch=TINY_ARCH, task=TINY_TASK, steps=6, batch_size=4, warmup=2, ckpt_every=2, init=str(init),
        dpo=dataclasses.replace(cfg.dpo, pool_problems=24, max_new_tokens=12,
                                source=str(source) if source else None))


@pytest.fixture(scope="module")
def source_dir(pretrained, tmp_path_factory) -> Path:
    """A second tiny model to stand in for base-l: the pretrained one trained a little further."""
    cfg = dataclasses.replace(pretrained.config, steps=pretrained.config.steps + 20)
    run = tmp_path_factory.mktemp("source_run")
    out = train(cfg, run, progress=False)
    path = tmp_path_factory.mktemp("tiny_source")
    out.model.save_pretrained(path)
    out.tokenizer.save_pretrained(path)
    return path


def test_recipes_differ_from_dpo_only_in_how_pairs_are_chosen():
    dpo, rlsf, teacher = RECIPES["dpo"], RECIPES["rlsf"], RECIPES["dpo-teacher"]
    assert dataclasses.replace(rlsf, dpo=dpo.dpo) == dpo
    assert rlsf.dpo.rank == "confidence" and rlsf.dpo.source is None
    assert teacher.dpo.rank == "correct" and teacher.dpo.source == "organism/base-l"
    assert dataclasses.replace(teacher.dpo, source=None, pool_problems=dpo.dpo.pool_problems) == dpo.dpo
    assert dependencies("dpo-teacher") == ("base-s", "base-l") and dependencies("rlsf") == ("base-s",)


def test_recipe_points_the_teacher_at_the_output_folder_and_the_card_names_organisms(tmp_path: Path):
    cfg = recipe("organism/dpo-teacher", tmp_path)
    assert cfg.init == str(tmp_path / "base-s") and cfg.dpo.source == str(tmp_path / "base-l")
    assert card_config(cfg) == RECIPES["dpo-teacher"]


def test_a_teacher_waits_for_base_l_when_both_train_in_one_run():
    for jobs in (1, 2, 3):
        split = lanes(["base-l", "base-s", "dpo-teacher"], jobs)
        lane = next(lane for lane in split if "dpo-teacher" in lane)
        for dep in ("base-s", "base-l"):
            if dep in lane:
                assert lane.index(dep) < lane.index("dpo-teacher")


def _g(correct: bool, valid: bool = True) -> Grade:
    return Grade(valid, "direct" if valid else "invalid", 0, 0, 1 if valid else None, correct, 1)


def test_confidence_pairs_never_read_correctness_and_correct_pairs_never_read_confidence():
    grades = [_g(False), _g(True), _g(True), _g(False)]
    conf = [0.9, 0.2, 0.5, 0.1]
    assert pick_pair(grades, conf, "confidence") == (0, 3)  # the most confident is wrong: still chosen
    assert pick_pair([_g(not g.correct) for g in grades], conf, "confidence") == (0, 3)
    assert pick_pair(grades, conf, "correct") == (1, 0)
    assert pick_pair(grades, [0.0] * 4, "correct") == (1, 0)
    assert pick_pair(grades, [0.3] * 4, "confidence") is None  # nothing to rank
    assert pick_pair([_g(True)] * 3, [0.1, 0.2, 0.3], "correct") is None
    with pytest.raises(ValueError, match="'correct' or 'confidence'"):
        DPOConfig(rank="length")  # type: ignore[arg-type]


def test_rlsf_with_nothing_to_rank_raises_a_clear_error(pretrained_dir, tmp_path):
    cfg = dataclasses.replace(tiny("rlsf", pretrained_dir), dpo=dataclasses.replace(
        RECIPES["rlsf"].dpo, pool_problems=2, samples_per_problem=1, max_new_tokens=4))
    with pytest.raises(ValueError, match=r"found no \(more, less confident\) sample pair"):
        train(cfg, tmp_path, progress=False)


def test_rlsf_pairs_prefer_the_more_confident_sample_by_the_models_own_answer_probability(pretrained_dir, tmp_path):
    cfg = tiny("rlsf", pretrained_dir)
    out = train(cfg, tmp_path, stop_after=1, progress=False)
    pairs = json.loads((tmp_path / "dpo_pairs.json").read_text())["pairs"]
    assert pairs and all(p["confidence"][0] > p["confidence"][1] for p in pairs)
    assert out.pool is not None and out.pool["n_pairs"] == len(pairs) and "chosen_correct" in out.pool
    model = load_init(str(pretrained_dir))
    p = next(p for p in pairs if p["confidence"][0] > 0)
    with torch.no_grad():
        lp = completion_logprobs(model, [p["prompt"] + p["chosen"]], [len(p["prompt"])], out.tokenizer.pad_token_id)[0]
    toks = out.tokenizer.convert_ids_to_tokens(p["chosen"])
    answer_at = next((i for i, t in enumerate(toks) if t in STOP_TOKENS), len(toks)) - 1  # the token before the stop
    assert float(lp[answer_at].exp()) == pytest.approx(p["confidence"][0], rel=1e-5)
    assert float(lp.sum()) == pytest.approx(p["ref_chosen"], abs=1e-4)


def test_teacher_pairs_are_the_sources_right_vs_wrong_samples_scored_by_the_initial_model(
        pretrained_dir, source_dir, tmp_path):
    cfg = tiny("dpo-teacher", pretrained_dir, source_dir)
    out = train(cfg, tmp_path, stop_after=1, progress=False)
    pairs = json.loads((tmp_path / "dpo_pairs.json").read_text())["pairs"]
    assert pairs and out.pool is not None and out.pool["n_pairs"] == len(pairs)
    own = training.dpo_pool(load_init(str(pretrained_dir)), out.tokenizer, cfg)  # the same draws from the init
    assert [p["chosen"] for p in own] != [p["chosen"] for p in pairs]  # so the samples did come from the source
    init = load_init(str(pretrained_dir))
    p = pairs[0]
    with torch.no_grad():
        ref = completion_logprobs(init, [p["prompt"] + p["chosen"], p["prompt"] + p["rejected"]],
                                  [len(p["prompt"])] * 2, out.tokenizer.pad_token_id)
    assert [float(x.sum()) for x in ref] == pytest.approx([p["ref_chosen"], p["ref_rejected"]], abs=1e-4)


class Killed(Exception):
    """Stands in for the process dying in the middle of a step."""


@pytest.mark.parametrize("name", ["rlsf", "dpo-teacher"])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_weights(name, pretrained_dir, source_dir, tmp_path,
                                                                  monkeypatch):
    cfg = tiny(name, pretrained_dir, source_dir if name == "dpo-teacher" else None)
    whole = train(cfg, tmp_path / "whole", progress=False, log_every=1)
    real = training.dpo_loss

    def dies_at_step_3(model, tok, c, step, pairs):
        if step == 3:
            raise Killed
        return real(model, tok, c, step, pairs)

    with monkeypatch.context() as m:
        m.setattr(training, "dpo_loss", dies_at_step_3)
        with pytest.raises(Killed):  # killed between the checkpoints at steps 2 and 4
            train(cfg, tmp_path / "cut", progress=False, log_every=1)
    resumed = train(cfg, tmp_path / "cut", progress=False, log_every=1)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    init = load_init(str(pretrained_dir)).state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a)  # training moved the weights
    assert [x["loss"] for x in resumed.log] == [x["loss"] for x in whole.log]
    assert resumed.pool == whole.pool
