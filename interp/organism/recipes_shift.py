"""Fine-tunes with a share of shifted data (issue 15, SFT recovery; DataAlchemy, arXiv 2508.01191): continue a zoo
member (sft) with its own recipe's format mix on in-distribution problems, a share `shifted_share` of each batch's
problems drawn from a shifted task instead (more steps than trained, another separator, renamed variables).

Seeded per step like every zoo recipe, with common random numbers across shares: a step's in-distribution problems
are the first problems of one seeded draw, and its shifted ones come from a second stream, so two recipes that differ
only in the share see the same in-distribution problems (minus those the shifted ones replace). The same recipe
trains the same weights; a trained member is cached under its recipe's hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.io import atomic_dir, library_versions, read_json, sha256_file, write_json
from interp.organism.task import FormatMix, Problem, TaskConfig, sample_problems
from interp.organism.training import (
    completion_nll,
    example_ids,
    load_init,
    lr_at,
    step_rng,
)
from interp.organism.zoo import RECIPES

SHIFTED_STREAM = 1  # step_rng stream of the shifted problems (stream 0: the in-distribution ones)


@dataclass(frozen=True)
class MixtureRecipe:
    """Continue `init` for `steps` steps (answer tokens only, the sft recipe's format mix); each batch problem is
    drawn from `shifted` with probability `shifted_share`, else from `task` (the zoo's training distribution)."""

    shifted: TaskConfig
    shifted_share: float = 0.0
    init: str = "organism/sft"
    steps: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    task: TaskConfig = field(default_factory=lambda: RECIPES["sft"].task)
    mix: FormatMix = field(default_factory=lambda: RECIPES["sft"].mix)

    def __post_init__(self) -> None:
        if not 0.0 <= self.shifted_share <= 1.0:
            raise ValueError(f"shifted_share must be in [0, 1], got {self.shifted_share}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixtureRecipe:
        d = dict(d)
        d["shifted"], d["task"] = TaskConfig.from_dict(d["shifted"]), TaskConfig.from_dict(d["task"])
        d["mix"] = FormatMix.from_dict(d["mix"])
        return cls(**d)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def batch(self, step: int) -> list[tuple[Problem, str, bool]]:
        """One step's (problem, format, shifted?) triples: a Binomial(batch_size, shifted_share) count of shifted
        problems, the rest in distribution (the first of the step's in-distribution draw)."""
        rng, rng_sh = step_rng(self.seed, step), step_rng(self.seed, step, SHIFTED_STREAM)
        base = sample_problems(int(rng.integers(2**31)), self.batch_size, self.task)
        fmts = [self.mix.sample(rng) for _ in base]
        n_sh = int(rng_sh.binomial(self.batch_size, self.shifted_share))
        shifted = sample_problems(int(rng_sh.integers(2**31)), n_sh, self.shifted)
        fmts_sh = [self.mix.sample(rng_sh) for _ in shifted]
        keep = self.batch_size - n_sh
        return ([(p, f, False) for p, f in zip(base[:keep], fmts[:keep])]
                + [(p, f, True) for p, f in zip(shifted, fmts_sh)])

    def shifted_prompts(self) -> set[str]:
        """The prompts of every shifted training problem (to count evaluation problems seen in training)."""
        return {p.prompt() for s in range(self.steps) for p, _, sh in self.batch(s) if sh}


def train_mixture(recipe: MixtureRecipe, out: str | Path, progress: bool = False) -> Path:
    """Train the recipe and save an HF checkpoint with a card (recipe, seconds, threads, shifted examples seen)."""
    from tqdm.auto import tqdm

    from interp.organism.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = load_init(recipe.init)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=0.0)
    sched = dataclasses.replace(RECIPES["sft"], steps=recipe.steps, lr=recipe.lr, warmup=recipe.warmup,
                                min_lr_ratio=recipe.min_lr_ratio)
    model.train()
    t0, cpu0, log, n_shifted = time.time(), time.process_time(), [], 0
    for step in tqdm(range(recipe.steps), desc=f"mixture {recipe.shifted_share}", disable=not progress):
        for g in opt.param_groups:
            g["lr"] = lr_at(sched, step)
        batch = recipe.batch(step)
        n_shifted += sum(sh for _, _, sh in batch)
        ex = [example_ids(tok, p, f) for p, f, _ in batch]
        loss = completion_nll(model, ex, tok.pad_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        if step % 25 == 0 or step == recipe.steps - 1:
            log.append({"step": step, "loss": loss.item()})
    model.eval()
    target = Path(out)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_json(tmp / "card.json", {
            "name": f"mixture-{recipe.key()}", "kind": "sft", "recipe": recipe.to_dict(),
            "train_seconds": round(time.time() - t0, 1), "train_cpu_seconds": round(time.process_time() - cpu0, 1),
            "threads": torch.get_num_threads(), "shifted_examples": n_shifted,
            "examples": recipe.steps * recipe.batch_size, "train_log_tail": log[-5:],
            "sha256": {"model.safetensors": sha256_file(tmp / "model.safetensors")}, "libraries": library_versions()})
    return target


def mixture_member(recipe: MixtureRecipe, root: str | Path, progress: bool = False) -> Path:
    """The recipe's checkpoint under `root` (named by the recipe's hash), trained first if missing."""
    target = Path(root) / f"mixture-{recipe.key()}"
    card = target / "card.json"
    if card.is_file() and read_json(card)["recipe"] == json.loads(json.dumps(recipe.to_dict())):
        return target
    return train_mixture(recipe, target, progress)


__all__ = ["MixtureRecipe", "mixture_member", "train_mixture"]
