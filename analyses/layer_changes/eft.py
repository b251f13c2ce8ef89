"""Emulated fine-tuning (Mitchell et al. 2023, arXiv 2310.12962): decode from a sum of log-probabilities,
log p_base-L + (log p_tuned-S - log p_base-S) (up-scaling: the small model's fine-tuning delta on the
large base) or log p_base-S + (log p_tuned-L - log p_base-L) (down-scaling). All models must share one
tokenizer; each keeps its own KV cache and the mixture is renormalised before every token."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedModel

from analyses.layer_changes.anatomy import left_pad_positions
from analyses.layer_changes.behaviour import Behaviour
from interp.generate import context_length, left_pad
from interp.models import _vocab_differences

if TYPE_CHECKING:
    from interp.models import Model


def check_shared_tokenizer(models: Mapping[str, Model]) -> None:
    """Raise naming the first mismatch unless every model's tokenizer has the same vocabulary and special tokens."""
    tokenizers = {name: m.tokenizer for name, m in models.items()}
    names = list(tokenizers)
    ref = tokenizers[names[0]]
    for n in names[1:]:
        tok = tokenizers[n]
        vocab = _vocab_differences(ref.get_vocab(), tok.get_vocab())
        if vocab:
            raise ValueError(f"emulated fine-tuning needs one shared tokenizer, but {names[0]} and {n} differ: "
                             f"{vocab.replace('base', names[0]).replace('tuned', n)}")
        for attr in ("bos_token_id", "eos_token_id"):
            if getattr(ref, attr) != getattr(tok, attr):
                raise ValueError(f"emulated fine-tuning needs one shared tokenizer, but {attr} is "
                                 f"{getattr(ref, attr)} in {names[0]} and {getattr(tok, attr)} in {n}")


def _cache_kw(hf: PreTrainedModel) -> str:
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def _cache_of(out: Any) -> Any:
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


@torch.no_grad()
def mixed_generate(models: Sequence[Model], coefs: Sequence[float], prompts: Sequence[Sequence[int]],
                   max_new_tokens: int = 72, temperature: float = 0.0, seed: int = 0,
                   batch_size: int = 256) -> list[list[int]]:
    """Completions (ids up to EOS) of token-id prompts sampled from softmax(sum_i coef_i * log p_i); greedy when
    temperature == 0. The models share the first one's tokenizer (`check_shared_tokenizer`)."""
    if len(models) != len(coefs) or not models:
        raise ValueError(f"need one coefficient per model, got {len(models)} models and {len(coefs)} coefficients")
    tokenizer = models[0].tokenizer
    hfs = [m.hf for m in models]
    sizes = {m.get_output_embeddings().weight.shape[0] for m in hfs}
    if len(sizes) != 1:
        raise ValueError(f"the models' output vocabularies differ in size ({sorted(sizes)}): they cannot be mixed")
    ctx = min(context_length(m) for m in hfs)
    longest = max(len(p) for p in prompts)
    new = min(max_new_tokens, ctx - longest)
    if new < 1:
        raise ValueError(f"the longest prompt has {longest} tokens: no room to generate within {ctx} positions")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dev = next(hfs[0].parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: list[list[int]] = []
    for s in range(0, len(prompts), batch_size):
        ids, mask = left_pad([list(p) for p in prompts[s:s + batch_size]], pad)
        ids, mask = ids.to(dev), mask.to(dev)
        caches: list[Any] = [None] * len(hfs)
        step_ids, pos = ids, left_pad_positions(mask)
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=dev)
        rows: list[torch.Tensor] = []
        for _ in range(new):
            mix = None
            for i, (m, c) in enumerate(zip(hfs, coefs)):
                kw = {_cache_kw(m): caches[i]} if caches[i] is not None else {}
                o = m(input_ids=step_ids, attention_mask=mask, position_ids=pos, use_cache=True, **kw)
                caches[i] = _cache_of(o)
                lp = torch.log_softmax(o.logits[:, -1].float(), -1) * c
                mix = lp if mix is None else mix + lp
            logp = torch.log_softmax(mix, -1)  # type: ignore[arg-type]
            if temperature > 0:
                nxt = torch.multinomial(torch.softmax(logp / temperature, -1).cpu(), 1, generator=gen)[:, 0].to(dev)
            else:
                nxt = logp.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            rows.append(nxt)
            done |= nxt == eos
            if bool(done.all()):
                break
            step_ids = nxt[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = pos[:, -1:] + 1
        toks = torch.stack(rows, 1).tolist()
        out += [r[: r.index(eos)] if eos in r else r for r in toks]
    return out


@dataclass(frozen=True)
class EFTResult:
    """EFT behaviour against its ingredients, on the same problems (greedy unless the config says otherwise)."""

    direction: str  # "up" (small tuned delta on the large base) or "down"
    models: dict[str, str]  # role -> model name: scale, tuned, base
    eft: Behaviour
    references: dict[str, Behaviour]  # model name -> its own behaviour

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "models": self.models, "eft": self.eft.to_dict(),
                "references": {k: v.to_dict() for k, v in self.references.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EFTResult:
        return cls(d["direction"], d["models"], Behaviour.from_dict(d["eft"]),
                   {k: Behaviour.from_dict(v) for k, v in d["references"].items()})


__all__ = ["EFTResult", "check_shared_tokenizer", "mixed_generate"]
