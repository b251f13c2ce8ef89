"""The latent-reasoning analysis on the shipped zoo, small: every cell, transfer, the CoT decision, figures."""

from __future__ import annotations

import json

import pytest
import torch

from analyses import latent_reasoning as lr
from interp.models import load

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    cfg = lr.LatentConfig(models=("organism/base-s", "organism/sft"), n_per_step=80, n_boot=50,
                          cache_dir=str(tmp_path_factory.mktemp("latent")))
    return lr.run_cached(cfg, progress=False)


def test_every_layer_and_variable_is_probed_with_a_control(result):
    base = result.get("base-s")
    assert base.hooks[0] == "blocks.0.hook_resid_pre" and len(base.hooks) == base.n_layers + 1
    for h in base.hooks:
        for v in lr.VARIABLES:
            c = base.cell(h, v)
            assert c is not None and c.n_test > 0
            assert c.selectivity == pytest.approx(c.score.value - c.control.value)
            assert c.score.ci[0] <= c.score.value <= c.score.ci[1]


def test_the_embedding_holds_no_intermediate_value_beyond_chance(result):
    base = result.get("base-s")
    for v in (*lr.INTERMEDIATE_AT_ANSWER, lr.COT_VARIABLE):
        c = base.cell("blocks.0.hook_resid_pre", v)
        # the `:` token's embedding is the same for every problem: the probe can only predict the majority class
        assert c.score.value == pytest.approx(c.majority, abs=1e-9), v.name


def test_the_cot_decision_is_read_above_the_majority_and_sft_has_none_to_read(result):
    base, sft = result.get("base-s"), result.get("sft")
    assert 0.0 < base.cot_rate < 0.5
    # a weak signal that is really there (README: 0.91 against a majority of 0.85 on 1,200 problems): the best
    # layer beats "always predict the majority choice", and beats its control task, by more than noise
    cells = [base.cell(h, lr.COT_VARIABLE) for h in base.hooks[1:]]
    best = max(cells, key=lambda c: c.score.value)
    assert best.score.value > best.majority + 0.03 and best.selectivity_ci[0] > 0, (best.hook, best.score)
    # its control probe (labels shuffled over problems) does no better than the majority
    assert all(c.control.value <= c.majority + 0.02 for c in cells)
    assert sft.cot_rate == 1.0 and sft.cell(sft.hooks[-1], lr.COT_VARIABLE) is None
    assert any(s.variable == lr.COT_VARIABLE.name for s in sft.skipped)


def test_the_final_answer_is_read_far_above_the_majority_in_the_last_layer(result):
    base = result.get("base-s")
    c = base.cell(base.hooks[-1], lr.VARIABLES[3])  # answer @ answer (README: 0.53 on 1,200 problems)
    assert c.target == "answer" and c.score.ci[0] > c.majority + 0.1 and c.selectivity_ci[0] > 0.05


def test_base_probes_transfer_to_sft_on_the_same_test_problems(result):
    ts = [t for t in result.transfers if t.model == "organism/sft"]
    assert len(ts) == len(lr.VARIABLES) * len(result.get("sft").hooks)
    for t in ts:
        own = result.get("sft").cell(t.hook, lr.Variable("", t.label, t.target))
        assert t.own == own.score and t.transfer.n == own.score.n
    # values about to be written in a verbose CoT: base-s's probes read them in sft's last layer as well as
    # sft's own (README: 1.00), far above the control; a misaligned row or label would break this
    last = result.get("sft").hooks[-1]
    written = [t for t in ts if t.hook == last and t.label.endswith("before_value")]
    assert len(written) == 2
    for t in written:
        assert t.transfer.value > 0.9 and t.transfer.ci[0] > t.control.ci[1] + 0.5, (t.label, t.transfer)


def test_the_direct_only_subset_is_scored_on_problems_answered_directly(result):
    base = result.get("base-s")
    d = base.cell(base.hooks[-1], lr.VARIABLES[3], direct_only=True)
    full = base.cell(base.hooks[-1], lr.VARIABLES[3])
    assert d is not None and 0 < d.n_test < full.n_test


def test_result_round_trips_and_is_reused_from_the_cache(result):
    again = lr.LatentResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    assert lr.run_cached(result.config, progress=False) == result


def test_figures_and_sentences(result, tmp_path):
    paths = lr.figures(result, tmp_path, png=False)
    assert set(paths) == {"latent_selectivity", "latent_transfer", "latent_will_cot"}
    assert all(p[0].is_file() for p in paths.values())
    text = " ".join(lr.summary_sentences(result))
    assert "base-s, step 1 @ answer" in text and "base-s probes on sft" in text and "always makes the same choice" in text
    assert "re-centred" in text


def test_will_write_cot_matches_greedy_generation():
    m = load("organism/rl")
    from interp.organism.task import sample_problems

    probs = sample_problems(3, 20)
    ids = [[m.tokenizer.bos_token_id, *m.tokenizer.convert_tokens_to_ids(p.prompt_tokens())] for p in probs]
    flags = lr.will_write_cot(m, ids)
    firsts = [m.generate(p.prompt(), max_new_tokens=1)[0].split()[0] for p in probs]
    assert flags == [not f.isdigit() for f in firsts]


def test_the_positive_control_shows_probes_read_values_the_model_computes(result):
    # in a written verbose CoT, right before the model writes a value it computed, a probe must read it
    base = result.get("base-s")
    for v in lr.VARIABLES:
        if v.text == "verbose":
            c = base.cell(base.hooks[-1], v)
            assert c.score.value > 0.8 and c.selectivity > 0.5, (v.name, c.score.value)


@pytest.mark.parametrize("name", ["organism/base-s", "organism/dpo"])
def test_the_graded_cot_label_is_the_first_token_decision_on_the_organism(name):
    """The task-generic label (the grade of the model's own greedy generation; an unparsable completion counts
    as a chain unless it starts with a direct answer) equals the organism's one-forward rule (greedy first
    token is not a digit), including dpo's few broken chains (measured: 4 of 300 are invalid)."""
    from interp.organism.reasoning_task import OrganismTask
    from interp.tasks import task_dataset

    m, task = load(name), OrganismTask()
    items = [it for k in (2, 3, 4) for it in task.sample(100, 2_000_003 + k, n_steps=k)]
    graded = lr.cot_labels(m, task, items)
    assert graded == lr.will_write_cot(m, [e.ids for e in task_dataset(m, task, items)])
    assert 0 < sum(graded) < len(graded)
