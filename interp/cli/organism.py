"""`interp organism ...`: train the zoo, print its table, sample problems."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import console, fail, organism_app, parse_steps


@organism_app.command("train")
def organism_train(
    names: Annotated[list[str] | None, typer.Argument(help="zoo members, e.g. base-s sft")] = None,
    all_: Annotated[bool, typer.Option("--all", help="train the whole zoo in dependency order")] = False,
    out: Annotated[Path | None, typer.Option(help="where the checkpoints go (default: the shipped zoo)")] = None,  # type: ignore[assignment]
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
        fail(e)
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
def organism_table(out: Annotated[Path | None, typer.Option(help="zoo folder")] = None) -> None:  # type: ignore[assignment]
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

    st = parse_steps(steps)
    task = TaskConfig(min_steps=min(st), max_steps=max(st))
    for p in sample_problems(seed, n, task):
        print(p.prompt())
        for f in FORMATS:
            print(f"  {f:8s} {p.completion(f)}")
