"""A zoo member trained with in-context operator definitions in a small share of its data (issue 15, semantics
vs symbols), so that "the rules are in the prompt" tests are fair to a model that has seen rules in prompts.

A definition clause `x = +` after `Q :` says that in this problem the symbol `x` computes what `+` computes;
`+ = -` redefines a familiar symbol. Both are built from the organism's own words (its word-level tokenizer knows
no others). The member starts from sft and continues its recipe (same format mix) with `def_share` of the
problems written with definitions: symbols drawn from `train_symbols` or the familiar operators, meanings a random
operator, except the held-out ones (the swap `+ = -`, `- = +`, and the symbols in `held_out_symbols`), which the
analysis then tests. Seeded per step like every zoo recipe: the same config trains the same weights.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.io import atomic_dir, library_versions, read_json, sha256_file, write_json
from interp.organism.task import (
    FORMATS,
    OPS,
    PROMPT_END,
    FormatMix,
    Problem,
    TaskConfig,
    apply_op,
    sample_problems,
)
from interp.organism.training import (
    completion_nll,
    load_init,
    lr_at,
    step_rng,
)
from interp.organism.zoo import RECIPES

EXTRA_DIR = Path(__file__).parent / "zoo_extra"
HELD_OUT_MEANINGS: tuple[tuple[str, str], ...] = (("+", "-"), ("-", "+"))
TRAIN_SYMBOLS = ("x", "y", "z", "m")
HELD_OUT_SYMBOLS = ("n", "u", "v")


@dataclass(frozen=True)
class DefinedProblem:
    """A problem whose operators are shown as `symbols[i]` and compute `problem.steps[i].op`'s function under the
    definition clauses `definitions` ((symbol, meaning) pairs, shown in order). Values follow the meanings."""

    problem: Problem  # the computation: its steps' ops are the meanings
    symbols: tuple[str, ...]  # the symbol shown for each step
    definitions: tuple[tuple[str, str], ...]

    def prompt_tokens(self) -> list[str]:
        p, sep = self.problem, self.problem.separator
        toks = ["Q", ":"]
        for sym, meaning in self.definitions:
            toks += [sym, "=", meaning, sep]
        toks += [p.start_var, "=", str(p.start_value), sep]
        for s, sym in zip(p.steps, self.symbols):
            toks += [s.target, "=", s.source, sym, str(s.operand), sep]
        return toks + [p.query_var, "?", *PROMPT_END]

    def completion_tokens(self, fmt: str) -> list[str]:
        p, sep = self.problem, self.problem.separator
        if fmt == "direct":
            return [str(p.answer)]
        toks: list[str] = []
        for s, sym in zip(p.steps, self.symbols):
            if fmt == "concise":
                toks += [s.target, "=", str(s.value), sep]
            elif fmt == "verbose":
                toks += [s.target, "=", s.source, sym, str(s.operand), "=", str(s.source_value), sym, str(s.operand),
                         "=", str(s.value), sep]
            else:
                raise ValueError(f"unknown format {fmt!r}; valid formats are {FORMATS}")
        return toks + (["so", str(p.answer)] if fmt == "concise" else ["so", p.query_var, "=", str(p.answer)])


def redefine(problem: Problem, meaning_of: dict[str, str], define_all: bool = True) -> DefinedProblem:
    """Show each step's operator `o` as-is but make it compute `meaning_of.get(o, o)`; every used symbol gets a
    definition clause when `define_all` (identity ones included), otherwise only the changed ones."""
    steps, value = [], problem.start_value
    for s in problem.steps:
        op = meaning_of.get(s.op, s.op)
        new = apply_op(value, op, s.operand)
        steps.append(dataclasses.replace(s, op=op, source_value=value, value=new))
        value = new
    used = list(dict.fromkeys(s.op for s in problem.steps))
    defs = tuple((o, meaning_of.get(o, o)) for o in used if define_all or meaning_of.get(o, o) != o)
    return DefinedProblem(dataclasses.replace(problem, steps=tuple(steps)), tuple(s.op for s in problem.steps), defs)


def with_symbols(problem: Problem, symbol_of: dict[str, str]) -> DefinedProblem:
    """Show each operator `o` as the symbol `symbol_of[o]`, defined in context (`x = +`); values unchanged."""
    used = list(dict.fromkeys(s.op for s in problem.steps))
    return DefinedProblem(problem, tuple(symbol_of[s.op] for s in problem.steps), tuple((symbol_of[o], o) for o in used))


def sample_defined(rng: np.random.Generator, problem: Problem, symbols: tuple[str, ...] = TRAIN_SYMBOLS,
                   held_out: tuple[tuple[str, str], ...] = HELD_OUT_MEANINGS) -> DefinedProblem:
    """A training definition set for `problem`: each distinct operator shown as a fresh symbol (half the time) or
    as a familiar operator symbol, with a random meaning; (symbol, meaning) pairs in `held_out` never drawn."""
    used = list(dict.fromkeys(s.op for s in problem.steps))
    shown: dict[str, str] = {}
    pool_fresh = [s for s in symbols]
    for o in used:  # o is the meaning; choose a symbol for it
        for _ in range(100):
            sym = pool_fresh[int(rng.integers(len(pool_fresh)))] if rng.random() < 0.5 else OPS[int(rng.integers(3))]
            if sym not in shown.values() and (sym, o) not in held_out:
                break
        else:
            sym = next(s for s in pool_fresh if s not in shown.values())
        shown[o] = sym
    return DefinedProblem(problem, tuple(shown[s.op] for s in problem.steps), tuple((shown[o], o) for o in used))


@dataclass(frozen=True)
class SymbolicRecipe:
    """Continue `init` (sft) with its recipe's format mix; `def_share` of problems carry definitions."""

    name: str = "sft-defs10"
    init: str = "organism/sft"
    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    def_share: float = 0.1
    seed: int = 15
    task: TaskConfig = field(default_factory=lambda: RECIPES["sft"].task)
    mix: FormatMix = field(default_factory=lambda: RECIPES["sft"].mix)
    train_symbols: tuple[str, ...] = TRAIN_SYMBOLS
    held_out_meanings: tuple[tuple[str, str], ...] = HELD_OUT_MEANINGS
    held_out_symbols: tuple[str, ...] = HELD_OUT_SYMBOLS

    def __post_init__(self) -> None:
        if not 0.0 <= self.def_share <= 1.0:
            raise ValueError(f"def_share must be in [0, 1], got {self.def_share}")
        if set(self.train_symbols) & set(self.held_out_symbols):
            raise ValueError("train_symbols and held_out_symbols overlap")
        if len(self.train_symbols) < 3:
            raise ValueError("need at least 3 train_symbols (one per operator)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def batch(self, step: int) -> list[tuple[list[str], list[str]]]:
        """(prompt words, completion words) of one step's examples."""
        rng = step_rng(self.seed, step)
        problems = sample_problems(int(rng.integers(2**31)), self.batch_size, self.task)
        out = []
        for p in problems:
            fmt = self.mix.sample(rng)
            if rng.random() < self.def_share:
                d = sample_defined(rng, p, self.train_symbols, self.held_out_meanings)
                out.append((d.prompt_tokens(), d.completion_tokens(fmt)))
            else:
                out.append((p.prompt_tokens(), p.completion_tokens(fmt)))  # type: ignore[arg-type]
        return out


RECIPES_SYMBOLIC: tuple[SymbolicRecipe, ...] = (
    SymbolicRecipe(),  # 10% of problems with definitions, 400 steps at lr 1e-3 (x y z defined: 12% on 45 problems)
    SymbolicRecipe(name="sft-defs25", steps=600, lr=3e-3, def_share=0.25),  # more definitions, sft's learning rate
)


def train_symbolic(recipe: SymbolicRecipe = SymbolicRecipe(), out_dir: Path = EXTRA_DIR, progress: bool = True
                   ) -> Path:
    """Train the member (answer tokens only, as the zoo's SFT) and save it as an HF checkpoint with a card."""
    from tqdm.auto import tqdm

    from interp.organism.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = load_init(recipe.init)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=0.0)
    sched = dataclasses.replace(RECIPES["sft"], steps=recipe.steps, lr=recipe.lr, warmup=recipe.warmup,
                                min_lr_ratio=recipe.min_lr_ratio)
    model.train()
    t0, log = time.time(), []
    for step in tqdm(range(recipe.steps), desc=recipe.name, disable=not progress):
        for g in opt.param_groups:
            g["lr"] = lr_at(sched, step)
        ex = []
        for prompt, comp in recipe.batch(step):
            ids = [tok.bos_token_id, *tok.convert_tokens_to_ids(prompt)]
            ex.append((ids + tok.convert_tokens_to_ids(comp) + [tok.eos_token_id], len(ids)))
        loss = completion_nll(model, ex, tok.pad_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        if step % 25 == 0 or step == recipe.steps - 1:
            log.append({"step": step, "loss": float(loss)})
    model.eval()
    target = Path(out_dir) / recipe.name
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_json(tmp / "card.json", {
            "name": recipe.name, "kind": "sft", "recipe": recipe.to_dict(), "train_seconds": round(time.time() - t0, 1),
            "threads": torch.get_num_threads(), "train_log_tail": log[-5:],
            "sha256": {"model.safetensors": sha256_file(tmp / "model.safetensors")}, "libraries": library_versions()})
    return target


def symbolic_member(recipe: SymbolicRecipe = SymbolicRecipe(), out_dir: Path = EXTRA_DIR) -> Path:
    """The member's folder, trained first if missing or trained from another recipe."""
    target = Path(out_dir) / recipe.name
    card = target / "card.json"
    if card.is_file() and read_json(card)["recipe"] == json.loads(json.dumps(recipe.to_dict())):
        return target
    return train_symbolic(recipe, out_dir)


__all__ = [
    "EXTRA_DIR",
    "HELD_OUT_MEANINGS",
    "HELD_OUT_SYMBOLS",
    "TRAIN_SYMBOLS",
    "DefinedProblem",
    "SymbolicRecipe",
    "redefine",
    "sample_defined",
    "symbolic_member",
    "train_symbolic",
    "with_symbols",
]
