"""Log-probabilities of whole completions, so multi-token answers are scored as one choice.

`completion_logprobs` sums the log-probabilities of each completion's tokens after its prompt in one
right-padded forward per batch; `best_completion` picks the most likely of several candidates (a
forced direct answer: what the model computed, whatever format it would have chosen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float

from interp.batching import BatchLog, map_batches

if TYPE_CHECKING:
    from interp.models import Model


@torch.no_grad()
def completion_logprobs(model: Model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                        batch_size: int = 256, log: BatchLog | None = None) -> Float[torch.Tensor, " n"]:
    """Sum over each completion's tokens of log p(token | prompt, earlier completion tokens)."""
    from interp.models import right_pad

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if any(len(c) == 0 for c in completions):
        raise ValueError("an empty completion has no log-probability: give at least one token each")
    def run(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[torch.Tensor]:
        rows = [list(p) + list(c) for p, c in pairs]
        if max(len(r) for r in rows) > model.n_ctx:
            raise ValueError(f"a prompt plus completion is longer than the context ({model.n_ctx} tokens)")
        ids, mask = right_pad(rows, model.pad_token_id, model.device)
        logp = torch.log_softmax(model.hf(input_ids=ids, attention_mask=mask).logits.float(), -1)
        res = []
        for i, (p, c) in enumerate(pairs):
            pos = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=logp.device)
            res.append(logp[i, pos, torch.tensor(list(c), device=logp.device)].sum().cpu())
        return res

    # a batch that runs out of accelerator memory is halved and retried (`log` records it)
    out = map_batches(run, list(zip(prompts, completions)), batch_size, log)
    return torch.stack(out)


def best_completion(model: Model, prompt: Sequence[int], candidates: Sequence[Sequence[int]]) -> int:
    """Index of the candidate completion with the highest log-probability after `prompt`."""
    scores = completion_logprobs(model, [prompt] * len(candidates), candidates)
    return int(scores.argmax())


__all__ = ["best_completion", "completion_logprobs"]
