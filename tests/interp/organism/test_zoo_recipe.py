"""The zoo's recipe in code: members, dependencies, parallel lanes and the card table."""

from __future__ import annotations

from pathlib import Path

import pytest

from interp.organism.zoo import ORDER, RECIPES, card_table, lanes, recipe
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
        assert home.index(dependent) > home.index("base-s")


def test_card_table_lists_every_shipped_member():
    table = card_table(ZOO_DIR)
    assert table.splitlines()[0].startswith("| model |")
    assert [row.split("|")[1].strip() for row in table.splitlines()[2:]] == list(ORDER)
