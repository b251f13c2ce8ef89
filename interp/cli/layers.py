"""`interp analyze layers BASE TUNED` (where fine-tuning acts) and `interp bench layers` (memory and time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from interp.cli.common import analyze_app, console, fail, parse_steps


def parse_blocks(text: str) -> tuple[tuple[int, int], ...] | str:
    """`0:2,2:4` -> ((0, 2), (2, 4)): half-open layer blocks [start, end); `all` or `single` pass through."""
    if text.strip() in ("all", "single"):
        return text.strip()
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            a, b = part.split(":")
            out.append((int(a), int(b)))
        except ValueError:
            raise typer.BadParameter(f"--blocks takes half-open layer ranges START:END separated by commas, "
                                     f"like 0:2,3:4; got {part!r}") from None
    if not out:
        raise typer.BadParameter("--blocks needs at least one START:END range")
    return tuple(out)


@analyze_app.command("layers")
def layers(
    base: Annotated[str, typer.Argument(help="base model: organism name, local HF folder or cached hub id")],
    tuned: Annotated[str, typer.Argument(help="post-trained model of the same shape and vocabulary")],
    large: Annotated[str, typer.Option(help="large base for emulated fine-tuning ('' to skip EFT)")] = "organism/base-l",
    tuned_large: Annotated[str, typer.Option(help="post-trained large model, for down-scaling EFT")] = "",
    steps: Annotated[str, typer.Option(help="comma-separated step counts")] = "1,2,3,4",
    n: Annotated[int, typer.Option(help="problems per step count")] = 40,
    task: Annotated[str, typer.Option(help="task (organism, organism-nl, jsonl:FILE, ...); default: the task the "
                                           "base is registered with, else organism")] = "",
    blocks: Annotated[str, typer.Option(help="grafting blocks START:END,..., or 'single' (each layer alone) or "
                                             "'all' (every contiguous block, the default)")] = "",
    parts: Annotated[str, typer.Option(help="comma-separated parts of weights, representations, logit_lens, "
                                            "grafting, ablation, eft (default: all that apply)")] = "",
    texts: Annotated[Path | None, typer.Option(help="prompts, one per line, for a pair that is not the organism: "
                                                    "representations and grafting (KL) run on them")] = None,
    out: Annotated[Path, typer.Option(help="folder for the result JSON and figures")] = Path("figures/layers"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    cache: Annotated[bool, typer.Option(help="reuse a cached result for the same weights and config")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """Weight and representation change per layer, logit lens, grafting, ablation and EFT for one pair."""
    import torch

    from analyses.layer_changes.analysis import (
        PARTS,
        TASK_ONLY_PARTS,
        LayerChangesConfig,
        run,
    )
    from analyses.layer_changes.figures import figures, short, summary_sentences
    from interp.io import write_json
    from interp.organism.evaluate import EvalConfig
    from interp.registry import default_task

    torch.set_num_threads(1)
    try:
        prompts = None
        if texts is not None:
            prompts = tuple(line.strip() for line in texts.read_text().splitlines() if line.strip())
            if not prompts:
                raise ValueError(f"{texts} holds no prompts (one per line)")
        chosen = tuple(p.strip() for p in parts.split(",") if p.strip()) or tuple(
            p for p in PARTS if prompts is None or p not in TASK_ONLY_PARTS)
        cfg = LayerChangesConfig(
            base=base, tuned=tuned, large=large or None, tuned_large=tuned_large or None,
            eval=EvalConfig(steps=parse_steps(steps), n_per_step=n),
            blocks=parse_blocks(blocks) if blocks else None, parts=chosen, texts=prompts,
            task=task or default_task(base) or "organism")
        result = run(cfg, progress=True, use_cache=cache)
        stem = f"layers_{short(base)}_{short(tuned)}"
        write_json(out / f"{stem}.json", result.to_dict())
        paths = figures(result, out, png=png, prefix=stem)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        fail(e)
    sentences = summary_sentences(result)
    if as_json:
        print(json.dumps({"base": base, "tuned": tuned, "checksums": result.checksums, "seconds": result.seconds,
                          "summary": sentences, "result": str(out / f"{stem}.json")}))
        return
    for s in sentences:
        Console().print(f"- {s}", soft_wrap=True)
    console.print(f"result: {out / f'{stem}.json'}; figures: {', '.join(p[0].name for p in paths.values())}")


__all__ = ["layers", "parse_blocks"]
