"""The behaviour post-training changed, per problem: accuracy and CoT rate of greedy answers to the organism
task (graded by `interp.organism.grader`), and KL to the tuned model's next-token distribution, each with
a bootstrap interval over problems. Problems, prompts and grading are `interp.organism.evaluate`'s own;
this module keeps the per-problem values so that any intervention and any subset share one sample."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from analyses.layer_changes.anatomy import left_pad_positions
from interp.generate import generate_ids, left_pad
from interp.organism.evaluate import EvalConfig, bootstrap_ci, cot_prefix
from interp.organism.grader import grade
from interp.organism.task import Problem

Generator = Callable[[list[list[int]]], list[list[int]]]  # prompt ids -> completion ids


def problems_of(cfg: EvalConfig) -> list[Problem]:
    """The evaluation's problems, step count by step count (the same ones `evaluate` draws)."""
    out: list[Problem] = []
    for k in cfg.steps:
        out += cfg.problems(k)
    return out


def check_task_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise unless every task word is one token (the organism tokenizer): grading reads tokens as words."""
    from interp.organism.task import vocabulary

    vocab = tokenizer.get_vocab()
    missing = [w for w in vocabulary() if w not in vocab]
    if missing:
        raise ValueError(f"the behaviour measurements (CoT rate, accuracy) use the organism task, whose words must "
                         f"each be one token; this tokenizer lacks {missing[:8]}{' ...' if len(missing) > 8 else ''}. "
                         f"For this pair pass your own prompts (texts=..., `--texts FILE`) to measure "
                         f"representations and grafting (KL) on them, or run parts=('weights',)")


def prompt_ids(tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem], force_cot: bool = False) -> list[list[int]]:
    """BOS + prompt tokens (+ the first CoT token when forced), as `evaluate` builds them."""
    return [[tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(p.prompt_tokens() + (cot_prefix(p) if force_cot else []))]
            for p in problems]


def hf_generator(hf: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: EvalConfig) -> Generator:
    """Greedy (or sampled, per `cfg`) completions from a HF model; forward hooks on it stay active."""
    return lambda prompts: generate_ids(hf, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, cfg.seed,
                                        cfg.batch_size)


@dataclass(frozen=True)
class Behaviour:
    """Per-problem correctness and CoT use of one model or intervention, with means and 95% bootstrap CIs."""

    correct: tuple[bool, ...]
    cot: tuple[bool, ...]
    steps: tuple[int, ...]
    accuracy: float
    cot_rate: float
    accuracy_ci: tuple[float, float]
    cot_rate_ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Behaviour":
        return cls(tuple(d["correct"]), tuple(d["cot"]), tuple(d["steps"]), d["accuracy"], d["cot_rate"],
                   tuple(d["accuracy_ci"]), tuple(d["cot_rate_ci"]))

    def subset(self, steps: Sequence[int], metric: str) -> float:
        """Mean of `correct` or `cot` over problems with the given step counts."""
        vals = [v for v, k in zip(getattr(self, metric), self.steps) if k in steps]
        return float(np.mean(vals)) if vals else float("nan")


def behaviour_of(grades_correct: Sequence[bool], grades_cot: Sequence[bool], steps: Sequence[int],
                 n_boot: int, seed: int = 0) -> Behaviour:
    acc, cot = np.array(grades_correct, float), np.array(grades_cot, float)
    return Behaviour(tuple(bool(x) for x in grades_correct), tuple(bool(x) for x in grades_cot), tuple(steps),
                     float(acc.mean()), float(cot.mean()), bootstrap_ci(acc, n_boot, seed), bootstrap_ci(cot, n_boot, seed))


def grade_behaviour(tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem], completions: Sequence[Sequence[int]],
                    n_boot: int, force_cot: bool = False) -> Behaviour:
    """Grade completions (the forced CoT token counts as written) and summarise them with bootstrap CIs."""
    pre = [cot_prefix(p) if force_cot else [] for p in problems]
    grades = [grade(p, x + tokenizer.convert_ids_to_tokens(list(c))) for p, x, c in zip(problems, pre, completions)]
    return behaviour_of([g.correct for g in grades], [g.format in ("concise", "verbose") for g in grades],
                        [p.n_steps for p in problems], n_boot)


def measure(generate: Generator, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem], cfg: EvalConfig,
            force_cot: bool = False) -> Behaviour:
    """Generate for every problem, grade, and summarise (accuracy, CoT rate) with bootstrap CIs."""
    return grade_behaviour(tokenizer, problems, generate(prompt_ids(tokenizer, problems, force_cot)), cfg.n_boot,
                           force_cot)


@dataclass(frozen=True)
class Reference:
    """Sequences (prompt + the tuned model's greedy completion) and the tuned model's next-token log-probs on
    the positions that predict the completion: the target every KL is measured against."""

    seqs: tuple[tuple[int, ...], ...]
    prompt_lens: tuple[int, ...]
    logprobs: tuple[torch.Tensor, ...]  # per problem: [completion positions, vocab]


@torch.no_grad()
def completion_logprobs(hf: PreTrainedModel, seqs: Sequence[Sequence[int]], prompt_lens: Sequence[int], pad_id: int,
                        batch_size: int = 256) -> list[Float[torch.Tensor, "pos vocab"]]:
    """Log-probs at the positions that predict each sequence's completion (last prompt token onward)."""
    out: list[torch.Tensor] = []
    dev = next(hf.parameters()).device
    for s in range(0, len(seqs), batch_size):
        chunk = [list(x) for x in seqs[s:s + batch_size]]
        ids, mask = left_pad(chunk, pad_id)
        ids, mask = ids.to(dev), mask.to(dev)
        logp = F.log_softmax(hf(input_ids=ids, attention_mask=mask, position_ids=left_pad_positions(mask)).logits.float(), -1)
        width = ids.shape[1]
        for row, (seq, pl) in enumerate(zip(chunk, prompt_lens[s:s + batch_size])):
            pad = width - len(seq)
            out.append(logp[row, pad + pl - 1: width - 1].cpu() if len(seq) > pl else logp[row, width - 1:].cpu())
    return out


def reference(tuned: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[int]],
              cfg: EvalConfig) -> Reference:
    """The tuned model's own greedy completions of the prompts (token ids) and its log-probs along them."""
    prompts = [list(p) for p in prompts]
    comps = generate_ids(tuned, tokenizer, prompts, cfg.max_new_tokens, 0.0, cfg.seed, cfg.batch_size)
    seqs = [p + c for p, c in zip(prompts, comps)]
    lens = [len(p) for p in prompts]
    lp = completion_logprobs(tuned, seqs, lens, tokenizer.pad_token_id)
    return Reference(tuple(tuple(s) for s in seqs), tuple(lens), tuple(lp))


@dataclass(frozen=True)
class KL:
    """Mean over problems of the per-problem mean KL(tuned || model) along the tuned model's completion."""

    mean: float
    ci: tuple[float, float]
    per_problem: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KL":
        return cls(d["mean"], tuple(d["ci"]), tuple(d["per_problem"]))


def kl_to_tuned(hf: PreTrainedModel, ref: Reference, pad_id: int, n_boot: int) -> KL:
    """KL(p_tuned || p_model) per completion position, averaged per problem, with a bootstrap CI over problems."""
    lp = completion_logprobs(hf, ref.seqs, ref.prompt_lens, pad_id)
    per = np.array([float((t.exp() * (t - m)).sum(-1).mean()) for t, m in zip(ref.logprobs, lp)])
    return KL(float(per.mean()), bootstrap_ci(per, n_boot), tuple(float(x) for x in per))


__all__ = ["Behaviour", "KL", "Reference", "Generator", "problems_of", "prompt_ids", "hf_generator", "measure",
           "behaviour_of", "grade_behaviour", "reference", "kl_to_tuned", "completion_logprobs", "check_task_tokenizer"]
