"""`interp --help` and every subcommand's --help start at once: no torch, transformers, transformer-lens,
sae-lens or nnsight is imported to print help (they load inside the commands that need them)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "transformer_lens", "sae_lens", "nnsight", "sklearn", "plotly", "datasets")


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, check=False)


def _imported(importtime_stderr: str) -> set[str]:
    """Top-level package names from `python -X importtime` output (one line per module imported)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_interp_help_imports_no_heavy_library():
    r = _run(["-X", "importtime", "-m", "interp.cli", "--help"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Usage" in r.stdout and "harvest" in r.stdout and "bench" in r.stdout
    imported = _imported(r.stderr)
    assert "typer" in imported  # the parse worked: importtime saw the modules
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_info_help_imports_no_heavy_library():
    r = _run(["-X", "importtime", "-m", "interp.cli", "info", "--help"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "checksum" in r.stdout.lower() or "MODEL" in r.stdout
    assert not _imported(r.stderr) & set(HEAVY)


WALK = """
import json, sys
from typer.main import get_command
from typer.testing import CliRunner
from interp.cli import app

def walk(cmd, path):
    yield path
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from walk(sub, path + [name])

runner = CliRunner()
out = {"commands": [], "failed": {}}
for path in walk(get_command(app), []):
    res = runner.invoke(app, path + ["--help"])
    out["commands"].append(" ".join(path))
    if res.exit_code != 0 or "Usage" not in res.output:
        out["failed"][" ".join(path)] = res.output[-500:] + repr(res.exception)
out["heavy"] = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps(out))
"""


def test_every_subcommand_help_works_without_heavy_imports():
    r = _run(["-c", f"HEAVY = {HEAVY!r}\n" + WALK])
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert not out["failed"], out["failed"]
    assert out["heavy"] == [], f"a --help imported {out['heavy']}: move that import inside the command"
    for cmd in ("eval", "info", "harvest", "store merge", "probe train", "patch", "steer generate", "sae train",
                "analyze layers", "bench harvest", "bench layers", "bench patch", "bench steer", "bench sae",
                "organism train"):
        assert cmd in out["commands"], cmd


def test_importing_interp_is_lazy_but_its_api_resolves():
    r = _run(["-c", ("import sys, interp; a = 'torch' in sys.modules; f = interp.load; "
                    "print(a, 'torch' in sys.modules, callable(f), 'load' in dir(interp))")])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True", "True", "True"]
