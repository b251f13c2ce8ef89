"""`interp.cluster.run_tasks`: the same results in process and on Ray, in input order; a worker that dies is
retried and the job completes with the same results; an exception of the task itself is not retried and
reaches the caller as itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from interp.cluster import parse_ray_option, read_tree, run_tasks, write_tree


def square_after_marker(marker: str, x: int) -> tuple[int, int]:
    """x*x; the first call for a given marker kills its own worker process (no exception: the process is gone)."""
    if x == 3 and not Path(marker).exists():
        Path(marker).write_text("died once")
        os._exit(1)
    import torch

    return x * x, torch.get_num_threads()


def count_and_fail(counter: str, x: int) -> int:
    with open(counter, "a") as f:
        f.write("x")
    if x == 1:
        raise KeyError(f"bad item {x}")
    return x


def test_in_process_and_ray_agree_in_input_order_and_report_progress(ray_local, tmp_path):
    seen: list[tuple[int, int]] = []
    local = run_tasks(square_after_marker, [(str(tmp_path / "m0"), x) for x in range(6) if x != 3])
    remote = run_tasks(square_after_marker, [(str(tmp_path / "m1"), x) for x in range(6) if x != 3], ray=True,
                       progress=lambda d, t: seen.append((d, t)))
    assert [r[0] for r in remote] == [r[0] for r in local] == [0, 1, 4, 16, 25]
    assert {r[1] for r in remote} == {1}  # one torch thread per declared CPU
    assert seen == [(i, 5) for i in range(1, 6)]


def test_a_killed_worker_is_retried_and_the_job_completes_with_the_same_results(ray_local, tmp_path):
    marker = tmp_path / "died"
    out = run_tasks(square_after_marker, [(str(marker), x) for x in range(5)], ray=True, max_retries=2)
    assert marker.read_text() == "died once"  # the worker really died once
    assert [r[0] for r in out] == [x * x for x in range(5)]


def test_a_task_error_is_raised_as_itself_with_its_traceback_and_not_retried(ray_local, tmp_path):
    counter = tmp_path / "calls"
    with pytest.raises(KeyError, match="bad item 1") as e:
        run_tasks(count_and_fail, [(str(counter), 1)], ray=True, max_retries=3)
    assert "count_and_fail" in str(e.value)  # the remote traceback travels in the message
    assert counter.read_text() == "x"  # one attempt: user errors are not retried
    with pytest.raises(KeyError, match="bad item 1"):
        run_tasks(count_and_fail, [(str(counter), 1)])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="num_cpus"):
        run_tasks(abs, [(1,)], num_cpus=0)
    assert parse_ray_option(None) is None and parse_ray_option("") == "local"
    assert parse_ray_option("auto") == "auto" and parse_ray_option("10.0.0.1:6379") == "10.0.0.1:6379"


def test_files_travel_as_bytes_and_land_atomically(tmp_path):
    write_tree(tmp_path / "a", {"x/y.bin": b"\x00\x01", "z.json": b"{}"})
    assert read_tree(tmp_path / "a") == {"x/y.bin": b"\x00\x01", "z.json": b"{}"}
    with pytest.raises(ValueError, match="outside"):
        write_tree(tmp_path / "a", {"../evil": b""})


def test_ray_is_imported_only_when_asked_for():
    """`import interp`, the CLI and `interp.cluster` stay light: ray loads inside a command given --ray."""
    import subprocess
    import sys

    code = "import sys, interp, interp.cluster, interp.cli\nprint(sorted(m for m in ('ray',) if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr[-2000:]
    from interp.cli.common import bare_ray_flag

    assert bare_ray_flag(["harvest", "m", "--ray"]) == ["harvest", "m", "--ray", "local"]
    assert bare_ray_flag(["eval", "--ray", "--n", "3"]) == ["eval", "--ray", "local", "--n", "3"]
    assert bare_ray_flag(["eval", "--ray", "auto"]) == ["eval", "--ray", "auto"]
