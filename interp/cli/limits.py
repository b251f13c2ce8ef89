"""`interp analyze shift|shift-pair|novelty|symbolic`: where reasoning breaks (distribution shift, instance novelty vs
complexity, semantics vs symbols). Heavy imports stay inside the commands (see interp/cli/__init__.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import analyze_app, console, fail

MODELS_HELP = "comma-separated members (default: the whole zoo)"


def _models(text: str) -> tuple[str, ...] | None:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    return tuple(n if "/" in n else f"organism/{n}" for n in names) or None


@analyze_app.command("shift")
def shift(
    models: Annotated[str, typer.Option(help=MODELS_HELP)] = "",
    n: Annotated[int, typer.Option(help="problems per step count")] = 100,
    seed: Annotated[int, typer.Option(help="problem seed")] = 515_000,
    out: Annotated[Path, typer.Option(help="folder for shift.json and figures")] = Path("figures/shift"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """Shift battery: accuracy, CoT rate, chain validity, edit distance under length/task/format/variable shifts."""
    import dataclasses

    from analyses.shift.analysis import ShiftConfig, run
    from analyses.shift.figures import figures, summary_sentences
    from interp.io import write_json

    try:
        cfg = ShiftConfig(n_per_step=n, seed=seed)
        names = _models(models)
        if names:
            cfg = dataclasses.replace(cfg, models=names, baseline=cfg.baseline if cfg.baseline in names else names[0])
        result = run(cfg)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "shift.json", result.to_dict(), indent=None)
        figures(result, out, png=png)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    _print(summary_sentences(result), out / "shift.json", as_json)


def _shift_part(module: str, config_name: str, seeds: str, out: Path, stem: str, png: bool, as_json: bool) -> None:
    """Run one mechanistic part of the shift analysis (its `run(config)`), write `<stem>.json` and its figure."""
    import dataclasses
    import importlib

    from interp.io import write_json

    try:
        mod = importlib.import_module(f"analyses.shift.{module}")
        cfg = getattr(mod, config_name)()
        if seeds:
            cfg = dataclasses.replace(cfg, seeds=tuple(int(x) for x in seeds.split(",") if x.strip()))
        result = mod.run(cfg)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / f"{stem}.json", result.to_dict(), indent=None)
        mod.figure(result, out, png=png)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    _print(mod.sentences(result), out / f"{stem}.json", as_json)


PartOut = Annotated[Path, typer.Option(help="folder for the JSON and the figure")]
PartPng = Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")]
PartJson = Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")]


@analyze_app.command("shift-recovery")
def shift_recovery(
    seeds: Annotated[str, typer.Option(help="fine-tune seeds, comma-separated (default 0,1)")] = "",
    out: PartOut = Path("figures/shift"), png: PartPng = True, as_json: PartJson = False,
) -> None:
    """SFT recovery: fine-tunes of sft with a share f of shifted data, accuracy under shift and in distribution."""
    _shift_part("recovery", "RecoveryConfig", seeds, out, "shift_recovery", png, as_json)


@analyze_app.command("shift-sae")
def shift_sae(out: PartOut = Path("figures/shift"), png: PartPng = True, as_json: PartJson = False) -> None:
    """SAE features in vs out of distribution, against an in-distribution control (which features stop firing)."""
    _shift_part("sae_shift", "SAEShiftConfig", "", out, "shift_sae", png, as_json)


@analyze_app.command("shift-chains")
def shift_chains(out: PartOut = Path("figures/shift"), png: PartPng = True, as_json: PartJson = False) -> None:
    """Chain patching under shift: does the answer still follow the written chain?"""
    _shift_part("chain_patch", "ChainPatchConfig", "", out, "shift_chain_patch", png, as_json)


@analyze_app.command("shift-pair")
def shift_pair(
    base: Annotated[str, typer.Option(help="base model")] = "organism-nl/base",
    tuned: Annotated[str, typer.Option(help="comma-separated post-trained models")] = "organism-nl/sft,organism-nl/rl",
    task: Annotated[str, typer.Option(help="a task that offers shifts (organism, organism-nl)")] = "organism-nl",
    n: Annotated[int, typer.Option(help="items per condition")] = 200,
    max_new_tokens: Annotated[int, typer.Option(help="tokens generated per item")] = 96,
    out: Annotated[Path, typer.Option(help="folder for shift_pair.json and the figure")] = Path("figures/shift_pair"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """Any pair under the task's own shifts (longer chains, unseen names): accuracy, drop, and how post-training
    changes the drop."""
    from analyses.shift.pair import PairShiftConfig, figures, run_cached, summary_sentences
    from interp.io import write_json

    try:
        cfg = PairShiftConfig(models=(base, *(t.strip() for t in tuned.split(",") if t.strip())), task=task, n=n,
                              max_new_tokens=max_new_tokens)
        result = run_cached(cfg)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "shift_pair.json", result.to_dict())
        figures(result, out, png=png)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    _print(summary_sentences(result), out / "shift_pair.json", as_json)


@analyze_app.command("novelty")
def novelty(
    models: Annotated[str, typer.Option(help=MODELS_HELP)] = "",
    n: Annotated[int, typer.Option(help="problems per (steps, seen/unseen) cell")] = 100,
    seed: Annotated[int, typer.Option(help="test pool seed")] = 616_000,
    out: Annotated[Path, typer.Option(help="folder for novelty.json and figures")] = Path("figures/novelty"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """Novelty vs complexity: accuracy on problems seen / never seen in each member's regenerated training data."""
    import dataclasses

    from analyses.novelty.analysis import NoveltyConfig, run
    from analyses.novelty.figures import figures, summary_sentences
    from interp.io import write_json

    try:
        cfg = NoveltyConfig(n_per_cell=n, seed=seed)
        names = _models(models)
        if names:
            cfg = dataclasses.replace(cfg, models=names)
        result = run(cfg)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "novelty.json", result.to_dict(), indent=None)
        figures(result, out, png=png)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    _print(summary_sentences(result), out / "novelty.json", as_json)


@analyze_app.command("symbolic")
def symbolic(
    models: Annotated[str, typer.Option(help=MODELS_HELP)] = "",
    n: Annotated[int, typer.Option(help="problems per step count")] = 100,
    definitions_members: Annotated[bool, typer.Option(help="also measure the members trained with definitions "
                                                            "(trained first if missing: minutes each)")] = True,
    out: Annotated[Path, typer.Option(help="folder for symbolic.json and figures")] = Path("figures/symbolic"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """Semantics vs symbols: operators redefined or replaced by defined symbols, variables renamed."""
    import dataclasses

    from analyses.symbolic.analysis import SymbolicConfig, run
    from analyses.symbolic.figures import figures, summary_sentences
    from interp.io import write_json

    try:
        cfg = SymbolicConfig(n_per_step=n)
        if not definitions_members:
            cfg = dataclasses.replace(cfg, recipes=())
        names = _models(models)
        if names:
            cfg = dataclasses.replace(cfg, models=names)
        result = run(cfg)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "symbolic.json", result.to_dict(), indent=None)
        figures(result, out, png=png)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    _print(summary_sentences(result), out / "symbolic.json", as_json)


def _print(lines: list[str], path: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"sentences": lines, "result": str(path)}))
        return
    for line in lines:
        console.print(line)
