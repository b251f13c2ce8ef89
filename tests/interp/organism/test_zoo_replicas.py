"""Seed replicas of the zoo: names, recipes (the originals under another seed, from their own seed's base),
lanes (one per seed), seeds giving different weights, and per-seed targets in the zoo table."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from interp.io import read_json, write_json
from interp.organism.arch import ArchConfig
from interp.organism.targets import checks, summary
from interp.organism.task import TaskConfig
from interp.organism.training import TrainConfig, train
from interp.organism.zoo import (
    ORDER,
    ORIGINAL_RECIPES,
    RECIPES,
    card_table,
    dependency,
    lanes,
    recipe,
    replicate,
    seed_members,
    update_card,
)
from interp.organism.zoo_paths import REPLICAS, ZOO_DIR, ZOO_NAMES, organism_path, replica_name, split_replica

TINY = TrainConfig(kind="pretrain", arch=ArchConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64),
                   task=TaskConfig(max_steps=1), steps=3, batch_size=8, lr=1e-2, warmup=1, ckpt_every=100)


def test_replica_names_round_trip_and_are_registered():
    assert replica_name("organism/rl", 2) == "rl-seed2" and replica_name("rl", 0) == "rl"
    assert split_replica("organism/rl-seed2") == ("rl", 2) and split_replica("dpo-teacher") == ("dpo-teacher", 0)
    assert set(REPLICAS) == {f"{m}-seed{k}" for m in ("base-s", "sft", "rl", "dpo") for k in (1, 2)}
    assert set(REPLICAS) <= set(ZOO_NAMES) and set(ZOO_NAMES) == set(ORDER) == set(RECIPES)


def test_an_unknown_seed_is_refused_with_the_near_names():
    with pytest.raises(ValueError, match="Did you mean organism/rl-seed"):
        organism_path("organism/rl-seed7")


def test_replicas_are_the_original_recipes_under_their_seed_starting_from_their_seeds_base(tmp_path: Path):
    for k in (1, 2):
        for m in ("base-s", "sft", "rl", "dpo"):
            r, o = RECIPES[f"{m}-seed{k}"], ORIGINAL_RECIPES[m]
            assert r.seed == k and o.seed == 0
            assert dataclasses.replace(r, seed=0, init=o.init) == o
            assert dependency(f"{m}-seed{k}") == (None if m == "base-s" else f"base-s-seed{k}")
        assert recipe(f"organism/sft-seed{k}", tmp_path).init == str(tmp_path / f"base-s-seed{k}")
    assert replicate(RECIPES["base-m"], 3).init is None


def test_seed_members_in_training_order_and_bad_members_refused():
    assert seed_members((1,)) == ("base-s-seed1", "sft-seed1", "rl-seed1", "dpo-seed1")
    assert seed_members((2, 1), ("rl",)) == ("rl-seed2", "rl-seed1")
    assert seed_members((0,), ("sft",)) == ("sft",)
    with pytest.raises(ValueError, match="no seed replicas"):
        seed_members((1,), ("base-l",))


def test_two_lanes_train_one_seed_each_base_first():
    split = lanes(list(seed_members((1, 2))), 2)
    assert sorted(map(sorted, split)) == sorted(sorted(seed_members((k,))) for k in (1, 2))
    for lane in split:
        assert lane[0].startswith("base-s-seed")


def test_the_seed_changes_the_weights_and_the_same_seed_repeats_them(tmp_path: Path):
    runs = {k: train(replicate(TINY, k), tmp_path / f"s{k}", progress=False).model.state_dict() for k in (1, 2)}
    again = train(replicate(TINY, 1), tmp_path / "s1-again", progress=False).model.state_dict()
    assert all(torch.equal(runs[1][n], again[n]) for n in runs[1])
    assert any(not torch.equal(runs[1][n], runs[2][n]) for n in runs[1])


def _fake_zoo(tmp_path: Path, seed: int) -> Path:
    """Copies of the shipped seed-0 cards renamed to `seed`'s replicas (cards only: enough for the table)."""
    for m in ("base-s", "sft", "rl", "dpo"):
        card = read_json(ZOO_DIR / m / "card.json")
        card.update(name=f"organism/{replica_name(m, seed)}", seed=seed)
        (tmp_path / replica_name(m, seed)).mkdir()
        write_json(tmp_path / replica_name(m, seed) / "card.json", card)
    return tmp_path


def test_targets_are_checked_per_seed_and_a_miss_is_shown_not_hidden(tmp_path: Path):
    zoo = _fake_zoo(tmp_path, 1)
    assert summary("base-s-seed1", zoo) == "met (3/3)" and summary("rl-seed1", zoo) == "met (3/3)"
    assert summary("base-m", zoo) == "-"  # no card here
    card = read_json(zoo / "sft-seed1" / "card.json")
    for k in ("3", "4"):
        card["eval"]["free"]["by_steps"][k]["cot_rate"] = 0.5
    write_json(zoo / "sft-seed1" / "card.json", card)
    assert summary("sft-seed1", zoo).startswith("missed: free CoT rate 3-4 >= 0.90 (0.50)")
    # rl is compared with its own seed's sft: its 1-step CoT rate is still below sft-seed1's
    assert [c.met for c in checks("rl-seed1", zoo)] == [True, True, True]
    rows = {r.split("|")[1].strip(): r for r in card_table(zoo).splitlines()[2:]}
    assert list(rows) == ["base-s-seed1", "sft-seed1", "rl-seed1", "dpo-seed1"]
    assert "| 1 |" in rows["sft-seed1"] and "missed: free CoT rate" in rows["sft-seed1"]
    assert rows["dpo-seed1"].rstrip(" |").endswith("met (2/2)")


def test_update_card_adds_measurements_but_never_rewrites_the_training_record(tmp_path: Path):
    zoo = _fake_zoo(tmp_path, 2)
    update_card("organism/dpo-seed2", {"calibration": {"ece": 0.1}}, zoo)
    assert read_json(zoo / "dpo-seed2" / "card.json")["calibration"] == {"ece": 0.1}
    with pytest.raises(ValueError, match="does not overwrite"):
        update_card("dpo-seed2", {"eval": {}}, zoo)
    with pytest.raises(FileNotFoundError, match="train it first"):
        update_card("rl-seed9", {"x": 1}, zoo)
    shutil.rmtree(zoo)


def test_the_train_command_refuses_bad_seeds_and_members_without_replicas():
    from interp.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["organism", "train", "--seeds", "one"])
    assert r.exit_code == 2 and "comma-separated" in r.output
    r = runner.invoke(app, ["organism", "train", "base-l", "--seeds", "1"])
    assert r.exit_code != 0 and "no seed replicas" in r.output


def test_train_all_accounts_for_each_member_and_resumes_to_the_same_checkpoint(tmp_path: Path, monkeypatch):
    """A tiny stand-in recipe under a replica's name goes through the whole path: train, export with its card,
    and the run's account (train, wall and CPU seconds per member); a second run resumes and re-exports the
    same weights."""
    import functools

    from interp.organism import zoo
    from interp.organism.evaluate import EvalConfig

    monkeypatch.setitem(zoo.RECIPES, "base-s-seed1", replicate(TINY, 1))
    monkeypatch.setattr(zoo, "train_member", functools.partial(
        zoo.train_member, eval_cfg=EvalConfig(steps=(1,), n_per_step=4, n_boot=10)))
    run = zoo.train_all(tmp_path / "runs", tmp_path / "zoo", ("organism/base-s-seed1",), threads=1, progress=False)
    card = read_json(tmp_path / "zoo" / "base-s-seed1" / "card.json")
    assert card["name"] == "organism/base-s-seed1" and card["seed"] == 1 and card["cpu_seconds"] >= 0
    account = run.accounts[0]["members"]["base-s-seed1"]
    assert account["train_seconds"] == card["train_seconds"] and account["cpu_seconds"] <= run.accounts[0]["cpu_seconds"]
    assert run.to_dict()["members"] == {"base-s-seed1": "base-s-seed1"} and run.lanes == [["base-s-seed1"]]
    again = zoo.train_all(tmp_path / "runs", tmp_path / "zoo", ("base-s-seed1",), threads=1, progress=False)
    assert read_json(again.paths["base-s-seed1"] / "card.json")["sha256"] == card["sha256"]
