"""Which SAE features stop firing under shift? An SAE (sae-lens BatchTopK through `saes.train_sae`, as the SAE
section trains one) on a zoo member's residual stream over in-distribution texts (prompt + the verbose reference
chain, sft's own format); then, on held-out problems split in two halves A and B, every feature's firing rate (share
of token positions where it is active) on A in distribution against B under a shift that keeps every token
position (separator `,`, renamed variables, operand first: the same problems, the same chain, position for
position), and, as the control for sampling noise, against B in distribution: the same comparison with no shift.
A feature "stops firing" when it fires on at least `min_rate` of A's positions, its rate on B falls by at least
`drop` (rate_B <= (1 - drop) rate_A) and the 95% bootstrap interval (problems resampled) of rate_B - rate_A lies
below 0. Features are typed by where they fire in distribution: chain features (mostly on the written chain's
tokens: reasoning) and prompt features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from analyses.shift.transforms import DEFAULT_SHIFTS, IN_DISTRIBUTION, Shift, ShiftedProblem, shifted_problems
from interp.activations import AllTokens, PromptDataset, harvest
from interp.activations.dataset import Example
from interp.io import cache_dir, library_versions, read_json, write_json
from interp.organism.task import TaskConfig, sample_problems
from interp.plots import save_figure, style
from interp.stats import percentile_ci
from saes import SAETrainConfig

RESULT_VERSION = 2
PAIRED_SHIFTS = ("separator ,", "renamed variables", "operand first")
CONTROL = "in-distribution (control)"


@dataclass(frozen=True)
class SAEShiftConfig:
    model: str = "organism/sft"
    hook: str = "blocks.1.hook_resid_post"
    shifts: tuple[str, ...] = PAIRED_SHIFTS
    n_train: int = 2000  # in-distribution problems (1-4 steps) the SAE is trained on
    train_seed: int = 2_515_000
    n_eval: int = 600  # held-out problems, halves A and B (2-4 steps)
    eval_seed: int = 3_515_000
    fmt: str = "verbose"  # the reference chain written after each prompt
    sae: SAETrainConfig = field(default_factory=lambda: SAETrainConfig(hook="blocks.1.hook_resid_post",
                                                                       total_samples=200_000))
    min_rate: float = 0.01
    drop: float = 0.8
    chain_share: float = 0.8  # a chain feature fires on the chain's tokens at least this share of the time
    n_boot: int = 500
    seed: int = 0
    cache_dir: str = field(default_factory=lambda: str(cache_dir("shift", "sae")))

    def __post_init__(self) -> None:
        if self.sae.hook != self.hook:
            raise ValueError(f"the SAE config's hook {self.sae.hook} is not the analysis hook {self.hook}")
        if self.n_eval < 4:
            raise ValueError(f"n_eval must be >= 4 (two halves with an interval), got {self.n_eval}")
        if not 0 < self.drop <= 1:
            raise ValueError(f"drop must be in (0, 1], got {self.drop}")
        known = {s.name for s in DEFAULT_SHIFTS}
        bad = [s for s in self.shifts if s not in known]
        if bad:
            raise ValueError(f"unknown shift(s) {bad}; the battery's shifts are {sorted(known)}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sae"] = self.sae.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEShiftConfig:
        d = dict(d)
        d["sae"] = SAETrainConfig.from_dict(d["sae"])
        d["shifts"] = tuple(d["shifts"])
        return cls(**d)

    def key(self, checksum: str) -> str:
        d = {k: v for k, v in self.to_dict().items() if k != "cache_dir"}
        return hashlib.sha256(json.dumps({"checksum": checksum, "version": RESULT_VERSION, **d},
                                         sort_keys=True).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------------ statistics

@dataclass(frozen=True)
class Comparison:
    """Per feature: firing rates on A (in distribution) and on B (shifted, or in distribution for the control),
    the interval of rate_B - rate_A, and which features stop (or start) firing."""

    name: str
    rate_a: tuple[float, ...]
    rate_b: tuple[float, ...]
    diff_ci: tuple[tuple[float, float], ...]
    stopped: tuple[int, ...]  # sorted by rate_a, highest first
    started: tuple[int, ...]

    def moved(self, min_rate: float) -> tuple[int, int]:
        """Features firing on at least `min_rate` of either sample whose rate falls / rises significantly (95%
        interval of the difference below / above 0), whatever the size of the change."""
        ra, rb = np.asarray(self.rate_a), np.asarray(self.rate_b)
        ci = np.asarray(self.diff_ci).reshape(-1, 2)
        live = (ra >= min_rate) | (rb >= min_rate)
        return int((live & (ci[:, 1] < 0)).sum()), int((live & (ci[:, 0] > 0)).sum())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rate_a": list(self.rate_a), "rate_b": list(self.rate_b),
                "diff_ci": [list(c) for c in self.diff_ci], "stopped": list(self.stopped), "started": list(self.started)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        return cls(d["name"], tuple(d["rate_a"]), tuple(d["rate_b"]), tuple(tuple(c) for c in d["diff_ci"]),
                   tuple(d["stopped"]), tuple(d["started"]))


def per_example_counts(fired: np.ndarray, example: np.ndarray, n_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Firing counts [example, feature] and token positions per example from row-level indicators [row, feature]."""
    counts = np.zeros((n_examples, fired.shape[1]))
    np.add.at(counts, example, fired)
    return counts, np.bincount(example, minlength=n_examples).astype(float)


def _boot_rates(counts: np.ndarray, lengths: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Firing rate of every feature on `n_boot` resamples of the examples: [n_boot, feature]."""
    n = len(lengths)
    w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]).astype(float)
    return (w @ counts) / np.maximum(w @ lengths, 1.0)[:, None]


def compare(name: str, a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], min_rate: float,
            drop: float, n_boot: int, seed: int) -> Comparison:
    """Compare per-feature firing rates of two samples of examples, each (counts [example, feature], positions per
    example); A and B are resampled independently."""
    rng = np.random.default_rng(seed)
    ra, rb = a[0].sum(0) / a[1].sum(), b[0].sum(0) / b[1].sum()
    d = _boot_rates(*b, n_boot, rng) - _boot_rates(*a, n_boot, rng)
    ci = [percentile_ci(d[:, j]) for j in range(d.shape[1])]
    stop = [j for j in range(len(ra)) if ra[j] >= min_rate and rb[j] <= (1 - drop) * ra[j] and ci[j][1] < 0]
    start = [j for j in range(len(ra)) if rb[j] >= min_rate and ra[j] <= (1 - drop) * rb[j] and ci[j][0] > 0]
    return Comparison(name, tuple(map(float, ra)), tuple(map(float, rb)), tuple(ci),
                      tuple(sorted(stop, key=lambda j: -ra[j])), tuple(sorted(start, key=lambda j: -rb[j])))


# ------------------------------------------------------------------------------------------------ data

def texts(problems: list[ShiftedProblem], fmt: str) -> list[list[str]]:
    """Prompt words followed by the reference completion in `fmt` (in the problem's shown naming and separator)."""
    return [[*p.prompt, *p.reference(fmt)] for p in problems]


def dataset(model: Any, words: list[list[str]], n_prompt: list[int], tag: str) -> PromptDataset:
    """BOS + words as token ids; `answer` names the prompt's last token, meta holds the problem index and where
    the chain starts (so chain tokens can be told from prompt tokens)."""
    tok = model.tokenizer
    ex = []
    for i, (w, n) in enumerate(zip(words, n_prompt)):
        ids = [tok.bos_token_id, *tok.convert_tokens_to_ids(w)]
        if tok.unk_token_id is not None and tok.unk_token_id in ids:
            raise ValueError(f"text {' '.join(w)!r} has words the tokenizer does not know")
        ex.append(Example(tuple(int(x) for x in ids), {"answer": n}, {"problem": f"{tag}{i}", "chain_start": n + 1}))
    return PromptDataset(tuple(ex))


def eval_problems(cfg: SAEShiftConfig, shift: Shift) -> list[ShiftedProblem]:
    """The held-out problems under `shift` (2-4 steps, `n_eval // 3` per step count, paired across shifts)."""
    per = cfg.n_eval // 3
    return [p for k in (2, 3, 4) for p in shifted_problems(shift, k, per, cfg.eval_seed)]


# ------------------------------------------------------------------------------------------------ result

@dataclass(frozen=True)
class SAEShiftResult:
    config: SAEShiftConfig
    checksum: str
    sae_path: str
    quality: dict[str, Any]
    chain_share: tuple[float, ...]  # per feature: share of its in-distribution firing on chain tokens
    comparisons: tuple[Comparison, ...]  # the control first, then each shift
    n_rows: dict[str, int]
    libraries: dict[str, str]

    def get(self, name: str) -> Comparison:
        for c in self.comparisons:
            if c.name == name:
                return c
        raise KeyError(f"no comparison {name!r}; have {[c.name for c in self.comparisons]}")

    def chain_features(self) -> list[int]:
        rate = np.asarray(self.comparisons[0].rate_a)
        return [j for j, s in enumerate(self.chain_share) if s >= self.config.chain_share and rate[j] >= self.config.min_rate]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "checksum": self.checksum, "sae_path": self.sae_path,
                "quality": self.quality, "chain_share": list(self.chain_share),
                "comparisons": [c.to_dict() for c in self.comparisons], "n_rows": self.n_rows,
                "libraries": self.libraries}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEShiftResult:
        return cls(SAEShiftConfig.from_dict(d["config"]), d["checksum"], d["sae_path"], d["quality"],
                   tuple(d["chain_share"]), tuple(Comparison.from_dict(c) for c in d["comparisons"]), d["n_rows"],
                   d["libraries"])


def run(config: SAEShiftConfig = SAEShiftConfig(), progress: bool = False) -> SAEShiftResult:
    """Train (or reuse) the SAE, harvest the halves and shifted texts, compare firing rates (cached by checksum
    and config)."""
    from analyses.sae_reasoning import sae_for
    from interp.models import load
    from saes.features import feature_table

    torch.set_num_threads(1)
    model = load(config.model)
    cache = Path(config.cache_dir)
    out = cache / f"result-{config.key(model.checksum)}.json"
    if out.exists():
        return SAEShiftResult.from_dict(read_json(out))

    def store_of(ds: PromptDataset) -> Any:
        tag = f"{model.checksum[:16]}-{ds.hash()[:16]}-{config.hook}"
        return harvest(model, ds, [config.hook], AllTokens(), cache / "stores" / tag, seed=config.seed)

    train = [ShiftedProblem(tuple(p.prompt_tokens()), (), p.answer,
                            ((config.fmt, tuple(p.completion_tokens(config.fmt))),), p.n_steps)  # type: ignore[arg-type]
             for p in sample_problems(config.train_seed, config.n_train, TaskConfig())]
    tr_store = store_of(dataset(model, texts(train, config.fmt), [len(p.prompt) for p in train], "train"))
    sae, q, path = sae_for(tr_store, model, config.sae, cache)

    def table_of(problems: list[ShiftedProblem], tag: str) -> tuple[Any, PromptDataset]:
        ds = dataset(model, texts(problems, config.fmt), [len(p.prompt) for p in problems], tag)
        return feature_table(sae, store_of(ds), config.hook), ds

    base = eval_problems(config, IN_DISTRIBUTION)
    half = np.arange(len(base)) % 2 == 1  # B: every other problem (each step count split evenly)
    t_in, ds_in = table_of(base, "in")
    fired = (t_in.acts > 0).numpy().astype(float)
    chain = np.array([t_in.position[r] >= ds_in[int(t_in.example[r])].meta["chain_start"] for r in range(len(fired))])
    share = (fired[chain].sum(0) / np.maximum(fired.sum(0), 1.0)).tolist()
    ex_idx = {int(e): i for i, e in enumerate(np.nonzero(~half)[0])}, {int(e): i for i, e in enumerate(np.nonzero(half)[0])}

    def counts(table: Any, which: int) -> tuple[np.ndarray, np.ndarray]:
        keep = np.array([int(e) in ex_idx[which] for e in table.example])
        f = (table.acts[torch.from_numpy(keep)] > 0).numpy().astype(float)
        ex = np.array([ex_idx[which][int(e)] for e in table.example[keep]])
        return per_example_counts(f, ex, len(ex_idx[which]))

    a = counts(t_in, 0)
    comps = [compare(CONTROL, a, counts(t_in, 1), config.min_rate, config.drop, config.n_boot, config.seed)]
    n_rows = {CONTROL: len(fired)}
    by_name = {s.name: s for s in DEFAULT_SHIFTS}
    for i, name in enumerate(config.shifts):
        probs = eval_problems(config, by_name[name])
        if [len(p.prompt) + len(p.reference(config.fmt)) for p in probs] != \
                [len(p.prompt) + len(p.reference(config.fmt)) for p in base]:
            raise ValueError(f"shift {name!r} changes the texts' lengths: positions would not correspond")
        t_sh, _ = table_of(probs, f"sh{i}")
        comps.append(compare(name, a, counts(t_sh, 1), config.min_rate, config.drop, config.n_boot, config.seed + 1 + i))
        n_rows[name] = len(t_sh.acts)
    res = SAEShiftResult(config, model.checksum, str(path), q.to_dict(), tuple(map(float, share)), tuple(comps), n_rows,
                         library_versions())
    write_json(out, res.to_dict(), indent=None)
    return res


# ------------------------------------------------------------------------------------------------ reporting

def figure(result: SAEShiftResult, out_dir: str | Path, png: bool = True) -> dict[str, list[Path]]:
    """Per comparison: each feature's firing rate on A (in distribution) against B; stopped features in red,
    chain features as diamonds."""
    comps = result.comparisons
    fig = make_subplots(rows=1, cols=len(comps), shared_yaxes=True, subplot_titles=[c.name for c in comps])
    chain = set(result.chain_features())
    eps = 1e-4
    shown: set[str] = set()
    for i, c in enumerate(comps):
        ra, rb = np.asarray(c.rate_a) + eps, np.asarray(c.rate_b) + eps
        live = np.nonzero((np.asarray(c.rate_a) > 0) | (np.asarray(c.rate_b) > 0))[0]
        stopped = set(c.stopped)
        for label, sel, color in (("other features", [j for j in live if j not in stopped], "#9D9D9D"),
                                  ("stops firing", [j for j in live if j in stopped], "#E45756")):
            fig.add_trace(go.Scatter(x=ra[sel], y=rb[sel], mode="markers", name=label, legendgroup=label,
                                     showlegend=bool(sel) and label not in shown, text=[f"feature {j}" for j in sel],
                                     marker={"color": color, "size": 6,
                                             "symbol": ["diamond" if j in chain else "circle" for j in sel]}),
                          row=1, col=i + 1)
            shown |= {label} if sel else set()
        fig.add_trace(go.Scatter(x=[eps, 1], y=[eps, 1], mode="lines", line={"dash": "dot", "color": "black"},
                                 showlegend=False), row=1, col=i + 1)
        fig.update_xaxes(type="log", title_text="rate on A (in distribution)", row=1, col=i + 1)
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="rate on B", row=1, col=1)
    c = result.config
    style(fig, f"SAE features of {c.model.removeprefix('organism/')} ({c.hook}): firing rate in distribution vs under "
               f"shift (diamonds: chain features; red: stops firing, 95% CI)", "", "")
    fig.update_layout(width=380 * len(comps) + 120, height=440, title_font_size=13)
    return {"shift_sae": save_figure(fig, Path(out_dir) / "shift_sae", png=png)}


def sentences(result: SAEShiftResult) -> list[str]:
    c = result.config
    ctrl = result.comparisons[0]
    chain = set(result.chain_features())
    live = [j for j, r in enumerate(ctrl.rate_a) if r >= c.min_rate]
    ev = result.quality.get("explained_variance")
    lines = [(f"SAE features under shift: a BatchTopK SAE ({c.sae.expansion}x, k={c.sae.k:g}) on "
              f"{c.model.removeprefix('organism/')}'s {c.hook} over {c.n_train} in-distribution texts (prompt + "
              f"{c.fmt} reference chain; explained variance {ev if ev is None else f'{ev:.2f}'}); {len(live)} "
              f"features fire on at least {100 * c.min_rate:g}% of in-distribution positions, {len(chain)} of them "
              f"chain features (>= {100 * c.chain_share:.0f}% of their firing on the chain's tokens). Held-out problems "
              f"(2-4 steps) in halves A and B of {c.n_eval // 2}: a feature stops firing when its rate on B is at most "
              f"{100 * (1 - c.drop):.0f}% of its rate on A and the 95% bootstrap interval of the difference is below 0. "
              f"Control (B in distribution): {len(ctrl.stopped)} features stop firing, {len(ctrl.started)} start; "
              f"significant falls / rises of any size: {ctrl.moved(c.min_rate)[0]} / {ctrl.moved(c.min_rate)[1]}.")]
    for comp in result.comparisons[1:]:
        n_chain = sum(j in chain for j in comp.stopped)
        ra = np.asarray(ctrl.rate_a)
        mass = float(ra[list(comp.stopped)].sum() / max(ra.sum(), 1e-12)) if comp.stopped else 0.0
        top = ", ".join(f"#{j} ({'chain' if j in chain else 'prompt'}, {100 * comp.rate_a[j]:.1f}% -> "
                        f"{100 * comp.rate_b[j]:.1f}%)" for j in comp.stopped[:4])
        lines.append(f"{comp.name}: {len(comp.stopped)} features stop firing (control {len(ctrl.stopped)}), "
                     f"{n_chain} of them chain features (of {len(chain)}), carrying {100 * mass:.0f}% of the "
                     f"in-distribution firing; {len(comp.started)} start firing (control {len(ctrl.started)}); "
                     f"significant falls / rises of any size {comp.moved(c.min_rate)[0]} / {comp.moved(c.min_rate)[1]} "
                     f"(control {ctrl.moved(c.min_rate)[0]} / {ctrl.moved(c.min_rate)[1]})"
                     + (f"; the most frequent that stop: {top}" if top else "") + ".")
    return lines


__all__ = [
    "CONTROL",
    "PAIRED_SHIFTS",
    "Comparison",
    "SAEShiftConfig",
    "SAEShiftResult",
    "compare",
    "dataset",
    "eval_problems",
    "figure",
    "per_example_counts",
    "run",
    "sentences",
    "texts",
]
