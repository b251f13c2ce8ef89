"""The SAE example of docs/methods.md (once the README's), run as written on a store of organism prompts (which
end at the answer position, so there is no token after `answer` to measure the loss on: the CE falls back to
every token after the first)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest

import saes
from saes import SAETrainConfig

README = Path(__file__).parents[2] / "docs" / "methods.md"  # the SAE section moved there from the README


def readme_sae_block() -> str:
    """The first ```python block of the README's section on sparse autoencoders."""
    text = README.read_text()
    section = text[text.index("## Sparse autoencoders"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_sae_block_runs_on_a_store_of_prompts(base_s: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from interp.activations import Named, harvest
    from interp.organism.dataset import problem_dataset
    from interp.organism.task import TaskConfig, sample_problems

    code = readme_sae_block()
    assert "train_sae(" in code and "quality(" in code and "load_sae(" in code
    # the store of the README's probes section (fewer problems), at the paths the block names
    monkeypatch.chdir(tmp_path)
    ds = problem_dataset(sample_problems(0, 120, TaskConfig(min_steps=2, max_steps=4)), base_s)
    store = harvest(base_s, ds, [f"blocks.{layer}.hook_resid_post" for layer in range(4)],
                    Named(("answer", "prompt.step1.end")), "acts/base-s")
    assert all(e.positions["answer"] == len(e.ids) - 1 for e in ds.examples)  # no token after the answer position
    # a tiny SAE: the block's SAETrainConfig with small-run defaults (its own arguments still win)
    tiny = {"total_samples": 16384, "batch_size": 256, "buffer_size": 1024, "chunk_rows": 256, "expansion": 2,
            "lr_warm_up_steps": 2, "n_checkpoints": 0}
    monkeypatch.setattr(saes, "SAETrainConfig", functools.partial(SAETrainConfig, **tiny))
    namespace: dict[str, Any] = {"m": base_s, "store": store}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    q, card = namespace["q"], namespace["card"]
    assert q.ce_tokens == "all tokens after the first of each text (no text has tokens after 'answer')"
    assert q.n_tokens_ce == sum(len(e.ids) - 1 for e in ds.examples)
    # base-s was trained on answer tokens only, so its loss on prompt tokens is high (11.1 nats here) and the
    # zero ablation adds little to it: the CE numbers exist and are consistent, not a quality verdict
    assert q.ce_sae is not None and q.ce_zero != q.ce_clean
    assert q.ce_recovered == pytest.approx((q.ce_zero - q.ce_sae) / (q.ce_zero - q.ce_clean))
    assert q.ce_recovered_ci[0] <= q.ce_recovered <= q.ce_recovered_ci[1]
    assert 0.3 < q.explained_variance <= 1 and namespace["firing"].shape == (128,)
    assert card["hook"] == "blocks.1.hook_resid_post" and card["config"]["total_samples"] == 16384


def test_train_sae_with_the_model_on_a_store_of_prompts_writes_ce_into_the_card(base_s: Any, tmp_path: Path) -> None:
    from interp.activations import Named, harvest
    from interp.organism.dataset import problem_dataset
    from interp.organism.task import TaskConfig, sample_problems

    ds = problem_dataset(sample_problems(1, 60, TaskConfig(min_steps=2, max_steps=3)), base_s)
    store = harvest(base_s, ds, ["blocks.1.hook_resid_post"], Named(("answer",)), tmp_path / "acts")
    cfg = SAETrainConfig(hook="blocks.1.hook_resid_post", total_samples=1024, batch_size=128, buffer_size=256,
                         chunk_rows=64, expansion=2, lr_warm_up_steps=2, n_checkpoints=0)
    card = saes.train_sae(store, cfg, tmp_path / "sae", model=base_s).card
    assert card["metrics"]["ce_recovered"] is not None and card["metrics"]["n_tokens_ce"] > 0
    assert "no text has tokens after 'answer'" in card["metrics"]["ce_tokens"]
    # a store of texts that go on after the answer keeps measuring only those tokens
    long = problem_dataset(sample_problems(1, 30, TaskConfig(min_steps=2, max_steps=3)), base_s, "verbose")
    st2 = harvest(base_s, long, ["blocks.1.hook_resid_post"], Named(("answer",)), tmp_path / "acts2")
    q, _ = saes.quality(saes.load_sae(tmp_path / "sae")[0], st2, "blocks.1.hook_resid_post", model=base_s)
    assert q.ce_tokens == "tokens after 'answer'"
    assert q.n_tokens_ce == sum(len(e.ids) - 1 - e.positions["answer"] for e in long.examples)
    with pytest.raises(saes.SAEError, match="no tokens to predict"):
        saes.ce_recovered(base_s, saes.load_sae(tmp_path / "sae")[0], "blocks.1.hook_resid_post",
                          [e.ids for e in ds.examples], starts=[len(e.ids) - 1 for e in ds.examples])
