"""Does post-training teach *when* to reason? Hybrids of a base and a tuned model (Venhoff et al. 2025,
arXiv 2510.07364), measured on any task and pair.

For each tuned model, base and tuned decode one shared sequence in lock-step and a router chooses whose
greedy token is kept: never, always, the first completion token only, where greedy tokens differ, where
KL(tuned || base) exceeds a threshold, a logistic classifier on the base's own residual stream (trained on
separate problems; no tuned model at decision time), and a Venhoff-style guardrail that keeps the base
candidate the tuned model prefers (consults the tuned model). A random router at the same per-token rate is
the control. A steering variant adds a base-space vector (tuned-CoT minus tuned-direct problems, read from
the base) at the prompt's last position instead of taking any tuned token. Token distribution shift: over
the tuned model's greedy generations, how often the base ranks the tuned token first or in its top 3.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from analyses.routing.common import (
    cached,
    gap_recovered,
    mean_diff,
    prompt_ids,
    ratio_ci,
    sample_items,
)
from analyses.routing.decode import (
    Always,
    Classifier,
    Differ,
    FirstToken,
    Guardrail,
    KLAbove,
    Never,
    RandomRate,
    Router,
    StepView,
    Trace,
    decode,
    features,
    lockstep,
)
from interp.io import cache_dir, library_versions
from interp.stats import bootstrap_ci
from interp.tasks.base import Item, Task

if TYPE_CHECKING:
    from interp.models import Model

RESULT_VERSION = 3
CONTROLLED = ("first", "classifier")  # routers that get a random router at their rate


@dataclass(frozen=True)
class RoutingConfig:
    base: str = "organism/base-s"
    tuned: tuple[str, ...] = ("organism/rl", "organism/sft")
    task: str = "organism"
    steps: tuple[int, ...] = (1, 2, 3, 4)
    n_per_step: int = 100
    train_per_step: int = 100  # separate problems: classifier fit and steering vector/scale choice
    eval_seed: int = 14_000_003
    train_seed: int = 14_100_019
    kl_threshold: float = 0.5
    guardrail_k: int = 3
    classifier_layer: int | None = None  # None: the base's second-to-last layer
    classifier_c: float = 1.0
    steer: bool = True
    steer_scales: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)  # signed: the sign is chosen too
    max_new_tokens: int = 72
    batch_size: int = 256
    n_boot: int = 1000
    seed: int = 0
    cache_dir: str = field(default_factory=lambda: str(cache_dir("routing")))

    def __post_init__(self) -> None:
        if not self.tuned:
            raise ValueError("give at least one tuned model")
        if self.n_per_step < 1 or self.train_per_step < 2:
            raise ValueError(f"need n_per_step >= 1 and train_per_step >= 2, got {self.n_per_step}, "
                             f"{self.train_per_step}")
        if self.guardrail_k < 2:
            raise ValueError(f"guardrail_k must be at least 2 (one candidate is no choice), got {self.guardrail_k}")
        if self.steer and (not self.steer_scales or 0.0 in self.steer_scales):
            raise ValueError(f"steer_scales must be non-zero (signed), got {self.steer_scales}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoutingConfig:
        d = dict(d)
        for k in ("tuned", "steps", "steer_scales"):
            d[k] = tuple(d[k])
        return cls(**d)

    def key(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "cache_dir"}


@dataclass(frozen=True)
class RouterOutcome:
    """One hybrid over the evaluation problems: per-problem outcomes and the summary with 95% intervals."""

    name: str
    consults_tuned: bool
    uses_tuned_tokens: bool
    params: dict[str, Any]
    correct: tuple[bool, ...]
    cot: tuple[bool, ...]
    valid: tuple[bool, ...]
    n_tokens: tuple[int, ...]  # decoding steps per problem (EOS included when written)
    n_routed: tuple[int, ...]
    completions: tuple[str, ...]
    accuracy: float
    accuracy_ci: tuple[float, float]
    gap_recovered: float
    gap_recovered_ci: tuple[float, float]
    share_routed: float
    share_routed_ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RouterOutcome:
        d = dict(d)
        for k in ("correct", "cot", "valid", "n_tokens", "n_routed", "completions", "accuracy_ci",
                  "gap_recovered_ci", "share_routed_ci"):
            d[k] = tuple(d[k])
        return cls(**d)

    @property
    def cot_rate(self) -> float:
        return float(np.mean(self.cot))

    @property
    def invalid_rate(self) -> float:
        return float(1 - np.mean(self.valid))

    @property
    def mean_tokens(self) -> float:
        return float(np.mean(self.n_tokens))


@dataclass(frozen=True)
class PairRouting:
    base: str
    tuned: str
    base_checksum: str
    tuned_checksum: str
    n_steps: tuple[int, ...]  # per evaluation problem
    routers: tuple[RouterOutcome, ...]
    contrasts: dict[str, dict[str, Any]]  # "first vs random@first" -> accuracy and gap differences with CIs
    classifier: dict[str, Any]
    steering: dict[str, Any]
    shift: dict[str, Any]

    def router(self, name: str) -> RouterOutcome:
        for r in self.routers:
            if r.name == name:
                return r
        raise KeyError(f"no router {name!r}; the routers are {[r.name for r in self.routers]}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["routers"] = [r.to_dict() for r in self.routers]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairRouting:
        d = dict(d)
        d["n_steps"] = tuple(d["n_steps"])
        d["routers"] = tuple(RouterOutcome.from_dict(r) for r in d["routers"])
        return cls(**d)


@dataclass(frozen=True)
class RoutingResult:
    config: RoutingConfig
    task: dict[str, Any]
    pairs: tuple[PairRouting, ...]
    seconds: float
    libraries: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"version": RESULT_VERSION, "config": self.config.to_dict(), "task": self.task,
                "pairs": [p.to_dict() for p in self.pairs], "seconds": self.seconds, "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoutingResult:
        return cls(RoutingConfig.from_dict(d["config"]), d["task"], tuple(PairRouting.from_dict(p) for p in d["pairs"]),
                   d["seconds"], d["libraries"])


# ------------------------------------------------------------------------------------------ classifier

def classifier_data(base: Model, tuned: Model, prompts: Sequence[Sequence[int]], layer: int, cfg: RoutingConfig
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, label, problem) for every decoding step along the base's own and the tuned model's greedy
    trajectories; label = the tuned model's greedy token differs from the base's."""
    xs, ys, gs = [], [], []

    class Collect(Router):
        resid_layer = layer

        def __init__(self, inner: Router) -> None:
            self.inner = inner

        def choose(self, v: StepView) -> tuple[torch.Tensor, torch.Tensor]:
            act = v.active.cpu().numpy()
            xs.append(features(v.base_resid, v.base_logits).cpu().numpy()[act])  # type: ignore[arg-type]
            ys.append((v.base_logits.argmax(-1) != v.tuned_logits.argmax(-1)).cpu().numpy()[act])
            gs.append(v.row_ids.numpy()[act])
            return self.inner.choose(v)

    for inner in (Never(), Always()):
        lockstep(base, tuned, prompts, Collect(inner), cfg.max_new_tokens, cfg.batch_size)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def fit_classifier(x: np.ndarray, y: np.ndarray, groups: np.ndarray, layer: int, c: float, seed: int
                   ) -> tuple[Classifier, dict[str, Any]]:
    """Logistic regression on standardised features; held-out AUROC on 30% of the problems; the threshold makes
    the predicted rate on the training problems equal the true rate of disagreement."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    if y.all() or not y.any():
        raise ValueError("the classifier's training data has one class only: base and tuned always (or never) "
                         "agree on these problems; sample more (train_per_step)")
    probs = np.unique(groups)
    held = np.random.default_rng(seed).permutation(probs)[: max(1, round(0.3 * len(probs)))]
    te = np.isin(groups, held)
    mu, sd = x[~te].mean(0), x[~te].std(0) + 1e-6

    def fit(rows: np.ndarray) -> Any:
        with threadpool_limits(1):
            return LogisticRegression(C=c, max_iter=2000).fit((x[rows] - mu) / sd, y[rows])

    m = fit(~te)
    auc = float(roc_auc_score(y[te], m.decision_function((x[te] - mu) / sd))) if 0 < y[te].sum() < te.sum() \
        else float("nan")
    m = fit(np.ones(len(y), bool))
    w = m.coef_[0] / sd
    b = float(m.intercept_[0] - (m.coef_[0] * mu / sd).sum())
    scores = 1 / (1 + np.exp(-(x @ w + b)))
    threshold = float(np.quantile(scores, 1 - y.mean()))
    router = Classifier(torch.tensor(w, dtype=torch.float32), b, threshold, layer)
    return router, {"layer": layer, "auroc_held_out": auc, "n_tokens": len(y), "n_problems": len(probs),
                    "positive_rate": float(y.mean()), "threshold": threshold}


# ------------------------------------------------------------------------------------------ steering

def steering_variant(base: Model, tuned: Model, task: Task, train: list[Item], test: list[Item], layer: int,
                     cfg: RoutingConfig) -> tuple[dict[str, Any], list[str], list[int]] | None:
    """A base-space direction (mean base residual at the prompt's last position over training problems the tuned
    model answers with a chain of thought, minus those it answers directly), added at that position only; the
    signed scale is the training problems' most accurate (ties: the smallest). Returns (info, test completions, test token counts)."""
    from interp.evaluation import GenerationConfig, generate_completions
    from interp.hooks import resid_post
    from interp.steering import Add, Positions, SteeringVector, steer

    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    texts, _ = generate_completions(tuned, task, train, gen)
    cot = np.array([task.grade(it, t).cot for it, t in zip(train, texts)])
    if cot.all() or not cot.any():
        return None  # the tuned model never (or always) writes a chain here: no contrast to read
    prompts = prompt_ids(base, task, train)
    resid = []
    for s in range(0, len(prompts), cfg.batch_size):
        from interp.models import right_pad

        rows = prompts[s:s + cfg.batch_size]
        ids, mask = right_pad(rows, base.pad_token_id, base.device)
        with torch.no_grad():
            hs = base.hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer + 1]
        resid.append(hs[torch.arange(len(rows)), mask.sum(-1) - 1].float().cpu())
    r = torch.cat(resid)
    vec = SteeringVector(r[torch.from_numpy(cot)].mean(0) - r[torch.from_numpy(~cot)].mean(0), resid_post(layer),
                         base.name, base.checksum, "mean_difference",
                         {"positive": f"{tuned.name} writes a CoT", "negative": f"{tuned.name} answers directly"})

    def run_at(scale: float, items: list[Item]) -> tuple[list[str], list[int]]:
        with steer(base, [Add(vec, scale=scale, where=Positions((-1,)))]):
            return generate_completions(base, task, items, gen)

    plain, _ = generate_completions(base, task, train, gen)
    tried = {"0": float(np.mean([task.grade(it, x).correct for it, x in zip(train, plain)]))}
    for sc in cfg.steer_scales:
        t, _ = run_at(sc, train)
        tried[str(sc)] = float(np.mean([task.grade(it, x).correct for it, x in zip(train, t)]))
    best = max(cfg.steer_scales, key=lambda s: (tried[str(s)], -abs(s)))
    texts, n_tok = run_at(best, test)
    info = {"layer": layer, "hook": vec.hook, "norm": vec.norm, "scale": best, "train_accuracy_by_scale": tried,
            "train_cot_share": float(cot.mean())}
    return info, texts, n_tok


# ------------------------------------------------------------------------------------------ shift

def token_shift(base: Model, tuned: Model, prompts: Sequence[Sequence[int]], traces: Sequence[Trace],
                n_boot: int, seed: int, batch_size: int = 256) -> dict[str, Any]:
    """Over the tuned model's own greedy completions (EOS included), the base's rank of each tuned token:
    share of positions ranked first and in the top 3, for value tokens (numbers), format tokens (the rest)
    and the first completion token, with intervals over problems; and the tokens the base most often
    does not rank first."""
    from interp.models import right_pad

    eos = base.tokenizer.eos_token_id
    comps = [list(t.ids) + ([eos] if t.stopped else []) for t in traces]
    ranks: list[np.ndarray] = []
    for s in range(0, len(prompts), batch_size):
        rows = [list(p) + c for p, c in zip(prompts[s:s + batch_size], comps[s:s + batch_size])]
        ids, mask = right_pad(rows, base.pad_token_id, base.device)
        with torch.no_grad():
            logits = base.hf(input_ids=ids, attention_mask=mask).logits.float()
        for i, (p, c) in enumerate(zip(prompts[s:s + batch_size], comps[s:s + batch_size])):
            pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)
            lg = logits[i, pos]
            tgt = lg.gather(-1, torch.tensor(c, device=lg.device)[:, None])
            ranks.append(((lg > tgt).sum(-1) + 1).cpu().numpy())
    vocab = {i: t for t, i in base.tokenizer.get_vocab().items()}
    kinds = {"value": lambda tok, j: tok.strip().isdigit(), "format": lambda tok, j: not tok.strip().isdigit(),
             "first": lambda tok, j: j == 0, "all": lambda tok, j: True}
    out: dict[str, Any] = {"n_positions": int(sum(len(c) for c in comps))}
    for kind, pred in kinds.items():
        sel = [np.array([pred(vocab[t], j) for j, t in enumerate(c)], bool) for c in comps]
        tot = np.array([m.sum() for m in sel], float)
        entry: dict[str, Any] = {"n": int(tot.sum())}
        for k in (1, 3):
            hits = np.array([(r[m] <= k).sum() for r, m in zip(ranks, sel)], float)
            v, ci = ratio_ci(hits, tot, n_boot, seed)
            entry[f"top{k}"], entry[f"top{k}_ci"] = v, ci
        out[kind] = entry
    counts: dict[str, list[int]] = {}
    for r, c in zip(ranks, comps):
        for rank, t in zip(r, c):
            e = counts.setdefault(vocab[t], [0, 0])
            e[0] += 1
            e[1] += int(rank > 1)
    shifted = sorted(((tok, n, m) for tok, (n, m) in counts.items() if m), key=lambda x: (-x[2], x[0]))
    out["shifted_tokens"] = [{"token": t, "count": n, "not_top1": m, "share_not_top1": m / n} for t, n, m in shifted[:12]]
    return out


# ------------------------------------------------------------------------------------------ run

def outcome(router: Router | str, task: Task, items: Sequence[Item], texts: Sequence[str], n_tokens: Sequence[int],
            n_routed: Sequence[int], base_correct: np.ndarray | None, tuned_correct: np.ndarray | None,
            cfg: RoutingConfig, consults_tuned: bool = False, uses_tuned_tokens: bool = True,
            params: dict[str, Any] | None = None) -> RouterOutcome:
    grades = [task.grade(it, t) for it, t in zip(items, texts)]
    correct = np.array([g.correct for g in grades], float)
    if isinstance(router, Router):
        name, consults_tuned, params = router.name, router.consults_tuned, router.describe()
    else:
        name = router
    acc_ci = bootstrap_ci(correct, cfg.n_boot, cfg.seed)
    b = correct if base_correct is None else base_correct
    t = correct if tuned_correct is None else tuned_correct
    gap, gap_ci = gap_recovered(correct, b, t, cfg.n_boot, cfg.seed)
    share, share_ci = ratio_ci(np.array(n_routed, float), np.array(n_tokens, float), cfg.n_boot, cfg.seed)
    return RouterOutcome(name, consults_tuned, uses_tuned_tokens, dict(params or {}),
                         tuple(bool(g.correct) for g in grades), tuple(g.cot for g in grades),
                         tuple(g.valid for g in grades), tuple(int(n) for n in n_tokens),
                         tuple(int(n) for n in n_routed), tuple(texts), float(correct.mean()), acc_ci, gap, gap_ci,
                         share, share_ci)


def run_pair(base: Model, tuned: Model, task: Task, cfg: RoutingConfig) -> PairRouting:
    """Every router, its random control, the steering variant and the token shift for one pair."""
    from tqdm.auto import tqdm

    items = sample_items(task, cfg.steps, cfg.n_per_step, cfg.eval_seed)
    train = sample_items(task, cfg.steps, cfg.train_per_step, cfg.train_seed)
    prompts = prompt_ids(base, task, items)
    layer = base.n_layers - 2 if cfg.classifier_layer is None else cfg.classifier_layer
    x, y, g = classifier_data(base, tuned, prompt_ids(base, task, train), layer, cfg)
    clf, clf_info = fit_classifier(x, y, g, layer, cfg.classifier_c, cfg.seed)

    def run_router(r: Router, base_c: np.ndarray | None, tuned_c: np.ndarray | None) -> tuple[RouterOutcome, list[Trace]]:
        tr = lockstep(base, tuned, prompts, r, cfg.max_new_tokens, cfg.batch_size)
        return outcome(r, task, items, [decode(base, t.ids) for t in tr], [len(t.routed) for t in tr],
                       [sum(t.routed) for t in tr], base_c, tuned_c, cfg), tr

    bar = tqdm(total=9 + cfg.steer, desc=f"routing {tuned.name}", leave=False)
    never, _ = run_router(Never(), None, None)
    bar.update()
    b = np.array(never.correct, float)
    always, tuned_traces = run_router(Always(), b, None)
    bar.update()
    t = np.array(always.correct, float)
    never = outcome(Never(), task, items, never.completions, never.n_tokens, never.n_routed, b, t, cfg)
    outs = [never, always]
    for r in (FirstToken(), Differ(), KLAbove(cfg.kl_threshold), Guardrail(cfg.guardrail_k), clf):
        outs.append(run_router(r, b, t)[0])
        bar.update()
    contrasts = {}
    for target in CONTROLLED:
        o = next(o for o in outs if o.name == target)
        seed = cfg.seed + 7919 * (1 + CONTROLLED.index(target))  # independent draws per control
        rnd = run_router(RandomRate(o.share_routed, seed, name=f"random@{target}"), b, t)[0]
        bar.update()
        outs.append(rnd)
        h, rr = np.array(o.correct, float), np.array(rnd.correct, float)
        d, d_ci = mean_diff(h, rr, cfg.n_boot, cfg.seed)
        contrasts[f"{target} vs {rnd.name}"] = {"accuracy_diff": d, "accuracy_diff_ci": d_ci}
    steering: dict[str, Any] = {}
    if cfg.steer:
        sv = steering_variant(base, tuned, task, train, items, layer, cfg)
        bar.update()
        if sv is None:
            steering = {"skipped": f"{tuned.name} writes a chain on every training problem, or on none: no "
                                   f"CoT-vs-direct contrast to read a vector from"}
        else:
            steering, texts, n_tok = sv
            outs.append(outcome("steer@first", task, items, texts, n_tok, [1] * len(items), b, t, cfg,
                                uses_tuned_tokens=False, params={"scale": steering["scale"], "layer": layer}))
    bar.close()
    shift = token_shift(base, tuned, prompts, tuned_traces, cfg.n_boot, cfg.seed, cfg.batch_size)
    return PairRouting(base.name, tuned.name, base.checksum, tuned.checksum,
                       tuple(int(it.meta.get("n_steps", 0)) for it in items), tuple(outs), contrasts, clf_info,
                       steering, shift)


def run(config: RoutingConfig = RoutingConfig(), task: Task | None = None,
        models: Mapping[str, Model] | None = None) -> RoutingResult:
    """Run every pair (base, each tuned model). `task` and `models` default to the config's names."""
    import interp

    torch.manual_seed(config.seed)
    t0 = time.time()
    task = task if task is not None else interp.task(config.task)
    models = dict(models or {})
    for name in (config.base, *config.tuned):
        if name not in models:
            models[name] = interp.load(name)
    pairs = tuple(run_pair(models[config.base], models[name], task, config) for name in config.tuned)
    return RoutingResult(config, task.describe(), pairs, time.time() - t0, library_versions())


def run_cached(config: RoutingConfig = RoutingConfig(), task: Task | None = None,
               models: Mapping[str, Model] | None = None) -> RoutingResult:
    """`run`, reusing a stored result when the config and every model's checksum are unchanged (`task` and
    `models`, e.g. already loaded on a GPU, default to the config's names)."""
    import interp

    given = dict(models or {})
    models = {n: given.get(n) or interp.load(n) for n in dict.fromkeys((config.base, *config.tuned))}
    key = {"config": config.key(), "models": [m.checksum for m in models.values()], "version": RESULT_VERSION}
    return cached(config.cache_dir, key, lambda: run(config, task, models), RoutingResult.to_dict,
                  RoutingResult.from_dict)


__all__ = ["PairRouting", "RouterOutcome", "RoutingConfig", "RoutingResult", "classifier_data", "fit_classifier",
           "run", "run_cached", "run_pair", "steering_variant", "token_shift"]
