"""The streamed one-SAE path: same rows, same SAE as harvest + train_sae, seeded, lazy, resumable, clear errors."""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from interp.activations import ActivationStore
from saes import SAEError, train_sae
from saes.streaming import train_sae_streamed
from tests.saes.conftest import HOOK, tiny_config

SMALL = {"batch_size": 8, "shard_size": 16}  # 4 shards of 2 batches out of 60 examples


@pytest.fixture(scope="module")
def dataset(small_store: Any) -> Any:
    return small_store.dataset()


@pytest.fixture(scope="module")
def sharded_store(base_s: Any, dataset: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from interp.activations import AllTokens, harvest

    return harvest(base_s, dataset, [HOOK], AllTokens(), tmp_path_factory.mktemp("sharded") / "acts", **SMALL)


def weights(trained: Any) -> dict[str, torch.Tensor]:
    return load_file(trained.path / "sae_weights.safetensors")


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def test_streamed_shards_are_the_stored_shards(base_s: Any, dataset: Any, sharded_store: Any) -> None:
    from interp.activations import AllTokens
    from interp.activations.stream import count_rows, iter_shards

    streamed = list(iter_shards(base_s, dataset, [HOOK], AllTokens(), **SMALL))
    stored = list(sharded_store.iter_batches(HOOK))
    assert len(streamed) == len(stored) == sharded_store.manifest["n_shards"] > 2
    for (k, acts, idx), (s_acts, s_idx) in zip(streamed, stored):
        assert torch.equal(acts[HOOK], s_acts), k
        for c in s_idx:
            assert idx[c].dtype == s_idx[c].dtype and np.array_equal(idx[c], s_idx[c]), (k, c)
    assert count_rows(base_s, dataset, AllTokens()) == sharded_store.n_rows


def test_streamed_sae_equals_the_stored_one_and_store_out_writes_the_same_store(
        base_s: Any, dataset: Any, sharded_store: Any, tmp_path: Path) -> None:
    cfg = tiny_config(total_samples=6144, n_checkpoints=0)  # > the store's rows: a second epoch replays memory
    stored = train_sae(sharded_store, cfg, tmp_path / "stored")
    streamed = train_sae_streamed(base_s, dataset, cfg, tmp_path / "streamed", **SMALL)
    written = train_sae_streamed(base_s, dataset, cfg, tmp_path / "written", store_out=tmp_path / "acts", **SMALL)
    assert_same(weights(stored), weights(streamed))
    assert_same(weights(stored), weights(written))
    assert streamed.card["store_rows"] == written.card["store_rows"] == stored.card["store_rows"] < 6144
    assert streamed.card["metrics"] == stored.card["metrics"]  # the same rows, the same numbers
    assert streamed.card["source"] == "streamed" and streamed.card["store"] is None
    assert written.card["store"] == str(tmp_path / "acts")
    for p in (sharded_store.root / "shards").iterdir():
        assert filecmp.cmp(p, tmp_path / "acts" / "shards" / p.name, shallow=False), p.name


def test_streamed_training_is_seeded(base_s: Any, dataset: Any, tmp_path: Path) -> None:
    cfg = tiny_config(total_samples=2048, n_checkpoints=0)
    a = weights(train_sae_streamed(base_s, dataset, cfg, tmp_path / "a", metrics=False, **SMALL))
    b = weights(train_sae_streamed(base_s, dataset, cfg, tmp_path / "b", metrics=False, **SMALL))
    c = weights(train_sae_streamed(base_s, dataset, tiny_config(total_samples=2048, n_checkpoints=0, seed=1),
                                   tmp_path / "c", metrics=False, **SMALL))
    assert_same(a, b)
    assert not torch.equal(a["W_enc"], c["W_enc"])


def test_a_short_run_harvests_only_the_shards_it_trains_on(base_s: Any, dataset: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from saes import streaming

    seen: list[int] = []
    real = streaming.iter_shards

    def spy(*a: Any, **kw: Any) -> Any:
        for k, acts, idx in real(*a, **kw):
            seen.append(k)
            yield k, acts, idx

    monkeypatch.setattr(streaming, "iter_shards", spy)
    cfg = tiny_config(total_samples=1024, buffer_size=1024, chunk_rows=256, n_checkpoints=0, lr_warm_up_steps=1)
    t = train_sae_streamed(base_s, dataset, cfg, tmp_path / "short", **SMALL)
    assert 0 < len(seen) < 4 and seen == list(range(len(seen)))  # of 4 shards
    assert t.card["store_rows"] is None and t.card["metrics_rows"].startswith("the first")


def test_killed_streamed_training_resumes_to_identical_weights(base_s: Any, dataset: Any, tmp_path: Path) -> None:
    cfg = tiny_config(total_samples=4096, seed=2)
    whole = train_sae_streamed(base_s, dataset, cfg, tmp_path / "whole", metrics=False, **SMALL)

    class Killed(Exception):
        pass

    def kill(samples: int) -> None:
        raise Killed(samples)

    acts = tmp_path / "acts"  # killed while its background harvest writes a store: the store is left resumable
    with pytest.raises(Killed):
        train_sae_streamed(base_s, dataset, cfg, tmp_path / "resumed", on_checkpoint=kill, metrics=False,
                           store_out=acts, **SMALL)
    with pytest.raises(SAEError, match="another configuration"):  # another shard layout: other rows, refused
        train_sae_streamed(base_s, dataset, cfg, tmp_path / "resumed", metrics=False, batch_size=8, shard_size=24)
    resumed = train_sae_streamed(base_s, dataset, cfg, tmp_path / "resumed", metrics=False, store_out=acts, **SMALL)
    assert resumed.card["training"]["resumed_from_samples"] > 0
    assert_same(weights(whole), weights(resumed))
    assert ActivationStore.open(acts).complete


def test_bad_streamed_runs_are_clear_errors(base_s: Any, dataset: Any, sharded_store: Any, tmp_path: Path) -> None:
    with pytest.raises(SAEError, match="position label 'answer' is not picked"):
        train_sae_streamed(base_s, dataset, tiny_config(label="answer"), tmp_path / "a")
    with pytest.raises(SAEError, match="max_memory_gb"):
        train_sae_streamed(base_s, dataset, tiny_config(), tmp_path / "b", max_memory_gb=1e-6)
    # a store folder holding another harvest: the background harvest's error reaches the caller
    with pytest.raises(ValueError, match="another configuration"):
        train_sae_streamed(base_s, dataset, tiny_config(), tmp_path / "c", store_out=sharded_store.root,
                           batch_size=8, shard_size=32)  # stored with shard_size 16
    assert not (tmp_path / "c").exists()
