"""Batched generation on the shared Hugging Face weights (greedy or sampled), with input checks.

Generation goes through HF `generate` with a KV cache: TransformerBridge's cached generation gave
wrong tokens on the organism (DESIGN.md), and the tests compare this path with an uncached greedy loop.
Interventions registered as forward hooks on the HF modules (which is what the Bridge's and nnsight's
hooks are) stay active during generation.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from interp.batching import BatchLog, map_batches
from interp.tokens import check_known_tokens


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


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def new_token_allowance(prompt_len: int, ctx: int, max_new_tokens: int) -> int:
    """How many new tokens `generate_ids` lets a prompt of `prompt_len` tokens have (at least 1, within the
    context); it generates the prompts of each allowance in their own call."""
    return max(1, min(max_new_tokens, ctx - prompt_len))


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

    def run_chunk(chunk: list[list[int]]) -> list[list[int]]:
        # rows near the context limit get fewer new tokens; group rows by their allowance so a
        # long prompt never shortens the completions of the short ones batched with it
        allowance = [new_token_allowance(len(p), ctx, max_new_tokens) for p in chunk]
        results: dict[int, list[int]] = {}
        for new in sorted(set(allowance), reverse=True):
            rows = [i for i, a in enumerate(allowance) if a == new]
            ids, mask = left_pad([chunk[i] for i in rows], pad)
            kwargs = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) \
                if temperature > 0 else dict(do_sample=False)
            seqs = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                eos_token_id=eos, pad_token_id=pad, **kwargs,
            )
            for i, row in zip(rows, seqs[:, ids.shape[1]:].tolist()):
                results[i] = row[: row.index(eos)] if eos in row else row
        return [results[i] for i in range(len(chunk))]

    try:
        if temperature == 0:  # greedy: a batch that runs out of accelerator memory is halved and retried
            out = map_batches(run_chunk, list(prompt_ids), batch_size, log)
        else:  # sampled: fixed batches, so the random stream (and every sample) is the same run to run
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                torch.manual_seed(seed)
                for start in range(0, len(prompt_ids), batch_size):
                    out += run_chunk(list(prompt_ids[start:start + batch_size]))
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


__all__ = ["context_length", "encode_prompts", "generate", "generate_ids", "left_pad", "new_token_allowance"]
