"""Shared pieces of the command line: the Typer apps, the console, argument parsing, error exit."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

app = typer.Typer(help="Interpretability of reasoning post-training vs scaling.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
organism_app = typer.Typer(help="The model organism: task, training, zoo.", no_args_is_help=True)
analyze_app = typer.Typer(help="Run one analysis and write its result and figures.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: a table, then one JSON line of ratios measured in the same run.",
                        no_args_is_help=True)
app.add_typer(organism_app, name="organism")
app.add_typer(analyze_app, name="analyze")
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"--steps takes comma-separated integers like 1,2,3,4, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise typer.BadParameter(f"--steps needs integers >= 1, got {text!r}")
    return steps


def fail(e: Exception) -> NoReturn:
    console.print(f"[red]error:[/red] {e}")
    raise typer.Exit(2)


def table_console() -> Console:
    """Console for result tables on stdout: the terminal's width, or 160 columns when piped (not 80)."""
    import sys

    return Console(width=None if sys.stdout.isatty() else 160)
