"""Does more inference compute let a base catch up with a post-trained model? (Wang et al. 2025, arXiv
2504.14047.) Accuracy against generated tokens per problem, for each model.

Per model and problem: greedy, forced chain of thought, and K samples at a temperature. From the samples:
majority vote over the first k (width), best-of-k with an oracle selector (pass@k) and with a verifier-free
one (the sample the model itself gives the highest mean token log-probability), each at k = 1, 2, 4, ...;
a forced chain cut at a token budget (depth: budget forcing by truncation), as written and with the answer
forced at the cut; and the chain extended s1-style (Muennighoff et al. 2025, arXiv 2501.19393): its end
marker suppressed k times, a continuation ("Wait") put in its place (`analyses.compute.forcing`). Width vs
depth compares, at the same tokens per problem, majority over k parallel samples with one forced chain of
that length. Parameter count is the other axis (the bases of several sizes).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from analyses.compute.forcing import cut, extend, find_marker
from analyses.routing.common import cached, mean_diff, prompt_ids, sample_items
from interp.io import cache_dir, library_versions
from interp.stats import bootstrap_ci
from interp.tasks.base import Item, Task

if TYPE_CHECKING:
    from interp.models import Model

RESULT_VERSION = 1
FORCING_VERSION = 2
ZOO = ("organism/base-s", "organism/base-m", "organism/base-l", "organism/sft", "organism/rl", "organism/dpo")
# budget forcing (extension, forced cut) is measured and cached apart from the rest, so these fields stay out
# of the main measurement's cache key
FORCING_FIELDS = ("forcing_models", "extensions", "answer_tokens", "chain_end", "continuation")


@dataclass(frozen=True)
class ComputeConfig:
    models: tuple[str, ...] = ZOO
    bases: tuple[str, ...] = ("organism/base-s", "organism/base-m", "organism/base-l")  # the parameter axis
    reference: str = "organism/rl"  # the post-trained model the bases try to catch up with
    task: str = "organism"
    steps: tuple[int, ...] = (1, 2, 3, 4)
    n_per_step: int = 50
    eval_seed: int = 14_300_007
    n_samples: int = 16
    temperature: float = 1.0
    budgets: tuple[int, ...] = (4, 8, 16, 24, 32, 40, 52, 72)  # forced-chain token budgets (cut there)
    max_new_tokens: int = 72
    batch_size: int = 512
    n_boot: int = 1000
    seed: int = 0
    cache_dir: str = field(default_factory=lambda: str(cache_dir("compute")))
    # budget forcing: forced chains extended k times, and cut at each budget with the answer forced
    # None: every model but the larger bases (the zoo: base-s, sft, rl, dpo); () turns budget forcing off
    forcing_models: tuple[str, ...] | None = None
    extensions: tuple[int, ...] = (1, 2, 4)
    answer_tokens: int = 16  # the most tokens a model may write after a forced end marker
    chain_end: str | None = None  # end-of-chain marker; None: the task's `chain_end`
    continuation: str | None = None  # text put in the marker's place; None: the task's `continuation(item)`

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.n_samples & (self.n_samples - 1):
            raise ValueError(f"n_samples must be a power of two (k = 1, 2, 4, ... up to it), got {self.n_samples}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive (greedy is measured separately), got {self.temperature}")
        if not self.budgets or min(self.budgets) < 1 or max(self.budgets) > self.max_new_tokens:
            raise ValueError(f"budgets must lie in 1..max_new_tokens={self.max_new_tokens}, got {self.budgets}")
        if self.reference not in self.models:
            raise ValueError(f"the reference {self.reference!r} must be one of the models {self.models}")
        stray = [m for m in self.forcing_models or () if m not in self.models]
        if stray:
            raise ValueError(f"forcing_models {stray} are not among the models {self.models}")
        if self.extensions and (min(self.extensions) < 1 or list(self.extensions) != sorted(set(self.extensions))):
            raise ValueError(f"extensions must be increasing counts >= 1, got {self.extensions}")
        if self.answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1, got {self.answer_tokens}")
        if self.chain_end == "" or self.continuation == "":
            raise ValueError("chain_end and continuation must be None (the task's) or non-empty text")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComputeConfig:
        d = dict(d)
        for k in ("models", "bases", "steps", "budgets", "forcing_models", "extensions"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def key(self) -> dict[str, Any]:
        """What the main measurement depends on (budget forcing has its own key)."""
        return {k: v for k, v in self.to_dict().items() if k != "cache_dir" and k not in FORCING_FIELDS}

    def forcing_key(self) -> dict[str, Any]:
        """What one model's budget forcing depends on."""
        keep = ("task", "steps", "n_per_step", "eval_seed", "max_new_tokens", "budgets", "batch_size",
                *FORCING_FIELDS[1:])
        return {k: v for k, v in self.to_dict().items() if k in keep}

    @property
    def forced(self) -> tuple[str, ...]:
        """The models whose chains are budget-forced."""
        if self.forcing_models is not None:
            return self.forcing_models
        return tuple(m for m in self.models if m not in self.bases[1:])

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(int(np.log2(self.n_samples)) + 1))


# ------------------------------------------------------------------------------------------ selectors

def majority(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Is the most common answer right? Unparsed answers (None) do not vote; a tie goes to the answer seen
    first; no answer at all is wrong. (Answers that agree are equally right, so `correct` of any holder.)"""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return bool(correct[list(answers).index(winner)])


def best_of(scores: Sequence[float], correct: Sequence[bool]) -> bool:
    """Is the highest-scoring sample right? (first on ties)"""
    return bool(correct[int(np.argmax(np.asarray(scores, float)))])


def pass_at(correct: Sequence[bool]) -> bool:
    """Best-of-k with an oracle selector: is any sample right?"""
    return bool(any(correct))


@dataclass(frozen=True)
class Point:
    """One condition: mean generated tokens per problem and accuracy, with 95% bootstrap intervals."""

    method: str
    k: int  # samples; the token budget for `chain` and `cut_forced`; the extensions for `extend`
    tokens: float
    tokens_ci: tuple[float, float]
    accuracy: float
    accuracy_ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Point:
        return cls(d["method"], d["k"], d["tokens"], tuple(d["tokens_ci"]), d["accuracy"], tuple(d["accuracy_ci"]))


@dataclass(frozen=True)
class Forcing:
    """Budget forcing of one model's greedy forced chains, per problem: extended k times (k = 0 is the chain as
    the model ends it) and cut at each budget with the answer forced."""

    chain_end: str
    continuation: str  # the first problem's continuation (it may depend on the problem)
    extend_correct: dict[str, tuple[bool, ...]]  # k -> ...
    extend_tokens: dict[str, tuple[int, ...]]
    extend_suppressed: dict[str, tuple[int, ...]]  # how often the end marker was suppressed (< k: never closed)
    extend_valid: dict[str, tuple[bool, ...]]  # the extended chain parses
    # the answer written after the extended chain, graded in place of the unextended chain's own answer (so a
    # chain the grader cannot parse after extension still shows whether its answer moved)
    extend_answer_correct: dict[str, tuple[bool, ...]]
    cut_correct: dict[str, tuple[bool, ...]]  # budget -> ...
    cut_tokens: dict[str, tuple[int, ...]]
    cut_valid: dict[str, tuple[bool, ...]]  # the forced answer parses
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Forcing:
        dd = lambda x: {k: tuple(v) for k, v in x.items()}
        return cls(d["chain_end"], d["continuation"], dd(d["extend_correct"]), dd(d["extend_tokens"]),
                   dd(d["extend_suppressed"]), dd(d["extend_valid"]), dd(d["extend_answer_correct"]), dd(d["cut_correct"]), dd(d["cut_tokens"]), dd(d["cut_valid"]),
                   d["seconds"])


@dataclass(frozen=True)
class ModelCompute:
    name: str
    checksum: str
    n_params: int
    points: tuple[Point, ...]
    # per problem (rows) and sample (columns), so every curve can be recomputed
    sample_answers: tuple[tuple[str | None, ...], ...]
    sample_correct: tuple[tuple[bool, ...], ...]
    sample_tokens: tuple[tuple[int, ...], ...]
    sample_logprob: tuple[tuple[float, ...], ...]  # mean log-probability per token (EOS included when written)
    greedy_correct: tuple[bool, ...]
    greedy_tokens: tuple[int, ...]
    chain_correct: dict[str, tuple[bool, ...]]  # budget -> forced chain cut at that many tokens
    chain_tokens: dict[str, tuple[int, ...]]
    forcing: Forcing | None = None  # budget forcing, for the config's forcing_models

    def point(self, method: str, k: int | None = None) -> Point:
        for p in self.points:
            if p.method == method and (k is None or p.k == k):
                return p
        raise KeyError(f"{self.name} has no point {method}@{k}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["points"] = [p.to_dict() for p in self.points]
        d["forcing"] = None if self.forcing is None else self.forcing.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCompute:
        t2 = lambda rows: tuple(tuple(r) for r in rows)
        return cls(d["name"], d["checksum"], d["n_params"], tuple(Point.from_dict(p) for p in d["points"]),
                   t2(d["sample_answers"]), t2(d["sample_correct"]), t2(d["sample_tokens"]), t2(d["sample_logprob"]),
                   tuple(d["greedy_correct"]), tuple(d["greedy_tokens"]),
                   {k: tuple(v) for k, v in d["chain_correct"].items()},
                   {k: tuple(v) for k, v in d["chain_tokens"].items()},
                   Forcing.from_dict(d["forcing"]) if d.get("forcing") else None)


@dataclass(frozen=True)
class ComputeResult:
    config: ComputeConfig
    task: dict[str, Any]
    models: tuple[ModelCompute, ...]
    n_steps: tuple[int, ...]
    comparisons: dict[str, dict[str, Any]]  # catch-up and width-vs-depth contrasts with paired intervals
    seconds: float
    libraries: dict[str, str]

    def model(self, name: str) -> ModelCompute:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r}; the models are {[m.name for m in self.models]}")

    def to_dict(self) -> dict[str, Any]:
        return {"version": RESULT_VERSION, "config": self.config.to_dict(), "task": self.task,
                "models": [m.to_dict() for m in self.models], "n_steps": list(self.n_steps),
                "comparisons": self.comparisons, "seconds": self.seconds, "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComputeResult:
        return cls(ComputeConfig.from_dict(d["config"]), d["task"], tuple(ModelCompute.from_dict(m) for m in d["models"]),
                   tuple(d["n_steps"]), d["comparisons"], d["seconds"], d["libraries"])


# ------------------------------------------------------------------------------------------ measuring

def _graded(model: Model, task: Task, items: Sequence[Item], texts: Sequence[str]) -> tuple[list[bool], list[str | None]]:
    grades = [task.grade(it, t) for it, t in zip(items, texts)]
    return [g.correct for g in grades], [g.answer if g.valid else None for g in grades]


@torch.no_grad()
def mean_logprobs(model: Model, prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]],
                  batch_size: int) -> np.ndarray:
    """Mean log-probability per token of each completion under the model (an empty one scores -inf)."""
    from interp.scoring import completion_logprobs

    keep = [i for i, c in enumerate(comps) if c]
    out = np.full(len(comps), -np.inf)
    if keep:
        lp = completion_logprobs(model, [prompts[i] for i in keep], [comps[i] for i in keep], batch_size).numpy()
        out[keep] = lp / np.array([len(comps[i]) for i in keep])
    return out


def measure(model: Model, task: Task, items: list[Item], cfg: ComputeConfig) -> ModelCompute:
    """Greedy, K samples and forced chains at each budget for one model."""
    from interp.generate import generate_ids

    eos = model.tokenizer.eos_token_id
    dec = lambda ids: model.tokenizer.decode(list(ids), skip_special_tokens=False)
    prompts = prompt_ids(model, task, items)
    greedy = generate_ids(model.hf, model.tokenizer, prompts, cfg.max_new_tokens, 0.0, 0, cfg.batch_size)
    g_correct, _ = _graded(model, task, items, [dec(o) for o in greedy])
    g_tokens = [len(o) + (len(o) < cfg.max_new_tokens) for o in greedy]  # EOS counts as a generated token
    rep = [p for p in prompts for _ in range(cfg.n_samples)]
    samples = generate_ids(model.hf, model.tokenizer, rep, cfg.max_new_tokens, cfg.temperature, cfg.seed,
                           cfg.batch_size)
    s_items = [it for it in items for _ in range(cfg.n_samples)]
    s_correct, s_answer = _graded(model, task, s_items, [dec(o) for o in samples])
    s_tokens = [len(o) + (len(o) < cfg.max_new_tokens) for o in samples]
    s_lp = mean_logprobs(model, rep, [list(o) + ([eos] if len(o) < cfg.max_new_tokens else []) for o in samples],
                         cfg.batch_size)
    cot_prompts = prompt_ids(model, task, items, prefix=True)
    n_prefix = [len(c) - len(p) for c, p in zip(cot_prompts, prompts)]
    chains = generate_ids(model.hf, model.tokenizer, cot_prompts, cfg.max_new_tokens, 0.0, 0, cfg.batch_size)
    chain_correct, chain_tokens = {}, {}
    for b in cfg.budgets:
        texts, toks = [], []
        for c, p, n_pre, o in zip(cot_prompts, prompts, n_prefix, chains):
            full = list(c[len(p):]) + list(o)  # the forced prefix is part of the chain
            cut = full[:b]
            texts.append(dec(cut))
            toks.append(len(cut) + (len(full) < b))  # a chain that ended before the budget wrote its EOS too
        chain_correct[str(b)] = tuple(_graded(model, task, items, texts)[0])
        chain_tokens[str(b)] = tuple(toks)
    k = cfg.n_samples
    shape = lambda x: tuple(tuple(x[i * k:(i + 1) * k]) for i in range(len(items)))
    mc = ModelCompute(model.name, model.checksum, model.n_params, (), shape(s_answer), shape(s_correct),
                      shape(s_tokens), shape([float(v) for v in s_lp]), tuple(g_correct), tuple(g_tokens),
                      chain_correct, chain_tokens)
    return dataclasses.replace(mc, points=tuple(curve_points(mc, cfg)))


def _text_ids(model: Model, text: str) -> list[int]:
    """Ids of `text` as a completion piece (no BOS), checked against the vocabulary."""
    model.check_text(text)
    return [int(t) for t in model.tokenizer(text, add_special_tokens=False)["input_ids"]]


def forcing_texts(task: Task, items: Sequence[Item], cfg: ComputeConfig) -> tuple[str, list[str]]:
    """The end-of-chain marker and each problem's continuation: the config's if set, else the task's."""
    end = cfg.chain_end if cfg.chain_end is not None else task.chain_end
    if not end:
        raise ValueError(f"task {task.name!r} names no end-of-chain marker (Task.chain_end): set "
                         "ComputeConfig.chain_end to the text that closes its chains, or forcing_models=()")
    conts = [cfg.continuation if cfg.continuation is not None else task.continuation(it) for it in items]
    if any(not c for c in conts):
        raise ValueError(f"task {task.name!r} gives no continuation (Task.continuation): set "
                         "ComputeConfig.continuation to the text that makes a model think on, or forcing_models=()")
    if any(end in c for c in conts):
        raise ValueError(f"a continuation holds the end marker {end!r}: the chain would close at once")
    return end, conts


def measure_forcing(model: Model, task: Task, items: list[Item], cfg: ComputeConfig) -> Forcing:
    """One model's greedy forced chains extended 0, k1, k2, ... times, and cut at each budget with the answer
    forced (the forced prefix counts as part of the chain, as for `chain`)."""
    from interp.generate import generate_ids

    t0 = time.time()
    end, conts = forcing_texts(task, items, cfg)
    marker = _text_ids(model, end)
    cont_ids = [_text_ids(model, c) for c in conts]
    dec = lambda ids: model.tokenizer.decode(list(ids), skip_special_tokens=False)
    prompts = prompt_ids(model, task, items)
    cot = prompt_ids(model, task, items, prefix=True)
    prefix = [c[len(p):] for c, p in zip(cot, prompts)]
    gen = lambda ps: generate_ids(model.hf, model.tokenizer, ps, cfg.max_new_tokens, 0.0, 0, cfg.batch_size)
    first = gen(cot)
    ks = (0, *cfg.extensions)
    rounds = extend(gen, cot, first, marker, cont_ids, max(ks), cfg.max_new_tokens)
    ext_c, ext_t, ext_s, ext_v, ext_a = {}, {}, {}, {}, {}
    own_end = [find_marker(o, marker) for o in first]
    for k in ks:
        fs = rounds[k]
        grades = [task.grade(it, dec(list(p) + list(f.ids))) for it, p, f in zip(items, prefix, fs)]
        ext_c[str(k)] = tuple(g.correct for g in grades)
        ext_v[str(k)] = tuple(g.valid for g in grades)
        ext_t[str(k)] = tuple(len(p) + f.n_tokens for p, f in zip(prefix, fs))
        ext_s[str(k)] = tuple(f.suppressed for f in fs)
        answers = []
        for it, p, o, e, f in zip(items, prefix, first, own_end, fs):
            at = find_marker(f.ids, marker)
            answers.append(e is not None and at is not None
                           and task.grade(it, dec(list(p) + list(o[:e]) + list(f.ids[at:]))).correct)
        ext_a[str(k)] = tuple(answers)
    answer = lambda ps: generate_ids(model.hf, model.tokenizer, ps, cfg.answer_tokens, 0.0, 0, cfg.batch_size)
    chains = [list(p) + list(o) for p, o in zip(prefix, first)]
    finished = [len(o) < cfg.max_new_tokens for o in first]
    cut_c, cut_t, cut_v = {}, {}, {}
    for b in cfg.budgets:
        fs = cut(answer, prompts, chains, finished, b, marker, cfg.answer_tokens)
        grades = [task.grade(it, dec(f.ids)) for it, f in zip(items, fs)]
        cut_c[str(b)] = tuple(g.correct for g in grades)
        cut_v[str(b)] = tuple(g.valid for g in grades)
        cut_t[str(b)] = tuple(f.n_tokens for f in fs)
    return Forcing(end, conts[0], ext_c, ext_t, ext_s, ext_v, ext_a, cut_c, cut_t, cut_v, time.time() - t0)


def with_forcing(mc: ModelCompute, forcing: Forcing | None, cfg: ComputeConfig) -> ModelCompute:
    """`mc` with its budget forcing attached and its curve points recomputed."""
    mc = dataclasses.replace(mc, forcing=forcing)
    return dataclasses.replace(mc, points=tuple(curve_points(mc, cfg)))


def per_problem(mc: ModelCompute, method: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(correct, tokens) per problem of one condition."""
    if method == "greedy":
        return np.array(mc.greedy_correct, float), np.array(mc.greedy_tokens, float)
    if method == "chain":
        return np.array(mc.chain_correct[str(k)], float), np.array(mc.chain_tokens[str(k)], float)
    if method in ("extend", "extend_answer", "cut_forced"):
        f = mc.forcing
        if f is None:
            raise ValueError(f"{mc.name} has no budget forcing measured (not among the config's forcing_models)")
        c, t = {"extend": (f.extend_correct, f.extend_tokens), "extend_answer": (f.extend_answer_correct,
                f.extend_tokens), "cut_forced": (f.cut_correct, f.cut_tokens)}[method]
        return np.array(c[str(k)], float), np.array(t[str(k)], float)
    ans, cor, tok, lp = mc.sample_answers, mc.sample_correct, mc.sample_tokens, mc.sample_logprob
    tokens = np.array([sum(t[:k]) for t in tok], float)
    if method == "majority":
        c = [majority(a[:k], x[:k]) for a, x in zip(ans, cor)]
    elif method == "best_oracle":
        c = [pass_at(x[:k]) for x in cor]
    elif method == "best_logprob":
        c = [best_of(s[:k], x[:k]) for s, x in zip(lp, cor)]
    else:
        raise ValueError(f"unknown method {method!r}")
    return np.array(c, float), tokens


def curve_points(mc: ModelCompute, cfg: ComputeConfig) -> list[Point]:
    conds = [("greedy", 1)] + [(m, k) for m in ("majority", "best_oracle", "best_logprob") for k in cfg.ks] \
        + [("chain", b) for b in cfg.budgets]
    if mc.forcing is not None:
        conds += [(m, int(k)) for m in ("extend", "extend_answer") for k in mc.forcing.extend_correct] \
            + [("cut_forced", int(b)) for b in mc.forcing.cut_correct]
    out = []
    for method, k in conds:
        c, t = per_problem(mc, method, k)
        out.append(Point(method, k, float(t.mean()), bootstrap_ci(t, cfg.n_boot, cfg.seed), float(c.mean()),
                         bootstrap_ci(c, cfg.n_boot, cfg.seed)))
    return out


def comparisons(models: Sequence[ModelCompute], cfg: ComputeConfig) -> dict[str, dict[str, Any]]:
    """For each base: its best sampling condition (majority@K, verifier-free best-of-K) minus the reference's
    greedy accuracy; and width vs depth: majority@k against the forced chain whose budget is closest to the
    same tokens per problem (the budget whose chains' mean length is closest), paired over problems."""
    by = {m.name: m for m in models}
    ref_c, _ = per_problem(by[cfg.reference], "greedy", 1)
    out: dict[str, dict[str, Any]] = {}
    for name in cfg.bases:
        if name not in by:
            continue
        m = by[name]
        for method in ("majority", "best_logprob", "best_oracle"):
            c, t = per_problem(m, method, cfg.n_samples)
            d, ci = mean_diff(c, ref_c, cfg.n_boot, cfg.seed)
            out[f"{name} {method}@{cfg.n_samples} - {cfg.reference} greedy"] = {
                "diff": d, "diff_ci": ci, "tokens": float(t.mean()), "reference_tokens": float(
                    np.mean(by[cfg.reference].greedy_tokens))}
        for k in cfg.ks[1:]:
            cw, tw = per_problem(m, "majority", k)
            b = min(cfg.budgets, key=lambda x: abs(per_problem(m, "chain", x)[1].mean() - tw.mean()))
            cd, td = per_problem(m, "chain", b)
            d, ci = mean_diff(cw, cd, cfg.n_boot, cfg.seed)
            out[f"{name} width majority@{k} - depth chain@{b}"] = {
                "diff": d, "diff_ci": ci, "width_tokens": float(tw.mean()), "depth_tokens": float(td.mean())}
    for m in models:
        if m.forcing is None:
            continue
        c0, t0 = per_problem(m, "extend", 0)
        for k in m.forcing.extend_correct:
            if k == "0":
                continue
            ck, tk = per_problem(m, "extend", int(k))
            d, ci = mean_diff(ck, c0, cfg.n_boot, cfg.seed)
            dt, ct = mean_diff(tk, t0, cfg.n_boot, cfg.seed)
            ca, _ = per_problem(m, "extend_answer", int(k))
            da, cia = mean_diff(ca, c0, cfg.n_boot, cfg.seed)
            out[f"{m.name} extend@{k} - extend@0"] = {
                "diff": d, "diff_ci": ci, "tokens": float(tk.mean()), "tokens_0": float(t0.mean()),
                "tokens_diff": dt, "tokens_diff_ci": ct, "answer_diff": da, "answer_diff_ci": cia,
                "valid": float(np.mean(m.forcing.extend_valid[k])),
                "extended_fully": float(np.mean(np.array(m.forcing.extend_suppressed[k]) == int(k)))}
    return out


def run(config: ComputeConfig = ComputeConfig(), task: Task | None = None,
        models: Mapping[str, Model] | None = None, forcing: bool = True) -> ComputeResult:
    """Measure every model on the same problems; `task` and `models` default to the config's names; budget
    forcing for the config's forcing_models unless `forcing` is off."""
    from tqdm.auto import tqdm

    import interp

    t0 = time.time()
    task = task if task is not None else interp.task(config.task)
    items = sample_items(task, config.steps, config.n_per_step, config.eval_seed)
    given = dict(models or {})
    out = []
    for name in tqdm(config.models, desc="compute", leave=False):
        model = given.get(name) or interp.load(name)
        mc = measure(model, task, items, config)
        if forcing and name in config.forced:
            mc = with_forcing(mc, measure_forcing(model, task, items, config), config)
        out.append(mc)
    return ComputeResult(config, task.describe(), tuple(out), tuple(int(it.meta.get("n_steps", 0)) for it in items),
                         comparisons(out, config), time.time() - t0, library_versions())


def run_cached(config: ComputeConfig = ComputeConfig(), task: Task | None = None,
               models: Mapping[str, Model] | None = None) -> ComputeResult:
    """`run`, reusing stored results when the config and every model's checksum are unchanged: the main
    measurement and each model's budget forcing are stored apart (changing one does not redo the other).
    `task` and `models` (e.g. already loaded on a GPU) default to the config's names."""
    import interp

    given = dict(models or {})
    models = {n: given.get(n) or interp.load(n) for n in config.models}
    key = {"config": config.key(), "models": [m.checksum for m in models.values()], "version": RESULT_VERSION}
    main = cached(config.cache_dir, key, lambda: run(config, task, models, forcing=False), ComputeResult.to_dict,
                  ComputeResult.from_dict)
    if not config.forced:
        return dataclasses.replace(main, config=config)
    task = task if task is not None else interp.task(config.task)
    items = sample_items(task, config.steps, config.n_per_step, config.eval_seed)
    out = []
    for mc in main.models:
        f = None
        if mc.name in config.forced:
            fkey = {"forcing": config.forcing_key(), "model": models[mc.name].checksum, "version": FORCING_VERSION}
            f = cached(config.cache_dir, fkey, lambda m=models[mc.name]: measure_forcing(m, task, items, config),
                       Forcing.to_dict, Forcing.from_dict)
        out.append(with_forcing(mc, f, config))
    seconds = main.seconds + sum(m.forcing.seconds for m in out if m.forcing is not None)
    return dataclasses.replace(main, config=config, models=tuple(out), comparisons=comparisons(out, config),
                               seconds=seconds)


__all__ = ["ComputeConfig", "ComputeResult", "Forcing", "ModelCompute", "Point", "best_of", "comparisons",
           "forcing_texts", "majority", "measure", "measure_forcing", "pass_at", "per_problem", "run", "run_cached",
           "with_forcing"]
