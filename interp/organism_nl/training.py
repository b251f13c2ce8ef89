"""Training of the natural-language organism: pretraining (mostly direct answers), SFT on thinking traces,
and reward-based fine-tuning (group REINFORCE with a verifiable reward), on small Qwen2 models.

The schedule, per-step seeding and length grouping are the first organism's (`interp.organism.training`);
data, tokenizer and architecture are this package's. Every step's data and every RL sample come from a
generator seeded by (seed, step), and checkpoints (weights, optimizer state, log) are written atomically,
so a run killed at any point resumes to the weights of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from interp.generate import generate_ids
from interp.io import (
    library_versions,
    read_training_state,
    restore_training_state,
    save_training_state,
)
from interp.organism.training import (
    completion_logprobs,
    grouped_by_length,
    lr_at,
    step_rng,
)
from interp.organism_nl.task import (
    FORMATS,
    NLTaskConfig,
    Problem,
    grade_problem,
    sample_phrasings,
    sample_problems,
)
from interp.organism_nl.tokenizer import build_tokenizer, digit_token_ids

Kind = Literal["pretrain", "sft", "rl"]


@dataclass(frozen=True)
class NLArch:
    """Shape of one model: a Qwen2 decoder (RMSNorm, RoPE, SwiGLU, QKV bias), untied embeddings.

    `init_std` is the weights' initial standard deviation: HF's 0.02 left a d=64 model on the loss plateau of
    the arithmetic table (drill rows, 200 steps of 32: 21% of result digits right at 0.02, 68% at 0.1,
    95% at 0.2)."""

    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    max_len: int = 256
    init_std: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NLArch:
        return cls(**d)

    def hf_config(self, tok: PreTrainedTokenizerFast) -> Qwen2Config:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_heads={self.n_heads}")
        return Qwen2Config(
            vocab_size=len(tok), hidden_size=self.d_model, intermediate_size=self.d_mlp,
            num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads, num_key_value_heads=self.n_heads,
            max_position_embeddings=self.max_len, tie_word_embeddings=False, rms_norm_eps=1e-6,
            rope_theta=10000.0, bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            use_sliding_window=False, initializer_range=self.init_std,
        )


ROW_KINDS: tuple[str, ...] = (*FORMATS, "drill")


@dataclass(frozen=True)
class Mix:
    """Shares of training rows (normalised when sampled): problems with a completion in one of the task's
    formats, and `drill` rows, arithmetic facts written as sentences (`7 times 2 is 4.`, `3 + 4 = 7.`) as a
    web corpus holds them, scored on the result digits only."""

    direct: float = 0.8
    think: float = 0.15
    think_concise: float = 0.05
    drill: float = 0.0
    direct_up_to: int | None = None
    """If set, only problems with at most this many steps are answered directly; a harder problem that drew
    `direct` thinks instead (R1's SFT data answers simple queries without a chain of thought)."""

    def __post_init__(self) -> None:
        w = self.weights()
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"row shares must be >= 0 and not all zero, got {self.to_dict()}")
        if self.direct_up_to is not None and self.direct_up_to < 1:
            raise ValueError(f"direct_up_to must be >= 1 (or None), got {self.direct_up_to}")

    def weights(self) -> np.ndarray:
        return np.array([self.direct, self.think, self.think_concise, self.drill], dtype=float)

    def sample(self, rng: np.random.Generator, n_steps: int | None = None) -> str:
        """One row kind; a problem with more than `direct_up_to` steps that draws `direct` thinks instead."""
        w = self.weights()
        kind = ROW_KINDS[int(rng.choice(len(ROW_KINDS), p=w / w.sum()))]
        if kind == "direct" and self.direct_up_to is not None and n_steps is not None and n_steps > self.direct_up_to:
            return "think"
        return kind

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mix:
        return cls(**d)


@dataclass(frozen=True)
class TokenizerConfig:
    """The BPE's training: vocabulary size, how many problems' texts, seed."""

    vocab_size: int = 320
    n_problems: int = 2000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RLConfig:
    """Group REINFORCE: r = correct - length_cost * tokens, baseline = mean reward of the problem's group;
    with `normalize`, advantages are also divided by the group's reward std (GRPO, as in DeepSeek-R1), so a
    problem whose samples differ only in length pulls as hard as one whose samples differ in correctness."""

    group_size: int = 8
    length_cost: float = 0.002
    temperature: float = 1.0
    max_new_tokens: int = 96
    normalize: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class NLTrainConfig:
    """Everything a run depends on; a run directory's checkpoint is tied to it."""

    kind: Kind = "pretrain"
    arch: NLArch = field(default_factory=NLArch)
    task: NLTaskConfig = field(default_factory=NLTaskConfig)
    mix: Mix = field(default_factory=Mix)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
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

    def __post_init__(self) -> None:
        if self.kind not in ("pretrain", "sft", "rl"):
            raise ValueError(f"kind must be 'pretrain', 'sft' or 'rl', got {self.kind!r}")
        if self.kind != "pretrain" and not self.init:
            raise ValueError(f"a {self.kind} run needs `init` (the model to start from, e.g. 'organism-nl/base')")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NLTrainConfig:
        d = dict(d)
        d["arch"] = NLArch.from_dict(d.get("arch", {}))
        d["task"] = NLTaskConfig.from_dict(d.get("task", {}))
        d["mix"] = Mix.from_dict(d.get("mix", {}))
        d["tokenizer"] = TokenizerConfig(**d.get("tokenizer", {}))
        d["rl"] = RLConfig(**d.get("rl", {}))
        return cls(**d)


def init_model(arch: NLArch, tok: PreTrainedTokenizerFast, seed: int) -> Qwen2ForCausalLM:
    """A freshly initialised model; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(arch.hf_config(tok))
    return model.float()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- data


def ids_of(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return [int(i) for i in tok(text, add_special_tokens=False)["input_ids"]]


def example(tok: PreTrainedTokenizerFast, p: Problem, fmt: str, phrasings: tuple[int, ...] | None) -> tuple[list[int], int]:
    """Prompt ids, completion ids and EOS (tokenized apart, as generation sees them), and where the completion starts."""
    prompt = ids_of(tok, p.prompt())
    return prompt + ids_of(tok, p.completion(fmt, phrasings)) + [int(tok.eos_token_id)], len(prompt)


DRILL_FORMS: tuple[str, ...] = ("{x} {w} {y} is {v}.", "{x} {o} {y} = {v}.", "{x} {w} {y} makes {v}.")


def drill_row(tok: PreTrainedTokenizerFast, rng: np.random.Generator, cfg: NLTaskConfig,
              n_facts: int = 8) -> tuple[list[int], list[bool]]:
    """`n_facts` random arithmetic facts (mod 10) in one text, one per line; scored on each result digit."""
    from interp.organism_nl.task import OP_WORDS, apply_op

    ids: list[int] = []
    scored: list[bool] = []
    for i in range(n_facts):
        x, y = int(rng.integers(10)), int(rng.integers(10))
        op = cfg.ops[int(rng.integers(len(cfg.ops)))]
        form = DRILL_FORMS[int(rng.integers(len(DRILL_FORMS)))]
        head, _, _ = form.partition("{v}")
        pre = ids_of(tok, ("" if i == 0 else ".\n") + head.format(x=x, w=OP_WORDS[op], o=op, y=y))
        v = ids_of(tok, str(apply_op(x, op, y)))
        ids += pre + v
        scored += [False] * len(pre) + [True] * len(v)
    return ids + ids_of(tok, "."), scored + [False]


def lm_loss(model: Qwen2ForCausalLM, tok: PreTrainedTokenizerFast, cfg: NLTrainConfig, step: int) -> tuple[torch.Tensor, dict]:
    """Next-token loss on completion tokens only (prompt values are random) and on drill rows' result digits."""
    rng = step_rng(cfg.seed, step)
    problems = sample_problems(int(rng.integers(2**31)), cfg.batch_size, cfg.task)
    rows: list[tuple[list[int], list[bool]]] = []
    for p in problems:
        kind = cfg.mix.sample(rng, p.n_steps)
        if kind == "drill":
            rows.append(drill_row(tok, rng, cfg.task))
            continue
        s, st = example(tok, p, kind, sample_phrasings(rng, p.n_steps, cfg.task) if kind == "think" else None)
        rows.append((s, [False] * st + [True] * (len(s) - st)))
    n_tokens = sum(sum(m) for _, m in rows)
    total = torch.zeros(())
    for group in grouped_by_length(rows, lambda e: len(e[0])):
        lps = completion_logprobs(model, [s for s, _ in group], [1] * len(group), int(tok.pad_token_id))
        for (_, m), lp in zip(group, lps):
            total = total - (lp * torch.tensor(m[1:], dtype=lp.dtype)).sum()
    loss = total / n_tokens
    return loss, {"loss": loss.item()}


def sample_and_grade(model: Qwen2ForCausalLM, tok: PreTrainedTokenizerFast, problems: list[Problem], n: int,
                     temperature: float, max_new_tokens: int, seed: int) -> tuple[list[list[int]], list[list[int]], list[Any]]:
    """`n` samples per problem: prompt ids, completion ids (with EOS when the model stopped), grades."""
    prompts = [ids_of(tok, p.prompt()) for p in problems for _ in range(n)]
    comps = generate_ids(model, tok, prompts, max_new_tokens, temperature, seed, batch_size=len(prompts))
    grades = [grade_problem(problems[i // n], tok.decode(c)) for i, c in enumerate(comps)]
    ctx = model.config.max_position_embeddings
    comps = [c + [int(tok.eos_token_id)] if len(c) < min(max_new_tokens, ctx - len(p)) else c
             for p, c in zip(prompts, comps)]
    return prompts, comps, grades


def rl_loss(model: Qwen2ForCausalLM, tok: PreTrainedTokenizerFast, cfg: NLTrainConfig, step: int) -> tuple[torch.Tensor, dict]:
    """Group REINFORCE: advantage = reward - mean reward of the samples of the same problem."""
    rl = cfg.rl
    rng = step_rng(cfg.seed, step)
    problems = sample_problems(int(rng.integers(2**31)), cfg.batch_size, cfg.task)
    prompts, comps, grades = sample_and_grade(model, tok, problems, rl.group_size, rl.temperature,
                                              rl.max_new_tokens, int(rng.integers(2**31)))
    reward = torch.tensor([float(g.correct) - rl.length_cost * len(c) for g, c in zip(grades, comps)])
    r = reward.view(-1, rl.group_size)
    adv = r - r.mean(1, keepdim=True)
    if rl.normalize:
        adv = adv / (r.std(1, keepdim=True) + 1e-4)
    adv = adv.flatten()
    items = [(p + c, len(p), float(a)) for p, c, a in zip(prompts, comps, adv) if a != 0.0]
    model.train()
    total = torch.zeros(())
    for group in grouped_by_length(items, lambda e: len(e[0])) if items else []:
        lps = completion_logprobs(model, [s for s, _, _ in group], [st for _, st, _ in group], int(tok.pad_token_id))
        total = total - sum(a * lp.sum() for (_, _, a), lp in zip(group, lps))
    loss = total / len(prompts)
    return loss, {"loss": loss.item(), "reward": float(reward.mean()),
                  "sample_acc": float(np.mean([g.correct for g in grades])),
                  "sample_cot": float(np.mean([g.cot for g in grades]))}


@torch.no_grad()
def teacher_forced_metrics(model: Qwen2ForCausalLM, tok: PreTrainedTokenizerFast, task: NLTaskConfig,
                           n: int = 64, seed: int = 424242) -> dict[str, float]:
    """Cheap progress metrics on fixed problems per step count, under teacher forcing, argmax among digits:
    the direct answer's digit (`tf_direct_k`), and every step result of a thinking trace (`tf_think_k`: the
    digit before each line's period; the phrasing choice is random, so it is not scored)."""
    was = model.training
    model.eval()
    digits = torch.tensor(digit_token_ids(tok))
    line_end = set(ids_of(tok, "7.\n")[1:]) | set(ids_of(tok, "7.\n</think>")[1:2])
    out: dict[str, float] = {}
    for k in range(task.min_steps, task.max_steps + 1):
        probs = sample_problems(seed + k, n, task, n_steps=k)
        rng = np.random.default_rng(seed + k)
        for fmt in ("direct", "think"):
            ex = [example(tok, p, fmt, sample_phrasings(rng, k, task) if fmt == "think" else None) for p in probs]
            ok = []
            for group in grouped_by_length(ex, lambda e: len(e[0]), slack=1.0):
                width = max(len(s) for s, _ in group)
                ids = torch.full((len(group), width), int(tok.pad_token_id))
                for i, (s, _) in enumerate(group):
                    ids[i, :len(s)] = torch.tensor(s)
                pred = digits[model(input_ids=ids).logits[:, :, digits].argmax(-1)]
                for i, (s, st) in enumerate(group):
                    if fmt == "direct":  # ... is, " ", digit, ".", eos
                        at = [len(s) - 3]
                    else:  # result digits: the token before each line end, inside the thinking block
                        at = [j - 1 for j in range(st, len(s)) if s[j] in line_end]
                    ok.append(all(bool(pred[i, j - 1] == s[j]) for j in at))
            out[f"tf_{fmt}_{k}"] = float(np.mean(ok))
    model.train(was)
    return out


# ---------------------------------------------------------------- checkpoints


def _save_state(run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: NLTrainConfig,
                step: int, log: list[dict], seconds: float) -> None:
    save_training_state(run_dir, model, opt, {"step": step, "config": cfg.to_dict(), "log": log, "seconds": seconds})


def _load_state(run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                cfg: NLTrainConfig) -> tuple[int, list[dict], float]:
    meta = read_training_state(run_dir)
    if meta is None:
        return 0, [], 0.0
    if NLTrainConfig.from_dict(meta["config"]) != cfg:
        raise ValueError(f"{run_dir} holds a run with another config; use a new run directory or the same "
                         f"config (saved: {meta['config']})")
    restore_training_state(run_dir, model, opt, meta)
    return int(meta["step"]), list(meta["log"]), float(meta.get("seconds", 0.0))


@dataclass
class TrainOutcome:
    model: Qwen2ForCausalLM
    tokenizer: PreTrainedTokenizerFast
    config: NLTrainConfig
    log: list[dict]
    seconds: float
    steps_done: int


def load_init(init: str) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    from interp.models import (
        resolve_path,  # late import: models imports the Bridge stack
    )

    path = resolve_path(init)
    model = Qwen2ForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    return model, tok


def train(cfg: NLTrainConfig, run_dir: str | Path, stop_after: int | None = None, progress: bool = True,
          log_every: int = 25) -> TrainOutcome:
    """Train (or resume) the run in `run_dir`; `stop_after` ends this call early, as a kill would.
    `seconds` in the outcome is the training time summed over every call of the run."""
    run_dir = Path(run_dir)
    if cfg.kind == "pretrain" and not cfg.init:
        t = cfg.tokenizer
        tok = build_tokenizer(t.vocab_size, t.n_problems, t.seed, cfg.arch.max_len)
        model = init_model(cfg.arch, tok, cfg.seed)
    else:  # post-training, or pretraining continued from an earlier stage
        model, tok = load_init(cfg.init)  # type: ignore[arg-type]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    start, log, before = _load_state(run_dir, model, opt, cfg)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    t0 = time.time()
    model.train()
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc=cfg.kind, disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)  # type: ignore[arg-type]
        loss, metrics = rl_loss(model, tok, cfg, step) if cfg.kind == "rl" else lm_loss(model, tok, cfg, step)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        evaluating = cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps)
        if evaluating:
            metrics.update(teacher_forced_metrics(model, tok, cfg.task))
        if evaluating or step % log_every == 0 or step == cfg.steps - 1:
            log.append({"step": step, "lr": lr_at(cfg, step), "seconds": round(before + time.time() - t0, 1),  # type: ignore[arg-type]
                        **metrics})
            bar.set_postfix({k: round(v, 3) for k, v in metrics.items()})
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == end:
            _save_state(run_dir, model, opt, cfg, step + 1, log, before + time.time() - t0)
    model.eval()
    return TrainOutcome(model, tok, cfg, log, before + time.time() - t0, end)


def provenance(cfg: NLTrainConfig, model: torch.nn.Module) -> dict[str, Any]:
    return {"config": cfg.to_dict(), "n_params": n_params(model), "libraries": library_versions()}


__all__ = [
    "DRILL_FORMS",
    "ROW_KINDS",
    "Kind",
    "Mix",
    "NLArch",
    "NLTrainConfig",
    "RLConfig",
    "TokenizerConfig",
    "TrainOutcome",
    "drill_row",
    "example",
    "ids_of",
    "init_model",
    "lm_loss",
    "load_init",
    "n_params",
    "provenance",
    "rl_loss",
    "sample_and_grade",
    "teacher_forced_metrics",
    "train",
]
