"""Shared tiny-model fixtures for the organism tests: built once per session, on one thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from interp.organism.arch import ArchConfig, init_model
from interp.organism.task import TaskConfig
from interp.organism.tokenizer import build_tokenizer
from interp.organism.training import TrainConfig, TrainOutcome, train

torch.set_num_threads(1)

TINY_ARCH = ArchConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64)
TINY_TASK = TaskConfig(max_steps=1)
PRETRAIN_CFG = TrainConfig(kind="pretrain", arch=TINY_ARCH, task=TINY_TASK, steps=60, batch_size=32, lr=1e-2,
                           warmup=5, ckpt_every=1000, seed=0)


@pytest.fixture(scope="session")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="session")
def random_model(tok):
    """A freshly initialised tiny Llama (do not train it in place)."""
    return init_model(TINY_ARCH, tok, seed=0)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory) -> TrainOutcome:
    """A tiny model pretrained for 60 steps on 1-step problems (about a second): right now and then."""
    return train(PRETRAIN_CFG, tmp_path_factory.mktemp("pretrain_run"), progress=False, log_every=5)


@pytest.fixture(scope="session")
def pretrained_dir(pretrained, tmp_path_factory) -> Path:
    """The pretrained tiny model saved as a Hugging Face checkpoint (weights + tokenizer)."""
    path = tmp_path_factory.mktemp("tiny_base")
    pretrained.model.save_pretrained(path)
    pretrained.tokenizer.save_pretrained(path)
    return path
