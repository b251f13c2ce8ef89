"""Quality metrics on constructed SAEs whose answers are known."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from saes import SAEError, quality
from saes.metrics import explained_variance
from tests.saes.conftest import HOOK


def identity_sae(d: int) -> Any:
    """A ReLU SAE with features +e_i and -e_i: relu(x) - relu(-x) = x, an exact reconstruction."""
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def mean_sae(d: int, mean: torch.Tensor) -> Any:
    """An SAE whose features never fire: it reconstructs every row as the mean (its decoder bias)."""
    sae = identity_sae(d)
    with torch.no_grad():
        sae.b_enc.fill_(-1e6)
        sae.b_dec.copy_(mean)
    return sae


def test_exact_reconstruction_gives_ev_1_and_full_ce_recovery(small_store: Any, base_s: Any) -> None:
    q, freq = quality(identity_sae(64), small_store, HOOK, model=base_s, max_texts=40)
    assert q.explained_variance == pytest.approx(1.0, abs=1e-6)
    assert q.ce_sae == pytest.approx(q.ce_clean, abs=1e-5)
    assert q.ce_recovered == pytest.approx(1.0, abs=1e-5)
    assert q.ce_zero > q.ce_clean + 1.0
    assert q.l0 == pytest.approx(64.0)  # every coordinate is nonzero: exactly one of +e_i, -e_i fires
    assert q.dead_features == 0 and freq.shape == (128,)


def test_mean_reconstruction_gives_ev_0_and_all_features_dead(small_store: Any) -> None:
    from saes.training import shards

    x = torch.cat([a for a, _ in shards(small_store, HOOK, None, exclude_bos=True)])
    q, _ = quality(mean_sae(64, x.mean(0)), small_store, HOOK)
    assert q.explained_variance == pytest.approx(0.0, abs=1e-5)
    assert q.l0 == 0 and q.dead_features == 128 and q.dense_features == 0
    assert q.ce_recovered is None


def test_explained_variance_of_half_the_deviation_is_three_quarters() -> None:
    x = torch.randn(1000, 8)
    x_hat = x.mean(0) + 0.5 * (x - x.mean(0))
    assert explained_variance(x, x_hat) == pytest.approx(0.75, abs=1e-6)


def test_trained_sae_quality_is_sensible(tiny_sae: Any, small_store: Any, base_s: Any) -> None:
    q, _ = quality(tiny_sae.load(), small_store, HOOK, model=base_s, max_texts=40)
    assert 0.5 < q.explained_variance <= 1.0
    assert q.explained_variance_ci[0] <= q.explained_variance <= q.explained_variance_ci[1]
    assert 0 < q.ce_recovered <= 1.0 + 1e-6 and q.l0 < 40


def test_width_mismatch_is_a_clear_error(small_store: Any) -> None:
    with pytest.raises(SAEError, match="width 32.*width 64"):
        quality(identity_sae(32), small_store, HOOK)
