"""The `interp` command line on the shipped zoo: eval's JSON shape, errors, info, report."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from interp.cli import app

runner = CliRunner()


def test_eval_json_has_the_stable_shape():
    r = runner.invoke(app, ["eval", "organism/base-s", "--steps", "1,3", "--n", "20", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["model"] == "organism/base-s"
    assert set(out["by_steps"]) == {"1", "3"}
    for v in out["by_steps"].values():
        assert set(v) == {"n", "accuracy", "cot_rate", "mean_tokens"} and v["n"] == 20
        assert 0 <= v["accuracy"] <= 1 and 0 <= v["cot_rate"] <= 1


def test_eval_force_cot_makes_every_answer_a_chain_of_thought():
    r = runner.invoke(app, ["eval", "organism/base-s", "--steps", "2", "--n", "20", "--force-cot", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["by_steps"]["2"]["cot_rate"] == 1.0


def test_eval_table_shows_confidence_intervals():
    r = runner.invoke(app, ["eval", "organism/sft", "--steps", "1", "--n", "10"])
    assert r.exit_code == 0, r.output
    assert "accuracy [95% CI]" in r.stdout


def test_eval_of_an_unknown_organism_names_the_valid_ones():
    r = runner.invoke(app, ["eval", "organism/base-xl"])
    assert r.exit_code == 2
    assert "organism/base-s" in r.output and "organism/base-xl" in r.output


def test_eval_rejects_malformed_steps():
    r = runner.invoke(app, ["eval", "organism/base-s", "--steps", "one,two"])
    assert r.exit_code != 0
    assert "comma-separated integers" in r.output


def test_info_lists_transformerlens_hook_names():
    r = runner.invoke(app, ["info", "organism/base-s"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["n_layers"] == 4 and "blocks.0.hook_resid_post" in info["hooks_layer0"]


def test_report_writes_html_and_png_figures(tmp_path):
    # two sections at a small n (each analysis is tested on its own; `interp report` runs them all)
    r = runner.invoke(app, ["report", "--out", str(tmp_path), "--n", "10", "--sections", "zoo,latent"])
    assert r.exit_code == 0, r.output
    for stem in ("zoo_accuracy_by_steps", "zoo_cot_rate_by_steps", "zoo_accuracy_vs_params", "latent_selectivity"):
        assert (tmp_path / f"{stem}.html").stat().st_size > 1000
        png = (tmp_path / f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text()
    assert "Scaling vs post-training" in page and "base-s on 3-4-step problems" in page
    assert "Latent reasoning" in page and "step 1 @ answer" in page
    assert not list(tmp_path.glob(".*tmp*"))


def test_report_names_the_sections_it_has():
    r = runner.invoke(app, ["report", "--sections", "zoo,nonsense"])
    assert r.exit_code == 2 and "nonsense" in r.output and "'latent'" in r.output


def test_eval_force_direct_answers_one_digit_and_never_a_chain_of_thought():
    r = runner.invoke(app, ["eval", "organism/sft", "--steps", "1", "--n", "30", "--force-direct", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout.strip().splitlines()[-1])["by_steps"]["1"]
    assert s["cot_rate"] == 0.0 and s["mean_tokens"] == 1.0
    assert s["accuracy"] > 0.5  # sft always writes a CoT, yet 1-step answers are decodable directly


def test_eval_rejects_forcing_both_formats():
    r = runner.invoke(app, ["eval", "organism/base-s", "--force-cot", "--force-direct"])
    assert r.exit_code == 2
    assert "exclude each other" in r.output
