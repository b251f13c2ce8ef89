"""`interp harvest`, `interp store`, `interp probe` on the shipped zoo: a whole round trip and the errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from interp.cli import app
from interp.cli.activations import expand_hooks

runner = CliRunner()


def test_harvest_probe_apply_round_trip(tmp_path):
    store = tmp_path / "store"
    r = runner.invoke(app, ["harvest", "organism/base-s", "--hooks", "blocks.*.hook_resid_post", "--positions",
                            "named:prompt.start_value,answer", "--problems", "200", "--out", str(store)])
    assert r.exit_code == 0, r.output
    info = json.loads(runner.invoke(app, ["store", "info", str(store)]).stdout)
    assert info["complete"] and info["rows"] == 400 and len(info["hooks"]) == 4
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps({"store": str(store), "targets": ["value.start"], "labels": ["prompt.start_value"],
                               "hooks": ["blocks.0.hook_resid_post"], "out": str(tmp_path / "probes"), "n_boot": 50}))
    r = runner.invoke(app, ["probe", "train", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    cell = json.loads(r.stdout.strip().splitlines()[-1])["cells"][0]
    assert cell["score"]["value"] > 0.9 and cell["selectivity"] > 0.5
    assert "selectivity" in runner.invoke(app, ["probe", "show", str(tmp_path / "probes")]).stdout
    other = tmp_path / "sft"
    assert runner.invoke(app, ["harvest", "organism/sft", "--hooks", "blocks.0.hook_resid_post", "--positions",
                               "named:prompt.start_value", "--problems", "100", "--seed", "9",
                               "--out", str(other)]).exit_code == 0
    r = runner.invoke(app, ["probe", "apply", cell["probe_path"], str(other)])
    assert r.exit_code == 2 and "allow-other-model" in r.output.replace("_", "-")
    r = runner.invoke(app, ["probe", "apply", cell["probe_path"], str(other), "--allow-other-model", "--n-boot", "50"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["same_model"] is False and out["n"] == 100 and 0 <= out["value"] <= 1


def test_sharded_harvest_merges(tmp_path):
    args = ["harvest", "organism/base-s", "--hooks", "blocks.1.hook_resid_post", "--problems", "100",
            "--shard-size", "32", "--batch-size", "16"]
    for i in range(2):
        r = runner.invoke(app, [*args, "--shard", f"{i}/2", "--out", str(tmp_path / f"p{i}")])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["store", "merge", str(tmp_path / "p0"), str(tmp_path / "p1"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert json.loads(runner.invoke(app, ["store", "info", str(tmp_path / "m")]).stdout)["rows"] == 100


def test_harvest_errors_are_clear(tmp_path):
    r = runner.invoke(app, ["harvest", "organism/base-s", "--hooks", "blocks.0.hook_resid_pots", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "blocks.0.hook_resid_post" in r.output
    r = runner.invoke(app, ["harvest", "organism/base-s", "--hooks", "blocks.0.hook_resid_post", "--positions", "indices:90",
                            "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "outside example 0" in r.output
    r = runner.invoke(app, ["harvest", "organism/base-s", "--hooks", "blocks.0.hook_resid_post", "--shard", "2/2",
                            "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "0 <= i < N" in r.output
    texts = tmp_path / "t.txt"
    texts.write_text("Q : a = 3 ; a ? A :\nQ : a = 3 ; banana\n")
    r = runner.invoke(app, ["harvest", "organism/base-s", "--hooks", "blocks.0.hook_resid_post", "--texts", str(texts),
                            "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "banana" in r.output
    r = runner.invoke(app, ["store", "info", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "not an activation store" in r.output


def test_hook_patterns_expand_in_layer_order():
    valid = [f"blocks.{i}.hook_resid_post" for i in (10, 2, 1)] + ["blocks.1.hook_resid_pre"]
    assert expand_hooks("blocks.*.hook_resid_post", valid) == [f"blocks.{i}.hook_resid_post" for i in (1, 2, 10)]
