"""The benchmarks' home (`interp/cli/bench/`): one checkpoint builder, commands that print a table then one
JSON line, and no benchmark code left in the core packages."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from interp.cli import app
from interp.cli.bench.checkpoints import (
    SHAPES,
    CheckpointSpec,
    build_checkpoint,
    random_model,
)

ROOT = Path(__file__).resolve().parents[2]


def test_spec_round_trips_and_named_shapes_merge_changes():
    spec = CheckpointSpec.named("qwen2-tiny", dtype="bfloat16", seed=3, shape={"num_hidden_layers": 1})
    assert spec.architecture == "qwen2" and spec.shape["num_hidden_layers"] == 1
    assert spec.shape["hidden_size"] == SHAPES["qwen2-tiny"][1]["hidden_size"]
    assert CheckpointSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="unknown benchmark shape 'qwen3'.*gpt2-small"):
        CheckpointSpec.named("qwen3")
    with pytest.raises(ValueError, match="architecture 'mamba'"):
        CheckpointSpec("mamba")
    with pytest.raises(ValueError, match="dtype 'float64'"):
        CheckpointSpec(dtype="float64")


def test_builder_is_deterministic_and_leaves_the_global_rng_alone(tmp_path: Path):
    spec = CheckpointSpec.named("qwen2-tiny", shape={"num_hidden_layers": 1})
    state = torch.random.get_rng_state()
    a = build_checkpoint(tmp_path / "a", spec)
    b = build_checkpoint(tmp_path / "b", spec)
    c = build_checkpoint(tmp_path / "c", CheckpointSpec.from_dict({**spec.to_dict(), "seed": 1}))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    model, tok = random_model(CheckpointSpec.named("gpt2-small", shape={"n_layer": 1, "n_embd": 64, "n_head": 2}))
    assert model.config.model_type == "gpt2" and model.config.pad_token_id == tok.pad_token_id


def test_built_checkpoint_loads_and_reads_organism_prompts(tmp_path: Path):
    from interp.models import load

    m = load(build_checkpoint(tmp_path / "m", CheckpointSpec.named("qwen2-tiny", dtype="bfloat16")),
             dtype=torch.bfloat16)
    ids = m.to_tokens("Q : a = 3 ; b = a + 4 ; b ? A :")
    assert m.tokenizer.unk_token_id not in ids[0].tolist()
    assert m.hf(ids).logits.dtype == torch.bfloat16


def test_a_checkpoint_with_the_natural_language_tokenizer_reads_that_task_and_says_when_the_vocab_is_too_small(
        tmp_path: Path):
    """The GPU check's pair report runs the natural-language task on random-init Qwen2 checkpoints: they carry
    the shipped byte-level BPE (with `<think>` as one token)."""
    import interp
    from interp.cli.bench.layers import build_pair

    spec = CheckpointSpec.named("qwen2-tiny", tokenizer="organism-nl", model_max_length=256)
    m = interp.load(build_checkpoint(tmp_path / "m", spec))
    task = interp.task("organism-nl")
    item = task.sample(1, 0)[0]
    ids = m.to_tokens(task.prompt(item) + task.cot_prefix(item))[0].tolist()
    assert len(m.tokenizer) < spec.shape["vocab_size"] and m.tokenizer.convert_tokens_to_ids("<think>") in ids
    assert m.hf.config.eos_token_id == m.tokenizer.eos_token_id
    with pytest.raises(ValueError, match="smaller than the organism-nl tokenizer's"):
        random_model(CheckpointSpec.named("qwen2-tiny", tokenizer="organism-nl", shape={"vocab_size": 100}))
    with pytest.raises(ValueError, match="tokenizer 'gpt2' is not one of"):
        CheckpointSpec(tokenizer="gpt2")
    base, tuned = build_pair(tmp_path / "pair", SHAPES["qwen2-tiny"][1], tokenizer="organism-nl")
    pair = interp.load_pair(str(base), str(tuned))
    vocab = pair.base.tokenizer.get_vocab()
    assert "</think>" in vocab and vocab == pair.tuned.tokenizer.get_vocab() and pair.base.checksum != pair.tuned.checksum


def test_bench_harvest_prints_a_table_then_one_json_line_with_the_ratio():
    torch.set_num_threads(1)
    r = CliRunner().invoke(app, ["bench", "harvest", "--models", "qwen2-tiny", "--gpt2-n", "8", "--batch-size", "4",
                                 "--repeats", "1", "--memory-n", "0", "--no-anchors", "--dtype", "bfloat16"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert "interp bench harvest" in r.stdout and "harvest one hook" in r.stdout
    figures = json.loads(lines[-1])
    assert figures["device"] == "cpu" and figures["dtype"] == "bfloat16"
    assert figures["qwen2_tiny_harvest_one_hook_over_hf_forward"] > 0
    assert "qwen2_tiny_run_with_cache_all_hooks_over_hf_forward" not in figures


def test_bench_rejects_an_unknown_dtype():
    r = CliRunner().invoke(app, ["bench", "harvest", "--dtype", "float64"])
    assert r.exit_code != 0 and "float64" in r.output


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_benchmarks_live_only_in_the_cli():
    strays = [p.relative_to(ROOT) for pkg in ("interp", "probes", "saes", "analyses") for p in (ROOT / pkg).rglob("bench.py")
              if "cli" not in p.relative_to(ROOT).parts]
    assert strays == [], f"benchmark modules outside interp/cli/bench: {strays}"
    for p in (ROOT / "interp").rglob("*.py"):
        rel = p.relative_to(ROOT / "interp").parts
        if rel[0] in ("cli", "organism"):
            continue
        bad = {n for n in _imports(p) if n.startswith("interp.cli")}
        assert not bad, f"{p} imports the CLI (benchmarks included): {bad}"


def test_bench_sae_reports_a_bad_configuration_as_an_error_not_a_traceback():
    r = CliRunner().invoke(app, ["bench", "sae", "--total-samples", "1024", "--repeats", "1"])
    assert r.exit_code == 2 and "warm-up" in r.output and "Traceback" not in r.output
