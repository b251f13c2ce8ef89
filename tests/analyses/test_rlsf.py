"""RLSF-like fine-tuning: pairs ranked by the model's own confidence, and exact resume after a kill."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from analyses.calibration.rlsf import RLSFConfig, lr_at, train_rlsf
from interp.io import read_json
from interp.models import resolve_path

torch.set_num_threads(1)


def tiny(run_dir: str) -> RLSFConfig:
    return RLSFConfig(steps_range=(2, 4), pool_per_step=6, samples_per_problem=3, steps=4, batch_size=4,
                      warmup=2, ckpt_every=1, run_dir=run_dir)


def test_killed_run_resumes_to_the_uninterrupted_weights(tmp_path) -> None:
    whole = train_rlsf(tiny(str(tmp_path / "a")), progress=False)
    cut = tiny(str(tmp_path / "b"))
    first = train_rlsf(cut, stop_after=2, progress=False)
    assert first.steps_done == 2 and not (cut.folder() / "model" / "config.json").exists()
    rest = train_rlsf(cut, progress=False)
    assert rest.steps_done == 4
    a = load_file(str(tiny(str(tmp_path / "a")).folder() / "model" / "model.safetensors"))
    b = load_file(str(cut.folder() / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    init = load_file(str(resolve_path("organism/base-s") / "model.safetensors"))
    assert any(not torch.equal(a[k], init[k]) for k in a)  # training moved the weights
    assert [x["loss"] for x in rest.log] == [x["loss"] for x in whole.log]


def test_pairs_prefer_the_more_confident_sample_and_configs_never_share_a_folder(tmp_path) -> None:
    cfg = tiny(str(tmp_path / "a"))
    train_rlsf(cfg, stop_after=1, progress=False)
    pairs = read_json(cfg.folder() / "pairs.json")["pairs"]
    assert pairs and all(p["confidence"][0] > p["confidence"][1] for p in pairs)
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    other = RLSFConfig(**{**cfg.to_dict(), "steps_range": (2, 4), "beta": 0.1})
    assert other.folder() != cfg.folder()
    assert lr_at(cfg, 0) == pytest.approx(cfg.lr / 2) and lr_at(cfg, cfg.steps - 1) < cfg.lr
    with pytest.raises(ValueError, match="at least 2 samples"):
        RLSFConfig(samples_per_problem=1)


def test_teacher_pairs_are_right_vs_wrong_samples_of_the_source_scored_by_the_reference(tmp_path) -> None:
    import interp
    from analyses.calibration.rlsf import label, preference_pool, sequence_logprobs

    cfg = RLSFConfig(**{**tiny(str(tmp_path)).to_dict(), "steps_range": (3, 4), "source": "organism/base-l",
                        "rank": "correct", "samples_per_problem": 4})
    assert label(cfg) == "dpo-teacher" and label(tiny(str(tmp_path))) == "rlsf"
    assert cfg.folder() != tiny(str(tmp_path)).folder()
    pairs = preference_pool(cfg)
    assert pairs and all(p["correct"] == [True, False] for p in pairs)
    init = interp.load("organism/base-s")
    p = pairs[0]
    with torch.no_grad():
        ref = sequence_logprobs(init.hf, [p["prompt"]] * 2, [p["chosen"], p["rejected"]], init.pad_token_id)
    assert ref.tolist() == pytest.approx(p["ref"], abs=1e-4)
    with pytest.raises(ValueError, match="rank"):
        RLSFConfig(rank="length")
