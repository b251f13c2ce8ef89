"""The shipped natural-language zoo: names resolve through the plugin, cards match their files and hold
the measured targets; members not trained yet are skipped."""

from __future__ import annotations

import json

import pytest

from interp.io import sha256_file
from interp.organism_nl.plugin import register
from interp.organism_nl.zoo import ORDER, PREFIX, RECIPES, ZOO_DIR, member_path, targets

TRAINED = [n for n in ORDER if (ZOO_DIR / n / "config.json").exists()]


def test_every_member_is_shipped() -> None:
    """base, sft and rl ship with the package: the tests below run on all of them, none is skipped."""
    assert TRAINED == list(ORDER), f"untrained members: {sorted(set(ORDER) - set(TRAINED))}"


def test_unknown_and_untrained_names_say_what_exists() -> None:
    with pytest.raises(ValueError, match="organism-nl/base"):
        member_path("organism-nl/bsae")


def test_plugin_registers_models_and_task() -> None:
    from interp import registry

    register()
    assert f"{PREFIX}base" in registry.model_names()
    assert registry.default_task(f"{PREFIX}rl") == "organism-nl"
    task = registry.task('organism-nl:{"min_steps": 5, "max_steps": 6}')
    assert {it.meta["n_steps"] for it in task.sample(20, seed=0)} <= {5, 6}
    with pytest.raises(ValueError, match="JSON object"):
        registry.task("organism-nl:steps=5")


@pytest.mark.parametrize("name", TRAINED)
def test_card_matches_checkpoint_and_recipe(name: str) -> None:
    path = member_path(PREFIX + name)
    card = json.loads((path / "card.json").read_text())
    assert card["sha256"]["model.safetensors"] == sha256_file(path / "model.safetensors")
    assert card["sha256"]["tokenizer.json"] == sha256_file(path / "tokenizer.json")
    assert card["config"]["steps"] == RECIPES[name].steps and card["config"]["seed"] == RECIPES[name].seed
    for mode in ("free", "forced_cot"):
        for k, row in card["eval"][mode]["by_steps"].items():
            assert row["n"] == 200 and row["accuracy_ci"][0] <= row["accuracy"] <= row["accuracy_ci"][1], (mode, k)


def test_zoo_fits_its_size_budget() -> None:
    total = sum(f.stat().st_size for f in ZOO_DIR.rglob("*") if f.is_file())
    assert total <= 25 * 2**20


def test_zoo_members_load_by_name_and_generate_like_their_card() -> None:
    from interp.evaluation import GenerationConfig, evaluate
    from interp.models import load
    from interp.organism_nl.task import NLTask
    from interp.organism_nl.zoo import EVAL_SEED, TASK

    register()
    name = TRAINED[-1]
    model = load(PREFIX + name)
    card = json.loads((ZOO_DIR / name / "card.json").read_text())
    task = NLTask(TASK)
    items = task.sample(1, EVAL_SEED + 4, n_steps=4)
    res = evaluate(model, task, items, GenerationConfig(max_new_tokens=96))
    assert res.completions[0] == card["eval"]["free"]["examples"]["4"]
    direct = evaluate(model, task, items, GenerationConfig(force="direct"))
    assert direct.completions[0].startswith(" The answer is ") and not direct.grades[0].cot


def test_targets_table_reads_missing_members_as_unmet() -> None:
    rows = targets({})
    assert rows and all(r["met"] is None for r in rows)


def test_named_positions_land_on_their_tokens_in_the_shipped_tokenizer() -> None:
    from interp.models import load
    from interp.organism_nl.task import NLTask, item_problem
    from interp.tasks import task_dataset

    model, task = load(ZOO_DIR / "sft"), NLTask()
    item = task.sample(1, 0, n_steps=3)[0]
    p = item_problem(item)
    ex = task_dataset(model, task, [item], fmt="think").examples[0]
    toks = model.tokenizer.convert_ids_to_tokens(list(ex.ids))
    at = {k: toks[v] for k, v in ex.positions.items()}
    assert at["answer"] == "?" and at["think_open"] == "<think>" and at["think_close"] == "</think>"
    assert [at[f"value.step{i}"] for i in (1, 2, 3)] == [str(s.value) for s in p.steps]
    assert at["answer_number"] == str(p.answer) and at["value.start"] == str(p.start_value)
