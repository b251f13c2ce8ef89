"""Behaviour of the training loop: loss goes down, exact resume after a kill, safe checkpoints, RL and DPO."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp.organism import training
from interp.organism.arch import ArchConfig
from interp.organism.grader import grade
from interp.organism.task import FormatMix, Problem, Step, TaskConfig, sample_problems
from interp.organism.training import (
    DPOConfig,
    RLConfig,
    TrainConfig,
    completion_logprobs,
    example_ids,
    lr_at,
    train,
)

TINY_ARCH = ArchConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64)  # as in conftest.py
TINY_TASK = TaskConfig(max_steps=1)
SMALL = TrainConfig(kind="pretrain", arch=TINY_ARCH, task=TINY_TASK, steps=12, batch_size=16, lr=1e-2, warmup=5,
                    ckpt_every=4, seed=0)


class Killed(Exception):
    """Stands in for the process dying in the middle of a step."""


def run(cfg: TrainConfig, run_dir: Path, **kw) -> training.TrainOutcome:
    return train(cfg, run_dir, progress=False, log_every=1, **kw)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def assert_clean_run_dir(run_dir: Path, extra: set[str] = frozenset()) -> None:
    """Only the `state` folder (plus `extra`), holding only safetensors and JSON; no temp or old folders."""
    assert {p.name for p in run_dir.iterdir()} == {"state", *extra}
    files = {p.name for p in (run_dir / "state").iterdir()}
    assert files == {"model.safetensors", "optimizer.safetensors", "state.json"}
    for p in run_dir.rglob("*"):
        assert not p.name.startswith("."), p
        assert p.is_dir() or p.suffix in (".safetensors", ".json"), p


def _kill_at(monkeypatch, loss_name: str, kill_step: int) -> None:
    real = getattr(training, loss_name)

    def dying(model, tok, cfg, step, *args):
        if step == kill_step:
            raise Killed(f"killed at step {step}")
        return real(model, tok, cfg, step, *args)

    monkeypatch.setattr(training, loss_name, dying)


# ---------------------------------------------------------------- learning rate


def test_lr_warms_up_linearly_from_lr_over_warmup():
    cfg = TrainConfig(lr=1e-3, warmup=10, steps=100, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(1e-4)
    assert lr_at(cfg, 4) == pytest.approx(5e-4)
    assert lr_at(cfg, 9) == pytest.approx(1e-3)
    warm = [lr_at(cfg, s) for s in range(10)]
    assert warm == sorted(warm)


def test_lr_cosine_decays_from_lr_to_min_ratio():
    cfg = TrainConfig(lr=1e-3, warmup=10, steps=100, min_lr_ratio=0.1)
    assert lr_at(cfg, 10) == pytest.approx(1e-3)
    assert lr_at(cfg, 55) == pytest.approx(0.55e-3)  # half-way: mean of lr and min lr
    assert lr_at(cfg, 100) == pytest.approx(1e-4)
    assert lr_at(cfg, 500) == pytest.approx(1e-4)  # stays at the floor past the end
    decay = [lr_at(cfg, s) for s in range(10, 101)]
    assert decay == sorted(decay, reverse=True)
    assert min(lr_at(cfg, s) for s in range(10, 100)) > 1e-4


def test_lr_without_warmup_starts_at_lr():
    cfg = TrainConfig(lr=2e-3, warmup=0, steps=10, min_lr_ratio=0.0)
    assert lr_at(cfg, 0) == pytest.approx(2e-3)
    assert lr_at(cfg, 10) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- configs and data


def test_train_config_round_trips_through_json():
    cfg = TrainConfig(kind="rl", arch=TINY_ARCH, task=TINY_TASK.shifted(separator=","), mix=FormatMix(0, 0, 1),
                      init="/some/dir", rl=RLConfig(group_size=4), dpo=DPOConfig(beta=0.2))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_example_ids_are_bos_prompt_completion_eos(tok):
    p = Problem("a", 3, (Step("b", "a", "+", 4, 3, 7),))
    ids, start = example_ids(tok, p, "concise")
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.convert_ids_to_tokens(ids[1:start]) == p.prompt_tokens()
    assert tok.convert_ids_to_tokens(ids[start:-1]) == ["b", "=", "7", ";", "so", "7"]


def test_completion_logprobs_match_one_sequence_at_a_time(tok, random_model):
    seqs = [example_ids(tok, p, f)[0] for p, f in zip(sample_problems(0, 3), ("direct", "concise", "verbose"))]
    starts = [example_ids(tok, p, f)[1] for p, f in zip(sample_problems(0, 3), ("direct", "concise", "verbose"))]
    with torch.no_grad():
        batched = completion_logprobs(random_model, seqs, starts, tok.pad_token_id)
        for s, st, lp in zip(seqs, starts, batched):
            alone = completion_logprobs(random_model, [s], [st], tok.pad_token_id)[0]
            assert lp.shape == (len(s) - st,)
            torch.testing.assert_close(lp, alone, rtol=0, atol=1e-5)
            assert (lp <= 0).all()


# ---------------------------------------------------------------- pretraining


def test_pretraining_lowers_the_loss(pretrained):
    losses = [e["loss"] for e in pretrained.log]
    steps = pretrained.config.steps
    assert pretrained.steps_done == steps
    assert [e["step"] for e in pretrained.log] == list(range(0, steps, 5)) + [steps - 1]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.6 * losses[0]
    assert min(losses[-3:]) < min(losses[:3])


def test_pretraining_is_deterministic(tmp_path):
    cfg = dataclasses.replace(SMALL, steps=3)
    a, b = run(cfg, tmp_path / "a"), run(cfg, tmp_path / "b")
    assert a.log == b.log
    assert_same_weights(a.model, b.model)


def test_pretraining_log_has_step_lr_and_loss(tmp_path):
    out = run(dataclasses.replace(SMALL, steps=2), tmp_path)
    assert [set(e) for e in out.log] == [{"step", "lr", "loss"}] * 2
    assert out.log[0]["lr"] == lr_at(out.config, 0)


def test_resume_after_stop_gives_exactly_the_uninterrupted_weights(tmp_path):
    full = run(SMALL, tmp_path / "a")
    first = run(SMALL, tmp_path / "b", stop_after=4)
    assert first.steps_done == 4
    state = json.loads((tmp_path / "b" / "state" / "state.json").read_text())
    assert state["step"] == 4
    second = run(SMALL, tmp_path / "b")
    assert second.steps_done == SMALL.steps
    assert_same_weights(second.model, full.model)
    assert second.log == full.log


def _killed_run(run_dir: Path, monkeypatch) -> None:
    with monkeypatch.context() as m:
        _kill_at(m, "lm_loss", 6)  # steps 4 and 5 are done but lost: the last checkpoint is at step 4
        with pytest.raises(Killed):
            run(SMALL, run_dir)


def test_a_kill_leaves_the_last_checkpoint_and_no_temp_files(tmp_path, monkeypatch):
    _killed_run(tmp_path, monkeypatch)
    meta = json.loads((tmp_path / "state" / "state.json").read_text())
    assert meta["step"] == 4
    assert [e["step"] for e in meta["log"]] == [0, 1, 2, 3]
    assert_clean_run_dir(tmp_path)


def test_resume_after_a_kill_between_checkpoints_gives_exactly_the_uninterrupted_weights(tmp_path, monkeypatch):
    full = run(SMALL, tmp_path / "a")
    _killed_run(tmp_path / "b", monkeypatch)
    resumed = run(SMALL, tmp_path / "b")
    assert_same_weights(resumed.model, full.model)
    assert resumed.log == full.log
    saved = load_file(str(tmp_path / "b" / "state" / "model.safetensors"))
    for k, v in full.model.state_dict().items():
        assert torch.equal(saved[k], v), k


def test_resume_of_a_finished_run_trains_no_more(tmp_path):
    cfg = dataclasses.replace(SMALL, steps=2)
    done = run(cfg, tmp_path)
    again = run(cfg, tmp_path)
    assert again.steps_done == 2
    assert again.log == done.log
    assert_same_weights(again.model, done.model)


def test_resuming_with_a_different_config_raises(tmp_path):
    run(dataclasses.replace(SMALL, steps=2), tmp_path)
    with pytest.raises(ValueError, match="another config"):
        run(dataclasses.replace(SMALL, steps=2, lr=1e-3), tmp_path)
    with pytest.raises(ValueError, match="another config"):
        run(dataclasses.replace(SMALL, steps=3), tmp_path)


def test_checkpoint_folder_holds_only_safetensors_and_json(tmp_path):
    run(dataclasses.replace(SMALL, steps=9), tmp_path)  # checkpoints at 4, 8 and the end: replaced in place
    assert_clean_run_dir(tmp_path)
    meta = json.loads((tmp_path / "state" / "state.json").read_text())
    assert meta["step"] == 9
    assert TrainConfig.from_dict(meta["config"]) == dataclasses.replace(SMALL, steps=9)
    assert len(meta["log"]) == 9
    opt = load_file(str(tmp_path / "state" / "optimizer.safetensors"))
    assert opt and all(k.split(".", 1)[1] in ("step", "exp_avg", "exp_avg_sq") for k in opt)


def test_posttraining_without_init_raises(tmp_path):
    for kind in ("sft", "rl", "dpo"):
        with pytest.raises(ValueError, match="needs `init`"):
            run(dataclasses.replace(SMALL, kind=kind), tmp_path / kind)


# ---------------------------------------------------------------- SFT, RL and DPO from a saved checkpoint


def _post_cfg(kind: str, init: Path, **kw) -> TrainConfig:
    cfg = TrainConfig(kind=kind, arch=TINY_ARCH, task=TINY_TASK, steps=4, batch_size=4, lr=1e-3, warmup=1,
                      ckpt_every=2, init=str(init), seed=1)
    return dataclasses.replace(cfg, **kw)


def test_sft_starts_from_init_and_runs(pretrained_dir, pretrained, tmp_path):
    cfg = _post_cfg("sft", pretrained_dir, mix=FormatMix(0, 0, 1))
    # with no steps the SFT model is the init model
    start = run(dataclasses.replace(cfg, steps=4), tmp_path / "zero", stop_after=0)
    assert_same_weights(start.model, pretrained.model)
    out = run(cfg, tmp_path / "sft")
    assert [set(e) for e in out.log] == [{"step", "lr", "loss"}] * 4
    assert_clean_run_dir(tmp_path / "sft")


def _rl_cfg(init: Path, **kw) -> TrainConfig:
    return _post_cfg("rl", init, rl=RLConfig(group_size=4, max_new_tokens=16), **kw)


def test_rl_runs_and_logs_its_metrics(pretrained_dir, tmp_path):
    full = run(_rl_cfg(pretrained_dir), tmp_path / "a")
    assert [set(e) for e in full.log] == [{"step", "lr", "loss", "reward", "sample_acc", "sample_cot"}] * 4
    for e in full.log:
        assert 0.0 <= e["sample_acc"] <= 1.0 and 0.0 <= e["sample_cot"] <= 1.0
        assert e["reward"] <= 1.0 and math.isfinite(e["loss"])
    assert_clean_run_dir(tmp_path / "a")


def test_rl_is_deterministic(pretrained_dir, tmp_path):
    cfg = _rl_cfg(pretrained_dir, steps=2)
    a, b = run(cfg, tmp_path / "a"), run(cfg, tmp_path / "b")
    assert a.log == b.log
    assert_same_weights(a.model, b.model)


def test_rl_changes_the_weights(pretrained_dir, pretrained, tmp_path):
    out = run(_rl_cfg(pretrained_dir, steps=2), tmp_path)
    assert any(not torch.equal(a, b) for a, b in zip(out.model.state_dict().values(),
                                                     pretrained.model.state_dict().values()))


def _dpo_cfg(init: Path, **kw) -> TrainConfig:
    return _post_cfg("dpo", init, dpo=DPOConfig(pool_problems=32, samples_per_problem=4, max_new_tokens=16), **kw)


def test_dpo_builds_a_pool_of_correct_vs_incorrect_pairs_and_runs(pretrained_dir, tmp_path):
    cfg = _dpo_cfg(pretrained_dir)
    out = run(cfg, tmp_path)
    assert [set(e) for e in out.log] == [{"step", "lr", "loss", "pref_acc"}] * 4
    assert out.log[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 0
    assert_clean_run_dir(tmp_path, extra={"dpo_pairs.json"})
    pairs = json.loads((tmp_path / "dpo_pairs.json").read_text())["pairs"]
    assert pairs
    problems = {tuple(p.prompt_tokens()): p for p in sample_problems(cfg.seed + 7919, 32, cfg.task)}
    tok = out.tokenizer
    for pair in pairs:
        problem = problems[tuple(tok.convert_ids_to_tokens(pair["prompt"][1:]))]
        assert grade(problem, tok.convert_ids_to_tokens(pair["chosen"])).correct
        assert not grade(problem, tok.convert_ids_to_tokens(pair["rejected"])).correct
        assert pair["ref_chosen"] <= 0 and pair["ref_rejected"] <= 0


@pytest.mark.parametrize("make_cfg", [_rl_cfg, _dpo_cfg], ids=["rl", "dpo"])
def test_posttraining_resumes_exactly(make_cfg, pretrained_dir, tmp_path):
    cfg = make_cfg(pretrained_dir)
    full = run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b", stop_after=2)
    resumed = run(cfg, tmp_path / "b")
    assert_same_weights(resumed.model, full.model)
    assert resumed.log == full.log


def test_dpo_with_no_pairs_raises_clear_error(pretrained_dir, tmp_path):
    cfg = _post_cfg("dpo", pretrained_dir, dpo=DPOConfig(pool_problems=2, samples_per_problem=1, max_new_tokens=4))
    with pytest.raises(ValueError, match=r"found no \(correct, incorrect\) sample pair"):
        run(cfg, tmp_path)


def test_dpo_pool_from_another_config_is_not_reused(pretrained_dir, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        _kill_at(m, "dpo_loss", 0)
        with pytest.raises(Killed):
            run(_dpo_cfg(pretrained_dir), tmp_path)
    assert (tmp_path / "dpo_pairs.json").exists() and not (tmp_path / "state").exists()
    other = _dpo_cfg(pretrained_dir, seed=5)  # another seed: another pool of problems and samples
    fresh = run(other, tmp_path / "fresh")
    try:
        reused = run(other, tmp_path)
    except ValueError as e:  # refusing the stale pool is as good as rebuilding it
        assert "config" in str(e)
        return
    assert reused.log == fresh.log
