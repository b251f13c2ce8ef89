"""zoo_eval, layer_changes and latent_reasoning on a pair that is not the organism's: tiny random-init GPT-2
checkpoints with a GPT-2-style byte-level BPE tokenizer (answers are `" 7"` = `Ġ7`, no WordLevel words),
running the organism task rendered as text. Random weights make the numbers meaningless, so the tests
check invariants that a wrong position, a wrong token or a wrong grade would break."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import interp
from analyses import latent_reasoning as lr
from analyses import zoo_eval
from analyses.layer_changes.analysis import LayerChangesConfig, LayerChangesResult
from analyses.layer_changes.analysis import run as run_layers
from analyses.layer_changes.behaviour import items_of
from analyses.layer_changes.figures import figures, summary_sentences
from interp.evaluation import GenerationConfig, evaluate
from interp.organism.evaluate import EvalConfig
from interp.organism.reasoning_task import OrganismTask
from interp.organism.task import sample_problems
from interp.tasks import Grade, Item, Task
from tests.bpe import gpt2_style, save_checkpoint

torch.set_num_threads(1)
TASK = OrganismTask()
EVAL = EvalConfig(steps=(1, 2), n_per_step=6, n_boot=50, max_new_tokens=10, batch_size=16)


class PlainTask(Task):
    """The organism task stripped of what lets analyses force and read it: no chain-of-thought prefix, no
    answer candidates, no intermediate values (what a plain question-answer task offers)."""

    name = "plain"
    formats = ("direct",)
    has_steps = True

    def sample(self, n: int, seed: int, **knobs: Any) -> list[Item]:
        return [Item(it.id, it.prompt, it.answer, {k: v for k, v in it.meta.items() if not k.startswith(("intermediate.", "value."))},
                     it.data) for it in TASK.sample(n, seed, **knobs)]

    def completion(self, item: Item, fmt: str) -> str:
        return TASK.completion(item, fmt)

    def grade(self, item: Item, completion: str) -> Grade:
        return TASK.grade(item, completion)


@pytest.fixture(scope="module")
def bpe_models(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, interp.Model]:
    texts = [p.text("verbose") for p in sample_problems(0, 400)] + [p.text("concise") for p in sample_problems(1, 200)]
    tok = gpt2_style(texts, 400)
    root = tmp_path_factory.mktemp("bpe-pair")
    return {role: interp.load(save_checkpoint(root / role, tok, "gpt2", seed=seed, n_layers=2))
            for role, seed in (("base", 0), ("tuned", 1))}


def _direct_by_logits(model: interp.Model, items: list[Item]) -> list[bool]:
    """Independent forced-direct grade: argmax of the model's next-token logits over `Ġ0`..`Ġ9`."""
    cands = [model.to_single_token(f" {d}") for d in range(10)]
    out = []
    for it in items:
        ids = torch.tensor([model.token_ids(it.prompt)])
        logits = model.hf(input_ids=ids).logits[0, -1, cands]
        out.append(int(logits.argmax()) == int(it.answer))
    return out


def test_answers_are_bpe_tokens_with_a_leading_space(bpe_models):
    m = bpe_models["base"]
    piece = m.tokenizer.convert_ids_to_tokens([m.to_single_token(" 7")])[0]
    assert piece == "Ġ7" and m.tokenizer.convert_tokens_to_ids("7") != m.to_single_token(" 7")


def test_zoo_eval_runs_a_list_of_models_on_a_task(bpe_models, tmp_path: Path):
    models = [bpe_models["base"], bpe_models["tuned"]]
    cfg = zoo_eval.ZooEvalConfig(eval=EVAL, cache_dir=str(tmp_path))
    res = zoo_eval.run(cfg, progress=False, models=models, task=TASK)
    assert res.config.models == tuple(m.name for m in models)
    items = zoo_eval.sample_items(TASK, EVAL)
    for m, me in zip(models, res.models):
        assert me.checksum == m.checksum and me.skipped == {}
        assert me.forced is not None and me.direct is not None
        for k in EVAL.steps:
            st = me.direct.by_steps[k]
            assert st.n == 6 and st.mean_tokens == 1.0 and st.formats == {"direct": 6} and st.cot_rate == 0.0
        want = _direct_by_logits(m, items)
        got = [me.direct.by_steps[k].accuracy for k in EVAL.steps]
        assert got == [pytest.approx(sum(want[i * 6:(i + 1) * 6]) / 6) for i in range(2)]
        # a forced chain starts with the first step's variable: never a direct answer
        assert all(me.forced.by_steps[k].formats.get("direct", 0) == 0 for k in EVAL.steps)
    assert zoo_eval.ZooEvalResult.from_dict(res.to_dict()) == res


def test_zoo_eval_says_why_a_task_cannot_be_forced(bpe_models, tmp_path: Path):
    res = zoo_eval.run(zoo_eval.ZooEvalConfig(eval=EVAL, cache_dir=str(tmp_path)), progress=False,
                       models=[bpe_models["base"]], task=PlainTask())
    me = res.models[0]
    assert me.forced is None and me.direct is None
    assert "no chain-of-thought prefix" in me.skipped["forced"] and "no answer candidates" in me.skipped["direct"]
    assert res.config.task == "plain"
    assert any("no forced-direct evaluation" in s for s in zoo_eval.summary_sentences(res))
    assert zoo_eval.ZooEvalResult.from_dict(res.to_dict()) == res
    assert zoo_eval.hard_steps(res) == (1, 2)  # no 3- or 4-step problems drawn: the two largest step counts
    paths = zoo_eval.figures(res, tmp_path / "fig", png=False)
    assert all(p[0].is_file() for p in paths.values())


@pytest.fixture(scope="module")
def layers(bpe_models, tmp_path_factory: pytest.TempPathFactory) -> LayerChangesResult:
    cfg = LayerChangesConfig(large=str(bpe_models["base"].path), eval=EVAL, blocks="single",
                             cache_dir=str(tmp_path_factory.mktemp("layers-bpe")))
    return run_layers(cfg, progress=False, pair=(bpe_models["base"], bpe_models["tuned"]), task=TASK)


def test_layer_changes_behaviour_is_the_core_evaluation(layers, bpe_models):
    items = items_of(TASK, EVAL)
    for role in ("base", "tuned"):
        m = bpe_models[role]
        free = evaluate(m, TASK, items, GenerationConfig(max_new_tokens=EVAL.max_new_tokens))
        forced = evaluate(m, TASK, items, GenerationConfig(force="cot", max_new_tokens=EVAL.max_new_tokens))
        assert layers.baselines[role].correct == tuple(g.correct for g in free.grades)
        assert layers.baselines[role].cot == tuple(g.cot for g in free.grades)
        assert layers.baselines[f"{role}_forced_cot"].correct == tuple(g.correct for g in forced.grades)
        assert layers.baselines[role].steps == tuple(it.meta["n_steps"] for it in items)


def test_logit_lens_final_layer_is_the_models_own_choice_among_the_candidates(layers, bpe_models):
    items = items_of(TASK, EVAL)
    for role in ("base", "tuned"):
        at = layers.lens[role].at["prompt_end"]
        assert at.n == len(items) and len(at.accuracy) == layers.n_layers + 1
        want = _direct_by_logits(bpe_models[role], items)
        assert at.accuracy[-1] == pytest.approx(sum(want) / len(want))
        assert at.decodable_share[-1] == 1.0  # the last point always agrees with itself


def test_layer_changes_generic_parts_on_bpe(layers, bpe_models):
    base, tuned = bpe_models["base"], bpe_models["tuned"]
    assert layers.weights is not None and all(x > 0 for x in layers.weights.per_layer)
    n_prompt_tokens = sum(len(base.token_ids(it.prompt)) - int(base.prepend_bos) for it in items_of(TASK, EVAL))
    assert layers.representations["prompt"].n_tokens == n_prompt_tokens
    assert layers.kl_base is not None and layers.kl_base.mean > 0
    assert {g.block for g in layers.grafts} == {(0, 1), (1, 2), "ends"}
    assert len(layers.ablations) == 2 * 2 * 2
    # EFT with the large model = the base: log p_base + (log p_tuned - log p_base) = log p_tuned
    (up,) = layers.eft
    assert up.eft.correct == layers.baselines["tuned"].correct and up.eft.cot == layers.baselines["tuned"].cot
    assert set(layers.checksums.values()) == {base.checksum, tuned.checksum}


def test_layer_changes_says_which_parts_a_task_cannot_run(bpe_models, tmp_path: Path):
    cfg = LayerChangesConfig(large=None, eval=EVAL, blocks=((0, 2),), parts=("logit_lens", "grafting", "ablation"),
                             cache_dir=str(tmp_path))
    r = run_layers(cfg, progress=False, pair=(bpe_models["base"], bpe_models["tuned"]), task=PlainTask())
    assert set(r.skipped) == {"logit_lens", "forced_cot", "ablation"}
    assert "no answer candidates" in r.skipped["logit_lens"] and "no chain-of-thought prefix" in r.skipped["forced_cot"]
    assert r.lens == {} and r.ablations == () and set(r.baselines) == {"base", "tuned"}
    assert {g.block for g in r.grafts} == {(0, 2), "ends"} and all(g.behaviour is not None for g in r.grafts)
    assert r.config.task == "plain" and LayerChangesResult.from_dict(r.to_dict()).skipped == r.skipped
    text = " ".join(summary_sentences(r))
    assert "logit lens: not measured (task 'plain' lists no answer candidates" in text
    assert set(figures(r, tmp_path / "fig", png=False))  # the parts that ran still draw


def test_layer_changes_refuses_a_task_the_tokenizer_cannot_read(tiny_checkpoint, tmp_path: Path):
    words = ["the", "cat", "sat"]
    base = tiny_checkpoint("llama", seed=0, words=words, n_layers=2)
    with pytest.raises(ValueError, match="use the task 'organism'.*pass your own prompts"):
        run_layers(LayerChangesConfig(base=str(base), tuned=str(base), large=None, parts=("representations",),
                                      cache_dir=str(tmp_path)), progress=False)


@pytest.fixture(scope="module")
def latent(bpe_models, tmp_path_factory: pytest.TempPathFactory) -> lr.LatentResult:
    cfg = lr.LatentConfig(steps=(2, 3), n_per_step=30, n_boot=30, max_new_tokens=12,
                          cache_dir=str(tmp_path_factory.mktemp("latent-bpe")))
    return lr.run(cfg, progress=False, models=[bpe_models["base"], bpe_models["tuned"]], task=TASK)


def test_latent_reasoning_reads_every_organism_variable_on_bpe(latent, bpe_models):
    assert latent.config.base == bpe_models["base"].name
    # 2- and 3-step problems leave no third step to compute silently: that variable is left out, saying why
    assert latent.variables == tuple(v for v in lr.VARIABLES if v.name != "step 3 @ answer")
    base = latent.get(bpe_models["base"].name)
    why = {s.variable: s.reason for s in base.skipped if s.hook == lr.ALL}
    assert why == {"step 3 @ answer": "the task's items carry no value 'intermediate.step3'"}
    assert base.hooks == tuple(lr.probe_hooks(2))
    items = lr.problem_items(latent.config, TASK)
    labels = lr.cot_labels(bpe_models["base"], TASK, items, max_new_tokens=12)
    assert base.cot_rate == pytest.approx(sum(labels) / len(labels))
    for v in latent.variables:
        c = base.cell(base.hooks[-1], v)
        assert c is not None and c.selectivity == pytest.approx(c.score.value - c.control.value), v.name
    # every prompt ends in the same token (`Ġ:`), so its embedding holds nothing: the majority class only
    for v in lr.INTERMEDIATE_AT_ANSWER[:2]:
        c = base.cell(base.hooks[0], v)
        assert c.score.value == pytest.approx(c.majority, abs=1e-9), v.name
    assert {t.model for t in latent.transfers} == {bpe_models["tuned"].name}


def test_latent_reasoning_says_why_a_task_without_intermediate_values_has_no_such_probes(bpe_models, tmp_path: Path):
    cfg = lr.LatentConfig(steps=(2,), n_per_step=30, n_boot=20, max_new_tokens=4, cache_dir=str(tmp_path))
    res = lr.run(cfg, progress=False, models=[bpe_models["base"]], task=PlainTask())
    names = {v.name for v in res.variables}
    assert names == {"answer @ answer"}
    why = {s.variable: s.reason for s in res.models[0].skipped if s.hook == lr.ALL}
    assert why["step 1 @ answer"] == "the task has no intermediate values"
    assert "no 'verbose' format" in why["step 2 @ written CoT"]
    assert any("not probed (the task has no intermediate values)" in s for s in lr.summary_sentences(res))
    assert lr.LatentResult.from_dict(res.to_dict()).variables == res.variables
