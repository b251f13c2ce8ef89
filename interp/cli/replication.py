"""`interp analyze replication`: the zoo report's headline findings rerun on each seed's replicas, with each
finding's verdict over seeds. Heavy imports stay inside the command (see interp/cli/__init__.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import analyze_app, console, fail, table_console


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} takes comma-separated integers like 0,1,2, got {text!r}") from None
    if not vals:
        raise typer.BadParameter(f"{what} needs at least one integer, got {text!r}")
    return vals


@analyze_app.command("replication")
def replication(
    seeds: Annotated[str, typer.Option(help="training seeds, comma-separated (0 = the shipped zoo, k = "
                                            "organism/<member>-seed<k>)")] = "0,1,2",
    analyses: Annotated[str, typer.Option(help="comma-separated: zoo, layers, latent, verbosity, faithfulness, "
                                               "reasoning, calibration, routing")] = (
        "zoo,layers,latent,verbosity,faithfulness,reasoning,calibration,routing"),
    strict: Annotated[bool, typer.Option(help="fail when a seed's members are not trained (default: leave the "
                                              "seed out and say so)")] = False,
    out: Annotated[Path, typer.Option(help="folder for replication.json and the figure")] = Path("figures/replication"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the findings as one JSON object")] = False,
) -> None:
    """Which headline findings hold in every seed, in most, in one: per-seed numbers, mean and spread."""
    from analyses.replication.analysis import ReplicationConfig, run
    from analyses.replication.section import write

    try:
        cfg = ReplicationConfig(seeds=_ints(seeds, "--seeds"),
                                analyses=tuple(a.strip() for a in analyses.split(",") if a.strip()),
                                skip_missing=not strict)
        result = run(cfg)
        sentences, _, _ = write(result, out, png=png)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    if as_json:
        print(json.dumps({f.id: {"verdict": f.verdict, "k": f.k, "n": f.n,
                                 "values": {str(v.seed): v.value if v.measured else None for v in f.value.values}} for f in result.findings}))
        return
    tc = table_console()
    for s in sentences:
        tc.print(f"- {s}")
    console.print(f"wrote {out / 'replication.json'}")
