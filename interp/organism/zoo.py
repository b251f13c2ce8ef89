"""The zoo's training recipe, in code: what each member is, how it is trained, and how it is exported.

`interp organism train --all` runs these recipes in dependency order (the post-trained members start
from base-s) and writes each member as a Hugging Face checkpoint with a JSON card: config, seed, steps,
data mix, evaluation table (free and forced-CoT, with bootstrap intervals), sha256 and library versions.
Seed replicas (`<member>-seed<k>`, `interp organism train --seeds 1,2`) are the same recipes under another
seed, each post-trained replica starting from its own seed's base.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp.io import atomic_dir, read_json, sha256_file, write_json
from interp.organism.arch import ArchConfig
from interp.organism.evaluate import EvalConfig, evaluate
from interp.organism.task import FormatMix, TaskConfig
from interp.organism.training import DPOConfig, RLConfig, TrainConfig, provenance, train
from interp.organism.zoo_paths import (
    ORGANISM_PREFIX,
    ORIGINALS,
    REPLICA_SEEDS,
    REPLICATED,
    ZOO_DIR,
    ZOO_NAMES,
    replica_name,
    split_replica,
)

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

ORIGINAL_RECIPES: dict[str, TrainConfig] = {
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
    # RLSF-like (arXiv 2507.21931): dpo's recipe on the same samples of base-s (same problems, same sampling
    # seeds), but each pair is base-s's most vs least confident sample by its own probability of the final
    # answer token: no label, no verifier. So rlsf and dpo differ only in how pairs are chosen.
    "rlsf": TrainConfig(kind="dpo", arch=SIZES["s"], task=TASK, steps=200, batch_size=64, lr=2e-4, warmup=10,
                        seed=SEED, init="organism/base-s", ckpt_every=50, dpo=DPOConfig(beta=0.5, rank="confidence")),
    # DPO-teacher (arXiv 2410.18890): dpo's recipe on a right vs a wrong sample of the larger base-l (labels
    # used), base-s as the reference; 1,024 problems as when it was first trained in analyses/calibration.
    "dpo-teacher": TrainConfig(kind="dpo", arch=SIZES["s"], task=TASK, steps=200, batch_size=64, lr=2e-4,
                               warmup=10, seed=SEED, init="organism/base-s", ckpt_every=50,
                               dpo=DPOConfig(beta=0.5, pool_problems=1024, source="organism/base-l")),
}


def replicate(cfg: TrainConfig, seed: int) -> TrainConfig:
    """The same recipe under another seed; a post-trained member then starts from its seed's base."""
    init = cfg.init
    if init and init.startswith(ORGANISM_PREFIX):
        init = ORGANISM_PREFIX + replica_name(init, seed)
    return dataclasses.replace(cfg, seed=seed, init=init)


RECIPES: dict[str, TrainConfig] = {
    **ORIGINAL_RECIPES,
    **{replica_name(m, s): replicate(ORIGINAL_RECIPES[m], s) for s in REPLICA_SEEDS for m in REPLICATED},
}
ORDER = ("base-s", "sft", "rl", "dpo", "base-m", "base-l", "rlsf", "dpo-teacher",
         *(replica_name(m, s) for s in REPLICA_SEEDS for m in REPLICATED))
assert set(ORDER) == set(ZOO_NAMES) == set(RECIPES) and set(ORIGINALS) <= set(ORDER)


def seed_members(seeds: tuple[int, ...], members: tuple[str, ...] = REPLICATED) -> tuple[str, ...]:
    """The replicas of `members` under `seeds` (seed 0: the originals), in training order."""
    bad = sorted(set(members) - set(REPLICATED))
    if bad:
        raise ValueError(f"{bad} have no seed replicas; replicated members: {', '.join(REPLICATED)}")
    return tuple(replica_name(m, s) for s in seeds for m in REPLICATED if m in members)

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
    if cfg.dpo.source and cfg.dpo.source.startswith(ORGANISM_PREFIX):
        cfg = dataclasses.replace(cfg, dpo=dataclasses.replace(cfg.dpo, source=str(Path(out_dir) / short_name(cfg.dpo.source))))
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
            **({"preference_pool": outcome.pool} if outcome.pool is not None else {}),
            **provenance(card_config(cfg), model),
        }
        write_json(tmp / "card.json", card)
    return target


def card_init(cfg: TrainConfig) -> str | None:
    """The card names the init model as an organism, not as the local path it was trained from."""
    return ORGANISM_PREFIX + Path(cfg.init).name if cfg.init else None


def card_config(cfg: TrainConfig) -> TrainConfig:
    """The config as the card records it: the init and DPO source models named as organisms, not local paths."""
    source = ORGANISM_PREFIX + Path(cfg.dpo.source).name if cfg.dpo.source else None
    return dataclasses.replace(cfg, init=card_init(cfg), dpo=dataclasses.replace(cfg.dpo, source=source))


def train_member(name: str, runs_dir: Path, out_dir: Path = ZOO_DIR, threads: int = 0,
                 progress: bool = True, eval_cfg: EvalConfig = CARD_EVAL) -> Path:
    """Train (resuming if `runs_dir` holds a partial run) and export one member; the card gets the wall and
    CPU seconds of this call (training plus card evaluation) and the load average when it ended."""
    if threads:
        torch.set_num_threads(threads)
    cfg = recipe(name, out_dir)
    t0, c0 = time.time(), time.process_time()
    outcome = train(cfg, Path(runs_dir) / short_name(name), progress=progress)
    path = export(name, outcome, out_dir, eval_cfg)
    card = read_json(path / "card.json")
    card["wall_seconds"] = round(time.time() - t0, 1)
    card["cpu_seconds"] = round(time.process_time() - c0, 1)
    card["torch_threads"] = torch.get_num_threads()
    card["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(path / "card.json", card)
    return path


def member_cost(name: str, out_dir: Path = ZOO_DIR) -> float:
    """Seconds the member last took to train (its card), or an estimate from the recipe when it has no card."""
    for known in (name, split_replica(name)[0]):  # a replica not trained yet costs what its original did
        card = Path(out_dir) / known / "card.json"
        if card.is_file():
            return float(read_json(card)["train_seconds"])
    r = RECIPES[name]
    return 4e-6 * r.steps * r.batch_size * r.arch.n_layers * r.arch.d_model * (8 if r.kind == "rl" else 1)


def dependency(name: str) -> str | None:
    """The zoo member this one starts from (post-trained members start from base-s, replicas from their seed's
    base-s), if any."""
    init = RECIPES[name].init or ""
    return short_name(init) if init.startswith(ORGANISM_PREFIX) else None


def dependencies(name: str) -> tuple[str, ...]:
    """Every zoo member this one needs before it trains: its init and the model writing its DPO samples."""
    source = RECIPES[name].dpo.source or "" if RECIPES[name].kind == "dpo" else ""
    extra = (short_name(source),) if source.startswith(ORGANISM_PREFIX) else ()
    return tuple(d for d in (dependency(name), *extra) if d is not None)


def lanes(names: list[str], jobs: int, out_dir: Path = ZOO_DIR) -> list[list[str]]:
    """Split members into `jobs` sequential lanes: one per seed when the members are the same recipes under
    exactly `jobs` seeds (seed replicas), else list scheduling by cost (longest first, each to the lane where it finishes earliest), a
    dependent starting no earlier than its base finishes (a lane waits for a base trained in another lane:
    see `train_all`)."""
    if jobs <= 1:
        return [names]
    per_seed: dict[int, set[str]] = {}
    for n in names:
        per_seed.setdefault(split_replica(n)[1], set()).add(split_replica(n)[0])
    if len(per_seed) == jobs and len({frozenset(v) for v in per_seed.values()}) == 1:
        # every seed trains the same recipes: one lane per seed, equal lanes with no waiting across lanes
        return [sorted((n for n in names if split_replica(n)[1] == k), key=ORDER.index) for k in sorted(per_seed)]
    cost = {n: member_cost(n, out_dir) for n in names}
    out: list[list[str]] = [[] for _ in range(jobs)]
    end = [0.0] * jobs
    finish: dict[str, float] = {}
    independent = [n for n in names if not set(dependencies(n)) & set(names)]
    dependent = [n for n in names if n not in independent]
    for n in sorted(independent, key=lambda n: (-cost[n], ORDER.index(n))) + sorted(dependent, key=lambda n: (-cost[n], ORDER.index(n))):
        ready = max([finish.get(d, 0.0) for d in dependencies(n)], default=0.0)
        i = min(range(jobs), key=lambda j: (max(end[j], ready) + cost[n], j))
        end[i] = max(end[i], ready) + cost[n]
        finish[n] = end[i]
        out[i].append(n)
    for lane in out:  # within a lane: bases first, so dependents elsewhere wait as little as possible
        lane.sort(key=lambda n: (bool(set(dependencies(n)) & set(names)), ORDER.index(n)))
    return [lane for lane in out if lane]


def _marker(runs_dir: str, name: str, state: str) -> Path:
    return Path(runs_dir) / f"{name}.{state}"


def _run_lane(lane: list[str], runs_dir: str, out_dir: str, threads: int, progress: bool,
              trained_here: list[str]) -> dict[str, Any]:
    """Train a lane's members in order; a member whose base (or DPO source) is trained in this run (maybe in
    another lane) waits for that model's `.done` marker, and stops if its lane failed. Returns the paths and the lane's
    account: wall and CPU seconds of this process (all its threads), per member, and the load average."""
    done: dict[str, str] = {}
    account: dict[str, Any] = {"members": {}, "pid": os.getpid()}
    t0, c0 = time.time(), time.process_time()
    for n in lane:
        w0 = time.time()
        for base in dependencies(n):
            while base in trained_here and not _marker(runs_dir, base, "done").exists():
                if _marker(runs_dir, base, "failed").exists():
                    raise RuntimeError(f"{n} cannot start: training its base {base} failed in another lane")
                time.sleep(2)
        m0, mc0, load0 = time.time(), time.process_time(), os.getloadavg()
        try:
            done[n] = str(train_member(n, Path(runs_dir), Path(out_dir), threads, progress))
        except BaseException:
            _marker(runs_dir, n, "failed").touch()
            raise
        _marker(runs_dir, n, "done").touch()
        account["members"][n] = {
            "train_seconds": read_json(Path(done[n]) / "card.json")["train_seconds"],  # the loop alone
            "waited_seconds": round(m0 - w0, 1), "wall_seconds": round(time.time() - m0, 1),
            "cpu_seconds": round(time.process_time() - mc0, 1),
            "load_average_start": [round(x, 2) for x in load0],
            "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    account.update(wall_seconds=round(time.time() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1),
                   torch_threads=torch.get_num_threads())
    return {"paths": done, "account": account}


@dataclasses.dataclass(frozen=True)
class ZooRun:
    """What `train_all` trained: each member's folder, the lanes, and each lane's wall/CPU account."""

    paths: dict[str, Path]
    lanes: list[list[str]]
    accounts: list[dict[str, Any]]
    wall_seconds: float
    children_cpu_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"members": {n: p.name for n, p in self.paths.items()}, "lanes": self.lanes,
                "lane_accounts": self.accounts, "wall_seconds": self.wall_seconds,
                "children_cpu_seconds": self.children_cpu_seconds}


def train_all(runs_dir: Path, out_dir: Path = ZOO_DIR, names: tuple[str, ...] = ORDER, threads: int = 0,
              progress: bool = True, jobs: int = 1) -> ZooRun:
    """Train the members in dependency order; with `jobs > 1`, in parallel lanes of one process each."""
    import resource

    wanted = [n for n in ORDER if n in {short_name(x) for x in names}]
    unknown = sorted({short_name(x) for x in names} - set(ORDER))
    if unknown:
        raise ValueError(f"unknown zoo members {unknown}; the zoo's members are {', '.join(ORDER)}")
    t0 = time.time()
    if jobs <= 1:
        out = _run_lane(wanted, str(runs_dir), str(out_dir), threads, progress, [])
        return ZooRun({n: Path(p) for n, p in out["paths"].items()}, [wanted], [out["account"]],
                      round(time.time() - t0, 1), 0.0)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    per_lane = threads or max(1, (torch.get_num_threads()) // jobs)
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    for n in wanted:  # markers of an earlier run must not release a dependent early
        for state in ("done", "failed"):
            _marker(str(runs_dir), n, state).unlink(missing_ok=True)
    plan = lanes(wanted, jobs, out_dir)
    with ProcessPoolExecutor(max_workers=len(plan), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_lane, lane, str(runs_dir), str(out_dir), per_lane, progress, wanted)
                   for lane in plan]
        results = [f.result() for f in futures]
    done = {k: Path(v) for r in results for k, v in r["paths"].items()}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ZooRun({n: done[n] for n in wanted}, plan, [r["account"] for r in results], round(time.time() - t0, 1),
                  round(usage.ru_utime + usage.ru_stime, 1))


def card_table(out_dir: Path = ZOO_DIR, hard: tuple[int, ...] = (3, 4)) -> str:
    """Markdown table of the zoo's measured numbers, read from the cards, with each member's seed and whether it
    meets its recipe's targets (`interp.organism.targets`; a replica that misses one is shown, not retrained)."""
    from interp.organism.targets import summary

    rows = [("| model | seed | params | train s | acc 1/2/3/4 (free) | CoT rate 1/2/3/4 | acc 3-4 free | CoT 3-4 | "
             "acc 3-4 forced CoT | targets |"),
            "|---|---:|---:|---:|---|---|---:|---:|---:|---|"]
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
            f"| {n} | {c['seed']} | {c['n_params']:,} | {c.get('wall_seconds', c['train_seconds']):.0f} | {acc} | "
            f"{cot} | {mean(free, 'accuracy'):.2f} | {mean(free, 'cot_rate'):.2f} | {mean(forced, 'accuracy'):.2f} | "
            f"{summary(n, out_dir)} |")
    return "\n".join(rows)


def update_card(name: str, fields: dict[str, Any], out_dir: Path = ZOO_DIR) -> Path:
    """Add measured fields to a shipped member's card (e.g. the calibration an analysis measured on it),
    refusing names without a card and keys that would overwrite the training record."""
    path = Path(out_dir) / short_name(name) / "card.json"
    if not path.is_file():
        raise FileNotFoundError(f"{name} has no card at {path}: train it first")
    card = read_json(path)
    protected = {"name", "kind", "seed", "steps", "config", "sha256", "eval", "init", "n_params", "libraries"}
    if set(fields) & protected:
        raise ValueError(f"update_card adds measurements; it does not overwrite {sorted(set(fields) & protected)}")
    write_json(path, {**card, **fields})
    return path


__all__ = [
    "BASE_MIX",
    "CARD_EVAL",
    "ORDER",
    "ORIGINAL_RECIPES",
    "RECIPES",
    "SIZES",
    "TASK",
    "ZooRun",
    "card_config",
    "card_eval",
    "card_table",
    "dependencies",
    "dependency",
    "export",
    "lanes",
    "member_cost",
    "recipe",
    "replicate",
    "seed_members",
    "train_all",
    "train_member",
    "update_card",
]
