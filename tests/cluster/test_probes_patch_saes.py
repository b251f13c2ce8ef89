"""Probe sweeps, patching grids over many prompt pairs and SAEs over several hooks as Ray tasks on a local
instance give what one process gives: the same probe cells and files, the same grids, the same SAE weights."""

from __future__ import annotations

import pytest
import torch

from interp.activations import AllTokens, Named, harvest
from interp.cli.bench.ray import tree_digest as tree
from interp.organism.dataset import problem_dataset
from interp.organism.task import TaskConfig, sample_problems
from interp.patching import logit_diff, patch_pairs
from probes import ProbeJobConfig, run
from saes import SAETrainConfig
from saes.sweep_ray import comparable_card, train_hooks

torch.set_num_threads(1)
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


@pytest.fixture(scope="module")
def store(model, tmp_path_factory):
    ds = problem_dataset(sample_problems(3, 80, TaskConfig(min_steps=1, max_steps=3)), model)
    return harvest(model, ds, HOOKS, Named(("prompt.start_value", "answer")), tmp_path_factory.mktemp("st") / "s")


def test_a_ray_probe_sweep_writes_the_same_cells_probes_and_result(ray_local, store, tmp_path):
    job = ProbeJobConfig(store=str(store.root), out=str(tmp_path / "job"), targets=("value.start",),
                         n_boot=50)
    one = run(job)
    (tmp_path / "job").rename(tmp_path / "one")  # the same output folder for both: the config records it
    seen: list[int] = []
    par = run(job, ray=True, progress=lambda i, n, name: seen.append(i))
    assert len(one.cells) == 4 and sorted(seen) == list(range(1, 5))
    assert par.to_dict() == one.to_dict()
    t1, t2 = tree(tmp_path / "one"), tree(tmp_path / "job")
    assert t1 == t2 and len(t1) == 2 * 4 + 4 + 2  # probes (.json, .safetensors), cells, config, result: same bytes


def test_a_ray_patching_grid_over_many_pairs_equals_one_process(ray_local, model):
    probs = sample_problems(11, 4, TaskConfig(min_steps=2, max_steps=2))
    texts = [model.tokenizer.decode(problem_dataset([p], model)[0].ids, skip_special_tokens=True) for p in probs]
    tok = model.tokenizer.convert_tokens_to_ids
    pairs = [(texts[i], texts[(i + 1) % 4], logit_diff(tok(str(i)), tok(str(i + 1)))) for i in range(4)]
    one = patch_pairs(model, pairs, hook="blocks.*.hook_resid_pre")
    par = patch_pairs(model, pairs, hook="blocks.*.hook_resid_pre", ray=True)
    for a, b in zip(one, par):
        assert torch.equal(a.values, b.values) and a.positions == b.positions
        assert a.to_dict() | {"seconds": 0} == b.to_dict() | {"seconds": 0}


def test_ray_saes_over_several_hooks_have_the_same_weights(ray_local, model, tmp_path):
    ds = problem_dataset(sample_problems(5, 40, TaskConfig(min_steps=2, max_steps=3)), model, "concise")
    st = harvest(model, ds, HOOKS, AllTokens(), tmp_path / "acts")
    cfg = SAETrainConfig(hook=HOOKS[0], total_samples=2048, batch_size=256, buffer_size=1024, chunk_rows=256,
                         expansion=2, lr_warm_up_steps=2, n_checkpoints=0)
    one = train_hooks(st.root, cfg, HOOKS, tmp_path / "one", metrics=False)
    par = train_hooks(st.root, cfg, HOOKS, tmp_path / "ray", metrics=False, ray=True)
    for a, b in zip(one, par):
        assert a.path.name == b.path.name and comparable_card(a.card) == comparable_card(b.card)
        ta, tb = tree(a.path), tree(b.path)
        assert {k: v for k, v in ta.items() if k.endswith(".safetensors")} == \
               {k: v for k, v in tb.items() if k.endswith(".safetensors")} and set(ta) == set(tb)
