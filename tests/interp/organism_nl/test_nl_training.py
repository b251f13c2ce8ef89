"""Tokenizer, training (pretrain, SFT, RL), resume and export of the natural-language organism, on tiny models."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from interp.organism_nl.task import NLTask, NLTaskConfig
from interp.organism_nl.tokenizer import build_tokenizer, digit_token_ids
from interp.organism_nl.training import (
    Mix,
    NLArch,
    NLTrainConfig,
    RLConfig,
    TokenizerConfig,
    train,
)
from interp.organism_nl.zoo import export, targets

TINY = NLArch(n_layers=2, d_model=16, n_heads=2, d_mlp=32, max_len=128)
TOK = TokenizerConfig(vocab_size=300, n_problems=100, seed=0)
TASK = NLTaskConfig(min_steps=1, max_steps=2)


def tiny(kind: str = "pretrain", **kw: object) -> NLTrainConfig:
    base: dict[str, object] = {"kind": kind, "arch": TINY, "task": TASK, "tokenizer": TOK, "steps": 4,
                               "batch_size": 8, "lr": 3e-3, "warmup": 1, "ckpt_every": 2,
                               "mix": Mix(0.5, 0.3, 0.1, 0.1)}
    base.update(kw)
    return NLTrainConfig(**base)  # type: ignore[arg-type]


def test_tokenizer_is_byte_level_qwen_style_and_deterministic() -> None:
    a, b = build_tokenizer(300, 100, 0), build_tokenizer(300, 100, 0)
    assert a.get_vocab() == b.get_vocab()
    toks = a.convert_ids_to_tokens(a("What is c? The answer is 7.", add_special_tokens=False)["input_ids"])
    assert toks[-3:] == ["Ġ", "7", "."]  # the digit is split from its space, one digit per token
    assert len(digit_token_ids(a)) == 10
    ids = a(" <think>\nb = 3.\n</think>", add_special_tokens=False)["input_ids"]
    assert a.convert_ids_to_tokens(ids)[0] == "<think>" and "</think>" in a.convert_ids_to_tokens(ids)
    assert a.decode(a("naïve £ text")["input_ids"]) == "naïve £ text"  # any text encodes (byte alphabet)
    assert a.bos_token is None and a.eos_token == a.pad_token == "<|endoftext|>"


def test_config_round_trips() -> None:
    cfg = tiny("rl", init="x", rl=RLConfig(group_size=2))
    assert NLTrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="needs `init`"):
        tiny("sft")


def test_same_seed_same_weights_and_resume_is_exact(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = tiny()
    full = train(cfg, tmp_path / "a", progress=False)
    part = train(cfg, tmp_path / "b", stop_after=2, progress=False)
    assert part.steps_done == 2
    resumed = train(cfg, tmp_path / "b", progress=False)
    again = train(cfg, tmp_path / "c", progress=False)
    for (n, p), q, r in zip(full.model.state_dict().items(), resumed.model.state_dict().values(),
                            again.model.state_dict().values()):
        assert torch.equal(p, q) and torch.equal(p, r), n
    with pytest.raises(ValueError, match="another config"):
        train(dataclasses.replace(cfg, lr=1e-3), tmp_path / "a", progress=False)


def test_export_loads_evaluates_and_post_trains(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    from interp.evaluation import GenerationConfig, evaluate
    from interp.models import load

    base = export("base", train(tiny(), tmp_path / "runs" / "base", progress=False), tmp_path / "zoo", eval_n=2)
    card = (base / "card.json").read_text()
    assert '"Qwen2ForCausalLM"' in card and '"forced_cot"' in card and "accuracy_ci" in card
    m = load(base)
    assert not m.prepend_bos  # Qwen2: prompts start with their first word, as in training
    task = NLTask(TASK)
    res = evaluate(m, task, task.sample(4, seed=0), GenerationConfig(force="cot", max_new_tokens=8))
    assert all(c.startswith("<think>") for c in res.completions)
    sft = train(tiny("sft", init=str(base), mix=Mix(0.0, 1.0, 0.0), steps=2), tmp_path / "runs" / "sft", progress=False)
    rl = train(tiny("rl", init=str(base), steps=2, batch_size=2, rl=RLConfig(group_size=2, max_new_tokens=12)),
               tmp_path / "runs" / "rl", progress=False)
    assert {"reward", "sample_acc", "sample_cot"} <= set(rl.log[-1])
    assert sft.tokenizer.get_vocab() == m.tokenizer.get_vocab()
    rows = targets({"base": __import__("json").loads(card)})
    assert rows[0]["met"] in (True, False) and rows[-1]["met"] is None


def test_pretraining_continues_from_an_earlier_stage(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    first = train(tiny(steps=2), tmp_path / "s1", progress=False)
    first.model.save_pretrained(tmp_path / "s1" / "model")
    first.tokenizer.save_pretrained(tmp_path / "s1" / "model")
    second = train(tiny(steps=2, init=str(tmp_path / "s1" / "model"), seed=1), tmp_path / "s2", progress=False)
    assert second.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    changed = [not torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                     second.model.state_dict().values())]
    assert any(changed)


def test_direct_answers_can_be_kept_to_easy_problems() -> None:
    import numpy as np

    with pytest.raises(ValueError, match="direct_up_to"):
        Mix(direct_up_to=0)
    mix = Mix(direct=0.5, think=0.5, think_concise=0.0, direct_up_to=1)
    assert Mix.from_dict(mix.to_dict()) == mix
    rng = np.random.default_rng(0)
    easy = {mix.sample(rng, 1) for _ in range(50)}
    hard = {mix.sample(rng, 3) for _ in range(50)}
    assert easy == {"direct", "think"} and hard == {"think"}
