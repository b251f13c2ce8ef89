"""The zoo's training recipe, in code: what each member is, how it is trained, and how it is exported.

`interp organism train --all` runs these recipes in dependency order (the post-trained members start
from base-s) and writes each member as a Hugging Face checkpoint with a JSON card: config, seed, steps,
data mix, evaluation table (free and forced-CoT, with bootstrap intervals), sha256 and library versions.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp.io import atomic_dir, read_json, sha256_file, write_json
from interp.organism.arch import ArchConfig
from interp.organism.evaluate import EvalConfig, evaluate
from interp.organism.task import FormatMix, TaskConfig
from interp.organism.training import DPOConfig, RLConfig, TrainConfig, provenance, train
from interp.organism.zoo_paths import ORGANISM_PREFIX, ZOO_DIR, ZOO_NAMES

if TYPE_CHECKING:
    from interp.models import Model

TASK = TaskConfig(min_steps=1, max_steps=4)
BASE_MIX = FormatMix(direct=0.8, concise=0.05, verbose=0.15)
SIZES: dict[str, ArchConfig] = {
    "s": ArchConfig(n_layers=4, d_model=64, n_heads=4, d_mlp=256),
    "m": ArchConfig(n_layers=5, d_model=96, n_heads=4, d_mlp=384),
    "l": ArchConfig(n_layers=6, d_model=128, n_heads=4, d_mlp=512),
}
BASE_STEPS = 3000
SEED = 0

RECIPES: dict[str, TrainConfig] = {
    **{f"base-{s}": TrainConfig(kind="pretrain", arch=a, task=TASK, mix=BASE_MIX, steps=BASE_STEPS,
                                batch_size=128, lr=3e-3, warmup=50, seed=SEED, ckpt_every=250, eval_every=250)
       for s, a in SIZES.items()},
    # Verbose by default, but able to reason concisely (as R1-style distilled models are): the verbosity direction
    # (analyses/verbosity) needs a concise format the model computes correctly. Measured on 2-4-step problems,
    # teacher-forced concise step accuracy / greedy free format: 10% concise, 300 steps, lr 1e-3: 0.44 / all
    # verbose; 30%, 1000, 1e-3: 0.53; 20%, 3000, 3e-3: 0.88; 30%, 2500, 3e-3: 0.99; 50%, 2000, 3e-3: 1.00 but
    # 42% of free answers concise; 30%, 4000, 3e-3: 1.00 and all free answers verbose (this recipe).
    "sft": TrainConfig(kind="sft", arch=SIZES["s"], task=TASK, mix=FormatMix(direct=0.0, concise=0.3, verbose=0.7),
                       steps=4000, batch_size=64, lr=3e-3, warmup=20, seed=SEED, init="organism/base-s",
                       ckpt_every=250),
    "rl": TrainConfig(kind="rl", arch=SIZES["s"], task=TASK, steps=300, batch_size=32, lr=5e-4, warmup=10,
                      seed=SEED, init="organism/base-s", ckpt_every=25,
                      rl=RLConfig(group_size=8, length_cost=0.002, temperature=1.0)),
    # beta 0.1 / lr 5e-4 drifted off-policy: 26% unparseable answers on 1-step problems (few pairs there)
    "dpo": TrainConfig(kind="dpo", arch=SIZES["s"], task=TASK, steps=200, batch_size=64, lr=2e-4, warmup=10,
                       seed=SEED, init="organism/base-s", ckpt_every=50, dpo=DPOConfig(beta=0.5)),
}
ORDER = ("base-s", "sft", "rl", "dpo", "base-m", "base-l")
assert set(ORDER) == set(ZOO_NAMES) == set(RECIPES)

CARD_EVAL = EvalConfig(steps=(1, 2, 3, 4), n_per_step=200)


def short_name(name: str) -> str:
    return name.removeprefix(ORGANISM_PREFIX)


def recipe(name: str, out_dir: Path = ZOO_DIR) -> TrainConfig:
    """The member's config, with `init` pointing at the base in `out_dir` (so a fresh zoo uses its own base)."""
    short = short_name(name)
    if short not in RECIPES:
        raise ValueError(f"no recipe for {name!r}; the zoo's members are {', '.join(ORDER)}")
    cfg = RECIPES[short]
    if cfg.init and cfg.init.startswith(ORGANISM_PREFIX):
        cfg = dataclasses.replace(cfg, init=str(Path(out_dir) / short_name(cfg.init)))
    return cfg


def card_eval(model: Model, cfg: EvalConfig = CARD_EVAL, name: str | None = None) -> dict[str, Any]:
    """Free and forced-CoT evaluation tables, as stored in each card."""
    return {
        mode: evaluate(model, dataclasses.replace(cfg, force_cot=(mode == "forced_cot")), name=name).to_dict()
        for mode in ("free", "forced_cot")
    }


def export(name: str, outcome: Any, out_dir: Path, eval_cfg: EvalConfig = CARD_EVAL) -> Path:
    """Write the member as an HF checkpoint plus `card.json`, atomically."""
    from interp.models import load  # late import: models imports the Bridge stack

    target = Path(out_dir) / short_name(name)
    model, tok, cfg = outcome.model, outcome.tokenizer, outcome.config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        card = {
            "name": ORGANISM_PREFIX + short_name(name),
            "kind": cfg.kind,
            "seed": cfg.seed,
            "steps": cfg.steps,
            "data_mix": cfg.mix.to_dict() if cfg.kind in ("pretrain", "sft") else None,
            "init": card_init(cfg),
            "train_seconds": round(outcome.seconds, 1),
            "sha256": {"model.safetensors": sha256_file(tmp / "model.safetensors")},
            "eval": card_eval(load(tmp), eval_cfg, name=ORGANISM_PREFIX + short_name(name)),
            "train_log_tail": outcome.log[-5:],
            **provenance(dataclasses.replace(cfg, init=card_init(cfg)), model),
        }
        write_json(tmp / "card.json", card)
    return target


def card_init(cfg: TrainConfig) -> str | None:
    """The card names the init model as an organism, not as the local path it was trained from."""
    return ORGANISM_PREFIX + Path(cfg.init).name if cfg.init else None


def train_member(name: str, runs_dir: Path, out_dir: Path = ZOO_DIR, threads: int = 0,
                 progress: bool = True, eval_cfg: EvalConfig = CARD_EVAL) -> Path:
    """Train (resuming if `runs_dir` holds a partial run) and export one member."""
    if threads:
        torch.set_num_threads(threads)
    cfg = recipe(name, out_dir)
    t0 = time.time()
    outcome = train(cfg, Path(runs_dir) / short_name(name), progress=progress)
    path = export(name, outcome, out_dir, eval_cfg)
    card = read_json(path / "card.json")
    card["wall_seconds"] = round(time.time() - t0, 1)
    write_json(path / "card.json", card)
    return path


def member_cost(name: str, out_dir: Path = ZOO_DIR) -> float:
    """Seconds the member last took to train (its card), or an estimate from the recipe when it has no card."""
    card = Path(out_dir) / name / "card.json"
    if card.is_file():
        return float(read_json(card)["train_seconds"])
    r = RECIPES[name]
    return 4e-6 * r.steps * r.batch_size * r.arch.n_layers * r.arch.d_model * (8 if r.kind == "rl" else 1)


def dependency(name: str) -> str | None:
    """The zoo member this one starts from (post-trained members start from base-s), if any."""
    init = RECIPES[name].init or ""
    return short_name(init) if init.startswith(ORGANISM_PREFIX) else None


def lanes(names: list[str], jobs: int, out_dir: Path = ZOO_DIR) -> list[list[str]]:
    """Split members into `jobs` sequential lanes: list scheduling by cost (longest first, each to the lane where
    it finishes earliest), a dependent starting no earlier than its base finishes (a lane waits for a base
    trained in another lane: see `train_all`)."""
    if jobs <= 1:
        return [names]
    cost = {n: member_cost(n, out_dir) for n in names}
    out: list[list[str]] = [[] for _ in range(jobs)]
    end = [0.0] * jobs
    finish: dict[str, float] = {}
    independent = [n for n in names if dependency(n) not in names]
    for n in sorted(independent, key=lambda n: -cost[n]) + sorted(set(names) - set(independent), key=lambda n: -cost[n]):
        ready = finish.get(dependency(n) or "", 0.0)
        i = min(range(jobs), key=lambda j: (max(end[j], ready) + cost[n], j))
        end[i] = max(end[i], ready) + cost[n]
        finish[n] = end[i]
        out[i].append(n)
    for lane in out:  # within a lane: bases first, so dependents elsewhere wait as little as possible
        lane.sort(key=lambda n: (dependency(n) is not None, ORDER.index(n)))
    return [lane for lane in out if lane]


def _marker(runs_dir: str, name: str, state: str) -> Path:
    return Path(runs_dir) / f"{name}.{state}"


def _run_lane(lane: list[str], runs_dir: str, out_dir: str, threads: int, progress: bool,
              trained_here: list[str]) -> dict[str, str]:
    """Train a lane's members in order; a member whose base is trained in this run (maybe in another lane) waits
    for that base's `.done` marker, and stops if the base's lane failed."""
    done = {}
    for n in lane:
        base = dependency(n)
        while base in trained_here and not _marker(runs_dir, base, "done").exists():
            if _marker(runs_dir, base, "failed").exists():
                raise RuntimeError(f"{n} cannot start: training its base {base} failed in another lane")
            time.sleep(2)
        try:
            done[n] = str(train_member(n, Path(runs_dir), Path(out_dir), threads, progress))
        except BaseException:
            _marker(runs_dir, n, "failed").touch()
            raise
        _marker(runs_dir, n, "done").touch()
    return done


def train_all(runs_dir: Path, out_dir: Path = ZOO_DIR, names: tuple[str, ...] = ORDER, threads: int = 0,
              progress: bool = True, jobs: int = 1) -> dict[str, Path]:
    """Train the members in dependency order; with `jobs > 1`, in parallel lanes of one process each."""
    wanted = [n for n in ORDER if n in {short_name(x) for x in names}]
    unknown = sorted({short_name(x) for x in names} - set(ORDER))
    if unknown:
        raise ValueError(f"unknown zoo members {unknown}; the zoo's members are {', '.join(ORDER)}")
    if jobs <= 1:
        return {n: train_member(n, runs_dir, out_dir, threads, progress) for n in wanted}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    per_lane = threads or max(1, (torch.get_num_threads()) // jobs)
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    for n in wanted:  # markers of an earlier run must not release a dependent early
        for state in ("done", "failed"):
            _marker(str(runs_dir), n, state).unlink(missing_ok=True)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_lane, lane, str(runs_dir), str(out_dir), per_lane, progress, wanted)
                   for lane in lanes(wanted, jobs, out_dir)]
        done: dict[str, Path] = {}
        for f in futures:
            done.update({k: Path(v) for k, v in f.result().items()})
    return {n: done[n] for n in wanted}


def card_table(out_dir: Path = ZOO_DIR, hard: tuple[int, ...] = (3, 4)) -> str:
    """Markdown table of the zoo's measured numbers, read from the cards."""
    rows = ["| model | params | train s | acc 1/2/3/4 (free) | CoT rate 1/2/3/4 | acc 3-4 free | CoT 3-4 | acc 3-4 forced CoT |",
            "|---|---:|---:|---|---|---:|---:|---:|"]
    for n in ORDER:
        path = Path(out_dir) / n / "card.json"
        if not path.exists():
            continue
        c = read_json(path)
        free, forced = c["eval"]["free"]["by_steps"], c["eval"]["forced_cot"]["by_steps"]
        ks = sorted(free, key=int)
        mean = lambda d, m: sum(d[str(k)][m] for k in hard) / len(hard)
        acc = "/".join(f"{free[k]['accuracy']:.2f}" for k in ks)
        cot = "/".join(f"{free[k]['cot_rate']:.2f}" for k in ks)
        rows.append(
            f"| {n} | {c['n_params']:,} | {c.get('wall_seconds', c['train_seconds']):.0f} | {acc} | {cot} | "
            f"{mean(free, 'accuracy'):.2f} | {mean(free, 'cot_rate'):.2f} | {mean(forced, 'accuracy'):.2f} |")
    return "\n".join(rows)


__all__ = [
    "BASE_MIX",
    "CARD_EVAL",
    "ORDER",
    "RECIPES",
    "SIZES",
    "TASK",
    "card_eval",
    "card_table",
    "dependency",
    "export",
    "lanes",
    "member_cost",
    "recipe",
    "train_all",
    "train_member",
]
