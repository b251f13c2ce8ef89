"""Shared pieces of the command line: the Typer apps, the console, argument parsing, error exit."""

from __future__ import annotations

from typing import Annotated, NoReturn

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


RayOption = Annotated[str | None, typer.Option(
    "--ray", metavar="[ADDRESS]", help="run the work as Ray tasks: bare --ray uses a local instance (all CPUs); "
                                       "--ray auto or --ray HOST:PORT joins a cluster (`ray start --head`)")]
RayCpus = Annotated[float, typer.Option(help="CPUs each Ray task declares (and its torch threads)")]
RayGpus = Annotated[float, typer.Option(help="GPUs each Ray task declares (e.g. 1 with --device cuda)")]


def bare_ray_flag(argv: list[str]) -> list[str]:
    """`--ray` given without an address (last, or followed by another option) becomes `--ray local`: typer has
    no options with an optional value."""
    out = []
    for i, a in enumerate(argv):
        out.append(a)
        if a == "--ray" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append("local")
    return out


def ray_spec(text: str | None) -> str | None:
    """`--ray`'s value as `interp.cluster.run_tasks`' `ray` argument (None: in this process)."""
    from interp.cluster import parse_ray_option

    spec = parse_ray_option(text)
    return None if spec is None else str(spec)


def fail(e: Exception) -> NoReturn:
    console.print(f"[red]error:[/red] {e}")
    raise typer.Exit(2)


def table_console() -> Console:
    """Console for result tables on stdout: the terminal's width, or 160 columns when piped (not 80)."""
    import sys

    return Console(width=None if sys.stdout.isatty() else 160)
