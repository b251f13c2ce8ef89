"""Activation-steered compression (ASC, arXiv 2507.04742) on any task and base/tuned pair (the zoo by default):
one verbosity direction from 50 (long, short) texts of the same problems, subtracted at every generated token
of the tuned model.

Pairs come from the task's formats (the organism's verbose vs concise; a JSONL task's `cot` vs `direct`; see
`pair_formats`) or are given as texts. Directions (long - short, difference of means) are read from the
residual stream after every layer, at two kinds of position: `last` (ASC's recipe: the last token of problem +
CoT; any task) and, on the organism, `decision` (the `=` after each step's target from step 2 on, where the
format of that step is chosen; step 1's context is the same in both texts) and `target`. Layer, gamma and sign
are chosen on a validation split (largest length reduction with accuracy, graded by the task, within
`accuracy_tolerance` of unsteered and mean KL(steered || unsteered) per generated token under `kl_bound`); the
test split compares the choice with no steering, random directions of equal norm, prompting the concise format
(organism: its first step forced, the value the model's own best digit) and the same direction read from the
base model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from analyses.verbosity.common import (
    Cell,
    Run,
    arrays,
    cell_of,
    chat_of,
    digest,
    forced_concise_prefixes,
    generate_graded,
    generate_graded_many,
    items_per_step,
    paired_bootstrap,
    steered_kl,
    teacher_forced_steps,
)
from interp.activations import Example, LastToken, Named, PromptDataset, Selector
from interp.benchmark import best_wall_and_cpu
from interp.hooks import resid_post
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.steering import Add, SteeringVector, Subtract
from interp.steering.directions import (
    DirectionSet,
    directions_from_texts,
    random_directions,
)
from interp.tasks.base import Item, Task
from interp.tasks.encode import encode_item, encode_text, task_dataset

if TYPE_CHECKING:
    from interp.models import Model

RESULT_VERSION = 5
VARIANTS = ("decision", "target", "last")
N_RANDOM = 3


@dataclass(frozen=True)
class VerbosityConfig:
    model: str = "organism/sft"
    base: str = "organism/base-s"
    n_pairs: int = 50
    pair_seed: int = 3_000_017
    val_seed: int = 3_100_019
    test_seed: int = 3_200_023
    steps: tuple[int, ...] = (1, 2, 3, 4)
    n_val_per_step: int = 50
    n_test_per_step: int = 50
    variants: tuple[str, ...] = VARIANTS
    gammas: tuple[float, ...] = (0.125, 0.25, 0.375, 0.4375, 0.5, 0.625, 0.75, 1.0, 1.5)
    accuracy_tolerance: float = 0.01
    kl_bound: float = 0.5
    max_invalid_aggressive: float = 0.05
    n_boot: int = 1000
    seed: int = 0
    max_new_tokens: int = 72
    batch_size: int = 400
    timing_repeats: int = 5
    latency_problems: int = 40
    task: str = "organism"
    pair_formats: tuple[str, ...] = ()  # (long, short) formats of the task; () = verbose/concise, else cot/direct
    cache_dir: str = field(default_factory=lambda: str(cache_dir("verbosity")))

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"unknown direction variants {bad}; known: {', '.join(VARIANTS)}")
        if self.n_pairs < 4:
            raise ValueError(f"need at least 4 pairs (a held-out split validates the direction), got {self.n_pairs}")
        if not self.gammas or any(g <= 0 for g in self.gammas):
            raise ValueError(f"gammas must be positive (both signs are swept), got {self.gammas}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VerbosityConfig:
        d = dict(d)
        for k in ("steps", "variants", "gammas", "pair_formats"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def key(self) -> dict[str, Any]:
        d = {k: v for k, v in self.to_dict().items() if k != "cache_dir"}
        if d["task"] == "organism" and not d["pair_formats"]:  # the zoo's defaults keep their cached results
            del d["task"], d["pair_formats"]
        return d


@dataclass(frozen=True)
class SweepCell:
    variant: str
    hook: str
    gamma: float  # signed: negative subtracts the verbose - concise direction (compresses if the sign is right)
    cell: Cell

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "hook": self.hook, "gamma": self.gamma, "cell": self.cell.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepCell:
        return cls(d["variant"], d["hook"], d["gamma"], Cell.from_dict(d["cell"]))


@dataclass(frozen=True)
class VerbosityResult:
    config: VerbosityConfig
    model_checksum: str
    base_checksum: str
    directions: dict[str, dict[str, Any]]  # "<model>/<variant>" -> DirectionSet.to_dict()
    base_cosines: dict[str, dict[str, float]]  # variant -> hook -> cos(sft direction, base direction)
    val_unsteered: Cell
    sweep: tuple[SweepCell, ...]
    chosen: SweepCell | None
    aggressive: SweepCell | None
    test: dict[str, Cell]
    reduction: dict[str, dict[str, Any]]  # test condition -> reduction %, accuracy change, with paired CIs
    speed: dict[str, float]
    seconds: float
    libraries: dict[str, str]
    teacher_forced: dict[str, dict[str, Any]] = field(default_factory=dict)  # format -> step accuracy on a correct chain

    def to_dict(self) -> dict[str, Any]:
        return {"version": RESULT_VERSION, "config": self.config.to_dict(), "model_checksum": self.model_checksum,
                "teacher_forced": self.teacher_forced,
                "base_checksum": self.base_checksum, "directions": self.directions, "base_cosines": self.base_cosines,
                "val_unsteered": self.val_unsteered.to_dict(), "sweep": [s.to_dict() for s in self.sweep],
                "chosen": self.chosen.to_dict() if self.chosen else None,
                "aggressive": self.aggressive.to_dict() if self.aggressive else None,
                "test": {k: v.to_dict() for k, v in self.test.items()}, "reduction": self.reduction,
                "speed": self.speed, "seconds": self.seconds, "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VerbosityResult:
        sc = lambda x: SweepCell.from_dict(x) if x else None
        return cls(VerbosityConfig.from_dict(d["config"]), d["model_checksum"], d["base_checksum"], d["directions"],
                   d["base_cosines"], Cell.from_dict(d["val_unsteered"]),
                   tuple(SweepCell.from_dict(s) for s in d["sweep"]), sc(d["chosen"]), sc(d["aggressive"]),
                   {k: Cell.from_dict(v) for k, v in d["test"].items()}, d["reduction"], d["speed"], d["seconds"],
                   d["libraries"], d.get("teacher_forced", {}))


# ------------------------------------------------------------------------------------------ pairs

ORGANISM_VARIANTS = VARIANTS  # `decision` and `target` need the organism's step layout; any task has `last`


def pair_formats(task: Task, cfg: VerbosityConfig) -> tuple[str, str]:
    """(long, short) reference formats whose texts make the pairs: the config's, else the task's `verbose` and
    `concise` (the organism), else its first chain-of-thought format and `direct` (e.g. JSONL's `cot`/`direct`)."""
    if cfg.pair_formats:
        if len(cfg.pair_formats) != 2:
            raise ValueError(f"pair_formats takes two formats (long, short), got {cfg.pair_formats}")
        for f in cfg.pair_formats:
            task.check_formats(f)
        return cfg.pair_formats[0], cfg.pair_formats[1]
    if {"verbose", "concise"} <= set(task.formats):
        return "verbose", "concise"
    if not task.cot_formats:
        raise ValueError(f"task {task.name!r} has no chain-of-thought format to pair with 'direct'; pass "
                         f"pair_formats or your own text pairs")
    return task.cot_formats[0], "direct"


def decision_spans(item: Item, task: Task, fmt: str) -> dict[str, tuple[int, int]]:
    """Organism: `step{i}.eq`, the `=` after step i's target in the written CoT (the token before the format
    choice), and `step{i}.target`, the target itself (the next token is `=` in both formats), as character
    spans over prompt + completion (so any tokenizer finds them)."""
    from interp.organism.reasoning_task import item_problem

    p = item_problem(item)
    per = 4 if fmt == "concise" else 12
    text = task.prompt(item) + task.completion(item, fmt)
    words, at = [], 0
    for w in text.split(" "):
        words.append((at, at + len(w)))
        at += len(w) + 1
    start = len(task.prompt(item).split(" "))
    return ({f"step{i + 1}.eq": words[start + i * per + 1] for i in range(p.n_steps)}
            | {f"step{i + 1}.target": words[start + i * per] for i in range(p.n_steps)})


def pair_datasets(model: Model, task: Task, items: Sequence[Item], formats: tuple[str, str] | None = None
                  ) -> tuple[PromptDataset, PromptDataset]:
    """(long, short) reference texts of the same items (`pair_formats`), with the task's named positions; the
    organism's texts also name the `decision` and `target` positions."""
    formats = formats or pair_formats(task, VerbosityConfig())
    chat = chat_of(task)
    out = []
    for fmt in formats:
        if task.name != "organism":
            out.append(task_dataset(model, task, items, fmt=fmt, chat=chat))
            continue
        exs = []
        for it in items:
            comp = task.completion(it, fmt)
            ex = encode_item(model, task, it, comp, chat)
            enc = encode_text(model, task.prompt(it), comp, chat)
            extra = {k: enc.position(v, k) for k, v in decision_spans(it, task, fmt).items()}
            exs.append(Example(ex.ids, dict(ex.positions) | extra, {**ex.meta, "format": fmt}))
        out.append(PromptDataset(tuple(exs)))
    return out[0], out[1]


def selector(variant: str, max_steps: int, task: Task | None = None) -> Selector:
    """`last`: the last token of problem + chain (ASC's recipe; the organism's answer digit); `decision` /
    `target`: the organism's step-2-on positions."""
    if variant == "last":
        return Named(("final.value",)) if task is None or task.name == "organism" else LastToken()
    key = "eq" if variant == "decision" else "target"
    return Named(tuple(f"step{i}.{key}" for i in range(2, max_steps + 1)), missing="skip")


def pair_items(cfg: VerbosityConfig, task: Task) -> list[Item]:
    """Pair items; on the organism 2-4 steps (a 1-step CoT has no step whose context differs before its format
    choice)."""
    if task.name == "organism":
        return task.sample(cfg.n_pairs, cfg.pair_seed, min_steps=2, max_steps=max(cfg.steps))
    return task.sample(cfg.n_pairs, cfg.pair_seed)


def check_variants(cfg: VerbosityConfig, task: Task) -> None:
    if task.name != "organism" and set(cfg.variants) - {"last"}:
        raise ValueError(f"direction variants {sorted(set(cfg.variants) - {'last'})} need the organism's step "
                         f"positions; on task {task.name!r} use variants=('last',)")


def directions(model: Model, cfg: VerbosityConfig, task: Task | None = None,
               pairs: tuple[PromptDataset, PromptDataset] | None = None) -> dict[str, DirectionSet]:
    """Long - short directions per variant at every layer's resid_post, from the task's format pairs (or the
    given text pairs, read at their last token)."""
    import interp

    task = task if task is not None else interp.task(cfg.task)
    hooks = [resid_post(layer) for layer in range(model.n_layers)]
    if pairs is not None:
        prov = {"pairs": len(pairs[0]), "text": "given pairs: first - second", "position": "last"}
        return {"last": directions_from_texts(model, pairs[0], pairs[1], hooks, LastToken(), seed=cfg.seed,
                                              provenance=prov)}
    check_variants(cfg, task)
    formats = pair_formats(task, cfg)
    long, short = pair_datasets(model, task, pair_items(cfg, task), formats)
    prov = {"pairs": cfg.n_pairs, "pair_seed": cfg.pair_seed, "text": f"{formats[0]} - {formats[1]}"}
    return {v: directions_from_texts(model, long, short, hooks, selector(v, max(cfg.steps, default=1), task),
                                     seed=cfg.seed, provenance=prov | {"position": v}) for v in cfg.variants}


# ------------------------------------------------------------------------------------------ run

def _intervention(vec: SteeringVector, gamma: float) -> Any:
    return Subtract(vec, scale=-gamma, where="generated") if gamma < 0 else Add(vec, scale=gamma, where="generated")


def _measure(model: Model, task: Task, items: list[Item], name: str, ivs: list, cfg: VerbosityConfig, *,
             kl: bool = True, allow_other_model: bool = False, hook: str = "", scale: float = 0.0,
             direction: str = "", prefixes: list[str] | None = None) -> tuple[Cell, Run]:
    run = generate_graded(model, task, items, ivs, prefixes=prefixes, max_new_tokens=cfg.max_new_tokens,
                          batch_size=cfg.batch_size, allow_other_model=allow_other_model)
    k = steered_kl(model, task, items, run, ivs, allow_other_model) if kl and ivs else (0.0 if kl else None)
    return cell_of(name, run, cfg.n_boot, k, hook, scale, direction), run


def choose(sweep: Sequence[SweepCell], base: Cell, cfg: VerbosityConfig) -> tuple[SweepCell | None, SweepCell | None]:
    """(chosen, aggressive): the largest length reduction with accuracy within tolerance and KL under the bound;
    and the largest reduction under the KL bound with at most `max_invalid_aggressive` unparseable answers."""
    ok = [s for s in sweep if s.cell.kl is not None and s.cell.kl <= cfg.kl_bound]
    within = [s for s in ok if s.cell.accuracy >= base.accuracy - cfg.accuracy_tolerance - 1e-12
              and s.cell.mean_tokens < base.mean_tokens]
    valid = [s for s in ok if s.cell.formats.get("invalid", 0) / s.cell.n <= cfg.max_invalid_aggressive
             and s.cell.mean_tokens < base.mean_tokens]
    best = lambda xs: min(xs, key=lambda s: (s.cell.mean_tokens, -s.cell.accuracy)) if xs else None
    return best(within), best(valid)


def _reduction(runs: Mapping[str, Run], ref: str, n_boot: int) -> dict[str, dict[str, Any]]:
    a0 = arrays(runs[ref])
    out = {}
    for name, run in runs.items():
        a = arrays(run)
        if len(a["tokens"]) != len(a0["tokens"]):
            continue
        n = len(a0["tokens"])
        red = lambda i, a=a: 1 - a["tokens"][i].mean() / a0["tokens"][i].mean()
        dacc = lambda i, a=a: a["correct"][i].mean() - a0["correct"][i].mean()
        out[name] = {"reduction": float(red(np.arange(n))), "reduction_ci": list(paired_bootstrap(red, n, n_boot, 1)),
                     "accuracy_change": float(dacc(np.arange(n))),
                     "accuracy_change_ci": list(paired_bootstrap(dacc, n, n_boot, 2))}
    return out


def _short(name: str) -> str:
    return name.removeprefix("organism/")


def run(config: VerbosityConfig = VerbosityConfig(), progress: bool = True, model: Model | None = None,
        base: Model | None = None, task: Task | None = None,
        pairs: tuple[PromptDataset, PromptDataset] | None = None) -> VerbosityResult:
    """Directions, validation sweep, choice, and the test comparison (see the module docstring). The tuned
    `model` and its `base` default to the config's names, the task to `interp.task(config.task)`; `pairs`
    (long, short texts) replace the task's format pairs (read at their last token)."""
    import interp

    t0 = time.time()
    cfg = config
    task = task if task is not None else interp.task(cfg.task)
    model = model if model is not None else interp.load(cfg.model)
    base = base if base is not None else interp.load(cfg.base)
    if model.name != cfg.model or base.name != cfg.base:
        cfg = dataclasses.replace(cfg, model=model.name, base=base.name)
    if pairs is not None and cfg.variants != ("last",):
        cfg = dataclasses.replace(cfg, variants=("last",))
    if (model.d_model, model.n_layers) != (base.d_model, base.n_layers):
        raise ValueError(f"{cfg.base} and {cfg.model} differ in shape; the base's direction cannot be applied")
    dirs = directions(model, cfg, task, pairs)
    base_dirs = directions(base, cfg, task, pairs)
    pair_prompts = {task.prompt(it) for it in pair_items(cfg, task)} if pairs is None else set()
    val = [it for it in items_per_step(task, cfg.val_seed, cfg.n_val_per_step, cfg.steps)
           if task.prompt(it) not in pair_prompts]
    test = [it for it in items_per_step(task, cfg.test_seed, cfg.n_test_per_step, cfg.steps)
            if task.prompt(it) not in pair_prompts]
    mname, bname = _short(model.name), _short(base.name)

    val_base, _ = _measure(model, task, val, "unsteered", [], cfg)
    sweep = []
    grid = [(v, h.hook, s * g) for v in cfg.variants for h in dirs[v].hooks for g in cfg.gammas for s in (-1, 1)]
    conds = [[_intervention(dirs[v].get(hook).mean_diff, g)] for v, hook, g in grid]
    # one sign at a time, so a batched call holds cells of similar length (a call runs until its longest row ends)
    order = sorted(range(len(grid)), key=lambda i: grid[i][2] > 0)
    got = generate_graded_many(model, task, val, [conds[i] for i in order], max_new_tokens=cfg.max_new_tokens,
                               batch_size=cfg.batch_size, desc="verbosity sweep" if progress else None)
    sweep_runs = [got[order.index(i)] for i in range(len(grid))]
    for (v, hook, g), ivs, r in tqdm(list(zip(grid, conds, sweep_runs)), desc="verbosity sweep KL",
                                     disable=not progress):
        c = cell_of(f"{v} {hook} {g:+g}", r, cfg.n_boot, steered_kl(model, task, val, r, ivs), hook, g,
                    f"{v}/{cfg.model}")
        sweep.append(SweepCell(v, hook, g, c))
    chosen, aggressive = choose(sweep, val_base, cfg)

    runs: dict[str, Run] = {}
    test_cells: dict[str, Cell] = {}

    def measure(name: str, ivs: list, **kw: Any) -> None:
        test_cells[name], runs[name] = _measure(model, task, test, name, ivs, cfg, **kw)

    measure("unsteered", [])
    if task.name == "organism":  # prompting the short format by forcing its first step needs the organism's layout
        measure("prompt: concise first step", [], prefixes=forced_concise_prefixes(model, task, test))
    points = {"chosen": chosen, "aggressive": aggressive}
    for label, pt in points.items():
        if pt is None:
            continue
        vec = dirs[pt.variant].get(pt.hook).mean_diff
        measure(label, [_intervention(vec, pt.gamma)], hook=pt.hook, scale=pt.gamma, direction=f"{pt.variant}/{mname}")
        rand_runs = []
        for r in random_directions(vec.d_model, vec.norm, N_RANDOM, cfg.seed + 11):
            rv = SteeringVector(r, pt.hook, model.name, model.checksum, "random", {"norm_of": "mean_difference"})
            rand_runs.append(_measure(model, task, test, "", [_intervention(rv, pt.gamma)], cfg, hook=pt.hook)[1])
        pooled = Run(tuple(g for r in rand_runs for g in r.grades), tuple(c for r in rand_runs for c in r.completions),
                     sum(r.seconds for r in rand_runs))
        test_cells[f"{label}: random direction"] = cell_of(f"{label}: random direction", pooled, cfg.n_boot,
                                                           None, pt.hook, pt.gamma, f"random x{N_RANDOM}")
        bvec = base_dirs[pt.variant].get(pt.hook).mean_diff
        measure(f"{label}: {bname} direction", [_intervention(bvec, pt.gamma)], allow_other_model=True,
                hook=pt.hook, scale=pt.gamma, direction=f"{pt.variant}/{cfg.base}")

    speed: dict[str, float] = {}
    timed = {k: v for k, v in points.items() if v is not None}
    if timed:
        from analyses.verbosity.common import prompt_ids
        from interp.generate import generate_ids
        from interp.steering import steer

        ids = prompt_ids(model, task, test)

        def gen(ivs: list) -> Any:
            def f() -> None:
                with steer(model, ivs):
                    generate_ids(model.hf, model.tokenizer, ids, cfg.max_new_tokens, batch_size=cfg.batch_size)
            return f

        fns = {"unsteered": gen([])}
        for label, pt in timed.items():
            fns[label] = gen([_intervention(dirs[pt.variant].get(pt.hook).mean_diff, pt.gamma)])
        best = best_wall_and_cpu(fns, cfg.timing_repeats)
        times, cpu = {k: w for k, (w, _) in best.items()}, {k: c for k, (_, c) in best.items()}
        n_gen = {k: sum(len(c) for c in runs[k].completions) for k in fns}
        for k, t in times.items():
            speed[f"{k}_seconds"] = round(t, 4)
            speed[f"{k}_cpu_seconds"] = round(cpu[k], 4)
            speed[f"{k}_tokens_per_s"] = round(n_gen[k] / t, 1)
        for label in timed:
            speed[f"{label}_wall_clock_speedup"] = round(times["unsteered"] / times[label], 3)
            speed[f"{label}_cpu_speedup"] = round(cpu["unsteered"] / cpu[label], 3)
            speed[f"{label}_tokens_per_s_ratio"] = round(speed[f"{label}_tokens_per_s"] / speed["unsteered_tokens_per_s"], 3)
        # per-problem latency (ASC's measure): `latency_problems` test problems spread over the split, one at a time
        one = ids[:: max(1, len(ids) // cfg.latency_problems)][: cfg.latency_problems]

        def seq(ivs: list) -> Any:
            def f() -> None:
                with steer(model, ivs):
                    for p in one:
                        generate_ids(model.hf, model.tokenizer, [p], cfg.max_new_tokens)
            return f

        best = best_wall_and_cpu(
            {k: seq([] if pt is None else [_intervention(dirs[pt.variant].get(pt.hook).mean_diff, pt.gamma)])
             for k, pt in {"unsteered": None, **timed}.items()}, max(1, cfg.timing_repeats - 1))
        lat, lat_cpu = {k: w for k, (w, _) in best.items()}, {k: c for k, (_, c) in best.items()}
        speed["latency_problems"] = len(one)
        for k, t in lat.items():
            speed[f"{k}_seconds_per_problem"] = round(t / len(one), 5)
        for label in timed:
            speed[f"{label}_per_problem_speedup"] = round(lat["unsteered"] / lat[label], 3)
            speed[f"{label}_per_problem_cpu_speedup"] = round(lat_cpu["unsteered"] / lat_cpu[label], 3)

    cos = {}
    for v in cfg.variants:
        cos[v] = {h.hook: float(torch.nn.functional.cosine_similarity(
            h.mean_diff.vector, base_dirs[v].get(h.hook).mean_diff.vector, dim=0)) for h in dirs[v].hooks}
    return VerbosityResult(
        cfg, model.checksum, base.checksum,
        {f"{cfg.model}/{v}": dirs[v].to_dict() for v in cfg.variants}
        | {f"{cfg.base}/{v}": base_dirs[v].to_dict() for v in cfg.variants},
        cos, val_base, tuple(sweep), chosen, aggressive, test_cells, _reduction(runs, "unsteered", cfg.n_boot), speed,
        round(time.time() - t0, 1), library_versions(),
        {fmt: teacher_forced_steps(model, task, test, fmt, cfg.n_boot)
         for fmt in (reversed(pair_formats(task, cfg)) if pairs is None else ())})


def run_cached(config: VerbosityConfig = VerbosityConfig(), progress: bool = True, model: Model | None = None,
               base: Model | None = None, task: Task | None = None) -> VerbosityResult:
    """`run`, reusing a saved result for the same config, task and model checksums."""
    import interp

    model = model if model is not None else interp.load(config.model)
    base = base if base is not None else interp.load(config.base)
    key: dict[str, Any] = {"config": config.key(), "models": [model.checksum, base.checksum], "version": RESULT_VERSION}
    if task is not None and task.name != "organism":
        key["task"] = task.describe()
    path = Path(config.cache_dir) / f"result-{digest(key)}.json"
    if path.is_file():
        return VerbosityResult.from_dict(read_json(path))
    result = run(config, progress, model, base, task)
    write_json(path, result.to_dict())
    return result


__all__ = [
    "SweepCell",
    "VerbosityConfig",
    "VerbosityResult",
    "choose",
    "decision_spans",
    "directions",
    "pair_datasets",
    "pair_formats",
    "pair_items",
    "run",
    "run_cached",
]
