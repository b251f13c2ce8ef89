"""Harvest and evaluation as Ray tasks on a local instance give what one process gives: the same store bytes
(also when resuming a part harvested before), the same evaluation."""

from __future__ import annotations

import pytest
import torch

from interp.activations import Named, StoreError, harvest
from interp.cli.bench.ray import tree_digest as tree
from interp.evaluation import GenerationConfig, evaluate
from interp.organism.dataset import problem_dataset
from interp.organism.task import TaskConfig, sample_problems
from interp.registry import task

torch.set_num_threads(1)
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]


def test_a_ray_harvest_writes_the_same_bytes_as_one_process_and_resumes(ray_local, model, tmp_path):
    ds = problem_dataset(sample_problems(0, 40, TaskConfig(min_steps=1, max_steps=3)), model, "concise")
    kw = {"batch_size": 4, "shard_size": 8}
    ref = harvest(model, ds, HOOKS, Named(("answer", "step1.value")), tmp_path / "one", **kw)
    seen: list[tuple[int, int]] = []
    got = harvest(model, ds, HOOKS, Named(("answer", "step1.value")), tmp_path / "ray", ray=True,
                  progress=lambda d, t: seen.append((d, t)), **kw)
    assert ref.manifest["n_shards"] == 5 and tree(tmp_path / "ray") == tree(tmp_path / "one")
    assert got.complete and sorted(seen) == [(i, 5) for i in range(1, 6)]
    harvest(model, ds, HOOKS, Named(("answer", "step1.value")), tmp_path / "resumed", shard=(1, 2), **kw)
    harvest(model, ds, HOOKS, Named(("answer", "step1.value")), tmp_path / "resumed", ray=True, **kw)
    assert tree(tmp_path / "resumed") == tree(tmp_path / "one")
    with pytest.raises(StoreError, match="another configuration"):
        harvest(model, ds, HOOKS[:1], Named(("answer",)), tmp_path / "ray", ray=True, **kw)


def test_a_ray_evaluation_equals_one_process(ray_local, model):
    t = task("organism")
    items = [it for k in (1, 2, 3) for it in t.sample(4, 7 + k, n_steps=k)]
    cfg = GenerationConfig(max_new_tokens=6, batch_size=5)
    one = evaluate(model, t, items, cfg)
    par = evaluate(model, t, items, cfg, ray=True)
    assert par.to_dict() == one.to_dict()
    direct = GenerationConfig(force="direct", batch_size=5)
    assert evaluate(model, t, items, direct, ray=True).to_dict() == evaluate(model, t, items, direct).to_dict()


def test_a_harvest_whose_worker_is_killed_mid_shard_completes_with_the_same_bytes(ray_local, model, tmp_path):
    """SIGKILL a worker while it runs a shard (its process title is `ray::_call`): Ray reruns that task and the
    store is still byte-identical to one process's."""
    import os
    import signal
    import threading
    import time

    import psutil

    ds = problem_dataset(sample_problems(2, 64, TaskConfig(min_steps=1, max_steps=3)), model, "concise")
    kw = {"batch_size": 4, "shard_size": 8}
    harvest(model, ds, HOOKS, Named(("answer",)), tmp_path / "one", **kw)
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            for p in psutil.process_iter(["pid", "cmdline"]):
                if p.info["cmdline"] and p.info["cmdline"][0].startswith("ray::_call"):
                    os.kill(p.info["pid"], signal.SIGKILL)
                    killed.append(p.info["pid"])
                    return
            time.sleep(0.01)

    t = threading.Thread(target=kill_one)
    t.start()
    try:
        harvest(model, ds, HOOKS, Named(("answer",)), tmp_path / "ray", ray=True, **kw)
    finally:
        killed.append(-1)  # stop the thread if it found nothing
        t.join()
    assert killed[0] > 0, "no running task was found to kill"
    assert tree(tmp_path / "ray") == tree(tmp_path / "one")
