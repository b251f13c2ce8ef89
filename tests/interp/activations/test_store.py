"""The activation store: exact values, lazy reads, resume, shards + merge, manifest checks, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.activations import (
    ActivationStore,
    AllTokens,
    Indices,
    LastToken,
    Named,
    NonFiniteActivationError,
    PositionError,
    PromptDataset,
    StoreError,
    TokenMatch,
    harvest,
    merge,
)
from interp.hooks import UnknownHookError
from interp.models import load
from interp.organism.dataset import problem_dataset
from interp.organism.task import TaskConfig, sample_problems

torch.set_num_threads(1)
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load(tiny_checkpoint("llama", n_layers=2))


@pytest.fixture(scope="module")
def dataset(model):
    return problem_dataset(sample_problems(0, 40, TaskConfig(min_steps=1, max_steps=3)), model, "concise")


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.safetensors"))}


def test_stored_rows_equal_run_with_cache(model, dataset, tmp_path):
    store = harvest(model, dataset, HOOKS, Named(("answer", "step1.value")), tmp_path / "s", batch_size=8)
    idx = store.index()
    resid, z = store.get(HOOKS[0]), store.get(HOOKS[1])
    assert resid.shape == (2 * len(dataset), model.d_model) and z.shape[1:] == (model.n_heads, model.d_model // model.n_heads)
    for r in [0, 1, 17, len(idx["example"]) - 1]:
        e, p = int(idx["example"][r]), int(idx["position"][r])
        _, cache = model.bridge.run_with_cache(torch.tensor([dataset[e].ids]))
        torch.testing.assert_close(resid[r], cache[HOOKS[0]][0, p], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(z[r], cache[HOOKS[1]][0, p], rtol=1e-5, atol=1e-5)
        assert idx["token"][r] == dataset[e].ids[p]
    assert store.labels == ["answer", "step1.value"]
    answer_rows = store.index("answer")
    assert (answer_rows["position"] == [dataset[int(e)].positions["answer"] for e in answer_rows["example"]]).all()


def test_manifest_records_provenance(model, dataset, tmp_path):
    store = harvest(model, dataset, HOOKS[:1], LastToken(), tmp_path / "s", seed=7)
    m = store.manifest
    assert m["model_checksum"] == model.checksum and m["dataset_hash"] == dataset.hash() and m["seed"] == 7
    assert m["hooks"] == {HOOKS[0]: [model.d_model]} and m["dtype"] == "float32" and "torch" in m["libraries"]
    assert ActivationStore.open(tmp_path / "s").dataset() == dataset


def test_lazy_iteration_matches_full_read_and_numpy(model, dataset, tmp_path):
    store = harvest(model, dataset, HOOKS[:1], AllTokens(), tmp_path / "s", batch_size=8, shard_size=16)
    parts = list(store.iter_batches(HOOKS[0]))
    assert len(parts) == math.ceil(len(dataset) / 16)
    full = store.get(HOOKS[0])
    assert torch.equal(torch.cat([a for a, _ in parts]), full)
    assert np.array_equal(store.numpy(HOOKS[0]), full.numpy())
    assert full.shape[0] == sum(len(e.ids) for e in dataset)


def test_padding_does_not_change_activations(model, dataset, tmp_path):
    one = harvest(model, dataset, HOOKS[:1], LastToken(), tmp_path / "a", batch_size=1)
    many = harvest(model, dataset, HOOKS[:1], LastToken(), tmp_path / "b", batch_size=16)
    torch.testing.assert_close(one.get(HOOKS[0]), many.get(HOOKS[0]), rtol=1e-5, atol=1e-5)


def test_killed_harvest_resumes_to_byte_identical_shards(model, dataset, tmp_path):
    ref = harvest(model, dataset, HOOKS, AllTokens(), tmp_path / "ref", batch_size=4, shard_size=8)

    def die(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harvest(model, dataset, HOOKS, AllTokens(), tmp_path / "run", batch_size=4, shard_size=8, progress=die)
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore.open(tmp_path / "run")
    seen = []
    harvest(model, dataset, HOOKS, AllTokens(), tmp_path / "run", batch_size=4, shard_size=8,
            progress=lambda d, t: seen.append(d))
    assert seen[0] == 3  # the two finished shards were not redone
    assert shard_bytes(tmp_path / "run") == shard_bytes(ref.root)


def test_harvesting_a_finished_store_again_reuses_it(model, dataset, tmp_path):
    first = harvest(model, dataset, HOOKS, Named(("answer", "step1.value")), tmp_path / "s")
    calls = []
    again = harvest(model, dataset, HOOKS, Named(("answer", "step1.value")), tmp_path / "s",
                    progress=lambda d, t: calls.append(d))
    assert calls == [] and again.manifest["shards"] == first.manifest["shards"]


def test_parts_harvested_separately_merge_into_the_same_store(model, dataset, tmp_path):
    ref = harvest(model, dataset, HOOKS, Named(("answer",)), tmp_path / "ref", batch_size=4, shard_size=8)
    parts = [harvest(model, dataset, HOOKS, Named(("answer",)), tmp_path / f"p{i}", batch_size=4, shard_size=8,
                     shard=(i, 3)) for i in range(3)]
    assert all(not p.complete for p in parts)
    with pytest.raises(StoreError, match="missing"):
        merge([p.root for p in parts[:2]], tmp_path / "bad")
    merged = merge([p.root for p in parts], tmp_path / "merged")
    assert merged.complete and shard_bytes(merged.root) == shard_bytes(ref.root)
    assert torch.equal(merged.get(HOOKS[0]), ref.get(HOOKS[0]))


def test_merge_refuses_parts_of_different_harvests(model, dataset, tmp_path):
    a = harvest(model, dataset, HOOKS[:1], LastToken(), tmp_path / "a", shard=(0, 2), batch_size=8, shard_size=8)
    b = harvest(model, dataset, HOOKS[:1], Named(("answer",)), tmp_path / "b", shard=(1, 2), batch_size=8, shard_size=8)
    with pytest.raises(StoreError, match="another configuration"):
        merge([a.root, b.root], tmp_path / "m")


def test_a_folder_with_another_harvest_is_not_overwritten_silently(model, dataset, tmp_path):
    harvest(model, dataset, HOOKS[:1], LastToken(), tmp_path / "s")
    with pytest.raises(StoreError, match="another configuration"):
        harvest(model, dataset, HOOKS, LastToken(), tmp_path / "s")
    assert harvest(model, dataset, HOOKS, LastToken(), tmp_path / "s", overwrite=True).hooks == HOOKS


def test_selectors_pick_the_positions_they_name(model, dataset, tmp_path):
    eq = harvest(model, dataset, HOOKS[:1], TokenMatch(("=",)), tmp_path / "eq")
    toks = eq.index()["token"]
    assert len(toks) > len(dataset) and (toks == model.tokenizer.convert_tokens_to_ids("=")).all()
    ind = harvest(model, dataset, HOOKS[:1], Indices((0, -1)), tmp_path / "ind")
    idx = ind.index()
    assert (idx["position"][idx["label"] == 0] == 0).all()
    assert (idx["token"][idx["label"] == 0] == model.tokenizer.bos_token_id).all()


def test_unknown_hook_names_the_closest_valid_ones(model, dataset, tmp_path):
    with pytest.raises(UnknownHookError, match="blocks.0.hook_resid_post"):
        harvest(model, dataset, ["blocks.0.hook_resid_pots"], LastToken(), tmp_path / "s")
    store = harvest(model, dataset, HOOKS[:1], LastToken(), tmp_path / "t")
    with pytest.raises(UnknownHookError):
        store.get("blocks.1.hook_resid_post")


def test_positions_outside_the_sequence_are_refused(model, dataset, tmp_path):
    with pytest.raises(PositionError, match="outside example 0"):
        harvest(model, dataset, HOOKS[:1], Indices((500,)), tmp_path / "s")
    with pytest.raises(PositionError, match="no position named 'step9.value'"):
        harvest(model, dataset, HOOKS[:1], Named(("step9.value",)), tmp_path / "t")
    assert not (tmp_path / "s" / "shards").exists()


def test_empty_dataset_and_empty_selection_are_clear_errors(model, dataset, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        PromptDataset(())
    with pytest.raises(StoreError, match="no positions were selected"):
        harvest(model, dataset, HOOKS[:1], TokenMatch(("zzz",)), tmp_path / "s")


def test_attention_patterns_are_refused_with_the_alternative(model, dataset, tmp_path):
    with pytest.raises(ValueError, match="hook_z"):
        harvest(model, dataset, ["blocks.0.attn.hook_pattern"], LastToken(), tmp_path / "s")


def test_non_finite_activations_say_where_they_came_from(tiny_checkpoint, dataset, tmp_path):
    broken = load(tiny_checkpoint("llama", n_layers=2))
    with torch.no_grad():
        broken.hf.model.layers[1].mlp.down_proj.weight.fill_(float("nan"))
    harvest(broken, dataset, ["blocks.0.hook_resid_post"], LastToken(), tmp_path / "ok")  # layer 0 is fine
    with pytest.raises(NonFiniteActivationError, match=r"blocks\.1\.hook_resid_post .* at example 0"):
        harvest(broken, dataset, ["blocks.1.hook_resid_post"], LastToken(), tmp_path / "s")


def test_prompts_longer_than_the_context_are_refused(model, tmp_path):
    long = PromptDataset.from_texts(model.tokenizer, [" ".join(["a"] * 80)])
    with pytest.raises(ValueError, match="context length"):
        harvest(model, long, HOOKS[:1], LastToken(), tmp_path / "s")


def test_unknown_words_are_refused_when_building_a_dataset(model):
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        PromptDataset.from_texts(model.tokenizer, ["Q : a = 3 ; banana"])


def test_a_store_knows_its_model(model, dataset, tmp_path):
    store = harvest(model, dataset, HOOKS[:1], LastToken(), tmp_path / "s")
    store.check_model(model.checksum)
    with pytest.raises(StoreError, match="checksum"):
        store.check_model("0" * 64)


ALL_KINDS = ["blocks.{}.hook_resid_pre", "blocks.{}.hook_resid_mid", "blocks.{}.hook_resid_post",
             "blocks.{}.hook_attn_out", "blocks.{}.hook_mlp_out", "blocks.{}.attn.hook_z"]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "gpt_neox"])
def test_every_hook_kind_equals_run_with_cache_on_every_architecture(arch, tiny_checkpoint, tmp_path):
    m = load(tiny_checkpoint(arch, n_layers=2))
    # the word-level ids: transformers loads this tokenizer as a Qwen2Tokenizer for qwen2, whose offsets are wrong
    ds = problem_dataset(sample_problems(1, 12, TaskConfig(min_steps=1, max_steps=3)), m.tokenizer)
    hooks = [k.format(layer) for layer in (0, 1) for k in ALL_KINDS]
    hooks = [h for h in hooks if h in m.hook_names]  # parallel-attention models have no resid_mid
    store = harvest(m, ds, hooks, AllTokens(), tmp_path / "s", batch_size=5)
    idx = store.index()
    for e in (0, 7, 11):
        _, cache = m.bridge.run_with_cache(torch.tensor([ds[e].ids]))
        rows = idx["example"] == e
        for h in hooks:
            torch.testing.assert_close(store.get(h)[torch.from_numpy(rows)], cache[h][0], rtol=1e-4, atol=1e-5,
                                       msg=lambda s, h=h: f"{arch} {h}: {s}")


def test_hooks_inside_a_block_are_read_through_the_bridge(model, dataset, tmp_path):
    hook = "blocks.1.mlp.hook_pre"  # not a Hugging Face module boundary
    assert hook in model.hook_names
    store = harvest(model, dataset, [hook, HOOKS[0]], LastToken(), tmp_path / "s")
    _, cache = model.bridge.run_with_cache(torch.tensor([dataset[3].ids]))
    torch.testing.assert_close(store.get(hook)[3], cache[hook][0, -1], rtol=1e-5, atol=1e-5)
