"""Training of organism models: pretraining, SFT, reward-based fine-tuning (group REINFORCE) and DPO.

One loop serves all four kinds. Every step's data (and every RL sample) comes from a generator seeded
by (seed, step), the learning rate is a function of the step, and checkpoints hold weights and optimizer
state written atomically, so a run killed at any point resumes to exactly the weights of an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from interp.generate import generate_ids
from interp.io import (
    library_versions,
    read_json,
    read_training_state,
    restore_training_state,
    save_training_state,
    write_json,
)
from interp.organism.arch import ArchConfig, init_model, n_params
from interp.organism.grader import grade
from interp.organism.task import FormatMix, Problem, TaskConfig, sample_problems
from interp.organism.tokenizer import build_tokenizer, digit_ids

Kind = Literal["pretrain", "sft", "rl", "dpo"]


@dataclass(frozen=True)
class RLConfig:
    """Group REINFORCE with a verifiable reward: r = correct - length_cost * tokens, baseline = group mean."""

    group_size: int = 8
    length_cost: float = 0.005
    temperature: float = 1.0
    max_new_tokens: int = 72

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Rank = Literal["correct", "confidence"]


@dataclass(frozen=True)
class DPOConfig:
    """DPO on pairs of samples, with the initial model as the reference. `rank="correct"`: a right vs a wrong
    sample (the grader's label); `rank="confidence"`: the most vs the least confident sample by the sampling
    model's own probability of its final answer token (no label, no verifier: RLSF, arXiv 2507.21931).
    `source`: the model that writes the samples (None: the initial model; another zoo member, e.g.
    organism/base-l, for DPO on a stronger model's outputs)."""

    beta: float = 0.1
    pool_problems: int = 2048
    samples_per_problem: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 72
    rank: Rank = "correct"
    source: str | None = None

    def __post_init__(self) -> None:
        if self.rank not in ("correct", "confidence"):
            raise ValueError(f"DPO pairs are ranked by 'correct' or 'confidence', got {self.rank!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; the run directory's checkpoints are tied to it."""

    kind: Kind = "pretrain"
    arch: ArchConfig = field(default_factory=ArchConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    mix: FormatMix = field(default_factory=FormatMix)
    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    init: str | None = None
    ckpt_every: int = 100
    eval_every: int = 0
    rl: RLConfig = field(default_factory=RLConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["arch"] = ArchConfig.from_dict(d.get("arch", {}))
        d["task"] = TaskConfig.from_dict(d.get("task", {}))
        d["mix"] = FormatMix.from_dict(d.get("mix", {}))
        d["rl"] = RLConfig(**d.get("rl", {}))
        d["dpo"] = DPOConfig(**d.get("dpo", {}))
        return cls(**d)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, stream])


# ---------------------------------------------------------------- sequences and log-probs


def encode(tokenizer: PreTrainedTokenizerFast, tokens: list[str]) -> list[int]:
    return tokenizer.convert_tokens_to_ids(tokens)  # type: ignore[return-value]


def example_ids(tokenizer: PreTrainedTokenizerFast, problem: Problem, fmt: str) -> tuple[list[int], int]:
    """`<bos> prompt completion <eos>` ids and the index where the completion starts."""
    prompt = [tokenizer.bos_token_id, *encode(tokenizer, problem.prompt_tokens())]
    comp = encode(tokenizer, problem.completion_tokens(fmt))  # type: ignore[arg-type]
    return prompt + comp + [tokenizer.eos_token_id], len(prompt)


def completion_logprobs(
    model: LlamaForCausalLM, seqs: list[list[int]], starts: list[int], pad_id: int
) -> list[torch.Tensor]:
    """Log-probabilities of each sequence's tokens from `starts[i]` on, batched with right padding."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    return [logp[i, starts[i] - 1: len(s) - 1] for i, s in enumerate(seqs)]


def grouped_by_length(items: list[Any], length: Callable[[Any], int], slack: float = 1.3) -> list[list[Any]]:
    """Split items into groups whose longest member is at most `slack` x the shortest (less padding)."""
    groups: list[list[Any]] = []
    for item in sorted(items, key=length):
        if groups and length(item) <= slack * length(groups[-1][0]):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


# ---------------------------------------------------------------- per-kind losses


def lm_loss(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, dict]:
    """Next-token loss on answer tokens only (prompt values are random: training on them drowns the signal)."""
    rng = step_rng(cfg.seed, step)
    problems = sample_problems(int(rng.integers(2**31)), cfg.batch_size, cfg.task)
    examples = [example_ids(tok, p, cfg.mix.sample(rng)) for p in problems]
    loss = completion_nll(model, examples, tok.pad_token_id)
    return loss, {"loss": loss.item()}


def completion_nll(model: LlamaForCausalLM, examples: list[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """Mean negative log-probability per completion token of `(ids, completion start)` examples, the forwards
    grouped by length: the SFT loss of every fine-tune of the organism."""
    n_tokens = sum(len(s) - start for s, start in examples)
    total = torch.zeros(())
    for group in grouped_by_length(examples, lambda e: len(e[0])):
        lps = completion_logprobs(model, [s for s, _ in group], [st for _, st in group], pad_id)
        total = total - sum(lp.sum() for lp in lps)
    return total / n_tokens


def sample_and_grade(
    model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, problems: list[Problem], n: int,
    temperature: float, max_new_tokens: int, seed: int,
) -> tuple[list[list[int]], list[list[int]], list[Any]]:
    """`n` samples per problem: prompt ids, completion ids (with EOS when the model stopped), grades."""
    prompts = [[tok.bos_token_id, *encode(tok, p.prompt_tokens())] for p in problems for _ in range(n)]
    comps = generate_ids(model, tok, prompts, max_new_tokens, temperature, seed, batch_size=len(prompts))
    grades = [grade(problems[i // n], tok.convert_ids_to_tokens(c)) for i, c in enumerate(comps)]
    ctx = model.config.max_position_embeddings
    comps = [c + [tok.eos_token_id] if len(c) < min(max_new_tokens, ctx - len(p)) else c  # stopped by itself
             for p, c in zip(prompts, comps)]
    return prompts, comps, grades


def rl_loss(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, dict]:
    """Group REINFORCE: advantage = reward - mean reward of the samples of the same problem."""
    rl = cfg.rl
    rng = step_rng(cfg.seed, step)
    problems = sample_problems(int(rng.integers(2**31)), cfg.batch_size, cfg.task)
    prompts, comps, grades = sample_and_grade(
        model, tok, problems, rl.group_size, rl.temperature, rl.max_new_tokens, int(rng.integers(2**31)))
    reward = torch.tensor([float(g.correct) - rl.length_cost * len(c) for g, c in zip(grades, comps)])
    adv = (reward.view(-1, rl.group_size) - reward.view(-1, rl.group_size).mean(1, keepdim=True)).flatten()
    items = [(p + c, len(p), float(a)) for p, c, a in zip(prompts, comps, adv) if a != 0.0]
    total = torch.zeros(())
    for group in grouped_by_length(items, lambda e: len(e[0])) if items else []:
        lps = completion_logprobs(model, [s for s, _, _ in group], [st for _, st, _ in group], tok.pad_token_id)
        total = total - sum(a * lp.sum() for (_, _, a), lp in zip(group, lps))
    loss = total / len(prompts)
    cot = np.mean([g.format in ("concise", "verbose") for g in grades])
    acc = np.mean([g.correct for g in grades])
    return loss, {"loss": loss.item(), "reward": float(reward.mean()), "sample_acc": float(acc),
                  "sample_cot": float(cot)}


@torch.no_grad()
def answer_confidence(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, prompts: list[list[int]],
                      comps: list[list[int]], grades: list[Any]) -> list[float]:
    """The model's probability of each completion's final answer token given everything before it; 0 for an
    answer the grader cannot parse (it commits to nothing). The grader only locates the answer: whether it
    is right is never read."""
    conf = [0.0] * len(comps)
    rows = [i for i, g in enumerate(grades) if g.valid and g.answer is not None]
    for start in range(0, len(rows), 256):
        part = rows[start:start + 256]
        lps = completion_logprobs(model, [prompts[i] + comps[i] for i in part], [len(prompts[i]) for i in part],
                                  tok.pad_token_id)
        for i, lp in zip(part, lps):
            conf[i] = float(lp[grades[i].n_tokens - 1].exp())  # the answer is the last token before EOS
    return conf


def pick_pair(grades: list[Any], conf: list[float], rank: Rank) -> tuple[int, int] | None:
    """(chosen, rejected) among one problem's samples, or None when they do not differ in the ranked quantity."""
    if rank == "confidence":
        hi, lo = int(np.argmax(conf)), int(np.argmin(conf))
        return (hi, lo) if conf[hi] > conf[lo] else None
    good = [j for j, g in enumerate(grades) if g.correct]
    bad = [j for j, g in enumerate(grades) if not g.correct]
    return (good[0], bad[0]) if good and bad else None


def dpo_pool(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, cfg: TrainConfig,
             source: LlamaForCausalLM | None = None) -> list[dict]:
    """(prompt, chosen, rejected) pairs from `source`'s samples (default: the reference `model`), ranked as
    `cfg.dpo.rank` says, with the reference log-probabilities; problems whose samples do not differ give no
    pair. Each pair records the samples' correctness and confidence (read only for the card's statistics
    when the rank is by confidence)."""
    d = cfg.dpo
    source = model if source is None else source
    problems = sample_problems(cfg.seed + 7919, d.pool_problems, cfg.task)
    pairs: list[dict] = []
    chunk = 256
    k = d.samples_per_problem
    for start in tqdm(range(0, len(problems), chunk), desc="dpo pairs", leave=False):
        probs = problems[start:start + chunk]
        prompts, comps, grades = sample_and_grade(
            source, tok, probs, k, d.temperature, d.max_new_tokens, cfg.seed + start)
        conf = answer_confidence(source, tok, prompts, comps, grades) if d.rank == "confidence" else [0.0] * len(comps)
        for i in range(len(probs)):
            idx = list(range(i * k, (i + 1) * k))
            pick = pick_pair([grades[j] for j in idx], [conf[j] for j in idx], d.rank)
            if pick is None:
                continue
            w, lo = idx[pick[0]], idx[pick[1]]
            pairs.append({"prompt": prompts[w], "chosen": comps[w], "rejected": comps[lo],
                          "chosen_format": grades[w].format, "rejected_format": grades[lo].format,
                          **({"confidence": [conf[w], conf[lo]], "correct": [grades[w].correct, grades[lo].correct]}
                             if d.rank == "confidence" else {})})
    with torch.no_grad():
        for start in range(0, len(pairs), chunk):
            part = pairs[start:start + chunk]
            seqs = [p["prompt"] + p[k] for p in part for k in ("chosen", "rejected")]
            starts = [len(p["prompt"]) for p in part for _ in range(2)]
            lps = completion_logprobs(model, seqs, starts, tok.pad_token_id)
            for i, p in enumerate(part):
                p["ref_chosen"], p["ref_rejected"] = float(lps[2 * i].sum()), float(lps[2 * i + 1].sum())
    return pairs


def pool_stats(pairs: list[dict]) -> dict[str, Any]:
    """How many pairs, and how often the chosen / rejected sample was right and used a chain of thought."""
    def rate(ok: Callable[[dict], bool]) -> float:
        return round(float(np.mean([ok(p) for p in pairs])), 4) if pairs else float("nan")

    out: dict[str, Any] = {"n_pairs": len(pairs)}
    for side, i in (("chosen", 0), ("rejected", 1)):
        out[f"{side}_cot"] = rate(lambda p, s=side: p[f"{s}_format"] in ("concise", "verbose"))
        out[f"{side}_invalid"] = rate(lambda p, s=side: p[f"{s}_format"] == "invalid")
        if pairs and "correct" in pairs[0]:
            out[f"{side}_correct"] = rate(lambda p, i=i: bool(p["correct"][i]))
    return out


def dpo_loss(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, cfg: TrainConfig, step: int,
             pairs: list[dict]) -> tuple[torch.Tensor, dict]:
    rng = step_rng(cfg.seed, step)
    batch = [pairs[int(i)] for i in rng.integers(0, len(pairs), size=cfg.batch_size)]
    seqs = [p["prompt"] + p[k] for p in batch for k in ("chosen", "rejected")]
    starts = [len(p["prompt"]) for p in batch for _ in range(2)]
    lps = completion_logprobs(model, seqs, starts, tok.pad_token_id)
    pol = torch.stack([lp.sum() for lp in lps]).view(-1, 2)
    ref = torch.tensor([[p["ref_chosen"], p["ref_rejected"]] for p in batch])
    margin = cfg.dpo.beta * ((pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1]))
    loss = -F.logsigmoid(margin).mean()
    return loss, {"loss": loss.item(), "pref_acc": float((margin > 0).float().mean())}


@torch.no_grad()
def teacher_forced_metrics(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, task: TaskConfig,
                           n: int = 64, seed: int = 424242) -> dict[str, float]:
    """Cheap progress metrics on fixed problems, per step count, under teacher forcing: argmax accuracy of
    the direct answer digit, and exact match of a verbose chain's content (the two format-choice tokens,
    first token and first source variable, are excluded: they measure preference, not ability)."""
    out: dict[str, float] = {}
    for k in range(task.min_steps, task.max_steps + 1):
        probs = sample_problems(seed + k, n, task, n_steps=k)
        for fmt in ("direct", "verbose"):
            ex = [example_ids(tok, p, fmt) for p in probs]
            ids = torch.tensor([s for s, _ in ex])
            st = ex[0][1]
            logits = model(input_ids=ids).logits[:, st - 1:-1]
            if fmt == "direct":  # the digit, among digits only
                digits = digit_ids(tok)
                pred = digits[logits[:, 0, digits].argmax(-1)]
                out[f"tf_direct_{k}"] = float((pred == ids[:, st]).float().mean())
            else:
                hit = logits.argmax(-1) == ids[:, st:]
                hit[:, [0, 2]] = True
                out[f"tf_verbose_{k}"] = float(hit.all(-1).float().mean())
    return out


# ---------------------------------------------------------------- checkpoints


def _save_state(run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig,
                step: int, log: list[dict]) -> None:
    save_training_state(run_dir, model, opt, {"step": step, "config": cfg.to_dict(), "log": log})


def _load_state(run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig) -> tuple[int, list[dict]]:
    meta = read_training_state(run_dir)
    if meta is None:
        return 0, []
    if TrainConfig.from_dict(meta["config"]) != cfg:
        raise ValueError(f"{run_dir} holds a run with another config; use a new run directory or the same "
                         f"config (saved: {meta['config']})")
    restore_training_state(run_dir, model, opt, meta)
    return int(meta["step"]), list(meta["log"])


# ---------------------------------------------------------------- the loop


@dataclass
class TrainOutcome:
    model: LlamaForCausalLM
    tokenizer: PreTrainedTokenizerFast
    config: TrainConfig
    log: list[dict]
    seconds: float
    steps_done: int
    pool: dict[str, Any] | None = None  # DPO: the preference pool's statistics (`pool_stats`)


def load_init(init: str) -> LlamaForCausalLM:
    from interp.models import resolve_path  # late import: models imports the Bridge stack

    model = LlamaForCausalLM.from_pretrained(str(resolve_path(init)), dtype=torch.float32)
    return model


def train(cfg: TrainConfig, run_dir: str | Path, stop_after: int | None = None,
          progress: bool = True, log_every: int = 25) -> TrainOutcome:
    """Train (or resume) the run in `run_dir`; `stop_after` ends this call early, as a kill would."""
    run_dir = Path(run_dir)
    tok = build_tokenizer(cfg.arch.max_len)
    if cfg.kind == "pretrain":
        model = init_model(cfg.arch, tok, cfg.seed)
    else:
        if cfg.init is None:
            raise ValueError(f"a {cfg.kind} run needs `init` (the model to start from, e.g. 'organism/base-s')")
        model = load_init(cfg.init)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    start, log = _load_state(run_dir, model, opt, cfg)
    pairs: list[dict] = []
    if cfg.kind == "dpo":
        pool_path = run_dir / "dpo_pairs.json"
        saved = read_json(pool_path) if pool_path.exists() else None
        if saved is not None and TrainConfig.from_dict(saved["config"]) == cfg:
            pairs = saved["pairs"]
        else:  # no pool yet, or one built under another config: (re)build it from the reference
            reference = load_init(cfg.init)  # type: ignore[arg-type]
            source = load_init(cfg.dpo.source) if cfg.dpo.source else None
            pairs = dpo_pool(reference, tok, cfg, source)
            write_json(pool_path, {"config": cfg.to_dict(), "pairs": pairs})
        if not pairs:
            what = "(correct, incorrect)" if cfg.dpo.rank == "correct" else "(more, less confident)"
            raise ValueError(f"DPO found no {what} sample pair: the sampling model's answers are all alike on every "
                             "problem; change the task range or samples_per_problem (at least 2)")
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    t0 = time.time()
    model.train()
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc=f"{cfg.kind}", disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        if cfg.kind in ("pretrain", "sft"):
            loss, metrics = lm_loss(model, tok, cfg, step)
        elif cfg.kind == "rl":
            loss, metrics = rl_loss(model, tok, cfg, step)
        else:
            loss, metrics = dpo_loss(model, tok, cfg, step, pairs)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        evaluating = cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps)
        if evaluating:
            metrics.update(teacher_forced_metrics(model, tok, cfg.task))
        if evaluating or step % log_every == 0 or step == cfg.steps - 1:
            log.append({"step": step, "lr": lr_at(cfg, step), **metrics})
            bar.set_postfix({k: round(v, 3) for k, v in metrics.items()})
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == end:
            _save_state(run_dir, model, opt, cfg, step + 1, log)
    model.eval()
    return TrainOutcome(model, tok, cfg, log, time.time() - t0, end, pool_stats(pairs) if cfg.kind == "dpo" else None)


def provenance(cfg: TrainConfig, model: torch.nn.Module) -> dict[str, Any]:
    return {"config": cfg.to_dict(), "n_params": n_params(model), "libraries": library_versions()}


__all__ = [
    "DPOConfig",
    "RLConfig",
    "Rank",
    "TrainConfig",
    "TrainOutcome",
    "answer_confidence",
    "completion_logprobs",
    "dpo_pool",
    "example_ids",
    "lr_at",
    "pick_pair",
    "pool_stats",
    "provenance",
    "sample_and_grade",
    "train",
]
