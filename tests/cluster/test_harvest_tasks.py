"""What each harvest task is sent and does (the Ray path run in this process, `ray=None`): only its shard's
prompts, no dataset hash and no dataset.json per task, and the same store bytes as one process."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch

from interp.activations import Named, PromptDataset, StoreError, harvest
from interp.activations.harvest import _Span
from interp.cli.bench.ray import tree_digest as tree
from interp.organism.dataset import problem_dataset
from interp.organism.task import TaskConfig, sample_problems

parallel = importlib.import_module("interp.activations.parallel")
torch.set_num_threads(1)
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
POS = Named(("answer", "step1.value"), missing="skip")
KW: dict[str, Any] = {"batch_size": 4, "shard_size": 8}


def test_each_task_gets_only_its_shards_prompts_and_the_dataset_is_hashed_once(model, tmp_path, monkeypatch):
    ds = problem_dataset(sample_problems(5, 37, TaskConfig(min_steps=1, max_steps=3)), model, "concise")
    ref = harvest(model, ds, HOOKS, POS, tmp_path / "one", **KW)
    sent: list[tuple[Any, ...]] = []
    real_task, real_hash = parallel._harvest_shard, PromptDataset.hash
    hashes: list[int] = []

    def spy_task(*args: Any) -> Any:
        sent.append(args)
        return real_task(*args)

    def spy_hash(self: PromptDataset) -> str:
        hashes.append(len(self))
        return real_hash(self)

    monkeypatch.setattr(parallel, "_harvest_shard", spy_task)
    monkeypatch.setattr(PromptDataset, "hash", spy_hash)
    seen: list[tuple[int, int]] = []
    got = parallel.harvest_ray(model, ds, HOOKS, POS, tmp_path / "tasks", ray=None,
                               progress=lambda d, t: seen.append((d, t)), **KW)
    assert tree(tmp_path / "tasks") == tree(tmp_path / "one") and got.manifest == ref.manifest
    assert hashes == [37] and seen == [(i, 5) for i in range(1, 6)]
    spans = [a[1] for a in sent]
    assert all(isinstance(s, _Span) for s in spans) and not any(isinstance(x, PromptDataset) for a in sent for x in a)
    assert [(s.start, len(s)) for s in spans] == [(0, 8), (8, 8), (16, 8), (24, 8), (32, 5)]
    assert all(s[i] is ds[i] for s in spans for i in range(s.start, s.start + len(s)))
    with pytest.raises(IndexError, match="not in this span"):
        spans[1][0]


def test_a_ray_harvest_resumes_the_shards_on_disk_and_refuses_another_configuration(model, tmp_path, monkeypatch):
    ds = problem_dataset(sample_problems(6, 24, TaskConfig(min_steps=1, max_steps=2)), model, "concise")
    harvest(model, ds, HOOKS, POS, tmp_path / "one", **KW)
    harvest(model, ds, HOOKS, POS, tmp_path / "part", shard=(0, 2), **KW)  # shards 0 and 2 of 3
    sent: list[int] = []
    real = parallel._harvest_shard
    monkeypatch.setattr(parallel, "_harvest_shard", lambda *a: (sent.append(a[2]), real(*a))[1])
    parallel.harvest_ray(model, ds, HOOKS, POS, tmp_path / "part", ray=None, **KW)
    assert sent == [1] and tree(tmp_path / "part") == tree(tmp_path / "one")
    with pytest.raises(StoreError, match="another configuration"):
        parallel.harvest_ray(model, ds, HOOKS[:1], POS, tmp_path / "part", ray=None, **KW)
    with pytest.raises(ValueError, match="dtype"):
        parallel.harvest_ray(model, ds, HOOKS, POS, tmp_path / "x", ray=None, dtype="float8", **KW)
