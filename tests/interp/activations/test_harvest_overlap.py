"""Harvest writes shards in a writer thread while the next shard computes: errors there (NaN/inf, a failing
disk) reach the caller, nothing half-written stays, a resume is byte-identical, and two shards at most are
in memory at once."""

from __future__ import annotations

import errno
import importlib
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from interp.activations import AllTokens, LastToken, NonFiniteActivationError, harvest
from interp.models import load
from interp.organism.dataset import problem_dataset
from interp.organism.task import TaskConfig, sample_problems

harvest_module = importlib.import_module("interp.activations.harvest")  # the package re-exports a function of that name
torch.set_num_threads(1)
HOOK = "blocks.1.hook_resid_post"
KW: dict[str, Any] = {"batch_size": 4, "shard_size": 8}


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load(tiny_checkpoint("llama", n_layers=2))


@pytest.fixture(scope="module")
def dataset(model):
    return problem_dataset(sample_problems(3, 40, TaskConfig(min_steps=1, max_steps=3)), model, "concise")


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.safetensors"))}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "shards").glob(".*"))


def test_a_disk_error_in_the_writer_reaches_the_caller_and_leaves_no_partial_file(model, dataset, tmp_path,
                                                                                  monkeypatch):
    real = harvest_module.save_file
    calls = []

    def failing(tensors: dict[str, torch.Tensor], filename: str) -> None:
        calls.append(filename)
        if len(calls) == 3:  # the third shard: half a file, then the disk is full
            Path(filename).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        real(tensors, filename)

    monkeypatch.setattr(harvest_module, "save_file", failing)
    out = tmp_path / "s"
    with pytest.raises(OSError, match="No space left on device"):
        harvest(model, dataset, [HOOK], AllTokens(), out, **KW)
    assert leftovers(out) == []
    written = sorted(p.name for p in (out / "shards").glob("*.safetensors"))
    assert written == ["shard-00000.safetensors", "shard-00001.safetensors"]
    monkeypatch.setattr(harvest_module, "save_file", real)
    resumed = harvest(model, dataset, [HOOK], AllTokens(), out, **KW)
    straight = harvest(model, dataset, [HOOK], AllTokens(), tmp_path / "straight", **KW)
    assert shard_bytes(out) == shard_bytes(straight.root) and len(shard_bytes(out)) == 5
    assert resumed.manifest["shards"] == straight.manifest["shards"]


def test_nan_in_a_later_shard_names_its_example_and_keeps_earlier_shards(model, dataset, tmp_path):
    victim = 21  # in shard 2 of 5: the caller is computing further shards when the writer finds it
    bad_ids = torch.tensor(dataset[victim].ids)
    assert all(e.ids != dataset[victim].ids for i, e in enumerate(dataset.examples) if i != victim)
    layer = model.hf.model.layers[0]

    def poison(mod: Any, args: Any, out: Any) -> Any:  # NaN in every row that is the victim's prompt
        ids = state["ids"]
        if ids.shape[1] < len(bad_ids):
            return out
        hit = (ids[:, :len(bad_ids)] == bad_ids.to(ids.device)).all(-1)
        hidden = out[0] if isinstance(out, tuple) else out
        hidden[hit] = float("nan")
        return out

    state: dict[str, Any] = {}
    pre = model.hf.register_forward_pre_hook(lambda mod, args, kw: state.update(ids=kw["input_ids"]),
                                             with_kwargs=True)
    h = layer.register_forward_hook(poison)
    try:
        last = len(bad_ids) - 1
        with pytest.raises(NonFiniteActivationError, match=rf"{HOOK} .* at example {victim}, position {last} .*shard 2"):
            harvest(model, dataset, [HOOK], LastToken(), tmp_path / "s", **KW)
    finally:
        h.remove()
        pre.remove()
    out = tmp_path / "s"
    assert sorted(p.name for p in (out / "shards").glob("*.safetensors")) == [
        "shard-00000.safetensors", "shard-00001.safetensors"]
    assert leftovers(out) == []


def test_at_most_two_shards_are_in_memory_and_their_buffers_are_reused(model, dataset, tmp_path, monkeypatch):
    real = harvest_module._ShardWriter._write
    seen: list[int] = []

    def slow(self: Any, shard: Any) -> None:  # a slow disk: the caller has to wait for a free buffer set
        seen.append(id(shard.buffers))
        time.sleep(0.05)
        real(self, shard)

    monkeypatch.setattr(harvest_module._ShardWriter, "_write", slow)
    done: list[int] = []
    store = harvest(model, dataset, [HOOK], AllTokens(), tmp_path / "s", progress=lambda d, t: done.append(d), **KW)
    assert len(seen) == 5 and len(set(seen)) == 2
    assert done == [1, 2, 3, 4, 5] and store.complete
