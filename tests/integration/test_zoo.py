"""The shipped zoo: every member loads by name, its card matches its weights, and its numbers hold."""

from __future__ import annotations

import dataclasses
import json

import pytest

import interp
from interp.io import read_json, sha256_file
from interp.organism.evaluate import EvalConfig, evaluate
from interp.organism.zoo import RECIPES
from interp.organism.zoo_paths import ZOO_DIR, ZOO_NAMES

HARD = ("3", "4")


def card(name: str) -> dict:
    return read_json(ZOO_DIR / name / "card.json")


def hard_mean(table: dict, metric: str) -> float:
    return sum(table["by_steps"][k][metric] for k in HARD) / len(HARD)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_member_loads_by_name_and_matches_its_card(name):
    c = card(name)
    assert c["name"] == f"organism/{name}"
    assert sha256_file(ZOO_DIR / name / "model.safetensors") == c["sha256"]["model.safetensors"]
    assert c["config"] == json.loads(json.dumps(dataclasses.replace(RECIPES[name], init=c["config"]["init"]).to_dict()))
    m = interp.load(f"organism/{name}")
    assert m.n_params == c["n_params"]
    assert {"free", "forced_cot"} <= set(c["eval"])
    assert "torch" in c["libraries"]


def test_zoo_fits_in_40_mb():
    total = sum(p.stat().st_size for p in ZOO_DIR.rglob("*") if p.is_file())
    assert total <= 40 * 2**20, f"zoo is {total / 2**20:.1f} MB"


def test_base_s_has_latent_ability_it_does_not_use():
    c = card("base-s")["eval"]
    forced, free = hard_mean(c["forced_cot"], "accuracy"), hard_mean(c["free"], "accuracy")
    assert forced >= 0.85
    assert hard_mean(c["free"], "cot_rate") <= 0.40
    assert forced - free >= 0.30


@pytest.mark.parametrize("name", ["sft", "rl"])
def test_post_trained_models_use_chains_of_thought(name):
    c = card(name)["eval"]["free"]
    assert hard_mean(c, "cot_rate") >= 0.90
    assert hard_mean(c, "accuracy") >= 0.85


def test_rl_answers_one_step_problems_directly_more_often_than_sft():
    assert card("rl")["eval"]["free"]["by_steps"]["1"]["cot_rate"] < card("sft")["eval"]["free"]["by_steps"]["1"]["cot_rate"]


def test_base_sizes_grow_in_parameters_on_the_same_data():
    sizes = [card(n)["n_params"] for n in ("base-s", "base-m", "base-l")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    mixes = {json.dumps(card(n)["data_mix"], sort_keys=True) for n in ("base-s", "base-m", "base-l")}
    assert len(mixes) == 1
    assert len({card(n)["config"]["steps"] for n in ("base-s", "base-m", "base-l")}) == 1


def test_card_numbers_reproduce_on_a_fresh_greedy_evaluation():
    """Re-run a slice of base-s's card evaluation. Greedy decoding is deterministic for a fixed thread count;
    the card was written with one thread, and another reduction order may flip a near-tie (measured: up to
    1 point on free answers), hence the 2-point tolerance."""
    m = interp.load("organism/base-s")
    c = card("base-s")["eval"]["forced_cot"]
    cfg = EvalConfig.from_dict(c["config"])
    cfg = dataclasses.replace(cfg, steps=(4,))
    res = evaluate(m, cfg)
    assert res.by_steps[4].accuracy == pytest.approx(c["by_steps"]["4"]["accuracy"], abs=0.02)
    assert res.by_steps[4].cot_rate == pytest.approx(c["by_steps"]["4"]["cot_rate"], abs=0.02)


# measured with analyses.zoo_eval on 30 problems per step count (steps 1-4), one thread: (accuracy, cot_rate)
ZOO_EVAL_30 = {
    "organism/base-s": {"free": [(1.0, 0.0), (0.8667, 0.0667), (0.6333, 0.1667), (0.7, 0.2667)],
                        "direct": [(1.0, 0.0), (0.8667, 0.0), (0.4667, 0.0), (0.4333, 0.0)]},
    "organism/base-m": {"free": [(1.0, 0.0), (0.5333, 0.1333), (0.6, 0.2667), (0.6667, 0.3333)],
                        "direct": [(1.0, 0.0), (0.4333, 0.0), (0.3667, 0.0), (0.4667, 0.0)]},
    "organism/rl": {"free": [(1.0, 0.4667), (1.0, 0.9), (1.0, 0.9667), (1.0, 0.9333)],
                    "direct": [(0.9333, 0.0), (0.7, 0.0), (0.3333, 0.0), (0.4333, 0.0)]},
}


def test_zoo_eval_reproduces_its_numbers_and_caches_them(tmp_path):
    """The report's first section on a slice of the zoo: pinned accuracies and CoT rates (one near-tie flip on 30
    problems moves a rate by 0.033, hence the tolerance), forced CoT always written, forced direct one token."""
    from analyses import zoo_eval

    cfg = zoo_eval.ZooEvalConfig(models=tuple(ZOO_EVAL_30), eval=EvalConfig(n_per_step=30, n_boot=200),
                                 cache_dir=str(tmp_path))
    res = zoo_eval.run(cfg, progress=False)
    for name, want in ZOO_EVAL_30.items():
        m = res.get(name)
        assert m.checksum == interp.load(name).checksum and m.skipped == {}
        for mode, rows in want.items():
            got = [(getattr(m, mode).by_steps[k].accuracy, getattr(m, mode).by_steps[k].cot_rate) for k in (1, 2, 3, 4)]
            assert got == [pytest.approx(r, abs=0.04) for r in rows], (name, mode)
        for k in (1, 2, 3, 4):
            assert m.forced.by_steps[k].cot_rate == 1.0 and m.forced.by_steps[k].accuracy >= 0.95
            assert m.direct.by_steps[k].mean_tokens == 1.0
            lo, hi = m.free.by_steps[k].accuracy_ci
            assert lo <= m.free.by_steps[k].accuracy <= hi
    sentences = zoo_eval.summary_sentences(res)
    b = res.get("base-s")
    assert sentences[0].startswith(f"base-s on 3-4-step problems: {100 * b.free.mean_over((3, 4), 'accuracy'):.0f}% "
                                   f"accurate") and "but 100% when forced" in sentences[0]
    again = zoo_eval.run(cfg, progress=False)  # every table now comes from the cache
    assert again.models == res.models and len(list(tmp_path.glob("*.json"))) == 9
