"""One local Ray instance (2 CPUs, loopback only, no dashboard) shared by every Ray test of the session."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """`ray.init(num_cpus=2)` once; test modules' own functions travel to the workers by value (the workers
    cannot import test files by name)."""
    import ray
    from ray import cloudpickle

    from interp.cluster import start_local

    for name, mod in list(sys.modules.items()):
        if name.startswith(("test_", "tests.cluster")) or name == "conftest":
            cloudpickle.register_pickle_by_value(mod)
    start_local(ray, num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    """A tiny random-init two-layer Llama with the organism tokenizer (its folder is what Ray workers load)."""
    from interp.models import load

    return load(tiny_checkpoint("llama", n_layers=2))
