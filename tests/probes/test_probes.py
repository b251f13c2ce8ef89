"""Probes: decodable targets beat their control, splits never leak a problem, save/load, checks, resume."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from interp.activations import Example, Named, PromptDataset, harvest
from interp.models import load
from interp.organism.dataset import problem_dataset
from interp.organism.task import TaskConfig, sample_problems
from probes import (
    Probe,
    ProbeJobConfig,
    ProbeMismatchError,
    control_labels,
    fit,
    group_bootstrap,
    rows_for,
    run,
    score,
    split_by_group,
)

torch.set_num_threads(1)
HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load(tiny_checkpoint("llama", n_layers=2))


@pytest.fixture(scope="module")
def store(model, tmp_path_factory):
    ds = problem_dataset(sample_problems(3, 300, TaskConfig(min_steps=1, max_steps=3)), model)
    return harvest(model, ds, [HOOK, "blocks.1.hook_resid_post"], Named(("prompt.start_value", "answer")),
                   tmp_path_factory.mktemp("store") / "s")


def job(store, out, **kw):
    return ProbeJobConfig(store=str(store.root), out=str(out), **{"targets": ("value.start",), "n_boot": 200, **kw})


def test_a_token_read_at_its_own_position_is_decoded_and_its_control_is_not(store, tmp_path):
    res = run(job(store, tmp_path / "p", hooks=(HOOK,), labels=("prompt.start_value",)))
    (cell,) = res.cells
    assert cell.kind == "logistic" and cell.n_classes == 10
    assert cell.score.value > 0.9 and cell.score.ci[0] > 0.8
    assert cell.control.value < 0.3  # random labels per problem cannot be learned across problems
    assert cell.selectivity > 0.6 and cell.selectivity_ci[0] > 0.5
    assert cell.score.ci[0] <= cell.score.value <= cell.score.ci[1]


def test_scalar_targets_get_a_ridge_probe(store, tmp_path):
    res = run(job(store, tmp_path / "p", hooks=(HOOK,), labels=("answer",), targets=("n_steps",), kind="ridge"))
    (cell,) = res.cells
    assert cell.kind == "ridge" and cell.score.metric == "r2" and cell.n_classes == 0
    assert -1.0 < cell.control.value < 0.2


def test_splits_keep_every_problem_on_one_side():
    groups = [f"p{i // 3}" for i in range(300)]
    train, test = split_by_group(groups, 0.3, seed=1)
    assert not ({g for g, t in zip(groups, test) if t} & {g for g, t in zip(groups, train) if t})
    assert 0.25 < test.mean() < 0.35


def test_no_leakage_when_a_problem_appears_several_times(model, tmp_path):
    # each problem four times, labelled at random per problem: memorising it must not pass as decoding
    rng = random.Random(0)
    problems = sample_problems(11, 30, TaskConfig(min_steps=2, max_steps=2))  # few: a linear probe can memorise them
    examples = []
    for p in problems:
        label = rng.randrange(10)
        base = problem_dataset([p], model).examples[0]
        examples += [Example(base.ids, base.positions, {**base.meta, "secret": label})] * 4
    st = harvest(model, PromptDataset(tuple(examples)), [HOOK], Named(("answer",)), tmp_path / "s")
    (cell,) = run(ProbeJobConfig(store=str(st.root), out=str(tmp_path / "p"), targets=("secret",), n_boot=100)).cells
    assert cell.score.value < 0.35
    # the same rows split by token instead would look decodable: the test above could fail
    x, y, _, _ = rows_for(st, HOOK, "answer", "secret")
    rows = np.arange(len(y))
    tr = rows % 4 != 0
    leaky = fit(x[torch.from_numpy(tr)], [v for v, t in zip(y, tr) if t], c=100.0)
    leaky_acc = np.mean(leaky.predict(x[torch.from_numpy(~tr)]) == np.array([v for v, t in zip(y, tr) if not t]))
    assert leaky_acc > 0.9


def test_control_labels_are_consistent_per_problem_and_keep_the_marginal():
    y = [i % 10 for i in range(200) for _ in range(2)]
    groups = [f"g{i}" for i in range(200) for _ in range(2)]
    c = control_labels(y, groups, seed=3)
    assert all(c[2 * i] == c[2 * i + 1] for i in range(200))
    assert sorted(c) == sorted(y) and c != y


def test_group_bootstrap_draws_whole_problems():
    groups = ["a", "a", "b", "c"]
    w = group_bootstrap(groups, n_boot=2000, seed=0)
    assert w.shape == (2000, 4)
    assert (w[:, 0] == w[:, 1]).all()  # both rows of problem "a" always get the same weight
    assert np.array_equal(w, np.round(w)) and (w >= 0).all()  # weights count draws
    one_row_per_problem = w[:, [0, 2, 3]]
    assert np.allclose(one_row_per_problem.sum(1), 3)  # each replicate draws 3 problems, not 4 rows
    # each problem is drawn with probability 1/3 per draw: on average once per replicate, as a count of
    # Binomial(3, 1/3) (variance 2/3); a row-level bootstrap would give "a" twice the share of "b"
    assert np.allclose(one_row_per_problem.mean(0), 1.0, atol=0.08)
    assert np.allclose(one_row_per_problem.var(0), 2 / 3, atol=0.1)
    assert np.array_equal(group_bootstrap(groups, 2000, seed=0), w)
    assert not np.array_equal(group_bootstrap(groups, 2000, seed=1), w)
    # the share of rows from problem "a" drawn c times (of 3 draws) is 2c / (3 + c): exactly these values
    share = (w @ np.array([1.0, 1.0, 0.0, 0.0])) / w.sum(1)
    assert set(np.round(share, 6)) == {0.0, 0.5, 0.8, 1.0}


def test_saved_probe_reloads_and_scores_new_activations_identically(store, tmp_path):
    res = run(job(store, tmp_path / "p", hooks=(HOOK,), labels=("prompt.start_value",)))
    probe = Probe.load(res.cells[0].probe_path)
    assert probe.info["hook"] == HOOK and probe.info["model_checksum"] == store.model_checksum
    x, y, groups, _ = rows_for(store, HOOK, "prompt.start_value", "value.start")
    again = fit(x[:10], [0, 1] * 5)  # any fit; then compare the saved one with itself after a round trip
    again.save(tmp_path / "again")
    assert np.array_equal(Probe.load(tmp_path / "again").predict(x), again.predict(x))
    s, _ = score(probe, x, y, groups, n_boot=0, checksum=store.model_checksum)
    assert s.value > 0.9
    meta = json.loads((tmp_path / "again.json").read_text())
    assert meta["kind"] == "logistic" and "libraries" in meta


def test_probe_refuses_activations_of_another_width_or_model(store, tmp_path):
    res = run(job(store, tmp_path / "p", hooks=(HOOK,), labels=("prompt.start_value",)))
    probe = Probe.load(res.cells[0].probe_path)
    with pytest.raises(ProbeMismatchError, match="32-wide activations .* got 48-wide"):
        probe.predict(torch.zeros(3, 48))
    x = store.get(HOOK, "answer")
    with pytest.raises(ProbeMismatchError, match="allow_other_model=True"):
        probe.predict(x, checksum="f" * 64)
    assert len(probe.predict(x, checksum="f" * 64, allow_other_model=True)) == len(x)


def counting_fits(monkeypatch):
    """Count the cells `run` actually fits (our own fit_cell, wrapped; the sklearn fits stay real)."""
    from probes import sweep

    fitted = []
    real = sweep.fit_cell

    def counted(store, hook, label, target, *a, **kw):
        fitted.append((hook, label, target))
        return real(store, hook, label, target, *a, **kw)

    monkeypatch.setattr(sweep, "fit_cell", counted)
    return fitted


def test_a_killed_job_resumes_with_the_same_numbers_fitting_only_the_missing_cells(store, tmp_path, monkeypatch):
    cfg = job(store, tmp_path / "p", targets=("value.start", "answer"))
    full = run(job(store, tmp_path / "ref", targets=("value.start", "answer")))

    def die(i, n, name):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=die)
    cells = sorted((tmp_path / "p" / "cells").glob("*.json"))
    assert len(cells) == 3
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cells}
    fitted = counting_fits(monkeypatch)
    seen = []
    resumed = run(cfg, progress=lambda i, n, name: seen.append(i))
    assert len(resumed.cells) == 8 and seen == list(range(1, 9))
    assert len(fitted) == 5  # the three finished cells are read back, not refitted
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cells} == before
    strip = lambda r: [{**c.to_dict(), "probe_path": ""} for c in r.cells]
    assert strip(resumed) == strip(full)
    fitted.clear()
    assert strip(run(cfg)) == strip(full) and fitted == []  # a finished job fits nothing


def test_a_store_reharvested_with_other_labels_is_not_resumed_from_stale_cells(model, tiny_checkpoint, tmp_path,
                                                                              monkeypatch):
    # same prompts, so the same activations; only the labels (the dataset) differ between A and B
    problems = sample_problems(21, 150, TaskConfig(min_steps=1, max_steps=2))
    base = problem_dataset(problems, model).examples
    rng = random.Random(1)
    a = PromptDataset(tuple(Example(e.ids, e.positions, {**e.meta, "secret": e.meta["value.start"]}) for e in base))
    b = PromptDataset(tuple(Example(e.ids, e.positions, {**e.meta, "secret": rng.randrange(10)}) for e in base))
    kw = {"hooks": (HOOK,), "labels": ("prompt.start_value",), "targets": ("secret",)}
    harvest(model, a, [HOOK], Named(("prompt.start_value",)), tmp_path / "s")
    st = harvest(model, a, [HOOK], Named(("prompt.start_value",)), tmp_path / "s")  # resumed: nothing to do
    (on_a,) = run(job(st, tmp_path / "p", **kw)).cells
    assert on_a.score.value > 0.9  # the start value is read at its own token
    st = harvest(model, b, [HOOK], Named(("prompt.start_value",)), tmp_path / "s", overwrite=True)
    fitted = counting_fits(monkeypatch)
    (on_b,) = run(job(st, tmp_path / "p", **kw)).cells
    assert fitted == [(HOOK, "prompt.start_value", "secret")]  # recomputed, not read back
    (fresh,) = run(job(st, tmp_path / "fresh", **kw)).cells
    assert {**on_b.to_dict(), "probe_path": ""} == {**fresh.to_dict(), "probe_path": ""}
    assert on_b.score.value < 0.35  # B's labels are random per problem
    assert Probe.load(on_b.probe_path).info["dataset_hash"] == st.manifest["dataset_hash"]
    # the same for a store of another model written to the same path
    other = load(tiny_checkpoint("llama", seed=1, n_layers=2))
    st = harvest(other, b, [HOOK], Named(("prompt.start_value",)), tmp_path / "s", overwrite=True)
    fitted.clear()
    (on_other,) = run(job(st, tmp_path / "p", **kw)).cells
    assert len(fitted) == 1 and Probe.load(on_other.probe_path).info["model_checksum"] == other.checksum


def test_bad_job_configs_are_clear_errors(store, tmp_path):
    with pytest.raises(ValueError, match="metadata keys are"):
        run(job(store, tmp_path / "a", targets=("no.such.target",)))
    with pytest.raises(Exception, match="blocks.0.hook_resid_post"):
        run(job(store, tmp_path / "b", hooks=("blocks.0.hook_resid_pots",)))
    with pytest.raises(ValueError, match="not in this store"):
        run(job(store, tmp_path / "c", labels=("step7.value",)))
    with pytest.raises(ValueError, match="unknown probe job keys"):
        ProbeJobConfig.from_dict({"store": "s", "out": "o", "targets": ["x"], "lr": 1})
    run(job(store, tmp_path / "d", hooks=(HOOK,), labels=("answer",)))
    with pytest.raises(ValueError, match="another configuration"):
        run(job(store, tmp_path / "d", hooks=(HOOK,), labels=("answer",), seed=5))
