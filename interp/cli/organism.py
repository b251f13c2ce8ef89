"""`interp organism ...`: train the zoo, print its table, sample problems."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import console, fail, organism_app, parse_steps


@organism_app.command("train")
def organism_train(
    names: Annotated[list[str] | None, typer.Argument(help="zoo members, e.g. base-s sft")] = None,
    all_: Annotated[bool, typer.Option("--all", help="train the whole zoo in dependency order")] = False,
    seeds: Annotated[str | None, typer.Option(
        help="seed replicas, e.g. 1,2: trains <member>-seed<k> of the named members (default: base-s sft rl dpo), "
             "each post-trained replica from its own seed's base")] = None,
    out: Annotated[Path | None, typer.Option(help="where the checkpoints go (default: the shipped zoo)")] = None,  # type: ignore[assignment]
    runs_dir: Annotated[Path, typer.Option(help="checkpoints for resuming")] = Path("runs/organism"),
    threads: Annotated[int, typer.Option(help="torch threads per process (0: cores / jobs)")] = 0,
    jobs: Annotated[int, typer.Option(help="parallel training processes (lanes)")] = 1,
) -> None:
    """Train zoo members (resumes from RUNS_DIR after a kill, with identical results). With --all or --seeds the
    run's record (lanes, wall and CPU seconds per lane and member, load average) goes to training*.json."""
    from interp.organism.zoo import ORDER, seed_members, train_all
    from interp.organism.zoo_paths import REPLICATED, ZOO_DIR

    record = None
    if seeds is not None:
        try:
            seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
            if not seed_list or min(seed_list) < 0:
                raise ValueError
        except ValueError:
            raise typer.BadParameter(f"--seeds takes comma-separated non-negative integers, e.g. 1,2; got {seeds!r}")
        try:
            names = list(seed_members(seed_list, tuple(names or REPLICATED)))
        except ValueError as e:
            fail(e)
        record = "training-seeds.json" if seed_list == (1, 2) else f"training-seeds-{'-'.join(map(str, seed_list))}.json"
    elif all_:
        names = list(ORDER)
        record = "training.json"
    if not names:
        raise typer.BadParameter(f"name members to train ({', '.join(ORDER)}), pass --seeds 1,2 or --all")
    try:
        run = train_all(runs_dir, out or ZOO_DIR, tuple(names), threads, jobs=jobs)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    for n, p in run.paths.items():
        console.print(f"{n}: {p}")
    console.print(f"trained {len(run.paths)} member(s) in {run.wall_seconds:.0f} s")
    if record:
        import os

        from interp.io import library_versions, write_json

        command = "interp organism train " + (f"--seeds {seeds}" if seeds is not None else "--all")
        write_json((out or ZOO_DIR) / record, {
            "command": command + f" --jobs {jobs}" + (f" --threads {threads}" if threads else ""),
            "jobs": jobs, "cpu_count": os.cpu_count(), **run.to_dict(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "libraries": library_versions()})


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
