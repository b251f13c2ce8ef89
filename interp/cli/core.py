"""`interp eval`, `interp info`, `interp report`: evaluate a model, describe it, build the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from interp.cli.common import app, console, fail, parse_steps


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Argument(help="organism name, local HF folder or cached hub id")],
    steps: Annotated[str, typer.Option(help="comma-separated step counts")] = "1,2,3,4",
    force_cot: Annotated[bool, typer.Option("--force-cot", help="end each prompt with the first CoT token")] = False,
    force_direct: Annotated[bool, typer.Option("--force-direct", help="answer with the most likely digit")] = False,
    n: Annotated[int, typer.Option(help="problems per step count")] = 200,
    seed: int = 1_000_003,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Greedy evaluation per number of steps: accuracy, CoT rate, answer length, bootstrap 95% CIs."""
    from interp.models import load
    from interp.organism.evaluate import EvalConfig, evaluate

    try:
        m = load(model)
        st = parse_steps(steps)
        cfg = EvalConfig(steps=st, n_per_step=n, force_cot=force_cot, force_direct=force_direct, seed=seed)
        res = evaluate(m.hf, m.tokenizer, cfg, name=model, checksum=m.checksum)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    if as_json:
        print(json.dumps(res.summary()))
        return
    mode = " (forced CoT)" if force_cot else " (forced direct)" if force_direct else ""
    table = Table(title=f"{model}{mode}")
    for col in ("steps", "n", "accuracy [95% CI]", "CoT rate [95% CI]", "mean tokens", "invalid"):
        table.add_column(col, justify="right")
    for k, s in res.by_steps.items():
        table.add_row(str(k), str(s.n), f"{s.accuracy:.3f} [{s.accuracy_ci[0]:.2f}, {s.accuracy_ci[1]:.2f}]",
                      f"{s.cot_rate:.3f} [{s.cot_rate_ci[0]:.2f}, {s.cot_rate_ci[1]:.2f}]",
                      f"{s.mean_tokens:.1f}", f"{s.invalid_rate:.3f}")
    Console().print(table)


@app.command("info")
def info(model: Annotated[str, typer.Argument(help="organism name, local HF folder or cached hub id")]) -> None:
    """Shape, checksum and hook names of a model."""
    from interp.models import load

    try:
        m = load(model)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    print(json.dumps({"name": m.name, "path": str(m.path), "n_layers": m.n_layers, "d_model": m.d_model,
                      "n_params": m.n_params, "checksum": m.checksum, "n_hooks": len(m.hook_names),
                      "hooks_layer0": [h for h in m.hook_names if h.startswith("blocks.0.")]}, indent=2))


@app.command("report")
def report(
    out: Annotated[Path, typer.Option(help="folder for figures and report.html")] = Path("figures"),
    n: Annotated[int, typer.Option(help="problems per step count")] = 200,
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    sections: Annotated[str, typer.Option(help="comma-separated sections to run (default: all)")] = "",
) -> None:
    """Run every analysis on the zoo and write the report's figures (HTML and PNG) and report.html."""
    from analyses.report import build_report

    try:
        only = [x.strip() for x in sections.split(",") if x.strip()] or None
        path = build_report(out, n_per_step=n, png=png, only=only)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    console.print(f"report: {path}")
