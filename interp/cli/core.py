"""`interp eval`, `interp info`, `interp report`: evaluate a model, describe it, build the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from interp.cli.common import RayCpus, RayGpus, RayOption, app, console, fail, parse_steps, ray_spec


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Argument(help="organism name, local HF folder or cached hub id")],
    task: Annotated[str, typer.Option(help="task name (organism, organism-nl, jsonl:FILE, ...); default: the "
                                           "task the model is registered with")] = "",
    steps: Annotated[str, typer.Option(help="comma-separated step counts (tasks that have steps)")] = "1,2,3,4",
    force_cot: Annotated[bool, typer.Option("--force-cot", help="end each prompt with the task's CoT prefix")] = False,
    force_direct: Annotated[bool, typer.Option("--force-direct", help="the most likely of the task's candidate "
                                                                      "answers (sequence log-probability)")] = False,
    chat: Annotated[bool, typer.Option("--chat", help="wrap prompts in the model's chat template")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
    batch_size: Annotated[int, typer.Option(help="prompts per generation batch (halved on out-of-memory)")] = 400,
    n: Annotated[int, typer.Option(help="problems per step count (or in all, for tasks without steps)")] = 200,
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate per problem")] = 72,
    seed: int = 1_000_003,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ray: RayOption = None,
    ray_cpus: RayCpus = 1,
    ray_gpus: RayGpus = 0,
) -> None:
    """Greedy evaluation per number of steps: accuracy, CoT rate, answer length, bootstrap 95% CIs (--ray: one
    Ray task per batch, the same result)."""
    from interp.evaluation import GenerationConfig, evaluate
    from interp.models import load
    from interp.registry import default_task
    from interp.registry import task as get_task

    try:
        if force_cot and force_direct:
            raise ValueError("--force-cot and --force-direct exclude each other: pick one (or neither)")
        name = task or default_task(model)
        if not name:
            raise ValueError(f"no task given and {model!r} is registered with none: pass --task "
                             f"(e.g. --task jsonl:problems.jsonl)")
        t = get_task(name)
        m = load(model, device=device, dtype=dtype)
        items = []
        if t.has_steps:
            for k in parse_steps(steps):
                items += t.sample(n, seed + k, n_steps=k)
        else:
            items = t.sample(n, seed)
        force = "cot" if force_cot else "direct" if force_direct else "free"
        res = evaluate(m, t, items, GenerationConfig(force=force, max_new_tokens=max_new_tokens, seed=seed, chat=chat,
                                                     batch_size=batch_size),
                       ray=ray_spec(ray), num_cpus=ray_cpus, num_gpus=ray_gpus)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    if as_json:
        print(json.dumps(res.summary()))
        return
    mode = " (forced CoT)" if force_cot else " (forced direct)" if force_direct else ""
    table = Table(title=f"{model} on {name}{mode}")
    for col in ("steps" if t.has_steps else "group", "n", "accuracy [95% CI]", "CoT rate [95% CI]", "mean tokens",
                "invalid"):
        table.add_column(col, justify="right")
    for k, s in res.by_group.items():
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


def parse_seeds(text: str) -> tuple[int, ...]:
    """`--seeds 0,1,2` as a tuple of seeds ('' for none; the report's config checks them)."""
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers like 0,1,2, got {text!r}") from None
    return seeds


@app.command("report")
def report(
    base: Annotated[str, typer.Option(help="base model (name, folder or cached hub id); default: the first zoo's "
                                           "report (organism/base-s vs sft, rl, dpo)")] = "",
    tuned: Annotated[str, typer.Option(help="post-trained model(s) of the base, comma-separated")] = "",
    task: Annotated[str, typer.Option(help="task name (organism, organism-nl, jsonl:FILE, ...); default: the task "
                                           "the base is registered with")] = "",
    scale: Annotated[str, typer.Option(help="larger bases for the parameter axis (and EFT), comma-separated")] = "",
    out: Annotated[Path | None, typer.Option(help="folder for figures, report.json and report.html (default: "
                                                  "figures, or reports/<tuned>-vs-<base> for a pair)")] = None,
    n: Annotated[int, typer.Option(help="problems per step count")] = 200,
    max_new_tokens: Annotated[int, typer.Option(help="tokens each analysis generates per problem (0: each "
                                                     "analysis' own default)")] = 0,
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    sections: Annotated[str, typer.Option(help="comma-separated sections to run (default: all)")] = "",
    device: Annotated[str, typer.Option(help="where a pair's models run: cpu, cuda, cuda:1, ...")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16 (bfloat16 for real pairs on a GPU)")]
    = "float32",
    results: Annotated[str | None, typer.Option(help="where to write RESULTS.md ('' for nowhere; default: "
                                                     "RESULTS.md for the zoo's report into figures/, else "
                                                     "OUT/RESULTS.md)")] = None,
    render_only: Annotated[bool, typer.Option("--render-only", help="re-render report.html and RESULTS.md from "
                                                                    "OUT/report.json, running nothing")] = False,
    seeds: Annotated[str, typer.Option(help="recheck every finding on these seeds' replicas of the zoo, e.g. 0,1,2 "
                                            "(the 'What holds across seeds' section; zoo only)")] = "",
    jobs: Annotated[int, typer.Option(help="sections run at once, each in its own process (0: one per CPU for a "
                                           "report on the CPU, 1 on a GPU)")] = 0,
    ray: RayOption = None,
) -> None:
    """Run every analysis on a base/tuned pair and a task (the first zoo by default); write figures (HTML and
    PNG), report.json, report.html and RESULTS.md. Sections that cannot run on the pair or task say why."""
    import re

    from analyses import report as rep

    try:
        split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
        only = split(sections) or None
        if seeds and base:
            raise ValueError("--seeds rechecks the first zoo's findings on its seed replicas: it takes no --base/--tuned")
        if bool(base) != bool(tuned):
            raise ValueError("--base and --tuned go together: name both (or neither, for the first zoo's report)")
        if base:
            config = rep.ReportConfig.pair(base, split(tuned), task or None, split(scale), n_per_step=n, png=png,
                                           sections=only, max_new_tokens=max_new_tokens or None, device=device,
                                           dtype=dtype)
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{'+'.join(config.tuned)}-vs-{base}").strip("_")
            out = out or Path("reports") / slug
            results = str(out / "RESULTS.md") if results is None else results
        else:
            if task or scale or max_new_tokens or device != "cpu" or dtype != "float32":
                raise ValueError("--task, --scale, --max-new-tokens, --device and --dtype need --base and --tuned")
            config = rep.ReportConfig(n_per_step=n, png=png, sections=only, seeds=parse_seeds(seeds))
            if results is None:  # the project's RESULTS.md is written only from the project's figures folder
                results = "RESULTS.md" if out is None else str(out / "RESULTS.md")
            out = out or Path("figures")
        if render_only:
            path = rep.render_only(out, results or None)
        else:
            from analyses.report_jobs import default_jobs

            if jobs < 0:
                raise ValueError(f"--jobs must be 0 (one per CPU) or more, got {jobs}")
            path = rep.build_report(out, results=results or None, config=config, jobs=jobs or default_jobs(device),
                                    ray=ray_spec(ray))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    console.print(f"report: {path}" + (f", results: {results}" if results else ""))
