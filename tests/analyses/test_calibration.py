"""Calibration: ECE and AUROC on constructed cases, the answer span, and a small run whose direct-answer
confidence equals the model's own next-token probability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import interp
from analyses.calibration.analysis import (
    CalibrationConfig,
    CalibrationResult,
    answer_split,
    auroc,
    ece,
    reliability,
    run,
)
from analyses.calibration.figures import figures, summary_sentences
from analyses.routing.common import prompt_ids, sample_items

torch.set_num_threads(1)


def test_ece_on_constructed_cases() -> None:
    conf = np.full(10, 0.8)
    assert ece(conf, np.array([1] * 8 + [0] * 2)) == pytest.approx(0.0)  # calibrated
    assert ece(np.ones(10), np.array([1, 0] * 5)) == pytest.approx(0.5)  # always sure, right half the time
    # two bins: 0.95 with 100% right (gap 0.05), 0.25 with 50% right (gap 0.25), equal shares -> 0.15
    c = np.array([0.95] * 4 + [0.25] * 4)
    y = np.array([1, 1, 1, 1, 1, 1, 0, 0])
    assert ece(c, y, n_bins=10) == pytest.approx(0.15)
    assert ece(c, y, n_bins=2) == pytest.approx(0.15)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ece(np.array([1.5]), np.array([1]))
    bins = reliability(np.array([0.0, 0.05, 1.0]), np.array([0, 1, 1]), 10)
    assert [b["n"] for b in bins] == [2] + [0] * 8 + [1]  # 1.0 falls in the top bin


def test_auroc_matches_sklearn_and_handles_ties_and_one_class() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.4
    c = np.round(rng.random(200) + 0.3 * y, 1)  # many ties
    assert auroc(c, y) == pytest.approx(roc_auc_score(y, c))
    assert np.isnan(auroc(c, np.ones(200, bool)))


def test_answer_split_takes_the_final_answer_with_its_space() -> None:
    assert answer_split(" b = 7 ; c = 4 ; so 4", "4") == (" b = 7 ; c = 4 ; so", " 4")
    assert answer_split("4", "4") == ("", "4")
    assert answer_split(" 3", "4") is None


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> CalibrationResult:
    cfg = CalibrationConfig(models=("organism/base-s", "organism/sft"), steps=(2, 4), n_per_step=6, n_boot=100,
                            cache_dir=str(tmp_path_factory.mktemp("calibration")))
    return run(cfg)


def test_direct_confidence_is_the_models_probability_of_its_best_digit(small: CalibrationResult) -> None:
    task = interp.task("organism")
    items = sample_items(task, small.config.steps, small.config.n_per_step, small.config.eval_seed)
    base = interp.load("organism/base-s")
    ids = prompt_ids(base, task, items)
    digits = [base.to_single_token(str(d)) for d in range(10)]
    with torch.no_grad():
        probs = [torch.softmax(base.hf(input_ids=torch.tensor([p])).logits[0, -1], -1)[digits].max().item()
                 for p in ids]
    cal = small.model("organism/base-s").get("direct")
    assert np.allclose(cal.confidence, probs, atol=1e-5)
    assert all(cal.answered)
    free = small.model("organism/base-s").get("free")
    assert all(0 <= c <= 1 for c in free.confidence)
    assert all(c > 0 for c, a in zip(free.confidence, free.answered) if a)


def test_small_run_round_trips_and_renders(small: CalibrationResult, tmp_path) -> None:
    d = json.loads(json.dumps(small.to_dict()))
    assert json.loads(json.dumps(CalibrationResult.from_dict(d).to_dict())) == d
    for m in small.models:
        assert m.checksum == interp.load(m.name).checksum
        for c in m.conditions:
            assert c.ece_ci[0] <= c.ece + 1e-9 or np.isnan(c.ece_ci[0])
            assert sum(b["n"] for b in c.bins) == len(c.correct)
    s = summary_sentences(small)
    assert any("minus base-s" in x for x in s)
    assert all(p[0].is_file() for p in figures(small, tmp_path, png=False).values())
