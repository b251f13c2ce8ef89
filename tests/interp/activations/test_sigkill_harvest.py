"""A harvest killed with SIGKILL mid-way resumes to byte-identical shards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from interp.activations import AllTokens, harvest
from interp.io import read_json
from interp.models import load
from interp.organism.dataset import problem_dataset
from interp.organism.task import sample_problems

SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
from interp.activations import AllTokens, harvest
from interp.models import load
from interp.organism.dataset import problem_dataset
from interp.organism.task import sample_problems
m = load(sys.argv[1])
ds = problem_dataset(sample_problems(0, 240), m)
harvest(m, ds, ["blocks.1.hook_resid_post"], AllTokens(), sys.argv[2], batch_size=8, shard_size=16,
        progress=lambda d, t: time.sleep(0.3))   # slow enough to be killed mid-way
"""


def test_sigkilled_harvest_resumes_to_identical_shards(tmp_path: Path, tiny_checkpoint):
    ckpt = tiny_checkpoint("llama", n_layers=2)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ckpt), str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    manifest = out / "manifest.json"
    deadline = time.time() + 120
    def shards_done() -> int:
        return len(read_json(manifest)["shards"]) if manifest.exists() else 0

    while time.time() < deadline and proc.poll() is None and shards_done() < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(read_json(manifest)["shards"])
    assert 0 < done_at_kill < 15, "the process must die mid-way for this test to mean anything"

    m = load(ckpt)
    ds = problem_dataset(sample_problems(0, 240), m)
    kw = dict(batch_size=8, shard_size=16)
    resumed = harvest(m, ds, ["blocks.1.hook_resid_post"], AllTokens(), out, **kw)
    straight = harvest(m, ds, ["blocks.1.hook_resid_post"], AllTokens(), tmp_path / "straight", **kw)
    files = sorted(p.name for p in (out / "shards").glob("*.safetensors"))
    assert files == sorted(p.name for p in (straight.root / "shards").glob("*.safetensors")) and len(files) == 15
    assert all((out / "shards" / f).read_bytes() == (straight.root / "shards" / f).read_bytes() for f in files)
    assert resumed.manifest["shards"] == straight.manifest["shards"]
    assert not list((out / "shards").glob(".*.tmp"))  # nothing half-written left behind
