"""Regenerate a member's training problems from its recipe and count, for any problem, how often it (or its
prefix, its operator sequence, each of its steps) occurred in them.

Every training step draws its problems from a generator seeded by (recipe seed, step) (interp.organism.training):
pretraining and SFT batches and RL prompts are `sample_problems(rng.integers(2**31), batch, task)` with
`rng = step_rng(seed, step)`; DPO's pool is `sample_problems(seed + 7919, pool_problems, task)`. A post-trained
member saw its base's problems too, so its instances are its own draws plus its init's, recursively.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from interp.organism.task import Problem, TaskConfig, sample_problems
from interp.organism.training import TrainConfig, step_rng

Draw = tuple[int, int, TaskConfig]  # (sample_problems seed, number of problems, task)


def recipe_draws(cfg: TrainConfig) -> list[Draw]:
    """The `sample_problems` calls one recipe's training makes (its init's not included)."""
    if cfg.kind in ("pretrain", "sft", "rl"):
        return [(int(step_rng(cfg.seed, step).integers(2**31)), cfg.batch_size, cfg.task) for step in range(cfg.steps)]
    if cfg.kind == "dpo":
        return [(cfg.seed + 7919, cfg.dpo.pool_problems, cfg.task)]
    raise ValueError(f"unknown training kind {cfg.kind!r}")


def member_chain(name: str, recipes: dict[str, TrainConfig] | None = None) -> list[str]:
    """The recipes a zoo member's training ran, itself first, then the model it was initialised from, recursively."""
    from interp.organism.zoo import RECIPES, short_name

    recipes = RECIPES if recipes is None else recipes
    short: str | None = short_name(name)
    if short not in recipes:
        raise ValueError(f"no recipe for {name!r}; members with recipes: {', '.join(recipes)}")
    out: list[str] = []
    while short is not None and short not in out:
        out.append(short)
        init = recipes[short].init
        short = short_name(init) if init else None
        if short is not None and short not in recipes:
            raise ValueError(f"{name!r} starts from {init!r}, which has no recipe")
    return out


def member_draws(name: str, recipes: dict[str, TrainConfig] | None = None) -> list[Draw]:
    """A zoo member's draws and those of every model it was initialised from (`init` names a recipe)."""
    from interp.organism.zoo import RECIPES

    recipes = RECIPES if recipes is None else recipes
    return [d for short in member_chain(name, recipes) for d in recipe_draws(recipes[short])]


def exact_key(p: Problem) -> str:
    """The problem's identity for the model: start value, each step's (operator, operand), and the names."""
    return prefix_key(p, p.n_steps) + "|" + "".join([p.start_var, *(s.target for s in p.steps)]) + \
        "|" + ",".join(f"{n}{v}@{s}" for (n, v), s in zip(p.distractors, p.distractor_slots)) + p.separator


def prefix_key(p: Problem, j: int) -> str:
    """Start value and the first `j` steps (values only: names and separator follow the step count in training)."""
    return f"{p.start_value}" + "".join(f"{s.op}{s.operand}" for s in p.steps[:j])


def ops_key(p: Problem) -> str:
    return "".join(s.op for s in p.steps)


def triple_key(source_value: int, op: str, operand: int) -> str:
    return f"{source_value}{op}{operand}"


@dataclass
class TrainingIndex:
    """Counts over a member's training problems: exact problems, value prefixes of every length, operator
    sequences, and per-step (operand, operator, operand) triples."""

    exact: Counter
    prefixes: Counter
    op_sequences: Counter
    triples: Counter
    n_problems: int

    @classmethod
    def build(cls, draws: Sequence[Draw]) -> TrainingIndex:
        """Count every drawn problem; draws sharing a seed and task are generated once (a smaller draw is a
        prefix of a larger one: `sample_problems` draws problems in sequence)."""
        biggest: dict[tuple[int, str], int] = {}
        for seed, n, task in draws:
            key = (seed, repr(task))
            biggest[key] = max(biggest.get(key, 0), n)
        tasks = {(seed, repr(task)): task for seed, _, task in draws}
        generated = {k: sample_problems(k[0], n, tasks[k]) for k, n in biggest.items()}
        idx = cls(Counter(), Counter(), Counter(), Counter(), 0)
        for seed, n, task in draws:
            idx.add(generated[(seed, repr(task))][:n])
        return idx

    @classmethod
    def merged(cls, parts: Sequence[TrainingIndex]) -> TrainingIndex:
        """The index of all the parts' problems together (counts add up): a member's index from the indexes of
        the recipes it went through, so a recipe shared by several members (base-s under sft, rl and dpo) is
        regenerated and counted once."""
        idx = cls(Counter(), Counter(), Counter(), Counter(), 0)
        for part in parts:
            idx.exact.update(part.exact)
            idx.prefixes.update(part.prefixes)
            idx.op_sequences.update(part.op_sequences)
            idx.triples.update(part.triples)
            idx.n_problems += part.n_problems
        return idx

    def add(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.n_problems += 1
            self.exact[exact_key(p)] += 1
            self.op_sequences[ops_key(p)] += 1
            for j in range(1, p.n_steps + 1):
                self.prefixes[prefix_key(p, j)] += 1
            for s in p.steps:
                self.triples[triple_key(s.source_value, s.op, s.operand)] += 1

    def novelty(self, p: Problem) -> Novelty:
        """How novel `p` is against these training problems."""
        seen_prefix = max((j for j in range(1, p.n_steps + 1) if self.prefixes[prefix_key(p, j)]), default=0)
        return Novelty(exact=self.exact[exact_key(p)], longest_seen_prefix=seen_prefix,
                       op_sequence=self.op_sequences[ops_key(p)],
                       min_triple=min(self.triples[triple_key(s.source_value, s.op, s.operand)] for s in p.steps))


@dataclass(frozen=True)
class Novelty:
    """Training counts of one problem: the exact problem, the longest seen value prefix (steps), its operator
    sequence, and the rarest of its step triples."""

    exact: int
    longest_seen_prefix: int
    op_sequence: int
    min_triple: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


__all__ = ["Draw", "Novelty", "TrainingIndex", "exact_key", "member_chain", "member_draws", "ops_key", "prefix_key",
           "recipe_draws", "triple_key"]
