"""`exclude_bos` leaves out the tokenizer's BOS token by id, not position 0: a GPT-2-style tokenizer without a
BOS post-processor has a text token there, and the BOS/EOS id can sit inside a text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from interp.activations import AllTokens, Example, PromptDataset, harvest
from saes import quality, train_sae
from saes.metrics import replace_at
from saes.training import bos_token_id, shards
from tests.saes.conftest import HOOK, tiny_config

BPE_HOOK = "blocks.0.hook_resid_post"
TEXTS = ["the cat saw the mat", "a dog ran to the pond", "the bird ate then the fish", "so more cats"]


@pytest.fixture(scope="module")
def bpe_store(bpe_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tok = bpe_model.tokenizer
    ids = [tok(t)["input_ids"] for t in TEXTS]
    ids[1] = [*ids[1], tok.eos_token_id, *tok(" and then")["input_ids"]]  # <|endoftext|> (the BOS id) mid-text
    ds = PromptDataset(tuple(Example(tuple(i), {}, {"problem": str(k)}) for k, i in enumerate(ids)))
    return harvest(bpe_model, ds, [BPE_HOOK], AllTokens(), tmp_path_factory.mktemp("bpe") / "acts")


def test_a_tokenizer_without_bos_keeps_position_0_and_drops_its_bos_id_wherever_it_is(bpe_model: Any,
                                                                                      bpe_store: Any) -> None:
    bos = bpe_model.tokenizer.bos_token_id
    ds = bpe_store.dataset()
    assert all(e.ids[0] != bos for e in ds.examples)  # nothing prepended: position 0 is a text token
    assert bos_token_id(bpe_store) == bos  # read from the store's model's tokenizer
    all_rows = np.concatenate([i["position"] for _, i in shards(bpe_store, BPE_HOOK, None)])
    kept = [i for _, i in shards(bpe_store, BPE_HOOK, None, exclude_bos=True)]
    ex, pos = np.concatenate([i["example"] for i in kept]), np.concatenate([i["position"] for i in kept])
    assert len(pos) == len(all_rows) - 1  # only the one <|endoftext|> inside text 1 is left out
    assert sorted(ex[pos == 0].tolist()) == [0, 1, 2, 3]  # every text's first token is kept
    mid = ds.examples[1].ids.index(bos)
    assert not ((ex == 1) & (pos == mid)).any()


def test_a_store_with_bos_at_position_0_drops_exactly_those_rows(small_store: Any, base_s: Any) -> None:
    bos = base_s.tokenizer.bos_token_id
    assert bos_token_id(small_store) == bos
    idx = small_store.index()
    kept = np.concatenate([i["position"] for _, i in shards(small_store, HOOK, None, exclude_bos=True)])
    assert (kept > 0).all() and len(kept) == len(idx["position"]) - int((idx["token"] == bos).sum())
    assert int((idx["token"] == bos).sum()) == len(small_store.dataset())


def test_training_and_ce_on_a_store_without_bos_treat_position_0_as_a_token(bpe_model: Any, bpe_store: Any,
                                                                           tmp_path: Path) -> None:
    cfg = tiny_config(hook=BPE_HOOK, expansion=2, total_samples=1024, batch_size=64, buffer_size=128, chunk_rows=32,
                      n_checkpoints=0)
    trained = train_sae(bpe_store, cfg, tmp_path / "sae", model=bpe_model)
    assert trained.card["excluded_token_id"] == bpe_model.tokenizer.bos_token_id
    assert trained.card["store_rows"] == bpe_store.n_rows - 1
    sae = trained.load()
    q, _ = quality(sae, bpe_store, BPE_HOOK, model=bpe_model)
    assert q.n_rows == bpe_store.n_rows - 1
    # CE with the SAE spliced in, by hand: every position replaced but the mid-text <|endoftext|>
    texts = [e.ids for e in bpe_store.dataset().examples]
    bos = bpe_model.tokenizer.bos_token_id

    def ce(keep_first: bool) -> float:
        total, n = 0.0, 0
        for t in texts:
            ids = torch.tensor([t])
            keep = ids == bos
            if keep_first:
                keep[:, 0] = True

            def fn(h: torch.Tensor, keep: torch.Tensor = keep) -> torch.Tensor:
                return torch.where(keep[..., None], h, sae.decode(sae.encode(h)).to(h.dtype))

            with replace_at(bpe_model, BPE_HOOK, fn), torch.no_grad():
                lp = torch.log_softmax(bpe_model.hf(input_ids=ids).logits.float()[0, :-1], -1)
            total -= float(lp.gather(-1, ids[0, 1:, None]).sum())
            n += len(t) - 1
        return total / n

    assert q.n_tokens_ce == sum(len(t) - 1 for t in texts)
    assert q.ce_sae == pytest.approx(ce(keep_first=False), abs=1e-5)
    assert abs(q.ce_sae - ce(keep_first=True)) > 1e-2  # keeping position 0, as before, gives another number
