"""`interp ...`: the command line. Each subcommand is a thin layer over the Python API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Interpretability of reasoning post-training vs scaling.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
organism_app = typer.Typer(help="The model organism: task, training, zoo.", no_args_is_help=True)
app.add_typer(organism_app, name="organism")
console = Console(stderr=True)


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"--steps takes comma-separated integers like 1,2,3,4, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise typer.BadParameter(f"--steps needs integers >= 1, got {text!r}")
    return steps


def _fail(e: Exception) -> None:
    console.print(f"[red]error:[/red] {e}")
    raise typer.Exit(2)


@organism_app.command("train")
def organism_train(
    names: Annotated[Optional[list[str]], typer.Argument(help="zoo members, e.g. base-s sft")] = None,
    all_: Annotated[bool, typer.Option("--all", help="train the whole zoo in dependency order")] = False,
    out: Annotated[Path, typer.Option(help="where the checkpoints go (default: the shipped zoo)")] = None,  # type: ignore[assignment]
    runs_dir: Annotated[Path, typer.Option(help="checkpoints for resuming")] = Path("runs/organism"),
    threads: Annotated[int, typer.Option(help="torch threads per process (0: cores / jobs)")] = 0,
    jobs: Annotated[int, typer.Option(help="parallel training processes (lanes)")] = 1,
) -> None:
    """Train zoo members (resumes from RUNS_DIR after a kill, with identical results)."""
    from interp.organism.zoo import ORDER, train_all
    from interp.organism.zoo_paths import ZOO_DIR

    if all_:
        names = list(ORDER)
    if not names:
        raise typer.BadParameter(f"name members to train ({', '.join(ORDER)}) or pass --all")
    t0 = time.time()
    try:
        paths = train_all(runs_dir, out or ZOO_DIR, tuple(names), threads, jobs=jobs)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    for n, p in paths.items():
        console.print(f"{n}: {p}")
    seconds = time.time() - t0
    console.print(f"trained {len(paths)} member(s) in {seconds:.0f} s")
    if all_:
        import os

        from interp.io import library_versions, write_json
        from interp.organism.zoo import lanes

        write_json((out or ZOO_DIR) / "training.json", {
            "command": f"interp organism train --all --jobs {jobs}" + (f" --threads {threads}" if threads else ""),
            "wall_seconds": round(seconds, 1), "jobs": jobs, "lanes": lanes(list(ORDER), jobs),
            "cpu_count": os.cpu_count(), "libraries": library_versions()})


@organism_app.command("table")
def organism_table(out: Annotated[Path, typer.Option(help="zoo folder")] = None) -> None:  # type: ignore[assignment]
    """Print the zoo's measured numbers (from the cards) as a markdown table."""
    from interp.organism.zoo import card_table
    from interp.organism.zoo_paths import ZOO_DIR

    print(card_table(out or ZOO_DIR))


@organism_app.command("sample")
def organism_sample(
    n: int = 5, steps: Annotated[str, typer.Option(help="step counts")] = "1,2,3,4", seed: int = 0,
) -> None:
    """Print task problems with their three answer formats."""
    from interp.organism.task import FORMATS, TaskConfig, sample_problems

    st = _steps(steps)
    task = TaskConfig(min_steps=min(st), max_steps=max(st))
    for p in sample_problems(seed, n, task):
        print(p.prompt())
        for f in FORMATS:
            print(f"  {f:8s} {p.completion(f)}")


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
        st = _steps(steps)
        cfg = EvalConfig(steps=st, n_per_step=n, force_cot=force_cot, force_direct=force_direct, seed=seed)
        res = evaluate(m.hf, m.tokenizer, cfg, name=model, checksum=m.checksum)
    except (ValueError, FileNotFoundError, OSError) as e:
        _fail(e)
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
        _fail(e)
    print(json.dumps({"name": m.name, "path": str(m.path), "n_layers": m.n_layers, "d_model": m.d_model,
                      "n_params": m.n_params, "checksum": m.checksum, "n_hooks": len(m.hook_names),
                      "hooks_layer0": [h for h in m.hook_names if h.startswith("blocks.0.")]}, indent=2))


@app.command("report")
def report(
    out: Annotated[Path, typer.Option(help="folder for figures and report.html")] = Path("figures"),
    n: Annotated[int, typer.Option(help="problems per step count")] = 200,
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
) -> None:
    """Evaluate the zoo and write the report's figures (HTML and PNG) and report.html."""
    from analyses.report import build_report

    try:
        path = build_report(out, n_per_step=n, png=png)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    console.print(f"report: {path}")


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app"]
