"""Batched generation on the shared Hugging Face weights (greedy or sampled), with input checks.

Generation is a cached decoding loop over the HF model's own forward (its KV cache, attention mask and
positions, as HF `generate` feeds them): TransformerBridge's cached generation gave wrong tokens on the
organism (DESIGN.md), and the tests compare this loop with HF `generate` and with an uncached greedy loop.
Finished rows (those that wrote EOS) leave the batch, so a batch costs what its rows write rather than
its longest row times its width; sampling still draws the random numbers of every row of the batch, so
each sample is the one HF `generate` draws. Interventions registered as forward hooks on the HF modules (which is what
the Bridge's and nnsight's hooks are) stay active during generation; a hook that keeps per-row state is
marked `row_aware` and reads `current_rows()` to know which rows a decoding step holds, and while any hook
on the model is not marked, every row stays in the batch to the end.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.nn.modules import module as _torch_module
from transformers import PreTrainedModel, PreTrainedTokenizerBase

try:  # transformers 5 keeps one cache object per layer; 4.x has none (its caches stay as they are)
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - transformers 4.x
    DynamicLayer = object  # type: ignore[assignment,misc]

from interp.batching import BatchLog, map_batches
from interp.tokens import check_known_tokens

F = TypeVar("F", bound=Callable[..., Any])


def context_length(model: PreTrainedModel) -> int:
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    raise ValueError(f"cannot tell the context length of {type(model).__name__}")


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_len: int
) -> list[list[int]]:
    """Token ids of each prompt (with BOS); errors name unknown words and over-long prompts."""
    out = []
    for i, p in enumerate(prompts):
        check_known_tokens(tokenizer, p)  # type: ignore[arg-type]
        ids = tokenizer(p)["input_ids"]
        if len(ids) >= max_len:
            raise ValueError(
                f"prompt {i} has {len(ids)} tokens, but the model's context is {max_len} tokens "
                f"and generation needs at least one free position: shorten it to < {max_len} tokens"
            )
        out.append(ids)
    return out


def left_pad(seqs: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask of rows padded on the left with `pad_id` (as generation wants them), on `device`."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def new_token_allowance(prompt_len: int, ctx: int, max_new_tokens: int) -> int:
    """How many new tokens `generate_ids` lets a prompt of `prompt_len` tokens have (at least 1, within the
    context); it generates the prompts of each allowance in their own call."""
    return max(1, min(max_new_tokens, ctx - prompt_len))


# ------------------------------------------------------------------------------------ rows of a forward

@dataclass(frozen=True)
class Rows:
    """Which rows a forward inside `generate_ids` holds: `prompts[i]` is the index (in the prompt list given to
    `generate_ids`) of row i of the batch as its prefill held it; `live` the batch rows this forward holds (None:
    all of them; a greedy decoding step holds only the rows that have not written EOS yet)."""

    prompts: torch.Tensor
    live: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        """Rows of the batch at its prefill."""
        return int(self.prompts.shape[0])

    def of_forward(self) -> torch.Tensor:
        """Index into the prompt list of each row of this forward."""
        return self.prompts if self.live is None else self.prompts[self.live]


_ROWS: contextvars.ContextVar[Rows | None] = contextvars.ContextVar("interp_generate_rows", default=None)


def current_rows() -> Rows | None:
    """The rows of the forward now running inside `generate_ids` (None outside it)."""
    return _ROWS.get()


@contextlib.contextmanager
def _rows(rows: Rows) -> Iterator[None]:
    token = _ROWS.set(rows)
    try:
        yield
    finally:
        _ROWS.reset(token)


def row_aware(fn: F) -> F:
    """Mark a forward hook as reading `current_rows()`, so `generate_ids` may drop finished rows while it is on
    the model (a hook that keeps per-row state without it would pair rows with the wrong state)."""
    try:
        fn._interp_row_aware = True  # type: ignore[attr-defined]
    except AttributeError:  # a bound method takes no attributes: mark a thin wrapper instead
        method = fn

        @functools.wraps(method)
        def fn(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
            return method(*args, **kwargs)

        fn._interp_row_aware = True  # type: ignore[attr-defined]
    return fn


def _only_row_aware_hooks(model: torch.nn.Module) -> bool:
    """True when every forward hook on the model (and every global one) is marked `row_aware`."""
    globals_ = (_torch_module._global_forward_hooks, _torch_module._global_forward_pre_hooks)
    if any(len(h) for h in globals_):
        return False
    for mod in model.modules():
        for hooks in (mod._forward_hooks, mod._forward_pre_hooks):
            if any(not getattr(h, "_interp_row_aware", False) for h in hooks.values()):
                return False
    return True


@functools.cache
def _cache_kwarg(cls: type) -> str:
    """The forward's name for the KV cache (transformers 5 calls it `cache`, 4.x `past_key_values`)."""
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# ------------------------------------------------------------------------------------------ decoding

# finished rows leave a greedy batch once they are at least 1/COMPACT_EVERY of it (each compaction copies the
# KV cache; until then they are fed PAD, as HF generate feeds every finished row)
COMPACT_EVERY = 8


def time_to_compact(in_batch: int, kept: int) -> bool:
    """Whether a decoding batch of `in_batch` rows, `kept` of them still writing, should drop its finished rows."""
    return in_batch - kept >= max(1, in_batch // COMPACT_EVERY)


class _BufferLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values live in a buffer sized for the whole generation, so a
    decoding step writes one position instead of copying the cache (HF's DynamicLayer concatenates)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        n, q = self.keys.shape[-2], key_states.shape[-2]
        if n + q > self._kbuf.shape[-2]:
            raise RuntimeError(f"the KV buffer holds {self._kbuf.shape[-2]} positions; {n + q} asked")
        self._kbuf[:, :, n:n + q] = key_states
        self._vbuf[:, :, n:n + q] = value_states
        self.keys, self.values = self._kbuf[:, :, :n + q], self._vbuf[:, :, :n + q]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        n = self.keys.shape[-2]
        self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]
        self.keys, self.values = self._kbuf[:, :, :n], self._vbuf[:, :, :n]


def preallocate_kv(cache: Any, capacity: int) -> None:
    """Move each plain full-attention layer of a prefilled HF cache into a `capacity`-position buffer (layers of
    other kinds, e.g. sliding-window ones, and caches without per-layer objects are left as they are)."""
    for layer in getattr(cache, "layers", ()):
        if type(layer) is not DynamicLayer or not getattr(layer, "is_initialized", False) or layer.keys.dim() != 4:
            continue
        b, h, n, _ = layer.keys.shape
        kbuf = layer.keys.new_empty(b, h, capacity, layer.keys.shape[-1])
        vbuf = layer.values.new_empty(b, h, capacity, layer.values.shape[-1])
        kbuf[:, :, :n], vbuf[:, :, :n] = layer.keys, layer.values
        layer.__class__ = _BufferLayer
        layer._kbuf, layer._vbuf = kbuf, vbuf
        layer.keys, layer.values = kbuf[:, :, :n], vbuf[:, :, :n]


def _decode(model: PreTrainedModel, prompts: list[list[int]], index: list[int], new: int, eos: int, pad: int,
            temperature: float, drop: bool) -> list[list[int]]:
    """Up to `new` tokens after each prompt (left-padded into one batch), each row up to but excluding EOS."""
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad)
    batch, width = ids.shape
    full_mask = torch.ones(batch, width + new, dtype=torch.long)
    full_mask[:, :width] = mask
    ids, full_mask = ids.to(device), full_mask.to(device)
    pos = full_mask[:, :width].cumsum(-1) - 1
    pos = pos.masked_fill(full_mask[:, :width] == 0, 1)  # as HF generate places pad positions
    rows = Rows(torch.tensor(index))
    live = torch.arange(batch, device=device)
    out: list[list[int]] = [[] for _ in range(batch)]
    open_ = [True] * batch
    key = _cache_kwarg(type(model))
    with _rows(rows):
        res = model(input_ids=ids, attention_mask=full_mask[:, :width], position_ids=pos, use_cache=True,
                    logits_to_keep=1)
    cache, last = res.past_key_values, pos[:, -1]
    preallocate_kv(cache, width + new)
    for step in range(new):
        logits = res.logits[:, -1].float()
        if temperature > 0:
            # HF's sampler: logits / temperature, softmax, one multinomial draw per row of the whole batch, which
            # torch makes as argmax(p / q), q ~ Exp(1) drawn for every row; drawing q for the rows that left the
            # batch too keeps the random stream, so every sample is the one HF generate draws
            probs = torch.softmax(logits / temperature, dim=-1)
            q = torch.empty(batch, probs.shape[-1], dtype=probs.dtype, device=device).exponential_(1)
            nxt = (probs / (q if live.shape[0] == batch else q[live])).argmax(-1)
        else:
            nxt = logits.argmax(-1)
        in_batch = live.tolist()
        for r, t in zip(in_batch, nxt.tolist()):
            if open_[r]:
                if t == eos:
                    open_[r] = False
                else:
                    out[r].append(t)
        if step == new - 1 or not any(open_):
            break
        kept = [j for j, r in enumerate(in_batch) if open_[r]]
        if drop and time_to_compact(len(in_batch), len(kept)):
            k = torch.tensor(kept, device=device)
            live, nxt, last = live[k], nxt[k], last[k]
            cache.batch_select_indices(k)
        elif len(kept) < len(live):  # finished rows read PAD, as in HF generate
            done = torch.ones(len(live), dtype=torch.bool)
            done[kept] = False
            nxt = nxt.masked_fill(done.to(device), pad)
        last = last + 1
        at = width + step + 1
        step_rows = Rows(rows.prompts, None if live.shape[0] == batch else live.cpu())
        with _rows(step_rows):
            res = model(input_ids=nxt[:, None], attention_mask=full_mask[live, :at], position_ids=last[:, None],
                        use_cache=True, **{key: cache})
        cache = res.past_key_values
    return out


@torch.no_grad()
def generate_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    log: BatchLog | None = None,
) -> list[list[int]]:
    """Completions (token ids, up to but excluding EOS) for already-encoded prompts; greedy batches that run
    out of accelerator memory are halved and retried (recorded in `log`)."""
    ctx = context_length(model)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad is None:
        pad = eos
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    device = next(model.parameters()).device
    drop = _only_row_aware_hooks(model)

    def run_chunk(chunk: list[int]) -> list[list[int]]:
        # rows near the context limit get fewer new tokens; group rows by their allowance so a
        # long prompt never shortens the completions of the short ones batched with it
        allowance = [new_token_allowance(len(prompt_ids[i]), ctx, max_new_tokens) for i in chunk]
        results: dict[int, list[int]] = {}
        for new in sorted(set(allowance), reverse=True):
            rows = [i for i, a in zip(chunk, allowance) if a == new]
            got = _decode(model, [list(prompt_ids[i]) for i in rows], rows, new, eos, pad, temperature, drop)
            results.update(zip(rows, got))
        return [results[i] for i in chunk]

    every = list(range(len(prompt_ids)))
    try:
        if temperature == 0:  # greedy: a batch that runs out of accelerator memory is halved and retried
            out = map_batches(run_chunk, every, batch_size, log)
        else:  # sampled: fixed batches, so the random stream (and every sample) is the same run to run
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                torch.manual_seed(seed)
                for start in range(0, len(every), batch_size):
                    out += run_chunk(every[start:start + batch_size])
    finally:
        model.train(was_training)
    return out


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
) -> list[str]:
    """Generate a completion for each prompt; greedy when `temperature == 0`, seeded sampling otherwise."""
    ids = encode_prompts(tokenizer, prompts, context_length(model))
    outs = generate_ids(model, tokenizer, ids, max_new_tokens, temperature, seed, batch_size)
    return [tokenizer.decode(o, skip_special_tokens=False) for o in outs]


__all__ = ["Rows", "context_length", "current_rows", "encode_prompts", "generate", "generate_ids", "left_pad",
           "new_token_allowance", "preallocate_kv", "row_aware", "time_to_compact"]
