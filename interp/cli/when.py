"""`interp analyze routing|compute|calibration` ("when, not how": hybrid decoding, compute-matched curves,
confidence and calibration) and `interp bench routing`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import analyze_app, bench_app, console, fail, parse_steps


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _emit(name: str, out: Path, sentences: list[str], paths: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"result": str(out / f"{name}.json"), "sentences": sentences}))
        return
    for s in sentences:
        console.print(s + "\n")
    console.print(f"figures: {', '.join(str(p[0]) for p in paths.values())}")


@analyze_app.command("routing")
def routing_cmd(
    base: Annotated[str, typer.Option(help="base model (writes most tokens)")] = "organism/base-s",
    tuned: Annotated[str, typer.Option(help="comma-separated post-trained models")] = "organism/rl,organism/sft",
    task: Annotated[str, typer.Option(help="task name")] = "organism",
    steps: Annotated[str, typer.Option(help="comma-separated step counts")] = "1,2,3,4",
    n: Annotated[int, typer.Option(help="evaluation problems per step count")] = 100,
    n_train: Annotated[int, typer.Option(help="separate problems per step count for the classifier and steering")] = 100,
    kl_threshold: Annotated[float, typer.Option(help="the KL router's threshold (nats)")] = 0.5,
    out: Annotated[Path, typer.Option(help="folder for routing.json and the figures")] = Path("figures/routing"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """Lock-step hybrids of base and tuned: gap recovered vs share of tokens routed, per router, with random controls."""
    import torch

    from analyses.routing.analysis import RoutingConfig, run_cached
    from analyses.routing.figures import figures, summary_sentences
    from interp.io import write_json

    torch.set_num_threads(1)
    try:
        cfg = RoutingConfig(base=base, tuned=_names(tuned), task=task, steps=parse_steps(steps), n_per_step=n,
                            train_per_step=n_train, kl_threshold=kl_threshold)
        result = run_cached(cfg)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    write_json(out / "routing.json", result.to_dict())
    _emit("routing", out, summary_sentences(result), figures(result, out, png=png), as_json)


@bench_app.command("routing")
def bench_routing_cmd(
    base: str = "organism/base-s",
    tuned: str = "organism/rl",
    n: Annotated[int, typer.Option(help="prompts")] = 200,
    repeats: Annotated[int, typer.Option(help="timed repeats (best of)")] = 3,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
) -> None:
    """Lock-step generation of base + tuned vs generation with one model (target <= 2.3x). Last line: JSON."""
    from interp.benchmark import print_bench
    from interp.cli.bench.routing import bench_routing

    try:
        rows, figs = bench_routing(base, tuned, n=n, repeats=repeats, threads=threads)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    print_bench("interp bench routing", rows, figs)


@analyze_app.command("compute")
def compute_cmd(
    models: Annotated[str, typer.Option(help="comma-separated models")] =
        "organism/base-s,organism/base-m,organism/base-l,organism/sft,organism/rl,organism/dpo",
    bases: Annotated[str, typer.Option(help="the bases of several sizes (parameter axis)")] =
        "organism/base-s,organism/base-m,organism/base-l",
    reference: Annotated[str, typer.Option(help="post-trained model the bases try to catch up with")] = "organism/rl",
    task: Annotated[str, typer.Option(help="task name")] = "organism",
    steps: Annotated[str, typer.Option(help="comma-separated step counts")] = "1,2,3,4",
    n: Annotated[int, typer.Option(help="problems per step count")] = 50,
    samples: Annotated[int, typer.Option(help="samples per problem (a power of two)")] = 16,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 1.0,
    out: Annotated[Path, typer.Option(help="folder for compute.json and the figures")] = Path("figures/compute"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """Accuracy vs generated tokens (greedy, forced chain at budgets, majority vote, best-of-k) and vs parameters."""
    import torch

    from analyses.compute.analysis import ComputeConfig, run_cached
    from analyses.compute.figures import figures, summary_sentences
    from interp.io import write_json

    torch.set_num_threads(1)
    try:
        cfg = ComputeConfig(models=_names(models), bases=_names(bases), reference=reference, task=task,
                            steps=parse_steps(steps), n_per_step=n, n_samples=samples, temperature=temperature)
        result = run_cached(cfg)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    write_json(out / "compute.json", result.to_dict())
    _emit("compute", out, summary_sentences(result), figures(result, out, png=png), as_json)


@analyze_app.command("calibration")
def calibration_cmd(
    models: Annotated[str, typer.Option(help="comma-separated models")] =
        "organism/base-s,organism/base-m,organism/base-l,organism/sft,organism/rl,organism/dpo",
    conditions: Annotated[str, typer.Option(help="comma-separated: direct, cot, free")] = "direct,cot,free",
    task: Annotated[str, typer.Option(help="task name")] = "organism",
    steps: Annotated[str, typer.Option(help="comma-separated step counts")] = "1,2,3,4",
    n: Annotated[int, typer.Option(help="problems per step count")] = 100,
    out: Annotated[Path, typer.Option(help="folder for calibration.json and the figures")] = Path("figures/calibration"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """Answer-span confidence: ECE, AUROC and reliability diagrams per model and condition."""
    import torch

    from analyses.calibration.analysis import CalibrationConfig, run_cached
    from analyses.calibration.figures import figures, summary_sentences
    from interp.io import write_json

    torch.set_num_threads(1)
    try:
        cfg = CalibrationConfig(models=_names(models), conditions=_names(conditions), task=task,
                                steps=parse_steps(steps), n_per_step=n)
        result = run_cached(cfg)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    write_json(out / "calibration.json", result.to_dict())
    _emit("calibration", out, summary_sentences(result), figures(result, out, png=png), as_json)


@analyze_app.command("rlsf")
def rlsf_cmd(
    member: Annotated[str, typer.Option(help="the shipped preference member to compare: organism/rlsf (own-confidence "
                                             "pairs) or organism/dpo-teacher (base-l's right vs wrong samples)")
                      ] = "organism/rlsf",
    n: Annotated[int, typer.Option(help="comparison problems per step count")] = 100,
    write_card: Annotated[bool, typer.Option(help="record the member's calibration in its card")] = False,
    out: Annotated[Path, typer.Option(help="folder for rlsf.json and the figures")] = Path("figures/rlsf"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """rlsf (DPO on pairs ranked by base-s's own answer confidence) or dpo-teacher (DPO on base-l's right vs wrong
    samples), both shipped zoo members, against base-s, rl and dpo: accuracy, CoT rate, invalid rate, ECE."""
    import torch

    from analyses.calibration.figures import figures, rlsf_sentences
    from analyses.calibration.rlsf import record_in_card, run_cached
    from interp.io import write_json

    torch.set_num_threads(1)
    try:
        from analyses.calibration.analysis import CalibrationResult

        c = run_cached(member, n_per_step=n)
        if write_card:
            record_in_card(c)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        fail(e)
    stem = "dpo_teacher" if c.member.source else "rlsf"
    write_json(out / f"{stem}.json", c.to_dict())
    paths = figures(CalibrationResult.from_dict(c.calibration), out, png=png, prefix=stem)
    _emit(stem, out, rlsf_sentences(c), paths, as_json)
