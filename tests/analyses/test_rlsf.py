"""rlsf and dpo-teacher, shipped zoo members, compared with base-s, rl and dpo (analyses.calibration.rlsf)."""

from __future__ import annotations

import pytest
import torch

import interp
from analyses.calibration.figures import rlsf_sentences
from analyses.calibration.rlsf import MemberInfo, card_calibration, compare
from interp.io import read_json
from interp.models import resolve_path

torch.set_num_threads(1)


def test_member_info_comes_from_the_shipped_cards() -> None:
    rlsf = MemberInfo.of("organism/rlsf")
    assert (rlsf.name, rlsf.init, rlsf.source, rlsf.rank, rlsf.steps) == (
        "organism/rlsf", "organism/base-s", None, "confidence", 200)
    assert rlsf.pool["n_pairs"] > 0 and 0 <= rlsf.pool["rejected_correct"] <= rlsf.pool["chosen_correct"] <= 1
    teacher = MemberInfo.of("organism/dpo-teacher")
    assert (teacher.source, teacher.rank) == ("organism/base-l", "correct")
    assert rlsf.checksum == interp.load("organism/rlsf").checksum
    with pytest.raises(ValueError, match="not a preference-trained zoo member"):
        MemberInfo.of("organism/rl")


def test_comparison_of_the_shipped_teacher_on_a_few_problems() -> None:
    c = compare("organism/dpo-teacher", n_per_step=3)
    assert set(c.behaviour) == {"organism/base-s", "organism/rl", "organism/dpo", "organism/base-l",
                                "organism/dpo-teacher"}
    cal = card_calibration(c)
    assert cal["n_problems"] == 12 and cal["init"] == "organism/base-s"
    assert cal["ece_ci"][0] <= cal["ece"] <= cal["ece_ci"][1]
    assert cal["ece_minus_init"] == pytest.approx(cal["ece"] - cal["init_ece"])
    lines = rlsf_sentences(c)
    assert lines[0].startswith("dpo-teacher (shipped zoo member): DPO from base-s for 200 steps")
    assert "base-l's samples, a right one against a wrong one" in lines[0]


def test_rlsf_card_records_its_target_met_on_the_shipped_weights() -> None:
    """The rlsf target: free ECE below base-s's with non-overlapping 95% intervals, measured on these weights
    (`interp analyze rlsf --write-card`, 100 problems per step count)."""
    cal = read_json(resolve_path("organism/rlsf") / "card.json")["calibration"]
    assert cal["checksum"] == interp.load("organism/rlsf").checksum
    assert cal["ece_ci"][1] < cal["init_ece_ci"][0] and cal["n_problems"] == 400
    assert cal["ece_minus_init_ci"][1] < 0
