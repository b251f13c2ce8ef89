"""`interp harvest`, `interp store ...`, `interp probe ...`, `interp analyze latent-reasoning`: activations and probes."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from interp.cli.common import (
    RayCpus,
    RayGpus,
    RayOption,
    analyze_app,
    app,
    console,
    fail,
    parse_steps,
    ray_spec,
    table_console,
)

store_app = typer.Typer(help="Activation stores: merge harvested parts, describe a store.", no_args_is_help=True)
probe_app = typer.Typer(help="Linear probes on stored activations: train a sweep, show it, apply a probe.",
                        no_args_is_help=True)
app.add_typer(store_app, name="store")
app.add_typer(probe_app, name="probe")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def expand_hooks(spec: str, valid: list[str]) -> list[str]:
    """Comma-separated hook names; `*` patterns (e.g. `blocks.*.hook_resid_post`) expand in layer order."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if any(c in part for c in "*?["):
            hits = [h for h in valid if fnmatch.fnmatchcase(h, part)]
            if not hits:
                raise ValueError(f"no hook matches {part!r}; hooks look like blocks.0.hook_resid_post")
            hits.sort(key=lambda h: (int(h.split(".")[1]) if h.startswith("blocks.") else -1, h))
            out += hits
        else:
            out.append(part)
    return list(dict.fromkeys(out))


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--shard takes i/N like 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise typer.BadParameter(f"--shard i/N needs 0 <= i < N, got {text!r}")
    return i, n


def _texts_dataset(model: Any, path: Path) -> Any:
    """One prompt per line, or JSON lines {"text": ..., "meta": {...}}."""
    from interp.activations import PromptDataset

    texts, metas = [], []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i + 1} is not valid JSON ({e})") from None
            if "text" not in obj:
                raise ValueError(f"{path}:{i + 1} has no \"text\" field")
            texts.append(obj["text"])
            metas.append(obj.get("meta", {}))
        else:
            texts.append(line)
            metas.append({})
    if not texts:
        raise ValueError(f"{path} holds no prompts")
    return PromptDataset.from_texts(model.tokenizer, texts, metas, max_len=model.n_ctx)


@app.command("harvest")
def harvest_cmd(
    model: Annotated[str, typer.Argument(help="organism name, local HF folder or cached hub id")],
    hooks: Annotated[str, typer.Option(help="comma-separated hooks; * patterns allowed, e.g. 'blocks.*.hook_resid_post'")],
    out: Annotated[Path, typer.Option(help="store folder (resumed if it holds the same harvest)")],
    positions: Annotated[str, typer.Option(help="all | last | indices:-1,-2 | tokens:=,; | named:answer,step1.value[:skip]")] = "last",
    texts: Annotated[Path | None, typer.Option(help="prompts file (lines, or JSON lines with text/meta); default: organism problems")] = None,
    problems: Annotated[int, typer.Option(help="organism problems to sample (without --texts)")] = 1000,
    steps: Annotated[str, typer.Option(help="organism step counts")] = "1,2,3,4",
    fmt: Annotated[str, typer.Option("--format", help="prompt | direct | concise | verbose (text after the prompt)")] = "prompt",
    seed: Annotated[int, typer.Option(help="problem sampling seed (recorded in the manifest)")] = 0,
    batch_size: int = 64,
    shard_size: Annotated[int, typer.Option(help="examples per shard")] = 1024,
    shard: Annotated[str, typer.Option(help="harvest part i of N (i/N); merge the parts with `interp store merge`")] = "0/1",
    dtype: Annotated[str, typer.Option(help="float32 | float16 | bfloat16")] = "float32",
    overwrite: bool = False,
    ray: RayOption = None,
    ray_cpus: RayCpus = 1,
    ray_gpus: RayGpus = 0,
) -> None:
    """Harvest activations at hooks and positions into a sharded store (resumable, shardable; --ray: one Ray
    task per shard, the same store bytes)."""
    from interp.activations import harvest, parse_selector
    from interp.models import load

    part = _parse_shard(shard)
    try:
        m = load(model)
        selector = parse_selector(positions)
        hook_list = expand_hooks(hooks, m.hook_names)
        if texts is not None:
            dataset = _texts_dataset(m, texts)
        else:
            from interp.organism.dataset import problem_dataset
            from interp.organism.task import FORMATS, TaskConfig, sample_problems

            if fmt != "prompt" and fmt not in FORMATS:
                raise ValueError(f"--format must be prompt or one of {FORMATS}, got {fmt!r}")
            st = parse_steps(steps)
            probs = sample_problems(seed, problems, TaskConfig(min_steps=min(st), max_steps=max(st)))
            dataset = problem_dataset(probs, m, None if fmt == "prompt" else fmt)  # type: ignore[arg-type]
        with _progress() as bar:
            task = bar.add_task(f"harvesting {len(hook_list)} hook(s) of {model}", total=None)
            store = harvest(m, dataset, hook_list, selector, out, batch_size=batch_size, shard_size=shard_size,
                            dtype=dtype, seed=seed, shard=part, overwrite=overwrite,
                            progress=lambda d, t: bar.update(task, completed=d, total=t), ray=ray_spec(ray),
                            num_cpus=ray_cpus, num_gpus=ray_gpus)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    console.print(f"{store}")


@store_app.command("merge")
def store_merge(
    parts: Annotated[list[Path], typer.Argument(help="folders harvested with --shard i/N")],
    out: Annotated[Path, typer.Option(help="the merged store")],
) -> None:
    """Join parts harvested with --shard into one complete store (byte-identical to a single run)."""
    from interp.activations import merge

    try:
        store = merge(parts, out)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    console.print(f"{store}")


@store_app.command("info")
def store_info(path: Annotated[Path, typer.Argument(help="store folder")]) -> None:
    """Print a store's manifest summary as JSON."""
    from interp.activations import ActivationStore

    try:
        s = ActivationStore.open(path, allow_partial=True)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    m = s.manifest
    print(json.dumps({"model": m["model_name"], "checksum": m["model_checksum"], "hooks": m["hooks"],
                      "labels": m["labels"], "rows": s.n_rows, "examples": m["n_examples"], "dtype": m["dtype"],
                      "shards_done": len(m["shards"]), "n_shards": m["n_shards"], "complete": s.complete,
                      "dataset_hash": m["dataset_hash"], "seed": m["seed"]}, indent=2))


def _cell_table(result: Any, title: str) -> Table:
    table = Table(title=title)
    for col in ("hook", "position", "target", "n test", "score [95% CI]", "control", "selectivity [95% CI]"):
        table.add_column(col, justify="right" if col not in ("hook", "position", "target") else "left")
    for c in result.cells:
        table.add_row(c.hook, c.label, c.target, str(c.n_test),
                      f"{c.score.value:.3f} [{c.score.ci[0]:.2f}, {c.score.ci[1]:.2f}]", f"{c.control.value:.3f}",
                      f"{c.selectivity:+.3f} [{c.selectivity_ci[0]:+.2f}, {c.selectivity_ci[1]:+.2f}]")
    return table


@probe_app.command("train")
def probe_train(
    config: Annotated[Path, typer.Argument(help="JSON file with ProbeJobConfig fields (store, targets, out, ...)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the result as one JSON object")] = False,
    ray: RayOption = None,
    ray_cpus: RayCpus = 1,
) -> None:
    """Fit a probe (and its control) per hook x position x target; resumes after a kill (--ray: one Ray task per
    cell, the same cells; the store is read at its path on the workers)."""
    from probes import ProbeJobConfig, run

    try:
        cfg = ProbeJobConfig.from_dict(json.loads(config.read_text()))
        with _progress() as bar:
            task = bar.add_task("probing", total=None)
            result = run(cfg, progress=lambda i, n, name: bar.update(task, completed=i, total=n,
                                                                      description=f"probing {name[:60]}"),
                         ray=ray_spec(ray), num_cpus=ray_cpus)
    except (ValueError, FileNotFoundError, OSError, json.JSONDecodeError) as e:
        fail(e)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        table_console().print(_cell_table(result, f"probes on {result.model_name} -> {cfg.out}"))


@probe_app.command("show")
def probe_show(out: Annotated[Path, typer.Argument(help="a probe job's output folder")]) -> None:
    """Print the table of a finished probe job."""
    from interp.io import read_json
    from probes import SweepResult

    if not (out / "result.json").is_file():
        fail(FileNotFoundError(f"{out} has no result.json: run `interp probe train` first (it resumes)"))
    result = SweepResult.from_dict(read_json(out / "result.json"))
    table_console().print(_cell_table(result, f"probes on {result.model_name}"))


@probe_app.command("apply")
def probe_apply(
    probe: Annotated[Path, typer.Argument(help="a saved probe (.json or .safetensors or their stem)")],
    store: Annotated[Path, typer.Argument(help="an activation store")],
    target: Annotated[str | None, typer.Option(help="metadata key to score against (default: the probe's)")] = None,
    allow_other_model: Annotated[bool, typer.Option(help="score another model's activations (transfer)")] = False,
    n_boot: int = 1000,
) -> None:
    """Score a saved probe on a store's activations at the probe's hook and position, as JSON."""
    from interp.activations import ActivationStore
    from probes import Probe, rows_for, score

    try:
        p = Probe.load(probe)
        s = ActivationStore.open(store)
        tgt = target or p.info["target"]
        x, y, groups, _ = rows_for(s, p.info["hook"], p.info["label"], tgt)
        if not y:
            raise ValueError(f"no rows of {p.info['label']!r} in {store} carry the target {tgt!r}")
        sc, _ = score(p, x, y, groups, n_boot, checksum=s.model_checksum, allow_other_model=allow_other_model)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    print(json.dumps({"probe": str(probe), "store": str(store), "target": tgt, "model": s.model_name,
                      "same_model": s.model_checksum == p.info.get("model_checksum"), **sc.to_dict()}))


@analyze_app.command("latent-reasoning")
def analyze_latent(
    models: Annotated[str, typer.Option(help="comma-separated models (the base first is not required)")] =
        "organism/base-s,organism/sft,organism/rl,organism/dpo,organism/base-m,organism/base-l",
    base: Annotated[str, typer.Option(help="the model whose probes are transferred")] = "organism/base-s",
    n_per_step: Annotated[int, typer.Option(help="problems per step count (2, 3, 4 steps)")] = 400,
    out: Annotated[Path, typer.Option(help="folder for the figures and latent_reasoning.json")] = Path("figures"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    seed: Annotated[int, typer.Option(help="probe split / control seed")] = 0,
    task: Annotated[str, typer.Option(help="task (organism, organism-nl, jsonl:FILE, ...); default: the task the "
                                           "base is registered with, else organism")] = "",
) -> None:
    """Probe each model for the chain's intermediate values per layer, transfer the base's probes, and
    read the CoT decision; figures and one sentence per number."""
    import dataclasses

    from analyses import latent_reasoning as lr
    from interp.io import write_json
    from interp.registry import default_task

    cfg = dataclasses.replace(lr.LatentConfig(), models=tuple(m.strip() for m in models.split(",") if m.strip()),
                              base=base, n_per_step=n_per_step, probe_seed=seed,
                              task=task or default_task(base) or "organism")
    try:
        result = lr.run_cached(cfg)
        write_json(out / "latent_reasoning.json", result.to_dict())
        lr.figures(result, out, png=png)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        fail(e)
    for line in lr.summary_sentences(result):
        print(f"- {line}")
