"""A training process killed with SIGKILL mid-run resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from interp.io import load_tensors, read_json
from interp.organism.arch import ArchConfig
from interp.organism.task import TaskConfig
from interp.organism.training import TrainConfig, train

CFG = TrainConfig(arch=ArchConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64), task=TaskConfig(max_steps=2),
                  steps=150, batch_size=16, ckpt_every=5, warmup=5)

SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from interp.organism.training import TrainConfig, train
train(TrainConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


def test_sigkilled_training_resumes_to_identical_weights(tmp_path: Path):
    import json

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(CFG.to_dict()), str(killed)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    state = killed / "state" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (state.exists() and read_json(state)["step"] >= 20):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step_at_kill = read_json(state)["step"]
    assert 0 < step_at_kill < CFG.steps, "the process must die mid-run for this test to mean anything"

    torch.set_num_threads(1)
    resumed = train(CFG, killed, progress=False)
    straight = train(CFG, tmp_path / "straight", progress=False)
    a, b = resumed.model.state_dict(), straight.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = load_tensors(killed / "state" / "model.safetensors")
    assert all(torch.equal(saved[k], b[k]) for k in b)
