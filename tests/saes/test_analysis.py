"""analyses.sae_reasoning end to end at a tiny size: result round trip, figures, sentences, dashboard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from analyses import sae_reasoning as sr
from saes import SAETrainConfig


def test_sae_reasoning_runs_small_and_round_trips(tmp_path: Path) -> None:
    hook = "blocks.1.hook_resid_post"
    cfg = sr.SAEReasoningConfig(
        tuned=("organism/sft",), hook=hook, n_problems=300, cache_dir=str(tmp_path / "cache"),
        sae=SAETrainConfig(hook=hook, total_samples=8192, batch_size=512, buffer_size=4096, expansion=2,
                           lr_warm_up_steps=2, n_checkpoints=0),
        scales=(10.0,), n_val_per_step=10, n_test_per_step=15, n_random=2, n_boot=30, n_dashboard=4)
    result = sr.run_cached(cfg, progress=False, dashboard_dir=tmp_path / "dash")
    again = sr.SAEReasoningResult.from_dict(result.to_dict())
    assert again.to_dict() == result.to_dict()
    assert sr.run_cached(cfg, progress=False).to_dict() == result.to_dict()  # cached
    assert 0 < result.quality.explained_variance <= 1 and result.quality.ce_recovered is not None
    assert result.transfer[0].model == "organism/sft" and len(result.steering.random_draws) == 2
    assert result.steering.clamped is not None and result.steering.clamped.n == 30
    assert len(result.steering.validation_random) == 2 and set(result.steering.validation_share_beaten()) == {10.0}
    assert result.steering.none.n == 30 and result.steering.reference.name == "sft"
    assert (tmp_path / "dash" / "index.html").is_file()
    # numbers of the token-level code before the task interface (commit ae1693a), reproduced since
    s = result.steering
    assert (s.none.cot_rate, s.steered.accuracy, s.steered.cot_rate) == pytest.approx((1 / 6, 0.26666666666666666, 0.0))
    assert s.gap_recovered == pytest.approx(-1.2) and result.quality.explained_variance == pytest.approx(0.72581, abs=1e-4)
    paths = sr.figures(result, tmp_path / "figs", png=False)
    assert {"sae_transfer_quality", "sae_feature_shift", "sae_reasoning_features", "sae_steering"} <= set(paths)
    lines = sr.summary_sentences(result)
    assert any("CE recovered" in s for s in lines) and any("accuracy gap" in s for s in lines)
    assert dataclasses.replace(cfg).key() == cfg.key()


def test_cot_mode_labels_and_dataset_follow_the_task_on_a_bpe_model(tmp_path: Path) -> None:
    import interp
    from interp.evaluation import GenerationConfig, generate_completions
    from interp.tasks.encode import encode_text
    from tests.bpe import gpt2_style, save_checkpoint

    task = interp.task("organism")
    pool = task.sample(300, seed=5)
    tok = gpt2_style([task.prompt(it) + task.completion(it, f) for it in pool for f in task.formats])
    model = interp.load(save_checkpoint(tmp_path / "gpt2", tok, "gpt2", seed=2, max_len=128))
    items = task.sample(40, seed=9)
    labels = sr.cot_mode_labels(model, task, items)
    # one forward pass agrees with generating one token: a chain starts exactly when that token is not a digit
    first, _ = generate_completions(model, task, items, GenerationConfig(max_new_tokens=1))
    assert labels == [not t.strip().isdigit() for t in first]
    cfg = sr.SAEReasoningConfig(n_problems=12, contrast="natural")  # the model's own choice as will_cot
    data = sr.build_dataset(model, cfg, task)
    assert len(data) == 12 and {e.meta["format"] for e in data.examples} <= set(task.formats)
    for e, it in zip(data.examples, sr.dataset_items(cfg, task)):
        prompt = encode_text(model, task.prompt(it))
        assert list(e.ids[:len(prompt.ids)]) == list(prompt.ids) and e.positions["answer"] == len(prompt.ids) - 1
        assert model.tokenizer.decode(list(e.ids)).endswith(task.completion(it, e.meta["format"]))
    assert [e.meta[sr.WILL_COT] for e in data.examples] == sr.cot_mode_labels(model, task, sr.dataset_items(cfg, task))
    assert sr.value_positions(data)[0] == ("step1.before_value", "value.step1")
