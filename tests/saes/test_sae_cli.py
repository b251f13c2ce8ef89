"""`interp sae ...` and the bench's sae-lens runner anchor, on the tiny store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from interp.cli import app
from tests.saes.conftest import HOOK

runner = CliRunner()


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_sae_train_then_eval_writes_metrics_into_the_card(small_store: Any, tmp_path: Path) -> None:
    out = tmp_path / "sae"
    r = runner.invoke(app, ["sae", "train", str(small_store.root), "--hook", HOOK, "--out", str(out), "--total-samples",
                            "8192", "--batch-size", "256", "--expansion", "2", "--json"])
    assert r.exit_code == 0, r.output
    card = json.loads(r.stdout.strip().splitlines()[-1])
    assert card["metrics"]["ce_recovered"] is not None and 0 < card["metrics"]["explained_variance"] <= 1
    assert json.loads((out / "card.json").read_text())["metrics"] == card["metrics"]
    r = runner.invoke(app, ["sae", "eval", str(out), str(small_store.root), "--no-ce", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["ce_recovered"] is None


def test_sae_cli_errors_are_clear(tiny_sae: Any, small_store: Any, tmp_path: Path) -> None:
    r = runner.invoke(app, ["sae", "features", str(tiny_sae.path), str(small_store.root), "--feature", "9999"])
    assert r.exit_code == 2 and "out of range" in _flat(r.output)
    r = runner.invoke(app, ["sae", "steer", str(tiny_sae.path), "--features", "300", "--prompt", "Q : a = 1 ; a ? A :"])
    assert r.exit_code == 2 and "out of range" in _flat(r.output)
    r = runner.invoke(app, ["sae", "train", str(small_store.root), "--hook", HOOK, "--out", str(tmp_path / "x"),
                            "--architecture", "gated"])
    assert r.exit_code == 2 and "batchtopk" in _flat(r.output)
    r = runner.invoke(app, ["sae", "train", str(small_store.root), "--hook", HOOK, "--out", str(tmp_path / "short"),
                            "--total-samples", "4096", "--batch-size", "256"])  # 16 steps, the default warm-up is 20
    assert r.exit_code == 2 and "training has 16 steps but lr_warm_up_steps=20" in _flat(r.output)
    assert not list(tmp_path.glob("short*"))  # refused before anything was written
    r = runner.invoke(app, ["sae", "eval", str(tmp_path), str(small_store.root)])
    assert r.exit_code == 2 and "not a saved SAE" in _flat(r.output)


def test_sae_steer_prints_both_completions(tiny_sae: Any) -> None:
    r = runner.invoke(app, ["sae", "steer", str(tiny_sae.path), "--features", "1,2", "--scale", "0", "--prompt",
                            "Q : a = 1 ; b = a + 2 ; b ? A :", "--json"])
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout.strip().splitlines()[-1])["completions"][0]
    assert c["steered"] == c["unsteered"]  # scale 0 changes nothing


def test_sae_lens_runner_anchor_trains_on_the_same_texts(base_s: Any, small_store: Any, tmp_path: Path) -> None:
    from interp.cli.bench.sae import run_runner
    from saes.config import SAETrainConfig

    cfg = SAETrainConfig(hook=HOOK, total_samples=2048, batch_size=256, buffer_size=1024, expansion=2,
                         lr_warm_up_steps=2)
    r = run_runner(base_s, small_store.dataset(), cfg, tmp_path)
    assert r["samples"] == 2048 and r["seconds"] > 0
    assert (tmp_path / "cfg.json").is_file()
