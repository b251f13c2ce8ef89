"""The behaviour post-training changed, per item: accuracy and CoT rate of greedy answers to a task (graded
by the task, as `interp.evaluate` grades them), and KL to the tuned model's next-token distribution, each
with a bootstrap interval over items. Items, prompts (the task's prompt, plus its chain-of-thought prefix
when forced) and grading are the core evaluation's; this module keeps the per-item values so that any
intervention (grafting, ablation, a mixture of models) and any subset share one sample."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float

from analyses.layer_changes.anatomy import left_pad_positions
from interp.generate import generate_ids, left_pad
from interp.organism.evaluate import EvalConfig, bootstrap_ci
from interp.tasks.encode import encode_text

if TYPE_CHECKING:
    from interp.models import Model
    from interp.tasks import Item, Task

Generator = Callable[[list[list[int]]], list[list[int]]]  # prompt ids -> completion ids


def items_of(task: Task, cfg: EvalConfig) -> list[Item]:
    """The evaluation's items, step count by step count (on the organism: the problems `evaluate` draws)."""
    from analyses.zoo_eval import sample_items

    return sample_items(task, cfg)


def check_task_model(model: Model, task: Task, items: Sequence[Item]) -> None:
    """Raise unless the model's tokenizer can encode the task's prompts, pointing at the ways out."""
    try:
        for it in items[:50]:
            encode_text(model, task.prompt(it), task.cot_prefix(it))
    except ValueError as e:
        raise ValueError(f"the behaviour measurements (CoT rate, accuracy) use the task {task.name!r}, whose "
                         f"prompts {model.name}'s tokenizer cannot encode ({e}). Pass a task this pair can read "
                         f"(task=...), or pass your own prompts (texts=..., `--texts FILE`) to measure representations "
                         f"and grafting (KL) on them, or run parts=('weights',)") from None


def prompt_ids(model: Model, task: Task, items: Sequence[Item], force_cot: bool = False) -> list[list[int]]:
    """Prompt ids by the model's BOS rule (+ the task's chain-of-thought prefix when forced), as
    `interp.evaluate` builds them."""
    return [list(encode_text(model, task.prompt(it), task.cot_prefix(it) if force_cot else "").ids) for it in items]


def model_generator(model: Model, cfg: EvalConfig) -> Generator:
    """Greedy (or sampled, per `cfg`) completions of token-id prompts, generated as `interp.evaluate` does (on
    the model's HF view, so grafted weights and ablation hooks act)."""
    return lambda prompts: generate_ids(model.hf, model.tokenizer, prompts, cfg.max_new_tokens, cfg.temperature,
                                        cfg.seed, cfg.batch_size)


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
    def from_dict(cls, d: dict[str, Any]) -> Behaviour:
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


def completion_texts(model: Model, task: Task, items: Sequence[Item], completions: Sequence[Sequence[int]],
                     force_cot: bool = False) -> list[str]:
    """Completion ids as the text the task grades: the forced prefix (when forced) decoded together with what
    followed it, as `interp.evaluate` does."""
    out = []
    for it, c in zip(items, completions):
        pre = []
        if force_cot:
            enc = encode_text(model, task.prompt(it), task.cot_prefix(it))
            pre = list(enc.ids[enc.n_prompt:])
        out.append(model.tokenizer.decode(pre + list(c), skip_special_tokens=False))
    return out


def grade_behaviour(model: Model, task: Task, items: Sequence[Item], completions: Sequence[Sequence[int]],
                    n_boot: int, force_cot: bool = False) -> Behaviour:
    """Grade completions with the task (the forced prefix counts as written) and summarise them with bootstrap CIs."""
    grades = [task.grade(it, t) for it, t in zip(items, completion_texts(model, task, items, completions, force_cot))]
    return behaviour_of([g.correct for g in grades], [g.cot for g in grades],
                        [int(it.meta.get("n_steps", 0)) for it in items], n_boot)


def measure(generate: Generator, model: Model, task: Task, items: Sequence[Item], cfg: EvalConfig,
            force_cot: bool = False) -> Behaviour:
    """Generate for every item (with `generate`: a model, a grafted or ablated one, a mixture), grade with the
    task, and summarise (accuracy, CoT rate) with bootstrap CIs."""
    return grade_behaviour(model, task, items, generate(prompt_ids(model, task, items, force_cot)), cfg.n_boot,
                           force_cot)


@dataclass(frozen=True)
class Reference:
    """Sequences (prompt + the tuned model's greedy completion) and the tuned model's next-token log-probs on
    the positions that predict the completion: the target every KL is measured against."""

    seqs: tuple[tuple[int, ...], ...]
    prompt_lens: tuple[int, ...]
    logprobs: tuple[torch.Tensor, ...]  # per problem: [completion positions, vocab]


@torch.no_grad()
def completion_logprobs(model: Model, seqs: Sequence[Sequence[int]], prompt_lens: Sequence[int],
                        batch_size: int = 256) -> list[Float[torch.Tensor, "pos vocab"]]:
    """Log-probs at the positions that predict each sequence's completion (last prompt token onward)."""
    hf = model.hf
    out: list[torch.Tensor] = []
    dev = next(hf.parameters()).device
    for s in range(0, len(seqs), batch_size):
        chunk = [list(x) for x in seqs[s:s + batch_size]]
        ids, mask = left_pad(chunk, model.pad_token_id)
        ids, mask = ids.to(dev), mask.to(dev)
        logp = F.log_softmax(hf(input_ids=ids, attention_mask=mask, position_ids=left_pad_positions(mask)).logits.float(), -1)
        width = ids.shape[1]
        for row, (seq, pl) in enumerate(zip(chunk, prompt_lens[s:s + batch_size])):
            pad = width - len(seq)
            out.append(logp[row, pad + pl - 1: width - 1].cpu() if len(seq) > pl else logp[row, width - 1:].cpu())
    return out


def reference(tuned: Model, prompts: Sequence[Sequence[int]], cfg: EvalConfig) -> Reference:
    """The tuned model's own greedy completions of the prompts (token ids) and its log-probs along them."""
    prompts = [list(p) for p in prompts]
    comps = generate_ids(tuned.hf, tuned.tokenizer, prompts, cfg.max_new_tokens, 0.0, cfg.seed, cfg.batch_size)
    seqs = [p + c for p, c in zip(prompts, comps)]
    lens = [len(p) for p in prompts]
    lp = completion_logprobs(tuned, seqs, lens)
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
    def from_dict(cls, d: dict[str, Any]) -> KL:
        return cls(d["mean"], tuple(d["ci"]), tuple(d["per_problem"]))


def kl_to_tuned(model: Model, ref: Reference, n_boot: int) -> KL:
    """KL(p_tuned || p_model) per completion position, averaged per problem, with a bootstrap CI over problems."""
    lp = completion_logprobs(model, ref.seqs, ref.prompt_lens)
    per = np.array([float((t.exp() * (t - m)).sum(-1).mean()) for t, m in zip(ref.logprobs, lp)])
    return KL(float(per.mean()), bootstrap_ci(per, n_boot), tuple(float(x) for x in per))


__all__ = ["KL", "Behaviour", "Generator", "Reference", "behaviour_of", "check_task_model", "completion_logprobs",
           "completion_texts", "grade_behaviour", "items_of", "kl_to_tuned", "measure",
           "model_generator", "prompt_ids", "reference"]
