"""`interp ...`: the command line. Each subcommand is a thin layer over the Python API.

The CLI must start at once: `interp --help` and every `interp <command> --help` import only typer, rich
and the standard library (tests/integration/test_cli_startup.py checks that torch, transformers,
transformer-lens, sae-lens and nnsight stay unloaded). Typer builds help from the signatures alone, so
the rule is simple: heavy imports go inside the command function that needs them.

Adding a subcommand (the pattern every module here follows):

1. Write `interp/cli/<topic>.py`. At module level import only the standard library, `typer`, `rich`
   and `interp.cli.common` (the apps `app`, `analyze_app`, `bench_app`, `organism_app`, and `console`,
   `fail`, `parse_steps`, `table_console`). Annotations are fine: `from __future__ import annotations`
   keeps them strings.
2. Register on an app and import the real work inside the body::

       @analyze_app.command("routing")
       def routing(base: Annotated[str, typer.Option(help="...")] = "organism/base-s") -> None:
           \"\"\"One line: what it measures (this is the --help text).\"\"\"
           from analyses.routing import RoutingConfig, run   # heavy: torch etc. load here, not at --help

           try:
               result = run(RoutingConfig(base=base))
           except (ValueError, FileNotFoundError, OSError) as e:
               fail(e)
           ...

   A new command group: `topic_app = typer.Typer(help=..., no_args_is_help=True)` and
   `app.add_typer(topic_app, name="topic")` in the module. A benchmark goes in `interp/cli/bench/`
   (see its docstring) and registers in `interp/cli/bench/commands.py`.
3. Add the module to the import list below. The startup test walks every command and fails if a
   `--help` pulls in a heavy library.

`interp` itself exports its API lazily (see `interp/__init__.py`), so importing `interp.cli.*` does not
load torch either.
"""

from __future__ import annotations

from interp.cli import (  # noqa: F401  (each module registers its subcommands)
    activations,
    core,
    layers,
    limits,
    organism,
    patching,
    replication,
    saes,
    steering,
    when,
)
from interp.cli.bench import commands as bench_commands  # noqa: F401  (interp bench ...)
from interp.cli.common import analyze_app, app, bench_app, organism_app


def main() -> None:  # pragma: no cover
    import sys

    from interp.cli.common import bare_ray_flag

    sys.argv[1:] = bare_ray_flag(sys.argv[1:])
    app()


__all__ = ["analyze_app", "app", "bench_app", "main", "organism_app"]
