"""The forced thinking-vs-direct contrast of the reasoning-direction and SAE analyses, on the natural-language
organism (whose base never chooses to think): the contrast is read at the first token where forced thinking
and a forced direct answer differ, `auto` falls back to it, and the first zoo's cache keys are unchanged."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import interp
from analyses import sae_reasoning as sr
from analyses.verbosity import reasoning
from analyses.verbosity.figures import reasoning_sentences

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def nl() -> tuple[interp.Model, interp.tasks.Task]:
    return interp.load("organism-nl/base"), interp.task("organism-nl")


def test_forced_pairs_differ_first_at_the_token_that_commits_to_thinking(nl):
    model, task = nl
    items = task.sample(6, 0)
    pos, neg = reasoning.forced_pairs(model, task, items)
    tok = model.tokenizer
    for p, n in zip(pos.examples, neg.examples):
        j = p.positions["mode"]
        assert j == n.positions["mode"] == len(p.ids) - 1 == len(n.ids) - 1
        assert p.ids[:j] == n.ids[:j]  # the same prompt
        assert tok.convert_ids_to_tokens([p.ids[j], n.ids[j]]) == ["<think>", "ĠThe"]


def test_the_zoo_cache_keys_do_not_see_the_new_options():
    assert "contrast" not in reasoning.ReasoningConfig().key() and "min_per_mode" not in reasoning.ReasoningConfig().key()
    assert reasoning.ReasoningConfig(contrast="forced").key()["contrast"] == "forced"
    assert "contrast" not in sr.SAEReasoningConfig().key()
    with pytest.raises(ValueError, match="contrast must be one of"):
        reasoning.ReasoningConfig(contrast="both")
    with pytest.raises(ValueError, match="contrast must be one of"):
        sr.SAEReasoningConfig(contrast="both")


def test_a_base_that_never_thinks_gets_the_forced_direction_and_says_so(nl, tmp_path):
    model, task = nl
    tuned = interp.load("organism-nl/sft")
    cfg = reasoning.ReasoningConfig(train_steps=(3, 4), n_train_per_step=10, eval_steps=(1,), n_val_per_step=3,
                                    n_test_per_step=3, gammas=(2.0,), modes=("add",), wheres=("last",), n_boot=20,
                                    max_new_tokens=40, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="never writes a chain of thought"):
        reasoning.mode_direction(model, dataclasses.replace(cfg, contrast="natural"), task)
    r = reasoning.run(cfg, progress=False, base=model, tuned=tuned, task=task)
    assert r.contrast == "forced" and r.train_cot_rate == 0.0 and r.n_cot == r.n_direct == 20
    assert r.directions["paired"] and all(h["auroc_mean_diff"] > h["auroc_random"] for h in r.directions["hooks"])
    assert len(r.sweep) == model.n_layers and r.test[f"{model.name} forced CoT"].cot_rate == 1.0
    assert {f"{model.name} + random direction 1", f"{model.name} + reasoning direction"} <= set(r.gap)
    assert reasoning.ReasoningResult.from_dict(r.to_dict()).contrast == "forced"
    assert "forced contrast, not the model's own choice" in reasoning_sentences(r)[0]


def test_sae_dataset_on_the_forced_contrast_labels_texts_by_their_format(nl, tmp_path):
    model, task = nl
    cfg = dataclasses.replace(sr.SAEReasoningConfig(), n_problems=30, task="organism-nl", cache_dir=str(tmp_path))
    ds = sr.build_dataset(model, cfg, task)
    assert sr.dataset_contrast(ds) == ("forced", 0.0)
    tok = model.tokenizer
    for e in ds.examples:
        first = tok.convert_ids_to_tokens([e.ids[e.positions[sr.MODE]]])[0]
        assert e.positions[sr.MODE] == e.positions["answer"] + 1
        assert e.meta[sr.WILL_COT] == (e.meta["format"] in task.cot_formats) == (first == "<think>")
    assert {e.meta[sr.WILL_COT] for e in ds.examples} == {True, False}
    natural = sr.build_dataset(model, dataclasses.replace(cfg, contrast="natural"), task)
    assert sr.dataset_contrast(natural) == ("natural", 0.0)  # nothing to rank: the base never starts a CoT
    assert not any(e.meta[sr.WILL_COT] for e in natural.examples) and sr.MODE not in natural.examples[0].positions
