"""The README's code runs as written: its Python blocks in order, in one namespace, in a scratch folder; its
test command is exactly the one CI runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.DOTALL)


def test_the_test_command_is_what_ci_runs() -> None:
    bash = blocks("bash")
    assert len(bash) == 2, "the README holds exactly two commands: set up + report, set up + tests"
    ci = (ROOT / ".ci" / "run").read_text()
    assert bash[1].strip() in ci
    assert bash[0].strip() == "bash scripts/setup.sh && .venv/bin/interp report"


@pytest.mark.timeout(1800)
def test_python_blocks_run_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    torch.set_num_threads(1)
    code = blocks("python")
    assert len(code) >= 4
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {"__name__": "__readme__"}
        for i, block in enumerate(code):
            try:
                exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102 (the README, ours)
            except Exception as e:  # name the block that failed
                raise AssertionError(f"README python block {i + 1} failed: {type(e).__name__}: {e}") from e
    finally:
        os.chdir(here)
    out = capsys.readouterr().out
    assert "organism/sft: free 1.00" in out  # sft answers every 4-step problem (the zoo's card says 1.00)
    assert "spearman" in out and "explained variance" in out and "vs control" in out
