"""What an SAE's features respond to: top-activating contexts, and a ranking of reasoning features.

Feature activations are computed once per store (`feature_table`). Reasoning scores per feature:
- `mode_auroc`: AUROC of the feature at the answer position for "the model is about to write a chain of
  thought" (the model's own greedy choice) vs "about to answer directly"; null = the largest |AUROC - 0.5|
  of any feature when those labels are shuffled over problems (a control for searching many features);
- `token_auroc`: AUROC for tokens of a written chain of thought vs all other tokens (prompt, direct answers);
- `value_eta2`: correlation ratio (share of the feature's variance explained by the value, 0..1) with the
  chain's values where they are computed (before a written value, at a clause's end), against the same
  with the values shuffled over problems;
- `reason_score`, ReasonScore-style (Galichin et al. 2025, arXiv 2503.18878): with R the chain-of-thought
  tokens grouped by token type ("reasoning words") and N all other tokens,
  score_i = (mu_R(i) / sum_j mu_R(j) - mu_N(i) / sum_j mu_N(j)) * (H_i / log |types|) ** alpha, where H_i is
  the entropy of feature i's mean activation over the token types of R (favouring features that fire across
  the chain, not on one token).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float

from interp.activations import ActivationStore, PromptDataset
from saes.config import SAEError
from saes.metrics import encode

if TYPE_CHECKING:
    from interp.models import Model


def check_feature(sae: Any, feature: int) -> int:
    """A feature index of this SAE, or a clear error naming the valid range."""
    n = int(sae.cfg.d_sae)
    if not isinstance(feature, (int, np.integer)) or not 0 <= int(feature) < n:
        raise SAEError(f"feature {feature} is out of range: this SAE has {n} features (0..{n - 1})")
    return int(feature)


@dataclass(frozen=True, eq=False)
class FeatureTable:
    """Feature activations of every stored row, with the row index (example, position, token)."""

    acts: Float[torch.Tensor, "rows d_sae"]
    example: np.ndarray
    position: np.ndarray
    token: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.acts.shape[1])

    def rows_of(self, example: int) -> dict[int, int]:
        """position -> row for one example."""
        sel = np.nonzero(self.example == example)[0]
        return {int(self.position[r]): int(r) for r in sel}

    def firing_rate(self) -> Float[torch.Tensor, " d_sae"]:
        return (self.acts > 0).float().mean(0)


def feature_table(sae: Any, store: ActivationStore, hook: str, label: str | Sequence[str] | None = None,
                  exclude_bos: bool = True) -> FeatureTable:
    """Encode every stored row of `hook` (BOS rows left out by default, as in training)."""
    from saes.training import shards

    acts, cols = [], {"example": [], "position": [], "token": []}
    for a, idx in shards(store, hook, label, exclude_bos):
        acts.append(encode(sae, a.float()))
        for c, parts in cols.items():
            parts.append(idx[c])
    if not acts:
        raise SAEError(f"the activation store {store.root} holds no rows of {hook}")
    return FeatureTable(torch.cat(acts), *(np.concatenate(cols[c]) for c in ("example", "position", "token")))


# ------------------------------------------------------------------------------------------ contexts

@dataclass(frozen=True)
class Context:
    """One text where a feature fires: its tokens, the feature's activation at each, and the peak."""

    example: int
    position: int
    activation: float
    tokens: tuple[str, ...]
    acts: tuple[float | None, ...]  # None where the store holds no row for that token

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Context:
        return cls(d["example"], d["position"], d["activation"], tuple(d["tokens"]), tuple(d["acts"]))


def top_contexts(table: FeatureTable, dataset: PromptDataset, tokenizer: Any, feature: int, k: int = 8
                 ) -> list[Context]:
    """The k texts where the feature's activation peaks highest (one context per text, and one per distinct
    prefix up to the peak: a causal model gives identical prefixes identical activations)."""
    if not 0 <= feature < table.n_features:
        raise SAEError(f"feature {feature} is out of range: this SAE has {table.n_features} features "
                       f"(0..{table.n_features - 1})")
    col = table.acts[:, feature].numpy()
    order = np.argsort(-col, kind="stable")
    out: list[Context] = []
    seen: set[int] = set()
    prefixes: set[tuple[int, ...]] = set()
    for r in order:
        if col[r] <= 0 or len(out) >= k:
            break
        ex = int(table.example[r])
        ids = dataset[ex].ids
        prefix = tuple(ids[:int(table.position[r]) + 1])
        if ex in seen or prefix in prefixes:
            continue
        seen.add(ex)
        prefixes.add(prefix)
        rows = table.rows_of(ex)
        acts = tuple(float(col[rows[p]]) if p in rows else None for p in range(len(ids)))
        out.append(Context(ex, int(table.position[r]), float(col[r]), tuple(tokenizer.convert_ids_to_tokens(list(ids))),
                           acts))
    return out


# ------------------------------------------------------------------------------------------ statistics

def auroc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each column of `scores` [rows, features] for boolean `labels` (ties count one half)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise SAEError(f"AUROC needs both classes; got {n_pos} positive and {n_neg} negative rows")
    ranks = rankdata(scores, axis=0)
    return (ranks[labels].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def eta_squared(scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Correlation ratio per column: between-value variance / total variance (0 where a column is constant)."""
    values = np.asarray(values)
    total = ((scores - scores.mean(0)) ** 2).sum(0)
    between = np.zeros(scores.shape[1])
    mean = scores.mean(0)
    for v in np.unique(values):
        m = values == v
        between += m.sum() * (scores[m].mean(0) - mean) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, between / np.where(total > 0, total, 1), 0.0)
    return out


def reason_score(table: FeatureTable, reasoning: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """ReasonScore-style score per feature (module docstring): specificity to R times spread over R's token types."""
    reasoning = np.asarray(reasoning, bool)
    if reasoning.all() or not reasoning.any():
        raise SAEError("ReasonScore needs reasoning and non-reasoning tokens")
    a = table.acts.double().numpy()
    mu_r, mu_n = a[reasoning].mean(0), a[~reasoning].mean(0)
    spec = mu_r / max(mu_r.sum(), 1e-12) - mu_n / max(mu_n.sum(), 1e-12)
    types = np.unique(table.token[reasoning])
    per_type = np.stack([a[reasoning & (table.token == t)].mean(0) for t in types])  # [types, features]
    p = per_type / np.maximum(per_type.sum(0, keepdims=True), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(0) / np.log(max(len(types), 2))
    return spec * np.clip(h, 0, 1) ** alpha


def bootstrap_auroc(scores: np.ndarray, labels: np.ndarray, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """95% intervals [features, 2] of each column's AUROC, resampling rows (one row per problem here)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if labels[i].all() or not labels[i].any():
            continue
        boots.append(auroc(scores[i], labels[i]))
    b = np.stack(boots)
    return np.stack([np.quantile(b, 0.025, axis=0), np.quantile(b, 0.975, axis=0)], 1)


# ------------------------------------------------------------------------------------------ ranking

@dataclass(frozen=True)
class FeatureScore:
    feature: int
    firing_rate: float
    mode_auroc: float
    mode_auroc_ci: tuple[float, float]
    token_auroc: float
    value_eta2: float
    reason_score: float
    mode_auroc_within: float = float("nan")  # mode AUROC comparing only problems of the same stratum (step count)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureScore:
        return cls(**{**d, "mode_auroc_ci": tuple(d["mode_auroc_ci"])})


@dataclass(frozen=True)
class ReasoningRanking:
    """Every live feature's scores, sorted by |mode AUROC - 0.5|, and the controls they are read against."""

    features: tuple[FeatureScore, ...]
    n_cot: int  # answer positions where the model chose a chain of thought
    n_direct: int
    null_mode_auroc: float  # largest |AUROC - 0.5| + 0.5 of any feature with the CoT labels shuffled
    null_value_eta2: float  # largest eta^2 of any feature with the values shuffled
    n_reasoning_tokens: int
    n_other_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in ("n_cot", "n_direct", "null_mode_auroc", "null_value_eta2",
                                                 "n_reasoning_tokens", "n_other_tokens")},
                "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReasoningRanking:
        return cls(tuple(FeatureScore.from_dict(f) for f in d["features"]), d["n_cot"], d["n_direct"],
                   d["null_mode_auroc"], d["null_value_eta2"], d["n_reasoning_tokens"], d["n_other_tokens"])

    def top(self, n: int, by: str = "mode_auroc", direction: int = 1) -> list[FeatureScore]:
        """The n features highest on `by` (mode_auroc, token_auroc, value_eta2, reason_score); direction -1: lowest."""
        return sorted(self.features, key=lambda f: -direction * getattr(f, by))[:n]


def rank_reasoning_features(table: FeatureTable, dataset: PromptDataset, *, answer: str = "answer",
                            cot_key: str = "will_cot", format_key: str = "format",
                            value_positions: Sequence[tuple[str, str]] = (),
                            n_boot: int = 200, seed: int = 0, alpha: float = 0.7,
                            stratum_key: str | None = "n_steps",
                            cot_formats: Sequence[str] = ("concise", "verbose")) -> ReasoningRanking:
    """Score every live feature for reasoning (module docstring). `value_positions`: (position name, metadata
    key) pairs where a value of the chain is computed, e.g. ("step2.before_value", "value.step2"). The mode AUROC
    is also computed within strata of `stratum_key` (pairs of problems with the same number of steps only), so a
    feature that merely tracks difficulty, which also drives the CoT choice, does not count. `cot_formats` are
    the dataset formats (meta[format_key]) that write a chain of thought: the task's `cot_formats`."""
    a = table.acts.double().numpy()
    live = np.nonzero((a > 0).any(0))[0]
    if len(live) == 0:
        raise SAEError("no feature fires on these activations")
    a = a[:, live]
    ex, pos = table.example, table.position
    # mode: one row per problem, at its answer position
    ans = np.array([dataset[int(e)].positions.get(answer, -1) for e in ex]) == pos
    rows = np.nonzero(ans)[0]
    labels = np.array([bool(dataset[int(ex[r])].meta.get(cot_key)) for r in rows])
    if labels.all() or not labels.any():
        raise SAEError(f"the model made the same choice ({cot_key}={bool(labels[0]) if len(labels) else None}) at every "
                       f"answer position: no CoT-vs-direct contrast to score")
    mode = auroc(a[rows], labels)
    rng = np.random.default_rng(seed)
    null_mode = float(np.max(np.abs(auroc(a[rows], rng.permutation(labels)) - 0.5)) + 0.5)
    ci = bootstrap_auroc(a[rows], labels, n_boot, seed)
    # tokens of a written chain of thought vs every other token
    fmt = np.array([dataset[int(e)].meta.get(format_key) for e in ex])
    after = pos > np.array([dataset[int(e)].positions.get(answer, 10 ** 9) for e in ex])
    reasoning = after & np.isin(fmt, tuple(cot_formats))
    token = auroc(a, reasoning) if reasoning.any() and not reasoning.all() else np.full(len(live), np.nan)
    rs = reason_score(FeatureTable(torch.from_numpy(a), ex, pos, table.token), reasoning, alpha) \
        if reasoning.any() and not reasoning.all() else np.full(len(live), np.nan)
    # values of the chain where they are computed
    eta = np.zeros(len(live))
    null_eta = 0.0
    for name, key in value_positions:
        sel = np.array([dataset[int(e)].positions.get(name, -1) == p and key in dataset[int(e)].meta
                        for e, p in zip(ex, pos)])
        if sel.sum() < 20:
            continue
        vals = np.array([dataset[int(e)].meta[key] for e in ex[sel]])
        eta = np.maximum(eta, eta_squared(a[sel], vals))
        null_eta = max(null_eta, float(eta_squared(a[sel], rng.permutation(vals)).max()))
    within = np.full(len(live), np.nan)
    if stratum_key is not None:
        strata = np.array([str(dataset[int(ex[r])].meta.get(stratum_key)) for r in rows])
        num, den = np.zeros(len(live)), 0.0
        for st in np.unique(strata):
            m = strata == st
            n_pos, n_neg = int(labels[m].sum()), int((~labels[m]).sum())
            if n_pos and n_neg:
                num += auroc(a[rows][m], labels[m]) * n_pos * n_neg
                den += n_pos * n_neg
        if den:
            within = num / den
    rate = (a > 0).mean(0)
    feats = tuple(FeatureScore(int(f), float(rate[j]), float(mode[j]), (float(ci[j, 0]), float(ci[j, 1])),
                               float(token[j]), float(eta[j]), float(rs[j]), float(within[j]))
                  for j, f in enumerate(live))
    feats = tuple(sorted(feats, key=lambda f: -abs(f.mode_auroc - 0.5)))
    return ReasoningRanking(feats, int(labels.sum()), int((~labels).sum()), null_mode, null_eta,
                            int(reasoning.sum()), int((~reasoning).sum()))


# ------------------------------------------------------------------------------------------ logit effects

@torch.no_grad()
def logit_effects(sae: Any, model: Model, feature: int, k: int = 10) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Tokens the feature's decoder direction promotes and suppresses most: W_dec[i] @ W_U (no final norm)."""
    feature = check_feature(sae, feature)
    w_u = model.hf.get_output_embeddings().weight.detach().float()  # [vocab, d_model]
    if w_u.shape[1] != int(sae.cfg.d_in):
        raise SAEError(f"the SAE's width {sae.cfg.d_in} is not the unembedding's d_model {w_u.shape[1]}")
    eff = (w_u @ sae.W_dec[feature].detach().float().to(w_u.device)).cpu()
    toks = model.tokenizer.convert_ids_to_tokens(list(range(len(eff))))
    order = torch.argsort(eff, descending=True).tolist()
    up = [(toks[i], float(eff[i])) for i in order[:k]]
    down = [(toks[i], float(eff[i])) for i in order[::-1][:k]]
    return up, down


__all__ = [
    "Context",
    "FeatureScore",
    "FeatureTable",
    "ReasoningRanking",
    "auroc",
    "bootstrap_auroc",
    "check_feature",
    "eta_squared",
    "feature_table",
    "logit_effects",
    "rank_reasoning_features",
    "reason_score",
    "top_contexts",
]
