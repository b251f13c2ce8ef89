"""The whole layer-changes analysis on a zoo pair (few problems), its cache and figures, the CLI's errors, and the
benchmark's machinery on a tiny Qwen2 pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from analyses.layer_changes.analysis import LayerChangesConfig, LayerChangesResult, run
from analyses.layer_changes.figures import figures, summary_sentences
from interp.cli import app
from interp.cli.bench.layers import (
    build_pair,
    injected_change,
    model_bytes,
    perturb_checkpoint,
    weight_change_subprocess,
)
from interp.models import IncompatiblePairError
from interp.organism.evaluate import EvalConfig

torch.set_num_threads(1)
TINY_QWEN2 = {"vocab_size": 500, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "max_position_embeddings": 64, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def small_config(tmp_path_factory: pytest.TempPathFactory) -> LayerChangesConfig:
    return LayerChangesConfig(base="organism/base-s", tuned="organism/rl", large="organism/base-m",
                              eval=EvalConfig(steps=(1, 4), n_per_step=6, n_boot=50), blocks=((0, 1), (3, 4), (0, 4)),
                              cache_dir=str(tmp_path_factory.mktemp("layers-cache")))


@pytest.fixture(scope="module")
def result(small_config: LayerChangesConfig) -> LayerChangesResult:
    return run(small_config, progress=False)


def test_run_measures_every_part_with_provenance(result: LayerChangesResult, small_config: LayerChangesConfig):
    assert set(result.checksums) == {"organism/base-s", "organism/rl", "organism/base-m"}
    assert result.libraries["torch"] and result.config == small_config
    assert result.points[0] == "blocks.0.hook_resid_pre" and len(result.points) == 5
    assert result.weights is not None and len(result.weights.per_layer) == 4
    assert set(result.representations) == {"prompt", "generation"}
    assert set(result.lens) == {"base", "tuned"}
    assert {(g.direction, g.block) for g in result.grafts} == {
        (d, b) for d in ("tuned_into_base", "base_into_tuned") for b in ((0, 1), (3, 4), (0, 4), "ends")}
    assert len(result.ablations) == 2 * 4 * 2
    assert [e.direction for e in result.eft] == ["up"]
    assert set(result.eft[0].references) == {"organism/base-m", "organism/rl", "organism/base-s"}
    assert all(len(b.correct) == 12 for b in result.baselines.values())
    assert result.kl_base is not None and result.kl_base.mean > 0


def test_result_round_trips_and_is_cached(result: LayerChangesResult, small_config: LayerChangesConfig):
    d = result.to_dict()
    assert LayerChangesResult.from_dict(json.loads(json.dumps(d))).to_dict() == d
    again = run(small_config, progress=False)
    assert again.to_dict() == d  # read back from the cache: same numbers, same recorded time


def test_figures_and_sentences(result: LayerChangesResult, tmp_path: Path):
    paths = figures(result, tmp_path, png=False)
    assert set(paths) == {f"layers_rl_{k}" for k in ("weights", "representations", "logit_lens", "grafting", "ablation", "eft")}
    assert all(p[0].is_file() for p in paths.values())
    text = " ".join(summary_sentences(result))
    for needle in ("rl vs base-s, weights", "CKA", "decodable", "grafting rl's layers", "mean ablation", "Emulated fine-tuning"):
        assert needle in text


def test_run_refuses_incompatible_pairs_and_unknown_parts(tmp_path: Path):
    with pytest.raises(IncompatiblePairError, match="cannot be compared as a pair"):
        run(LayerChangesConfig(base="organism/base-s", tuned="organism/base-l", cache_dir=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="unknown block set 'pairs'; valid: all, single"):
        LayerChangesConfig(blocks="pairs")
    with pytest.raises(ValueError, match="unknown parts \\['weight'\\]"):
        LayerChangesConfig(parts=("weight",))
    with pytest.raises(ValueError, match="out of range"):
        run(LayerChangesConfig(blocks=((2, 6),), parts=("grafting",), cache_dir=str(tmp_path)), progress=False)


def test_eft_refuses_a_large_model_with_another_tokenizer(tiny_checkpoint, tmp_path: Path):
    other = tiny_checkpoint("llama", seed=0, words=["x", "y", "zz"])
    with pytest.raises(ValueError, match="one shared tokenizer"):
        run(LayerChangesConfig(large=str(other), parts=("eft",), cache_dir=str(tmp_path)), progress=False)


def test_cli_errors_are_clear():
    runner = CliRunner()

    def err(*args: str) -> str:
        r = runner.invoke(app, ["analyze", "layers", *args, "--no-png"])
        assert r.exit_code == 2
        return " ".join(r.output.split())  # rich wraps long lines

    out = err("organism/base-s", "organism/base-l")
    assert "cannot be compared as a pair" in out and "d_model: base 64, tuned 128" in out
    assert "layer block [0, 9) is out of range" in err("organism/base-s", "organism/sft", "--blocks", "0:9")
    assert "START:END" in err("organism/base-s", "organism/sft", "--blocks", "0-2")


def test_bench_machinery_on_a_tiny_qwen2_pair(tmp_path: Path):
    base, tuned = build_pair(tmp_path, TINY_QWEN2, dtype=torch.float32)
    out = weight_change_subprocess(base, tuned)
    res = out["result"]
    assert res["n_params"] == sum(p for p in [500 * 64 + 64 + 3 * (64 * 64 * 2 + 2 * (64 * 32 + 32) + 64 + 3 * 64 * 128 + 2 * 64)])
    for name, measured in res["per_tensor"].items():  # the matrices: enough elements for the noise norm to be sharp
        if name.endswith("proj.weight") and ".layers." in name:
            assert measured == pytest.approx(injected_change(int(name.split(".")[2]), 3), rel=0.05), name
    assert out["peak_rss_bytes"] >= out["rss_after_imports_bytes"] > 0
    assert model_bytes(base) > 500 * 64 * 4
    assert any("tied" in n for n in res["notes"])


def test_down_scaling_with_an_unchanged_large_model_reproduces_the_small_base(tmp_path: Path):
    cfg = LayerChangesConfig(large="organism/base-l", tuned_large="organism/base-l", parts=("eft",),
                             eval=EvalConfig(steps=(2, 4), n_per_step=8, n_boot=50), cache_dir=str(tmp_path))
    r = run(cfg, progress=False)
    up, down = r.eft
    assert (up.direction, down.direction) == ("up", "down")
    assert down.models == {"scale": "organism/base-s", "tuned": "organism/base-l", "base": "organism/base-l"}
    assert down.eft == r.baselines["base"]  # log p_base-s + (log p_L - log p_L) = log p_base-s
    assert r.weights is None and r.grafts == () and r.representations == {}
    with pytest.raises(ValueError, match="down-scaling EFT needs both"):
        LayerChangesConfig(large=None, tuned_large="organism/base-l")


WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "and"]


@pytest.fixture(scope="module")
def text_pair(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tiny_checkpoint("llama", seed=0, words=WORDS, n_layers=3, d_model=32, n_heads=4, d_mlp=64)
    return base, perturb_checkpoint(base, tmp_path_factory.mktemp("text-tuned"), layer=1, scale=0.2)


def test_any_pair_runs_on_given_texts(text_pair: tuple[Path, Path], tmp_path: Path):
    base, tuned = text_pair
    cfg = LayerChangesConfig(base=str(base), tuned=str(tuned), large=None, parts=("weights", "representations", "grafting"),
                             texts=("the cat sat on a mat", "a dog ran", "the dog and the cat sat"), blocks="single",
                             eval=EvalConfig(max_new_tokens=6, n_boot=50), cache_dir=str(tmp_path))
    r = run(cfg, progress=False)
    assert r.weights is not None and r.weights.top_layer() == 1
    assert r.representations["prompt"].cka[:2] == pytest.approx((1.0, 1.0), abs=1e-9)
    assert r.representations["prompt"].cka[2] < 1
    assert all(g.behaviour is None for g in r.grafts) and r.baselines == {} and r.lens == {}
    assert sorted(str(g.block) for g in r.grafts if g.direction == "tuned_into_base") == ["(0, 1)", "(1, 2)", "(2, 3)",
                                                                                       "ends"]
    assert r.graft("tuned_into_base", (1, 2)).kl.mean == 0.0  # the only changed layer: the hybrid is the tuned model
    assert r.graft("tuned_into_base", (0, 1)).kl.mean == pytest.approx(r.kl_base.mean)
    assert json.dumps(LayerChangesResult.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict()) == json.dumps(r.to_dict())
    assert set(figures(r, tmp_path / "f", png=False)) == {f"layers_{tuned.name}_{k}" for k in ("weights", "representations", "grafting")}
    assert any("closes most" in s for s in summary_sentences(r))


def test_texts_are_required_for_pairs_outside_the_organism(text_pair: tuple[Path, Path], tmp_path: Path):
    base, tuned = text_pair
    with pytest.raises(ValueError, match="pass your own prompts"):
        run(LayerChangesConfig(base=str(base), tuned=str(tuned), large=None, parts=("representations",),
                               cache_dir=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="parts \\['logit_lens', 'eft'\\] need a task's answers"):
        LayerChangesConfig(texts=("the cat",), parts=("weights", "logit_lens", "eft"))
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        run(LayerChangesConfig(base=str(base), tuned=str(tuned), large=None, parts=("representations",),
                               texts=("the zebra",), cache_dir=str(tmp_path)), progress=False)


def test_cli_runs_a_text_pair(text_pair: tuple[Path, Path], tmp_path: Path):
    base, tuned = text_pair
    (tmp_path / "prompts.txt").write_text("the cat sat\n\na dog ran on the mat\n")
    r = CliRunner().invoke(app, ["analyze", "layers", str(base), str(tuned), "--texts", str(tmp_path / "prompts.txt"),
                                 "--large", "", "--no-png", "--out", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(out["result"]).is_file() and any("weights" in s for s in out["summary"])


def test_report_section_renders_each_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from analyses import report
    from analyses.layer_changes import section

    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(section, "ZOO_PAIRS", ("organism/dpo",))
    monkeypatch.setattr(section, "MAX_PER_STEP", 3)
    s = report.layers_section(report.ReportConfig(n_per_step=200, png=False), tmp_path / "out")
    assert s.title.startswith("Where fine-tuning acts") and "on the same 3 problems per step count" in s.sentences[0]
    assert s.sentences[1].startswith("Answer for dpo vs base-s:")
    assert all((tmp_path / "out" / f).is_file() for f in s.figures) and len(s.figures) == 6
    assert (tmp_path / "out" / "layers_dpo.json").is_file() and "<td>dpo vs base-s</td>" in s.table_html
    page = report.render([s], 1.0)
    assert "Answer for dpo vs base-s" in page and "layers_dpo_grafting.html" in page


def test_bench_reports_the_issue_figures_by_name(tmp_path: Path):
    from interp.cli.bench.layers import MEMORY_LIMIT_RATIO, bench_layers

    rows, figures_ = bench_layers(TINY_QWEN2, zoo_tuned=None, workdir=tmp_path, progress=False)
    assert figures_["peak_memory_over_model_size"] == pytest.approx(
        figures_["weight_change_peak_rss_bytes"] / figures_["model_bytes"], rel=1e-3)
    assert figures_["peak_memory_limit_ratio"] == MEMORY_LIMIT_RATIO
    assert figures_["max_relative_error_vs_injected_change"] < 0.15  # bf16 rounding on 64-wide matrices
    assert [r.what for r in rows][:2] == ["pair built locally", "one model's weights"]
    assert list(tmp_path.iterdir()) == []  # the temporary pair is removed
    json.dumps(figures_)
