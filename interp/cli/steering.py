"""`interp steer ...` (directions from paired texts, steered generation), `interp analyze verbosity`,
`interp analyze reasoning-direction`, `interp bench steer`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from interp.cli.common import analyze_app, app, console, fail, table_console

steer_app = typer.Typer(help="Steering: directions from paired texts, generation with interventions.",
                        no_args_is_help=True)
app.add_typer(steer_app, name="steer")

OPS = ("add", "subtract", "project", "clamp")


def parse_where(text: str):
    """`generated` | `prompt` | `all` | `last` | `positions:0,-1`."""
    from interp.steering import Positions

    if text in ("generated", "prompt", "all"):
        return text
    if text == "last":
        return Positions((-1,))
    if text.startswith("positions:"):
        try:
            return Positions(tuple(int(x) for x in text.split(":", 1)[1].split(",") if x.strip()))
        except ValueError:
            raise typer.BadParameter(f"positions take integers, e.g. positions:0,-1; got {text!r}") from None
    raise typer.BadParameter(f"--where takes generated, prompt, all, last or positions:I,J; got {text!r}")


@steer_app.command("direction")
def steer_direction(
    model: Annotated[str, typer.Argument(help="organism name, local HF folder or cached hub id")],
    positive: Annotated[Path, typer.Option(help="texts on the positive side (lines, or JSON lines with text/meta)")],
    negative: Annotated[Path, typer.Option(help="texts on the negative side (same count and order when paired)")],
    out: Annotated[Path, typer.Option(help="folder for <hook>.mean_difference / .pca vectors (.safetensors + .json)")],
    hooks: Annotated[str, typer.Option(help="comma-separated hooks; * patterns allowed")] = "blocks.*.hook_resid_post",
    positions: Annotated[str, typer.Option(help="all | last | indices:-1,-2 | tokens:=,; (mean over the selected positions of each text)")] = "last",
    unpaired: Annotated[bool, typer.Option(help="the two files are not pairs: no PCA of differences")] = False,
    test_fraction: Annotated[float, typer.Option(help="held-out share for the AUROC check")] = 0.3,
    seed: int = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
) -> None:
    """Directions positive - negative at every hook (difference of means; first PC of paired differences),
    with held-out projection AUROC against random directions of equal norm."""
    from interp.activations import parse_selector
    from interp.cli.activations import _texts_dataset, expand_hooks
    from interp.models import load
    from interp.steering.directions import directions_from_texts

    try:
        m = load(model)
        hook_list = expand_hooks(hooks, m.hook_names)
        ds = directions_from_texts(m, _texts_dataset(m, positive), _texts_dataset(m, negative), hook_list,
                                   parse_selector(positions), paired=not unpaired, test_fraction=test_fraction, seed=seed,
                                   provenance={"positive": str(positive), "negative": str(negative),
                                               "positions": positions})
        out.mkdir(parents=True, exist_ok=True)
        for h in ds.hooks:
            h.mean_diff.save(out / f"{h.hook}.mean_difference")
            if h.pca is not None:
                h.pca.save(out / f"{h.hook}.pca")
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    if as_json:
        print(json.dumps(ds.to_dict()))
        return
    t = Table(title=f"directions ({'paired' if ds.paired else 'unpaired'}; {ds.n_train} train / {ds.n_test} held-out texts)")
    for c in ("hook", "norm", "AUROC mean diff", "AUROC PCA", "AUROC random (mean / max)", "cos(mean, PCA)"):
        t.add_column(c, justify="right")
    for h in ds.hooks:
        t.add_row(h.hook, f"{h.mean_diff.norm:.3f}", f"{h.auroc_mean_diff:.3f}",
                  "-" if h.auroc_pca is None else f"{h.auroc_pca:.3f}", f"{h.auroc_random:.3f} / {h.auroc_random_max:.3f}",
                  "-" if h.cosine_mean_pca is None else f"{h.cosine_mean_pca:.3f}")
    table_console().print(t)
    console.print(f"vectors written to {out}/")


@steer_app.command("generate")
def steer_generate(
    model: Annotated[str, typer.Argument(help="organism name, local HF folder or cached hub id")],
    vector: Annotated[list[Path], typer.Option(help="a saved steering vector (stem, .json or .safetensors); repeatable")],
    prompt: Annotated[list[str], typer.Option(help="a prompt; repeatable")],
    op: Annotated[str, typer.Option(help="add | subtract | project | clamp")] = "add",
    scale: Annotated[float, typer.Option(help="multiplier of the vector (add/subtract)")] = 1.0,
    value: Annotated[float, typer.Option(help="the component's value (clamp)")] = 0.0,
    where: Annotated[str, typer.Option(help="generated | prompt | all | last | positions:I,J")] = "generated",
    hook: Annotated[str | None, typer.Option(help="act at this hook instead of the vector's own")] = None,
    max_new_tokens: int = 64,
    allow_other_model: Annotated[bool, typer.Option(help="accept vectors read from another model")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Greedy completions with and without the interventions, side by side."""
    from interp.models import load
    from interp.steering import (
        Add,
        Clamp,
        ProjectOut,
        SteeringVector,
        Subtract,
        generate_steered,
    )

    if op not in OPS:
        raise typer.BadParameter(f"--op takes {', '.join(OPS)}; got {op!r}")
    try:
        m = load(model)
        w = parse_where(where)
        ivs = []
        for path in vector:
            v = SteeringVector.load(path)
            if op == "add":
                ivs.append(Add(v, w, hook, scale))
            elif op == "subtract":
                ivs.append(Subtract(v, w, hook, scale))
            elif op == "project":
                ivs.append(ProjectOut(v, w, hook))
            else:
                ivs.append(Clamp(v, w, hook, value))
        plain = m.generate(prompt, max_new_tokens=max_new_tokens)
        steered = generate_steered(m, prompt, ivs, allow_other_model, max_new_tokens=max_new_tokens)
    except (ValueError, FileNotFoundError, OSError, FloatingPointError) as e:
        fail(e)
    if as_json:
        print(json.dumps({"model": model, "interventions": [iv.describe() for iv in ivs],
                          "completions": [{"prompt": p, "unsteered": a, "steered": b}
                                          for p, a, b in zip(prompt, plain, steered)]}))
        return
    t = Table(title=f"{model}: " + "; ".join(f"{iv.describe()['kind']} at {iv.at}" for iv in ivs))
    for c in ("prompt", "unsteered", "steered", "tokens"):
        t.add_column(c)
    for p, a, b in zip(prompt, plain, steered):
        t.add_row(p, a, b, f"{len(a.split())} -> {len(b.split())}")
    table_console().print(t)


@analyze_app.command("verbosity")
def analyze_verbosity(
    model: Annotated[str, typer.Option(help="the model whose chains of thought are compressed")] = "organism/sft",
    base: Annotated[str, typer.Option(help="the model whose direction is transferred")] = "organism/base-s",
    n_pairs: Annotated[int, typer.Option(help="(verbose, concise) pairs for the direction")] = 50,
    n_test_per_step: Annotated[int, typer.Option(help="test problems per step count (1-4)")] = 50,
    kl_bound: Annotated[float, typer.Option(help="mean KL(steered || unsteered) per generated token allowed")] = 0.5,
    out: Annotated[Path, typer.Option(help="folder for the figures and verbosity.json")] = Path("figures"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    save_vectors: Annotated[bool, typer.Option(help="save the chosen directions under OUT/vectors/")] = True,
) -> None:
    """ASC on the zoo: a verbosity direction from paired CoTs, layer and gamma chosen on validation, tested
    against no steering, random directions, prompting the concise format and the base's direction."""
    import dataclasses

    from analyses.verbosity import analysis
    from analyses.verbosity.figures import verbosity_figures, verbosity_sentences
    from interp.io import write_json

    try:
        cfg = dataclasses.replace(analysis.VerbosityConfig(), model=model, base=base, n_pairs=n_pairs,
                                  n_test_per_step=n_test_per_step, kl_bound=kl_bound)
        r = analysis.run_cached(cfg)
        write_json(out / "verbosity.json", r.to_dict())
        verbosity_figures(r, out, png=png)
        if save_vectors:
            from interp.models import load

            dirs = analysis.directions(load(model), cfg)
            for pt in {p.variant + p.hook: p for p in (r.chosen, r.aggressive) if p is not None}.values():
                path = dirs[pt.variant].get(pt.hook).mean_diff.save(out / "vectors" / f"verbosity.{pt.variant}.{pt.hook}")
                console.print(f"direction for gamma {pt.gamma:+g}: {path}")
    except (ValueError, FileNotFoundError, OSError, RuntimeError, FloatingPointError) as e:
        fail(e)
    for line in verbosity_sentences(r):
        print(line)


@analyze_app.command("reasoning-direction")
def analyze_reasoning_direction(
    base: Annotated[str, typer.Option(help="the model steered into reasoning")] = "organism/base-s",
    tuned: Annotated[str, typer.Option(help="the post-trained model whose accuracy is the target")] = "organism/sft",
    n_test_per_step: Annotated[int, typer.Option(help="test problems per step count (3, 4)")] = 200,
    out: Annotated[Path, typer.Option(help="folder for the figures and reasoning_direction.json")] = Path("figures"),
    png: Annotated[bool, typer.Option(help="also write PNGs (needs a Chrome)")] = True,
    save_vectors: Annotated[bool, typer.Option(help="save the chosen direction under OUT/vectors/")] = True,
) -> None:
    """Add CoT-mode - direct-mode (at the prompt's last token) to the base: CoT rate, accuracy, gap recovered."""
    import dataclasses

    from analyses.verbosity import reasoning
    from analyses.verbosity.figures import reasoning_figures, reasoning_sentences
    from interp.io import write_json

    try:
        cfg = dataclasses.replace(reasoning.ReasoningConfig(), base=base, tuned=tuned, n_test_per_step=n_test_per_step)
        r = reasoning.run_cached(cfg)
        write_json(out / "reasoning_direction.json", r.to_dict())
        reasoning_figures(r, out, png=png)
        if save_vectors:
            from interp.models import load

            md = reasoning.mode_direction(load(base), cfg)
            path = md.dirs.get(r.chosen.hook).mean_diff.save(out / "vectors" / f"reasoning_mode.{r.chosen.hook}")
            console.print(f"direction ({r.chosen.mode} {r.chosen.gamma:+g} at {r.chosen.where}): {path}")
    except (ValueError, FileNotFoundError, OSError, RuntimeError, FloatingPointError) as e:
        fail(e)
    for line in reasoning_sentences(r):
        print(line)
