"""`interp report --base X --tuned Y --task T` on a pair that is not the zoo: tiny random-init GPT-2 checkpoints
(two seeds) with a byte-level BPE tokenizer, on a JSONL task of plain question-answer records. Cheap sections
run end to end; the ones the task or the pair cannot support are written as skipped sections with the reason,
and report.json, report.html and RESULTS.md are still written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import analyses.report as rep
from interp.cli import app
from interp.organism.task import sample_problems
from tests.bpe import gpt2_style, save_checkpoint

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Base and tuned checkpoints (seeds 0 and 1, same tokenizer) and a JSONL task without intermediate values."""
    root = tmp_path_factory.mktemp("pair-report")
    problems = sample_problems(0, 40)
    tok = gpt2_style([p.text("verbose") for p in sample_problems(1, 300)], 400)
    task = root / "plain.jsonl"
    task.write_text("".join(json.dumps({"prompt": p.text("direct").rsplit(" ", 1)[0], "answer": p.answer}) + "\n"
                            for p in problems))
    return {"base": save_checkpoint(root / "base", tok, "gpt2", seed=0, n_layers=2),
            "tuned": save_checkpoint(root / "tuned", tok, "gpt2", seed=1, n_layers=2), "task": task}


def test_pair_report_runs_what_applies_and_says_why_for_the_rest(pair, tmp_path, monkeypatch):
    calls = []

    def zoo_only_section(out, n_per_step, png):
        """A section written for the zoo only (analyses.fake)."""
        calls.append(n_per_step)
        return rep.Section("zoo only", ("ran",), ())

    monkeypatch.setattr(rep, "SECTIONS", (*rep.SECTIONS, zoo_only_section))
    out = tmp_path / "report"
    r = runner.invoke(app, ["report", "--base", str(pair["base"]), "--tuned", str(pair["tuned"]),
                            "--task", f"jsonl:{pair['task']}", "--n", "2", "--max-new-tokens", "12", "--no-png",
                            "--sections", "zoo,layers,latent,zoo_only", "--out", str(out), "--jobs", "1"])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "report.json").read_text())
    config = rep.ReportConfig.from_dict(data["config"])
    assert config.base == str(pair["base"]) and config.tuned == (str(pair["tuned"]),)
    assert config.scale == () and config.n_per_step == 2 and config.max_new_tokens == 12 and not config.is_zoo
    sections = [rep.Section.from_dict(s) for s in data["sections"]]
    assert len(sections) == 4 and all(s.seconds >= 0 for s in sections)
    zoo, layers, latent, zoo_only = sections
    # the evaluation and the layer analysis ran on both models of the pair
    assert not zoo.skipped and not layers.skipped and zoo.figures and layers.figures
    assert str(pair["tuned"]) in zoo.table_html and str(pair["base"]) in zoo.table_html
    evaluated = json.loads((out / "zoo_eval.json").read_text())
    assert [m["name"] for m in evaluated["models"]] == [str(pair["base"]), str(pair["tuned"])]
    assert evaluated["config"]["eval"]["n_per_step"] == 2 and evaluated["config"]["eval"]["max_new_tokens"] == 12
    assert any("emulated fine-tuning is not run" in s for s in layers.sentences)
    assert any("logit lens: not measured" in s and "no answer candidates" in s for s in layers.sentences)
    assert (out / "layers_tuned.json").is_file()
    # the task has no intermediate values, and the zoo-only section takes no pair: both say so and run nothing
    assert "no intermediate values" in latent.skipped and latent.sentences[0].startswith("Not run:")
    assert not (out / "latent_reasoning.json").exists()
    assert "first zoo only" in zoo_only.skipped and calls == []
    assert set(data["skipped"].values()) == {latent.skipped, zoo_only.skipped}
    md = (out / "RESULTS.md").read_text()
    assert data["title"] in md and "(not run)" in md and "no intermediate values" in md
    assert f"per section: {zoo.title} {zoo.seconds:.0f} s" in md
    assert "Not run:" in (out / "report.html").read_text()
    assert not Path("RESULTS.md").resolve().samefile(out / "RESULTS.md")


def test_a_section_whose_analysis_refuses_the_task_is_skipped_with_its_message(pair, tmp_path, monkeypatch):
    def refusing_section(config, out):
        """Steering that needs a thing this task lacks (analyses.fake)."""
        raise ValueError(f"task {config.task!r} has no chain-of-thought pairs")

    monkeypatch.setattr(rep, "SECTIONS", (refusing_section,))
    config = rep.ReportConfig.pair(str(pair["base"]), str(pair["tuned"]), f"jsonl:{pair['task']}", n_per_step=1,
                                   png=False)
    rep.build_report(tmp_path, results=None, config=config)
    (s,) = [rep.Section.from_dict(d) for d in json.loads((tmp_path / "report.json").read_text())["sections"]]
    assert s.title == "Steering that needs a thing this task lacks (not run)"
    assert "has no chain-of-thought pairs" in s.skipped and s.figures == ()
    # on the first zoo the same error is not swallowed: the zoo's report fails loudly, as it always has
    with pytest.raises(ValueError, match="chain-of-thought pairs"):
        rep.build_report(tmp_path / "zoo", results=None, config=rep.ReportConfig(sections=("refusing",)))


def _said(r) -> str:
    """The command's output as one line (rich wraps long errors)."""
    return " ".join(r.output.split())


def test_report_arguments_are_checked_before_anything_loads(pair, tmp_path):
    r = runner.invoke(app, ["report", "--base", str(pair["base"]), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--base and --tuned go together" in _said(r)
    r = runner.invoke(app, ["report", "--task", "organism-nl", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "need --base and --tuned" in _said(r)
    r = runner.invoke(app, ["report", "--base", str(pair["base"]), "--tuned", str(pair["base"]), "--task", "organism",
                            "--out", str(tmp_path)])
    assert r.exit_code == 2 and "named twice" in _said(r)
    r = runner.invoke(app, ["report", "--base", str(pair["base"]), "--tuned", str(pair["tuned"]), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no task given" in _said(r)
    r = runner.invoke(app, ["report", "--base", str(pair["base"]), "--tuned", str(pair["tuned"]), "--sections", "nope",
                            "--task", f"jsonl:{pair['task']}", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown report section" in _said(r) and "zoo" in _said(r)
    other = save_checkpoint(tmp_path / "other", gpt2_style(["x = 1 ; y = 2"] * 20, 300), "gpt2", n_layers=2)
    r = runner.invoke(app, ["report", "--base", str(pair["base"]), "--tuned", str(other), "--task", "organism",
                            "--out", str(tmp_path)])
    assert r.exit_code == 2 and "cannot be compared as a pair" in _said(r) and "vocabulary" in _said(r)
    assert not (tmp_path / "report.json").exists()


def test_a_report_written_elsewhere_keeps_its_results_md_beside_it(tmp_path, monkeypatch):
    """`interp report --out DIR` writes DIR/RESULTS.md: only the zoo's report into figures/ rewrites the
    project's RESULTS.md."""
    def fake_section(config, out):
        """A fake section (analyses.fake)."""
        return rep.Section("Fake", ("measured",), ())

    monkeypatch.setattr(rep, "SECTIONS", (fake_section,))
    rep.build_report(tmp_path, results=None, config=rep.ReportConfig(png=False))
    project = Path("RESULTS.md").read_text() if Path("RESULTS.md").is_file() else None
    r = runner.invoke(app, ["report", "--render-only", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "- measured" in (tmp_path / "RESULTS.md").read_text()
    assert (Path("RESULTS.md").read_text() if Path("RESULTS.md").is_file() else None) == project


def test_routing_compute_and_calibration_run_on_any_pair(pair, tmp_path):
    """The seed claims' sections (hybrid decoding, compute-matched curves, calibration) take the pair and the
    task: on a JSONL task, which does not sample by step count, each draws n x 4 problems from the file."""
    out = tmp_path / "report"
    config = rep.ReportConfig.pair(str(pair["base"]), str(pair["tuned"]), f"jsonl:{pair['task']}", n_per_step=2,
                                   png=False, max_new_tokens=8, sections=("routing", "compute", "calibration"))
    rep.build_report(out, results=None, config=config)
    data = json.loads((out / "report.json").read_text())
    assert data["section_names"] == ["routing", "compute", "calibration"]
    sections = {n: rep.Section.from_dict(d) for n, d in zip(data["section_names"], data["sections"])}
    for name, s in sections.items():
        assert not s.skipped, (name, s.skipped)
        assert s.sentences and s.figures and all((out / f).is_file() for f in s.figures)
    routing = json.loads((out / "routing.json").read_text())
    assert routing["config"]["base"] == str(pair["base"]) and routing["config"]["tuned"] == [str(pair["tuned"])]
    assert routing["config"]["max_new_tokens"] == 8 and len(routing["pairs"][0]["n_steps"]) == 2 * 4
    compute = json.loads((out / "compute.json").read_text())
    assert compute["config"]["models"] == [str(pair["base"]), str(pair["tuned"])]
    assert compute["config"]["reference"] == str(pair["tuned"]) and compute["config"]["bases"] == [str(pair["base"])]
    # the zoo's token budgets (4..72 of 72) as shares of the report's 8 tokens
    assert compute["config"]["budgets"] == [1, 2, 3, 4, 6, 8] and compute["config"]["max_new_tokens"] == 8
    # a plain JSONL task has no end-of-chain marker and no answer candidates: what needs them says it did not run
    assert compute["config"]["forcing_models"] == [] and "Budget forcing: not run" in sections["compute"].sentences[-1]
    calibration = json.loads((out / "calibration.json").read_text())
    assert [m["name"] for m in calibration["models"]] == [str(pair["base"]), str(pair["tuned"])]
    assert calibration["config"]["conditions"] == ["cot", "free"]
    assert sections["calibration"].sentences[-1] == ("Not measured: forced direct (the task lists no answer "
                                                     "candidates).")


def test_a_section_that_fails_on_a_pair_is_written_with_its_error_and_the_others_still_run(pair, tmp_path,
                                                                                         monkeypatch):
    """Hours of a GPU report are not lost to one broken section: it is written as failed (its traceback in
    report.json), the other sections run, and the command ends with an error naming it."""
    def broken_section(config, out):
        """A section whose analysis breaks (analyses.fake)."""
        raise RuntimeError("Expected all tensors to be on the same device")

    def fine_section(config, out):
        """A section that works (analyses.fake)."""
        return rep.Section("Fine", ("measured",), ())

    monkeypatch.setattr(rep, "SECTIONS", (broken_section, fine_section))
    out = tmp_path / "report"
    r = runner.invoke(app, ["report", "--base", str(pair["base"]), "--tuned", str(pair["tuned"]), "--task",
                            f"jsonl:{pair['task']}", "--n", "1", "--no-png", "--out", str(out), "--jobs", "1"])
    assert r.exit_code != 0 and "1 of 2 sections failed" in _said(r) and "same device" in _said(r)
    data = json.loads((out / "report.json").read_text())
    broken, fine = (rep.Section.from_dict(d) for d in data["sections"])
    assert broken.title == "A section whose analysis breaks (failed)" and not broken.skipped
    assert broken.sentences == (("Failed: RuntimeError: Expected all tensors to be on the same device. The "
                                "traceback is in report.json."),)
    assert "Traceback" in broken.error and "broken_section" in broken.error and not fine.error
    assert fine.sentences == ("measured",) and data["failed"] == {broken.title: broken.sentences[0]}
    assert "Failed: RuntimeError" in (out / "RESULTS.md").read_text()
    # the zoo's report still stops at the first error
    with pytest.raises(RuntimeError, match="same device"):
        rep.build_report(tmp_path / "zoo", results=None, config=rep.ReportConfig(png=False))


def test_every_section_generates_at_most_the_reports_max_new_tokens(tmp_path, monkeypatch):
    """`--max-new-tokens` reaches every section that generates (a real pair's chains need 1,000 tokens or more,
    not the organism's 72): each analysis' config is read back from what the section hands it."""
    import dataclasses

    import analyses.faithfulness.analysis as fa
    import analyses.verbosity.analysis as va
    import analyses.verbosity.reasoning as vr

    seen = {}

    def fake_run(name):
        def run(cfg, *args, **kw):
            seen[name] = cfg.max_new_tokens
            raise ValueError("stop here")  # a pair's report writes it as a skipped section
        return run

    monkeypatch.setattr(va, "run_cached", fake_run("verbosity"))
    monkeypatch.setattr(vr, "run_cached", fake_run("reasoning_direction"))
    monkeypatch.setattr(fa, "run", fake_run("faithfulness"))
    config = dataclasses.replace(rep.ReportConfig.pair("organism-nl/base", "organism-nl/sft", n_per_step=2,
                                                       png=False), max_new_tokens=321)
    for make in (rep.verbosity_section, rep.reasoning_direction_section, rep.faithfulness_section):
        assert "stop here" in rep.run_section(make, config, tmp_path).skipped
    assert seen == {"verbosity": 321, "reasoning_direction": 321, "faithfulness": 321}


def test_every_section_runs_on_a_qwen_shaped_pair_with_chat_template_and_thinking_tags(tmp_path):
    """The whole pair report on tiny random-init Qwen2 checkpoints with a Qwen-style BPE (digits split, ChatML,
    `<think>` tokens) on the shipped GSM8K-format file: no section fails, and each one that measures a pair
    runs (routing may find nothing to learn from random models that always agree, and the file offers no
    shift; both say so)."""
    import interp
    from tests.bpe import qwen_style

    task = interp.task("jsonl:gsm_synth")
    items = task.sample(200, 0)
    tok = qwen_style([task.prompt(it) + task.completion(it, task.formats[-1]) for it in items], 600)
    base = save_checkpoint(tmp_path / "base", tok, "qwen2", seed=0, n_layers=2)
    tuned = save_checkpoint(tmp_path / "tuned", tok, "qwen2", seed=1, n_layers=2)
    config = rep.ReportConfig.pair(str(base), str(tuned), "jsonl:gsm_synth", n_per_step=2, png=False,
                                   max_new_tokens=16)
    rep.build_report(tmp_path / "out", results=None, config=config)  # raises SectionsFailed if any section failed
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    ran = {n for n, s in zip(data["section_names"], data["sections"]) if not s["skipped"]}
    zoo_only = {rep.section_name(m) for m in rep.SECTIONS if not rep.takes_config(m)} | {"seeds"}
    assert ran | {"routing", "shift"} == set(data["section_names"]) - zoo_only, data["skipped"]
    # a task read from a file has only its own items: the shift section says so
    shift = data["sections"][data["section_names"].index("shift")]
    assert "offers no distribution shift" in shift["skipped"]
    assert data["failed"] == {}
