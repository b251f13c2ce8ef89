"""analyses.sae_reasoning end to end at a tiny size: result round trip, figures, sentences, dashboard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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
    paths = sr.figures(result, tmp_path / "figs", png=False)
    assert {"sae_transfer_quality", "sae_feature_shift", "sae_reasoning_features", "sae_steering"} <= set(paths)
    lines = sr.summary_sentences(result)
    assert any("CE recovered" in s for s in lines) and any("accuracy gap" in s for s in lines)
    assert dataclasses.replace(cfg).key() == cfg.key()
