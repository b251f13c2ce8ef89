"""Fixtures for the SAE tests: base-s, a small store of its activations, one tiny trained SAE."""

from __future__ import annotations

from typing import Any

import pytest
import torch

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def base_s() -> Any:
    import interp

    return interp.load("organism/base-s")


@pytest.fixture(scope="session")
def small_store(base_s: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from interp.activations import AllTokens, harvest
    from interp.organism.dataset import problem_dataset
    from interp.organism.task import TaskConfig, sample_problems

    problems = sample_problems(5, 60, TaskConfig(min_steps=2, max_steps=4))
    ds = problem_dataset(problems, base_s.tokenizer, "verbose")
    return harvest(base_s, ds, [HOOK], AllTokens(), tmp_path_factory.mktemp("store") / "acts")


def tiny_config(**kw: Any) -> Any:
    from saes import SAETrainConfig

    base = dict(hook=HOOK, expansion=4, k=8, total_samples=12_288, batch_size=256, buffer_size=2048, chunk_rows=512,
                n_checkpoints=3, lr_warm_up_steps=2)
    return SAETrainConfig(**(base | kw))


@pytest.fixture(scope="session")
def tiny_sae(small_store: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from saes import train_sae

    return train_sae(small_store, tiny_config(), tmp_path_factory.mktemp("sae") / "sae")
