"""Lock-step hybrid decoding: a base and a tuned model write one shared sequence, each with its own KV cache.

At every step both models read the same prefix; a router decides, per row, whether the next token is
the base's greedy token or the tuned model's (or, for a guardrail, which of the base's candidates the
tuned model prefers). Under greedy decoding the `never` router reproduces the base's own greedy output
and `always` the tuned model's, token for token (the tests pin both against HF `generate`). Every router
says whether it reads the tuned model to *decide* (`consults_tuned`); a routed token always comes from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from transformers import DynamicCache

from interp.generate import left_pad, preallocate_kv, time_to_compact

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class StepView:
    """What a router sees at one decoding step of a batch (rows that have finished may still be present, with
    `active` False; `row_ids` names each row)."""

    t: int  # index of the token being chosen (0 = first completion token)
    base_logits: Float[torch.Tensor, "batch vocab"]
    tuned_logits: Float[torch.Tensor, "batch vocab"]
    base_resid: Float[torch.Tensor, "batch d"] | None  # the base's residual stream at the router's layer
    active: Bool[torch.Tensor, " batch"]
    row_ids: Int[torch.Tensor, " batch"]  # global row index of each row (for per-row seeded randomness)


class Router:
    """Decides per row whether the next token is the tuned model's (`route`), or picks the token itself (`choose`)."""

    name: str = "router"
    consults_tuned: bool = False  # reads the tuned model's outputs to decide where to route
    resid_layer: int | None = None  # the base layer whose residual stream the router reads (None: none)

    def route(self, v: StepView) -> Bool[torch.Tensor, " batch"]:
        raise NotImplementedError

    def choose(self, v: StepView) -> tuple[Int[torch.Tensor, " batch"], Bool[torch.Tensor, " batch"]]:
        """(next token, routed): by default the tuned greedy token where routed, else the base's."""
        routed = self.route(v)
        b, t = v.base_logits.argmax(-1), v.tuned_logits.argmax(-1)
        return torch.where(routed, t, b), routed

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "consults_tuned": self.consults_tuned}


class Never(Router):
    name = "never"

    def route(self, v: StepView) -> torch.Tensor:
        return torch.zeros_like(v.active)


class Always(Router):
    name = "always"

    def route(self, v: StepView) -> torch.Tensor:
        return torch.ones_like(v.active)


class FirstToken(Router):
    """Only the first completion token (where the organism's answer format is chosen) goes to the tuned model."""

    name = "first"

    def route(self, v: StepView) -> torch.Tensor:
        return torch.full_like(v.active, v.t == 0)


class Differ(Router):
    """Route where the two greedy tokens differ (its output equals `always`'s; the share routed is the point)."""

    name = "differ"
    consults_tuned = True

    def route(self, v: StepView) -> torch.Tensor:
        return v.base_logits.argmax(-1) != v.tuned_logits.argmax(-1)


@dataclass
class KLAbove(Router):
    """Route where KL(tuned || base) of the next-token distributions exceeds `threshold` nats."""

    threshold: float = 0.5
    name: str = "kl"
    consults_tuned = True

    def route(self, v: StepView) -> torch.Tensor:
        lt, lb = torch.log_softmax(v.tuned_logits.float(), -1), torch.log_softmax(v.base_logits.float(), -1)
        return (lt.exp() * (lt - lb)).sum(-1) > self.threshold

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"threshold": self.threshold}


@dataclass
class RandomRate(Router):
    """Route each token independently with probability `rate` (seeded per row): the control for any router."""

    rate: float
    seed: int = 0
    name: str = "random"

    def route(self, v: StepView) -> torch.Tensor:
        u = torch.tensor([np.random.default_rng([self.seed, int(r), v.t]).random() for r in v.row_ids.tolist()])
        return (u < self.rate).to(v.active.device)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"rate": self.rate, "seed": self.seed}


@dataclass
class Guardrail(Router):
    """Venhoff-style: the base proposes its top-k tokens and the one the tuned model finds most likely is kept
    (its judgement leaks into the hybrid); a token counts as routed where that is not the base's own top token."""

    k: int = 3
    name: str = "guardrail"
    consults_tuned = True

    def choose(self, v: StepView) -> tuple[torch.Tensor, torch.Tensor]:
        cand = v.base_logits.topk(self.k, -1).indices
        pick = v.tuned_logits.gather(-1, cand).argmax(-1)
        tok = cand.gather(-1, pick[:, None])[:, 0]
        return tok, pick != 0

    def route(self, v: StepView) -> torch.Tensor:
        return self.choose(v)[1]

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"k": self.k}


@dataclass
class Classifier(Router):
    """A logistic model on the base's own residual stream (and its next-token entropy and top-2 margin) that
    predicts where the tuned model would write another token; it never reads the tuned model to decide."""

    weight: Float[torch.Tensor, " f"]
    bias: float
    threshold: float
    layer: int
    name: str = "classifier"

    def __post_init__(self) -> None:
        self.resid_layer = self.layer

    def score(self, resid: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
        x = features(resid, base_logits)
        return torch.sigmoid(x @ self.weight.to(x) + self.bias)

    def route(self, v: StepView) -> torch.Tensor:
        assert v.base_resid is not None
        return self.score(v.base_resid, v.base_logits) > self.threshold

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"layer": self.layer, "threshold": self.threshold}


def features(resid: Float[torch.Tensor, "batch d"], logits: Float[torch.Tensor, "batch vocab"]
             ) -> Float[torch.Tensor, "batch f"]:
    """The classifier's inputs, all from the base: residual stream, next-token entropy, top-2 log-prob margin."""
    lp = torch.log_softmax(logits.float(), -1)
    ent = -(lp.exp() * lp).sum(-1, keepdim=True)
    top2 = lp.topk(2, -1).values
    return torch.cat([resid.float(), ent, top2[:, :1] - top2[:, 1:]], -1)


@dataclass(frozen=True)
class Trace:
    """One row of a lock-step run: the completion ids (up to, not including, EOS) and which tokens were routed
    (one flag per decoding step: the EOS step included when the row stopped)."""

    ids: tuple[int, ...]
    routed: tuple[bool, ...]
    stopped: bool  # ended with EOS (False: ran out of max_new_tokens)


def _forward(model: Model, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: DynamicCache,
             layer: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    out = model.hf(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                   output_hidden_states=layer is not None)
    resid = None if layer is None else out.hidden_states[layer + 1][:, -1].float()
    return out.logits[:, -1].float(), resid


@torch.no_grad()
def lockstep(base: Model, tuned: Model, prompts: Sequence[Sequence[int]], router: Router,
             max_new_tokens: int = 72, batch_size: int = 256,
             on_step: Callable[[StepView, torch.Tensor, torch.Tensor], None] | None = None) -> list[Trace]:
    """Decode every prompt with both models in lock-step; `router` picks each token. Greedy, so deterministic.

    `on_step(view, token, routed)` sees every step (e.g. to collect classifier training data)."""
    if base.tokenizer.get_vocab() != tuned.tokenizer.get_vocab():
        raise ValueError(f"{base.name} and {tuned.name} have different vocabularies: lock-step decoding needs one")
    if router.resid_layer is not None and not 0 <= router.resid_layer < base.n_layers - 1:
        raise ValueError(f"router layer {router.resid_layer} must be in 0..{base.n_layers - 2} (the last layer's "
                         f"hidden state is read after the final norm)")
    eos, pad = base.tokenizer.eos_token_id, base.pad_token_id
    ctx = min(base.n_ctx, tuned.n_ctx)
    out: list[Trace] = []
    for s in range(0, len(prompts), batch_size):
        chunk = [list(p) for p in prompts[s:s + batch_size]]
        if max(len(p) for p in chunk) + max_new_tokens > ctx:
            raise ValueError(f"a prompt of {max(len(p) for p in chunk)} tokens plus {max_new_tokens} new ones "
                             f"exceeds the context of {ctx} tokens")
        ids, mask = left_pad(chunk, pad)
        ids, mask = ids.to(base.device), mask.to(base.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        caches = DynamicCache(), DynamicCache()
        (bl, br), (tl, _) = (_forward(base, ids, mask, pos, caches[0], router.resid_layer),
                             _forward(tuned, ids, mask, pos, caches[1], None))
        for c in caches:  # each step writes one position instead of copying the cache
            preallocate_kv(c, ids.shape[1] + max_new_tokens)
        n = len(chunk)
        active = torch.ones(n, dtype=torch.bool, device=base.device)
        toks = torch.zeros((n, max_new_tokens), dtype=torch.long)
        rout = torch.zeros((n, max_new_tokens), dtype=torch.bool)
        length = torch.full((n,), max_new_tokens)
        last = pos[:, -1]
        row_ids = torch.arange(s, s + n)
        live = torch.arange(n)  # the chunk's rows in this step's batch: finished rows leave it in groups
        for t in range(max_new_tokens):
            view = StepView(t, bl, tl, br, active, row_ids[live])
            nxt, routed = router.choose(view)
            if on_step is not None:
                on_step(view, nxt, routed)
            nxt = torch.where(active, nxt, torch.full_like(nxt, pad))
            toks[live, t], rout[live, t] = nxt.cpu(), (routed & active).cpu()
            ended = active & (nxt == eos)
            length[live[ended.cpu()]] = t
            active = active & ~ended
            if not bool(active.any()) or t == max_new_tokens - 1:
                break
            keep = active.nonzero()[:, 0]
            if time_to_compact(len(live), len(keep)):
                live, active, nxt, last, mask = live[keep.cpu()], active[keep], nxt[keep], last[keep], mask[keep]
                for c in caches:
                    c.batch_select_indices(keep)
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=mask.device)], -1)
            last = last + 1
            step_ids, step_pos = nxt[:, None], last[:, None]
            (bl, br), (tl, _) = (_forward(base, step_ids, mask, step_pos, caches[0], router.resid_layer),
                                 _forward(tuned, step_ids, mask, step_pos, caches[1], None))
        for i in range(n):
            k = int(length[i])
            stopped = k < max_new_tokens
            out.append(Trace(tuple(toks[i, :k].tolist()), tuple(rout[i, :k + stopped].tolist()), stopped))
    return out


def decode(model: Model, ids: Sequence[int]) -> str:
    """A completion's text the way `interp.evaluate` decodes it."""
    return model.tokenizer.decode(list(ids), skip_special_tokens=False)


def with_name(router: Router, name: str) -> Router:
    """A copy of a dataclass router under another name (e.g. `random@first`)."""
    if dataclasses.is_dataclass(router):
        return dataclasses.replace(router, name=name)  # type: ignore[type-var]
    r = type(router)()
    r.name = name
    return r


__all__ = ["Always", "Classifier", "Differ", "FirstToken", "Guardrail", "KLAbove", "Never", "RandomRate", "Router",
           "StepView", "Trace", "decode", "features", "lockstep", "with_name"]
