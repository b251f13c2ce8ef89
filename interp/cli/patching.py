"""`interp patch` (activation patching of one prompt pair), `interp analyze faithfulness` and `interp bench patch`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
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
)


def _ints(text: str, what: str) -> list[int] | None:
    if not text.strip():
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--{what} takes comma-separated integers like 0,1,2; got {text!r}") from None


@app.command("patch")
def patch_cmd(
    model: Annotated[str, typer.Argument(help="organism name, local HF folder or cached hub id")],
    clean: Annotated[str, typer.Option(help="the clean prompt (activations are taken from it)")],
    corrupt: Annotated[str, typer.Option(help="the corrupted prompt (activations are patched into it)")],
    answer: Annotated[str, typer.Option(help="the clean answer as it follows the prompt, e.g. ' 8' on BPE "
                                             "tokenizers (multi-token answers are read at their first token)")],
    wrong: Annotated[str, typer.Option(help="the corrupted answer, likewise (logit_diff)")] = "",
    metric: Annotated[str, typer.Option(help="logit_diff | prob | kl")] = "logit_diff",
    hook: Annotated[str, typer.Option(help="TransformerLens name or pattern (blocks.*.hook_resid_pre, "
                                           "blocks.2.attn.hook_z) or a kind: resid_pre|resid_mid|resid_post|"
                                           "attn_out|mlp_out|z")] = "blocks.*.hook_resid_pre",
    layers: Annotated[str, typer.Option(help="comma-separated layers (default all)")] = "",
    positions: Annotated[str, typer.Option(help="comma-separated positions in the corrupted prompt, negative from "
                                                "the end (default all)")] = "",
    heads: Annotated[str, typer.Option(help="comma-separated heads, for z (default all)")] = "",
    align: Annotated[str, typer.Option(help="clean position of each patched position (prompts of unequal length)")] = "",
    attribution: Annotated[bool, typer.Option("--attribution", help="also run attribution patching and compare")] = False,
    out: Annotated[Path, typer.Option(help="folder for the result (safetensors) and the heatmap")] = Path("figures/patch"),
    png: Annotated[bool, typer.Option(help="also write a PNG (needs a Chrome)")] = True,
) -> None:
    """Exact activation patching of every (layer, position[, head]) cell from CLEAN into CORRUPT."""
    import torch

    from interp.models import load
    from interp.patching import (
        answer_prob,
        attribution_agreement,
        attribution_patch,
        exact_patch,
        kl_div,
        logit_diff,
    )

    torch.set_num_threads(1)
    try:
        m = load(model)

        def tid(t: str) -> int:
            ids = m.answer_ids(corrupt, t)
            if len(ids) > 1:
                console.print(f"[yellow]{t!r} is {len(ids)} tokens: the metric reads its first token[/]")
            return ids[0]

        if metric == "logit_diff":
            if not wrong:
                raise ValueError("--metric logit_diff needs --wrong (the corrupt answer token)")
            met = logit_diff(tid(answer), tid(wrong))
        elif metric == "prob":
            met = answer_prob(tid(answer))
        elif metric == "kl":
            met = kl_div(m.hf(m.to_tokens(clean)).logits[0, -1])
        else:
            raise ValueError(f"unknown metric {metric!r}: logit_diff, prob or kl")
        kw = {"hook": hook, "layers": _ints(layers, "layers"), "positions": _ints(positions, "positions"),
                  "heads": _ints(heads, "heads"), "align": _ints(align, "align")}
        res = exact_patch(m, clean, corrupt, met, **kw)  # type: ignore[arg-type]
        attr = attribution_patch(m, clean, corrupt, met, **kw) if attribution else None  # type: ignore[arg-type]
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"patch_{res.hook}"
    res.save(stem)
    res.save_figure(stem, png=png)
    table = Table(title=f"{model}: {hook}, {met.name}; clean {res.clean:.3f}, corrupt {res.corrupt:.3f} "
                        f"({res.values.numel()} cells in {res.seconds:.2f} s)")
    for col in ("layer", "pos", "token", *(["head"] if res.heads is not None else []), "effect", "normalised"):
        table.add_column(col, justify="right")
    eff = res.effects
    gap = res.clean - res.corrupt
    for flat in eff.abs().flatten().argsort(descending=True)[:12].tolist():
        idx = list(divmod(flat, eff.shape[-1])) if eff.ndim == 2 else \
            [flat // (eff.shape[1] * eff.shape[2]), (flat // eff.shape[2]) % eff.shape[1], flat % eff.shape[2]]
        v = float(eff[tuple(idx)])
        row = [str(res.layers[idx[0]]), str(res.positions[idx[1]]), res.position_labels[idx[1]]]
        if res.heads is not None:
            row.append(str(res.heads[idx[2]]))
        table.add_row(*row, f"{v:+.3f}", f"{v / gap:+.2f}" if abs(gap) > 1e-9 else "n/a")
    Console().print(table)
    if attr is not None:
        attr.save(out / f"attribution_{res.hook}")
        console.print(f"attribution vs exact: {json.dumps(attribution_agreement(res, attr))}")
    console.print(f"result: {stem}.safetensors, figure: {stem}.html")


@app.command("patch-pairs")
def patch_pairs_cmd(
    model: Annotated[str, typer.Argument(help="organism name, local HF folder or cached hub id")],
    pairs: Annotated[Path, typer.Argument(help='JSON lines {"clean": ..., "corrupt": ..., "answer": ..., "wrong": ...} '
                                               "(metric: logit_diff of answer over wrong, read at the first token)")],
    hook: Annotated[str, typer.Option(help="TransformerLens name, pattern or kind, as for interp patch")] =
        "blocks.*.hook_resid_pre",
    out: Annotated[Path, typer.Option(help="folder: pair-NNNN.safetensors per pair and summary.json")] =
        Path("figures/patch-pairs"),
    ray: RayOption = None,
    ray_cpus: RayCpus = 1,
    ray_gpus: RayGpus = 0,
) -> None:
    """Exact patching grids of many prompt pairs (--ray: one Ray task per pair, the same grids); each saved, and the
    mean normalised effect per cell (pairs of equal length) with a bootstrap 95% interval."""
    import torch

    from interp.models import load
    from interp.patching import logit_diff, patch_pairs
    from interp.stats import bootstrap_ci

    torch.set_num_threads(1)
    try:
        m = load(model)
        rows = [json.loads(line) for line in pairs.read_text().splitlines() if line.strip()]
        missing = [i for i, r in enumerate(rows) if not {"clean", "corrupt", "answer", "wrong"} <= set(r)]
        if not rows or missing:
            raise ValueError(f"{pairs}: every line needs clean, corrupt, answer and wrong (lines {missing[:5]} do not)"
                             if rows else f"{pairs} holds no pairs")
        triples = [(r["clean"], r["corrupt"], logit_diff(m.answer_ids(r["corrupt"], r["answer"])[0],
                                                         m.answer_ids(r["corrupt"], r["wrong"])[0])) for r in rows]
        results = patch_pairs(m, triples, hook=hook, ray=ray_spec(ray), num_cpus=ray_cpus, num_gpus=ray_gpus)
    except (ValueError, FileNotFoundError, OSError, json.JSONDecodeError) as e:
        fail(e)
    out.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(results):
        r.save(out / f"pair-{i:04d}")
    summary: dict[str, object] = {"model": model, "hook": results[0].hook, "n_pairs": len(results)}
    if len({tuple(r.values.shape) for r in results}) == 1:  # grids of the same shape: mean over pairs
        import numpy as np

        shape = tuple(results[0].values.shape)
        norm = torch.stack([r.normalized for r in results]).flatten(1).double().numpy()
        mean = norm.mean(0)
        cis = [bootstrap_ci(norm[:, j], 1000) for j in range(norm.shape[1])]
        table = Table(title=f"{model}: {results[0].hook}, mean normalised effect over {len(results)} pairs")
        for col in (*results[0].axes, "mean [95% CI]"):
            table.add_column(col, justify="right")
        for j in np.argsort(-np.abs(mean))[:12]:
            idx = np.unravel_index(int(j), shape)
            names = (results[0].layers, results[0].positions, results[0].heads or ())
            table.add_row(*(str(names[a][i]) for a, i in enumerate(idx)),
                          f"{mean[j]:+.3f} [{cis[j][0]:+.2f}, {cis[j][1]:+.2f}]")
        Console().print(table)
        summary |= {"shape": list(shape), "axes": list(results[0].axes), "mean_normalized": mean.tolist(),
                    "mean_normalized_ci": [list(c) for c in cis]}
    (out / "summary.json").write_text(json.dumps(summary))
    console.print(f"{len(results)} grids in {out}")


@analyze_app.command("faithfulness")
def faithfulness_cmd(
    models: Annotated[str, typer.Option(help="comma-separated models")] = "organism/base-s,organism/sft,organism/rl,organism/dpo",
    forced_cot: Annotated[str, typer.Option(help="models forced to start a CoT")] = "organism/base-s",
    steps: Annotated[str, typer.Option(help="comma-separated step counts")] = "1,2,3,4",
    n: Annotated[int, typer.Option(help="problems per step count")] = 100,
    n_patch: Annotated[int, typer.Option(help="CoTs per step count for step-level patching")] = 16,
    out: Annotated[Path, typer.Option(help="folder for the result JSON and figures")] = Path("figures/faithfulness"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary sentences as one JSON object")] = False,
) -> None:
    """Early answering, mistakes, paraphrase, filler and step-level patching on each model's own CoTs."""
    import torch

    from analyses.faithfulness.analysis import FaithfulnessConfig, run
    from analyses.faithfulness.figures import figures, summary_sentences
    from interp.io import write_json

    torch.set_num_threads(1)
    try:
        cfg = FaithfulnessConfig(models=tuple(x.strip() for x in models.split(",") if x.strip()),
                                 forced_cot=tuple(x.strip() for x in forced_cot.split(",") if x.strip()),
                                 steps=parse_steps(steps), n_per_step=n, n_patch=n_patch)
        result = run(cfg)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    write_json(out / "faithfulness.json", result.to_dict())
    paths = figures(result, out, png=png)
    sentences = summary_sentences(result)
    if as_json:
        print(json.dumps({"result": str(out / "faithfulness.json"), "sentences": sentences}))
        return
    for s in sentences:
        console.print(s + "\n")
    console.print(f"figures: {', '.join(str(p[0]) for p in paths.values())}")
