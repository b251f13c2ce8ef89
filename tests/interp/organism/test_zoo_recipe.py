"""The zoo's recipe in code: members, dependencies, parallel lanes and the card table."""

from __future__ import annotations

from pathlib import Path

import pytest

from interp.organism.zoo import (
    ORDER,
    RECIPES,
    _run_lane,
    card_table,
    dependency,
    lanes,
    member_cost,
    recipe,
)
from interp.organism.zoo_paths import ZOO_DIR


def test_post_trained_members_start_from_base_s():
    for name in ("sft", "rl", "dpo"):
        assert RECIPES[name].init == "organism/base-s"
        assert RECIPES[name].arch == RECIPES["base-s"].arch


def test_bases_share_data_mix_steps_and_seed_and_grow_in_size():
    bases = [RECIPES[f"base-{s}"] for s in "sml"]
    assert len({(b.mix, b.steps, b.seed, b.task, b.batch_size) for b in bases}) == 1
    widths = [b.arch.n_layers * b.arch.d_model ** 2 for b in bases]
    assert widths == sorted(widths) and len(set(widths)) == 3


def test_recipe_points_init_at_the_base_in_the_output_folder(tmp_path: Path):
    assert recipe("organism/rl", tmp_path).init == str(tmp_path / "base-s")
    assert recipe("base-m", tmp_path).init is None
    with pytest.raises(ValueError, match="zoo's members are"):
        recipe("base-xl", tmp_path)


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_lanes_cover_every_member_once_with_dependents_after_base_s(jobs: int):
    split = lanes(list(ORDER), jobs)
    flat = [n for lane in split for n in lane]
    assert sorted(flat) == sorted(ORDER) and len(split) <= jobs
    home = next(lane for lane in split if "base-s" in lane)
    for dependent in ("sft", "rl", "dpo"):
        assert dependency(dependent) == "base-s"
        if dependent in home:
            assert home.index(dependent) > home.index("base-s")


def test_two_lanes_balance_the_measured_costs_better_than_one():
    cost = {n: member_cost(n) for n in ORDER}
    split = lanes(list(ORDER), 2)
    # a dependent in the other lane starts after base-s finishes; bases come first in base-s's lane
    finish: dict[str, float] = {}
    for lane in sorted(split, key=lambda lane: "base-s" not in lane):
        t = 0.0
        for n in lane:
            t = max(t, finish.get(dependency(n) or "", 0.0)) + cost[n]
            finish[n] = t
    assert max(finish.values()) < 0.55 * sum(cost.values())  # all dependents in base-s's lane: 0.57


def test_a_lane_stops_when_its_base_failed_in_another_lane(tmp_path: Path):
    (tmp_path / "base-s.failed").touch()
    with pytest.raises(RuntimeError, match="its base base-s failed"):
        _run_lane(["sft"], str(tmp_path), str(tmp_path / "zoo"), 1, False, ["base-s", "sft"])


def test_card_table_lists_every_shipped_member():
    table = card_table(ZOO_DIR)
    assert table.splitlines()[0].startswith("| model |")
    assert [row.split("|")[1].strip() for row in table.splitlines()[2:]] == list(ORDER)
