"""`interp bench ray` on the session's local Ray instance: a small harvest both ways, byte-identical, and the
figures its JSON line carries; the local instance's workers run at the caller's priority."""

from __future__ import annotations


def test_bench_ray_compares_tokens_per_second_and_finds_identical_stores(ray_local):
    from interp.cli.bench.ray import bench_ray

    rows, fig = bench_ray("organism/base-s", n_prompts=48, shards=3, batch_size=8, repeats=1)
    assert fig["byte_identical"] is True and fig["shards"] == 3 and fig["ray_cpus"] == 2
    assert fig["single_tokens_per_s"] > 0 and fig["ray_tokens_per_s"] > 0
    assert abs(fig["ratio"] - fig["ray_tokens_per_s"] / fig["single_tokens_per_s"]) < 1e-3
    assert fig["meets_target"] == (fig["ratio"] >= fig["target"]) and len(fig["loadavg_before"]) == 3
    assert any("byte-identical" in r.what for r in rows)
    assert fig["ray_cores_used"] > 0 and abs(fig["single_cores_used"] - fig["single_cpu_s"] / fig["single_s"]) < 1e-2
    assert fig["worker_niceness"] == [fig["niceness"]]  # workers at the caller's priority, not Ray's +15
