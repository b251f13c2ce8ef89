"""The report's layer-changes section: the analysis for each zoo pair (sft, rl, dpo vs base-s), its figures,
sentences with the numbers, and a table with one row per pair."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from analyses.layer_changes.analysis import LayerChangesConfig, LayerChangesResult, run
from analyses.layer_changes.figures import (
    figures,
    pair_table_html,
    short,
    summary_sentences,
)
from interp.io import write_json

ZOO_PAIRS = ("organism/sft", "organism/rl", "organism/dpo")
MAX_PER_STEP = 40  # keeps each pair's analysis under 3 minutes on 2 cores


def section_parts(out: Path, n_per_step: int, png: bool) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """Title, sentences, figure file names and table HTML of the section (run, or read from the cache)."""
    results: list[LayerChangesResult] = []
    sentences: list[str] = []
    names: list[str] = []
    for tuned in ZOO_PAIRS:
        cfg = LayerChangesConfig(tuned=tuned)
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, n_per_step=min(n_per_step, MAX_PER_STEP)))
        result = run(cfg)
        write_json(out / f"layers_{short(tuned)}.json", result.to_dict())
        names += [p[0].name for p in figures(result, out, png=png).values()]
        sentences += summary_sentences(result)
        results.append(result)
    n = results[0].config.eval.n_per_step
    steps = results[0].config.eval.steps
    intro = (f"Each zoo pair against base-s, on the same {n} problems per step count ({', '.join(map(str, steps))} "
             f"steps), greedy; intervals are 95% bootstrap intervals over problems. Grafting copies a block of the "
             f"tuned model's decoder layers into the base (and back); EFT decodes from log p_base-l + (log p_tuned - "
             f"log p_base-s).")
    return ("Where fine-tuning acts: layers, grafting, ablation, emulated fine-tuning", (intro, *sentences),
            tuple(names), pair_table_html(results))


__all__ = ["ZOO_PAIRS", "section_parts"]
