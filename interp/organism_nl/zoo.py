"""The natural-language zoo's recipes, in code: what each member is, how it is trained, how it is exported
and what it must reach.

    python -m interp.organism_nl.zoo train base --runs /tmp/nl-runs      # resumable; then sft, rl
    python -m interp.organism_nl.zoo table                               # targets, read from the cards

Each member is written as a Hugging Face checkpoint (safetensors, tokenizer files) with a `card.json`:
config, seed, steps, data mix, answer format, evaluation tables measured with `interp.evaluate` (free and
forced thinking, 200 problems per step count, bootstrap intervals), the targets, sha256 and library versions.

Feasibility, measured here (one torch thread, 2 cores shared with other jobs, 0.3-0.8 s per step of 32 rows):
- With HF's default init (std 0.02) the table of results was not learnt in budget: pretraining with 25% drill
  rows, lr 3e-3 to 5e-3, 800 steps of 32: teacher-forced 1-step thinking right 38%, result digits 36%, operand
  copies 36%; on drill rows alone, 300 steps of 32 (8 facts each) gave 19-23% at lr 3e-3 and 1e-2 and with a
  2-layer d=128 model alike.
- Init std 0.1 / 0.2 (drill rows alone, 200 steps, lr 3e-3): 68% / 95% of result digits right. The zoo
  uses 0.2.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from interp.io import atomic_dir, read_json, sha256_file, write_json
from interp.organism_nl.task import NLTask, NLTaskConfig
from interp.organism_nl.training import (
    Mix,
    NLArch,
    NLTrainConfig,
    RLConfig,
    TrainOutcome,
    provenance,
    train,
)

ZOO_DIR = Path(__file__).parent / "zoo"
PREFIX = "organism-nl/"
ORDER: tuple[str, ...] = ("base", "sft", "rl")
SEED = 0
TASK = NLTaskConfig(min_steps=1, max_steps=4)
# Training data after stage 1 weights the phrasings 1:1:1:3 (indices repeat to weight them): greedy decoding takes
# the modal path, and with uniform phrasings that path ran through the prefix `b =` that three formats share
# (measured on a first sft: greedy chose concise lines on 66% of problems, free accuracy 0.21-0.53 on 2-4 steps).
TRAIN_TASK = TASK.shifted(phrasings=(0, 1, 2, 3, 3, 3))
ARCH = NLArch(n_layers=4, d_model=64, n_heads=4, d_mlp=256, max_len=256, init_std=0.2)
ANSWER_FORMAT = ("values mod 10; the answer is the sentence ' The answer is N.' (6 tokens: the byte-level BPE "
                 "splits the digit from its space, one digit per token, as Qwen2's pre-tokenizer does); thinking "
                 "is '<think>' + one line per step in one of 4 phrasings (or 'x = N.' lines, concise) + '</think>'")

BASE_STAGE1 = NLTrainConfig(kind="pretrain", arch=ARCH, task=TASK,
                            mix=Mix(direct=0.5, think=0.25, think_concise=0.0, drill=0.25),
                            steps=1500, batch_size=32, lr=3e-3, warmup=50, seed=SEED, ckpt_every=50, eval_every=250)
# Stage 1 alone (measured): teacher-forced step results right 0.95-1.0, but in the `t = s * y = x * y = v`
# phrasing the copied source value x was right only 49% of the time (other phrasings 1.00), and greedy forced
# thinking picks that phrasing: forced accuracy 0.32/0.25/0.23 on 2/3/4 steps. Stage 2 continues pretraining
# with more thinking rows at a lower learning rate.
PRE_STAGES: dict[str, tuple[NLTrainConfig, ...]] = {"base": (BASE_STAGE1,)}

RECIPES: dict[str, NLTrainConfig] = {
    "base": NLTrainConfig(kind="pretrain", arch=ARCH, task=TRAIN_TASK,
                          mix=Mix(direct=0.5, think=0.3, think_concise=0.0, drill=0.2),
                          steps=600, batch_size=32, lr=1e-3, warmup=20, seed=SEED + 1, ckpt_every=50, eval_every=200),
    # distilled traces; as in R1's SFT data, simple (1-step) problems are sometimes answered without thinking
    "sft": NLTrainConfig(kind="sft", arch=ARCH, task=TRAIN_TASK,
                         mix=Mix(direct=0.2, think=0.75, think_concise=0.05, direct_up_to=1),
                         steps=300, batch_size=32, lr=1e-3, warmup=20, seed=SEED, init=PREFIX + "base", ckpt_every=50),
    # Group REINFORCE from base, as the first zoo's rl, 8 problems x 8 samples per step. Measured first from sft
    # (80 steps, lr 1e-3, length cost 0.005): sampled thinking rose to 98-100% and greedy thinking stayed 100% on
    # 1-step problems (free accuracy 1.00/0.99/1.00/0.97): sft's direct answers, 20% of its 1-step data, lost to
    # its traces, so that rl could not think less than sft on easy problems.
    # Stage 2 of rl (stage 1: RL_STAGE1 below) continues GRPO at a steady learning rate.
    "rl": NLTrainConfig(kind="rl", arch=ARCH, task=TRAIN_TASK, steps=100, batch_size=8, lr=3e-4, warmup=5, seed=SEED + 1,
                        init="previous stage", ckpt_every=10, min_lr_ratio=1.0,
                        rl=RLConfig(group_size=8, length_cost=0.005, temperature=1.0, max_new_tokens=96,
                                    normalize=True)),
}
assert set(RECIPES) == set(ORDER)
# Then from base with plain group-mean baselines (100 steps, lr 1e-3): thinking 100% at every step count, easy
# problems dragged along by the hard ones (free accuracy 0.97/0.94/0.995/0.96). GRPO's std normalisation gives
# easy problems, whose samples differ only in length, as much pull as hard ones: stage 1 alone (100 steps, lr 3e-4
# cosine) gave free accuracy 1.00 at 1-4 steps, greedy thinking 100% everywhere, P(<think>) 0.87 on 1-step
# problems (sft 0.84) and 0.91 on 4-step ones (sft 0.99). Stage 2 (100 more steps at a constant 3e-4): P(<think>)
# 0.004 on 1-step problems and 0.99 on 2-4-step ones; greedy: direct on every 1-step problem (accuracy 0.965),
# thinking on every 2-4-step one (accuracy 1.00/0.99/0.995).
RL_STAGE1 = NLTrainConfig(kind="rl", arch=ARCH, task=TRAIN_TASK, steps=100, batch_size=8, lr=3e-4, warmup=5, seed=SEED,
                          init=PREFIX + "base", ckpt_every=10,
                          rl=RLConfig(group_size=8, length_cost=0.005, temperature=1.0, max_new_tokens=96,
                                      normalize=True))
PRE_STAGES["rl"] = (RL_STAGE1,)

EVAL_STEPS: tuple[int, ...] = (1, 2, 3, 4)
EVAL_N = 200
EVAL_SEED = 1000003
MAX_NEW_TOKENS = 96
HARD: tuple[int, ...] = (3, 4)
EASY: tuple[int, ...] = (1,)


def short_name(name: str) -> str:
    return name.removeprefix(PREFIX)


def member_path(name: str, zoo_dir: Path = ZOO_DIR) -> Path:
    """Folder of a member given `organism-nl/<name>` or `<name>`; clear errors for unknown or untrained ones."""
    short = short_name(name)
    if short not in ORDER:
        import difflib

        near = difflib.get_close_matches(short, ORDER, n=3, cutoff=0.3)
        hint = f" Did you mean {', '.join(PREFIX + n for n in near)}?" if near else ""
        raise ValueError(f"unknown model {name!r}.{hint} The natural-language zoo holds: "
                         f"{', '.join(PREFIX + n for n in ORDER)}")
    path = Path(zoo_dir) / short
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{PREFIX + short} is not trained yet: {path} has no config.json. Train it with "
                                f"`python -m interp.organism_nl.zoo train {short} --runs DIR`")
    return path


def recipe(name: str, zoo_dir: Path = ZOO_DIR) -> NLTrainConfig:
    """The member's config, with `init` pointing at the member in `zoo_dir` it starts from."""
    short = short_name(name)
    if short not in RECIPES:
        raise ValueError(f"no recipe for {name!r}; the zoo's members are {', '.join(ORDER)}")
    cfg = RECIPES[short]
    if cfg.init and cfg.init.startswith(PREFIX):
        cfg = dataclasses.replace(cfg, init=str(Path(zoo_dir) / short_name(cfg.init)))
    return cfg


def eval_items(task: NLTask, steps: tuple[int, ...] = EVAL_STEPS, n: int = EVAL_N, seed: int = EVAL_SEED) -> list[Any]:
    return [it for k in steps for it in task.sample(n, seed + k, n_steps=k)]


def card_eval(path: Path, steps: tuple[int, ...] = EVAL_STEPS, n: int = EVAL_N) -> dict[str, Any]:
    """Free and forced-thinking tables measured with `interp.evaluate` on the exported checkpoint."""
    from interp.evaluation import GenerationConfig, evaluate
    from interp.models import load

    model = load(path)
    task = NLTask(TASK)
    items = eval_items(task, steps, n)
    out: dict[str, Any] = {}
    for mode, force in (("free", "free"), ("forced_cot", "cot")):
        res = evaluate(model, task, items, GenerationConfig(force=force, max_new_tokens=MAX_NEW_TOKENS))  # type: ignore[arg-type]
        out[mode] = {"config": res.config.to_dict(), "n_per_step": n,
                     "by_steps": {k: s.to_dict() for k, s in res.by_group.items()},
                     "examples": {k: next(c for it, c in zip(res.items, res.completions) if str(it.meta["n_steps"]) == k)
                                  for k in res.by_group}}
    return out


def _mean(table: Mapping[str, Any], keys: tuple[int, ...], field_: str) -> float:
    return sum(table[str(k)][field_] for k in keys) / len(keys)


def _ci(table: Mapping[str, Any], keys: tuple[int, ...], field_: str) -> tuple[float, float]:
    """Interval of the mean over step counts: the mean of the per-step-count interval ends (groups are
    equal-sized and independent, so this is conservative)."""
    lo = sum(table[str(k)][f"{field_}_ci"][0] for k in keys) / len(keys)
    hi = sum(table[str(k)][f"{field_}_ci"][1] for k in keys) / len(keys)
    return round(lo, 3), round(hi, 3)


def targets(cards: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each target of issue 13 with the measured value, its interval and whether it is met (missing members
    give `met: None`)."""
    rows: list[dict[str, Any]] = []

    def ev(name: str) -> Mapping[str, Any] | None:
        c = cards.get(name)
        return c["eval"] if c else None

    base = ev("base")
    if base is not None:
        forced, free = base["forced_cot"]["by_steps"], base["free"]["by_steps"]
        gap = _mean(forced, HARD, "accuracy") - _mean(free, HARD, "accuracy")
        rows.append({"target": f"base: forced-thinking accuracy on {HARD} >= free accuracy + 0.30",
                     "value": round(gap, 3), "forced": round(_mean(forced, HARD, "accuracy"), 3),
                     "forced_ci": _ci(forced, HARD, "accuracy"), "free": round(_mean(free, HARD, "accuracy"), 3),
                     "free_ci": _ci(free, HARD, "accuracy"), "met": gap >= 0.30})
    else:
        rows.append({"target": "base: forced-thinking gap >= 0.30", "met": None})
    for name in ("sft", "rl"):
        e = ev(name)
        if e is None:
            rows.append({"target": f"{name}: thinks on >= 90% of hard problems, accuracy >= 0.85", "met": None})
            continue
        free = e["free"]["by_steps"]
        cot, acc = _mean(free, HARD, "cot_rate"), _mean(free, HARD, "accuracy")
        rows.append({"target": f"{name}: thinks on >= 90% of problems with {HARD} steps", "value": round(cot, 3),
                     "ci": _ci(free, HARD, "cot_rate"), "met": cot >= 0.90})
        rows.append({"target": f"{name}: free accuracy >= 0.85 on {HARD} steps", "value": round(acc, 3),
                     "ci": _ci(free, HARD, "accuracy"), "met": acc >= 0.85})
    sft, rl = ev("sft"), ev("rl")
    if sft is not None and rl is not None:
        a, b = _mean(rl["free"]["by_steps"], EASY, "cot_rate"), _mean(sft["free"]["by_steps"], EASY, "cot_rate")
        rows.append({"target": f"rl thinks less than sft on {EASY}-step problems", "rl": round(a, 3),
                     "rl_ci": _ci(rl["free"]["by_steps"], EASY, "cot_rate"), "sft": round(b, 3),
                     "sft_ci": _ci(sft["free"]["by_steps"], EASY, "cot_rate"), "met": a < b})
    else:
        rows.append({"target": "rl thinks less than sft on easy problems", "met": None})
    return rows


def read_cards(zoo_dir: Path = ZOO_DIR) -> dict[str, dict[str, Any]]:
    return {n: read_json(Path(zoo_dir) / n / "card.json") for n in ORDER if (Path(zoo_dir) / n / "card.json").exists()}


def export(name: str, outcome: TrainOutcome, zoo_dir: Path = ZOO_DIR, wall_seconds: float | None = None,
           eval_n: int = EVAL_N, stages: list[dict[str, Any]] | None = None) -> Path:
    """Write the member as an HF checkpoint plus `card.json` (evaluated on the written files), atomically."""
    short = short_name(name)
    cfg = outcome.config
    with atomic_dir(Path(zoo_dir) / short) as tmp:
        outcome.model.save_pretrained(tmp, safe_serialization=True)
        outcome.tokenizer.save_pretrained(tmp)
        t0 = time.time()
        evals = card_eval(tmp, n=eval_n)
        init = PREFIX + Path(cfg.init).name if cfg.init else None
        if stages:
            init = f"stage {len(stages)} of this recipe (see stages)"
        card = {
            "name": PREFIX + short,
            "kind": cfg.kind,
            "architecture": "Qwen2ForCausalLM",
            "seed": cfg.seed,
            "steps": cfg.steps,
            "data_mix": cfg.mix.to_dict() if cfg.kind in ("pretrain", "sft") else None,
            "init": init,
            "answer_format": ANSWER_FORMAT,
            "tokenizer": {"kind": "byte-level BPE (tokenizers), Qwen2 pre-tokenizer regex", "vocab_size": len(outcome.tokenizer),
                          "trained_on": cfg.tokenizer.to_dict() if cfg.kind == "pretrain" else f"copied from {init}",
                          "pre_tokenizer": "Qwen2 regex (one digit per token) + byte-level", "bos": None,
                          "special": ["<|endoftext|> (eos, pad)", "<think>", "</think>"]},
            "train_seconds": round(outcome.seconds + sum(st["train_seconds"] for st in stages or []), 1),
            "stages": stages or [],
            "wall_seconds": round(wall_seconds, 1) if wall_seconds is not None else None,
            "eval_seconds": round(time.time() - t0, 1),
            "torch_threads": torch.get_num_threads(),
            "sha256": {f: sha256_file(tmp / f) for f in ("model.safetensors", "tokenizer.json")},
            "eval": evals,
            "train_log_tail": outcome.log[-5:],
            **provenance(dataclasses.replace(cfg, init=init), outcome.model),
        }
        others = {n: c for n, c in read_cards(zoo_dir).items() if n != short}
        card["targets"] = [t for t in targets({**others, short: card}) if t["target"].startswith(short)]
        write_json(tmp / "card.json", card)
    return Path(zoo_dir) / short


def train_member(name: str, runs_dir: Path, zoo_dir: Path = ZOO_DIR, threads: int = 1, progress: bool = False,
                 stop_after: int | None = None, config: NLTrainConfig | None = None, eval_n: int = EVAL_N) -> Path | None:
    """Train (resuming from `runs_dir`) and export one member; None when `stop_after` ended it early.
    `config` replaces the recipe (tests train tiny members), `eval_n` the card's problems per step count."""
    if threads:
        torch.set_num_threads(threads)
    cfg = config if config is not None else recipe(name, zoo_dir)
    short = short_name(name)
    t0 = time.time()
    stages: list[dict[str, Any]] = []
    if config is None and short in PRE_STAGES:  # earlier stages run first; the recipe continues from the last
        for i, st_cfg in enumerate(PRE_STAGES[short]):
            if st_cfg.init and st_cfg.init.startswith(PREFIX):
                st_cfg = dataclasses.replace(st_cfg, init=str(Path(zoo_dir) / short_name(st_cfg.init)))
            run = Path(runs_dir) / (short if i == 0 else f"{short}-stage{i + 1}")
            out = train(dataclasses.replace(st_cfg, init=stages[-1]["path"]) if stages else st_cfg, run,
                        stop_after=stop_after, progress=progress)
            if out.steps_done < st_cfg.steps:
                return None
            out.model.save_pretrained(run / "model", safe_serialization=True)
            out.tokenizer.save_pretrained(run / "model")
            stages.append({"path": str(run / "model"), "config": st_cfg.to_dict(), "train_seconds": round(out.seconds, 1),
                           "train_log_tail": out.log[-3:]})
        cfg = dataclasses.replace(cfg, init=stages[-1]["path"])
    outcome = train(cfg, Path(runs_dir) / (f"{short}-final" if stages else short), stop_after=stop_after,
                    progress=progress)
    if outcome.steps_done < cfg.steps:
        return None
    for st in stages:
        st.pop("path")
    return export(name, outcome, zoo_dir, wall_seconds=time.time() - t0, eval_n=eval_n, stages=stages)


def table(zoo_dir: Path = ZOO_DIR) -> str:
    """Markdown: each member's free accuracy / thinking rate per step count and the targets."""
    cards = read_cards(zoo_dir)
    rows = ["| model | params | train s | acc 1/2/3/4 free | think 1/2/3/4 | acc 1/2/3/4 forced think |",
            "|---|---:|---:|---|---|---|"]
    for n, c in cards.items():
        free, forced = c["eval"]["free"]["by_steps"], c["eval"]["forced_cot"]["by_steps"]
        ks = sorted(free, key=int)
        rows.append(f"| {n} | {c['n_params']:,} | {c['train_seconds']:.0f} | "
                    + " | ".join("/".join(f"{t[k][m]:.2f}" for k in ks) for t, m in
                                 ((free, "accuracy"), (free, "cot_rate"), (forced, "accuracy"))) + " |")
    rows += ["", "| target | measured | met |", "|---|---|---|"]
    for t in targets(cards):
        shown = {k: v for k, v in t.items() if k not in ("target", "met")}
        rows.append(f"| {t['target']} | {shown or 'not trained'} | {t['met']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m interp.organism_nl.zoo")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train (resumably) and export members in order")
    t.add_argument("names", nargs="+", choices=ORDER)
    t.add_argument("--runs", required=True, type=Path, help="run directory (checkpoints to resume from)")
    t.add_argument("--zoo", type=Path, default=ZOO_DIR)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--stop-after", type=int, default=None, help="stop each run after this many steps")
    s = sub.add_parser("table", help="print the zoo's numbers and targets from the cards")
    s.add_argument("--zoo", type=Path, default=ZOO_DIR)
    args = ap.parse_args(argv)
    if args.cmd == "train":
        for n in args.names:
            print(n, train_member(n, args.runs, args.zoo, args.threads, progress=False, stop_after=args.stop_after),
                  flush=True)
    else:
        print(table(args.zoo))


if __name__ == "__main__":
    main()


__all__ = [
    "ANSWER_FORMAT",
    "ARCH",
    "EASY",
    "EVAL_N",
    "EVAL_SEED",
    "EVAL_STEPS",
    "HARD",
    "ORDER",
    "PREFIX",
    "RECIPES",
    "TASK",
    "ZOO_DIR",
    "card_eval",
    "eval_items",
    "export",
    "member_path",
    "read_cards",
    "recipe",
    "table",
    "targets",
    "train_member",
]
